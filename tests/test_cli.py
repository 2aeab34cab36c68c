"""The command line as a user meets it: exit codes, one-line errors, the JSON record."""
import json
import os
import subprocess
import sys

import pytest

from isobench.results import SCHEMA_VERSION

REQUIRED_METRICS = ("train_time_s", "step_time_median_s", "first_step_s", "import_s", "test_accuracy",
                    "epoch_losses", "rss_after_import_bytes", "train_peak_rss_bytes", "process_peak_rss_bytes")


def isobench(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "isobench", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args,message", [
    (["run", "no-such-workload"], "unknown workload 'no-such-workload'; choose from: bert-base, dp-lenet5, dp-mlp, gpt-tiny, gpt2-small, lenet5"),
    (["run", "--frameworks", "mxnet"], "unknown framework 'mxnet'; choose from: torch, tensorflow, jax, "),
    (["run", "--frameworks", ","], "--frameworks is empty"),
    (["run", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (["run", "--repeats", "-3"], "argument --repeats: must be at least 1, got -3"),
    (["run", "--repeats", "many"], "argument --repeats: expected a whole number, got 'many'"),
    (["run", "--timeout", "0"], "argument --timeout: must be greater than 0"),
    (["run", "--threads", "4096"], "--threads 4096 exceeds the"),
    (["run", "--json", "/no/such/dir/out.json"], "--json: directory /no/such/dir does not exist"),
    (["run", "--seeds", "3", "--repeats", "2"], "--seeds 3 needs --repeats 3 or more"),
    (["run", "--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
    (["parity", "no-such-workload"], "unknown workload"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    p = isobench(*args)
    assert p.returncode == 2
    assert message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_list_shows_workloads_and_frameworks_with_versions():
    p = isobench("list")
    assert p.returncode == 0
    assert "seed-mlp" in p.stdout and "MLP 64-128-64-10" in p.stdout
    for name in ("torch", "tensorflow", "jax", "numpy"):
        assert f"  {name} " in p.stdout


def test_env_json_has_the_machine():
    env = json.loads(isobench("env", "--json").stdout)
    assert env["logical_cores"] >= 1 and env["affinity"] and env["python"].startswith("3.")
    assert "numpy" in env["packages"]


def test_help_explains_every_run_flag():
    out = isobench("run", "--help").stdout
    for flag in ("--frameworks", "--repeats", "--threads", "--timeout", "--json", "--seed", "--seeds"):
        assert flag in out


def test_run_writes_the_documented_json_and_prints_table_and_verdict(tmp_path):
    out = tmp_path / "out.json"
    p = isobench("run", "--frameworks", "numpy", "--repeats", "2", "--threads", "1", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "training time" in p.stdout and "NumPy" in p.stdout
    assert "[2/2] NumPy (float64 reference) (reference) repeat 2: ok" in p.stderr
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["environment"]["cpu_model"]
    assert doc["config"]["repeats"] == 2 and doc["config"]["threads"] == 1
    assert len(doc["runs"]) == 2
    for run in doc["runs"]:
        assert (run["framework"], run["workload"], run["mode"], run["status"]) == ("numpy", "seed-mlp", "reference", "ok")
        assert set(REQUIRED_METRICS) <= set(run["metrics"])
        assert len(run["metrics"]["epoch_losses"]) == 10
    assert sorted(r["repeat"] for r in doc["runs"]) == [0, 1]


def test_crashed_worker_is_recorded_and_exit_code_says_so(tmp_path):
    out = tmp_path / "out.json"
    p = isobench("run", "--frameworks", "numpy", "--repeats", "3", "--threads", "1", "--json", str(out),
                 env={"ISOBENCH_FAULT": "segfault:numpy:2"})
    assert p.returncode == 1
    runs = json.loads(out.read_text())["runs"]
    assert sorted((r["repeat"], r["status"]) for r in runs) == [(0, "ok"), (1, "ok"), (2, "crashed")]
    crashed = next(r for r in runs if r["status"] == "crashed")
    assert crashed["signal"] == 11 and crashed["metrics"] is None
    assert "CRASHED" in p.stderr and "SIGSEGV" in p.stdout  # progress line and the failure list


def test_parity_with_the_reference_passes():
    p = isobench("parity", "seed-mlp", "--frameworks", "numpy", "--threads", "1")
    assert p.returncode == 0, p.stderr
    assert "Parity PASSED for seed-mlp" in p.stdout


def test_seeds_give_each_repeat_its_own_weights_and_order_on_the_same_data(tmp_path):
    out = tmp_path / "out.json"
    p = isobench("run", "--frameworks", "numpy", "--repeats", "3", "--seeds", "2", "--threads", "1", "--no-parity",
                 "--warmup", "0", "--no-store", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "weights and orders from 2 seeds (repeat r: seed s + r mod 2)" in p.stderr.splitlines()[1]
    assert "note: --repeats 3 is not a multiple of --seeds 2: seed s gets one repeat more than the others" in p.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["seeds"] == 2
    runs = {r["repeat"]: r for r in doc["runs"]}
    assert {k: r["environment"]["seed"] for k, r in runs.items()} == {0: 0, 1: 1, 2: 0}
    fp = {k: r["fingerprints"] for k, r in runs.items()}
    assert fp[0]["data"] == fp[1]["data"] == fp[2]["data"]  # one split, one test set
    assert fp[0]["init_weights"] != fp[1]["init_weights"] and fp[0]["orders"] != fp[1]["orders"]
    assert fp[0] == fp[2]  # the same seed: identical work
    losses = {k: r["metrics"]["epoch_losses"] for k, r in runs.items()}
    assert losses[0] == losses[2] != losses[1]
