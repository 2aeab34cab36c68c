"""Expand the benchmark matrix into an interleaved, seeded plan of cells."""
from __future__ import annotations

import random
from collections.abc import Iterable

from ..results import Cell, RunSpec


def make_plan(workloads: list[str], cells: Iterable[Cell], repeats: int, threads: int,
              seed: int = 0, device: str = "cpu") -> list[RunSpec]:
    """One :class:`RunSpec` per (workload, cell, repeat), in a seeded random order.

    Randomised blocks: repeat ``r`` of every cell runs before repeat ``r + 1`` of any cell, and the
    order inside each block is shuffled, so slow drift of the machine (heat, background load) spreads
    evenly over the frameworks instead of favouring whichever runs first."""
    rng, cells = random.Random(seed), list(cells)
    plan: list[RunSpec] = []
    for repeat in range(repeats):
        block = [RunSpec(workload=w, framework=c.framework, mode=c.mode, repeat=repeat, threads=threads, device=device,
                         precision=c.precision) for w in workloads for c in cells]
        rng.shuffle(block)
        plan.extend(block)
    return plan
