"""The report model: what every report shows, as typed values, built once from a :class:`~isobench.results.ResultSet`
and its :class:`~isobench.stats.Summary` per workload. The terminal, HTML and Markdown renderers read it and never
each other's text.

- :class:`Table`: per metric and group the median with its spread and the comparison with the best group, in the
  row's unit (:mod:`.fmt`), the column heads, and which notes apply.
- :class:`Claim`: the verdict, one typed claim per statement (a group better than another, no difference, too
  few repeats, an untested gap, a failed group, noise, ...); :mod:`.words` writes the sentence.
- :class:`Parity`: the parity check of a workload as a table: a row per check, a column per cell.
- The fairness manifest, the settings each worker read back, cluster nodes and failed runs as rows of text.

A deployment session's part of the model (its table, the same :class:`Claim` s, its manifest) is :mod:`.deploy`, a
serving session's :mod:`.serving`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..results import (LOW_MATMUL_EFFICIENCY, OK, FrameworkSettings, LoadRecord, ParityCheck, ParityResult,
                       PeakRecord, PrivacyRecord, ResultSet, RunRecord, machine_peak)
from ..stats import (CLAIMED, METRIC, VERDICT, Change, Comparison, Contended, DeployRowSummary, Group, LoadRowSummary,
                     MetricSummary, Noise, Outlier, Stats, Summary, Trade, compare_workloads, outcome, summarize)
from . import fmt

# ---- the results table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One group's cell in a row: the median ± spread and the comparison with the best group, as text."""
    stats: Stats
    comparison: Comparison | None    # None for the best group
    value: str                       # e.g. "2.31 s ±1.5%", "87.7% ±0.0"
    versus: str                      # e.g. "1.87x [1.82-1.93]", "+350 ms [+343, +357]"; "best"; "" alone
    best: bool                       # the best group of a row that has something to compare


@dataclass(frozen=True)
class Row:
    metric: MetricSummary
    cells: dict[Group, Cell]         # groups with a value, in column order


CELLS, TIME_TO_TARGET, TEST_LOSS, DIFFERENCES, SINGLE = "cells", "time-to-target", "test-loss", "differences", "single"
TIME_TO_TRAINED = "time-to-trained"
FLOPS, PEAK, ENERGY = "flops", "peak", "energy"  # efficiency notes, present only when the session recorded them


@dataclass(frozen=True)
class Note:
    """A note under the table: ``kind`` says which; ``metrics`` names the rows it is about (differences);
    ``efficiency`` the counted, modelled and peak figures the efficiency notes quote."""
    kind: str
    metrics: tuple[str, ...] = ()
    efficiency: "Efficiency | None" = None


@dataclass(frozen=True)
class PeakUsed:
    """One framework's peak as the session recorded it: GFLOP/s per precision and its matmul efficiency (that rate /
    the machine peak), copy GB/s, how it was measured, or the error."""
    framework: str
    gflops: dict[str, float]         # precision -> measured peak matmul GFLOP/s
    copy_gbps: float | None
    measured_at: str | None
    reused: bool                     # a stored measurement, not taken for this session
    error: str | None = None
    efficiency: dict[str, float] = dataclasses.field(default_factory=dict)  # precision -> gflops / machine peak
    measured_again: bool = False     # below 70% of the machine peak once: measured in a second worker, better kept
    contended: float | None = None   # when measured under contention: the largest share of its CPUs others took

    @property
    def low(self) -> tuple[str, ...]:
        """The precisions whose rate is below :data:`~isobench.results.LOW_MATMUL_EFFICIENCY` of the machine peak."""
        return tuple(p for p, e in self.efficiency.items() if e < LOW_MATMUL_EFFICIENCY)


@dataclass(frozen=True)
class MachinePeak:
    """The machine peak of one precision: the best matmul rate any framework reached, and whose."""
    precision: str
    gflops: float
    framework: str
    contended: bool = False          # its record was measured under contention: too low, % of peak too high


@dataclass(frozen=True)
class Peaks:
    """A set of peak records (a session's, or ``isobench peak``'s) as the reports show them."""
    frameworks: tuple[PeakUsed, ...]
    machine: tuple[MachinePeak, ...]  # per precision measured, in PRECISION_ORDER
    copy: tuple[float, str] | None   # the best copy GB/s and whose
    nominal: dict[str, Any] | None   # measure.nominal's record (gflops, derivation, caveats, reason); None: none
    device: str = "cpu"


PRECISION_ORDER = ("fp32", "tf32", "bf16", "fp16")


def peak_figures(records: Iterable[PeakRecord]) -> Peaks:
    """Peak records (:func:`isobench.runner.peak.measure_peak`'s, or their errors) as :class:`Peaks`: per framework
    its rates and matmul efficiency against the machine peak of the records' device. Records stored before the
    machine peak (one framework's own peak as its denominator) get the same treatment: their machine peak is the
    best of their frameworks'."""
    records = list(records)
    device = next((r.device for r in records if r.device), "cpu")
    contended = {r.framework for r in records if r.contended}
    machine = tuple(MachinePeak(p, *best, best[1] in contended) for p in PRECISION_ORDER
                    if (best := machine_peak(records, p, device)))
    top = {m.precision: m.gflops for m in machine}
    used = []
    for r in records:
        shares = [w["fraction"] for w in r.contention if w and w.get("contended")]
        used.append(PeakUsed(r.framework, r.gflops, r.copy_gbps, r.measured_at, r.reused, r.error,
                             {p: g / top[p] for p, g in r.gflops.items() if p in top}, bool(r.measured_again),
                             max(shares, default=0.0) if r.contended else None))
    copies = [(r.copy_gbps, r.framework) for r in records if r.copy_gbps and r.device == device]
    nominal = next((r.nominal for r in records if r.nominal), None)
    return Peaks(tuple(used), machine, max(copies) if copies else None, nominal, device)


@dataclass(frozen=True)
class Efficiency:
    """One workload's counted and modelled figures (from its runs' metrics) and the session's peaks."""
    flops_per_step: int | None       # counted, full-batch step: forward + backward + update
    matmul_per_step: int | None      # counted, its matmul part
    bytes_per_step: int | None       # modelled lower bound
    peaks: Peaks
    energy_sources: tuple[str, ...]  # counters that were read
    energy_reasons: tuple[str, ...]  # why one could not be read

    @property
    def intensity(self) -> float | None:
        """Modelled arithmetic intensity, FLOPs per byte."""
        return self.flops_per_step / self.bytes_per_step if self.flops_per_step and self.bytes_per_step else None


def efficiency(results: ResultSet, workload: str) -> Efficiency:
    """The efficiency figures of ``workload`` in ``results`` (``None`` fields where no run recorded them)."""
    ms = [r.metrics for r in results.runs if r.spec.workload == workload and r.metrics]
    first = next((m for m in ms if m.counted_flops_per_step is not None), None)
    return Efficiency(first and first.counted_flops_per_step, first and first.counted_matmul_flops_per_step,
                      first and first.modelled_bytes_per_step, peak_figures(results.peaks.values()),
                      tuple(dict.fromkeys(m.energy_source for m in ms if m.energy_source)),
                      tuple(dict.fromkeys(m.energy_reason for m in ms if m.energy_reason)))


@dataclass(frozen=True)
class Table:
    summary: Summary
    heads: dict[Group, str]          # per column: "n=5, 1 failed"
    rows: tuple[Row, ...]
    notes: tuple[Note, ...]


def _row(ms: MetricSummary) -> Row:
    unit = fmt.unit(ms.metric.kind, (abs(s.median) for s in ms.stats.values()))
    value = {g: fmt.figure(s, ms.metric.kind, unit) for g, s in ms.stats.items()}
    if ms.metric.kind == "accuracy":
        magnitude, suffix = fmt.pp, " pp"
    else:
        suffix, size = unit
        magnitude = lambda x: fmt.sig(x / size)  # noqa: E731
    compares = bool(ms.comparisons)
    cells = {ms.best: Cell(ms.stats[ms.best], None, value[ms.best], "best" if compares else "", compares)}
    cells.update({g: Cell(ms.stats[g], c, value[g], fmt.versus(c.interval, c.kind, magnitude, suffix), False)
                  for g, c in ms.comparisons.items()})
    return Row(ms, {g: cells[g] for g in ms.stats})


def head(summary: Summary, g: Group) -> str:
    shared = next((c.count for c in summary.contended if c.group == g), 0)
    return f"n={summary.ok[g]}" + (f", {summary.failed[g]} failed" if summary.failed[g] else "") + \
        (f", {shared} under load" if shared else "")


def table(summary: Summary, eff: Efficiency | None = None) -> Table:
    """The results table of one workload: a row per metric with values, a column per group; ``eff`` (see
    :func:`efficiency`) adds the notes on counted FLOPs, the peak and energy where the session recorded them."""
    notes = [Note(CELLS)] + [Note(TIME_TO_TRAINED)] * ("time_to_trained_s" in summary.metrics) + \
        [Note(TIME_TO_TARGET), Note(TEST_LOSS)]
    if eff and "achieved_flops_s" in summary.metrics:
        notes += [Note(FLOPS, efficiency=eff), Note(PEAK, efficiency=eff)]
    if eff and (eff.energy_sources or eff.energy_reasons):
        notes.append(Note(ENERGY, efficiency=eff))
    diffs = tuple(name for name, ms in summary.metrics.items() if ms.kind == "difference"
                  and ms.metric.kind != "accuracy")
    if diffs:
        notes.append(Note(DIFFERENCES, diffs))
    if any(not c.interval.resampled for ms in summary.metrics.values() for c in ms.comparisons.values()):
        notes.append(Note(SINGLE))
    rows = [_row(ms) for ms in summary.metrics.values()]
    if "achieved_flops_s" in summary.metrics and "peak_fraction" not in summary.metrics:  # no peak: say so
        at = [r.metric.metric.name for r in rows].index("achieved_flops_s") + 1
        rows.insert(at, Row(MetricSummary(METRIC["peak_fraction"], {}, None, "ratio", {}), {}))
    return Table(summary, {g: head(summary, g) for g in summary.groups}, tuple(rows), tuple(notes))


# ---- the verdict ---------------------------------------------------------------------------------------------

BETTER, NO_DIFFERENCE, TOO_FEW, UNTESTED, SAME = "better", "no-difference", "too-few", "untested", "same"
FAILED, ONLY_ONE, NOTHING_RAN, INSUFFICIENT, NOISY, ADVICE = ("failed", "only-one", "nothing-ran", "insufficient",
                                                              "noisy", "advice")
CONTENDED, OUTLIER = "contended", "outlier"
# a deployment's verdict: its parity (fp32 rows against their logit tolerance), the best int8 trade or none
WITHIN_TOLERANCE, BEYOND_TOLERANCE, UNCHECKED = "within-tolerance", "beyond-tolerance", "unchecked"
TRADE, NO_TRADE = "trade", "no-trade"
# a serving session's: every answer under load checked, runs LoadGen judged INVALID, p99s early stopping did not back
ANSWERS, INVALID, EARLY_STOPPING = "answers", "invalid", "early-stopping"
CAVEATS = (FAILED, CONTENDED, ONLY_ONE, NOTHING_RAN, INSUFFICIENT, OUTLIER, NOISY, ADVICE, BEYOND_TOLERANCE,
           UNCHECKED, INVALID, EARLY_STOPPING)  # about the evidence
FASTEST, SMALLEST = "fastest", "smallest"  # roles of a deployment's headline comparisons (the best against the next)
BATCHING = "batching"  # role of a serving comparison of a path's rows with dynamic batching on and off
_KIND = {CLAIMED: BETTER}  # stats.outcome -> claim kind (the others have the same names)


@dataclass(frozen=True)
class Claim:
    """One statement of the verdict. ``metric`` and ``comparison`` (``other`` against ``metric.best``) for
    claims about a comparison; ``group`` for a group's caveat (failed, only one, noisy); ``count`` is the number
    of failed runs (failed) or of ok processes in the smallest group (insufficient); ``contended`` and ``outlier``
    carry a group's processes measured under contention and one process far from its group's median.

    A deployment's claims have deployment rows (:class:`~isobench.stats.DeployRow`) for groups: ``role`` marks a
    headline comparison (:data:`FASTEST`, :data:`SMALLEST`: the best row against the next best) at ``batch_size``;
    ``rows`` are the rows a parity or failure claim is about; ``trade`` is the best int8 trade (:data:`TRADE`;
    :data:`NO_TRADE` counts the int8 rows within the accuracy bound instead).

    A serving session's claims have serving rows (:class:`~isobench.stats.LoadRow`) for groups: ``role``
    :data:`BATCHING` marks a path's dynamic-batching row against its row without; ``records`` are the load workers a
    caveat is about (:data:`INVALID`, :data:`EARLY_STOPPING`); :data:`ANSWERS` counts every answer checked and names
    the ``rows`` with a wrong one."""
    kind: str
    metric: MetricSummary | None = None
    other: Group | None = None
    comparison: Comparison | None = None
    group: Group | None = None
    count: int = 0
    noise: tuple[Noise, ...] = ()
    contended: Contended | None = None
    outliers: tuple[Outlier, ...] = ()  # one process's, on every headline time it is an outlier on
    role: str | None = None
    batch_size: int | None = None
    rows: tuple[DeployRowSummary | LoadRowSummary, ...] = ()
    trade: Trade | None = None
    records: tuple[LoadRecord, ...] = ()

    @property
    def caveat(self) -> bool:
        """About the evidence (failures, too few repeats, noise) rather than a difference between groups."""
        return self.kind in CAVEATS


def claim_kind(ms: MetricSummary, group: Group) -> str:
    """The kind of claim the verdict rule allows about ``group`` against the best on ``ms`` (:func:`outcome`)."""
    k = outcome(ms, group)
    return _KIND.get(k, k)


def metric_claims(ms: MetricSummary) -> list[Claim]:
    """The best group against every other on one metric (test accuracy the same everywhere: one claim)."""
    if ms.metric.kind == "accuracy" and not any(c.significant for c in ms.comparisons.values()) and \
            len({fmt.pp(s.median) for s in ms.stats.values()}) == 1:  # the same figure everywhere
        return [Claim(SAME, ms)]
    return [Claim(claim_kind(ms, g), ms, g, c) for g, c in ms.comparisons.items()]


def claims(summary: Summary) -> list[Claim]:
    """The verdict of one workload: groups whose runs all failed and groups measured under contention (first: they
    qualify everything after them); then per metric of :data:`~isobench.stats.VERDICT` the best group against every
    other; then the caveats (too few repeats, outlier processes, noisy groups and advice). A single group gets its
    caveats too."""
    ran = [g for g in summary.groups if summary.ok[g]]
    out = [Claim(FAILED, group=g, count=summary.failed[g]) for g in summary.groups if not summary.ok[g]]
    out += [Claim(CONTENDED, group=c.group, count=c.count, contended=c) for c in summary.contended]
    if len(ran) < 2:
        out.append(Claim(ONLY_ONE, group=ran[0]) if ran else Claim(NOTHING_RAN))
    else:
        for name in VERDICT:
            if (ms := summary.metrics.get(name)) is not None:
                out += metric_claims(ms)
    if summary.insufficient:
        n = min(min(c.n_a, c.n_b) for ms in summary.metrics.values() for c in ms.comparisons.values()
                if c.insufficient)
        out.append(Claim(INSUFFICIENT, count=n))
    processes = dict.fromkeys((o.group, o.repeat) for o in summary.outliers)
    out += [Claim(OUTLIER, group=g, outliers=tuple(o for o in summary.outliers if (o.group, o.repeat) == (g, r)))
            for g, r in processes]
    noisy = list(dict.fromkeys(x.group for x in summary.noisy))
    out += [Claim(NOISY, group=g, noise=tuple(x for x in summary.noisy if x.group == g)) for g in noisy]
    return out + ([Claim(ADVICE)] if noisy or summary.contended or summary.outliers else [])


# ---- parity --------------------------------------------------------------------------------------------------

PASSED, PARITY_FAILED, NOT_CHECKED, NOT_CHECKED_HERE = "passed", "failed", "not-checked", "not-checked-here"
BETWEEN = "between frameworks"  # the column of the checks between cells


@dataclass(frozen=True)
class ParityValue:
    """One check in one column of the parity table: the largest absolute difference and its verdict; ``tolerance``
    only where it differs from the row's (a library optimizer's or a lower precision's looser one)."""
    diff: str                        # "2.32e-07", "0"
    passed: bool
    tolerance: str | None = None


@dataclass(frozen=True)
class ParityColumn:
    """A cell of the parity check (or :data:`BETWEEN`, the checks between cells) as a column: how its worker ended."""
    label: str                       # "PyTorch (eager)", "JAX (jit, library)", "between frameworks"
    status: str                      # the worker's status; ok for the column between cells
    passed: bool
    error: str | None = None         # one line: why the worker did not finish (shown down its column)


@dataclass(frozen=True)
class ParityRow:
    """One check: the tolerance most of its values were held to, and its value in each column (``None``: not a
    check of that column, or its worker did not finish)."""
    check: str                       # "initial logits", "epoch mean loss between frameworks"
    tolerance: str
    values: tuple[ParityValue | None, ...]


@dataclass(frozen=True)
class Parity:
    """The parity check of one workload as a table: ``state`` is :data:`PASSED`, :data:`PARITY_FAILED`,
    :data:`NOT_CHECKED` (not in this session) or :data:`NOT_CHECKED_HERE` (the session checked other workloads);
    a row per check (against the float64 reference, then between cells), a column per cell and one for the
    checks between them."""
    workload: str
    state: str
    columns: tuple[ParityColumn, ...] = ()
    rows: tuple[ParityRow, ...] = ()
    reference: str = ""              # the reference's test metric, "test accuracy 87.74%"; "" when none compared
    notes: tuple[str, ...] = ()      # how the check was made (isobench parity; a session keeps none)


def _parity_value(c: ParityCheck, tolerance: str) -> ParityValue:
    tol = fmt.sci(c.tolerance, 2)
    return ParityValue(fmt.sci(c.max_abs_diff), c.passed, None if tol == tolerance else tol)


def parity_table(result: ParityResult, notes: Iterable[str] = ()) -> Parity:
    """``result`` as the parity table: checks as rows in the order the cells made them (then those between cells),
    each row's tolerance the one most of its checks had."""
    columns = [ParityColumn(Group(result.workload, f.framework, f.mode, f.precision, optimizer=f.optimizer).label,
                            f.status, f.passed, f.error) for f in result.frameworks]
    checks = [{c.name: c for c in f.checks} for f in result.frameworks]
    if result.cross:
        columns.append(ParityColumn(BETWEEN, OK, all(c.passed for c in result.cross)))
        checks.append({c.name: c for c in result.cross})
    rows = []
    for name in dict.fromkeys(n for cs in checks for n in cs):
        found = [fmt.sci(cs[name].tolerance, 2) for cs in checks if name in cs]
        tolerance = max(found, key=found.count)  # the most common; the first of equally common ones
        rows.append(ParityRow(name, tolerance, tuple(_parity_value(cs[name], tolerance) if name in cs else None
                                                     for cs in checks)))
    metric, x = result.metric, result.reference_accuracy
    reference = "" if metric is None else f"{metric} {x:.4f}" if metric == "test loss" else f"{metric} {x:.2%}"
    return Parity(result.workload, PASSED if result.passed else PARITY_FAILED, tuple(columns), tuple(rows),
                  reference, tuple(notes))


def parity(results: ResultSet, workload: str) -> Parity:
    """The parity check of ``workload`` carried by ``results``, if any."""
    if not results.parity:  # skipped (--no-parity), or a session before the check
        return Parity(workload, NOT_CHECKED)
    if workload not in results.parity:
        return Parity(workload, NOT_CHECKED_HERE)
    return parity_table(results.parity[workload])


def _record(x: Any) -> Any:
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) and not isinstance(x, type) else x


def _item_label(item: dict, i: int) -> tuple[str, tuple[str, ...]]:
    """How a record in a list is named, and by which of its keys: its name, else its framework and mode,
    else its position."""
    for keys in (("name",), ("framework", "mode")):
        used = tuple(k for k in keys if item.get(k) is not None)
        if used:
            return " ".join(str(item[k]) for k in used), used
    return str(i), ()


def _leaf(k: str, v: Any) -> str:
    if k.endswith("_bytes") and isinstance(v, int) and not isinstance(v, bool):
        return f"{fmt.size(v)} ({v} B)"
    return fmt.fmt_value(v)


def _flat_record(rest: dict) -> str:
    """A flat record on one line."""
    return ", ".join(f"{k} {_leaf(k, v)}" for k, v in rest.items())


def flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as (dotted key, text) rows in their own order. A list of records becomes one row per
    record, ``key[name]``, or nested rows when the record nests further; sizes in bytes also in MiB/GiB."""
    d = _record(d)
    if not isinstance(d, dict):
        return [(prefix or "value", fmt.fmt_value(d))]
    rows = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            rows += flatten(v, key)
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            for i, item in enumerate(v):
                label, used = _item_label(item, i)
                rest = {ik: iv for ik, iv in item.items() if ik not in used}
                nested = any(isinstance(x, (dict, list, tuple)) and x for x in rest.values())
                rows += flatten(rest, f"{key}[{label}]") if nested else [(f"{key}[{label}]", _flat_record(rest))]
        else:
            rows.append((key, _leaf(str(k), v)))
    return rows


# ---- the fairness manifest, settings, nodes and failures -----------------------------------------------------

MANIFEST = ("runs", "seeds", "other load", "harness", "node", "version", "mode", "device / precision", "TF32", "threads set",
            "threads read back", "CPU affinity", "matmul precision", "oneDNN", "XLA / JIT flags", "determinism")  # the manifest's rows


def group_runs(summary: Summary, runs: Iterable[RunRecord]) -> dict[Group, list[RunRecord]]:
    """Every run of each group of ``summary``, failed ones included, by repeat."""
    out: dict[Group, list[RunRecord]] = {g: [] for g in summary.groups}
    for r in runs:
        if (g := Group.of(r.spec)) in out:
            out[g].append(r)
    return {g: sorted(rs, key=lambda r: r.spec.repeat) for g, rs in out.items()}


def _threads_read(fw: FrameworkSettings) -> str:
    """The intra- and inter-op thread counts the framework read back (and why they differ from the request, if it
    said), or why it has none (JAX)."""
    if fw.intra_op_threads is None and fw.inter_op_threads is None:
        return fmt.fmt_value(fw.threads_note)
    return (f"intra-op {fmt.fmt_value(fw.intra_op_threads)}, inter-op {fmt.fmt_value(fw.inter_op_threads)}"
            + (f" ({fw.threads_note})" if fw.threads_note else ""))


def _xla(flags: dict[str, Any] | None) -> str:
    """The XLA/JIT switches that are set, ``none set`` where none is, ``n/a`` for a framework without XLA."""
    if flags is None:
        return "n/a"
    return ", ".join(f"{k}={fmt.fmt_value(v)}" for k, v in flags.items() if v is not None) or "none set"


def _settings(r: RunRecord) -> dict[str, str]:
    """One run's manifest cells, from the settings its worker read back (:class:`FrameworkSettings`)."""
    fw, th = r.environment.framework, r.environment.get("threads") or {}
    node = r.environment.get("node") or {}

    def flag(v: Any) -> str:  # a setting the framework does not have is n/a
        return "n/a" if v is None else fmt.fmt_value(v)

    device = f" ({fw.device_name})" if fw.device_name else ""
    return {"node": str(node.get("hostname") or node.get("ip") or "this machine"),
            "version": fmt.fmt_value(fw.version) + "".join(f", {k} {v}" for k, v in fw.companions.items() if v),
            "mode": r.spec.mode, "device / precision": f"{r.spec.device}{device} / {r.spec.precision}",
            "TF32": flag(fw.tf32), "threads set": fmt.fmt_value(th.get("threads", r.spec.threads)),
            "threads read back": _threads_read(fw), "CPU affinity": fmt.cpu_ranges(th.get("affinity")),
            "matmul precision": flag(fw.matmul_precision), "oneDNN": flag(fw.onednn), "XLA / JIT flags": _xla(fw.xla),
            "determinism": flag(fw.determinism)}


def manifest(summary: Summary, runs: Iterable[RunRecord]) -> list[tuple[str, dict[Group, str]]]:
    """The fairness manifest of one workload: per :data:`MANIFEST` setting, its value in each group. A setting
    that differed between runs of a group lists each value with `` | ``; a group that recorded nothing says so."""
    cells: dict[Group, dict[str, str]] = {}
    for g, rs in group_runs(summary, runs).items():
        recorded = [_settings(r) for r in rs if r.environment.framework is not None]
        cells[g] = {"runs": f"{summary.ok[g]} ok" + (f", {summary.failed[g]} failed" if summary.failed[g] else "")}
        seeds = sorted({r.environment["seed"] for r in rs if r.environment.get("seed") is not None})
        cells[g]["seeds"] = fmt.cpu_ranges(seeds) if seeds else "not recorded"  # of weights, orders and dropout
        cells[g]["other load"] = _other_load([r for r in rs if r.ok and r.metrics and not r.warmup])
        cells[g]["harness"] = _harness(summary.harness.get(g, {}))
        for key in MANIFEST[4:]:
            values = list(dict.fromkeys(x[key] for x in recorded))
            cells[g][key] = " | ".join(values) if values else "not recorded"
    return [(key, {g: c[key] for g, c in cells.items()}) for key in MANIFEST]


def _other_load(runs: list[RunRecord]) -> str:
    """How much of the workers' CPUs other processes (and the hypervisor) took while they measured."""
    shares = [r.metrics.contention for r in runs if r.metrics.contention is not None]
    if not shares:
        return "not recorded"
    shared = sum(r.metrics.contended for r in runs)
    return (f"{shared} of {len(runs)} runs under load" if shared else "quiet") + \
        f" (others took {fmt.percent_range(shares)}% of the CPUs)"


def _harness(h: dict[str, Stats]) -> str:
    """The harness's own cost, median over a group's processes: before the framework import, and between phases."""
    if "harness_s" not in h:
        return "not recorded"
    return (f"{fmt.sig(h['harness_s'].median)} s" + (f", {fmt.size(h['rss_before_import_bytes'].median)}"
                                                    if "rss_before_import_bytes" in h else "") + " before the import"
            + (f"; {fmt.sig(h['harness_between_s'].median)} s between phases" if "harness_between_s" in h else ""))


def settings(summary: Summary, runs: Iterable[RunRecord]) -> tuple[list[Group], list[tuple[str, dict[Group, str]]]]:
    """Every framework setting a worker read back: (groups, [(key, {group: values})]) over the union of keys."""
    by_group = group_runs(summary, runs)
    groups = [g for g, rs in by_group.items() if any(r.environment for r in rs)]
    keys: dict[str, None] = {}
    values: dict[Group, dict[str, list[str]]] = {}
    for g in groups:
        for r in by_group[g]:
            # settings only: the pid and sizes measured before the import are measurements, not settings
            env = {k: v for k, v in r.environment.items()
                   if k not in ("pid", "host", "node") and not k.endswith("_bytes")}
            for k, v in flatten(env):
                keys.setdefault(k)
                seen = values.setdefault(g, {}).setdefault(k, [])
                if v not in seen:
                    seen.append(v)
    return groups, [(k, {g: " | ".join(values[g].get(k, ["-"])) for g in groups}) for k in keys]


FAILED_WIDTH = 100  # characters of a failure reason kept on its line


def _reason(r: RunRecord) -> str:
    """The run's error, else the last line of its stderr, else its exit code or signal; one line."""
    tail = [ln.strip() for ln in (r.stderr_tail or "").splitlines() if ln.strip()]
    text = ((r.error or "").strip().splitlines() or tail[-1:] or
            [f"killed by signal {r.signal}" if r.signal else
             f"exit code {r.exit_code}" if r.exit_code is not None else "no error message"])[0]
    return text if len(text) <= FAILED_WIDTH else text[:FAILED_WIDTH - 3] + "..."


@dataclass(frozen=True)
class Failure:
    """A failed run (any status but ok) as every report lists it."""
    group: Group
    run: RunRecord
    reason: str                      # one line, at most FAILED_WIDTH characters
    exit: str                        # "signal 9", "1", "unset"
    stderr: str                      # the stderr tail without trailing blank lines


def failures(runs: Iterable[RunRecord]) -> list[Failure]:
    """Every failed run, in column order then repeat."""
    failed = sorted(((Group.of(r.spec), r) for r in runs if not r.ok), key=lambda gr: (gr[0].sort_key(),
                                                                                     gr[1].spec.repeat))
    return [Failure(g, r, _reason(r), f"signal {r.signal}" if r.signal else fmt.fmt_value(r.exit_code),
                    (r.stderr_tail or "").rstrip()) for g, r in failed]


def machine(results: ResultSet) -> str:
    """The session's machine in one line: CPU, cores, affinity, memory, platform, Python."""
    env = results.environment
    parts = [env.get("cpu_model"), f"{env['logical_cores']} logical cores" if env.get("logical_cores") else None,
             f"affinity {fmt.cpu_ranges(env['affinity'])}" if env.get("affinity") else None,
             fmt.size(env["memory_total_bytes"]) + " RAM" if env.get("memory_total_bytes") else None,
             env.get("platform"), f"Python {env['python']}" if env.get("python") else None]
    return ", ".join(str(p) for p in parts if p) or "not recorded"


NODE_HEAD = ("node", "CPU", "cores", "RAM", "Python", "platform", "runs", "cells")


def nodes(results: ResultSet) -> list[dict[str, str]]:
    """One row (:data:`NODE_HEAD`) per cluster node that ran cells (``--executor ray``): its environment record
    and what ran there. Empty for a session run on one machine, whose record is the session's own (:func:`machine`)."""
    found: dict[str, dict] = {}
    for r in results.runs:
        node = r.environment.get("node")
        if not node:
            continue
        key = str(node.get("id") or node.get("hostname"))
        row = found.setdefault(key, {"host": r.environment.get("host") or {}, "runs": 0, "cells": {},
                                     "name": node.get("hostname") or node.get("ip") or key[:12]})
        row["runs"] += 1
        row["cells"][Group.of(r.spec).label] = None
    return [{"node": n["name"], "CPU": str(n["host"].get("cpu_model", "?")),
             "cores": str(n["host"].get("logical_cores", "?")),
             "RAM": fmt.size(n["host"]["memory_total_bytes"]) if n["host"].get("memory_total_bytes") else "?",
             "Python": str(n["host"].get("python", "?")), "platform": str(n["host"].get("platform", "?")),
             "runs": str(n["runs"]), "cells": ", ".join(n["cells"])} for n in found.values()]


# ---- private training: the guarantee and the cost of privacy ------------------------------------------------


@dataclass(frozen=True)
class CostCell:
    """One cell's private against non-private figures on one metric, as text."""
    change: Change                   # a: the counterpart's processes, b: the private workload's
    value: str                       # "1.20 vs 0.535 ms", "85.1 vs 87.7%": private vs non-private medians
    versus: str                      # "2.24x [2.09-2.50]" (private / non-private), "-2.6 pp [-3.1, -2.0]"


@dataclass(frozen=True)
class Privacy:
    """A DP-SGD workload's guarantee as the session recorded it and, when its non-private counterpart ran in the
    same session, the cost of privacy per cell (framework, mode): rows of :data:`~isobench.stats.PRIVACY_COST`."""
    workload: str
    guarantee: PrivacyRecord         # ResultSet.privacy[workload]
    counterpart: str | None          # None: not run in this session (no cost table)
    groups: tuple[Group, ...] = ()   # the private workload's cells that the counterpart also ran, in column order
    heads: dict[Group, str] = dataclasses.field(default_factory=dict)  # "n=5 vs n=5"
    rows: tuple[tuple[str, dict[Group, CostCell]], ...] = ()  # (metric name, cells)


def _cost_cell(ch: Change, size: float, suffix: str) -> CostCell:
    iv = ch.comparison.interval
    if ch.metric.kind == "accuracy":
        return CostCell(ch, f"{fmt.pp(ch.b.median)} vs {fmt.pp(ch.a.median)}%",
                        fmt.versus(iv, "difference", fmt.pp, " pp"))
    return CostCell(ch, f"{fmt.sig(ch.b.median / size)} vs {fmt.sig(ch.a.median / size)}{suffix}",
                    fmt.versus(iv, ch.comparison.kind, lambda x: fmt.sig(x / size), suffix))


def privacy(results: ResultSet, workload: str) -> Privacy | None:
    """The private section of ``workload``; ``None`` for a workload without a recorded guarantee."""
    record = results.privacy.get(workload)
    if record is None:
        return None
    base = record.counterpart
    changes = compare_workloads(results.runs, base, workload) if base else []
    if not changes:
        return Privacy(workload, record, None)
    by_metric: dict[str, dict[Group, Change]] = {}
    for gc in changes:
        for ch in gc.changes:
            by_metric.setdefault(ch.metric.name, {})[gc.group] = ch
    rows = []
    for name, cells in by_metric.items():
        suffix, size = ("", 1.0) if METRIC[name].kind == "accuracy" else fmt.unit(
            METRIC[name].kind, [abs(x.median) for ch in cells.values() for x in (ch.a, ch.b)])
        rows.append((name, {g: _cost_cell(ch, size, suffix) for g, ch in cells.items()}))
    return Privacy(workload, record, base, tuple(gc.group for gc in changes),
                   {gc.group: f"n={gc.n_b} vs n={gc.n_a}" for gc in changes}, tuple(rows))


# ---- the whole report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """Everything a report shows about one workload."""
    summary: Summary                 # its statistics
    table: Table                     # the results table
    claims: tuple[Claim, ...]        # the verdict
    parity: Parity
    manifest: list[tuple[str, dict[Group, str]]]  # the fairness manifest: (setting, value per group)
    efficiency: Efficiency | None = None  # counted FLOPs, modelled bytes, the session's peaks, energy sources
    privacy: Privacy | None = None   # a DP-SGD workload: its guarantee and the cost of privacy


@dataclass(frozen=True)
class Report:
    """One session's report: a section per workload with runs, parity of every workload, failures and machines."""
    results: ResultSet
    sections: tuple[Section, ...]
    workloads: tuple[str, ...]       # in order of first appearance
    parity: tuple[Parity, ...]       # one per workload
    failures: tuple[Failure, ...]
    nodes: tuple[dict[str, str], ...]
    machine: str

    @property
    def labels(self) -> list[str]:
        """Every group's label once, in column order of the workloads."""
        return list(dict.fromkeys(g.label for s in self.sections for g in s.summary.groups))


def build(results: ResultSet, sums: list[Summary] | None = None) -> Report:
    """The report of ``results``; ``sums`` (one :class:`~isobench.stats.Summary` per workload, default
    :func:`~isobench.stats.summarize` with its defaults) when the caller has them already."""
    sums = summarize(results.runs, peak=results.peak_flops_s) if sums is None else sums
    names = tuple(dict.fromkeys(r.spec.workload for r in results.runs))
    sections = tuple(Section(s, table(s, eff := efficiency(results, s.workload)), tuple(claims(s)),
                             parity(results, s.workload), manifest(s, results.runs), eff, privacy(results, s.workload))
                     for s in sums)
    return Report(results, sections, names, tuple(parity(results, w) for w in names), tuple(failures(results.runs)),
                  tuple(nodes(results)), machine(results))
