"""Expand the benchmark matrix into an interleaved, seeded plan of cells."""
from __future__ import annotations

import random

from ..results import RunSpec


def make_plan(workloads: list[str], cells: list[tuple[str, str]], repeats: int, threads: int,
              seed: int = 0) -> list[RunSpec]:
    """One :class:`RunSpec` per (workload, framework, mode, repeat), in a seeded random order.

    Randomised blocks: repeat ``r`` of every cell runs before repeat ``r + 1`` of any cell, and the
    order inside each block is shuffled, so slow drift of the machine (heat, background load) spreads
    evenly over the frameworks instead of favouring whichever runs first."""
    rng = random.Random(seed)
    plan: list[RunSpec] = []
    for repeat in range(repeats):
        block = [RunSpec(workload=w, framework=f, mode=m, repeat=repeat, threads=threads)
                 for w in workloads for f, m in cells]
        rng.shuffle(block)
        plan.extend(block)
    return plan
