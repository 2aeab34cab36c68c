"""Expand the benchmark matrix into an interleaved, seeded plan of cells."""
from __future__ import annotations

import random

from ..results import RunSpec


def make_plan(workloads: list[str], cells: list[tuple[str, ...]], repeats: int, threads: int,
              seed: int = 0, device: str = "cpu") -> list[RunSpec]:
    """One :class:`RunSpec` per (workload, cell, repeat), in a seeded random order; a cell is
    ``(framework, mode)`` or ``(framework, mode, precision)``.

    Randomised blocks: repeat ``r`` of every cell runs before repeat ``r + 1`` of any cell, and the
    order inside each block is shuffled, so slow drift of the machine (heat, background load) spreads
    evenly over the frameworks instead of favouring whichever runs first."""
    rng = random.Random(seed)
    plan: list[RunSpec] = []
    for repeat in range(repeats):
        block = [RunSpec(workload=w, framework=c[0], mode=c[1], repeat=repeat, threads=threads, device=device,
                         precision=c[2] if len(c) > 2 else "fp32")
                 for w in workloads for c in cells]
        rng.shuffle(block)
        plan.extend(block)
    return plan
