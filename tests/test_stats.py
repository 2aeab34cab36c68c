"""Statistics: robust summaries, bootstrap intervals, the rank test, the verdict rule and summarize()."""
import math

import numpy as np
import pytest

from isobench.results import DIVERGED, OK, TIMEOUT, Metrics, RunRecord, RunSpec
from isobench.stats import (CLAIMED, METRIC, NO_DIFFERENCE, TOO_FEW, UNTESTED, Comparison, Group, Interval,
                            bootstrap_diff_ci, bootstrap_median_ci, bootstrap_paired_ratio_ci, bootstrap_ratio_ci,
                            compare, describe, mann_whitney_p, min_p_value, min_repeats, outcome, summarize,
                            summarize_metric)


def run(framework, mode, repeat, status=OK, workload="w", **m):
    """A hand-built record: every metric set, overridable by keyword."""
    base = dict(import_s=1.0, build_s=0.1, first_step_s=0.5, compile_s=0.4, step_time_median_s=0.01,
                step_time_p10_s=0.009, step_time_p90_s=0.011, train_time_s=2.0, eval_s=0.05,
                throughput_samples_s=500.0, test_accuracy=0.9, test_loss=0.3, epoch_losses=[1.0, 0.5],
                rss_after_import_bytes=100 << 20, train_peak_rss_bytes=200 << 20, process_peak_rss_bytes=250 << 20,
                device_peak_bytes=None, steps=100, samples=1000)
    return RunRecord(RunSpec(workload, framework, mode, repeat, threads=2), status, metrics=Metrics(**{**base, **m}))


def test_describe_uses_the_median_and_a_robust_spread():
    s = describe([1.0, 2.0, 3.0, 4.0, 100.0])  # one outlier process
    assert (s.n, s.median, s.min, s.max) == (5, 3.0, 1.0, 100.0)
    assert s.spread == pytest.approx(1.4826)  # MAD = 1: the outlier does not inflate it
    assert s.cv == pytest.approx(1.4826 / 3)
    assert describe([2.5]).spread == 0 and describe([2.5]).cv == 0


def test_bootstrap_ratio_ci_covers_the_true_ratio_and_excludes_one():
    rng = np.random.default_rng(0)  # true medians 2 and 1, +-3% spread, in run order
    a, b = 2.0 * rng.permutation(np.linspace(0.97, 1.03, 8)), rng.permutation(np.linspace(0.97, 1.03, 8))
    iv = bootstrap_ratio_ci(a, b, seed=3)
    assert iv.resampled and iv.level == 0.95
    assert iv.low < 2.0 < iv.high and iv.low > 1
    assert iv.estimate == pytest.approx(np.median(a) / np.median(b))
    assert bootstrap_ratio_ci(a, b, seed=3) == iv  # deterministic given the seed
    assert bootstrap_ratio_ci(a, b, level=0.5, seed=3).high < iv.high  # a narrower level, a narrower interval
    c = compare(a, b)
    assert c.significant and c.p_value == pytest.approx(2 / math.comb(16, 8))


def test_identical_distributions_give_no_significant_difference():
    rng = np.random.default_rng(1)
    a, b = 1 + 0.05 * rng.standard_normal(8), 1 + 0.05 * rng.standard_normal(8)
    c = compare(a, b)
    assert c.interval.low < 1 < c.interval.high and c.p_value > 0.05
    assert not c.significant and not c.insufficient


def test_single_process_gives_a_point_and_no_claim():
    iv = bootstrap_ratio_ci([3.0], [1.0, 1.2, 0.8])
    assert iv == Interval(3.0, 3.0, 3.0, 0.95, resampled=False)
    c = compare([3.0], [1.0, 1.2, 0.8])
    assert c.insufficient and not c.significant


def test_difference_interval_is_in_metric_units():
    iv = bootstrap_diff_ci([0.90, 0.91, 0.92, 0.90, 0.91], [0.85, 0.86, 0.85, 0.87, 0.86])
    assert iv.estimate == pytest.approx(0.05) and 0 < iv.low <= 0.05 <= iv.high


def test_mann_whitney_p_for_known_samples():
    assert mann_whitney_p([19, 22, 16, 29, 24], [20, 11, 17, 12]) == pytest.approx(1 / 9)  # scipy docs: U=17
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)  # exact: 2 / C(6, 3)
    assert mann_whitney_p([1, 1, 2, 2], [3, 3, 4, 4]) == pytest.approx(2 / 70)  # ties: every split enumerated
    assert mann_whitney_p([0.9] * 4, [0.9] * 4) == 1.0
    # a group of one with ties (an interrupted session: one process finished here, two there); scipy's
    # permutation test refuses groups of one, so every split is enumerated
    assert mann_whitney_p([0.9], [0.9, 0.95]) == 1.0
    assert mann_whitney_p([3.0], [1.0, 1.0]) == pytest.approx(2 / 3)  # the smallest p with 1 and 2 processes


def test_summarize_an_interrupted_session_with_a_group_of_one():
    runs = [run("torch", "eager", 0), run("torch", "eager", 1, train_time_s=2.2), run("jax", "jit", 0)]
    (s,) = summarize(runs)  # equal accuracies in groups of 2 and 1: no crash, no claim
    acc = s.metrics["test_accuracy"]
    assert all(not c.significant for c in acc.comparisons.values())


def test_min_p_value_and_min_repeats():
    assert min_p_value(3, 3) == pytest.approx(0.1) and min_p_value(4, 4) == pytest.approx(2 / 70)
    assert min_p_value(1, 1) == 1.0 and min_repeats(0.05) == 4 and min_repeats(0.01) == 5


@pytest.mark.parametrize("low, high, p, n, significant", [
    (1.5, 2.5, 0.01, 5, True),
    (0.9, 2.5, 0.01, 5, False),   # interval includes 1
    (1.5, 2.5, 0.06, 5, False),   # rank test not below alpha
    (1.5, 2.5, 0.01, 3, False),   # 3 vs 3 cannot reach p < 0.05: insufficient
])
def test_verdict_rule_needs_both_the_interval_and_the_rank_test(low, high, p, n, significant):
    c = Comparison("ratio", Interval(2.0, low, high, 0.95, True), p, n, n, alpha=0.05)
    assert c.significant is significant


def test_summarize_picks_best_and_ratios_and_excludes_failures():
    runs = []
    for i, f in enumerate([1.0, 1.02, 0.98, 1.01, 0.99]):
        runs += [run("torch", "eager", i, train_time_s=2.0 * f, test_accuracy=0.90, train_peak_rss_bytes=int(3e8 * f)),
                 run("tensorflow", "graph", i, train_time_s=4.0 * f, test_accuracy=0.92,
                     train_peak_rss_bytes=int(4e8 * f)),
                 run("jax", "jit", i, train_time_s=3.0 * f, test_accuracy=0.91, train_peak_rss_bytes=int(1.5e8 * f),
                     compile_s=0.0)]
    runs += [run("tensorflow", "graph", 5, status=DIVERGED, train_time_s=0.1),  # excluded despite its metrics
             RunRecord(RunSpec("w", "jax", "jit", 5, threads=2), TIMEOUT)]
    (s,) = summarize(runs)
    torch, tf, jax = Group("w", "torch", "eager"), Group("w", "tensorflow", "graph"), Group("w", "jax", "jit")
    assert s.groups == (torch, tf, jax) and s.workload == "w"
    assert s.ok == {torch: 5, tf: 5, jax: 5} and s.failed == {torch: 0, tf: 1, jax: 1}
    t = s.metrics["train_time_s"]
    assert t.best == torch and t.kind == "ratio" and t.stats[tf].n == 5 and t.stats[tf].min == pytest.approx(3.92)
    assert t.comparisons[tf].interval.estimate == pytest.approx(2.0) and t.comparisons[jax].interval.estimate == 1.5
    assert all(c.significant for c in t.comparisons.values())
    assert s.metrics["test_accuracy"].best == tf and s.metrics["test_accuracy"].kind == "difference"
    assert s.metrics["test_accuracy"].comparisons[torch].interval.estimate == pytest.approx(-0.02)
    assert s.metrics["train_peak_rss_bytes"].best == jax
    assert s.metrics["compile_s"].best == jax and s.metrics["compile_s"].kind == "difference"  # zero: no ratio
    assert s.metrics["throughput_samples_s"].best == torch  # all equal: the first column
    assert "device_peak_bytes" not in s.metrics  # None on the CPU
    assert s.noisy == () and not s.insufficient and torch.label == "PyTorch (eager)"


def test_summarize_flags_noise_and_too_few_repeats_per_workload():
    runs = [run("torch", "eager", i, workload=w, train_time_s=t)
            for w in ("a", "b") for i, t in enumerate([1, 1.2, 0.9])]
    runs += [run("jax", "jit", i, workload="a", train_time_s=1.0) for i in range(3)]
    a, b = summarize(runs)
    assert (a.workload, b.workload) == ("a", "b") and a.groups[0].label == "PyTorch (eager)"
    assert [(x.group.framework, x.metric.name) for x in a.noisy] == [("torch", "train_time_s")]
    assert a.noisy[0].cv == pytest.approx(1.4826 * 0.1)
    assert a.insufficient  # 3 vs 3
    assert b.metrics["train_time_s"].comparisons == {} and not b.insufficient  # one group: nothing to compare


def test_paired_ratio_is_the_median_over_pairs_with_an_interval_over_pairs():
    ci = bootstrap_paired_ratio_ci([1.1, 2.2, 3.3, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.estimate == pytest.approx(1.1)  # pairs 1.1, 1.1, 1.1, 1.0, 1.0
    assert ci.low == pytest.approx(1.0) and ci.high == pytest.approx(1.1) and ci.resampled
    ci = bootstrap_paired_ratio_ci([1.01, 2.04, 3.0, 4.08], [1.0, 2.0, 3.0, 4.0])
    assert ci.estimate == pytest.approx(1.015) and 1.0 <= ci.low <= ci.estimate <= ci.high <= 1.02 + 1e-12
    one = bootstrap_paired_ratio_ci([2.0], [1.0])
    assert (one.estimate, one.low, one.high, one.resampled) == (2.0, 2.0, 2.0, False)


def test_median_interval_resamples_one_groups_processes():
    x = [1.0, 1.1, 0.9, 1.05, 0.95, 1.2]
    iv = bootstrap_median_ci(x, seed=2)
    assert iv.estimate == pytest.approx(np.median(x)) and iv.low < iv.estimate < iv.high and iv.resampled
    assert bootstrap_median_ci(x, seed=2) == iv and bootstrap_median_ci([2.0]) == Interval(2.0, 2.0, 2.0, 0.95, False)
    # the paired interval is the median interval of the ratios, with the same draws
    assert bootstrap_paired_ratio_ci([2 * v for v in x], [2.0] * 6, seed=2) == bootstrap_median_ci(x, seed=2)


def test_outcome_applies_the_verdict_rule_per_comparison():
    runs = [run(fw, mode, i, train_time_s=t * f, test_accuracy=acc, workload="w")
            for i, f in enumerate([1.0, 1.02, 0.98, 1.01, 0.99])
            for fw, mode, t, acc in (("torch", "eager", 1.0, 0.9), ("tensorflow", "graph", 2.0, 0.8),
                                     ("jax", "jit", 1.005, 0.9))]
    (s,) = summarize(runs)
    tf, jax = Group("w", "tensorflow", "graph"), Group("w", "jax", "jit")
    train, acc = s.metrics["train_time_s"], s.metrics["test_accuracy"]
    assert (outcome(train, tf), outcome(train, jax)) == (CLAIMED, NO_DIFFERENCE)
    assert outcome(acc, tf) == UNTESTED  # 90% and 80% in every repeat: a gap its repeats cannot test
    (few,) = summarize([r for r in runs if r.spec.repeat < 3])
    assert outcome(few.metrics["train_time_s"], tf) == TOO_FEW


def test_one_way_to_compare_groups_oriented_for_the_deployment_verdict():
    """summarize_metric compares training groups and deployment rows alike; ``favourable`` (the deployment's verdict)
    orients a metric where higher is better as best / other, and leaves the others as training has them."""
    slow, fast = [100.0, 101.0, 99.0, 100.5], [200.0, 202.0, 198.0, 201.0]
    rate = METRIC["throughput_samples_s"]
    training = summarize_metric(rate, {"a": slow, "b": fast})
    deployment = summarize_metric(rate, {"a": slow, "b": fast}, favourable=True)
    assert training.best == deployment.best == "b" and deployment.favourable
    assert training.comparisons["a"].interval.estimate == pytest.approx(0.5, rel=0.02)  # a / b, the table's ratio
    assert deployment.comparisons["a"].interval.estimate == pytest.approx(2.0, rel=0.02)  # b / a: "served 2x the"
    latency = METRIC["latency_p50_s"]
    times = {"a": [x * 1e-6 for x in fast], "b": [x * 1e-6 for x in slow]}
    assert summarize_metric(latency, times, favourable=True).comparisons == summarize_metric(latency, times).comparisons
