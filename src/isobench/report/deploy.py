"""The deployment half of the report model: what every report shows of an ``isobench deploy`` session, as typed
values built once from its :class:`~isobench.stats.DeploySummary` per workload. The terminal, HTML and Markdown
renderers read it (numbers through :mod:`.fmt`, words from :mod:`.words`) and never each other's text.

- :class:`DeployTable`: a row per (path, precision, batch size) with its :class:`~isobench.stats.Stats` per metric,
  a column per metric with the unit chosen once for it.
- The verdict as :class:`~.model.Claim` s, worded like training's: :func:`verdict` (parity first, then per batch
  size the fastest path, the smallest artifact and the best int8 trade: what the terminal prints) and
  :func:`comparisons` (failed rows and every row against the best, for the HTML and Markdown reports).
- :class:`Software`: the fairness manifest, every runtime and exporter each path used with its version.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..results import EXPORT, OK, UNAVAILABLE, DeployRecord, Record, ResultSet
from ..stats import (DEPLOY_COMPARED, DEPLOY_METRICS, DeployRowSummary, DeploySummary, LoadRowSummary, LoadSummary,
                     Metric, MetricSummary, Trade, summarize_deploy)
from . import fmt
from .model import (BETTER, BEYOND_TOLERANCE, FAILED, FASTEST, INSUFFICIENT, NO_TRADE, NOTHING_RAN, ONLY_ONE, SMALLEST,
                    TOO_FEW, TRADE, UNCHECKED, WITHIN_TOLERANCE, Claim, claim_kind, metric_claims)


@dataclass(frozen=True)
class Column:
    """A figure column of the deploy table: its metric and the unit of every cell in it."""
    metric: Metric
    unit: fmt.Unit                  # chosen once over the column's medians (fmt.unit)
    spread: bool = True             # artifact size: one file, the same in every process, so no spread is shown


@dataclass(frozen=True)
class DeployTable:
    """One workload's deployment table (or one scenario's serving table, :mod:`.serving`): its rows grouped by
    framework (registry order), a column per metric."""
    summary: DeploySummary | LoadSummary
    columns: tuple[Column, ...]
    frameworks: tuple[tuple[str, tuple[DeployRowSummary | LoadRowSummary, ...]], ...]  # (framework, its rows in order)


def table(summary: DeploySummary | LoadSummary, metrics: Iterable[Metric] = DEPLOY_METRICS) -> DeployTable:
    """The table of ``summary``: a column per metric (default: every one of
    :data:`~isobench.stats.DEPLOY_METRICS`), rows by framework."""
    columns = tuple(Column(m, fmt.unit(m.kind, [abs(s.stats[m.name].median) for s in summary.rows
                                                if m.name in s.stats]), m.name != "artifact_bytes")
                    for m in metrics)
    frameworks = dict.fromkeys(s.row.framework for s in summary.rows)
    return DeployTable(summary, columns, tuple((fw, tuple(s for s in summary.rows if s.row.framework == fw))
                                               for fw in frameworks))


# ---- the verdict ---------------------------------------------------------------------------------------------


def parity(summary: DeploySummary) -> Claim:
    """The fp32 rows beyond their logit tolerance (:data:`~.model.BEYOND_TOLERANCE`), else every checked row
    within it, else :data:`~.model.UNCHECKED` (no fp32 row served)."""
    failed = tuple(s for s in summary.rows if s.parity is False)
    checked = tuple(s for s in summary.rows if s.parity is not None)
    return Claim(BEYOND_TOLERANCE, rows=failed) if failed else \
        Claim(WITHIN_TOLERANCE, rows=checked) if checked else Claim(UNCHECKED)


def headline(role: str, ms: MetricSummary, batch_size: int) -> Claim:
    """The best row against the next best on one metric, as far as the verdict rule allows."""
    pick = max if ms.metric.higher_is_better else min
    runner_up = pick(ms.comparisons, key=lambda row: ms.stats[row].median)
    return Claim(claim_kind(ms, runner_up), ms, runner_up, ms.comparisons[runner_up], role=role, batch_size=batch_size)


def _gain(ms: MetricSummary | None, t: Trade) -> float | None:
    """How many times better the int8 row is than its fp32 on ``ms``, where it is better under the verdict rule."""
    if ms is None or ms.best != t.row or claim_kind(ms, t.base) != BETTER:
        return None
    return ms.comparisons[t.base].interval.estimate


def best_trade(trades: Iterable[Trade], batch_size: int) -> Claim | None:
    """Of the int8 rows whose accuracy is at most :data:`~isobench.stats.INT8_ACCURACY_BOUND` below their fp32's,
    the one with the largest p50-latency gain, else (none is faster) the largest size gain; :data:`~.model.NO_TRADE`
    when none gains either; ``None`` without int8 rows."""
    trades = list(trades)
    if not trades:
        return None
    within = [t for t in trades if t.within_bound]
    for gained in ([(g, t) for t in within if (g := _gain(t.latency, t)) is not None],
                   [(g, t) for t in within if (g := _gain(t.size, t)) is not None]):
        if gained:
            return Claim(TRADE, trade=max(gained, key=lambda gt: gt[0])[1], batch_size=batch_size)
    return Claim(NO_TRADE, count=len(within), batch_size=batch_size)


def verdict(summary: DeploySummary) -> list[Claim]:
    """The summary verdict (what ``isobench deploy`` prints): parity first; then per batch size the fastest row
    (p50 latency) and the smallest artifact, each against the next best, and the best int8 trade. Rows that missed
    their tolerance are in no comparison (:func:`~isobench.stats.summarize_deploy`)."""
    out = [parity(summary)]
    for b, metrics in summary.metrics.items():
        latency = metrics.get("latency_p50_s")
        if latency is None:
            continue
        if not latency.comparisons:
            out.append(Claim(ONLY_ONE, group=latency.best, batch_size=b))
            continue
        out.append(headline(FASTEST, latency, b))
        if (size := metrics.get("artifact_bytes")) is not None and size.comparisons:
            out.append(headline(SMALLEST, size, b))
        if (trade := best_trade(summary.trades.get(b, ()), b)) is not None:
            out.append(trade)
    return out + ([] if any(s.ok for s in summary.rows) else [Claim(NOTHING_RAN)])


def comparisons(summary: DeploySummary) -> list[Claim]:
    """The full verdict (HTML and Markdown): rows without a measurement, then per batch size every compared row
    against the best on p50 latency and, above batch 1, throughput; then too few processes, if so."""
    out = [Claim(FAILED, group=s.row, count=len(s.failed), rows=(s,)) for s in summary.rows if not s.ok]
    out += [c for metrics in summary.metrics.values() for name in DEPLOY_COMPARED if name in metrics
            for c in metric_claims(metrics[name])]
    if few := [c.comparison for c in out if c.kind == TOO_FEW]:
        out.append(Claim(INSUFFICIENT, count=min(min(c.n_a, c.n_b) for c in few)))
    return out


# ---- the fairness manifest -----------------------------------------------------------------------------------

EXPORTER_KEYS = ("exporter", "converter")             # Exported.details keys naming an exporter with its version
VERSION_KEYS = ("onnx", "onnxruntime", "ai_edge_litert")  # ... and other libraries' versions an export recorded


@dataclass(frozen=True)
class PathSoftware:
    """What one path ran on, from its records: the runtime that served it, the exporters of its artifacts (as
    each export named itself, versions included) and the other versions its exports recorded."""
    path: str
    runtime: str | None              # the runtime's id ("onnxruntime"); None: not recorded
    runtime_versions: tuple[str, ...]  # every version its records name (one, unless an upgrade came between them)
    exporters: tuple[str, ...]       # e.g. "tf2onnx 1.17.0 (TensorFlow 2.21.0)"; fp32 and int8 exports alike
    versions: tuple[tuple[str, str], ...]  # (library, version): onnx, onnxruntime (int8 quantizer), ai_edge_litert
    exported: bool                   # an export worker finished: no exporter named means it wrote the weights file


@dataclass(frozen=True)
class Software:
    """The fairness manifest of a deployment (or serving) session: the software of every path, in order of first
    record, and the installed versions the session's environment recorded (``None``: not recorded); a serving
    session's LoadGen version (``None``: not recorded)."""
    paths: tuple[PathSoftware, ...]
    packages: dict[str, str] | None
    serving: bool = False
    loadgen: str | None = None


LOADGEN = "mlcommons-loadgen"  # the distribution of MLPerf LoadGen (mlperf_loadgen) in the session's packages


def software(results: ResultSet) -> Software:
    """The manifest of ``results`` from its records' environments (``runtime``, ``runtime_version`` of every export,
    serving and load worker; an export's ``exported["details"]``) and the session's ``packages``."""
    paths, packages = [], results.environment.get("packages") or None
    for path in dict.fromkeys(r.spec.path for r in results.deploys + results.loads):
        records = [r for r in results.deploys + results.loads if r.spec.path == path]
        exports = [r for r in records if r.spec.kind == EXPORT and r.status == OK]
        details = [(r.environment.exported or {}).get("details") or (r.metrics.details if r.metrics else {})
                   for r in exports]
        runtime = next((r.environment.runtime for r in records if r.environment.runtime), None)
        paths.append(PathSoftware(
            path, runtime, tuple(dict.fromkeys(r.environment.runtime_version for r in records
                                               if r.environment.runtime_version)),
            tuple(dict.fromkeys(str(d[k]) for d in details for k in EXPORTER_KEYS if d.get(k))),
            tuple(dict.fromkeys((k, str(d[k])) for d in details for k in VERSION_KEYS if d.get(k))), bool(exports)))
    return Software(tuple(paths), packages, results.is_serving, (packages or {}).get(LOADGEN))


# ---- the whole deployment report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploySection:
    """Everything the reports show of one workload's deployment."""
    summary: DeploySummary
    weights: dict | None             # ResultSet.weights[workload]: who trained the served weights, fingerprint
    table: DeployTable
    verdict: tuple[Claim, ...]       # the summary verdict
    claims: tuple[Claim, ...]        # the full list of comparisons
    failures: tuple[DeployRecord, ...]  # workers that failed, crashed or timed out (unavailable rows are in the table)


def failed_workers(records: Iterable[Record]) -> list[Record]:
    """Workers that failed, crashed or timed out (an ``unavailable`` row says why in the table itself)."""
    return [r for r in records if r.status not in (OK, UNAVAILABLE)]


def sections(results: ResultSet) -> list[DeploySection]:
    """The deployment report of ``results``: a section per workload."""
    return [DeploySection(s, results.weights.get(s.workload), table(s), tuple(verdict(s)), tuple(comparisons(s)),
                          tuple(failed_workers(r for r in results.deploys if r.spec.workload == s.workload)))
            for s in summarize_deploy(results.deploys, results.config.get("batch_sizes", ()))]
