"""Comparing two sessions (isobench compare): flags in each metric's direction, untested deterministic gaps, the
set-up differences and the report's summary line; and the parity and history lines of stored sessions."""
from isobench.report.sessions import parity_line, parity_warning, render_comparison, render_history
from isobench.results import OK, Metrics, ParityResult, ResultSet, RunRecord, RunSpec
from isobench.stats import IMPROVEMENT, NO_CHANGE, REGRESSION, UNTESTED, compare_sessions
from isobench.store.compare import setup_differences

from test_store import PARITY  # the stored parity summary of a passing seed-mlp check, shared


def record(repeat: int, train=1.0, acc=0.877, rss=300 * 2**20) -> RunRecord:
    """A PyTorch run of seed-mlp whose step times are fixed: only training time, accuracy and memory vary."""
    m = Metrics(import_s=0.5, build_s=0.1, first_step_s=0.01, compile_s=0.009, step_time_median_s=1e-3,
                step_time_p10_s=0.9e-3, step_time_p90_s=1.1e-3, train_time_s=train, eval_s=0.01,
                throughput_samples_s=14380 / train, test_accuracy=acc, test_loss=0.41, epoch_losses=[2.3, 2.1],
                rss_after_import_bytes=200 * 2**20, train_peak_rss_bytes=rss, process_peak_rss_bytes=rss + 2**20,
                device_peak_bytes=None, steps=450, samples=14380)
    return RunRecord(RunSpec("seed-mlp", "torch", "eager", repeat, 2), OK, order=repeat, metrics=m)


def session(train, acc=0.877, rss=300 * 2**20, threads=2, packages=None) -> ResultSet:
    acc = acc if isinstance(acc, list) else [acc] * len(train)
    return ResultSet(config={"workloads": ["seed-mlp"], "frameworks": ["torch"], "repeats": 5, "threads": threads},
                     environment={"hostname": "vm", "cpu_model": "AMD EPYC",
                                  "packages": packages or {"torch": "2.13.0"}},
                     runs=[record(i, t, a, rss) for i, (t, a) in enumerate(zip(train, acc))],
                     created_at="2026-11-27T10:01:02+00:00", parity={"seed-mlp": ParityResult.from_dict(PARITY)})


def test_compare_flags_regressions_and_improvements_in_each_metric_direction():
    base = [1.00, 1.02, 0.98, 1.01, 0.99]
    a = session(base)
    b = session([1.5 * t for t in base], acc=0.9, rss=300 * 2**20, threads=1, packages={"torch": "2.14.0"})
    [gc] = compare_sessions(a, b)
    assert (gc.group.framework, gc.n_a, gc.n_b) == ("torch", 5, 5)
    flags = {c.metric.name: (c.flag, round(c.comparison.interval.estimate, 3)) for c in gc.changes}
    # accuracy 87.7% in all 5 repeats of A, 90.0% in all of B: deterministic, no spread to test the change against
    assert flags == {"train_time_s": (REGRESSION, 1.5), "step_time_median_s": (NO_CHANGE, 1.0),
                     "first_step_s": (NO_CHANGE, 1.0), "test_accuracy": (UNTESTED, round(0.9 / 0.877, 3)),
                     "train_peak_rss_bytes": (NO_CHANGE, 1.0)}
    text = render_comparison(a, b, [gc], setup_differences(a, b)).splitlines()
    assert text[-1] == (
        "1 regression: seed-mlp PyTorch (eager) training time; 0 improvements; 1 changed but untested, the same in "
        "every repeat of each session (seed-mlp PyTorch (eager) test accuracy; see docs/measurement.md, "
        "'Test accuracy'); 3 without a significant change")
    assert text[4].split() == ["training", "time", "1.00", "s", "->", "1.50", "s", "1.50x", "[1.46-1.55]", "p=0.0079",
                               "regression"]
    assert text[7].endswith("p=0.0079  changed, untested (one value per session)")
    # a deterministic memory figure that changes (a GPU allocator's peak, the same in every repeat) is a real change
    c = compare_sessions(a, session(base, rss=400 * 2**20))[0].changes
    assert {x.metric.name: x.flag for x in c}["train_peak_rss_bytes"] == REGRESSION
    [gc] = compare_sessions(a, session([t / 2 for t in base]))
    assert next(c for c in gc.changes if c.metric.name == "train_time_s").flag == IMPROVEMENT
    assert setup_differences(a, b) == [("threads", 2, 1), ("torch version", "2.13.0", "2.14.0")]


def test_compare_accuracy_direction_higher_is_better():
    ones = [1.0] * 5
    low, high = session(ones, acc=[0.80, 0.81, 0.79, 0.80, 0.82]), session(ones, acc=[0.90, 0.91, 0.89, 0.90, 0.92])
    [up], [down] = compare_sessions(low, high), compare_sessions(high, low)
    flag = {c.metric.name: c.flag for c in up.changes}["test_accuracy"]
    assert flag == IMPROVEMENT and {c.metric.name: c.flag for c in down.changes}["test_accuracy"] == REGRESSION


def test_history_and_parity_lines_read_well():
    from isobench.store.db import SessionInfo
    text = render_history([SessionInfo(1, "2026-11-27T10:01:02+00:00", "finished", ["seed-mlp"],
                                       ["torch", "jax"], 10, 0, True),
                           SessionInfo(12, "2026-11-28T08:00:00+00:00", "interrupted", ["seed-mlp"], ["numpy"], 2, 1,
                                       None),
                           SessionInfo(13, "2026-11-29T08:00:00+00:00", "finished", ["seed-mlp"], ["torch"], 9, 0,
                                       True, "deployment", ("torch/onnx",)),
                           SessionInfo(14, "2026-11-30T08:00:00+00:00", "finished", ["seed-mlp"], ["torch", "jax"], 17,
                                       0, True, "serving", ("torch/onnx", "jax/jit"), ("server", "offline"))])
    assert text.splitlines() == [
        "id  date (UTC)        kind                                        workloads  frameworks  runs ok/failed  "
        "parity  status",
        " 1  2026-11-27 10:01  training                                    seed-mlp   torch,jax   10/0            "
        "passed  finished",
        "12  2026-11-28 08:00  training                                    seed-mlp   numpy       2/1             "
        "-       interrupted",
        "13  2026-11-29 08:00  deploy torch/onnx                           seed-mlp   torch       9/0             "
        "passed  finished",
        "14  2026-11-30 08:00  serving server,offline: torch/onnx,jax/jit  seed-mlp   torch,jax   17/0            "
        "passed  finished"]
    passed = ParityResult.from_dict(PARITY)
    assert parity_line(passed) == "Parity seed-mlp: PASSED (max epoch-loss difference 9.4e-08, tolerance 1e-04)"
    assert parity_warning(passed) is None
    failed = ParityResult.from_dict({**PARITY, "cross": [{**PARITY["cross"][0], "max_abs_diff": 3e-3}]})
    assert parity_line(failed) == ("Parity seed-mlp: FAILED (between frameworks: epoch mean loss between frameworks "
                                   "3.0e-03 > tolerance 1e-04)")
    assert parity_warning(failed).startswith("WARNING: frameworks disagree beyond tolerance on seed-mlp: results "
                                             "compare different work")
    crashed = {**PARITY["frameworks"][0], "framework": "numpy", "mode": "reference", "status": "crashed",
               "error": "boom", "checks": []}
    broken = ParityResult.from_dict({**PARITY, "frameworks": [crashed]})
    assert parity_line(broken) == "Parity seed-mlp: FAILED (NumPy (float64 reference) (reference) crashed: boom)"
    assert parity_warning(broken) == ("WARNING: parity could not be checked on seed-mlp for NumPy (float64 reference) (reference): "
                                      "identical work is not proven")
