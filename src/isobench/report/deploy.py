"""Plain-text report of an ``isobench deploy`` session: per workload a table grouped by framework (one row per
path, precision and batch size; medians over serving processes with their spread), the verdict's ratios, parity
and the failed rows. Pure functions: results in, text out; the statistics come from :func:`isobench.stats.summarize_deploy`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..backends import display_name
from ..results import SERVE, DeployRecord, ResultSet
from ..stats import DeployComparison, DeployRowSummary, DeploySummary, Stats, min_repeats, summarize_deploy
from . import fmt
from .plots import Plot, render_deploy_plots

HEAD = ("path", "prec", "batch", "n", "cold start s", "p50 ms", "p90 ms", "p99 ms", "samples/s", "size",
        "RSS MiB", "accuracy %", "loss", "max |dlogit|")
NOTE = ("Medians over serving processes (n ok; one fresh process each), ± the robust spread (1.4826 x MAD) as % of "
        "the median (accuracy: in pp). Latency: one synchronous call at the batch size, perf_counter_ns, after "
        "warm-up; cold start: process spawn to first result; size: the artifact on disk; RSS: the serving "
        "process's peak (VmHWM); accuracy and loss: the served model on the whole test split; max |dlogit|: "
        "largest logit difference to the float64 reference (fp32 rows: pass/FAIL against the tolerance; int8 "
        "rows: accuracy change against the same path's fp32 instead).")


def _cell(s: Stats | None, scale: float = 1.0, pct: bool = False) -> str:
    """Median in the column's unit with its spread."""
    if s is None:
        return "-"
    return fmt.sig(s.median / scale) + fmt.spread(s, accuracy=pct)


def _rate(s: Stats | None) -> str:
    if s is None:
        return "-"
    suffix, size = next(((p, x) for p, x in ((" M", 1e6), (" k", 1e3)) if s.median >= x), ("", 1.0))
    return f"{fmt.sig(s.median / size)}{suffix}{fmt.spread(s)}"


def artifact_size(n: int | None) -> str:
    """Bytes as KiB below 1 MiB, else MiB."""
    if n is None:
        return "-"
    return f"{fmt.sig(n / 2**10)} KiB" if n < 2**20 else f"{fmt.sig(n / 2**20)} MiB"


def parity_cell(s: DeployRowSummary) -> str:
    if s.max_abs_logit_diff is None:
        return "-"
    diff = f"{s.max_abs_logit_diff:.1e}"
    if s.row.quantize != "none":
        change = f"acc {fmt.signed(s.accuracy_change, fmt.pp)} pp vs fp32" if s.accuracy_change is not None else "int8"
        return f"{diff} ({change})"
    return f"{diff} {'pass' if s.parity else 'FAIL'} (tol {s.tolerance:.1e})" if s.tolerance is not None else diff


def row_cells(s: DeployRowSummary) -> list[str]:
    """The table cells of one row (a row without figures: its reason in the first figure column)."""
    r, st = s.row, s.stats
    head = [r.path, "fp32" if r.quantize == "none" else r.quantize, str(r.batch_size), str(s.ok)]
    size = artifact_size(s.export.metrics.artifact_bytes if s.export and s.export.metrics else None)
    if not s.ok:
        return head + [s.error or "not measured"]
    acc = st.get("test_accuracy")
    return head + [_cell(st.get("cold_start_s")), _cell(st.get("latency_p50_s"), 1e-3), _cell(st.get("latency_p90_s"), 1e-3),
                   _cell(st.get("latency_p99_s"), 1e-3), _rate(st.get("throughput_samples_s")), size,
                   _cell(st.get("peak_rss_bytes"), 2**20),
                   (fmt.pp(acc.median) + fmt.spread(acc, accuracy=True)) if acc else "-",
                   _cell(st.get("test_loss")), parity_cell(s)]


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned text columns; a short row (a failure) runs its reason across the figure columns."""
    widths = [max((len(r[i]) for r in rows if i < len(r) - (len(r) < len(HEAD))), default=0) for i in range(len(HEAD))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() if len(r) == len(HEAD)
            else "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]


def render_deploy_table(summary: DeploySummary) -> str:
    """One workload's table: framework by framework, every row of its paths."""
    lines, rows = [], [list(HEAD)]
    marks = []  # (index in rows, framework heading)
    for fw in dict.fromkeys(s.row.framework for s in summary.rows):
        marks.append((len(rows), display_name(fw)))
        rows += [row_cells(s) for s in summary.rows if s.row.framework == fw]
    text = _columns(rows)
    lines.append(f"{summary.workload}: deployment, one value per serving process")
    starts = dict(marks)
    for i, line in enumerate(text):
        if i in starts:
            lines.append(f"{starts[i]}:")
        lines.append("  " + line)
    return "\n".join(lines + ["", NOTE])


def comparison_sentence(summary: DeploySummary, c: DeployComparison) -> str:
    """One ratio with enough processes under the verdict rule: claimed only when the interval excludes 1 and
    p < alpha (too few processes: summed up by :func:`render_deploy_verdict`)."""
    cmp, iv = c.comparison, c.comparison.interval
    what = "p50 latency" if c.metric == "latency_p50_s" else "throughput"
    r = f"{fmt.ratio(iv.estimate)}x"
    interval = f"{fmt.ci(summary.level)} {fmt.ratio(iv.low)}-{fmt.ratio(iv.high)}, {fmt.p_value(cmp.p_value)}"
    best, other = c.best.label, c.other.label
    if cmp.significant:
        claim = f"ran {r} faster than" if c.metric == "latency_p50_s" else f"served {r} the throughput of"
        return f"{best} {claim} {other} ({what}; {interval})"
    return f"{best} and {other}: no significant difference in {what} (ratio {r}, {interval})"


def render_deploy_verdict(summary: DeploySummary) -> list[str]:
    """Parity first (the fp32 rows beyond their logit tolerance), then the ratios against the fastest row."""
    failed = [s for s in summary.rows if s.parity is False]
    checked = [s for s in summary.rows if s.parity is not None]
    out = [f"PARITY FAILED: {', '.join(s.row.label for s in failed)}: served logits differ from the float64 "
           "reference beyond the tolerance" if failed else
           f"Parity: every fp32 row ({len(checked)}) within its logit tolerance of the float64 reference"
           if checked else "Parity: no fp32 row was served"]
    few = [c for c in summary.comparisons if c.comparison.insufficient]
    out += [comparison_sentence(summary, c) for c in summary.comparisons if not c.comparison.insufficient]
    if few:
        n = min(min(c.comparison.n_a, c.comparison.n_b) for c in few)
        out.append(f"No claim on {len(few)} comparison{'s' * (len(few) > 1)} of p50 latency or throughput: too few "
                   f"serving processes per row (fewest {n}); the rank test needs {min_repeats(summary.alpha)} per row "
                   f"(--repeats {min_repeats(summary.alpha)})")
    return out


def weights_line(workload: str, info: dict) -> str:
    trained = (f"trained now in {info['train_time_s']:.1f} s" if info.get("trained_now") and
               info.get("train_time_s") is not None else "from the cache")
    return (f"{workload}: weights trained by {info.get('trained_by', '?')} ({trained}), fingerprint "
            f"{info.get('fingerprint', '?')}, the same file for every path")


def failed_workers(records: Iterable[DeployRecord]) -> list[DeployRecord]:
    """Workers that failed, crashed or timed out (an ``unavailable`` row says why in the table itself)."""
    return [r for r in records if r.status not in ("ok", "unavailable")]


def render_deploy(results: ResultSet) -> str:
    """What ``isobench deploy`` prints at the end (and ``isobench show`` of a deploy session)."""
    blocks = []
    for summary in summarize_deploy(results.deploys, results.config.get("batch_sizes", ())):
        head = [weights_line(summary.workload, results.weights[summary.workload])] \
            if summary.workload in results.weights else []
        blocks.append("\n".join(head + [render_deploy_table(summary), ""] + render_deploy_verdict(summary)))
    if failed := failed_workers(results.deploys):
        blocks.append("\n".join([f"Failed workers ({len(failed)}):"] + [
            f"  {r.spec.workload}  {r.spec.label}" + (f" repeat {r.spec.repeat + 1}" if r.spec.kind == SERVE else "")
            + f"  {r.status}: {r.error}" for r in failed]))
    return "\n\n".join(blocks) if blocks else "No deploy records in this session"


@dataclass(frozen=True)
class DeploySection:
    """What the HTML and Markdown reports show of one workload's deployment: the weights line, the table (a row
    without figures is shorter: its last cell is the reason, spanning the figure columns), the verdict, the plots."""
    workload: str
    weights: str
    head: tuple[str, ...]
    rows: list[list[str]]
    verdict: list[str]
    plots: list[Plot]
    failures: list[DeployRecord]     # workers that failed, crashed or timed out (unavailable rows are in the table)


def deploy_sections(results: ResultSet, plots: bool = True) -> list[DeploySection]:
    out = []
    for summary in summarize_deploy(results.deploys, results.config.get("batch_sizes", ())):
        info = results.weights.get(summary.workload)
        out.append(DeploySection(summary.workload, weights_line(summary.workload, info) if info else "", HEAD,
                                 [row_cells(s) for s in summary.rows],
                                 render_deploy_verdict(summary),
                                 render_deploy_plots(summary, results.deploys) if plots else [],
                                 failed_workers(r for r in results.deploys if r.spec.workload == summary.workload)))
    return out
