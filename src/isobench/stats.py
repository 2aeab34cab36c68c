"""Statistics over worker processes: group summaries, bootstrap intervals, rank tests and the verdict rule.

The process is the unit of replication: every ok run contributes one value per metric (its median steady
step time, its training time, ...). Failed runs are counted but contribute nothing. For each group
(workload, framework, mode) and metric :func:`describe` gives n, the median, a robust spread, min, max and
the coefficient of variation. The spread is 1.4826 x the median absolute deviation (MAD): it equals the
standard deviation for normal data but one outlier process (a page-cache miss, a noisy neighbour) cannot
inflate it. The coefficient of variation is that spread divided by the median.

Two groups are compared by the ratio of their medians, with a percentile bootstrap interval that resamples
processes independently within each group (:func:`bootstrap_ratio_ci`), and by a two-sided Mann-Whitney U
test (:func:`mann_whitney_p`). Test accuracy is compared by the difference of medians instead (percentage
points read better than ratios of fractions), and so is any metric with a zero value (a compile cost clamped
at 0), where ratios are undefined. With a handful of processes a bootstrapped median takes only a few distinct
values, so the interval is coarse: one more reason the rank test must agree before anything is claimed.

Verdict rule: a difference is claimed only when the interval (95% by default) excludes the null (ratio 1,
difference 0) AND the Mann-Whitney p < alpha (0.05); otherwise "no significant difference". A comparison is
*insufficient* when a group has fewer than 2 processes (no interval) or the group sizes cannot reach
p < alpha at all: the smallest two-sided p of the exact test is 2 / C(n_a + n_b, n_a), 0.10 for 3 vs 3 and
0.029 for 4 vs 4, so claims need at least :func:`min_repeats` (4) processes per group. A group whose
coefficient of variation on a headline time (training time, steady step time) exceeds a threshold (5% by
default) is reported as noisy. :func:`outcome` applies the rule to one comparison; the report words it.

Two sessions (the same group measured on another machine, with another version, other threads; or the same
deployment row) are compared the same way, median(B) / median(A) per metric (:func:`compare_sessions`), and a
change is flagged a regression or an improvement, in the metric's own direction, only under the same rule. A test
accuracy that is the same in every repeat of each session but differs between them (a deterministic training) is
"untested": its repeats cannot show whether the change is larger than rounding makes it.

A deployment session (``isobench deploy``) is summarised the same way (:func:`summarize_deploy`): its groups are
rows (path, precision, batch size), its unit the serving process, and per batch size every row is compared with the
best by the same function as training's groups (:func:`summarize_metric`), each ratio oriented as the best row's
advantage; each int8 row is compared with its own fp32 row (:class:`Trade`) on p50 latency and artifact size.

A serving session (``isobench deploy --scenario``) too (:func:`summarize_serving`): per workload and scenario its rows
are (path, precision, batching), its unit the load worker, its figures those of the processes LoadGen judged VALID
(an INVALID run is no result, as in MLPerf), and every row with correct answers is compared with the best on the
scenario's headline figure (:data:`HEADLINE`); a path measured with and without dynamic batching has its two rows
compared on it as well.

Bootstrap intervals all resample processes with one routine (:func:`bootstrap_median_ci` for one group's
median, :func:`bootstrap_ratio_ci` and :func:`bootstrap_diff_ci` for two groups, :func:`bootstrap_paired_ratio_ci`
for paired measurements).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from math import comb

import numpy as np
from scipy.stats import PermutationMethod, mannwhitneyu, rankdata

from .backends import display_name, framework_rank, optimizer_rank, precision_rank
from .results import (EXPORT, OK, SERVE, Cell, DeployRecord, DeploySpec, LoadRecord, LoadSpec, ResultSet, RunRecord,
                      RunSpec)

MAD_TO_SD = 1.4826      # 1 / Phi^-1(3/4): makes the MAD estimate the standard deviation of a normal
OUTLIER_SPREADS = 3.0   # a process further than this many robust spreads from its group's median is an outlier
OUTLIER_FLOOR = 0.05    # ... the spread taken as at least 5% of the median (the noise threshold): a process 3% off a very
                        # tight group is not an outlier worth a line of the verdict
EXACT_LIMIT = 50_000    # enumerate every permutation (exact p with ties) up to this many splits


@dataclass(frozen=True)
class Metric:
    """How one field of :class:`~isobench.results.Metrics` is summarised and compared (its title, unit and
    wording belong to the report: :mod:`isobench.report.words`)."""
    name: str                       # attribute of Metrics
    kind: str                       # "time" (s), "memory" (bytes), "rate" (samples/s), "accuracy" (fraction),
                                    # "loss" (nats per example or per token), "flops" (FLOP/s), "fraction"
                                    # (of the peak), "energy" (joules)
    higher_is_better: bool = False
    noise_check: bool = False       # warn when its coefficient of variation is high


METRICS = (
    Metric("time_to_trained_s", "time", noise_check=True),
    Metric("train_time_s", "time", noise_check=True),
    Metric("time_to_target_s", "time"),
    Metric("step_time_median_s", "time", noise_check=True),
    Metric("first_step_s", "time"),
    Metric("compile_s", "time"),
    Metric("throughput_samples_s", "rate", higher_is_better=True),
    Metric("import_s", "time"),
    Metric("build_s", "time"),
    Metric("eval_s", "time"),
    Metric("test_accuracy", "accuracy", higher_is_better=True),
    Metric("test_loss", "loss"),
    Metric("rss_after_import_bytes", "memory"),
    Metric("train_peak_rss_bytes", "memory"),
    Metric("process_peak_rss_bytes", "memory"),
    Metric("device_peak_bytes", "memory"),
    # efficiency: counted FLOPs of a full-batch step over the measured steady median step (results.Metrics), the
    # matmul part of it over the session's measured peak matmul rate (MFU), energy from counters; absent when
    # not recorded
    Metric("achieved_flops_s", "flops", higher_is_better=True),
    Metric("peak_fraction", "fraction", higher_is_better=True),
    Metric("energy_per_sample_j", "energy"),
)
SERVING = (  # a deployment's own figures (results.DeployMetrics of a serving process); it shares throughput, test
    Metric("cold_start_s", "time"),       # accuracy and test loss with training
    Metric("latency_p50_s", "time"),
    Metric("latency_p90_s", "time"),
    Metric("latency_p99_s", "time"),
    Metric("artifact_bytes", "memory"),   # the file that serves the batch size
    Metric("peak_rss_bytes", "memory"),
)
HARNESS = ("harness_s", "rss_before_import_bytes", "harness_between_s")  # WorkerSettings fields: the harness's cost
PeakRate = Callable[[RunSpec], "float | None"]  # a run's peak matmul rate, FLOP/s; None where not measured
LOAD = (  # a serving session's own figures (results.LoadMetrics of a load worker); it shares latency and RSS with
    Metric("max_qps", "rate", higher_is_better=True),        # deployment: QPS and samples per second
    Metric("samples_per_s", "rate", higher_is_better=True),
    Metric("accuracy", "accuracy", higher_is_better=True),   # of every answer given under load
)
METRIC = {m.name: m for m in METRICS + SERVING + LOAD}  # every metric of every kind of session, by name
DEPLOY_METRICS = tuple(METRIC[name] for name in (  # the deployment table's columns, in order
    "cold_start_s", "latency_p50_s", "latency_p90_s", "latency_p99_s", "throughput_samples_s", "artifact_bytes",
    "peak_rss_bytes", "test_accuracy", "test_loss"))


@dataclass(frozen=True)
class Group:
    """One compared configuration: a framework in one mode (precision, device, optimizer implementation) on one
    workload."""
    workload: str
    framework: str
    mode: str
    precision: str = "fp32"
    device: str = "cpu"
    optimizer: str = "neutral"  # as RunSpec: a record without one ran isobench's own update rules

    @classmethod
    def of(cls, spec) -> "Group":
        """The group a run's :class:`~isobench.results.RunSpec` belongs to (every repeat of one cell)."""
        return cls(spec.workload, spec.framework, spec.mode, spec.precision, spec.device, spec.optimizer)

    def matches(self, spec) -> bool:
        return self == Group.of(spec)

    @property
    def cell(self) -> Cell:
        return Cell(self.framework, self.mode, self.precision, self.optimizer)

    @property
    def label(self) -> str:
        """The group's name in every report, from the backends' registry, e.g. ``"JAX (jit, bf16, library)"``:
        precision and device are named when they are not the defaults (fp32, cpu), the optimizer implementation when
        it is ``library``: a label without one means isobench's own update rules, as in every session recorded
        before the axis existed, so one label names the same work in old and new reports."""
        extra = [x for x, default in ((self.precision, "fp32"), (self.device, "cpu"), (self.optimizer, "neutral"))
                 if x != default]
        return f"{display_name(self.framework)} ({', '.join([self.mode] + extra)})"

    def sort_key(self) -> tuple:
        """Column order: workload, device, then the registry's framework order, mode, precision and optimizer
        implementation order."""
        return self.workload, self.device, framework_rank(self.framework), self.framework, self.mode, \
            precision_rank(self.precision), self.precision, optimizer_rank(self.optimizer), self.optimizer


@dataclass(frozen=True)
class Stats:
    """One metric over the ok processes of one group, in the metric's units."""
    values: tuple[float, ...]       # one per process, in run order
    n: int
    median: float
    spread: float                   # 1.4826 x MAD; 0 for a single process
    min: float
    max: float

    @property
    def cv(self) -> float:
        """Robust coefficient of variation: spread / |median| (0 when the median is 0)."""
        return self.spread / abs(self.median) if self.median else 0.0

    @property
    def constant(self) -> bool:
        """Several processes, every one with the same value: a deterministic result (test accuracy from the same
        weights, data and order), whose repeats show no spread to test a difference against."""
        return self.n > 1 and self.min == self.max


def deterministic_gap(a: Stats, b: Stats) -> bool:
    """Both groups gave one value in every process, and the two values differ: a gap that their repeats cannot
    test (used for test accuracy, which a one-rounding-step change of the weights can move by pp; see
    benchmarks/rounding.py). Deterministic memory figures are real framework differences and are not asked."""
    return a.constant and b.constant and a.median != b.median


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""
    estimate: float
    low: float
    high: float
    level: float                    # e.g. 0.95
    resampled: bool                 # False when a group has one process: low == high == estimate


@dataclass(frozen=True)
class Comparison:
    """Group ``a`` against group ``b`` on one metric under the verdict rule (see the module docstring).

    ``kind`` is ``"ratio"`` (median(a) / median(b)) or ``"difference"`` (median(a) - median(b), in the
    metric's units; accuracy as a fraction).
    """
    kind: str
    interval: Interval
    p_value: float                  # two-sided Mann-Whitney U
    n_a: int
    n_b: int
    alpha: float

    @property
    def null(self) -> float:
        return 1.0 if self.kind == "ratio" else 0.0

    @property
    def insufficient(self) -> bool:
        """Too few processes for any claim: no interval, or p < alpha is out of reach."""
        return min(self.n_a, self.n_b) < 2 or min_p_value(self.n_a, self.n_b) >= self.alpha

    @property
    def significant(self) -> bool:
        """The interval excludes the null and p < alpha, with enough processes to say so."""
        iv = self.interval
        return not self.insufficient and not iv.low <= self.null <= iv.high and self.p_value < self.alpha


@dataclass(frozen=True)
class MetricSummary:
    """One metric across the groups of a workload (or the rows of a deployment at one batch size): statistics, the
    best group, and the others against it."""
    metric: Metric
    stats: dict[Group, Stats]       # groups (deployment: DeployRow) with at least one value, in column order
    best: Group                     # lowest median; highest where higher is better
    kind: str                       # "ratio" or "difference", for every comparison of this metric
    comparisons: dict[Group, Comparison]  # every other group with values: a = that group, b = best; ``favourable``:
                                          # a = best, b = that group where higher is better (a ratio of at least 1
                                          # where the medians differ: "served 1.34x the throughput of")
    favourable: bool = False


@dataclass(frozen=True)
class Noise:
    """A group whose per-process values of a metric vary more than the threshold."""
    group: Group
    metric: Metric
    cv: float                       # robust coefficient of variation (spread / |median|)


@dataclass(frozen=True)
class Outlier:
    """One process whose value of a headline time lies more than :data:`OUTLIER_SPREADS` robust spreads from its
    group's median: flagged, never dropped (a heavy tail is a finding, and dropping it would bias the median)."""
    group: Group
    metric: Metric
    repeat: int                     # 0-based, as in the record
    value: float
    median: float                   # the group's median, this process included
    spread: float                   # the group's robust spread (before the floor)


@dataclass(frozen=True)
class Contended:
    """A group some of whose ok processes were measured while other processes shared their CPUs
    (:attr:`isobench.results.Metrics.contended`): their times are not comparable with a quiet machine's."""
    group: Group
    count: int                      # contended ok processes
    total: int                      # ok processes
    fractions: tuple[float, ...]    # each contended process's share of its CPUs taken by others, in run order


@dataclass(frozen=True)
class Summary:
    """Everything the reports need for one workload."""
    workload: str
    groups: tuple[Group, ...]       # every group that ran, failed-only ones included, in column order
    ok: dict[Group, int]            # ok processes per group
    failed: dict[Group, int]        # failed processes per group (any status but ok)
    metrics: dict[str, MetricSummary]  # METRICS order; metrics without any value (device memory on CPU) left out
    noisy: tuple[Noise, ...]
    level: float                    # interval level, e.g. 0.95
    alpha: float                    # rank-test threshold, e.g. 0.05
    cv_threshold: float             # noise warning threshold, e.g. 0.05
    outliers: tuple[Outlier, ...] = ()
    contended: tuple[Contended, ...] = ()
    # the harness's own cost over each group's ok processes, excluded from every figure (results.WorkerSettings):
    # per group, the keys of HARNESS that were recorded
    harness: dict[Group, dict[str, Stats]] = field(default_factory=dict)

    @property
    def insufficient(self) -> bool:
        """Some comparison has too few processes for a claim."""
        return any(c.insufficient for m in self.metrics.values() for c in m.comparisons.values())


def describe(values: Sequence[float]) -> Stats:
    """n, median, robust spread (1.4826 x MAD), min and max of per-process values (at least one)."""
    x = np.asarray(values, dtype=float)
    med = float(np.median(x))
    return Stats(values=tuple(float(v) for v in x), n=x.size, median=med,
                 spread=MAD_TO_SD * float(np.median(np.abs(x - med))), min=float(x.min()), max=float(x.max()))


def _medians(x: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the median of ``x``: each row resamples its values with replacement."""
    return np.median(x[rng.integers(0, x.size, (n_boot, x.size))], axis=1)


def _percentile_interval(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), level, resampled=True)


def bootstrap_median_ci(values: Sequence[float], n_boot: int = 5000, level: float = 0.95, seed: int = 0) -> Interval:
    """The median of one group's per-process values with a percentile bootstrap interval over its processes.

    With a single process the interval collapses to the point (``resampled=False``)."""
    x = np.asarray(values, dtype=float)
    estimate = float(np.median(x))
    if x.size < 2:
        return Interval(estimate, estimate, estimate, level, resampled=False)
    return _percentile_interval(estimate, _medians(x, np.random.default_rng(seed), n_boot), level)


def _two_groups(a, b, op, n_boot: int, level: float, seed: int) -> Interval:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    estimate = float(op(np.median(a), np.median(b)))
    if min(a.size, b.size) < 2:
        return Interval(estimate, estimate, estimate, level, resampled=False)
    rng = np.random.default_rng(seed)  # one stream: a's replicates drawn first, then b's
    return _percentile_interval(estimate, op(_medians(a, rng, n_boot), _medians(b, rng, n_boot)), level)


def bootstrap_ratio_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 5000, level: float = 0.95,
                       seed: int = 0) -> Interval:
    """median(a) / median(b) with a percentile bootstrap interval over processes.

    Each replicate resamples ``a`` and ``b`` independently with replacement. Values must be positive.
    With a single process in either group the interval collapses to the point (``resampled=False``).
    """
    return _two_groups(a, b, np.divide, n_boot, level, seed)


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 5000, level: float = 0.95,
                      seed: int = 0) -> Interval:
    """median(a) - median(b) with a percentile bootstrap interval, as :func:`bootstrap_ratio_ci`."""
    return _two_groups(a, b, np.subtract, n_boot, level, seed)


def bootstrap_paired_ratio_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 5000, level: float = 0.95,
                              seed: int = 0) -> Interval:
    """The median over pairs of a[i] / b[i], with a percentile bootstrap interval that resamples pairs.

    For measurements taken in pairs (e.g. back to back, so that a drift of the machine's speed hits both).
    Values must be positive. With a single pair the interval collapses to the point (``resampled=False``)."""
    return bootstrap_median_ci(np.asarray(a, dtype=float) / np.asarray(b, dtype=float), n_boot, level, seed)


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value, exact for small samples.

    Without ties scipy's exact distribution is used up to 8 per group; with ties (equal accuracies are
    common) every split of the pooled values is enumerated while there are at most 50,000, else the
    tie-corrected normal approximation. Identical samples give 1.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = np.concatenate([a, b])
    if np.all(pooled == pooled[0]):
        return 1.0
    splits = comb(a.size + b.size, a.size)
    ties = np.unique(pooled).size < pooled.size
    if ties and min(a.size, b.size) == 1:  # scipy's permutation test needs two per group: enumerate the splits
        return _exact_tied_p(a, b)
    method = PermutationMethod(n_resamples=splits) if ties and splits <= EXACT_LIMIT else "auto"
    return float(mannwhitneyu(a, b, alternative="two-sided", method=method).pvalue)


def _exact_tied_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided rank-test p-value by enumerating every split of the pooled values (mid-ranks for
    ties), as scipy's permutation version: twice the smaller one-sided share, at most 1."""
    pooled = np.concatenate([a, b])
    ranks = rankdata(pooled)
    observed = ranks[:a.size].sum()
    sums = np.array([ranks[list(chosen)].sum() for chosen in combinations(range(pooled.size), a.size)])
    eps = 1e-9 * max(1.0, abs(observed))
    return float(min(1.0, 2 * min(np.mean(sums >= observed - eps), np.mean(sums <= observed + eps))))


def min_p_value(n_a: int, n_b: int) -> float:
    """Smallest two-sided p the exact rank test can give for these group sizes: 2 / C(n_a + n_b, n_a)."""
    return min(1.0, 2 / comb(n_a + n_b, n_a))


def min_repeats(alpha: float = 0.05) -> int:
    """Fewest processes per group (equal sizes) with which a two-sided rank test can reach p < alpha."""
    n = 2
    while min_p_value(n, n) >= alpha:
        n += 1
    return n


def compare(a: Sequence[float], b: Sequence[float], kind: str = "ratio", n_boot: int = 5000, level: float = 0.95,
            alpha: float = 0.05, seed: int = 0) -> Comparison:
    """Compare per-process values of group ``a`` against group ``b``: interval, p-value and verdict."""
    boot = bootstrap_ratio_ci if kind == "ratio" else bootstrap_diff_ci
    return Comparison(kind, boot(a, b, n_boot, level, seed), mann_whitney_p(a, b), len(a), len(b), alpha)


def summarize_metric(metric: Metric, values: dict, n_boot: int = 5000, level: float = 0.95, alpha: float = 0.05,
                     seed: int = 0, favourable: bool = False) -> MetricSummary:
    """The one way groups are compared: per group (a training :class:`Group`, a :class:`DeployRow`) its
    :class:`Stats`, the best group (ties: the first in ``values``' order), and every other group against it under
    the verdict rule, by the ratio of medians (the difference for accuracy and where a value is 0). ``favourable``
    (the deployment verdict) orients a metric where higher is better as best / other, so that its ratios read as
    the best group's advantage, like those of the metrics where lower is better."""
    stats = {g: describe(v) for g, v in values.items()}
    pick = max if metric.higher_is_better else min
    best = pick(stats, key=lambda g: stats[g].median)  # ties: the first group in column order
    positive = all(v > 0 for vs in values.values() for v in vs)
    kind = "ratio" if positive and metric.kind != "accuracy" else "difference"
    flip = favourable and metric.higher_is_better
    comparisons = {g: compare(*((values[best], values[g]) if flip else (values[g], values[best])), kind, n_boot,
                              level, alpha, seed) for g in stats if g != best}
    return MetricSummary(metric, stats, best, kind, comparisons, favourable)


def metric_value(metric: Metric, record: RunRecord, peak: PeakRate | None = None) -> float | None:
    """One ok run's value of ``metric``: its :class:`~isobench.results.Metrics` field or property; the fraction of
    the peak is its achieved matmul FLOP/s over ``peak`` of its spec (``None`` without one)."""
    if metric.name != "peak_fraction":
        return getattr(record.metrics, metric.name)
    rate, achieved = peak(record.spec) if peak else None, record.metrics.achieved_matmul_flops_s
    return achieved / rate if achieved is not None and rate else None


def _summarize_workload(workload: str, runs: list[RunRecord], n_boot: int, level: float, alpha: float, seed: int,
                        cv_threshold: float, peak: PeakRate | None) -> Summary:
    by_group: dict[Group, list[RunRecord]] = {}
    for r in runs:
        if not r.warmup:
            by_group.setdefault(Group.of(r.spec), []).append(r)
    groups = tuple(sorted(by_group, key=Group.sort_key))
    ok = {g: [r for r in by_group[g] if r.ok and r.metrics is not None] for g in groups}
    metrics = {}
    for m in METRICS:
        values = {g: vs for g, got in ok.items()
                  if (vs := [v for x in got if (v := metric_value(m, x, peak)) is not None])}
        if values:
            metrics[m.name] = summarize_metric(m, values, n_boot, level, alpha, seed)
    noisy = tuple(Noise(g, msum.metric, s.cv) for msum in metrics.values() if msum.metric.noise_check
                  for g, s in msum.stats.items() if s.n >= 2 and s.cv > cv_threshold)
    failed = {g: len(by_group[g]) - len(ok[g]) for g in groups}
    contended = tuple(Contended(g, len(shared), len(ok[g]), tuple(r.metrics.contention for r in shared))
                      for g in groups if (shared := [r for r in ok[g] if r.metrics.contended]))
    harness = {g: {k: describe(vs) for k in HARNESS if (vs := [v for r in rs if (v := r.environment.get(k)) is not None])}
               for g, rs in ok.items()}
    return Summary(workload, groups, {g: len(ok[g]) for g in groups}, failed, metrics, noisy, level, alpha,
                   cv_threshold, outliers(ok, metrics), contended, harness)


def outliers(ok: dict[Group, list[RunRecord]], metrics: dict[str, MetricSummary]) -> tuple[Outlier, ...]:
    """Every ok process (of a group of 3 or more) more than :data:`OUTLIER_SPREADS` robust spreads from its group's
    median on a headline time (the metrics with ``noise_check``), in group then run order."""
    out = []
    for msum in metrics.values():
        if not msum.metric.noise_check:
            continue
        for g, s in msum.stats.items():
            limit = OUTLIER_SPREADS * max(s.spread, OUTLIER_FLOOR * abs(s.median))
            if s.n >= 3:
                with_value = [r for r in ok[g] if getattr(r.metrics, msum.metric.name) is not None]
                out += [Outlier(g, msum.metric, r.spec.repeat, v, s.median, s.spread)
                        for r, v in zip(with_value, s.values) if abs(v - s.median) > limit]
    return tuple(sorted(out, key=lambda o: (o.group.sort_key(), o.repeat)))


def summarize(runs: Iterable[RunRecord], n_boot: int = 5000, level: float = 0.95, alpha: float = 0.05, seed: int = 0,
              cv_threshold: float = 0.05, peak: PeakRate | None = None) -> list[Summary]:
    """One :class:`Summary` per workload, in order of first appearance.

    Only ok runs contribute values; the others are counted in ``Summary.failed``. ``n_boot`` bootstrap
    replicates give ``level`` intervals; ``seed`` makes them reproducible. ``cv_threshold`` is the coefficient
    of variation above which a group is reported as noisy. ``peak`` gives a run's peak matmul FLOP/s (e.g.
    :meth:`ResultSet.peak_flops_s`) for the fraction of the peak; without it that metric is absent.
    """
    by_workload: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_workload.setdefault(r.spec.workload, []).append(r)
    return [_summarize_workload(w, rs, n_boot, level, alpha, seed, cv_threshold, peak)
            for w, rs in by_workload.items()]


# ---- the verdict rule, per comparison ------------------------------------------------------------------------

VERDICT = ("time_to_trained_s", "train_time_s", "time_to_target_s", "step_time_median_s", "compile_s", "test_accuracy",
           "train_peak_rss_bytes", "device_peak_bytes")  # the metrics a verdict speaks about, in its order
CLAIMED, NO_DIFFERENCE, TOO_FEW, UNTESTED = "claimed", "no-difference", "too-few", "untested"


def outcome(msum: MetricSummary, group: Group) -> str:
    """What the verdict rule allows about ``group`` against the best group on one metric: :data:`TOO_FEW`
    (no claim is reachable with these group sizes), :data:`UNTESTED` (test accuracy, a :func:`deterministic_gap`),
    :data:`CLAIMED` (significant) or :data:`NO_DIFFERENCE`."""
    c = msum.comparisons[group]
    if c.insufficient:
        return TOO_FEW
    if msum.metric.kind == "accuracy" and deterministic_gap(msum.stats[msum.best], msum.stats[group]):
        return UNTESTED
    return CLAIMED if c.significant else NO_DIFFERENCE


# ---- two sessions: the same group measured twice ---------------------------------------------------------------

COMPARED = ("train_time_s", "step_time_median_s", "first_step_s", "test_accuracy", "train_peak_rss_bytes")
REGRESSION, IMPROVEMENT, NO_CHANGE = "regression", "improvement", "no-change"  # and UNTESTED: a change per flag


@dataclass(frozen=True)
class Change:
    """One metric of one group, session B against session A (``comparison``: a = B, b = A)."""
    metric: Metric
    a: Stats
    b: Stats
    comparison: Comparison

    @property
    def flag(self) -> str:
        """:data:`REGRESSION` or :data:`IMPROVEMENT` only when the comparison is significant, in the metric's own
        direction; :data:`UNTESTED` for a test accuracy that is a :func:`deterministic_gap`; else :data:`NO_CHANGE`."""
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


def _unit(spec) -> "Group | DeployRow | LoadRow | None":
    """What a record is one process of, in a comparison of sessions: its training group, its deployment row or its
    serving row (``None``: an export, which has no repeats)."""
    if isinstance(spec, LoadSpec):
        return LoadRow(*spec.row)
    if not isinstance(spec, DeploySpec):
        return Group.of(spec)
    return DeployRow(*spec.row) if spec.kind == SERVE else None


def counted(record) -> bool:
    """A record whose figures count: its worker ended ok and, a load worker, LoadGen judged its run VALID."""
    return record.status == OK and record.metrics is not None and not (
        isinstance(record, LoadRecord) and record.metrics.valid is False)


def _session_values(records: Iterable, metrics: Sequence[str]) -> dict:
    """Per group (training) or row (deployment, serving): the number of counted processes (:func:`counted`) and each
    metric's per-process values, in record order (a serving row: only its scenario's figures)."""
    out: dict = {}
    for r in records:
        if r.warmup or (g := _unit(r.spec)) is None:
            continue
        n, per = out.get(g, (0, {}))
        if counted(r):
            n += 1
            for m in [m for m in metrics if not isinstance(g, LoadRow) or m in SCENARIO_METRICS[g.scenario]]:
                if (v := getattr(r.metrics, m)) is not None:
                    per.setdefault(m, []).append(v)
        out[g] = n, per
    return out


def _changes(xa: dict[str, list[float]], xb: dict[str, list[float]], metrics: Sequence[str], accuracy_in_pp: bool,
             n_boot: int, level: float, alpha: float, seed: int) -> tuple[Change, ...]:
    """One :class:`Change` (``a``: the first values, ``b``: the second) per metric with values in both: the ratio
    median(b) / median(a) with a bootstrap interval that resamples each side's processes and the rank test; the
    difference where a value is 0 and, with ``accuracy_in_pp``, for test accuracy."""
    out = []
    for name in metrics:
        if xa.get(name) and xb.get(name):
            ratio = min(xa[name] + xb[name]) > 0 and not (accuracy_in_pp and METRIC[name].kind == "accuracy")
            out.append(Change(METRIC[name], describe(xa[name]), describe(xb[name]),
                              compare(xb[name], xa[name], "ratio" if ratio else "difference", n_boot, level, alpha,
                                      seed)))
    return tuple(out)


def compare_sessions(a: ResultSet, b: ResultSet, n_boot: int = 5000, level: float = 0.95, alpha: float = 0.05,
                     seed: int = 0) -> list[GroupChanges]:
    """Every group present in both sessions, in column order, with one :class:`Change` per metric of
    :data:`COMPARED` that has values in both: median(B) / median(A) (a difference where a value is 0) with a
    bootstrap interval that resamples each session's processes, and the rank test (:func:`compare`).

    Two deployment sessions compare row by row (path, precision, batch size; as :func:`deploy_group`) on
    :data:`DEPLOY_SESSION_COMPARED`, two serving sessions row by row (scenario, path, precision, batching; as
    :func:`load_group`) on their scenario's figures of :data:`LOAD_SESSION_COMPARED` from VALID runs; test accuracy
    (the accuracy of the answers) by its difference."""
    metrics, as_group = (DEPLOY_SESSION_COMPARED, deploy_group) if a.is_deploy else \
        (LOAD_SESSION_COMPARED, load_group) if a.is_serving else (COMPARED, None)
    va, vb = _session_values(a.records, metrics), _session_values(b.records, metrics)
    out = []
    for g in sorted(va.keys() & vb.keys(), key=lambda g: g.sort_key()):
        (n_a, xa), (n_b, xb) = va[g], vb[g]
        out.append(GroupChanges(as_group(g) if as_group else g, n_a, n_b,
                                _changes(xa, xb, metrics, as_group is not None, n_boot, level, alpha, seed)))
    return out


# ---- the cost of privacy: a private workload against its non-private counterpart, cell by cell ------------------

PRIVACY_COST = ("step_time_median_s", "train_time_s", "train_peak_rss_bytes", "device_peak_bytes", "test_accuracy")


def compare_workloads(runs: Iterable[RunRecord], base: str, other: str, metrics: Sequence[str] = PRIVACY_COST,
                      n_boot: int = 5000, level: float = 0.95, alpha: float = 0.05,
                      seed: int = 0) -> list[GroupChanges]:
    """Workload ``other`` against workload ``base`` in every cell (framework, mode, precision, device) that ran both,
    in column order: one :class:`Change` per metric with values in both (``a``: ``base``, ``b``: ``other``), the
    ratio median(other) / median(base) with a bootstrap interval that resamples each workload's processes, and the
    rank test (:func:`compare`); test accuracy (and any metric with a zero value) as the difference other - base.
    The groups are ``other``'s. E.g. the cost of privacy: ``other`` a DP-SGD workload, ``base`` its counterpart."""
    runs = list(runs)
    va = {replace(g, workload=""): v for g, v in _session_values([r for r in runs if r.spec.workload == base],
                                                                   metrics).items()}
    vb = _session_values([r for r in runs if r.spec.workload == other], metrics)
    out = []
    for g in sorted((g for g in vb if replace(g, workload="") in va), key=Group.sort_key):
        (n_a, xa), (n_b, xb) = va[replace(g, workload="")], vb[g]
        out.append(GroupChanges(g, n_a, n_b, _changes(xa, xb, metrics, True, n_boot, level, alpha, seed)))
    return out


# ---- isobench deploy: per (workload, path, quantization, batch size) the serving process is the unit

DEPLOY_COMPARED = ("latency_p50_s", "throughput_samples_s")  # every row against the best: the verdict's full list
INT8_ACCURACY_BOUND = 0.01  # an int8 row is a trade worth naming only within 1 pp (a fraction) of its fp32 accuracy


class PathRow:
    """What a deployment row and a serving row share: a deployment path (``path``) at a precision (``quantize``)."""
    path: str
    quantize: str

    @property
    def framework(self) -> str:
        return self.path.split("/")[0]

    @property
    def precision(self) -> str:
        return "fp32" if self.quantize == "none" else self.quantize


@dataclass(frozen=True)
class DeployRow(PathRow):
    """One row of the deploy table: a path at a precision and batch size, every serving repeat of it."""
    workload: str
    path: str
    quantize: str
    batch_size: int

    @property
    def label(self) -> str:
        return f"{self.path}{' int8' if self.quantize == 'int8' else ''} @{self.batch_size}"

    def sort_key(self) -> tuple:
        return self.workload, self.batch_size, framework_rank(self.framework), self.path, self.quantize != "none"


@dataclass(frozen=True)
class DeployRowSummary:
    """A row's per-process statistics, its export, its failures and its parity against the reference."""
    row: DeployRow
    export: DeployRecord | None     # the export's record (None: not exported in this session)
    stats: dict[str, Stats]         # DEPLOY_METRICS with values from ok processes (cold start: the first batch size's)
    ok: int
    failed: tuple[DeployRecord, ...]  # failed serving processes
    max_abs_logit_diff: float | None  # the largest over ok processes
    tolerance: float | None         # None: not checked (int8)
    parity: bool | None             # every ok process within tolerance; None: not checked or none ok
    accuracy_change: float | None = None  # int8: median accuracy minus the same path's fp32 median at this batch size


@dataclass(frozen=True)
class Trade:
    """An int8 row against the same path's fp32 row at the same batch size: the accuracy it gave up and, on p50
    latency and artifact size, the two rows compared by :func:`summarize_metric` (the better one is ``best``; either
    is ``None`` where a row has no value)."""
    row: DeployRow                  # the int8 row
    base: DeployRow                 # its fp32 row
    accuracy_change: float          # median int8 accuracy - median fp32 accuracy, a fraction
    latency: MetricSummary | None
    size: MetricSummary | None

    @property
    def within_bound(self) -> bool:
        """Its accuracy is at most :data:`INT8_ACCURACY_BOUND` below its fp32's (a drop of exactly 1 pp is within
        it, whatever the rounding of the two fractions' difference)."""
        return self.accuracy_change >= -INT8_ACCURACY_BOUND - 1e-9


@dataclass(frozen=True)
class DeploySummary:
    """Every row of one workload; per batch size the rows compared (rows whose fp32 logits missed their tolerance
    are left out: a quick wrong answer is not a better path) and every int8 row against its fp32."""
    workload: str
    rows: tuple[DeployRowSummary, ...]
    # batch size -> metric -> every compared row against the best: p50 latency, throughput above batch 1 (at batch 1
    # it is 1 / latency) and artifact size, in that order
    metrics: dict[int, dict[str, MetricSummary]]
    trades: dict[int, tuple[Trade, ...]]
    level: float
    alpha: float


def _deploy_rows(records: list[DeployRecord], batch_sizes: Iterable[int]) -> dict[DeployRow, tuple]:
    rows: dict[DeployRow, tuple] = {}
    exports = {(r.spec.workload, r.spec.path, r.spec.quantize): r for r in records if r.spec.kind == EXPORT}
    for (w, p, q), export in exports.items():  # a failed export still has its rows, with its reason
        for b in batch_sizes:
            rows[DeployRow(w, p, q, b)] = (export, [])
    for r in records:
        if r.spec.kind == SERVE:
            key = DeployRow(*r.spec.row)
            rows.setdefault(key, (exports.get((r.spec.workload, r.spec.path, r.spec.quantize)), []))[1].append(r)
    return rows


def _deploy_value(metric: Metric, record: DeployRecord, export: DeployRecord | None) -> float | None:
    """One ok serving record's value of ``metric``; its artifact's size falls back to its export's, whole (sessions
    stored before serving records had their own file's size)."""
    value = getattr(record.metrics, metric.name)
    if value is None and metric.name == "artifact_bytes" and export is not None and export.metrics is not None:
        return export.metrics.artifact_bytes
    return value


def _row_summary(row: DeployRow, export: DeployRecord | None, procs: list[DeployRecord]) -> DeployRowSummary:
    ok = [r for r in procs if r.status == OK and r.metrics]
    stats = {m.name: describe(vals) for m in DEPLOY_METRICS
             if (vals := [v for r in ok if (v := _deploy_value(m, r, export)) is not None])}
    diffs = [r.metrics.max_abs_logit_diff for r in ok if r.metrics.max_abs_logit_diff is not None]
    tol = next((r.metrics.logit_tolerance for r in ok if r.metrics.logit_tolerance is not None), None)
    verdicts = [r.metrics.parity_passed for r in ok if r.metrics.parity_passed is not None]
    return DeployRowSummary(row, export, stats, len(ok), tuple(r for r in procs if r.status != OK),
                            max(diffs) if diffs else None, tol, all(verdicts) if verdicts else None)


def summarize_deploy(records: Iterable[DeployRecord], batch_sizes: Iterable[int] = (), n_boot: int = 5000,
                     level: float = 0.95, alpha: float = 0.05, seed: int = 0) -> list[DeploySummary]:
    """Per workload: every row's statistics (serving processes as the unit; failed ones counted, never used), the
    int8 accuracy change against the same path's fp32, and per batch size the compared rows by
    :func:`summarize_metric` (favourable: every ratio the best row's advantage) and each int8 row's trade."""
    records = list(records)
    sizes = sorted({r.spec.batch_size for r in records if r.spec.kind == SERVE} | set(batch_sizes))

    def rank(name: str, rows: Iterable[DeployRowSummary]) -> MetricSummary | None:
        values = {s.row: list(s.stats[name].values) for s in rows if name in s.stats}
        return summarize_metric(METRIC[name], values, n_boot, level, alpha, seed, favourable=True) if values else None

    out = []
    for workload in dict.fromkeys(r.spec.workload for r in records):
        rows = _deploy_rows([r for r in records if r.spec.workload == workload], sizes)
        summaries = {row: _row_summary(row, export, procs) for row, (export, procs) in rows.items()}
        for row, s in summaries.items():
            fp32 = summaries.get(replace(row, quantize="none"))
            acc, base = s.stats.get("test_accuracy"), fp32 and fp32.stats.get("test_accuracy")
            if row.quantize != "none" and acc and base:
                summaries[row] = replace(s, accuracy_change=acc.median - base.median)
        ordered = tuple(sorted(summaries.values(), key=lambda s: s.row.sort_key()))
        compared = [s for s in ordered if s.parity is not False]
        metrics, trades = {}, {}
        for b in sizes:
            at = [s for s in compared if s.row.batch_size == b]
            names = ("latency_p50_s",) + ("throughput_samples_s",) * (b > 1) + ("artifact_bytes",)
            metrics[b] = {name: summary for name in names if (summary := rank(name, at))}
            pairs = [(base, s) for s in at if s.accuracy_change is not None
                     and (base := summaries[replace(s.row, quantize="none")]).parity is not False]
            trades[b] = tuple(Trade(s.row, base.row, s.accuracy_change, rank("latency_p50_s", (base, s)),
                                    rank("artifact_bytes", (base, s))) for base, s in pairs)
        out.append(DeploySummary(workload, ordered, metrics, trades, level, alpha))
    return out


DEPLOY_SESSION_COMPARED = ("cold_start_s", "latency_p50_s", "latency_p99_s", "throughput_samples_s", "peak_rss_bytes",
                           "test_accuracy")


def deploy_group(row: DeployRow) -> Group:
    """A deploy row as a :class:`Group` (mode: the path's name and batch size; precision: fp32 or int8), so that
    two deploy sessions compare and render as training sessions do."""
    return Group(row.workload, row.framework, f"{row.path.split('/', 1)[1]} @{row.batch_size}", row.precision)


# ---- isobench deploy --scenario: per (workload, scenario, path, quantization, batching) the load worker is the unit

SCENARIO_METRICS = {  # each scenario's figures (the serving table's columns), in order
    "server": ("max_qps", "samples_per_s", "latency_p50_s", "latency_p90_s", "latency_p99_s", "accuracy",
               "peak_rss_bytes"),
    "offline": ("samples_per_s", "accuracy", "peak_rss_bytes"),
    "single-stream": ("latency_p50_s", "latency_p90_s", "latency_p99_s", "accuracy", "peak_rss_bytes"),
    "multi-stream": ("latency_p50_s", "latency_p90_s", "latency_p99_s", "accuracy", "peak_rss_bytes"),
}
# the figure each scenario's rows are compared on: the server's largest QPS under the p99 bound, offline samples/s,
# and for one query at a time the tail a user waits for, the p99 (MLPerf's multi-stream metric; its single-stream
# metric is the p90, which the p99 bounds from above)
HEADLINE = {"server": "max_qps", "offline": "samples_per_s", "single-stream": "latency_p99_s",
            "multi-stream": "latency_p99_s"}
LOAD_SESSION_COMPARED = ("max_qps", "samples_per_s", "latency_p50_s", "latency_p99_s", "peak_rss_bytes", "accuracy")


@dataclass(frozen=True)
class LoadRow(PathRow):
    """One row of a serving table: a path at a precision serving a scenario with dynamic batching ``off`` or
    ``dynamic``, every load worker of it (:attr:`isobench.results.LoadSpec.row`)."""
    workload: str
    scenario: str
    path: str
    quantize: str
    batching: str

    @property
    def label(self) -> str:
        """Its name within its scenario's table and claims, e.g. ``torch/onnx int8 dynamic batching``."""
        return f"{self.path}{' int8' if self.quantize == 'int8' else ''}" + \
            (" dynamic batching" if self.batching == "dynamic" else "")

    def sort_key(self) -> tuple:
        return self.workload, self.scenario, framework_rank(self.framework), self.path, self.quantize != "none", \
            self.batching != "off"


@dataclass(frozen=True)
class LoadRowSummary:
    """A row's load workers (warm-ups excluded) and, over those whose figures count (ok and VALID), its statistics;
    the export of its artifact, whose reason a row without load workers shows."""
    row: LoadRow
    export: DeployRecord | None      # the export's record (None: not exported in this session)
    records: tuple[LoadRecord, ...]  # in plan order
    stats: dict[str, Stats]          # SCENARIO_METRICS of the row's scenario with values

    @property
    def ok(self) -> int:
        """Processes whose worker ended ok (LoadGen VALID or not)."""
        return sum(r.status == OK for r in self.records)

    @property
    def valid(self) -> int:
        """Ok processes whose run LoadGen judged VALID: the row's figures are theirs."""
        return sum(map(counted, self.records))

    @property
    def invalid(self) -> tuple[LoadRecord, ...]:
        """Ok processes whose run LoadGen judged INVALID (the server: no target rate met the bound)."""
        return tuple(r for r in self.records if r.status == OK and r.metrics and not counted(r))

    @property
    def wrong(self) -> tuple[LoadRecord, ...]:
        """Processes that gave an answer beyond the logit tolerance (their worker failed with the count)."""
        return tuple(r for r in self.records if r.metrics and r.metrics.wrong_answers)

    @property
    def failed(self) -> tuple[LoadRecord, ...]:
        """Processes whose worker did not end ok, those with wrong answers first."""
        return self.wrong + tuple(r for r in self.records if r.status != OK and r not in self.wrong)

    @property
    def headline_ci(self) -> Interval | None:
        """The median of the scenario's :data:`HEADLINE` figure with its 95% percentile bootstrap interval over the
        row's VALID processes (``None``: no value); a single process gives no interval (``resampled`` false)."""
        st = self.stats.get(HEADLINE[self.row.scenario])
        return bootstrap_median_ci(st.values) if st else None

    @property
    def answers(self) -> int:
        """Answers given under load and checked, over every process that got so far."""
        return sum(r.metrics.answers for r in self.records if r.metrics)

    @property
    def wrong_answers(self) -> int:
        return sum(r.metrics.wrong_answers for r in self.records if r.metrics)

    @property
    def max_abs_logit_diff(self) -> float | None:
        """The largest logit difference of any answer to the float64 reference."""
        return max((r.metrics.max_abs_logit_diff for r in self.records
                    if r.metrics and r.metrics.max_abs_logit_diff is not None), default=None)

    @property
    def tolerance(self) -> float | None:
        """The logit tolerance of its answers; ``None``: not checked (int8)."""
        return next((r.metrics.logit_tolerance for r in self.records
                     if r.metrics and r.metrics.logit_tolerance is not None), None)

    @property
    def parity(self) -> bool | None:
        """Every checked answer within the tolerance; ``None``: none checked."""
        return None if self.tolerance is None else not self.wrong

    accuracy_change = None  # int8 rows are not set against their fp32 under load


@dataclass(frozen=True)
class LoadSummary:
    """One scenario of one workload: its rows, every compared row (correct answers, VALID figures) against the best on
    the scenario's :data:`HEADLINE` figure, and each path measured both ways with dynamic batching on against off."""
    workload: str
    scenario: str
    rows: tuple[LoadRowSummary, ...]
    headline: MetricSummary | None   # None: no row has a VALID figure with correct answers
    batching: tuple[MetricSummary, ...]  # per path and precision: its "off" and "dynamic" rows on the headline
    bound_s: float | None            # the server's p99 latency bound (seconds); None: not recorded
    level: float
    alpha: float


def summarize_serving(records: Iterable[LoadRecord], exports: Iterable[DeployRecord] = (),
                      scenarios: Iterable[str] = (), bound_s: float | None = None, n_boot: int = 5000,
                      level: float = 0.95, alpha: float = 0.05, seed: int = 0) -> list[LoadSummary]:
    """Per workload and scenario (``scenarios``' order, then any other the records have): every row's statistics
    (load workers as the unit, failed and INVALID ones counted, never used), and the compared rows by
    :func:`summarize_metric` (favourable: every ratio the best row's advantage). Rows with a wrong answer are in no
    comparison: a quick wrong answer is not a better path. A path whose export failed or cannot run here has a row
    in every scenario (batching off), with the export's reason."""
    records = [r for r in records if not r.warmup]
    failed = [e for e in exports if e.spec.kind == EXPORT and not e.ok]
    exports = {(e.spec.workload, e.spec.path, e.spec.quantize): e for e in exports if e.spec.kind == EXPORT}
    scenarios = list(dict.fromkeys([*scenarios, *(r.spec.scenario for r in records)]))
    rows: dict[LoadRow, list[LoadRecord]] = {LoadRow(e.spec.workload, s, e.spec.path, e.spec.quantize, "off"): []
                                             for e in failed for s in scenarios}
    for r in records:
        rows.setdefault(LoadRow(*r.spec.row), []).append(r)
    out = []
    for workload in dict.fromkeys(row.workload for row in rows):
        for scenario in scenarios:
            names = SCENARIO_METRICS[scenario]
            summaries = tuple(sorted((LoadRowSummary(
                row, exports.get((row.workload, row.path, row.quantize)), tuple(rs),
                {m: describe(vs) for m in names if (vs := [v for r in rs if counted(r)
                                                           if (v := getattr(r.metrics, m)) is not None])})
                for row, rs in rows.items() if row.workload == workload and row.scenario == scenario),
                key=lambda s: s.row.sort_key()))
            if not summaries:
                continue
            name = HEADLINE[scenario]
            values = {s.row: list(s.stats[name].values) for s in summaries if s.parity is not False and name in s.stats}
            pairs = [(off, dyn) for off in values if off.batching == "off"
                     and (dyn := replace(off, batching="dynamic")) in values]
            rank = lambda vs: summarize_metric(METRIC[name], vs, n_boot, level, alpha, seed, favourable=True)  # noqa
            out.append(LoadSummary(workload, scenario, summaries, rank(values) if values else None,
                                   tuple(rank({off: values[off], dyn: values[dyn]}) for off, dyn in pairs), bound_s,
                                   level, alpha))
    return out


def load_group(row: LoadRow) -> Group:
    """A serving row as a :class:`Group` (mode: the path's name, scenario and batching; precision: fp32 or int8), so
    that two serving sessions compare and render as training sessions do."""
    return Group(row.workload, row.framework, ", ".join([row.path.split("/", 1)[1], row.scenario]
                                                        + ["dynamic batching"] * (row.batching == "dynamic")),
                 row.precision)
