"""Terminal report: the exact table for a fixed summary, verdict sentences for known data, failures."""
from isobench.report import model, render_failures, render_table, render_verdict
from isobench.results import (CRASHED, OK, TIMEOUT, FrameworkParity, Metrics, ParityCheck, ParityResult, ResultSet,
                              RunRecord, RunSpec)
from isobench.stats import summarize

F = [1.0, 1.02, 0.98, 1.01, 0.99]  # per-repeat factor: +-1.5% robust spread
GROUPS = {  # (framework, mode): train s, steady step s, compile s, import s, training peak MiB, accuracy per repeat
    ("torch", "eager"): (2.31, 0.00231, 0.004, 0.9, 310, [0.877] * 5),
    ("tensorflow", "graph"): (4.32, 0.00432, 0.35, 2.1, 610, [0.877] * 5),
    ("jax", "jit"): (2.35, 0.00233, 0.21, 0.7, 1100, [0.880, 0.877, 0.883, 0.880, 0.880]),
}


def run(framework, mode, repeat, status=OK, **m):
    base = dict(import_s=1.0, build_s=0.1, first_step_s=0.5, compile_s=0.4, step_time_median_s=0.01,
                step_time_p10_s=0.009, step_time_p90_s=0.011, train_time_s=2.0, eval_s=0.05,
                throughput_samples_s=500.0, test_accuracy=0.9, test_loss=0.3, epoch_losses=[1.0, 0.5],
                rss_after_import_bytes=100 << 20, train_peak_rss_bytes=200 << 20, process_peak_rss_bytes=250 << 20,
                device_peak_bytes=None, steps=100, samples=1000)
    return RunRecord(RunSpec("seed-mlp", framework, mode, repeat, threads=2), status,
                     metrics=Metrics(**{**base, **m}))


def runs(groups=GROUPS, factors=F):
    return [run(fw, mode, i, train_time_s=t * f, step_time_median_s=st * f, compile_s=c * f,
                first_step_s=(c + st) * f, import_s=imp * f, throughput_samples_s=1000 / (t * f),
                train_peak_rss_bytes=int(mib * f) << 20, process_peak_rss_bytes=int(mib * 1.1 * f) << 20,
                rss_after_import_bytes=int(mib * 0.6 * f) << 20, test_accuracy=acc[i])
            for (fw, mode), (t, st, c, imp, mib, acc) in groups.items() for i, f in enumerate(factors)]


TIMED_OUT = RunRecord(RunSpec("seed-mlp", "tensorflow", "graph", 5, threads=2), TIMEOUT, error="exceeded 600 s")

TABLE = """\
seed-mlp: one value per worker process (n = ok processes)
                   PyTorch (eager)                   TensorFlow (graph)                  JAX (jit)
                   n=5                               n=5, 1 failed                       n=5
training time      2.31 s ±1.5%                best  4.32 s ±1.5%     1.87x [1.82-1.93]  2.35 s ±1.5%    1.02x [0.99-1.05]
steady step time   2.31 ms ±1.5%               best  4.32 ms ±1.5%    1.87x [1.82-1.93]  2.33 ms ±1.5%   1.01x [0.98-1.04]
first step         6.31 ms ±1.5%               best  354 ms ±1.5%     56.2x [54.5-57.9]  212 ms ±1.5%    33.6x [32.7-34.7]
compile cost       4.00 ms ±1.5%               best  350 ms ±1.5%     87.5x [84.9-90.2]  210 ms ±1.5%    52.5x [51.0-54.1]
throughput         433/s ±1.5%                 best  231/s ±1.5%      0.53x [0.52-0.55]  426/s ±1.5%     0.98x [0.95-1.01]
import             0.900 s ±1.5%  1.29x [1.25-1.32]  2.10 s ±1.5%     3.00x [2.91-3.09]  0.700 s ±1.5%                best
build              100 ms ±0.0%                best  100 ms ±0.0%     1.00x [1.00-1.00]  100 ms ±0.0%    1.00x [1.00-1.00]
evaluation         50.0 ms ±0.0%               best  50.0 ms ±0.0%    1.00x [1.00-1.00]  50.0 ms ±0.0%   1.00x [1.00-1.00]
test accuracy      87.7% ±0.0  -0.3 pp [-0.6, +0.0]  87.7% ±0.0    -0.3 pp [-0.6, +0.0]  88.0% ±0.0                   best
test loss          0.300 ±0.0%                 best  0.300 ±0.0%      1.00x [1.00-1.00]  0.300 ±0.0%     1.00x [1.00-1.00]
RSS after import   186 MiB ±1.6%               best  366 MiB ±1.6%    1.97x [1.92-2.03]  660 MiB ±1.6%   3.55x [3.46-3.66]
training peak RSS  0.303 GiB ±1.9%             best  0.596 GiB ±1.7%  1.97x [1.91-2.03]  1.07 GiB ±1.5%  3.55x [3.45-3.67]
process peak RSS   0.333 GiB ±1.7%             best  0.655 GiB ±1.5%  1.97x [1.91-2.03]  1.18 GiB ±1.6%  3.55x [3.45-3.66]
Cells: median ±robust spread (1.4826 MAD, % of the median) over ok processes, then the ratio to the best
column [95% CI, bootstrap over processes]. Accuracy: spread and difference in pp. Throughput: training samples/s.
Time to target: training time until the test metric first met the workload's target (checked after every epoch).
Test loss: mean cross-entropy in nats per example (per token for language models)."""


def test_render_table_exact():
    (s,) = summarize(runs() + [TIMED_OUT])
    assert render_table(s) == TABLE
    assert max(len(line) for line in TABLE.splitlines()) <= 125  # three columns fit


def test_verdict_claims_only_what_the_intervals_support():
    (s,) = summarize(runs() + [TIMED_OUT])
    assert render_verdict(s) == [
        "PyTorch (eager) trained 1.87x faster than TensorFlow (graph) (95% CI 1.82-1.93, p=0.0079)",
        "PyTorch (eager) and JAX (jit): no significant difference in training time "
        "(ratio 1.02, 95% CI 0.99-1.05, p=0.22)",
        "PyTorch (eager) ran steady-state steps 1.87x faster than TensorFlow (graph) (95% CI 1.82-1.93, p=0.0079)",
        "PyTorch (eager) and JAX (jit): no significant difference in steady step time "
        "(ratio 1.01, 95% CI 0.98-1.04, p=0.69)",
        "PyTorch (eager) paid 87.5x less compile cost than TensorFlow (graph) (95% CI 84.9-90.2, p=0.0079)",
        "PyTorch (eager) paid 52.5x less compile cost than JAX (jit) (95% CI 51.0-54.1, p=0.0079)",
        # p < 0.05 but the interval reaches 0: no claim
        "JAX (jit) and PyTorch (eager): no significant difference in test accuracy "
        "(88.0% vs 87.7%, 95% CI +0.0 to +0.6 pp, p=0.048)",
        "JAX (jit) and TensorFlow (graph): no significant difference in test accuracy "
        "(88.0% vs 87.7%, 95% CI +0.0 to +0.6 pp, p=0.048)",
        "PyTorch (eager) used 1.97x less training-peak memory than TensorFlow (graph) (95% CI 1.91-2.03, p=0.0079)",
        "PyTorch (eager) used 3.55x less training-peak memory than JAX (jit) (95% CI 3.45-3.67, p=0.0079)",
    ]


TWO = {k: GROUPS[k] for k in [("torch", "eager"), ("tensorflow", "graph")]}


def test_verdict_equal_accuracy_and_too_few_repeats():
    (s,) = summarize(runs(TWO, F[:3]))  # 3 vs 3: the rank test cannot reach p < 0.05
    v = render_verdict(s)
    assert "Both frameworks reached the same test accuracy (87.7%)" in v
    assert ("PyTorch (eager) and TensorFlow (graph): too few repeats to compare training time "
            "(ratio 1.87, 95% CI 1.80-1.95, n=3 and 3)") in v
    assert v[-1] == ("Too few repeats for a claim: with 3 ok processes in a group the rank test cannot reach "
                     "p < 0.05; run at least 4 repeats")
    assert not any("faster" in line for line in v)


def test_verdict_accuracy_difference_zero_compile_and_noise():
    groups = {("torch", "eager"): TWO["torch", "eager"][:2] + (0.0,) + TWO["torch", "eager"][3:5] + ([0.90] * 5,),
              ("tensorflow", "graph"): TWO["tensorflow", "graph"][:5] + ([0.88, 0.881, 0.879, 0.88, 0.88],)}
    rs = runs(groups)
    for r, f in zip(rs[5:], [1, 1.2, 0.85, 1.1, 0.9]):  # TensorFlow's training time: 16% robust CV
        r.metrics.train_time_s *= f
    (s,) = summarize(rs)
    v = render_verdict(s)
    assert "PyTorch (eager) trained 1.87x faster than TensorFlow (graph) (95% CI 1.56-2.29, p=0.0079)" in v
    assert ("PyTorch (eager)'s compile cost was 350 ms lower than TensorFlow (graph)'s "
            "(95% CI +343 to +357 ms, p=0.0079)") in v
    assert ("PyTorch (eager) reached higher test accuracy than TensorFlow (graph) "
            "(90.0% vs 88.0%, 95% CI +1.9 to +2.1 pp, p=0.0079)") in v
    assert v[-2:] == ["Noisy: TensorFlow (graph): training time varies by 16.5% between processes (robust CV above 5%)",
                      "To tighten the intervals: add repeats, quiet the machine (no other load, fixed CPU frequency) "
                      "or pin threads to dedicated cores"]
    table = render_table(s).splitlines()
    assert "compile cost: difference to the best instead of a ratio (some values are 0)" in table
    assert [line for line in table if line.startswith("compile cost ")] == [
        "compile cost       0 ms ±0.0%     best  350 ms ±1.5%  +350 ms [+343, +357]"]


def test_no_accuracy_claim_when_every_repeat_of_both_frameworks_gave_the_same_value():
    # lenet5 in fresh processes: each framework's 5 repeats are one deterministic training, 94.4% and 93.6%.
    # The rank test would call that significant (p=0.0079), but the repeats carry no spread to test against.
    groups = {k: v[:5] + (acc,) for (k, v), acc in zip(TWO.items(), ([0.944] * 5, [0.936] * 5))}
    v = render_verdict(summarize(runs(groups))[0])
    assert ("PyTorch (eager) and TensorFlow (graph): no claim on test accuracy (94.4% vs 93.6%, the same in every "
            "repeat: repeats of a deterministic training cannot show whether the gap is larger than rounding or the "
            "random draws alone make it; --seeds N compares trainings from N seeds)") in v
    assert not any("higher test accuracy" in line for line in v)
    assert "PyTorch (eager) trained 1.87x faster than TensorFlow (graph) (95% CI 1.82-1.93, p=0.0079)" in v


def test_failed_groups_and_single_processes():
    crashed = [RunRecord(RunSpec("seed-mlp", "tensorflow", "graph", i, threads=2), CRASHED, signal=9) for i in (0, 1)]
    (s,) = summarize(runs(TWO, F[:2])[:2] + crashed)
    assert "TensorFlow (graph)  \n" not in render_table(s)
    assert render_table(s).splitlines()[2:4] == ["                   n=2              n=0, 2 failed",
                                                 "training time      2.33 s ±1.5%     -"]
    assert render_verdict(s) == ["TensorFlow (graph): all 2 runs failed; left out of the comparison",
                                 "Only PyTorch (eager) ran successfully: nothing to compare"]
    (s,) = summarize(runs(TWO, F[:1]))  # one process each: no spread, no interval, no claim
    table = render_table(s).splitlines()
    assert table[3] == "training time      2.31 s     best  4.32 s       1.87x"
    assert table[-1] == "No spread or interval where a group has a single ok process"
    assert "PyTorch (eager) and TensorFlow (graph): too few repeats to compare training time (ratio 1.87, n=1 and 1)" \
        in render_verdict(s)


def test_render_failures_lists_every_failed_run_and_nothing_else():
    failed = RunRecord(RunSpec("other", "jax", "jit", 0, threads=2), "failed", exit_code=1,
                       stderr_tail="Traceback (most recent call last):\n  ...\nValueError: shapes differ\n\n")
    crashed = RunRecord(RunSpec("seed-mlp", "tensorflow", "graph", 1, threads=2), CRASHED, signal=9)
    text = render_failures(runs() + [TIMED_OUT, crashed, failed])
    assert text == ("Failed runs (3, excluded from the statistics):\n"
                    "  other  JAX (jit)              repeat 1  failed: ValueError: shapes differ\n"
                    "  seed-mlp  TensorFlow (graph)  repeat 2  crashed: killed by signal 9\n"
                    "  seed-mlp  TensorFlow (graph)  repeat 6  timeout: exceeded 600 s")
    assert render_failures(runs()) == ""
    (s,) = summarize(runs() + [TIMED_OUT, crashed])
    assert s.ok[s.groups[1]] == 5 and s.failed[s.groups[1]] == 2  # counted, not in the statistics


def test_row_unit_keeps_small_values_readable():
    tf = TWO["tensorflow", "graph"]
    groups = {**TWO, ("tensorflow", "graph"): tf[:2] + (1.26,) + tf[3:]}  # compile 1.26 s against 4 ms
    (s,) = summarize(runs(groups))
    rows = {line[:19].strip(): line[19:] for line in render_table(s).splitlines()}
    assert rows["first step"].startswith("6.31 ms ±1.5%  ") and "  1260 ms ±1.5%  " in rows["first step"]
    assert rows["training time"].startswith("2.31 s ±1.5%  ") and "  4.32 s ±1.5%  " in rows["training time"]


def test_the_report_model_types_claims_and_parity_states():
    groups = {k: v[:5] + (acc,) for (k, v), acc in zip(TWO.items(), ([0.944] * 5, [0.936] * 5))}
    rs = runs(groups)
    for r, f in zip(rs[5:], [1, 1.2, 0.85, 1.1, 0.9]):  # TensorFlow's training time: 16% robust CV
        r.metrics.train_time_s *= f
    (s,) = summarize(rs)
    kinds = [(c.kind, c.metric.metric.name if c.metric else None, c.caveat) for c in model.claims(s)]
    assert kinds == [(model.BETTER, "train_time_s", False), (model.BETTER, "step_time_median_s", False),
                     (model.BETTER, "compile_s", False), (model.UNTESTED, "test_accuracy", False),
                     (model.BETTER, "train_peak_rss_bytes", False), (model.NOISY, None, True),
                     (model.ADVICE, None, True)]
    t = model.table(s)
    assert t.heads == {g: "n=5" for g in s.groups} and [n.kind for n in t.notes] == [model.CELLS,
                                                                                     model.TIME_TO_TARGET,
                                                                                     model.TEST_LOSS]
    best, other = (t.rows[0].cells[g] for g in s.groups)
    assert (best.best, best.versus, other.best, other.comparison.kind) == (True, "best", False, "ratio")
    results = ResultSet(config={}, environment={}, runs=rs)
    assert model.parity(results, "seed-mlp").state == model.NOT_CHECKED
    results.parity = {"other": ParityResult("other", 0.9)}
    assert model.parity(results, "seed-mlp").state == model.NOT_CHECKED_HERE
    results.parity = {"seed-mlp": ParityResult("seed-mlp", 0.9, (FrameworkParity(
        "torch", "eager", OK, checks=(ParityCheck("initial logits", 0.1, 1e-5),)),))}
    p = model.parity(results, "seed-mlp")
    assert p.state == model.PARITY_FAILED and p.columns == (model.ParityColumn("PyTorch (eager)", OK, False),)
    assert p.rows == (model.ParityRow("initial logits", "1e-05", (model.ParityValue("1e-01", False),)),)
