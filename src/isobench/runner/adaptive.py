"""Adaptive repeats (``isobench run --until-confident``): add interleaved blocks until the intervals are tight.

After the configured ``repeats``, one more block (one repeat of every cell, shuffled, exactly the next block
of :func:`~.plan.make_plan`) runs at a time, until for every workload the 95% interval of every framework's
ratio to the best on training time and steady step time is within +/- ``target_width`` of the ratio, or
``max_repeats`` blocks have run. With a single framework (no ratio) its median's own bootstrap interval is
used. Confidence also needs enough ok processes per framework for the rank test to reach p < alpha
(:func:`~isobench.stats.min_repeats`): an interval from 2 processes can be narrow by luck and licenses no claim.
Frameworks whose every run failed are left out (repeating them will not make them precise).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from ..config import RunConfig, refusals, resolve_workloads
from ..results import RunRecord
from ..stats import Group, bootstrap_median_ci, min_repeats, summarize
from .executor import Executor
from .local import EventHandler
from .plan import make_plan
from .runs import iter_runs

WATCHED = ("train_time_s", "step_time_median_s")  # the headline times whose ratios must be precise


@dataclass(frozen=True)
class Widest:
    """Where the least precise watched interval is: a group's ratio to the best, or (a single framework) its median."""
    workload: str
    group: Group
    metric: str                      # a Metrics field, e.g. "step_time_median_s"
    of: str                          # "ratio" or "median"


@dataclass(frozen=True)
class TooFew:
    """A group with fewer ok processes than the rank test needs to reach p < alpha."""
    workload: str
    group: Group
    n: int
    need: int


@dataclass(frozen=True)
class Precision:
    """The least precise of the watched intervals: ``width`` = (high - low) / 2 / estimate (0.05 = +/-5%)."""
    confident: bool
    width: float                     # inf before any interval exists
    widest: Widest | None = None     # None: no ok runs yet
    too_few: TooFew | None = None    # the first group short of processes, if any


def precision(runs: list[RunRecord], target_width: float, level: float = 0.95, alpha: float = 0.05,
              n_boot: int = 5000, seed: int = 0) -> Precision:
    """Whether ``runs`` meet the stopping rule of the module docstring. The intervals are those of
    :func:`~isobench.stats.summarize` with the same defaults, i.e. the ones the report prints."""
    need = min_repeats(alpha)
    width, widest, too_few = -math.inf, None, None
    for summary in summarize(runs, n_boot=n_boot, level=level, alpha=alpha, seed=seed):
        for name in WATCHED:
            if (ms := summary.metrics.get(name)) is None:
                continue
            if not too_few and (small := [g for g, s in ms.stats.items() if s.n < need]):
                too_few = TooFew(summary.workload, small[0], ms.stats[small[0]].n, need)
            if ms.comparisons:  # a difference (zero values) is scaled by the best median instead of the ratio
                widths = {(g, "ratio"): (c.interval.high - c.interval.low) / 2
                          / abs(c.interval.estimate if c.kind == "ratio" else ms.stats[ms.best].median)
                          for g, c in ms.comparisons.items()}
            else:  # a single framework: the precision of its own median
                g, s = next(iter(ms.stats.items()))
                ci = bootstrap_median_ci(s.values, n_boot, level, seed)
                widths = {(g, "median"): (ci.high - ci.low) / 2 / abs(ci.estimate)}
            for (g, of), w in widths.items():
                if w > width:
                    width, widest = w, Widest(summary.workload, g, name, of)
    width = width if width > -math.inf else math.inf
    return Precision(width <= target_width and not too_few, width, widest, too_few)


class AdaptiveRuns:
    """Iterate over the records like :func:`~isobench.runner.iter_runs`, deciding after each block whether to
    add another; afterwards ``precision`` says whether the target was met and ``repeats`` how many blocks ran.

    ``config.target_width`` and ``config.max_repeats`` must be set; ``executor`` as in :func:`.iter_runs`."""

    def __init__(self, config: RunConfig, on_event: EventHandler | None = None, executor: Executor | None = None):
        if config.target_width is None or config.max_repeats is None:
            raise ValueError("adaptive repeats need config.target_width and config.max_repeats")
        self.config, self.on_event, self.executor = config, on_event, executor
        self.records: list[RunRecord] = []
        self.repeats = 0                 # blocks started
        self.precision: Precision | None = None  # after the last block; None if interrupted before

    def _plan(self):
        c = self.config
        top = max(c.repeats, c.max_repeats)
        # the plan iter_runs would make for max_repeats: its blocks are a prefix, so stopping anywhere is fair
        resolved = resolve_workloads(c)
        plan = make_plan(list(resolved), c.cells(), top, c.threads, c.seed, c.device,
                         refusals(resolved, c.cells(), c.device), c.warmup)
        warm = [s for s in plan if s.warmup]
        yield from warm  # counted by no interval
        plan = plan[len(warm):]
        size = len(plan) // top
        for block in range(top):
            if block >= c.repeats and (p := precision(self.records, c.target_width)).confident:
                self.precision = p
                return
            self.repeats = block + 1
            yield from plan[block * size:(block + 1) * size]
        self.precision = precision(self.records, c.target_width)

    def __iter__(self) -> Iterator[RunRecord]:
        for record in iter_runs(self.config, self.on_event, plan=self._plan(), executor=self.executor):
            self.records.append(record)
            yield record
