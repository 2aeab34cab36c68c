"""The harness stays out of the figures (issue 19): a lean worker, the contention of its CPUs measured and flagged,
warm-up workers kept apart, outliers flagged and never dropped, the time to a trained model with the harness's own
cost stated. Fast: no framework is imported."""
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from isobench.cli import main
from isobench.measure.contention import CONTENTION_FRACTION, Contention, ContentionMeter, cpu_ticks, own_cpu_s
from isobench.measure.timing import Stopwatch, harness_between, summarise
from isobench.report import model, words
from isobench.report.sessions import render_results
from isobench.results import Cell, Metrics, ResultSet, RunRecord, RunSpec, WorkerSettings
from isobench.runner.inputs import write_inputs
from isobench.runner.local import run_cell
from isobench.runner.plan import make_plan
from isobench.stats import summarize
from isobench.workloads import get_workload

from test_stats import run

# what a worker must not have loaded before its framework: the session, statistics, configuration, reports, store
HARNESS = ("isobench.runner.session", "isobench.runner.adaptive", "isobench.runner.executor", "isobench.runner.local",
           "isobench.runner.parity", "isobench.runner.peak", "isobench.stats", "isobench.config", "isobench.report",
           "isobench.store", "isobench.cli")


def test_a_training_worker_loads_no_harness_before_its_framework(tmp_path, monkeypatch):
    """The worker writes the modules it holds at the framework import (ISOBENCH_MODULES), then stops there (an
    injected fault); no framework is imported at all."""
    monkeypatch.setenv("ISOBENCH_FAULT", "raise")
    monkeypatch.setenv("ISOBENCH_MODULES", str(tmp_path / "modules.json"))
    w = get_workload("seed-mlp")
    record = run_cell(RunSpec("seed-mlp", "torch", "eager", 0, 1), w, write_inputs(w, tmp_path / "in.npz"), tmp_path)
    assert record.status == "failed" and "injected fault" in record.error
    loaded = json.loads((tmp_path / "modules.json").read_text())
    assert "numpy" in loaded and "isobench.runner.worker" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("scipy", "sklearn", "matplotlib", "jinja2", "torch")]
    assert not [m for m in loaded if m.startswith(HARNESS)]


def test_the_cpus_are_pinned_before_numpy_loads():
    import subprocess
    code = "import sys; from isobench.measure.threads import pin; print('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def _stat(busy: int, steal: int = 0) -> str:
    # cpu0 and cpu1: user nice system idle iowait irq softirq steal
    return "cpu  0 0 0 0 0 0 0 0\n" + "".join(f"cpu{c} {busy} 0 0 500 7 0 0 {steal}\n" for c in (0, 1))


def test_cpu_ticks_sum_busy_time_and_steal_of_the_watched_cpus(tmp_path):
    (tmp_path / "stat").write_text(_stat(100, 3))
    assert cpu_ticks([0, 1], str(tmp_path / "stat")) == (200, 6)  # idle and iowait are not busy
    assert cpu_ticks([1], str(tmp_path / "stat")) == (100, 3)
    assert cpu_ticks([0], str(tmp_path / "missing")) is None
    assert own_cpu_s() > 0


def test_contention_is_other_processes_plus_steal_over_the_windows_cpu_time():
    quiet = Contention(window_s=2.0, cpus=2, other_cpu_s=0.04, steal_s=0.0)
    loaded = Contention(window_s=2.0, cpus=2, other_cpu_s=1.5, steal_s=0.1)
    assert quiet.fraction == pytest.approx(0.01) and not quiet.contended
    assert loaded.fraction == pytest.approx(0.4) and loaded.contended
    short = Contention(window_s=0.1, cpus=2, other_cpu_s=0.04, steal_s=0.0)  # 20%, but within 4 ticks' rounding
    assert short.fraction > CONTENTION_FRACTION and not short.contended
    meter = ContentionMeter()
    meter.start()
    c = meter.stop()
    assert c.cpus == len(os.sched_getaffinity(0)) and c.other_cpu_s >= 0 and c.to_dict()["contended"] in (True, False)


def _shared(r: RunRecord, fraction: float) -> RunRecord:
    return replace(r, metrics=replace(r.metrics, contention=fraction, other_cpu_s=fraction * 4, steal_cpu_s=0.0))


def test_runs_under_load_are_flagged_in_table_verdict_json_and_manifest():
    runs = [_shared(run("torch", "eager", i, train_time_s=t), f) for i, (t, f) in
            enumerate([(2.0, 0.4), (2.1, 0.02), (1.9, 0.3), (2.0, 0.01), (2.05, 0.5)])]
    runs += [_shared(run("jax", "jit", i), 0.01) for i in range(5)]
    (s,) = summarize(runs)
    [c] = s.contended
    assert (c.group.framework, c.count, c.total, c.fractions) == ("torch", 3, 5, (0.4, 0.3, 0.5))
    t = model.table(s)
    assert t.heads[c.group] == "n=5, 3 under load" and t.heads[s.groups[1]] == "n=5"
    sentences = [words.sentence(s, x) for x in model.claims(s)]
    assert sentences[0] == ("Under load: 3 of 5 PyTorch (eager) processes ran beside other load (other processes took "
                            "30-50% of their CPUs): their times are not comparable; rerun on a quiet machine")
    assert runs[0].to_dict()["contended"] is True and runs[1].to_dict()["contended"] is False
    load = dict(model.manifest(s, runs))["other load"]
    assert load[c.group] == "3 of 5 runs under load (others took 1.0-50% of the CPUs)"
    assert load[s.groups[1]] == "quiet (others took 1.0% of the CPUs)"


def test_an_outlier_is_flagged_with_its_repeat_and_kept_even_for_a_single_framework():
    runs = [run("torch", "eager", i, train_time_s=t) for i, t in enumerate([2.0, 2.1, 1.9, 2.0, 9.0])]
    (s,) = summarize(runs)
    assert s.metrics["train_time_s"].stats[s.groups[0]].n == 5  # never dropped
    [o] = [o for o in s.outliers if o.metric.name == "train_time_s"]
    assert (o.repeat, o.value, o.median) == (4, 9.0, 2.0)
    lines = [words.sentence(s, c) for c in model.claims(s)]
    assert lines[0] == "Only PyTorch (eager) ran successfully: nothing to compare"
    assert any(x.startswith("Outlier: PyTorch (eager) repeat 5: training time 9.00 s (median 2.00 s), more than 3 "
                            "robust spreads") for x in lines)
    assert any(x.startswith("Noisy: PyTorch (eager)") for x in lines)  # noise warned for one framework too
    steady = summarize([run("torch", "eager", i, train_time_s=2.0) for i in range(5)])[0]
    assert steady.outliers == ()  # a spread of 0 flags nothing equal


def test_warm_up_blocks_come_first_and_leave_the_measured_plan_unchanged():
    cells = [Cell("torch", "eager"), Cell("jax", "jit")]
    plan = make_plan(["seed-mlp"], cells, repeats=3, threads=1, seed=7, warmup=2)
    assert [s.repeat for s in plan[:4]] == sorted([-1, -1, -2, -2], reverse=True)
    assert all(s.warmup for s in plan[:4]) and not any(s.warmup for s in plan[4:])
    assert plan[4:] == make_plan(["seed-mlp"], cells, repeats=3, threads=1, seed=7)
    assert plan[0].repeat_label == "warm-up 1" and plan[4].repeat_label == "repeat 1"


def test_warm_up_records_are_stored_but_never_counted():
    runs = [run("torch", "eager", -1, train_time_s=50.0)] + [run("torch", "eager", i) for i in range(4)]
    (s,) = summarize(runs)
    assert s.ok[s.groups[0]] == 4 and s.metrics["train_time_s"].stats[s.groups[0]].max == 2.0
    results = ResultSet(config={}, environment={}, runs=runs)
    assert "warm-up" not in render_results(results) and ResultSet.from_dict(results.to_dict()).runs[0].warmup


def test_warm_up_workers_default_to_none_after_the_parity_check_and_one_without_it():
    from isobench.cli_args import build_parser, resolved
    parse = build_parser().parse_args
    assert resolved(parse(["run", "--frameworks", "numpy"]))[0].warmup == 0
    assert resolved(parse(["run", "--frameworks", "numpy", "--no-parity"]))[0].warmup == 1
    assert resolved(parse(["run", "--frameworks", "numpy", "--no-parity", "--warmup", "0"]))[0].warmup == 0


@pytest.mark.parametrize("argv, message", [
    (["run", "--warmup", "-1"], "--warmup: must be 0 or more, got -1"),
    (["run", "--warmup", "x"], "--warmup: expected a whole number, got 'x'"),
])
def test_bad_warmup_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_time_to_trained_model_is_import_build_and_training_and_the_harness_between_is_stated():
    clock = iter([0.0, 0.0, 1.0, 1.0, 1.5, 1.75, 1.75, 2.0, 2.0, 2.0, 2.5, 2.75, 2.75, 3.0, 3.0]).__next__
    watch = Stopwatch(clock)
    watch.phase("import", lambda: None)   # reads 0.0 (start), 0.0-1.0
    watch.phase("build", lambda: None)    # 1.0-1.5
    watch.start_epoch()                   # 1.75 (0.25 s of harness work before training)
    watch.step(True, lambda: None)        # 1.75-2.0
    watch.end_epoch()                     # 2.0
    watch.evaluate(lambda: None)          # 2.0-2.5 (a per-epoch evaluation)
    watch.start_epoch()                   # 2.75
    watch.step(True, lambda: None)        # 2.75-3.0
    watch.end_epoch()                     # 3.0: the end of training
    t = watch.timeline
    s = summarise(t, samples=64)
    assert s["time_to_trained_s"] == pytest.approx(1.0 + 0.5 + 0.5)  # import + build + training
    assert harness_between(t) == pytest.approx(3.0 - 2.0)             # 0.25 before, 0.5 evaluating, 0.25 after


def test_an_old_record_gets_its_time_to_trained_model_from_its_phases():
    m = run("torch", "eager", 0).metrics.__dict__
    old = {k: v for k, v in m.items() if k != "time_to_trained_s"}
    assert Metrics.from_dict(old).time_to_trained_s == pytest.approx(1.0 + 0.1 + 2.0)
    assert Metrics.from_dict({**old, "time_to_trained_s": None}).time_to_trained_s is None  # recorded as unknown


def test_the_harness_cost_is_stated_in_the_note_and_the_manifest():
    runs = [replace(run("torch", "eager", i, time_to_trained_s=3.0),
                    environment=WorkerSettings(harness_s=0.2, rss_before_import_bytes=36 << 20,
                                               harness_between_s=0.05)) for i in range(4)]
    (s,) = summarize(runs)
    t = model.table(s)
    assert t.rows[0].metric.metric.name == "time_to_trained_s"
    note = " ".join(words.note(t, model.Note(model.TIME_TO_TRAINED)))
    assert "Excluded: the harness's start-up before the import (0.200 s, 36 MiB" in note and "(0.0500 s:" in note
    assert dict(model.manifest(s, runs))["harness"][s.groups[0]] == \
        "0.200 s, 36 MiB before the import; 0.0500 s between phases"


def test_a_harness_range_that_rounds_to_one_figure_is_one_figure():
    runs = [replace(run(fw, "eager" if fw == "torch" else "jit", i, time_to_trained_s=3.0),
                    environment=WorkerSettings(harness_s=0.2 + (fw == "jax") * 0.1, harness_between_s=0.05,
                                               rss_before_import_bytes=(35 << 20) + (fw == "jax") * 1000))
            for fw in ("torch", "jax") for i in range(4)]
    (s,) = summarize(runs)
    note = " ".join(words.note(model.table(s), model.Note(model.TIME_TO_TRAINED)))
    assert "(0.200-0.300 s, 35 MiB:" in note and "35 MiB-35 MiB" not in note


def test_the_database_flags_runs_under_load_and_keeps_unmeasured_ones_null(tmp_path):
    from isobench.store import Store
    runs = [_shared(run("torch", "eager", 0), 0.4), _shared(run("torch", "eager", 1), 0.01), run("torch", "eager", 2)]
    with Store(tmp_path / "r.db", create=True) as store:
        sid = store.save(ResultSet(config={}, environment={}, runs=runs))
        flags = store.conn.execute('SELECT contended FROM runs WHERE session_id = ? ORDER BY repeat', (sid,)).fetchall()
        assert [f[0] for f in flags] == [1, 0, None]
        assert [r.contended for r in store.load(sid).runs] == [True, False, None]
