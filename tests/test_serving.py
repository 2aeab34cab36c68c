"""Serving under load (isobench deploy --scenario): bad input refused in one line, the load worker's figures on the
float64 reference path (no framework, short LoadGen runs), every answer checked (an injected wrong answer fails the
row), a worker that crashes under load is a failed row and the session goes on. Timings are never asserted."""
import os
import subprocess
import sys

import pytest

from isobench.cli import main
from isobench.results import CRASHED, FAILED, OK, ResultSet

pytest.importorskip("mlperf_loadgen")
QUICK = ["seed-mlp", "--frameworks", "numpy", "--quantize", "none", "--duration", "0.2", "--threads", "1",
         "--no-store"]


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "serving-cache"))


@pytest.mark.parametrize("argv, message", [
    (["--scenario", "server", "--latency-bound", "-1"], "--latency-bound: must be greater than 0 ms, got -1"),
    (["--scenario", "server", "--qps", "0"], "--qps needs rates above 0 queries per second"),
    (["--scenario", "server", "--concurrency", "0"], "--concurrency: must be at least 1, got 0"),
    (["--scenario", "burst"], "--scenario: unknown burst; choose from single-stream, multi-stream, offline, server"),
    (["--latency-bound", "5"], "--latency-bound applies to serving under load; give --scenario"),
    (["--scenario", "server", "--batching", "greedy"], "--batching: unknown greedy"),
    (["--scenario", "offline", "--batch-sizes", "4"], "--batch-sizes applies without --scenario"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    try:  # argparse's own checks exit; isobench's return the code
        code = main(["deploy", "seed-mlp", "--frameworks", "numpy", *argv])
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def deploy(tmp_path, *argv: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, ResultSet]:
    out = tmp_path / "s.json"
    p = subprocess.run([sys.executable, "-m", "isobench", "deploy", *QUICK, *argv, "--json", str(out)],
                       capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)
    return p, ResultSet.read_json(out)


def test_server_and_offline_under_loadgen_with_every_answer_checked(tmp_path):
    p, results = deploy(tmp_path, "--scenario", "server,offline", "--repeats", "1")
    assert p.returncode == 0, p.stderr
    assert results.is_serving and [r.spec.kind for r in results.deploys] == ["export"]
    by = {r.spec.scenario: r for r in results.loads}
    server, offline = by["server"].metrics, by["offline"].metrics
    assert server.max_qps > 0 and server.valid and len(server.trials) >= 2
    assert max(t.target_qps for t in server.trials if t.valid) == server.max_qps
    assert all(t.latency_p99_s is not None for t in server.trials)
    assert offline.samples_per_s > 0 and offline.max_qps is None
    for m in (server, offline):
        assert m.answers > 0 and m.wrong_answers == 0 and m.max_abs_logit_diff < m.logit_tolerance
        assert 0.8 < m.accuracy < 0.95 and m.settings["schedule_rng_seed"] == 2  # the session's seed (0) + 2


def test_a_wrong_answer_under_load_fails_the_row_in_one_line_and_a_crash_is_a_failed_row(tmp_path):
    p, results = deploy(tmp_path, "--scenario", "single-stream", "--repeats", "2",
                        env={"ISOBENCH_LOAD_WRONG": "numpy/reference", "ISOBENCH_FAULT": "segfault:numpy/reference:1"})
    assert p.returncode == 1
    first, crashed = sorted(results.loads, key=lambda r: r.spec.repeat)
    assert first.status == FAILED and first.metrics.wrong_answers == 1
    assert first.error.startswith("1 of ") and "answers under load differ from the float64 reference" in first.error
    assert "\n" not in first.error
    assert crashed.status == CRASHED and crashed.error == "worker killed by signal SIGSEGV"
    assert results.deploys[0].status == OK  # the export, and the session, went on


def test_an_offline_run_too_short_for_loadgen_is_run_again_with_a_larger_expected_rate(monkeypatch, tmp_path):
    """LoadGen judges an offline run INVALID when it ends before its minimum duration (the expected QPS was below
    what the server completed): that is a setting, not a result, so the run is repeated with a larger expected QPS
    (each run recorded); any other INVALID reason stands."""
    from isobench.results import Trial
    from isobench.runner import load_worker

    short = "Increase expected QPS so the loadgen pre-generates a larger (coalesced) query."
    outcomes, asked = [], []

    def fake_run(lg, server, n, settings, outdir):
        asked.append(settings["offline_expected_qps"])
        valid, reason = outcomes.pop(0)
        return Trial(None, valid, reason, "", 30_000.0, 1, 1.0, 2.0, 3.0)

    monkeypatch.setattr(load_worker, "run_loadgen", fake_run)
    outcomes[:] = [(False, short), (True, "")]
    trials = load_worker.run_offline(None, None, 10, {"offline_expected_qps": 10_000.0}, tmp_path)
    assert [t.valid for t in trials] == [False, True] and asked == [10_000.0, 37_500.0]  # 1.25 x the 30k completed
    outcomes[:], asked[:] = [(False, short)] * 5, []
    assert len(load_worker.run_offline(None, None, 10, {"offline_expected_qps": 40_000.0}, tmp_path)) == \
        load_worker.OFFLINE_TRIES and asked == [40_000.0, 80_000.0, 160_000.0]
    outcomes[:] = [(False, "Too few queries")]
    assert len(load_worker.run_offline(None, None, 10, {"offline_expected_qps": 1.0}, tmp_path)) == 1
