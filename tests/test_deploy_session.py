"""Deployment as a kind of the one session: the executor's features (memory cap, interruption and --resume, Ray) and
the session's refusals, on the float64 reference path (no framework, fast); the size of a static-batch artifact per
batch size on a real static path (slow)."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isobench.cli import main
from isobench.results import EXPORT, OK, OUT_OF_MEMORY, SERVE, ResultSet
from isobench.store import Store

GOLDEN = Path(__file__).parent / "data" / "golden"
QUICK = ["seed-mlp", "--frameworks", "numpy", "--quantize", "none", "--calls", "5", "--threads", "1"]


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "deploy-cache"))


def isobench(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "isobench", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_resume_refuses_a_session_of_the_other_kind(tmp_path, capsys):
    db = tmp_path / "both.db"
    with Store(db, create=True) as store:
        store.save(ResultSet.from_dict(json.loads((GOLDEN / "session.json").read_text())))
        store.save(ResultSet.from_dict(json.loads((GOLDEN / "deploy_session.json").read_text())))
    for argv, message in ((["run", "--resume", "2"], "session 2 is a deployment session; continue it with "
                                                     "'isobench deploy --resume 2'"),
                          (["deploy", "--resume", "1"], "session 1 is a training session; continue it with "
                                                        "'isobench run --resume 1'")):
        assert main([*argv, "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_max_memory_caps_a_serving_worker_and_the_session_goes_on(tmp_path):
    p = isobench("deploy", *QUICK, "--batch-sizes", "1,2", "--repeats", "2", "--max-memory", "400M",
                 "--db", str(tmp_path / "m.db"), "--json", str(tmp_path / "m.json"),
                 env={"ISOBENCH_FAULT": "oom:numpy/reference:1"})
    assert p.returncode == 1, p.stderr
    records = ResultSet.read_json(tmp_path / "m.json").deploys
    killed = [r for r in records if r.spec.repeat == 1 and r.spec.kind == SERVE]
    assert [r.status for r in killed] == [OUT_OF_MEMORY] * 2  # one record per batch size of the killed process
    assert "over --max-memory 400 MiB; killed" in killed[0].error
    assert all(r.status == OK for r in records if r not in killed)


def test_an_interrupted_deployment_resumes_with_only_the_missing_units(tmp_path):
    db, json_path = tmp_path / "d.db", tmp_path / "d.json"
    proc = subprocess.Popen([sys.executable, "-m", "isobench", "deploy", *QUICK, "--batch-sizes", "1,2",
                             "--repeats", "4", "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "ISOBENCH_FAULT": "hang:numpy/reference:2"})
    deadline = time.monotonic() + 120
    while _serving_records(db) < 4:  # two serving processes, two batch sizes each
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "continue with: isobench deploy --resume 1" in err, err
    with Store(db) as store:
        before = store.load(1)
    [export] = [r for r in before.deploys if r.spec.kind == EXPORT]
    artifact = Path(export.environment.exported["artifact"])
    assert artifact.exists() and artifact.is_relative_to(tmp_path / "artifacts" / "session-1")
    p = isobench("deploy", "--resume", "1", "--db", str(db), "--json", str(json_path))
    assert p.returncode == 0, p.stderr
    assert "resuming session 1: 3 of 5 units already done" in p.stderr
    after = ResultSet.read_json(json_path)
    assert [r for r in after.deploys if r.spec.kind == EXPORT] == [export]  # served from the kept artifact
    serving = sorted((r.spec.repeat, r.spec.batch_size) for r in after.deploys if r.spec.kind == SERVE)
    assert serving == [(r, b) for r in range(4) for b in (1, 2)] and all(r.ok for r in after.deploys)


def _serving_records(db: Path) -> int:
    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT count(*) FROM deploy_runs WHERE batch_size > 0").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


@pytest.mark.slow
def test_a_deployment_session_runs_on_ray(tmp_path):
    pytest.importorskip("ray")
    local = isobench("deploy", *QUICK, "--batch-sizes", "1,2", "--repeats", "1", "--no-store")
    p = isobench("deploy", *QUICK, "--batch-sizes", "1,2", "--repeats", "1", "--executor", "ray", "--no-store",
                 "--keep-artifacts", str(tmp_path / "kept"), "--json", str(tmp_path / "r.json"))
    assert p.returncode == local.returncode == 0, p.stderr
    table = lambda text: [ln.split()[:4] for ln in text.splitlines() if ln.startswith("  numpy/")]  # noqa: E731
    assert table(p.stdout) == table(local.stdout) and len(table(p.stdout)) == 2
    records = ResultSet.read_json(tmp_path / "r.json").deploys
    assert all(r.ok and r.environment.node for r in records)
    [export] = [r for r in records if r.spec.kind == EXPORT]  # made on the node, brought back here
    assert Path(export.environment.exported["artifact"]).is_relative_to(tmp_path / "kept")
    assert Path(export.environment.exported["artifact"]).exists()


@pytest.mark.slow
def test_the_size_of_a_static_batch_artifact_is_the_file_that_serves_each_batch_size(tmp_path):
    pytest.importorskip("ai_edge_litert")
    out = tmp_path / "s.json"
    p = isobench("deploy", "seed-mlp", "--paths", "jax/litert", "--quantize", "none", "--batch-sizes", "1,4",
                 "--repeats", "1", "--calls", "5", "--no-store", "--keep-artifacts", str(tmp_path / "kept"),
                 "--json", str(out))
    assert p.returncode == 0, p.stderr
    records = ResultSet.read_json(out).deploys
    [export] = [r for r in records if r.spec.kind == EXPORT]
    folder = Path(export.environment.exported["artifact"])
    assert folder.is_dir() and folder.is_relative_to(tmp_path / "kept")
    sizes = {r.spec.batch_size: r.metrics.artifact_bytes for r in records if r.spec.kind == SERVE}
    assert sizes == {b: (folder / f"b{b}.tflite").stat().st_size for b in (1, 4)}
    assert export.metrics.artifact_bytes == sum(sizes.values())


# ---- --device cuda: the frameworks' own paths on a GPU, the runtimes refused (checked here without a GPU)

def test_deploy_on_cuda_without_a_gpu_is_one_line_exit_2(capsys):
    assert main(["deploy", "--device", "cuda", "--no-store"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["isobench: error: --device cuda: no NVIDIA GPU found (nvidia-smi lists none); use --device cpu"]


def test_deploy_on_cuda_serves_the_native_paths_and_refuses_the_cpu_runtimes(monkeypatch):
    from isobench import config as cfg
    from isobench.errors import UserError
    from isobench.runner.deploy import serving_job
    from isobench.runner.serving import load_job
    from isobench.results import DeploySpec, LoadSpec
    from isobench.workloads import get_workload

    monkeypatch.setattr(cfg, "detect_gpus", lambda: [0, 1])
    config, notes = cfg.resolve_deploy(cfg.DeployChoices(device="cuda", gpus="0,1"))
    assert config.paths == ["torch/eager", "torch/compile", "tensorflow/function", "tensorflow/xla", "jax/jit"]
    assert (config.device, config.gpus) == ("cuda", [0, 1])
    assert any("left out, CPU only here: torch/onnx" in n for n in notes)
    with pytest.raises(UserError, match=r"^--device cuda: torch/onnx, tensorflow/litert serve on the CPU only here .*"
                                        r"choose paths that serve on a GPU \(torch/eager\) or give --device cpu$"):
        cfg.resolve_deploy(cfg.DeployChoices(device="cuda", paths="torch/onnx,tensorflow/litert,torch/eager"))
    with pytest.raises(UserError, match="onnx serve on the CPU only"):
        cfg.resolve_deploy(cfg.DeployChoices(device="cuda", paths="onnx"))
    workload, exported = get_workload("seed-mlp"), {"artifact": "w.npz", "quantize": "none"}
    job = serving_job(0, DeploySpec("seed-mlp", "torch/eager", "none", None, 0, 2), workload, "i", "r", exported, config)
    assert job.task["device"] == "cuda" and job.task["deploy_path"]["devices"] == ("cpu", "cuda")
    serving = cfg.resolve_deploy(cfg.DeployChoices(device="cuda", scenario="server"))[0]
    unit = LoadSpec("seed-mlp", "jax/jit", "none", "server", "off", 0, 2)
    assert load_job(0, unit, workload, "i", "r", exported, serving).task["device"] == "cuda"


def test_a_path_serves_only_on_its_devices_and_a_missing_gpu_fails_the_row(tmp_path):
    import numpy as np
    from isobench.backends import deploy
    from isobench.workloads import get_workload
    from isobench.workloads.init import init_params

    workload = get_workload("seed-mlp")
    exported = deploy.Exported(deploy.save_weights(init_params(workload), tmp_path), "none")
    with pytest.raises(ValueError, match="^numpy/reference serves on cpu only, not cuda$"):
        deploy.serve(deploy.get_path("numpy/reference"), workload, exported, batch_size=1, threads=1, device="cuda")
    served = deploy.serve(deploy.get_path("numpy/reference"), workload, exported, batch_size=1, threads=1)
    assert served(np.zeros((1, *workload.input_shape), np.float32)).shape == (1, workload.num_classes)


@pytest.mark.slow
def test_a_native_path_on_cuda_without_a_visible_gpu_is_a_one_line_error(tmp_path):
    from isobench.backends import deploy
    from isobench.workloads import get_workload
    from isobench.workloads.init import init_params

    workload = get_workload("seed-mlp")
    exported = deploy.Exported(deploy.save_weights(init_params(workload), tmp_path), "none")
    with pytest.raises(RuntimeError, match="^no CUDA GPU visible to PyTorch"):
        deploy.serve(deploy.get_path("torch/eager"), workload, exported, batch_size=1, threads=1, device="cuda")
