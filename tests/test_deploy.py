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
from isobench.report.deploy import render_deploy, render_deploy_table, render_deploy_verdict
from isobench.results import (CRASHED, FAILED, OK, UNAVAILABLE, DeployMetrics, DeployRecord, DeploySpec, ResultSet)
from isobench.runner import deploy as runner_deploy
from isobench.runner.session import run_session
from isobench.stats import summarize_deploy
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
            diff: float = 1e-7, tol: float | None = 1e-4, status: str = OK) -> DeployRecord:
    lat = [p50_ms * 1e-3 * f for f in (0.9, 1.0, 1.0, 1.1, 2.0)]
    m = DeployMetrics(cold_start_s=1.5 + repeat * 0.1, load_s=0.01, first_call_s=0.001, warmup_calls=20,
                      latencies_s=lat, latency_p50_s=p50_ms * 1e-3, latency_p90_s=p50_ms * 1.1e-3,
                      latency_p99_s=p50_ms * 2e-3, throughput_samples_s=batch / (p50_ms * 1e-3),
                      peak_rss_bytes=100 * 2**20, test_accuracy=acc, test_loss=0.3, max_abs_logit_diff=diff,
                      logit_tolerance=tol)
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


def test_statistics_and_verdict_on_known_data():
    summary, = summarize_deploy(known_results().deploys)
    rows = {(s.row.path, s.row.quantize, s.row.batch_size): s for s in summary.rows}
    assert rows["slow/y", "none", 1].ok == 4 and len(rows["slow/y", "none", 1].failed) == 1
    assert rows["slow/y", "int8", 8].accuracy_change == pytest.approx(-0.01)
    assert rows["fast/x", "none", 1].parity is True and rows["slow/y", "int8", 1].parity is None
    assert rows["fast/x", "int8", 1].error == "export unavailable: fast/x offers no int8 quantization"
    latency = [c for c in summary.comparisons if c.metric == "latency_p50_s" and c.other.path == "slow/y"
               and c.other.quantize == "none"]
    assert {c.best.path for c in latency} == {"fast/x"} and len(latency) == 2
    assert all(c.comparison.significant and c.comparison.interval.estimate == pytest.approx(2.0, rel=0.02)
               for c in latency)
    assert not any(c.metric == "throughput_samples_s" and c.best.batch_size == 1 for c in summary.comparisons)
    verdict = render_deploy_verdict(summary)
    assert verdict[0].startswith("Parity: every fp32 row (4) within")
    assert any(v.startswith("fast/x @1 ran 2.00x faster than slow/y @1 (p50 latency; 95% CI") for v in verdict)
    assert any("served 2.00x the throughput of slow/y @8" in v for v in verdict)


def test_too_few_processes_claim_nothing():
    recs = [export("fast/x"), export("slow/y")] + [serving(p, "none", 1, r, ms) for r in range(2)
                                                     for p, ms in (("fast/x", 1.0), ("slow/y", 2.0))]
    summary, = summarize_deploy(recs)
    assert render_deploy_verdict(summary)[1].startswith("No claim on 1 comparison of p50 latency or throughput: too "
                                                        "few serving processes per row (fewest 2)")


def test_table_from_known_data():
    results = known_results()
    summary, = summarize_deploy(results.deploys)
    table = render_deploy_table(summary)
    lines = table.splitlines()
    assert lines[0] == "seed-mlp: deployment, one value per serving process"
    assert lines[1].split() [:6] == ["path", "prec", "batch", "n", "cold", "start"]
    fast = next(ln for ln in lines if ln.strip().startswith("fast/x") and " fp32 " in ln and "  1  " in ln)
    assert "1.02 ±1.5%" in fast and "146 KiB" in fast and "90.0" in fast and "1.0e-07 pass (tol 1.0e-04)" in fast
    int8 = next(ln for ln in lines if "slow/y" in ln and "int8" in ln and "  8  " in ln)
    assert "(acc -1.0 pp vs fp32)" in int8
    assert "export unavailable: fast/x offers no int8 quantization" in table
    text = render_deploy(results)
    assert "weights trained by numpy" in text and "crashed: worker killed by signal SIGSEGV" in text


def test_a_failed_parity_fails_the_row():
    recs = [export("fast/x"), serving("fast/x", "none", 1, 0, 1.0, diff=0.5)]
    summary, = summarize_deploy(recs)
    assert summary.rows[0].parity is False and "FAIL" in render_deploy_table(summary)
    assert render_deploy_verdict(summary)[0].startswith("PARITY FAILED: fast/x @1")
    assert not recs[1].ok


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
