"""Expand the benchmark matrix into an interleaved, seeded plan of cells."""
from __future__ import annotations

import random
from collections.abc import Collection, Iterable

from ..config import runs_mode
from ..results import Cell, RunSpec
from ..workloads import Workload


def private_names(workloads: dict[str, Workload]) -> set[str]:
    """The names of the dp-sgd workloads (``private`` of :func:`make_plan`)."""
    return {name for name, w in workloads.items() if w.optimizer.private}


def make_plan(workloads: list[str], cells: Iterable[Cell], repeats: int, threads: int,
              seed: int = 0, device: str = "cpu", private: Collection[str] = ()) -> list[RunSpec]:
    """One :class:`RunSpec` per (workload, cell, repeat), in a seeded random order.

    Randomised blocks: repeat ``r`` of every cell runs before repeat ``r + 1`` of any cell, and the
    order inside each block is shuffled, so slow drift of the machine (heat, background load) spreads
    evenly over the frameworks instead of favouring whichever runs first. A backend's private mode runs only the
    workloads named in ``private`` (the dp-sgd ones)."""
    rng, cells = random.Random(seed), list(cells)
    plan: list[RunSpec] = []
    for repeat in range(repeats):
        block = [RunSpec(workload=w, framework=c.framework, mode=c.mode, repeat=repeat, threads=threads, device=device,
                         precision=c.precision, optimizer=c.optimizer) for w in workloads for c in cells
                 if runs_mode(c.framework, c.mode, w in private)]
        rng.shuffle(block)
        plan.extend(block)
    return plan
