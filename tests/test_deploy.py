"""isobench deploy without any framework: the numpy reference path (float64 forward of the trained weights) stands in
for a runtime. Results model, store and JSON round trip, statistics and verdict on known data, the table, the failure
cases (missing runtime, truncated artifact, runtime crash) and the command end to end. Timings are never asserted."""
import json
from dataclasses import replace

import numpy as np
import pytest

from isobench.backends import deploy
from isobench.cli import main
from isobench.config import DeployChoices, resolve_deploy
from isobench.errors import UserError
from isobench.report import deploy as report_deploy, model, words
from isobench.report.terminal import render_deploy, render_deploy_table
from isobench.results import (CRASHED, FAILED, OK, UNAVAILABLE, DeployMetrics, DeployRecord, DeploySpec, ResultSet)
from isobench.runner import deploy as runner_deploy
from isobench.runner.session import run_session
from isobench.stats import NO_CHANGE, REGRESSION, compare_sessions, summarize_deploy
from isobench.store import Store

FAST = dict(batch_sizes="2", quantize="none", repeats=2, calls=5)


def choices(workloads=(), frameworks=None, **kw) -> DeployChoices:
    return DeployChoices(workloads=list(workloads), frameworks=frameworks, **kw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One weights cache for the module: the seed-mlp weights are trained once (numpy reference)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch, cache):
    monkeypatch.setenv("ISOBENCH_CACHE", str(cache))


def serving(path: str, quantize: str, batch: int, repeat: int, p50_ms: float, acc: float = 0.9,
            diff: float = 1e-7, tol: float | None = 1e-4, status: str = OK, cold: bool = True,
            size: int | None = None) -> DeployRecord:
    """A serving record; ``cold`` False: a batch size served after the process's first (no cold start); ``size``:
    the file that served it (None: a session stored before serving records had one)."""
    lat = [p50_ms * 1e-3 * f for f in (0.9, 1.0, 1.0, 1.1, 2.0)]
    m = DeployMetrics(cold_start_s=1.5 + repeat * 0.1 if cold else None, load_s=0.01, first_call_s=0.001,
                      warmup_calls=20, latencies_s=lat, latency_p50_s=p50_ms * 1e-3, latency_p90_s=p50_ms * 1.1e-3,
                      latency_p99_s=p50_ms * 2e-3, throughput_samples_s=batch / (p50_ms * 1e-3),
                      peak_rss_bytes=100 * 2**20, test_accuracy=acc, test_loss=0.3, max_abs_logit_diff=diff,
                      logit_tolerance=tol, artifact_bytes=size)
    return DeployRecord(DeploySpec("seed-mlp", path, quantize, batch, repeat, 2), status,
                        metrics=m if status == OK else None, error=None if status == OK else "worker killed by signal SIGSEGV")


def export(path: str, quantize: str = "none", status: str = OK, error: str | None = None) -> DeployRecord:
    return DeployRecord(DeploySpec.export("seed-mlp", path, quantize, 2), status, error=error,
                        metrics=DeployMetrics(export_s=0.5, artifact_bytes=150_000, details={"opset": 18})
                        if status == OK else None)


def known_results() -> ResultSet:
    """Two paths at batch 1 and 8, four processes each: fast/x twice as fast as slow/y; slow/y int8 1 pp lower."""
    recs = [export("fast/x"), export("slow/y"), export("slow/y", "int8"), export("fast/x", "int8", UNAVAILABLE,
                                                                                   "fast/x offers no int8 quantization")]
    for r in range(4):
        for b in (1, 8):
            recs += [serving("fast/x", "none", b, r, 1.0 + 0.01 * r), serving("slow/y", "none", b, r, 2.0 + 0.02 * r),
                     serving("slow/y", "int8", b, r, 1.5 + 0.01 * r, acc=0.89, diff=0.05, tol=None)]
    recs.append(serving("slow/y", "none", 1, 4, 2.0, status=CRASHED))
    return ResultSet(config={"command": "deploy", "workloads": ["seed-mlp"], "paths": ["fast/x", "slow/y"],
                             "batch_sizes": [1, 8], "repeats": 4, "threads": 2},
                     environment={"cpu_model": "test"}, deploys=recs,
                     weights={"seed-mlp": {"trained_by": "numpy", "fingerprint": "abc123"}}, created_at="2026-12-03T10:00:00")


def served_now() -> list[DeployRecord]:
    """Records as a serving process leaves them now: every batch size from one process (the cold start at the
    first only), each with the size of the file serving it. fast/x is the fastest; slow/y int8 has the smallest
    files and runs 1.34x faster than slow/y, 1 pp less accurate; fast/x int8 is faster still but 5 pp less accurate."""
    recs = [export(p, q) for p, q in (("fast/x", "none"), ("fast/x", "int8"), ("slow/y", "none"), ("slow/y", "int8"))]
    for r in range(4):
        for b in (1, 8):
            recs += [serving("fast/x", "none", b, r, 1.0 + 0.01 * r, cold=b == 1, size=150_000 + b),
                     serving("fast/x", "int8", b, r, 0.5 + 0.01 * r, acc=0.85, diff=0.1, tol=None, cold=b == 1,
                             size=60_000 + b),
                     serving("slow/y", "none", b, r, 2.0 + 0.02 * r, cold=b == 1, size=100_000 + b),
                     serving("slow/y", "int8", b, r, 1.5 + 0.01 * r, acc=0.89, diff=0.05, tol=None, cold=b == 1,
                             size=40_000 + b)]
    return recs


def test_deploy_results_round_trip_json_and_database(tmp_path):
    results = known_results()
    again = ResultSet.from_dict(json.loads(json.dumps(results.to_dict())))
    assert again.deploys == results.deploys and again.weights == results.weights and again.is_deploy
    with Store(tmp_path / "r.db", create=True) as store:
        sid = store.save(results)
        loaded = store.load(sid)
        assert [(s.ok + s.failed, s.parity_passed) for s in store.sessions()] == [(len(results.deploys), True)]
    assert loaded.deploys == results.deploys and loaded.weights == results.weights
    assert loaded.deploys[5].metrics.latencies_s == results.deploys[5].metrics.latencies_s  # raw samples kept


def test_statistics_and_full_verdict_on_known_data():
    summary, = summarize_deploy(known_results().deploys)
    rows = {(s.row.path, s.row.quantize, s.row.batch_size): s for s in summary.rows}
    assert rows["slow/y", "none", 1].ok == 4 and len(rows["slow/y", "none", 1].failed) == 1
    assert rows["slow/y", "int8", 8].accuracy_change == pytest.approx(-0.01)
    assert rows["fast/x", "none", 1].parity is True and rows["slow/y", "int8", 1].parity is None
    assert words.row_error(rows["fast/x", "int8", 1]) == "export unavailable: fast/x offers no int8 quantization"
    # the size of a session stored before serving records had their own: the export's, once per ok process
    assert rows["slow/y", "none", 1].stats["artifact_bytes"].values == (150_000,) * 4
    latency = summary.metrics[1]["latency_p50_s"]
    assert latency.best.path == "fast/x" and latency.favourable
    assert all(c.significant and c.interval.estimate > 1 for c in latency.comparisons.values())
    assert latency.comparisons[rows["slow/y", "none", 1].row].interval.estimate == pytest.approx(2.0, rel=0.02)
    assert "throughput_samples_s" not in summary.metrics[1] and "throughput_samples_s" in summary.metrics[8]
    claims = report_deploy.comparisons(summary)
    assert [c.kind for c in claims[:2]] == [model.FAILED] * 2  # fast/x int8 at batch 1 and 8: never exported
    text = [words.sentence(summary, c) for c in claims]
    assert text[0] == ("fast/x int8 @1: export unavailable: fast/x offers no int8 quantization; left out of the "
                       "comparisons")
    assert any(t.startswith("fast/x @1 ran 2.00x faster than slow/y @1 (95% CI") for t in text)
    assert any(t.startswith("fast/x @8 served 2.00x the throughput of slow/y @8 (95% CI") for t in text)
    assert len([c for c in claims if c.comparison is not None]) == 6  # 2 others x (latency at 1, at 8, throughput)


def test_summary_verdict_names_the_fastest_the_smallest_and_the_best_int8_trade():
    summary, = summarize_deploy(served_now())
    claims = report_deploy.verdict(summary)
    assert [(c.kind, c.role, c.batch_size) for c in claims] == [(model.WITHIN_TOLERANCE, None, None)] + [
        x for b in (1, 8) for x in ((model.BETTER, model.FASTEST, b), (model.BETTER, model.SMALLEST, b),
                                    (model.TRADE, None, b))]
    fastest, smallest, trade = claims[1:4]
    # fast/x int8 is the fastest row, against fast/x (the next fastest); its interval comes with the claim
    assert (fastest.metric.best.label, fastest.other.label) == ("fast/x int8 @1", "fast/x @1")
    assert fastest.comparison.significant
    assert (smallest.metric.best.label, smallest.other.label) == ("slow/y int8 @1", "fast/x int8 @1")
    # fast/x int8 gains more (2x) but gives up 5 pp: the best trade within 1 pp is slow/y int8, by its latency
    assert trade.trade.row.label == "slow/y int8 @1" and trade.trade.within_bound
    assert trade.trade.latency.best == trade.trade.row
    text = [words.sentence(summary, c) for c in claims]
    assert text[0] == "Parity: every fp32 row (4) within its logit tolerance of the float64 reference"
    assert text[1] == "Fastest at batch 1: fast/x int8 @1 ran 1.97x faster than fast/x @1 (95% CI 1.91-2.03, p=0.029)"
    assert text[2] == ("Smallest artifact at batch 1: slow/y int8 @1 was 1.50x smaller than fast/x int8 @1 (95% CI "
                       "1.50-1.50, p=0.029)")
    assert text[3].startswith("Best int8 trade at batch 1: slow/y int8 @1, accuracy -1.0 pp against fp32 (within 1 "
                              "pp): slow/y int8 @1 ran 1.34x faster than slow/y @1 (95% CI 1.32-1.36, p=0.029)")
    assert text[3].endswith("slow/y int8 @1 was 2.50x smaller than slow/y @1 (95% CI 2.50-2.50, p=0.029)")
    # no int8 row within the bound: no trade to name
    far = [replace(r, metrics=replace(r.metrics, test_accuracy=0.5)) if r.spec.quantize == "int8" and r.metrics
           else r for r in served_now()]
    summary, = summarize_deploy(far)
    no_trade = [c for c in report_deploy.verdict(summary) if c.kind == model.NO_TRADE]
    assert [c.count for c in no_trade] == [0, 0]
    assert words.sentence(summary, no_trade[0]) == ("Best int8 trade at batch 1: none: no int8 row is within 1 pp of "
                                                    "its fp32 accuracy")


def test_too_few_processes_claim_nothing():
    recs = [export("fast/x"), export("slow/y")] + [serving(p, "none", 1, r, ms) for r in range(2)
                                                     for p, ms in (("fast/x", 1.0), ("slow/y", 2.0))]
    summary, = summarize_deploy(recs)
    claims = report_deploy.comparisons(summary)
    assert [c.kind for c in claims] == [model.TOO_FEW, model.INSUFFICIENT] and claims[1].count == 2
    assert words.sentence(summary, claims[1]).startswith("Too few repeats for a claim: with 2 ok processes")
    fastest = report_deploy.verdict(summary)[1]
    assert words.sentence(summary, fastest).startswith("Fastest at batch 1: no claim: fast/x @1 and slow/y @1: too few "
                                                       "repeats to compare p50 latency (ratio 2.00")


def test_table_from_known_data():
    results = known_results()
    summary, = summarize_deploy(results.deploys)
    t = report_deploy.table(summary)
    assert [fw for fw, _ in t.frameworks] == ["fast", "slow"]
    units = {c.metric.name: c.unit for c in t.columns}
    assert units["latency_p50_s"] == (" ms", 1e-3) and units["artifact_bytes"] == (" KiB", 2**10)
    table = render_deploy_table(t)
    lines = table.splitlines()
    assert lines[0] == "seed-mlp: deployment, one value per serving process"
    assert lines[1].split()[:6] == ["path", "prec", "batch", "n", "cold", "start"]
    fast = next(ln for ln in lines if ln.strip().startswith("fast/x") and " fp32 " in ln and "  1  " in ln)
    assert "1.02 ms ±1.5%" in fast and "146 KiB " in fast and "90.0% ±0.0" in fast and \
        "1.0e-07 pass (tol 1.0e-04)" in fast
    int8 = next(ln for ln in lines if "slow/y" in ln and "int8" in ln and "  8  " in ln)
    assert "(acc -1.0 pp vs fp32)" in int8
    assert "export unavailable: fast/x offers no int8 quantization" in table
    text = render_deploy(results)
    assert "weights trained by numpy" in text and "crashed: worker killed by signal SIGSEGV" in text
    assert "Every row against the fastest (6 comparisons" in text


def test_cold_start_only_where_measured_and_each_batch_size_its_file():
    summary, = summarize_deploy(served_now())
    rows = {s.row.label: s for s in summary.rows}
    assert "cold_start_s" in rows["fast/x @1"].stats and "cold_start_s" not in rows["fast/x @8"].stats
    assert rows["fast/x @8"].stats["artifact_bytes"].median == 150_008  # its own file, not the export's
    t = report_deploy.table(summary)
    cold = next(c for c in t.columns if c.metric.name == "cold_start_s")
    assert words.figure(rows["fast/x @1"], cold) == "1.65 s ±9.0%" and words.figure(rows["fast/x @8"], cold) == "-"
    assert "at the smallest batch size it serves" in words.DEPLOY_NOTE


def test_a_failed_parity_fails_the_row():
    recs = [export("fast/x"), serving("fast/x", "none", 1, 0, 1.0, diff=0.5), export("slow/y"),
            serving("slow/y", "none", 1, 0, 2.0)]
    summary, = summarize_deploy(recs)
    assert summary.rows[0].parity is False and "FAIL" in render_deploy_table(report_deploy.table(summary))
    verdict = report_deploy.verdict(summary)
    assert verdict[0].kind == model.BEYOND_TOLERANCE and verdict[0].caveat
    assert words.sentence(summary, verdict[0]).startswith("PARITY FAILED: fast/x @1")
    # a quick wrong answer is in no comparison: slow/y is the only row compared
    assert list(summary.metrics[1]["latency_p50_s"].stats) == [summary.rows[1].row]
    assert verdict[1].kind == model.ONLY_ONE
    assert not recs[1].ok


def test_the_manifest_names_every_runtime_and_exporter_with_its_version():
    recs = served_now()
    for r in recs:
        path = r.spec.path
        r.environment.runtime, r.environment.runtime_version = ("onnxruntime", "1.32.0") if path == "fast/x" else \
            ("litert", "2.3.0")
        if r.spec.kind == "export":
            r.environment.exported = {"details": {"exporter": "tf2onnx 1.17.0 (TensorFlow 2.21.0)", "onnx": "1.23.2"}
                                      if path == "fast/x" else {"converter": "tf.lite.TFLiteConverter 2.21.0",
                                                                "ai_edge_litert": "2.3.0"}}
    results = ResultSet(config={"command": "deploy"}, environment={"packages": {"onnxscript": "0.5.6"}}, deploys=recs)
    sw = report_deploy.software(results)
    assert words.software_rows(sw) == [
        ("fast/x", "onnxruntime 1.32.0", "tf2onnx 1.17.0 (TensorFlow 2.21.0)", "onnx 1.23.2"),
        ("slow/y", "litert 2.3.0", "tf.lite.TFLiteConverter 2.21.0", "ai_edge_litert 2.3.0")]
    assert words.packages(sw) == "onnxscript 0.5.6"
    assert words.software_line(sw) == ("Software: runtimes onnxruntime 1.32.0, litert 2.3.0; exporters tf2onnx "
                                       "1.17.0 (TensorFlow 2.21.0), tf.lite.TFLiteConverter 2.21.0")
    assert render_deploy(results).startswith(words.software_line(sw))
    # a session that recorded none of it (the export's details hold the known_results' opset only)
    old = report_deploy.software(known_results())
    assert words.software_rows(old)[0] == ("fast/x", "not recorded", "none: serves the weights file", "-")
    assert words.packages(old) == "not recorded"


def test_two_deploy_sessions_compare_row_by_row_as_training_groups_do():
    a = known_results()
    b = known_results()
    for r in b.deploys:
        if r.metrics and r.metrics.latency_p50_s and r.spec.path == "slow/y" and r.spec.quantize == "none":
            r.metrics.latency_p50_s *= 1.5
    changes = {(gc.group.label, ch.metric.name): ch for gc in compare_sessions(a, b) for ch in gc.changes}
    assert changes["slow (y @1)", "latency_p50_s"].flag == REGRESSION
    assert changes["slow (y @1)", "latency_p50_s"].comparison.interval.estimate == pytest.approx(1.5)
    assert changes["fast (x @8)", "latency_p50_s"].flag == NO_CHANGE
    assert changes["slow (y @8, int8)", "test_accuracy"].comparison.kind == "difference"


def test_bad_input_is_one_line_exit_2(capsys):
    for argv in (["deploy", "--batch-sizes", "0"], ["deploy", "--paths", "nosuch"], ["deploy", "--quantize", "fp8"],
                 ["deploy", "--frameworks", "numpy", "--trained-by", "mxnet"], ["deploy", "no-such-workload"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("isobench: error: ") and len(err.strip().splitlines()) == 1


def test_paths_resolve_by_id_name_and_runtime():
    assert resolve_deploy(choices([], "numpy"))[0].paths == ["numpy/reference"]
    assert resolve_deploy(choices([], "numpy", paths="reference"))[0].paths == ["numpy/reference"]
    assert resolve_deploy(choices([], "numpy", paths="numpy"))[0].paths == ["numpy/reference"]
    with pytest.raises(UserError, match="no deployment path"):
        resolve_deploy(choices([], "numpy", paths="onnxruntime"))


def test_failures_are_rows_and_the_session_goes_on(monkeypatch, tmp_path):
    """A missing runtime (no worker), a truncated artifact (its serving fails) and a runtime that segfaults
    while loading (repeat 2 of the reference path): each a record with a one-line reason; the rest is measured."""
    ref = deploy.PATHS["numpy/reference"]
    monkeypatch.setitem(deploy.PATHS, "numpy/copy", replace(ref, name="copy"))
    monkeypatch.setitem(deploy.PATHS, "numpy/missing", replace(ref, name="missing", requires=("isobench_no_runtime",)))
    monkeypatch.setenv(runner_deploy.CORRUPT_ENV, "numpy/copy")
    monkeypatch.setenv("ISOBENCH_FAULT", "segfault:numpy/reference:1")
    config, _ = resolve_deploy(choices(["seed-mlp"], "numpy", paths="numpy/reference,numpy/copy,numpy/missing", **FAST))
    session = run_session(config, json_path=tmp_path / "d.json")
    got = {(r.spec.path, r.spec.batch_size, r.spec.repeat): r for r in session.results.deploys}
    assert session.status == "finished" and not session.ok
    assert got["numpy/missing", None, 0].status == UNAVAILABLE and \
        "isobench_no_runtime" in got["numpy/missing", None, 0].error
    assert got["numpy/reference", 2, 0].status == OK and got["numpy/reference", 2, 0].metrics.parity_passed
    assert got["numpy/reference", 2, 1].status == CRASHED and got["numpy/reference", 2, 1].error == \
        "worker killed by signal SIGSEGV"
    assert got["numpy/copy", None, 0].status == OK and got["numpy/copy", None, 0].spec.kind == "export"
    for r in (got["numpy/copy", 2, 0], got["numpy/copy", 2, 1]):
        assert r.status == FAILED and "\n" not in r.error
    assert len(ResultSet.read_json(tmp_path / "d.json").deploys) == len(session.results.deploys)
    assert "numpy/missing" in render_deploy(session.results)


def test_deploy_end_to_end_show_and_export(tmp_path, capsys, monkeypatch):
    db, out = tmp_path / "e.db", tmp_path / "e.json"
    argv = ["deploy", "seed-mlp", "--frameworks", "numpy", "--batch-sizes", "1,4", "--repeats", "1", "--calls", "5",
            "--quantize", "none,int8", "--db", str(db), "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "NumPy" in printed and "numpy/reference  fp32" in printed and "pass (tol" in printed
    doc = json.loads(out.read_text())
    serves = [d for d in doc["deploys"] if d["batch_size"]]
    assert {d["batch_size"] for d in serves} == {1, 4} and all(len(d["metrics"]["latencies_s"]) == 5 for d in serves)
    assert doc["weights"]["seed-mlp"]["fingerprint"]
    assert {a.dtype for a in deploy.load_weights(doc["weights"]["seed-mlp"]["file"]).values()} == {np.dtype("float32")}
    assert main(["show", "--db", str(db)]) == 0 and "numpy/reference" in capsys.readouterr().out
    assert main(["export", "--db", str(db), "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("session_id,workload,path,quantize,batch_size") and len(csv) == 1 + len(doc["deploys"])
    assert main(["export", "--db", str(db)]) == 0 and json.loads(capsys.readouterr().out)["deploys"] == doc["deploys"]
    # a failed fp32 parity fails the command, exactly as training parity does
    monkeypatch.setattr(deploy, "logit_tolerance", lambda w, q: 0.0 if q == "none" else None)
    assert main(argv[:-4] + ["--no-store"]) == 1
    captured = capsys.readouterr()
    assert "PARITY FAILED" in captured.out and "(from the cache)" in captured.err  # trained once, not again


def test_serving_helpers():
    from isobench.runner.deploy_worker import accuracy_and_loss, predict, wrap_batch
    x = np.arange(5.0)[:, None]
    assert wrap_batch(x, 4, 3)[:, 0].tolist() == [4.0, 0.0, 1.0]
    calls = []
    served = lambda b: (calls.append(len(b)), np.hstack([b, -b]))[1]  # noqa: E731 - a static batch of 2
    assert predict(served, x, 2)[:, 0].tolist() == x[:, 0].tolist() and calls == [2, 2, 2]
    acc, loss = accuracy_and_loss(np.log(np.array([[0.5, 0.5], [0.9, 0.1]])), np.array([1, 0]))
    assert acc == 0.5  # the tie goes to class 0: wrong; the second example right
    assert loss == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2)
