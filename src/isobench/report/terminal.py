"""Plain-text rendering of a :class:`~isobench.stats.Summary`: the results table, the verdict, the failures.

Pure functions: data in, text out. Units are chosen once per row, numbers keep 3 significant figures, and
the verdict only claims what the statistics support (the rule is in :mod:`isobench.stats`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from ..results import RunRecord
from ..stats import Comparison, Group, MetricSummary, Stats, Summary, deterministic_gap, min_repeats

UNITS = {  # (suffix, size in the metric's base unit), largest first
    "time": ((" s", 1.0), (" ms", 1e-3), (" µs", 1e-6)),
    "memory": ((" GiB", 2.0**30), (" MiB", 2.0**20), (" KiB", 2.0**10), (" B", 1.0)),
    "rate": (("M/s", 1e6), ("k/s", 1e3), ("/s", 1.0)),  # samples/s: 6.09k/s
    "loss": (("", 1.0),),  # nats
}
CLAIMS = {  # verdict metrics in order, and how a significant ratio reads ({x}: e.g. "3.40x")
    "train_time_s": "trained {x} faster than",
    "time_to_target_s": "reached the target {x} sooner than",
    "step_time_median_s": "ran steady-state steps {x} faster than",
    "compile_s": "paid {x} less compile cost than",
    "test_accuracy": "",  # compared in percentage points: its own sentences
    "train_peak_rss_bytes": "used {x} less training-peak memory than",
    "device_peak_bytes": "used {x} less device memory than",
}
FAILED_WIDTH = 100  # characters of a failure reason kept on its line


def _sig(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant figures, never in exponent form: 2.31, 0.0500, 1230."""
    x = float(f"{x:.{digits}g}")  # round first so that 0.9996 becomes 1.00, not 1.000
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"


def _signed(x: float, fmt: Callable[[float], str]) -> str:
    return ("+" if x >= 0 else "-") + fmt(abs(x))


def _ratio(r: float) -> str:
    return f"{r:.2f}" if 0.1 <= r < 10 else _sig(r)


def _pp(x: float) -> str:  # a fraction in percentage points
    return f"{100 * x:.1f}"


def _unit(kind: str, magnitudes: Iterable[float]) -> tuple[str, float]:
    """The largest unit in which the largest magnitude is at least 1, then smaller ones while the smallest
    nonzero magnitude is below 0.1 and the largest stays below 10^4 (5.21 ms and 1260 ms, not 0.00521 s)."""
    mags = [m for m in magnitudes if m > 0] or [0.0]
    units, top, bottom = UNITS[kind], max(mags), min(mags)
    i = next((i for i, (_, size) in enumerate(units) if top >= size), len(units) - 1)
    while i + 1 < len(units) and bottom < 0.1 * units[i][1] and top < 1e4 * units[i + 1][1]:
        i += 1
    return units[i]


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _ci(summary: Summary) -> str:
    return f"{100 * summary.level:g}% CI"


def _spread(s: Stats, accuracy: bool = False) -> str:
    """Robust spread as % of the median (accuracy: in pp); none for a single process, where it is unknown."""
    if s.n < 2:
        return ""
    if accuracy:
        return f" ±{_pp(s.spread)}"
    cv = 100 * s.cv
    return f" ±{cv:.1f}%" if cv < 9.95 else f" ±{cv:.0f}%"  # 9.96 -> ±10%, not ±10.0%


def _cells(ms: MetricSummary) -> dict[Group, tuple[str, str]]:
    """Per group: (median ± spread, against best), in the row's unit."""
    if ms.metric.kind == "accuracy":
        value = {g: f"{_pp(s.median)}%{_spread(s, accuracy=True)}" for g, s in ms.stats.items()}
        fmt, unit = _pp, " pp"
    else:
        unit, size = _unit(ms.metric.kind, (abs(s.median) for s in ms.stats.values()))
        value = {g: f"{_sig(s.median / size)}{unit}{_spread(s)}" for g, s in ms.stats.items()}
        fmt = lambda x: _sig(x / size)  # noqa: E731
    cells = {ms.best: (value[ms.best], "best" if ms.comparisons else "")}
    for g, c in ms.comparisons.items():
        iv = c.interval
        if c.kind == "ratio":
            vs = f"{_ratio(iv.estimate)}x" + (f" [{_ratio(iv.low)}-{_ratio(iv.high)}]" if iv.resampled else "")
        else:
            vs = f"{_signed(iv.estimate, fmt)}{unit}" + (
                f" [{_signed(iv.low, fmt)}, {_signed(iv.high, fmt)}]" if iv.resampled else "")
        cells[g] = (value[g], vs)
    return cells


def render_table(summary: Summary) -> str:
    """The results table: one row per metric, one column per (framework, mode) group.

    A cell holds the median over ok processes with its robust spread (% of the median; accuracy in
    percentage points) and the ratio to the best group with its bootstrap interval (accuracy, and metrics
    with zero values: the difference). A header states n and failures per column; notes explain the notation.
    """
    groups = summary.groups
    rows = [(ms.metric.title, _cells(ms)) for ms in summary.metrics.values()]
    heads = {g: f"n={summary.ok[g]}" + (f", {summary.failed[g]} failed" if summary.failed[g] else "")
             for g in groups}
    widths = {g: max([len(g.label), len(heads[g])] + [len(c[g][0]) + 2 + len(c[g][1]) for _, c in rows if g in c])
              for g in groups}
    first = max((len(t) for t, _ in rows), default=0)

    def line(title: str, cols: dict[Group, str]) -> str:
        return "  ".join([f"{title:<{first}}"] + [f"{cols[g]:<{widths[g]}}" for g in groups]).rstrip()

    out = [f"{summary.workload}: one value per worker process (n = ok processes)",
           line("", {g: g.label for g in groups}), line("", heads)]
    # the median on the left, the comparison right-aligned so that ratios line up down the column
    missing = {ms.metric.title: ms.metric.missing for ms in summary.metrics.values()}
    out += [line(title, {g: c[g][0] + c[g][1].rjust(widths[g] - len(c[g][0])) if g in c else missing[title]
                         for g in groups}) for title, c in rows]
    out += ["Cells: median ±robust spread (1.4826 MAD, % of the median) over ok processes, then the ratio to the "
            f"best\ncolumn [{_ci(summary)}, bootstrap over processes]. Accuracy: spread and difference in pp. "
            "Throughput: training samples/s.\nTime to target: training time until the test metric first met the "
            "workload's target (checked after every epoch).\nTest loss: mean cross-entropy in nats per example "
            "(per token for language models)."]
    diffs = [ms.metric.title for ms in summary.metrics.values() if ms.kind == "difference"
             and ms.metric.kind != "accuracy"]
    if diffs:
        out.append(f"{', '.join(diffs)}: difference to the best instead of a ratio (some values are 0)")
    if any(not c.interval.resampled for ms in summary.metrics.values() for c in ms.comparisons.values()):
        out.append("No spread or interval where a group has a single ok process")
    return "\n".join(out)


def _claim(summary: Summary, ms: MetricSummary, other: Group, c: Comparison, phrase: str) -> str:
    best, iv, title = ms.best.label, c.interval, ms.metric.title
    if c.kind == "ratio":
        est, ci = f"ratio {_ratio(iv.estimate)}", f"{_ci(summary)} {_ratio(iv.low)}-{_ratio(iv.high)}"
        claim = f"{best} {phrase.format(x=_ratio(iv.estimate) + 'x')} {other.label}"
    else:
        unit, size = _unit(ms.metric.kind, [abs(iv.estimate), abs(iv.low), abs(iv.high)])
        fmt = lambda x: _signed(x / size, _sig)  # noqa: E731
        est, ci = f"difference {fmt(iv.estimate)}{unit}", f"{_ci(summary)} {fmt(iv.low)} to {fmt(iv.high)}{unit}"
        claim = f"{best}'s {title} was {_sig(iv.estimate / size)}{unit} lower than {other.label}'s"
    if c.insufficient:
        return (f"{best} and {other.label}: too few repeats to compare {title} ({est}"
                + (f", {ci}" if iv.resampled else "") + f", n={c.n_b} and {c.n_a})")
    if c.significant:
        return f"{claim} ({ci}, {_p(c.p_value)})"
    return f"{best} and {other.label}: no significant difference in {title} ({est}, {ci}, {_p(c.p_value)})"


def _accuracy(summary: Summary, ms: MetricSummary) -> list[str]:
    acc = {g: f"{_pp(s.median)}%" for g, s in ms.stats.items()}
    if not any(c.significant for c in ms.comparisons.values()) and len(set(acc.values())) == 1:
        who = "Both" if len(acc) == 2 else "All"
        what = "frameworks" if len({g.framework for g in acc}) == len(acc) else "configurations"
        return [f"{who} {what} reached the same test accuracy ({acc[ms.best]})"]
    lines, best = [], ms.best.label
    for g, c in ms.comparisons.items():
        iv = c.interval  # other - best, reported as best - other: the best group's gain in pp
        versus = f"{acc[ms.best]} vs {acc[g]}"
        gain = f"{versus}, {_ci(summary)} {_signed(-iv.high, _pp)} to {_signed(-iv.low, _pp)} pp, {_p(c.p_value)}"
        if c.insufficient:
            lines.append(f"{best} and {g.label}: too few repeats to compare test accuracy ({versus}, "
                         f"n={c.n_b} and {c.n_a})")
        elif deterministic_gap(ms.stats[ms.best], ms.stats[g]):
            lines.append(f"{best} and {g.label}: no claim on test accuracy ({versus}, the same in every repeat: "
                         "repeats of a deterministic training cannot show whether the gap is larger than rounding "
                         "or the random draws alone make it; --seeds N compares trainings from N seeds)")
        elif c.significant:
            lines.append(f"{best} reached higher test accuracy than {g.label} ({gain})")
        else:
            lines.append(f"{best} and {g.label}: no significant difference in test accuracy ({gain})")
    return lines


def render_verdict(summary: Summary) -> list[str]:
    """Plain-language conclusions, one per line, claiming only what the intervals and tests support.

    The best group is compared with every other on training time, steady step time, compile cost, test
    accuracy and peak memory (training RSS; device memory where measured). Then the caveats: groups whose
    runs all failed, too few repeats for a claim, and noisy groups with advice.
    """
    ran = [g for g in summary.groups if summary.ok[g]]
    lines = [f"{g.label}: {f'all {n} runs' if (n := summary.failed[g]) > 1 else 'its only run'} failed; left out "
             "of the comparison" for g in summary.groups if not summary.ok[g]]
    if len(ran) < 2:
        return lines + [f"Only {ran[0].label} ran successfully: nothing to compare" if ran
                        else "No successful runs: nothing to compare"]
    for name, phrase in CLAIMS.items():
        if (ms := summary.metrics.get(name)) is None:
            continue
        lines += (_accuracy(summary, ms) if ms.metric.kind == "accuracy"
                  else [_claim(summary, ms, g, c, phrase) for g, c in ms.comparisons.items()])
    if summary.insufficient:
        n = min(min(c.n_a, c.n_b) for ms in summary.metrics.values() for c in ms.comparisons.values()
                if c.insufficient)
        lines.append(f"Too few repeats for a claim: with {n} ok process{'es' if n > 1 else ''} in a group the rank "
                     f"test cannot reach p < {summary.alpha:g}; run at least {min_repeats(summary.alpha)} repeats")
    noisy: dict[Group, list[str]] = {}
    for x in summary.noisy:
        noisy.setdefault(x.group, []).append(f"{x.metric.title} varies by {100 * x.cv:.1f}%")
    lines += [f"Noisy: {g.label}: {' and '.join(what)} between processes (robust CV above "
              f"{100 * summary.cv_threshold:g}%)" for g, what in noisy.items()]
    if noisy:
        lines.append("To tighten the intervals: add repeats, quiet the machine (no other load, fixed CPU frequency) "
                     "or pin threads to dedicated cores")
    return lines


def _reason(r: RunRecord) -> str:
    """The run's error, else the last line of its stderr, else its exit code or signal; one line."""
    tail = [ln.strip() for ln in (r.stderr_tail or "").splitlines() if ln.strip()]
    text = ((r.error or "").strip().splitlines() or tail[-1:] or
            [f"killed by signal {r.signal}" if r.signal else
             f"exit code {r.exit_code}" if r.exit_code is not None else "no error message"])[0]
    return text if len(text) <= FAILED_WIDTH else text[:FAILED_WIDTH - 3] + "..."


def render_failures(runs: Iterable[RunRecord], display: dict[str, str] | None = None) -> str:
    """One line per failed run (any status but ok): workload, label, repeat (1-based), status and why.

    ``display`` maps framework ids to human names. Returns ``""`` when every run succeeded.
    """
    failed = [(Group.of(r.spec, display), r)
              for r in runs if not r.ok]
    if not failed:
        return ""
    failed.sort(key=lambda gr: (gr[0].sort_key(), gr[1].spec.repeat))
    width = max(len(f"{g.workload}  {g.label}") for g, _ in failed)
    return "\n".join([f"Failed runs ({len(failed)}, excluded from the statistics):"] + [
        f"  {g.workload + '  ' + g.label:<{width}}  repeat {r.spec.repeat + 1}  {r.status}: {_reason(r)}"
        for g, r in failed])
