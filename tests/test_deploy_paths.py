"""Deployment paths (isobench.backends.deploy and its deploy_* modules): the registry, availability and
tolerances without frameworks; then every path's exported artifact against the float64 reference on seed-mlp,
int8 accuracy on a trained seed-mlp, BatchNorm models on the ONNX and LiteRT paths, corrupt artifacts."""
from __future__ import annotations

import importlib
import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from isobench.backends import deploy
from isobench.data import batches, epoch_orders, load_dataset
from isobench.workloads import get_workload, init_params

SUBPROCESS = ("keras-jax/predict", "keras-torch/predict")  # Keras reads its backend once per process
ALL = [p for p in deploy.PATHS if deploy.available(deploy.PATHS[p]) is None]
INT8 = [p for p in ALL if "int8" in deploy.PATHS[p].quantizations]
EXPORTED = [p for p in ALL if not deploy.PATHS[p].native]


# ---- without frameworks

def test_registry_points_at_functions():
    for path in deploy.PATHS.values():
        assert path.runtime in deploy.RUNTIMES
        for ref in (path.export, path.serve):
            module, name = ref.split(":")
            assert callable(getattr(importlib.import_module(module), name)), ref
        assert path.id == f"{path.framework}/{path.name}"
        assert set(path.quantizations) <= set(deploy.QUANTIZATIONS)


RECORDED = {deploy.STATIC: "static", deploy.DYNAMIC: "dynamic", deploy.NATIVE: None}  # an exporter's details["batch"]


def _exporter(path: deploy.DeployPath):
    module, name = path.export.split(":")
    return getattr(importlib.import_module(module), name)


def test_batch_handling_is_what_each_exporter_does():
    """Read from the exporters' code, without exporting (the slow parity test checks the artifacts themselves): a
    static path's exporter writes one b<size> file per batch size and records "static", a dynamic one records
    "dynamic" (the ONNX exporters through finish_export), a native path exports the weights alone."""
    from isobench.backends.deploy_onnx import finish_export

    assert '"batch": "dynamic"' in inspect.getsource(finish_export)
    for path in deploy.PATHS.values():
        source = inspect.getsource(_exporter(path))
        recorded = "static" if '"batch": "static"' in source and 'f"b{b}.' in source else \
            "dynamic" if '"batch": "dynamic"' in source or "finish_export(" in source else None
        assert recorded == RECORDED[path.batch], path.id
        assert (_exporter(path) is deploy.export_weights) == path.native, path.id
        words = set(path.exporter.replace(",", " ").split())
        assert not {"dynamic", "static", "symbolic"} & words, path.id  # the batch field says it


def _assert_batch_handling(path_id: str, exported: deploy.Exported, batch_sizes) -> None:
    """The artifact has the path's declared batch handling: a folder of one b<size> file per batch size (static),
    one model file (dynamic) or the weights file (native), and the exporter's record says the same."""
    path, artifact = deploy.get_path(path_id), exported.artifact
    assert exported.details.get("batch") == RECORDED[path.batch]
    if path.batch == deploy.STATIC:
        assert sorted(f.stem for f in artifact.iterdir()) == sorted(f"b{b}" for b in batch_sizes)
    else:
        assert artifact.is_file()


def test_available_names_missing_module_and_install_hint():
    path = deploy.DeployPath("torch", "x", "onnxruntime", "", "a:b", "a:b", requires=("no_such_module_xyz",))
    reason = deploy.available(path)
    assert "no_such_module_xyz" in reason and "pip install -c constraints.txt -e '.[deploy]'" in reason
    assert deploy.available(deploy.PATHS["numpy/reference"]) is None


def test_runtime_versions_every_runtime_without_import():
    versions = deploy.runtime_versions()
    assert set(versions) == set(deploy.RUNTIMES)
    assert versions["numpy"] == np.__version__


def test_tolerance_fp32_only():
    wl = get_workload("seed-mlp")
    assert 0 < deploy.logit_tolerance(wl, "none") < 1e-2
    assert deploy.logit_tolerance(wl, "int8") is None


def test_artifact_bytes_of_file_and_static_batch_folder(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x" * 10)
    assert deploy.artifact_bytes(deploy.Exported(tmp_path / "m.onnx")) == 10
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "b1.tflite").write_bytes(b"x" * 3)
    (folder / "b32.tflite").write_bytes(b"x" * 5)
    assert deploy.artifact_bytes(deploy.Exported(folder), 32) == 5
    assert deploy.artifact_bytes(deploy.Exported(folder)) == 8


def test_missing_or_empty_artifact_raises(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    for path in (tmp_path / "empty.onnx", tmp_path / "absent.onnx"):
        with pytest.raises(ValueError, match="missing or empty"):
            deploy.check_artifact(path)


def test_int8_refused_where_not_offered(tmp_path):
    with pytest.raises(NotImplementedError, match="offers no int8"):
        deploy.export(deploy.PATHS["torch/eager"], get_workload("seed-mlp"), {}, tmp_path, quantize="int8")


# ---- real exporters and runtimes

@pytest.fixture(scope="module")
def mlp():
    """seed-mlp trained for 15 epochs with the torch backend (about a second): its weights and data."""
    from isobench.backends import get_backend

    wl = get_workload("seed-mlp")
    data = load_dataset(wl)
    backend = get_backend("torch")
    backend.setup(1)
    trainer = backend.build(wl, init_params(wl), data, "eager")
    for order in epoch_orders(len(data.x_train), 15, wl.seed):
        for idx in batches(order, wl.batch_size):
            trainer.train_step(idx, wl.optimizer.learning_rate)
    return wl, data, trainer.params()


def _served_logits(served, x, b):
    n = len(x) - len(x) % b
    return np.concatenate([served(x[i:i + b]) for i in range(0, n, b)]), n


def _export(path_id, wl, params, out: Path, quantize="none", calibration=None, batch_sizes=(1, 32)):
    return deploy.export(deploy.get_path(path_id), wl, params, out, quantize=quantize, calibration=calibration,
                         batch_sizes=batch_sizes)


def _max_diff(path_id, wl, params, x, tmp: Path, batch_sizes=(1, 32)) -> float:
    exported = _export(path_id, wl, params, tmp, batch_sizes=batch_sizes)
    _assert_batch_handling(path_id, exported, batch_sizes)
    ref, worst = deploy.reference_logits(wl, params, x), 0.0
    for b in batch_sizes:
        out, n = _served_logits(deploy.serve(deploy.get_path(path_id), wl, exported, batch_size=b, threads=1), x, b)
        assert out.dtype == np.float32 and out.shape == ref[:n].shape
        worst = max(worst, float(np.abs(out - ref[:n]).max()))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("path_id", ALL)
def test_seed_mlp_parity_every_path(path_id, mlp, tmp_path, benchmark_script):
    """The issue's gate: every path's fp32 logits at batch 1 and 32 on the test split within the tolerance of
    the float64 reference of the same trained weights."""
    wl, data, params = mlp
    tol = deploy.logit_tolerance(wl, "none")
    if path_id in SUBPROCESS:
        deploy.save_weights(params, tmp_path)
        row = benchmark_script("deploy_matrix").run_cell(path_id, wl.name, "none", 300,
                                                         params_file=str(tmp_path / "weights.npz"), n_test=0)
        assert row["status"] == "ok", row
        assert row["max_abs_diff"] <= tol
        return
    assert _max_diff(path_id, wl, params, data.x_test, tmp_path) <= tol


@pytest.mark.slow
@pytest.mark.parametrize("path_id", INT8)
def test_seed_mlp_int8_accuracy_within_2_points(path_id, mlp, tmp_path):
    wl, data, params = mlp
    exported = _export(path_id, wl, params, tmp_path, "int8", data.x_train[:256])
    assert exported.quantize == "int8" and "int8" in exported.details
    out, n = _served_logits(deploy.serve(deploy.get_path(path_id), wl, exported, batch_size=32, threads=1),
                            data.x_test, 32)
    y = data.y_test[:n]
    fp32 = float(np.mean(deploy.reference_logits(wl, params, data.x_test[:n]).argmax(-1) == y))
    int8 = float(np.mean(out.argmax(-1) == y))
    assert fp32 > 0.9  # trained
    assert int8 >= fp32 - 0.02, (int8, fp32)


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["lenet5", "resnet-mini"])
@pytest.mark.parametrize("path_id", [p for p in EXPORTED if p.endswith(("/onnx", "/litert"))])
def test_batchnorm_models_onnx_and_litert_parity(path_id, workload, tmp_path, benchmark_script):
    """lenet5 and resnet-mini (BatchNorm with random statistics, folded or kept by the exporter), at batch 2
    (even: docs/deploy.md)."""
    wl = get_workload(workload)
    params = benchmark_script("deploy_matrix").trained_like(wl, init_params(wl))
    x = load_dataset(wl).x_test[:32]
    assert _max_diff(path_id, wl, params, x, tmp_path, (2,)) <= deploy.logit_tolerance(wl, "none")


@pytest.mark.slow
def test_jax_onnx_lenet5_int8(tmp_path, benchmark_script):
    """jax/onnx on lenet5 (max pools exported as reshape + max, int8 after ONNX shape inference only): the int8
    model's top-1 agrees with the float64 reference on the test examples."""
    wl = get_workload("lenet5")
    params = benchmark_script("deploy_matrix").trained_like(wl, init_params(wl))
    x = load_dataset(wl).x_test[:64]
    exported = deploy.export(deploy.get_path("jax/onnx"), wl, params, tmp_path, quantize="int8", calibration=x,
                             batch_sizes=(2,))
    served = deploy.serve(deploy.get_path("jax/onnx"), wl, exported, batch_size=2, threads=1)
    out = np.concatenate([served(x[i:i + 2]) for i in range(0, len(x), 2)])
    ref = deploy.reference_logits(wl, params, x)
    assert np.mean(out.argmax(-1) == ref.argmax(-1)) >= 0.9


@pytest.fixture(scope="module")
def seed_artifacts(tmp_path_factory):
    wl = get_workload("seed-mlp")
    return wl, {p: _export(p, wl, init_params(wl), tmp_path_factory.mktemp(p.replace("/", "-")))
                for p in ("torch/onnx", "tensorflow/litert")}


@pytest.mark.slow
@pytest.mark.parametrize("path_id", ["torch/onnx", "tensorflow/litert"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_artifact_makes_serve_raise(path_id, damage, seed_artifacts, tmp_path):
    wl, exported = seed_artifacts[0], seed_artifacts[1][path_id]
    data = exported.artifact.read_bytes()
    broken = tmp_path / exported.artifact.name
    broken.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\x00junk" * 100, "empty": b""}[damage])
    with pytest.raises(Exception):  # noqa: B017  (each runtime raises its own type; the runner records it)
        served = deploy.serve(deploy.get_path(path_id), wl, replace(exported, artifact=broken), batch_size=1,
                              threads=1)
        served(np.zeros((1, *wl.input_shape), np.float32))
