"""Compare two sessions: the same (workload, framework, mode) measured twice, e.g. on another machine,
with another framework version or other threads.

Per metric the change is median(B) / median(A) over ok processes with a bootstrap interval that resamples the
processes of each session, and a two-sided Mann-Whitney U test (:func:`isobench.stats.compare`). The flag
follows the verdict rule: "regression" or "improvement" only when the interval excludes 1 and p < alpha,
in the metric's own direction (lower time and memory, higher accuracy are better). A test accuracy that is the same in
every repeat of each session but differs between them (a deterministic training) is flagged "changed, untested":
its repeats cannot show whether the change is larger than rounding makes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..results import ResultSet, RunRecord
from ..stats import METRICS, Comparison, Group, Metric, Stats, compare, describe, deterministic_gap

COMPARED = ("train_time_s", "step_time_median_s", "first_step_s", "test_accuracy", "train_peak_rss_bytes")
REGRESSION, IMPROVEMENT, NO_CHANGE = "regression", "improvement", "no significant change"
UNTESTED = "changed, untested (one value per session)"  # every repeat of each session gave the same value


@dataclass(frozen=True)
class Change:
    """One metric of one group, session B against session A (``comparison``: a = B, b = A)."""
    metric: Metric
    a: Stats
    b: Stats
    comparison: Comparison

    @property
    def flag(self) -> str:
        if self.metric.kind == "accuracy" and deterministic_gap(self.a, self.b):
            return UNTESTED
        if not self.comparison.significant:
            return NO_CHANGE
        up = self.comparison.interval.estimate > self.comparison.null  # B above A
        return IMPROVEMENT if up == self.metric.higher_is_better else REGRESSION


@dataclass(frozen=True)
class GroupChanges:
    group: Group
    n_a: int                         # ok processes in session A
    n_b: int
    changes: tuple[Change, ...]


def _values(runs: list[RunRecord], display: dict[str, str]) -> dict[Group, tuple[int, dict[str, list[float]]]]:
    """Per group: the number of ok processes and each compared metric's per-process values."""
    out: dict[Group, tuple[int, dict[str, list[float]]]] = {}
    for r in runs:
        g = Group.of(r.spec, display)
        n, per = out.get(g, (0, {}))
        if r.ok and r.metrics:
            n += 1
            for m in COMPARED:
                if (v := getattr(r.metrics, m)) is not None:
                    per.setdefault(m, []).append(v)
        out[g] = n, per
    return out


def compare_sessions(a: ResultSet, b: ResultSet, display: dict[str, str] | None = None, n_boot: int = 5000,
                     level: float = 0.95, alpha: float = 0.05, seed: int = 0) -> list[GroupChanges]:
    """Every (workload, framework, mode) present in both sessions, in column order, with one :class:`Change`
    per metric of :data:`COMPARED` that has values in both. ``display`` maps framework ids to human names."""
    va, vb = _values(a.runs, display or {}), _values(b.runs, display or {})
    metrics = {m.name: m for m in METRICS}
    out = []
    for g in sorted(va.keys() & vb.keys(), key=Group.sort_key):
        (n_a, xa), (n_b, xb) = va[g], vb[g]
        changes = []
        for name in COMPARED:
            if xa.get(name) and xb.get(name):
                kind = "ratio" if min(xa[name] + xb[name]) > 0 else "difference"  # ratios need positive values
                changes.append(Change(metrics[name], describe(xa[name]), describe(xb[name]),
                                      compare(xb[name], xa[name], kind, n_boot, level, alpha, seed)))
        out.append(GroupChanges(g, n_a, n_b, tuple(changes)))
    return out


SETUP_KEYS = ("isobench", "python", "platform", "hostname", "cpu_model", "logical_cores")


def setup_differences(a: ResultSet, b: ResultSet) -> list[tuple[str, Any, Any]]:
    """What differs between the sessions' set-ups: threads, repeats, host, Python, package versions, flags."""
    def flat(r: ResultSet) -> dict[str, Any]:
        env = r.environment
        d = {k: r.config.get(k) for k in ("threads", "repeats")}
        d.update({k: env.get(k) for k in SETUP_KEYS})
        d.update({f"{k} version": v for k, v in (env.get("packages") or {}).items()})
        d.update({f"${k}": v for k, v in (env.get("env") or {}).items()})
        return d
    fa, fb = flat(a), flat(b)
    return [(k, fa.get(k), fb.get(k)) for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k)]
