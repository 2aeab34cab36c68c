"""What the reports call things and how they say them: metric titles, table notes, the verdict's sentences, parity
states and comparison flags. Every renderer takes its words from here, so the terminal, HTML and Markdown
reports say the same thing; which claim is made is decided by :mod:`isobench.stats` and :mod:`.model`.
"""
from __future__ import annotations

import textwrap
from dataclasses import replace

from ..backends import display_name
from ..results import LOW_MATMUL_EFFICIENCY as LOW
from ..results import EXPORT, OK, PrivacyRecord, Record, ResultSet
from ..stats import (HEADLINE, INT8_ACCURACY_BOUND, IMPROVEMENT, NO_CHANGE, OUTLIER_SPREADS, REGRESSION, UNTESTED,
                     Comparison, Contended, DeployRowSummary, DeploySummary, Group, LoadRowSummary, LoadSummary,
                     MetricSummary, Noise, Outlier, Summary, min_repeats)
from . import deploy as d, fmt, model as m, serving as sv

TITLES = {  # metric name -> its title in every table, plot and sentence
    "time_to_trained_s": "time to trained model", "train_time_s": "training time", "time_to_target_s": "time to target", "step_time_median_s": "steady step time",
    "first_step_s": "first step", "compile_s": "compile cost", "throughput_samples_s": "throughput",
    "import_s": "import", "build_s": "build", "eval_s": "evaluation", "test_accuracy": "test accuracy",
    "test_loss": "test loss", "rss_after_import_bytes": "RSS after import",
    "train_peak_rss_bytes": "training peak RSS", "process_peak_rss_bytes": "process peak RSS",
    "device_peak_bytes": "device peak memory", "achieved_flops_s": "achieved FLOP/s",
    "peak_fraction": "% of peak (MFU)", "energy_per_sample_j": "energy per sample",
    # isobench deploy
    "cold_start_s": "cold start", "latency_p50_s": "p50 latency", "latency_p90_s": "p90 latency",
    "latency_p99_s": "p99 latency", "artifact_bytes": "artifact size", "peak_rss_bytes": "serving peak RSS",
    # isobench deploy --scenario
    "max_qps": "max QPS", "samples_per_s": "samples/s", "accuracy": "answer accuracy"}
NOTE_WIDTH = 115  # characters per line of an efficiency note in the terminal
MISSING = {"time_to_target_s": "not reached", "peak_fraction": "not measured",  # shown for a group without a
           "energy_per_sample_j": "not measured"}                               # value; "-" for other metrics
PHRASES = {  # how a significant ratio reads ({x}: e.g. "3.40x"); test accuracy has its own sentences
    "time_to_trained_s": "had a trained model {x} sooner than",
    "train_time_s": "trained {x} faster than",
    "time_to_target_s": "reached the target {x} sooner than",
    "step_time_median_s": "ran steady-state steps {x} faster than",
    "compile_s": "paid {x} less compile cost than",
    "train_peak_rss_bytes": "used {x} less training-peak memory than",
    "device_peak_bytes": "used {x} less device memory than",
    # isobench deploy: every ratio is the better row's advantage (stats.summarize_metric, favourable)
    "latency_p50_s": "ran {x} faster than",
    "throughput_samples_s": "served {x} the throughput of",
    "artifact_bytes": "was {x} smaller than",
    # isobench deploy --scenario: the same, each scenario's headline figure
    "max_qps": "sustained {x} the QPS of",
    "samples_per_s": "served {x} the samples/s of",
    "latency_p99_s": "answered {x} faster at p99 than",
}
QUALIFIERS = {"max_qps": lambda summary: f" under {bound(summary)}"}  # after the figure's name and the other row


def qualifier(summary, metric: str) -> str:
    """What a figure is measured under, after its name (:data:`QUALIFIERS`): a serving session's max QPS its bound."""
    return QUALIFIERS[metric](summary) if metric in QUALIFIERS else ""
FLAGS = {REGRESSION: "regression", IMPROVEMENT: "improvement", NO_CHANGE: "no significant change",
         UNTESTED: "changed, untested (one value per session)"}  # every repeat of each session gave the same value
NOT_CHECKED = "parity: not checked in this session"
ADVICE = ("To tighten the intervals: add repeats, quiet the machine (no other load, fixed CPU frequency) or pin "
          "threads to dedicated cores")
NOTES = {  # under every results table, as lines: the terminal keeps their breaks
    m.CELLS: ("Cells: median ±robust spread (1.4826 MAD, % of the median) over ok processes, then the ratio to the best",
     "column [{ci}, bootstrap over processes]. Accuracy: spread and difference in pp. Throughput: training samples/s."),
    m.TIME_TO_TRAINED: ("Time to trained model: what a cold training script waits for, of the framework's doing: import + build",
     "+ training (first step and compilation included). Excluded: {harness}."),
    m.TIME_TO_TARGET: ("Time to target: training time until the test metric first met the workload's target (checked after every "
     "epoch).",),
    m.TEST_LOSS: ("Test loss: mean cross-entropy in nats per example (per token for language models).",),
    m.SINGLE: ("No spread or interval where a group has a single ok process",),
}


def title(metric: str) -> str:
    """A metric's title, e.g. ``"training time"`` for ``train_time_s``."""
    return TITLES.get(metric, metric)


def missing(metric: str) -> str:
    return MISSING.get(metric, "-")


def differences_note(metrics: list[str]) -> str:
    return f"{', '.join(title(x) for x in metrics)}: difference to the best instead of a ratio (some values are 0)"


def bound_ms(seconds: float) -> str:
    """A latency bound as ``--latency-bound`` gives it, in ms: ``10 ms``."""
    return f"{1e3 * seconds:g} ms"


def bound(summary: LoadSummary) -> str:
    """A serving session's p99 latency bound as a claim names it, e.g. ``a 10 ms p99``."""
    return f"a {bound_ms(summary.bound_s)} p99" if summary.bound_s else "the p99 bound (not recorded)"


def estimate(summary: Summary | DeploySummary | LoadSummary, ms: MetricSummary, c: Comparison) -> tuple[str, str]:
    """A comparison's estimate and interval as a sentence quotes them, e.g. ``("ratio 1.39", "95% CI 0.93-1.81")``."""
    iv, ci = c.interval, fmt.ci(summary.level)
    if c.kind == "ratio":
        return f"ratio {fmt.ratio(iv.estimate)}", f"{ci} {fmt.ratio(iv.low)}-{fmt.ratio(iv.high)}"
    suffix, size = fmt.unit(ms.metric.kind, [abs(iv.estimate), abs(iv.low), abs(iv.high)])
    f = lambda x: fmt.signed(x / size, fmt.sig)  # noqa: E731
    return f"difference {f(iv.estimate)}{suffix}", f"{ci} {f(iv.low)} to {f(iv.high)}{suffix}"


def comparison_claim(summary: Summary | DeploySummary | LoadSummary, ms: MetricSummary, other: Group, c: Comparison,
                     kind: str) -> str:
    """The sentence for one comparison on a metric other than test accuracy (``kind``: :data:`.model.BETTER`,
    :data:`.model.NO_DIFFERENCE` or :data:`.model.TOO_FEW`); a serving session's max QPS names its bound."""
    iv, under = c.interval, qualifier(summary, ms.metric.name)
    best, name = ms.best.label, title(ms.metric.name) + under
    est, interval = estimate(summary, ms, c)
    if c.kind == "ratio":
        claim = f"{best} {PHRASES[ms.metric.name].format(x=fmt.ratio(iv.estimate) + 'x')} {other.label}{under}"
    else:
        suffix, size = fmt.unit(ms.metric.kind, [abs(iv.estimate), abs(iv.low), abs(iv.high)])
        claim = f"{best}'s {name} was {fmt.sig(iv.estimate / size)}{suffix} lower than {other.label}'s"
    if kind == m.TOO_FEW:
        return (f"{best} and {other.label}: too few repeats to compare {name} ({est}"
                + (f", {interval}" if iv.resampled else "") + f", n={c.n_b} and {c.n_a})")
    p = fmt.p_value(c.p_value)
    if kind == m.BETTER:
        return f"{claim} ({interval}, {p})"
    return f"{best} and {other.label}: no significant difference in {name} ({est}, {interval}, {p})"


def accuracy_claim(summary: Summary, ms: MetricSummary, other: Group, c: Comparison, kind: str) -> str:
    """The sentence for the best group against ``other`` on test accuracy, in percentage points."""
    best, iv = ms.best.label, c.interval  # other - best, reported as best - other: the best group's gain in pp
    versus = f"{fmt.pp(ms.stats[ms.best].median)}% vs {fmt.pp(ms.stats[other].median)}%"
    gain = (f"{versus}, {fmt.ci(summary.level)} {fmt.signed(-iv.high, fmt.pp)} to {fmt.signed(-iv.low, fmt.pp)} pp, "
            f"{fmt.p_value(c.p_value)}")
    if kind == m.TOO_FEW:
        return f"{best} and {other.label}: too few repeats to compare test accuracy ({versus}, n={c.n_b} and {c.n_a})"
    if kind == m.UNTESTED:
        return (f"{best} and {other.label}: no claim on test accuracy ({versus}, the same in every repeat: repeats "
                "of a deterministic training cannot show whether the gap is larger than rounding or the random draws "
                "alone make it; --seeds N compares trainings from N seeds)")
    if kind == m.BETTER:
        return f"{best} reached higher test accuracy than {other.label} ({gain})"
    return f"{best} and {other.label}: no significant difference in test accuracy ({gain})"


def same_accuracy(ms: MetricSummary) -> str:
    who = "Both" if len(ms.stats) == 2 else "All"
    what = "frameworks" if len({g.framework for g in ms.stats}) == len(ms.stats) else "configurations"
    return f"{who} {what} reached the same test accuracy ({fmt.pp(ms.stats[ms.best].median)}%)"


def failed_group(group: Group, runs: int) -> str:
    return f"{group.label}: {f'all {runs} runs' if runs > 1 else 'its only run'} failed; left out of the comparison"


def insufficient(n: int, alpha: float) -> str:
    return (f"Too few repeats for a claim: with {n} ok process{'es' if n > 1 else ''} in a group the rank test cannot "
            f"reach p < {alpha:g}; run at least {min_repeats(alpha)} repeats")


def contended(c: Contended) -> str:
    return (f"Under load: {c.count} of {c.total} {c.group.label} processes ran beside other load (other processes took "
            f"{fmt.percent_range(c.fractions)}% of their CPUs): their times are not comparable; rerun on a quiet machine")


def outlier(outliers: tuple[Outlier, ...]) -> str:
    """One process's outlying headline times in one sentence."""
    def one(o: Outlier) -> str:
        suffix, size = fmt.unit(o.metric.kind, [abs(o.value), abs(o.median)])
        return f"{title(o.metric.name)} {fmt.sig(o.value / size)}{suffix} (median {fmt.sig(o.median / size)}{suffix})"
    o = outliers[0]
    return (f"Outlier: {o.group.label} repeat {o.repeat + 1}: {', '.join(map(one, outliers))}, more than "
            f"{OUTLIER_SPREADS:g} robust spreads from the median; kept in the statistics")


def noisy(summary: Summary, noise: tuple[Noise, ...]) -> str:
    what = [f"{title(x.metric.name)} varies by {100 * x.cv:.1f}%" for x in noise]
    return (f"Noisy: {noise[0].group.label}: {' and '.join(what)} between processes (robust CV above "
            f"{100 * summary.cv_threshold:g}%)")


def verdict_rule(summary: Summary) -> str:
    """The verdict rule in one sentence, with this summary's level, alpha and noise threshold."""
    return (f"A difference is claimed only when its {100 * summary.level:g}% bootstrap interval (processes "
            f"resampled) excludes no difference (ratio 1, or 0 pp for accuracy) and a two-sided Mann-Whitney U test "
            f"gives p < {summary.alpha:g}; otherwise the verdict says \"no significant difference\". That needs at "
            f"least {min_repeats(summary.alpha)} ok processes per framework. A framework is flagged as noisy when "
            f"its per-process training or step times vary by more than {100 * summary.cv_threshold:g}% "
            "(robust coefficient of variation).")


def sentence(summary: Summary | DeploySummary | LoadSummary, claim: m.Claim) -> str:
    """The verdict's sentence for one :class:`~.model.Claim` of ``summary`` (a workload's training or deployment
    summary, or a scenario's serving summary: its level and alpha)."""
    k = claim.kind
    if k == m.SAME:
        return same_accuracy(claim.metric)
    if claim.role is not None:
        return (batching if claim.role == m.BATCHING else headline)(summary, claim)
    if claim.metric is not None:
        say = accuracy_claim if claim.metric.metric.kind == "accuracy" else comparison_claim
        return say(summary, claim.metric, claim.other, claim.comparison, k)
    if k in SENTENCES:
        return SENTENCES[k](summary, claim)
    if k == m.FAILED:
        return _failed_row(summary, claim) if claim.rows else failed_group(claim.group, claim.count)
    if k == m.ONLY_ONE:
        return f"Only {claim.group.label} ran successfully: nothing to compare"
    if k == m.INSUFFICIENT:
        return insufficient(claim.count, summary.alpha)
    if k == m.NOISY:
        return noisy(summary, claim.noise)
    if k == m.CONTENDED:
        return contended(claim.contended)
    if k == m.OUTLIER:
        return outlier(claim.outliers)
    return ADVICE if k == m.ADVICE else "No successful runs: nothing to compare"  # NOTHING_RAN


def flops_note(e: m.Efficiency) -> str:
    """How achieved FLOP/s is made: counted FLOPs (not measured) over the measured steady step; the modelled
    intensity."""
    flops, matmul = fmt.count(e.flops_per_step, "FLOP"), fmt.count(e.matmul_per_step, "FLOP")
    return (f"Achieved FLOP/s: FLOPs of a full-batch step counted from the workload spec ({flops}, {matmul} of it "
            "matmul; not measured) / the measured steady median step time. "
            f"Modelled arithmetic intensity {fmt.sig(e.intensity)} FLOP/B ({fmt.count(e.bytes_per_step, 'B')} per "
            "step, a modelled lower bound of memory traffic).")


def peak_name(framework: str) -> str:
    """A framework's name beside its peak (numpy's BLAS is measured in fp32, not as the float64 reference)."""
    return "NumPy" if framework == "numpy" else display_name(framework)


def when(p: m.PeakUsed) -> str:
    """When a peak was measured, e.g. ``2026-12-03 10:29 UTC, stored``."""
    return (p.measured_at or "?")[:16].replace("T", " ") + " UTC" + (", stored" if p.reused else "")


def rate(p: m.PeakUsed, precision: str) -> str:
    """A framework's peak rate with its matmul efficiency and flag, e.g. ``120 GFLOP/s (57%, low)``."""
    if precision not in p.gflops:
        return "not measured"
    share = p.efficiency.get(precision)
    return f"{fmt.sig(p.gflops[precision])} GFLOP/s" + (
        f" ({fmt.sig(100 * share)}%{', low' if precision in p.low else ''})" if share is not None else "")


def peak_flags(p: m.PeakUsed) -> list[str]:
    """What to know about how a framework's peak was measured: low after a second worker, contended."""
    flags = []
    if p.low:
        flags.append(f"{'/'.join(p.low)} below {LOW:.0%} of the machine peak"
                     + (" after a second measurement" if p.measured_again else ""))
    elif p.measured_again:
        flags.append(f"measured twice (below {LOW:.0%} once)")
    if p.contended is not None:
        flags.append(f"contended: other processes took {p.contended:.0%} of its CPUs")
    return flags


CONTENDED_PEAK = ("A contended machine peak is lower than this machine gives when quiet, so every % of peak over it "
                  "reads high: 'isobench peak --force' on a quiet machine measures it again.")


def machine_peak(peaks: m.Peaks) -> str:
    """The machine peak per precision, e.g. ``fp32 328 GFLOP/s by TensorFlow, bf16 474 GFLOP/s by TensorFlow
    (contended)``, and what a contended one means."""
    return ", ".join(f"{x.precision} {fmt.sig(x.gflops)} GFLOP/s by {peak_name(x.framework)}"
                     + " (contended)" * x.contended for x in peaks.machine)


def nominal(peaks: m.Peaks) -> str:
    """The nominal peak with its derivation and caveats, "not derivable" with why, or "" where not recorded."""
    n = peaks.nominal
    if not n:
        return ""
    if not n.get("gflops"):
        return f"Nominal peak: not derivable ({n.get('reason')})."
    rates = ", ".join(f"{x} {fmt.sig(g)} GFLOP/s" for x, g in n["gflops"].items())
    return (f"Nominal peak ({n.get('cpu') or 'this CPU'}, from /proc/cpuinfo): {rates} = {n['derivation']}; caveats: "
            + "; ".join(n.get("caveats", ())) + ".")


def peak_note(e: m.Efficiency) -> str:
    """Which measured peak % of peak divides by (the machine peak), each framework's matmul efficiency, the nominal
    peak, or why there is none."""
    peaks = e.peaks
    if not peaks.machine:
        why = "; ".join(f"{peak_name(p.framework)}: {p.error}" for p in peaks.frameworks if p.error) or \
            "'isobench peak' measures it; runs take it unless --no-peak"
        return f"% of peak: not measured in this session ({why})."  # --no-peak, numpy only, or a Ray cluster
    rates = "; ".join(f"{peak_name(p.framework)} " + ", ".join(f"{x} {rate(p, x)}" for x in p.gflops)
                      + f" ({'; '.join([when(p)] + peak_flags(p))})" for p in peaks.frameworks if p.gflops)
    failed = "".join(f"; {peak_name(p.framework)}: not measured ({p.error})" for p in peaks.frameworks if p.error)
    return (f"% of peak (MFU): matmul FLOP/s achieved / the machine peak, the best matmul rate any framework reached "
            f"on this {peaks.device} ({machine_peak(peaks)}): one denominator for every framework. Matmul efficiency, "
            f"each framework's own peak rate / the machine peak (below {LOW:.0%}: measured again, then 'low'): "
            f"{rates}{failed}. Keras runs have their backend's rate. "
            + (CONTENDED_PEAK + " " if any(x.contended for x in peaks.machine) else "") + nominal(peaks)).rstrip()


def energy_note(e: m.Efficiency) -> str:
    if not e.energy_sources:
        return f"Energy: not measured ({'; '.join(e.energy_reasons)}); never estimated."
    return (f"Energy per sample: joules of the training loop (per-epoch evaluations included) from "
            f"{', '.join(e.energy_sources)} / training samples"
            + (f"; not read: {'; '.join(e.energy_reasons)}" if e.energy_reasons else "") + ".")


def note(table: m.Table, n: m.Note) -> tuple[str, ...]:
    """A note under the table, as lines (the terminal keeps them; HTML and Markdown join them with spaces)."""
    if n.kind == m.DIFFERENCES:
        return (differences_note(list(n.metrics)),)
    if n.kind in (m.FLOPS, m.PEAK, m.ENERGY):
        return tuple(textwrap.wrap({m.FLOPS: flops_note, m.PEAK: peak_note, m.ENERGY: energy_note}[n.kind](n.efficiency),
                                   NOTE_WIDTH))
    if n.kind == m.TIME_TO_TRAINED:  # a measured figure inside: wrapped after it is filled in
        return tuple(textwrap.wrap(" ".join(NOTES[n.kind]).format(harness=harness(table.summary)), NOTE_WIDTH))
    return tuple(line.format(ci=fmt.ci(table.summary.level)) for line in NOTES[n.kind])


def harness(summary: Summary) -> str:
    """The harness's own cost, median over the workload's processes: what isobench's worker did before the framework
    import (time, resident memory) and between the measured phases."""
    def span(key: str, show) -> str | None:
        xs = [h[key].median for h in summary.harness.values() if key in h]
        low, high = (show(min(xs)), show(max(xs))) if xs else (None, None)
        return low if low == high else f"{low}-{high}"  # one figure where the range rounds to one
    before, rss, between = span("harness_s", fmt.sig), span("rss_before_import_bytes", fmt.size), \
        span("harness_between_s", fmt.sig)
    if before is None:
        return "the harness's own start-up (not recorded in this session)"
    return (f"the harness's start-up before the import ({before} s" + (f", {rss}" if rss else "")
            + ": interpreter, numpy, reading the inputs)"
            + (f" and its bookkeeping between phases ({between} s: weight check, gc freeze, per-epoch evaluations)"
               if between else ""))


def paragraphs(table: m.Table) -> list[str]:
    """Every note under the table as one paragraph."""
    return [" ".join(note(table, n)) for n in table.notes]


def parity_status(p: m.Parity) -> str:
    """The parity state in one line, e.g. ``"parity: PASSED"``."""
    return {m.PASSED: "parity: PASSED", m.PARITY_FAILED: "parity: FAILED", m.NOT_CHECKED: NOT_CHECKED,
            m.NOT_CHECKED_HERE: f"parity: not checked for {p.workload} in this session"}[p.state]


PARITY_HEAD = ("check", "tolerance")  # the parity table's first two columns; then one per cell
PARITY_VERDICT = "verdict"            # the row under the heads: each column's verdict, or how its worker ended


def parity_title(p: m.Parity) -> str:
    """The line above a parity table."""
    return (f"Parity on {p.workload}: each framework against a float64 numpy reference"
            + (f" (reference {p.reference})" if p.reference else "")
            + (" and against each other" if any(c.label == m.BETWEEN for c in p.columns) else ""))


def parity_verdict(c: m.ParityColumn) -> str:
    """A column's verdict: PASS, FAIL, or how its worker ended (CRASHED, TIMEOUT, ...)."""
    return c.status.upper() if c.status != OK else "PASS" if c.passed else "FAIL"


def parity_failure(c: m.ParityColumn) -> str:
    """Why a column's worker did not finish, one line (its verdict names the status)."""
    return c.error or "no error message"


def parity_value(v: m.ParityValue | None) -> str:
    """A cell of the parity table, e.g. ``2.32e-07 PASS``, ``1.2e-03 PASS (tolerance 5e-03)``; "" for none."""
    if v is None:
        return ""
    return f"{v.diff} {'PASS' if v.passed else 'FAIL'}" + (f" (tolerance {v.tolerance})" if v.tolerance else "")


def parity_end(p: m.Parity) -> str:
    """The line under a parity table."""
    return f"Parity {'PASSED' if p.state == m.PASSED else 'FAILED'} for {p.workload}"


def guarantee(r: PrivacyRecord) -> str:
    """A DP-SGD workload's guarantee in one line, e.g. ``DP-SGD: epsilon 2.04 at delta 1e-4 (PLD, dp-accounting
    0.6.0; RDP: 2.33), clip 1.0, noise 1.1, q 0.0223, 450 steps``: ``epsilon`` is the accountant's it names (the
    tighter), the other beside it; a session recorded before PLD names RDP alone. Shuffled batches say how they were
    accounted."""
    name, _, kind = r.accountant.rpartition(" ")
    accountant = f"{kind}, {name} {r.accountant_version}" if name and r.accountant_version else \
        r.accountant or "accountant unknown"
    other = {"PLD": r.epsilon_rdp, "RDP": r.epsilon_pld}.get(kind)
    if other is not None:
        accountant += f"; {'RDP' if kind == 'PLD' else 'PLD'}: {fmt.sig(other)}"
    return ("DP-SGD: " + (f"epsilon {fmt.sig(r.epsilon)} at delta {fmt.sci(r.delta, pad=False)} ({accountant})"
                          if r.epsilon is not None else "no noise, so no finite epsilon")
            + (f", clip {float(r.clip)}" if r.clip is not None else "") + f", noise {float(r.noise_multiplier)}, "
            f"q {fmt.sig(r.sampling_rate)}, {r.steps} steps" + (f"; {r.note}" if r.note else ""))


COST_NOTE = ("Cost of privacy: {private} (DP-SGD) against {base} (its non-private counterpart, same session), per "
             "framework:", "median of {private} vs median of {base} over ok processes, then {private} / {base} "
             "[{ci}, bootstrap over", "processes]; test accuracy: the difference in pp. {base} keeps its own optimizer "
             "settings: the private", "recipe against the usual non-private one, not clipping and noise alone.")


def cost_title(p: m.Privacy, level: float = 0.95) -> tuple[str, ...]:
    """The lines that introduce the cost-of-privacy table of ``p``."""
    return tuple(line.format(private=p.workload, base=p.counterpart, ci=fmt.ci(level)) for line in COST_NOTE)


# ---- isobench deploy -----------------------------------------------------------------------------------------

DEPLOY_HEAD = ("path", "prec", "batch", "n")  # the deploy table's first columns; then one per metric, then parity
COLUMN_HEADS = {"cold_start_s": "cold start", "latency_p50_s": "p50", "latency_p90_s": "p90", "latency_p99_s": "p99",
                "throughput_samples_s": "throughput", "artifact_bytes": "size", "peak_rss_bytes": "RSS",
                "test_accuracy": "accuracy", "test_loss": "loss", "max_qps": "max QPS", "samples_per_s": "samples/s",
                "accuracy": "accuracy"}
DLOGIT_HEAD = "max |dlogit|"  # the deploy table's last column: the logit difference to the reference
DEPLOY_NOTE = (
    "Medians over serving processes (n ok; one fresh process each), ± the robust spread (1.4826 x MAD) as % of the "
    "median (accuracy: in pp). Cold start: the process's spawn to its first result, at the smallest batch size it "
    "serves (\"-\" at the others). Latency: one synchronous call at the batch size, perf_counter_ns, after "
    "warm-up; throughput: samples/s. Size: the artifact file that serves the batch size, on disk (in sessions stored "
    "before serving records had it: the whole exported artifact). RSS: the serving "
    "process's peak (VmHWM). Accuracy and loss: the served model on the whole test split. max |dlogit|: largest "
    "logit difference to the float64 reference (fp32 rows: pass/FAIL against the tolerance; int8 rows: accuracy "
    "change against the same path's fp32 instead).")
HEADLINES = {m.FASTEST: "Fastest at batch {b}", m.SMALLEST: "Smallest artifact at batch {b}"}
BOUND = f"{100 * INT8_ACCURACY_BOUND:g} pp"


def deploy_rule(summary: DeploySummary) -> str:
    """The deployment verdict's rule in a few sentences, with ``summary``'s level and alpha."""
    return (f"A row is claimed faster, or its artifact smaller, than another only when the {100 * summary.level:g}% "
            "bootstrap interval of the ratio of medians (serving processes resampled) excludes 1 and a two-sided "
            f"Mann-Whitney U test gives p < {summary.alpha:g}, which needs at least {min_repeats(summary.alpha)} ok "
            "processes per row; rows whose fp32 logits missed their tolerance are in no comparison. The verdict names, "
            "per batch size, the fastest row against the next fastest, the smallest artifact against the next "
            f"smallest and the best int8 trade: of the int8 rows within {BOUND} of their fp32 accuracy, the one with "
            "the largest p50-latency gain over its fp32 row, else the largest size gain.")


def column_head(c: d.Column) -> str:
    return COLUMN_HEADS.get(c.metric.name, title(c.metric.name))


def figure(s: DeployRowSummary, c: d.Column) -> str:
    """A row's cell in a figure column: its median in the column's unit with its spread; "-" without a value (the
    cold start of a batch size served after the first)."""
    st = s.stats.get(c.metric.name)
    return "-" if st is None else fmt.figure(st, c.metric.kind, c.unit, c.spread)


def parity_cell(s: DeployRowSummary) -> str:
    """The largest logit difference of a row: against its tolerance (fp32), or with its accuracy change (int8)."""
    if s.max_abs_logit_diff is None:
        return "-"
    diff = f"{s.max_abs_logit_diff:.1e}"
    if s.row.quantize != "none":
        change = f"acc {fmt.signed(s.accuracy_change, fmt.pp)} pp vs fp32" if s.accuracy_change is not None else "int8"
        return f"{diff} ({change})"
    return f"{diff} {'pass' if s.parity else 'FAIL'} (tol {s.tolerance:.1e})" if s.tolerance is not None else diff


def row_error(s: DeployRowSummary) -> str:
    """Why a row has no figures: its export's reason, else its first failed process's."""
    if s.export is not None and not s.export.ok:
        return f"export {s.export.status}: {s.export.error}"
    return f"{s.failed[0].status}: {s.failed[0].error}" if s.failed else "not measured"


def row_head(s: DeployRowSummary) -> tuple[str, ...]:
    """A row's first cells (:data:`DEPLOY_HEAD`)."""
    return s.row.path, s.row.precision, str(s.row.batch_size), str(s.ok)


def weights_line(workload: str, info: dict) -> str:
    """Which weights every path of ``workload`` served: who trained them, when, and their fingerprint."""
    trained = (f"trained now in {info['train_time_s']:.1f} s" if info.get("trained_now") and
               info.get("train_time_s") is not None else "from the cache")
    return (f"{workload}: weights trained by {info.get('trained_by', '?')} ({trained}), fingerprint "
            f"{info.get('fingerprint', '?')}, the same file for every path")


def headline(summary: DeploySummary, claim: m.Claim) -> str:
    """A headline comparison of the deployment verdict: the best row against the next best (no claim when the rule
    does not allow one)."""
    head = HEADLINES[claim.role].format(b=claim.batch_size)
    settled = "" if claim.kind == m.BETTER else "no claim: "
    return f"{head}: {settled}{comparison_claim(summary, claim.metric, claim.other, claim.comparison, claim.kind)}"


def _parity(summary: DeploySummary, claim: m.Claim) -> str:
    if claim.kind == m.BEYOND_TOLERANCE:
        return (f"PARITY FAILED: {', '.join(s.row.label for s in claim.rows)}: served logits differ from the float64 "
                "reference beyond the tolerance; left out of the comparisons")
    if claim.kind == m.WITHIN_TOLERANCE:
        return f"Parity: every fp32 row ({len(claim.rows)}) within its logit tolerance of the float64 reference"
    return "Parity: no fp32 row was served"


def _trade(summary: DeploySummary, claim: m.Claim) -> str:
    """The best int8 trade: its accuracy change, then the two rows on p50 latency and on artifact size, the int8
    row's gains first."""
    t = claim.trade
    compared = sorted((ms for ms in (t.latency, t.size) if ms is not None and ms.comparisons),
                      key=lambda ms: ms.best != t.row)
    parts = [comparison_claim(summary, ms, other, c, m.claim_kind(ms, other)) for ms in compared
             for other, c in ms.comparisons.items()]
    return (f"Best int8 trade at batch {claim.batch_size}: {t.row.label}, accuracy "
            f"{fmt.signed(t.accuracy_change, fmt.pp)} pp against fp32 (within {BOUND}): " + "; ".join(parts))


def _no_trade(summary: DeploySummary, claim: m.Claim) -> str:
    head = f"Best int8 trade at batch {claim.batch_size}: none"
    if not claim.count:
        return f"{head}: no int8 row is within {BOUND} of its fp32 accuracy"
    rows = f"the {claim.count} int8 rows" if claim.count > 1 else "the int8 row"
    return (f"{head}: {rows} within {BOUND} of their fp32 accuracy ran no faster and were no smaller than their fp32 "
            "under the verdict rule")


def _failed_row(summary: DeploySummary, claim: m.Claim) -> str:
    return f"{claim.group.label}: {row_error(claim.rows[0])}; left out of the comparisons"


SENTENCES = {m.BEYOND_TOLERANCE: _parity, m.WITHIN_TOLERANCE: _parity, m.UNCHECKED: _parity,  # deployment's and
             m.TRADE: _trade, m.NO_TRADE: _no_trade}                                      # serving's own claims


def workers(results: ResultSet) -> str:
    """How many workers a deployment or serving session ran, e.g. ``9 deploy worker processes``."""
    n = len(results.deploys) + len(results.loads)
    return f"{n} worker processes (exports and load workers)" if results.is_serving else f"{n} deploy worker processes"


def all_comparisons(n: int) -> str:
    """Where the full verdict's ``n`` comparisons are (the terminal prints the summary)."""
    return (f"Every row against the fastest ({n} comparison{'s' * (n != 1)} of p50 latency and, above batch 1, "
            "throughput): isobench report --html PATH or --markdown PATH")


def runtime(p: d.PathSoftware) -> str:
    """The runtime a path served on with its version, e.g. ``onnxruntime 1.32.0``."""
    if p.runtime is None:
        return "not recorded"
    return f"{p.runtime} {' | '.join(p.runtime_versions)}" if p.runtime_versions else \
        f"{p.runtime} (version not recorded)"


def exporter(p: d.PathSoftware) -> str:
    """The exporters of a path's artifacts as they named themselves; a native path's weights file."""
    return ", ".join(p.exporters) or ("none: serves the weights file" if p.exported else "not recorded")


def versions(p: d.PathSoftware) -> str:
    """Other libraries' versions a path's exports recorded, e.g. ``onnx 1.23.2, onnxruntime 1.32.0``."""
    return ", ".join(f"{k} {v}" for k, v in p.versions) or "-"


FAILED_WORKER_HEAD = ("worker", "repeat", "status", "exit", "reason")  # a deploy or load worker that failed


def worker_cells(r: Record) -> tuple:
    """A failed deploy or load worker's cells (:data:`FAILED_WORKER_HEAD`): what it served, its repeat (1-based; "-"
    for an export), status, exit code or signal ("-": neither) and error."""
    return (r.spec.label, r.spec.repeat + 1 if r.spec.kind != EXPORT else "-", r.status,
            r.exit_code if r.exit_code is not None else r.signal if r.signal is not None else "-", r.error)


SOFTWARE_HEAD = ("path", "runtime", "exporter", "versions recorded at export")


def software_rows(sw: d.Software) -> list[tuple[str, ...]]:
    return [(p.path, runtime(p), exporter(p), versions(p)) for p in sw.paths]


def packages(sw: d.Software) -> str:
    """The installed versions the session recorded, e.g. ``torch 2.13.0+cpu, onnxruntime 1.32.0``."""
    return ", ".join(f"{k} {v}" for k, v in sw.packages.items()) if sw.packages else "not recorded"


def software_line(sw: d.Software) -> str:
    """The manifest in one line: every runtime and every exporter with its version."""
    runtimes = dict.fromkeys(runtime(p) if p.runtime else f"{p.path}: runtime not recorded" for p in sw.paths)
    exporters = dict.fromkeys(e for p in sw.paths for e in p.exporters)
    return (f"Software: runtimes {', '.join(runtimes) or 'not recorded'}; exporters "
            f"{', '.join(exporters) or 'none (native paths serve the weights file)'}"
            + (f"; LoadGen {loadgen(sw)}" if sw.serving else ""))


def loadgen(sw: d.Software) -> str:
    """A serving session's LoadGen with its version, e.g. ``mlcommons-loadgen 6.0.17``."""
    return f"{d.LOADGEN} {sw.loadgen}" if sw.loadgen else "not recorded"


# ---- isobench deploy --scenario ------------------------------------------------------------------------------

SERVING_HEAD = ("path", "prec", "batching", "n", "VALID")  # a serving table's first columns; then one per figure
ANSWERS_HEAD = "answers"  # then the answers checked and, as in the deployment table, the largest logit difference
SCENARIO_TITLES = {
    "server": "server (Poisson arrivals; max QPS: the largest target LoadGen judged VALID under {bound})",
    "offline": "offline (every sample issued at once)",
    "single-stream": "single-stream (one query of one sample at a time)",
    "multi-stream": "multi-stream (one query of 8 samples at a time)"}
SERVING_NOTE = (
    "Medians over the load workers whose run LoadGen judged VALID (n: ok processes, one fresh process each; VALID: "
    "how many of them; an INVALID run is no result, as in MLPerf), ± the robust spread (1.4826 x MAD) as % of the "
    "median (accuracy: in pp); the scenario's headline figure (server: max QPS; offline: samples/s; single- and "
    "multi-stream: p99) then the 95% bootstrap interval of its median over processes. Latency: LoadGen's, from a "
    "query's scheduled issue to its completion. Server: at the max QPS, the completed samples/s and the latency "
    "percentiles of that run. Answers: every answer given under load, each checked against the float64 reference "
    "logits of its sample (fp32: pass/FAIL against the tolerance); accuracy: of those answers. RSS: the load "
    "worker's peak (VmHWM).")


def scenario_title(summary: LoadSummary) -> str:
    """The line above a scenario's table, e.g. ``seed-mlp server (Poisson arrivals; ...): one value per load
    worker``."""
    return (f"{summary.workload} {SCENARIO_TITLES[summary.scenario].format(bound=bound(summary))}: one value per "
            "load worker")


def serving_rule(summary: LoadSummary) -> str:
    """The serving verdict's rule in a few sentences, with ``summary``'s level and alpha."""
    return (f"Each scenario's rows are compared on one figure: the server's max QPS under the p99 bound, offline "
            f"samples/s, single- and multi-stream p99 latency (the tail a user waits for; MLPerf's multi-stream "
            f"figure, and a bound on its single-stream p90). The best row is set against every other, and a path "
            f"measured with and without dynamic batching against itself, by the ratio of medians over VALID load "
            f"workers with a {100 * summary.level:g}% bootstrap interval (processes resampled) and a two-sided "
            f"Mann-Whitney U test: a difference is claimed only when the interval excludes 1 and p < {summary.alpha:g},"
            f" which needs at least {min_repeats(summary.alpha)} VALID processes per row. Rows with a wrong answer "
            "are in no comparison.")


def load_row_head(s: LoadRowSummary) -> tuple[str, ...]:
    """A serving row's first cells (:data:`SERVING_HEAD`)."""
    return s.row.path, s.row.precision, s.row.batching, str(s.ok), f"{s.valid}/{s.ok}"


def invalid_reasons(records) -> str:
    """LoadGen's reasons for INVALID runs, each once."""
    return "; ".join(dict.fromkeys(r.metrics.reason or "no reason given" for r in records))


def load_row_error(s: LoadRowSummary) -> str:
    """Why a serving row has no figures: its export's or first failed worker's reason (a wrong answer first), else
    LoadGen's reasons for its INVALID runs."""
    if not s.ok or s.parity is False:
        return row_error(s)
    return f"every run INVALID (LoadGen: {invalid_reasons(s.invalid)})"


def load_cells(t: d.DeployTable, s: LoadRowSummary) -> list[str]:
    """A serving row's cells: its head, each figure in its column's unit, the answers and the logit difference; a
    row without figures: its head and why (:func:`load_row_error`)."""
    if not s.valid or s.parity is False:
        return [*load_row_head(s), load_row_error(s)]
    return [*load_row_head(s), *(figure(s, c) + headline_interval(s, c) for c in t.columns), f"{s.answers:,}",
            parity_cell(s)]


def headline_interval(s: LoadRowSummary, c: d.Column) -> str:
    """After the scenario's headline figure, the 95% bootstrap interval of its median: `` [12.1-15.3k/s]``; else
    nothing (other columns, a single process)."""
    iv = s.headline_ci if c.metric.name == HEADLINE[s.row.scenario] else None
    if iv is None or not iv.resampled:
        return ""
    return f" [{fmt.sig(iv.low / c.unit[1])}-{fmt.sig(iv.high / c.unit[1])}{c.unit[0]}]"


def load_head(t: d.DeployTable) -> list[str]:
    return [*SERVING_HEAD, *map(column_head, t.columns), ANSWERS_HEAD, DLOGIT_HEAD]


def load_rows(t: d.DeployTable) -> list[list[str]]:
    """Every row of a serving table (:func:`load_cells`), framework by framework."""
    return [load_cells(t, s) for _, rows in t.frameworks for s in rows]


def _invalid(summary: LoadSummary, claim: m.Claim) -> str:
    k, reasons = len(claim.records), invalid_reasons(claim.records)
    if summary.scenario == "server":
        return (f"{claim.group.label}: in {k} of {claim.count} processes LoadGen judged no target QPS VALID under "
                f"{bound(summary)} ({reasons}); left out of its figures")
    return f"{claim.group.label}: LoadGen judged {k} of {claim.count} runs INVALID ({reasons}); left out of its figures"


def _early_stopping(summary: LoadSummary, claim: m.Claim) -> str:
    text = claim.records[0].metrics.early_stopping
    found = sv.supported(text)
    backed = " and ".join(f"{p:g}th" for p in found) + f" percentile{'s' * (len(found) > 1)}" if found else \
        "no percentile"
    return (f"{claim.group.label}: LoadGen's early stopping did not back the {title(HEADLINE[summary.scenario])} in "
            f"{len(claim.records)} of {claim.count} VALID runs: it supported the {backed} (\"{text}\"); the figure "
            "shown is the measured one")


def answers(claim: m.Claim) -> str:
    """Every answer given under load in a workload's scenarios, checked: all within tolerance, or the wrong ones."""
    if not claim.rows:
        return (f"Answers: all {claim.count:,} answers given under load were checked against the float64 reference; "
                "every fp32 answer within its logit tolerance")
    wrong = ", ".join(f"{s.row.label} {s.row.scenario} ({s.wrong_answers:,})" for s in claim.rows)
    return (f"WRONG ANSWERS: {sum(s.wrong_answers for s in claim.rows):,} of the {claim.count:,} answers given under "
            f"load differ from the float64 reference beyond the tolerance, in {wrong}: left out of the comparisons")


def batching(summary: LoadSummary, claim: m.Claim) -> str:
    """A path's rows with dynamic batching and without on the scenario's headline figure."""
    ms, c = claim.metric, claim.comparison
    path = replace(claim.other, batching="off").label
    name = title(ms.metric.name) + qualifier(summary, ms.metric.name)
    est, interval = estimate(summary, ms, c)
    if claim.kind == m.TOO_FEW:
        return (f"{path}: too few repeats to tell whether dynamic batching changed the {name} ({est}, "
                f"n={c.n_b} and {c.n_a})")
    if claim.kind != m.BETTER:
        return (f"{path}: dynamic batching made no significant difference to the {name} ({est}, {interval}, "
                f"{fmt.p_value(c.p_value)})")
    raised = (ms.best.batching == "dynamic") == ms.metric.higher_is_better
    return (f"{path}: dynamic batching {'raised' if raised else 'lowered'} the {name} "
            f"{fmt.ratio(c.interval.estimate)}x ({interval}, {fmt.p_value(c.p_value)})")


SENTENCES |= {m.INVALID: _invalid, m.EARLY_STOPPING: _early_stopping}
