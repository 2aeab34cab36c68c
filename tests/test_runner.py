"""Runner behaviour with real worker processes, using the framework-free numpy reference backend."""
import dataclasses
import signal

import pytest

from isobench import config as defaults
from isobench import runner
from isobench.config import RunChoices, resolve_run
from isobench.measure import default_threads
from isobench.results import (CRASHED, DIVERGED, FAILED, OK, TIMEOUT, UNAVAILABLE, Cell, Metrics, ResultSet, RunRecord,
                              RunSpec)
from isobench.runner import RunConfig, iter_runs, make_plan, run_benchmark, run_session
from isobench.runner import runs as runs_module
from isobench.runner.adaptive import WATCHED, precision
from isobench.runner.inputs import write_inputs
from isobench.runner.local import run_cell
from isobench.workloads import get_workload


def test_plan_is_interleaved_in_seeded_blocks():
    cells = [Cell("torch", "eager"), Cell("tensorflow", "graph"), Cell("jax", "jit")]
    plan = make_plan(["seed-mlp"], cells, repeats=4, threads=1, seed=7)
    assert len(plan) == 12
    assert [s.repeat for s in plan] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3  # each repeat is one block
    assert plan == make_plan(["seed-mlp"], cells, repeats=4, threads=1, seed=7)
    orders = {tuple(s.framework for s in plan[i:i + 3]) for i in range(0, 12, 3)}
    assert len(orders) > 1  # shuffled inside blocks, not always the same framework first


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    return write_inputs(W, d / "inputs.npz")


W = get_workload("seed-mlp")


def _spec(repeat=0):
    return RunSpec(workload="seed-mlp", framework="numpy", mode="reference", repeat=repeat, threads=1)


def test_ok_run_has_every_metric_and_identical_input_fingerprints(inputs, tmp_path):
    r = run_cell(_spec(), W, inputs, tmp_path)
    assert r.status == OK, r.stderr_tail
    m = r.metrics
    assert len(m.epoch_losses) == 10 and m.epoch_losses[-1] < m.epoch_losses[0]
    assert m.steps == 450 and len(m.step_times_s) == 450 and m.samples == 14380
    assert 0 < m.step_time_p10_s <= m.step_time_median_s <= m.step_time_p90_s
    assert m.train_time_s >= sum(m.step_times_s)
    assert m.first_step_s == m.step_times_s[0]
    assert 0.8 <= m.test_accuracy <= 1.0
    assert m.rss_after_import_bytes > 10 * 2**20
    assert m.train_peak_rss_bytes is not None and 1.01 * m.process_peak_rss_bytes >= m.train_peak_rss_bytes
    assert m.process_peak_rss_bytes < 2**30  # the launcher keeps isobench's own memory out of ru_maxrss
    f = r.fingerprints
    assert f["loaded_weights"] == f["init_weights"] and f["data"] and f["orders"]
    assert r.environment["threads"]["affinity"] and r.environment["threads"]["env"]["OMP_NUM_THREADS"] == "1"
    # objects alive before the timed loop are frozen out of the collector (imports are thousands of objects)
    assert r.environment["gc_frozen_objects"] > 10_000


@pytest.mark.parametrize("fault,status", [("segfault", CRASHED), ("kill", CRASHED), ("exit", FAILED),
                                          ("raise", FAILED), ("nan", DIVERGED)])
def test_faults_become_failed_records(inputs, tmp_path, monkeypatch, fault, status):
    monkeypatch.setenv("ISOBENCH_FAULT", f"{fault}:numpy")
    r = run_cell(_spec(), W, inputs, tmp_path)
    assert r.status == status and r.metrics is None and r.error
    if fault == "segfault":
        assert r.signal == signal.SIGSEGV and "SIGSEGV" in r.error
    if fault == "exit":
        assert r.exit_code == 3 and "injected fault: exit 3" in r.stderr_tail
    if fault == "raise":
        assert "RuntimeError: injected fault" in r.error and "Traceback" in r.stderr_tail
    if fault == "nan":
        assert "step 3" in r.error


def test_hung_worker_is_killed_at_timeout(inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_FAULT", "hang")
    r = run_cell(_spec(), W, inputs, tmp_path, timeout=2.0)
    assert r.status == TIMEOUT and r.signal == signal.SIGKILL and 2.0 <= r.wall_s < 10


def test_crashed_worker_does_not_stop_the_others(monkeypatch):
    monkeypatch.setenv("ISOBENCH_FAULT", "segfault:numpy:1")  # only repeat 1 crashes
    rs = run_benchmark(RunConfig(workloads=["seed-mlp"], frameworks=["numpy"], repeats=3, threads=1), parity=False)
    assert sorted((r.spec.repeat, r.status) for r in rs.runs) == [(0, OK), (1, CRASHED), (2, OK)]


def test_missing_framework_is_recorded_unavailable_without_a_worker(monkeypatch):
    monkeypatch.setattr(runs_module, "is_installed", lambda b: b.name != "numpy")
    runs = list(iter_runs(RunConfig(workloads=["seed-mlp"], frameworks=["numpy"], repeats=2, threads=1)))
    assert [r.status for r in runs] == [UNAVAILABLE, UNAVAILABLE]
    assert "pip install" in runs[0].error and runs[0].wall_s is None


def test_per_epoch_evaluation_and_time_to_target(inputs, tmp_path):
    m = run_cell(_spec(), W, inputs, tmp_path).metrics
    assert len(m.epoch_test_accuracies) == len(m.epoch_test_losses) == len(m.epoch_train_s) == 10
    assert m.test_accuracy == m.epoch_test_accuracies[-1] and m.metric == "accuracy" and m.target == W.target
    first = next(i for i, a in enumerate(m.epoch_test_accuracies) if a >= W.target)
    assert m.time_to_target_s == m.epoch_train_s[first]  # training time only: evaluation is kept out
    assert m.epoch_train_s[-1] == pytest.approx(m.train_time_s)
    assert m.eval_total_s >= m.eval_s > 0 and m.best_test_metric == max(m.epoch_test_accuracies)


def test_target_not_reached_is_none_with_best_value(tmp_path):
    w = dataclasses.replace(W, target=0.999, epochs=2)
    path = write_inputs(w, tmp_path / "in.npz")
    m = run_cell(_spec(), w, path, tmp_path).metrics
    assert m.time_to_target_s is None and m.best_test_metric == max(m.epoch_test_accuracies) < 0.999
    assert len(m.epoch_losses) == 2


def test_the_python_api_has_the_command_lines_defaults():
    config, notes = resolve_run(RunChoices(frameworks="numpy"))
    assert config == RunConfig(workloads=[defaults.WORKLOAD], frameworks=["numpy"]) and notes == []
    assert (config.repeats, config.threads, config.timeout_s, config.seed, config.seeds) == \
        (defaults.REPEATS, default_threads(), defaults.TIMEOUT_S, defaults.SEED, defaults.SEEDS)
    adaptive, _ = resolve_run(RunChoices(frameworks="numpy", until_confident=True))
    assert (adaptive.target_width, adaptive.max_repeats) == (defaults.TARGET_WIDTH, defaults.MAX_REPEATS)


def test_run_benchmark_checks_parity_first_as_the_command_line_does():
    rs = run_benchmark(RunConfig(workloads=["seed-mlp"], frameworks=["numpy"], repeats=1, threads=1))
    assert rs.parity["seed-mlp"].passed and [r.status for r in rs.runs] == [OK]
    assert rs.config["threads"] == 1 and rs.session_id is None  # no store given: nothing recorded


def _timed(framework, repeat, train):
    """An ok record of ``framework`` whose training time is ``train`` s (steady step: a thousandth of it)."""
    m = Metrics(import_s=0.5, build_s=0.1, first_step_s=0.01, compile_s=0.0, step_time_median_s=train / 1000,
                step_time_p10_s=train / 1000, step_time_p90_s=train / 1000, train_time_s=train, eval_s=0.01,
                throughput_samples_s=1.0, test_accuracy=0.9, test_loss=0.4, epoch_losses=[1.0],
                rss_after_import_bytes=2**20, train_peak_rss_bytes=2**20, process_peak_rss_bytes=2**20,
                device_peak_bytes=None, steps=10, samples=10)
    mode = {"torch": "eager", "jax": "jit"}[framework]
    return RunRecord(RunSpec("seed-mlp", framework, mode, repeat, 1), OK, order=repeat, metrics=m)


def test_adaptive_rule_names_the_widest_interval_and_a_group_short_of_processes():
    tight = precision([_timed(f, i, t * (1 + 0.001 * i)) for i in range(5) for f, t in (("torch", 1), ("jax", 2))],
                      target_width=0.05)
    assert tight.confident and tight.width < 0.01 and tight.too_few is None
    assert (tight.widest.workload, tight.widest.of) == ("seed-mlp", "ratio") and tight.widest.metric in WATCHED
    few = precision([_timed(f, i, t) for i in range(2) for f, t in (("torch", 1), ("jax", 2))], target_width=0.05)
    assert not few.confident and (few.too_few.n, few.too_few.need) == (2, 4)
    loose = precision([_timed("torch", i, t) for i, t in enumerate([1.0, 1.5, 0.7, 1.2, 0.8])], target_width=0.05)
    assert not loose.confident and loose.width > 0.05  # one framework: its own median's interval
    assert (loose.widest.group.framework, loose.widest.metric, loose.widest.of) == ("torch", "train_time_s", "median")


class _Recorder:
    """A store that notes what a session writes (the SessionStore methods), in order."""
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, *args))
            return 7 if name == "create_session" else None
        return call


def test_a_session_writes_each_run_as_it_arrives_and_ends_finished(tmp_path):
    store, seen, path = _Recorder(), [], tmp_path / "runs.json"

    class Watch(runner.Watcher):
        def record(self, record):
            seen.append(("record", [c[0] for c in store.calls], path.exists()))

    config = RunConfig(workloads=["seed-mlp"], frameworks=["numpy"], repeats=2, threads=1)
    session = run_session(config, store=store, json_path=path, watcher=Watch())
    assert session.status == "finished" and session.ok and session.measured == session.todo == 2
    assert [c[0] for c in store.calls] == ["create_session", "set_parity", "add_record", "add_record", "finish_session"]
    assert store.calls[-1] == ("finish_session", 7, "finished") and session.results.session_id == 7
    assert seen[0] == ("record", ["create_session", "set_parity", "add_record"], True)  # kept before it is shown
    assert len(ResultSet.read_json(path).runs) == 2
