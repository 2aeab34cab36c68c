"""Expand the benchmark matrix into an interleaved, seeded plan of cells."""
from __future__ import annotations

import random
from collections.abc import Collection, Iterable

from ..results import Cell, RunSpec


def make_plan(workloads: list[str], cells: Iterable[Cell], repeats: int, threads: int, seed: int = 0,
              device: str = "cpu", refused: Collection[tuple[str, Cell]] = (), warmup: int = 0) -> list[RunSpec]:
    """One :class:`RunSpec` per (workload, cell, repeat), in a seeded random order, after ``warmup`` warm-up
    blocks (repeats -1, -2, ...: fresh workers whose records are kept but never counted).

    Randomised blocks: repeat ``r`` of every cell runs before repeat ``r + 1`` of any cell, and the
    order inside each block is shuffled, so slow drift of the machine (heat, background load) spreads
    evenly over the frameworks instead of favouring whichever runs first. The warm-up blocks are shuffled from their
    own stream, so the measured blocks are the same with or without them. The (workload name, cell) pairs in
    ``refused`` are left out: those whose build would fail in the worker (:func:`~isobench.config.refusals`, from the
    worker's own check; a private mode on a non-private workload among them)."""
    cells = list(cells)

    def blocks(repeat_numbers: Iterable[int], rng: random.Random) -> list[RunSpec]:
        plan: list[RunSpec] = []
        for repeat in repeat_numbers:
            block = [RunSpec(workload=w, framework=c.framework, mode=c.mode, repeat=repeat, threads=threads,
                             device=device, precision=c.precision, optimizer=c.optimizer) for w in workloads
                     for c in cells if (w, c) not in refused]
            rng.shuffle(block)
            plan.extend(block)
        return plan
    return blocks(range(-1, -warmup - 1, -1), random.Random(f"warm-up {seed}")) + \
        blocks(range(repeats), random.Random(seed))
