"""Phase and step timing of one training, and the arithmetic that turns clock readings into reported times.

A :class:`Stopwatch` reads one injectable clock (:func:`time.perf_counter` in a worker, a fake one in the tests)
around the phases (import, build), every step, every epoch and every evaluation, and keeps the readings in a
:class:`Timeline`. The timed calls are the backends' synchronised ones (they return host values), so a reading
after the call covers the device's work. :func:`summarise` is pure: a timeline in, the reported times out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

Clock = Callable[[], float]  # seconds, monotonic
T = TypeVar("T")


@dataclass
class Timeline:
    """The clock readings of one training, in seconds."""
    import_s: float = math.nan
    build_s: float = math.nan
    step_s: list[float] = field(default_factory=list)         # every step, the first included
    full: list[bool] = field(default_factory=list)            # per step: a full batch (only those are steady)
    epoch_train_s: list[float] = field(default_factory=list)  # cumulative training time at each epoch's end
    eval_s: list[float] = field(default_factory=list)         # each per-epoch evaluation
    started: float = math.nan     # clock reading as the first phase (the framework import) began
    trained: float = math.nan     # clock reading at the end of the last epoch


class Stopwatch:
    """Times calls with ``clock`` and records them in :attr:`timeline`."""

    def __init__(self, clock: Clock = perf_counter):
        self.clock, self.timeline = clock, Timeline()
        self._train_s, self._epoch_start = 0.0, math.nan

    def _timed(self, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
        t = self.clock()
        out = fn(*args)
        return out, self.clock() - t

    def phase(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, its time kept as the ``import`` or ``build`` phase (not kept if it raises)."""
        if math.isnan(self.timeline.started):
            self.timeline.started = self.clock()
        out, seconds = self._timed(fn, *args)
        setattr(self.timeline, f"{name}_s", seconds)
        return out

    def step(self, full: bool, fn: Callable[..., T], *args: Any) -> T:
        """One training step ``fn(*args)``; ``full``: its batch has the full batch size."""
        out, seconds = self._timed(fn, *args)
        self.timeline.step_s.append(seconds)
        self.timeline.full.append(full)
        return out

    def start_epoch(self) -> None:
        self._epoch_start = self.clock()

    def end_epoch(self) -> float:
        """Close the epoch begun by :meth:`start_epoch`; returns the cumulative training time. An epoch's time
        includes the work between its steps (batch slicing, the loss check), not the evaluations."""
        self.timeline.trained = self.clock()
        self._train_s += self.timeline.trained - self._epoch_start
        self.timeline.epoch_train_s.append(self._train_s)
        return self._train_s

    def evaluate(self, fn: Callable[..., T], *args: Any) -> T:
        out, seconds = self._timed(fn, *args)
        self.timeline.eval_s.append(seconds)
        return out


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation); NaN for no samples."""
    return float(np.percentile(xs, q)) if len(xs) else math.nan


def time_to_target(epoch_train_s: Sequence[float], values: Sequence[float], target: float | None,
                   lower_is_better: bool) -> float | None:
    """The cumulative training time at the end of the first epoch whose test metric ``values[i]`` met
    ``target`` (at most it for a loss, at least it for an accuracy); None if never met or no target."""
    if target is None:
        return None
    met = (i for i, v in enumerate(values) if (v <= target if lower_is_better else v >= target))
    i = next(met, None)
    return None if i is None else epoch_train_s[i]


def summarise(t: Timeline, samples: int, time_to_target_s: float | None = None) -> dict[str, Any]:
    """The reported times of a finished training of ``samples`` training samples (at least one step and one
    epoch), in seconds, keyed by their names in :class:`isobench.results.Metrics`. The first step is kept apart
    from the steady state (full batches after it): it pays for tracing and compiling, and the compile cost is
    its excess over the steady median (never negative). The time to a trained model is the framework's part of a
    cold script: import + build + training (first step included); the worker's own work between those phases is
    :func:`harness_between`."""
    steady = [s for i, s in enumerate(t.step_s) if i > 0 and t.full[i]]
    median, train_s = percentile(steady, 50), t.epoch_train_s[-1]
    return {"import_s": t.import_s, "build_s": t.build_s, "first_step_s": t.step_s[0],
            "compile_s": max(0.0, t.step_s[0] - median), "step_time_median_s": median,
            "step_time_p10_s": percentile(steady, 10), "step_time_p90_s": percentile(steady, 90),
            "train_time_s": train_s, "eval_s": t.eval_s[-1], "eval_total_s": float(sum(t.eval_s)),
            "throughput_samples_s": samples / train_s, "time_to_target_s": time_to_target_s,
            "epoch_train_s": t.epoch_train_s, "step_times_s": t.step_s,
            "time_to_trained_s": t.import_s + t.build_s + train_s}


def harness_between(t: Timeline) -> float:
    """Seconds of the harness's own work between the framework import's start and the end of training that are not
    import, build or training (the weight check, the gc freeze, the per-epoch evaluations), never negative."""
    return max(0.0, t.trained - t.started - t.import_s - t.build_s - t.epoch_train_s[-1])
