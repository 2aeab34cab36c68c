"""Figures for the HTML and Markdown reports: pure functions from a summary and its runs to PNG bytes.

matplotlib draws on the Agg backend explicitly (a ``Figure`` with a ``FigureCanvasAgg``), never through
pyplot: no display is needed and the caller's own matplotlib backend is left alone. Every framework has one
colour in every figure; a second mode of the same framework is told apart by hatching (bars) and line style
(curves). Bar heights are medians over ok processes, the error bars span the min-max of the per-process
values and the dots are the processes themselves.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, LogLocator, NullFormatter

from ..backends import colour
from ..results import SERVE, DeployRecord, LoadRecord, RunRecord
from ..stats import DeployRow, DeploySummary, Group, LoadRow, Summary
from . import fmt, words
from .model import Efficiency

HATCHES = ("", "//", "..", "xx")        # the 1st, 2nd, ... mode of one framework
LINESTYLES = ("-", "--", ":", "-.")
PHASES = (  # (name, colour shade): the stacked phase breakdown, left to right
    ("import", "#4D4D4D"), ("build", "#8C8C8C"), ("compile", "#C44E52"), ("train", "#55A868"),
    ("evaluate", "#8172B2"))
DPI = 100
ERROR_BARS = "error bars: min-max of the per-process values; dots: one per process"


@dataclass(frozen=True)
class Plot:
    """One rendered figure: a file-name-safe ``name``, a title, a caption that says what the marks mean."""
    name: str
    title: str
    caption: str
    png: bytes


def _styles(groups: Sequence[Group]) -> dict[Group, tuple[str, str, str]]:
    """(colour, hatch, line style) per group; modes of one framework numbered in column order."""
    seen: dict[str, int] = {}
    out = {}
    for g in groups:
        i = seen.get(g.framework, 0)
        seen[g.framework] = i + 1
        out[g] = colour(g.framework), HATCHES[i % len(HATCHES)], LINESTYLES[i % len(LINESTYLES)]
    return out


def _figure(width: float = 6.4, height: float = 3.6) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, axis="y", color="#E0E0E0", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp: reproducible bytes
    return buf.getvalue()


def _bars(summary: Summary, metric: str, name: str, what: str) -> Plot | None:
    """Median per group with min-max error bars and per-process dots; None when nothing was measured."""
    ms = summary.metrics.get(metric)
    if ms is None:
        return None
    groups = list(ms.stats)
    if ms.metric.kind == "accuracy":
        unit, size = "%", 0.01
    elif ms.metric.kind == "loss":
        unit, size = "nats", 1.0
    else:
        unit, size = fmt.unit(ms.metric.kind, (abs(s.median) for s in ms.stats.values()))
        unit = unit.strip()
    styles = _styles(groups)
    fig, ax = _figure()
    x = np.arange(len(groups))
    med = np.array([ms.stats[g].median for g in groups]) / size
    low = med - np.array([ms.stats[g].min for g in groups]) / size
    high = np.array([ms.stats[g].max for g in groups]) / size - med
    for i, g in enumerate(groups):
        c, hatch, _ = styles[g]
        ax.bar(i, med[i], 0.6, color=c, hatch=hatch, edgecolor="white" if hatch else c, alpha=0.9)
        pts = np.array(ms.stats[g].values) / size
        ax.plot(np.full(pts.size, i) + np.linspace(-0.12, 0.12, pts.size), pts, "o", color="black", ms=3,
                alpha=0.6, zorder=4)
    ax.errorbar(x, med, yerr=[low, high], fmt="none", ecolor="black", capsize=6, linewidth=1.2, zorder=3)
    for i, g in enumerate(groups):
        ax.annotate(f"{med[i]:.3g}", (i, med[i] + high[i]), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=9)
    if ms.metric.kind == "accuracy":
        lo = float(min(s.min for s in ms.stats.values())) / size
        ax.set_ylim(max(0.0, lo - 10), 100 + 2)  # a bar from 0 would hide 0.1 pp differences
    else:
        ax.set_ylim(0, float(np.max(med + high)) * 1.15 or 1)
    ax.set_xticks(x, [f"{g.label}\nn={ms.stats[g].n}" for g in groups])
    ax.set_ylabel(f"{words.title(ms.metric.name)} ({unit})")
    title = f"{summary.workload}: {words.title(ms.metric.name)}"
    ax.set_title(title)
    caption = f"{what} Bars: median over ok processes; {ERROR_BARS}."
    return Plot(name, title, caption, _png(fig))


def _memory(summary: Summary) -> Plot | None:
    """Training-peak and process-peak RSS side by side per group, in MiB."""
    metrics = [summary.metrics[m] for m in ("train_peak_rss_bytes", "process_peak_rss_bytes") if m in summary.metrics]
    if not metrics:
        return None
    groups = [g for g in summary.groups if any(g in ms.stats for ms in metrics)]
    styles = _styles(groups)
    fig, ax = _figure()
    width = 0.8 / len(metrics)
    mib = 2.0**20
    top = 0.0
    for j, ms in enumerate(metrics):
        for i, g in enumerate(groups):
            if g not in ms.stats:
                continue
            s, (c, hatch, _) = ms.stats[g], styles[g]
            xi = i + (j - (len(metrics) - 1) / 2) * width
            ax.bar(xi, s.median / mib, width * 0.9, color=c, alpha=0.9 if j == 0 else 0.45, hatch=hatch,
                   edgecolor="white" if hatch else c)
            ax.errorbar([xi], [s.median / mib], yerr=[[(s.median - s.min) / mib], [(s.max - s.median) / mib]],
                        fmt="none", ecolor="black", capsize=4, linewidth=1.2)
            ax.annotate(f"{s.median / mib:.0f}", (xi, s.max / mib), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=8)
            top = max(top, s.max / mib)
    ax.set_ylim(0, top * 1.2 or 1)
    ax.set_xticks(np.arange(len(groups)), [g.label for g in groups])
    ax.legend([Patch(color="#606060", alpha=0.9 if j == 0 else 0.45) for j in range(len(metrics))],
              [words.title(ms.metric.name) for ms in metrics], frameon=False, fontsize=9, loc="upper right")
    ax.set_ylabel("resident set size (MiB)")
    title = f"{summary.workload}: peak memory (RSS)"
    ax.set_title(title)
    kinds = " and ".join(f"{words.title(ms.metric.name)} ({'solid' if j == 0 else 'light'})"
                         for j, ms in enumerate(metrics))
    caption = (f"{kinds[0].upper()}{kinds[1:]} per framework. Training peak: VmHWM from after the import to the end "
               "of training; process peak: the whole worker process (ru_maxrss). Bars: median; error bars: min-max "
               "of the per-process values.")
    return Plot("memory", title, caption, _png(fig))


def epoch_ends(step_times: Sequence[float], epochs: int) -> np.ndarray:
    """Cumulative step time (s) at the end of each epoch: steps per epoch = len(step_times) / epochs."""
    if not epochs or not len(step_times):
        return np.array([])
    cum = np.cumsum(step_times)
    ends = np.round(np.arange(1, epochs + 1) * len(step_times) / epochs).astype(int) - 1
    return cum[ends]


def epoch_times(m) -> tuple[np.ndarray, str]:
    """Training time (s) at the end of each epoch of one run, and its source: the recorded cumulative training
    time per epoch when the worker kept it, else the summed step times (:func:`epoch_ends`)."""
    recorded = getattr(m, "epoch_train_s", None) or []
    if len(recorded) == len(m.epoch_losses):
        return np.asarray(recorded, dtype=float), "recorded"
    return epoch_ends(m.step_times_s, len(m.epoch_losses)), "steps"


def _ok_by_group(summary: Summary, runs: Sequence[RunRecord]) -> dict[Group, list[RunRecord]]:
    out: dict[Group, list[RunRecord]] = {}
    for g in summary.groups:
        rs = [r for r in runs if r.ok and r.metrics and r.metrics.epoch_losses and g.matches(r.spec)]
        if rs:
            out[g] = sorted(rs, key=lambda r: r.spec.repeat)
    return out


def _losses(summary: Summary, runs: Sequence[RunRecord], wall: bool) -> Plot | None:
    """Mean training loss per epoch, every ok process one line, against the epoch or the training time at the
    end of each epoch (:func:`epoch_times`)."""
    by_group = _ok_by_group(summary, runs)
    if wall:
        by_group = {g: [r for r in rs if epoch_times(r.metrics)[0].size] for g, rs in by_group.items()}
        by_group = {g: rs for g, rs in by_group.items() if rs}
    if not by_group:
        return None
    styles = _styles(list(by_group))
    fig, ax = _figure(6.4, 3.9)
    ax.grid(True, axis="x", color="#E0E0E0", linewidth=0.8)
    sources = set()
    for j, (g, rs) in enumerate(by_group.items()):
        c, _, ls = styles[g]
        wide = 0.0 if wall else 2.6 * (len(by_group) - 1 - j)  # earlier groups wider: identical curves stay visible
        for k, r in enumerate(rs):
            y = np.asarray(r.metrics.epoch_losses, dtype=float)
            if wall:
                x, source = epoch_times(r.metrics)
                sources.add(source)
            else:
                x = np.arange(1, y.size + 1)
            ax.plot(x, y, ls, color=c, marker="o", ms=3 + wide, linewidth=1.4 + wide, alpha=0.75 if wall else 1.0,
                    label=f"{g.label} (n={len(rs)})" if k == 0 else None)
    ax.set_ylabel("mean training loss per epoch")
    if wall:
        ax.set_xlim(left=0)
        ax.set_xlabel("training time (s), first step (compile) included" if sources == {"recorded"}
                      else "cumulative step time (s), first step (compile) included")
        title = f"{summary.workload}: training loss against time"
        how = {"recorded": "the training time recorded at the end of that epoch (per-epoch evaluation excluded)",
               "steps": "the summed step times up to the end of that epoch (steps per epoch = steps / epochs; "
                        "time outside the steps, such as the Python loop and batching, is not included)"}
        caption = ("Mean training loss of each epoch against " + "; or ".join(how[s] for s in sorted(sources))
                   + ". The first step, which includes tracing or compilation, counts. One line per process.")
    else:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        title = f"{summary.workload}: training loss per epoch"
        caption = ("Mean training loss of each epoch, one line per ok process (earlier frameworks drawn wider, so "
                   "that identical curves stay visible). Frameworks doing the same arithmetic from the same "
                   "initial weights and data order draw the same curve.")
    ax.set_title(title)
    fig.legend(frameon=False, fontsize=9, loc="outside lower center", ncols=min(3, len(by_group)))
    return Plot("loss-time" if wall else "loss-epoch", title, caption, _png(fig))


def phase_medians(summary: Summary) -> dict[Group, dict[str, float]]:
    """Median seconds per phase and group: import, build, compile (first step minus the steady median),
    train (training time minus compile) and evaluate."""
    def med(name: str, g: Group) -> float:
        ms = summary.metrics.get(name)
        return ms.stats[g].median if ms and g in ms.stats else 0.0
    out = {}
    train = summary.metrics.get("train_time_s")
    for g in train.stats if train else ():
        compile_s = med("compile_s", g)
        out[g] = {"import": med("import_s", g), "build": med("build_s", g), "compile": compile_s,
                  "train": max(0.0, med("train_time_s", g) - compile_s), "evaluate": med("eval_s", g)}
    return out


def _phases(summary: Summary) -> Plot | None:
    """A stacked horizontal bar per group: where a run's time goes, in seconds."""
    phases = phase_medians(summary)
    if not phases:
        return None
    groups = list(phases)
    fig, ax = _figure(6.4, 1.4 + 0.55 * len(groups))
    ax.grid(True, axis="x", color="#E0E0E0", linewidth=0.8)
    ax.grid(False, axis="y")
    y = np.arange(len(groups))[::-1]
    left = np.zeros(len(groups))
    for name, shade in PHASES:
        widths = np.array([phases[g][name] for g in groups])
        ax.barh(y, widths, 0.6, left=left, color=shade, label=name, edgecolor="white", linewidth=0.5)
        left += widths
    for yi, total in zip(y, left):
        ax.annotate(f"{total:.2f} s", (total, yi), textcoords="offset points", xytext=(4, 0), va="center",
                    fontsize=9)
    ax.set_yticks(y, [g.label for g in groups])
    for tick, g in zip(ax.get_yticklabels(), groups):
        tick.set_color(colour(g.framework))
        tick.set_fontweight("bold")
    ax.set_xlim(0, float(left.max()) * 1.15 or 1)
    ax.set_xlabel("seconds (median over ok processes)")
    title = f"{summary.workload}: where the time goes"
    ax.set_title(title)
    fig.legend(ncols=len(PHASES), loc="outside lower center", frameon=False, fontsize=9)
    caption = ("Median of each phase over ok processes, stacked: import (framework import with thread settings), "
               "build (model, optimizer, weights, data), compile (first step minus the steady median step), "
               "train (the rest of the training time), evaluate (one pass over the test split). Worker start-up "
               "outside these phases is not shown.")
    return Plot("phases", title, caption, _png(fig))


def _roofline(summary: Summary, eff: Efficiency | None) -> Plot | None:
    """Each group's steady step as a point (x: modelled intensity, y: achieved GFLOP/s) under the machine's measured
    roof: min(the machine fp32 matmul peak, the best copy bandwidth x intensity); log-log."""
    achieved = summary.metrics.get("achieved_flops_s")
    if achieved is None or eff is None or not eff.intensity:
        return None
    fig, ax = _figure(6.4, 4.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", axis="both", color="#E0E0E0", linewidth=0.6)
    x = np.logspace(np.log10(eff.intensity) - 2, np.log10(eff.intensity) + 2, 200)  # FLOP/B
    top = next((m for m in eff.peaks.machine if m.precision == "fp32"), None)
    if top and eff.peaks.copy:
        gbps, by = eff.peaks.copy
        label = (f"machine roof: fp32 matmul {fmt.sig(top.gflops)} GFLOP/s ({words.peak_name(top.framework)}), "
                 f"copy {fmt.sig(gbps)} GB/s ({words.peak_name(by)})")
        ax.plot(x, np.minimum(top.gflops, gbps * x), color="#333333", linestyle="--", linewidth=1.2, label=label)
    styles = _styles(list(achieved.stats))
    for g, st in achieved.stats.items():
        ax.scatter([eff.intensity] * len(st.values), np.array(st.values) / 1e9, s=14, color=styles[g][0], alpha=0.5)
        ax.scatter([eff.intensity], [st.median / 1e9], s=70, marker="o", color=styles[g][0], edgecolor="black",
                   linewidth=0.6, label=f"{g.label}: {fmt.sig(st.median / 1e9)} GFLOP/s", zorder=3)
    ax.set_xlabel("arithmetic intensity, FLOP/byte (modelled)")
    ax.set_ylabel("GFLOP/s (counted FLOPs / measured step)")
    title = f"{summary.workload}: roofline"
    ax.set_title(title)
    ax.legend(fontsize=7.5, loc="lower right", frameon=False)
    caption = ("Roofline: each framework's steady step as a point at the workload's modelled arithmetic intensity "
               "(counted FLOPs / modelled bytes per step) and its achieved GFLOP/s (counted FLOPs of a full-batch "
               "step / the measured steady median step time; large dot: median, small dots: processes). Dashed roof: "
               "the machine's, the best fp32 matmul rate and the best copy bandwidth x intensity any framework "
               "measured (log-log)."
               + ("" if top and eff.peaks.copy else " No peak was measured in this session: no roof."))
    return Plot("roofline", title, caption, _png(fig))


def _metric(summary: Summary, runs: Sequence[RunRecord]) -> str:
    """The workload's test metric as its runs recorded it: "accuracy" (default) or "loss"."""
    return next((getattr(r.metrics, "metric", "accuracy") for r in runs
                 if r.ok and r.metrics and r.spec.workload == summary.workload), "accuracy")


def render_plots(summary: Summary, runs: Sequence[RunRecord], efficiency: Efficiency | None = None) -> list[Plot]:
    """Every figure for one workload, in report order; figures without data are left out (the roofline needs
    ``efficiency``, :func:`~.model.efficiency`, and recorded FLOP counts)."""
    plots = [
        _bars(summary, "time_to_trained_s", "time-to-trained",
              "Time to a trained model: import + build + training (first step included), what a cold training "
              "script waits for; the harness's own start-up excluded."),
        _bars(summary, "train_time_s", "train-time",
              "Training time: first data touch to the end of the last epoch, evaluation excluded."),
        _bars(summary, "step_time_median_s", "step-time",
              "Steady step time: each process's median over full-batch steps after the first."),
        _bars(summary, "compile_s", "compile",
              "Compile cost: first step minus the steady median step (tracing and compilation)."),
        _bars(summary, "test_loss", "test-loss", "Test loss after training: mean cross-entropy (per token for "
              "language models).") if _metric(summary, runs) == "loss" else
        _bars(summary, "test_accuracy", "accuracy", "Test accuracy after training (the y axis does not start at 0)."),
        _memory(summary),
        _losses(summary, runs, wall=False),
        _losses(summary, runs, wall=True),
        _phases(summary),
        _roofline(summary, efficiency),
    ]
    return [p for p in plots if p is not None]


def _deploy_latency(summary: DeploySummary, records: Sequence[DeployRecord]) -> Plot | None:
    """Every timed call of every ok serving process of each row, as a box per row on a log axis."""
    rows = [s.row for s in summary.rows if s.ok]
    samples = {row: [x * 1e3 for r in records if r.ok and r.metrics and r.spec.kind == SERVE and
                     DeployRow(*r.spec.row) == row for x in r.metrics.latencies_s] for row in rows}
    rows = [row for row in rows if samples[row]]
    if not rows:
        return None
    fig, ax = _figure(7.2, 0.9 + 0.32 * len(rows))
    ax.grid(True, axis="x", color="#E0E0E0", linewidth=0.8)
    ax.grid(False, axis="y")
    parts = ax.boxplot([samples[r] for r in rows], orientation="horizontal", whis=(1, 99), showfliers=True, widths=0.6,
                       patch_artist=True, flierprops=dict(markersize=2, alpha=0.4))
    for box, row in zip(parts["boxes"], rows):
        box.set_facecolor(colour(row.framework))
    ax.set_yticks(range(1, len(rows) + 1), [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("latency per call (ms, log scale)")
    return Plot("deploy-latency", f"{summary.workload}: latency per call",
                "Every timed call of every ok serving process (perf_counter_ns around one synchronous call at the "
                "row's batch size, after warm-up): box from the 25th to the 75th percentile, line at the median, "
                "whiskers at the 1st and 99th percentiles, dots beyond them; log scale.", _png(fig))


def _deploy_size(summary: DeploySummary) -> Plot | None:
    """Artifact size (the file serving the batch size) against median p50 latency at the smallest batch size, each
    point labelled with accuracy."""
    batch = min((s.row.batch_size for s in summary.rows if s.ok), default=None)
    points = [s for s in summary.rows if s.ok and s.row.batch_size == batch and "artifact_bytes" in s.stats
              and "latency_p50_s" in s.stats]
    if not points:
        return None
    fig, ax = _figure()
    ax.grid(True, axis="x", color="#E0E0E0", linewidth=0.8)
    for s in points:
        x, y = s.stats["artifact_bytes"].median / 2**10, s.stats["latency_p50_s"].median * 1e3
        ax.scatter([x], [y], color=colour(s.row.framework), marker="o" if s.row.quantize == "none" else "^", s=40)
        acc = s.stats.get("test_accuracy")
        ax.annotate(f"{s.row.path}{' int8' if s.row.quantize != 'none' else ''}"
                    + (f" {fmt.pp(acc.median)}%" if acc else ""), (x, y), textcoords="offset points", xytext=(5, 4),
                    fontsize=7.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("artifact size on disk (KiB, log scale)")
    ax.set_ylabel(f"p50 latency at batch {batch} (ms, log)")
    return Plot("deploy-size", f"{summary.workload}: size against latency",
                f"Each deployment path: the size on disk of the artifact that serves batch {batch} against its "
                "median p50 latency there over serving processes; circles fp32, triangles int8; labels: path and test "
                "accuracy of the served model.",
                _png(fig))


def render_deploy_plots(summary: DeploySummary, records: Sequence[DeployRecord]) -> list[Plot]:
    """The deploy figures of one workload: the latency distribution per row and size against latency."""
    return [p for p in (_deploy_latency(summary, records), _deploy_size(summary)) if p is not None]


def _server_latency(workload: str, records: Sequence[LoadRecord], bound_s: float | None) -> Plot | None:
    """Every LoadGen run of every ok server load worker of ``workload``: its p50 and p99 latency against the target
    QPS it offered, a panel per row (path, precision, batching) on shared log-log axes, the p99 bound dashed."""
    by_row: dict[LoadRow, list[list]] = {}
    for r in sorted((r for r in records if r.spec.workload == workload and r.spec.scenario == "server" and r.ok
                     and r.metrics and not r.warmup), key=lambda r: (LoadRow(*r.spec.row).sort_key(), r.spec.repeat)):
        if ts := sorted((t for t in r.metrics.trials if t.target_qps and t.latency_p99_s), key=lambda t: t.target_qps):
            by_row.setdefault(LoadRow(*r.spec.row), []).append(ts)  # one process's runs, by offered QPS
    if not by_row:
        return None
    cols = min(3, len(by_row))
    rows = -(-len(by_row) // cols)
    fig = Figure(figsize=(2.9 * cols + 0.6, 2.3 * rows + 0.7), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (row, per) in zip(axes, by_row.items()):
        c = colour(row.framework)
        for ts in per:
            qps = [t.target_qps for t in ts]
            ax.plot(qps, [1e3 * t.latency_p99_s for t in ts], "-", color=c, marker="^", ms=4, linewidth=0.9)
            ax.plot(qps, [1e3 * (t.latency_p50_s or np.nan) for t in ts], ":", color=c, marker="o",
                    markerfacecolor="none", ms=4, linewidth=0.9)
            ax.scatter([t.target_qps for t in ts if not t.valid], [1e3 * t.latency_p99_s for t in ts if not t.valid],
                       s=55, marker="x", color="black", linewidth=1.0, zorder=4)
        if bound_s:
            ax.axhline(bound_s * 1e3, color="#333333", linestyle="--", linewidth=1.0)
        ax.set_title(f"{row.label} (n={len(per)})", fontsize=8.5, color=c)
        ax.grid(True, which="major", color="#E0E0E0", linewidth=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.tick_params(labelsize=7.5)
    for ax in axes[len(by_row):]:
        ax.set_visible(False)
    ax = axes[0]
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"))  # 20k QPS
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())
    fig.supxlabel("offered load: LoadGen's target QPS (log scale)", fontsize=9)
    fig.supylabel("latency (ms, log scale)", fontsize=9)
    title = f"{workload}: server latency against offered load"
    fig.suptitle(title, fontsize=11)
    return Plot("server-latency", title,
                "Every LoadGen run of every ok server load worker (the search for the largest VALID target QPS), a "
                "panel per path, precision and batching: the run's p99 (triangles, solid) and p50 (circles, dotted) latency, "
                "from each query's scheduled issue to its completion, against the target QPS it offered (Poisson "
                "arrivals), one line per process; crosses: runs LoadGen judged INVALID"
                + (f"; dashed: the p99 bound ({words.bound_ms(bound_s)})" if bound_s else "") + ". Log-log, shared axes.",
                _png(fig))


def render_serving_plots(workload: str, records: Sequence[LoadRecord], bound_s: float | None) -> list[Plot]:
    """The serving figures of one workload: the server's latency percentiles against offered load (none without a
    server run)."""
    return [p for p in (_server_latency(workload, records, bound_s),) if p is not None]
