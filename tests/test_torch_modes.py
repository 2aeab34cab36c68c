"""PyTorch's modes, precisions and devices against the float64 numpy reference.

``compile`` must give the float32 numbers of ``eager`` (the workload's own tolerances), partial last batch
included; ``bf16``/``fp16`` must stay within ``ParitySpec.for_precision`` and really run in low precision.
A few steps each: ``isobench parity`` runs the long checks."""
from __future__ import annotations

import dataclasses
import functools
import types
import warnings

import numpy as np
import pytest

from isobench.backends import get_backend
from isobench.backends.reference import ReferenceTrainer
from isobench.data import batches, epoch_orders, load_dataset
from isobench.workloads import get_workload, init_params
from isobench.workloads.schedule import learning_rates
from isobench.workloads.spec import OptimizerSpec

torch = pytest.importorskip("torch")
from isobench.backends.torch_backend import TorchTrainer, _check_amp, cuda_peak_bytes, reset_cuda_peak  # noqa: E402

BACKEND = get_backend("torch")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def _max_abs(a: dict, b: dict, keys=None) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in (keys or a))


@functools.cache  # shared by the tests of one workload (read only: builds copy the weights)
def _case(name: str, steps: int, partial: int | None = None, workload=None, evaluate: bool = False):
    """Workload without dropout, its data and weights, ``steps`` batches of the first epoch (then a partial
    batch of ``partial`` rows) and the float64 reference's logits, step-0 gradients, losses, final parameters
    and state (and test loss and accuracy)."""
    w = workload or get_workload(name).without_dropout()
    data, params = load_dataset(w), init_params(w)
    order = epoch_orders(len(data.x_train), 1, w.seed)[0]
    idx = batches(order, w.batch_size)[:steps + 1]
    idx = idx[:steps] + ([idx[steps][:partial]] if partial else [])
    lrs = learning_rates(w.optimizer, w.schedule, len(idx))
    ref = ReferenceTrainer(w, params, data)
    expected = {"logits": ref.logits(data.x_test[:64]), "grads": ref.gradients(idx[0])}
    expected["losses"] = np.array([ref.train_step(i, lrs[s]) for s, i in enumerate(idx)])
    expected["params"] = ref.params()
    expected["eval"] = ref.evaluate() if evaluate else None
    return types.SimpleNamespace(w=w, data=data, params=params, idx=idx, lrs=lrs, expected=expected)


def _grad_tol(case, tol) -> float:
    return tol.grad_tolerance(max(float(np.max(np.abs(g))) for g in case.expected["grads"].values()))


def _loss_tol(case, tol) -> float:
    return tol.loss_tolerance(float(np.max(np.abs(case.expected["losses"]))))


def _moving(case) -> list[str]:
    """Parameters with a gradient that is not structurally zero (Adam would turn rounding noise there into steps)."""
    return [k for k, g in case.expected["grads"].items() if np.max(np.abs(g)) > 1e-9]


# ---- torch.compile -----------------------------------------------------------------------------------

@pytest.mark.slow
# resnet-mini's partial batch is even: odd batches crash oneDNN's convolution backward on AVX512-BF16 CPUs
# (docs/measurement.md, "Known framework faults")
@pytest.mark.parametrize("name,steps,partial", [("seed-mlp", 3, 29), ("resnet-mini", 2, 36)])
def test_compile_matches_reference_with_a_partial_batch(name, steps, partial):
    """Compiled training step and probes within the workload's float32 tolerances; the partial last batch
    reuses the graph compiled for the full ones (its batch dimension is dynamic), BatchNorm over its real rows.
    seed-mlp gets an active clip norm, so the compiled update clips (one compile fewer than a test of its own)."""
    from torch._dynamo.utils import counters

    w = get_workload(name).without_dropout()
    if name == "seed-mlp":
        w = dataclasses.replace(w, optimizer=dataclasses.replace(w.optimizer, clip_norm=0.1))
    case, tol = _case(name, steps, partial, w, evaluate=name == "seed-mlp"), w.parity
    if w.optimizer.clip_norm:
        assert np.sqrt(sum(np.sum(g ** 2) for g in case.expected["grads"].values())) > 2 * w.optimizer.clip_norm
    BACKEND.setup(threads=2)
    trainer = BACKEND.build(case.w, case.params, case.data, "compile")
    assert _max_abs(trainer.params(), case.params) == 0.0, "weights must load exactly"
    if name == "seed-mlp":  # the compiled inference graph (resnet-mini's would double the compile time)
        forward = np.max(np.abs(trainer.logits(case.data.x_test[:64]) - case.expected["logits"]))
        assert forward <= tol.forward_atol
    assert _max_abs(trainer.gradients(case.idx[0]), case.expected["grads"]) <= _grad_tol(case, tol)
    losses = [trainer.train_step(i, case.lrs[s]) for s, i in enumerate(case.idx[:-1])]
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 2, "forward + loss and the update must have been compiled"
    losses.append(trainer.train_step(case.idx[-1], case.lrs[len(losses)]))  # the partial batch
    assert counters["stats"]["unique_graphs"] == graphs, "the partial batch recompiled the training step"
    assert np.max(np.abs(np.array(losses) - case.expected["losses"])) <= _loss_tol(case, tol)
    after = trainer.params()
    assert _max_abs(after, case.expected["params"], _moving(case)) <= 1e-4
    state = list(case.w.state_shapes())
    if state:  # BatchNorm moving statistics, updated from the partial batch's 37 rows, not from padding
        assert _max_abs(after, case.expected["params"], state) <= tol.state_atol
    if name == "seed-mlp":
        loss, acc = trainer.evaluate()
        assert abs(loss - case.expected["eval"][0]) <= tol.epoch_loss_atol and acc == case.expected["eval"][1]


# ---- mixed precision -----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name,precision", [("seed-mlp", "bf16"), ("seed-mlp", "fp16"), ("lenet5", "bf16"),
                                            ("lenet5", "fp16"), ("lstm-digits", "bf16")])
def test_mixed_precision_matches_reference(name, precision):
    """Eager mixed precision within the precision's tolerances: float32 master weights and optimizer state,
    float32 host losses and gradients, and visibly in low precision (the forward is further from the reference
    than float32's 1e-5). lstm-digits: on a CPU without a oneDNN bf16/fp16 LSTM the LSTM runs in float32, the
    head in low precision."""
    case = _case(name, 4)
    tol = case.w.parity.for_precision(precision)
    trainer = BACKEND.build(case.w, case.params, case.data, "eager", precision)
    assert _max_abs(trainer.params(), case.params) == 0.0
    forward = float(np.max(np.abs(trainer.logits(case.data.x_test[:64]) - case.expected["logits"])))
    assert case.w.parity.forward_atol < forward <= tol.forward_atol
    grads = trainer.gradients(case.idx[0])
    assert all(g.dtype == np.float32 for g in grads.values())
    assert _max_abs(grads, case.expected["grads"]) <= _grad_tol(case, tol)
    losses = [trainer.train_step(i, case.lrs[s]) for s, i in enumerate(case.idx)]
    assert all(type(loss) is float for loss in losses)
    assert np.max(np.abs(np.array(losses) - case.expected["losses"])) <= _loss_tol(case, tol)
    # float32 master weights and optimizer state (lenet5's momentum, lstm-digits' Adam moments; plain SGD has none)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    state = [v for s in trainer.optimizer.state.values() for v in s.values()
             if torch.is_tensor(v) and v.is_floating_point()]
    assert all(v.dtype == torch.float32 for v in state) and (state or case.w.optimizer.momentum == 0)


@pytest.mark.slow
def test_fp16_clips_unscaled_gradients():
    """A clip norm far below the gradient norm: the update is lr * clip * g/|g| of the true gradient. Clipping the
    loss-scaled gradients instead would make every step 65536x too small."""
    w = dataclasses.replace(get_workload("seed-mlp"), optimizer=OptimizerSpec(kind="sgd", learning_rate=0.5,
                                                                             clip_norm=0.05))
    case = _case(w.name, 3, workload=w)
    trainer = BACKEND.build(w, case.params, case.data, "eager", "fp16")
    for s, i in enumerate(case.idx):
        trainer.train_step(i, case.lrs[s])
    moved = _max_abs(case.expected["params"], case.params)  # ~ lr * clip = 0.025 per step at most
    assert moved > 1e-3
    assert _max_abs(trainer.params(), case.expected["params"]) <= 0.25 * moved  # 8% measured


@pytest.mark.slow
def test_fp16_skips_a_step_with_overflowing_gradients_and_halves_the_scale():
    case = _case("seed-mlp", 4)
    trainer = BACKEND.build(case.w, case.params, case.data, "eager", "fp16")
    probe = trainer.gradients(case.idx[0])  # at the default scale, 2**16
    trainer._scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)  # scaled fp16 gradients overflow
    # the probe backs off to a scale whose gradients are finite (same rounding: scales are powers of two)
    assert _max_abs(trainer.gradients(case.idx[0]), probe) <= 1e-6
    assert trainer._scaler.get_scale() == 2.0 ** 40
    trainer.train_step(case.idx[0], case.lrs[0])
    assert _max_abs(trainer.params(), case.params) == 0.0, "the non-finite step must be skipped"
    assert trainer._scaler.get_scale() == 2.0 ** 39
    for _ in range(30):  # dynamic scaling backs off until the scaled gradients are finite, then steps
        trainer.train_step(case.idx[1], case.lrs[1])
        if _max_abs(trainer.params(), case.params) > 0.0:
            break
    assert _max_abs(trainer.params(), case.params) > 0.0 and 2.0 ** 8 <= trainer._scaler.get_scale() < 2.0 ** 39


# ---- settings, devices, errors -------------------------------------------------------------------------

def test_setup_reports_tf32_off_and_compile_settings():
    settings = BACKEND.setup(threads=2)
    assert settings.tf32 is False and settings.extra["cudnn_allow_tf32"] is False
    assert settings.extra["cuda_matmul_allow_tf32"] is False and settings.matmul_precision == "highest"
    assert settings.device == "cpu" and settings.extra["compile_backend"] == "inductor" and settings.xla is None
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in settings.extra.values())
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_modes_and_precisions_declared():
    assert BACKEND.modes == ("eager", "compile") and BACKEND.precisions == ("fp32", "bf16", "fp16", "tf32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_cuda_without_a_gpu_is_a_clear_error():
    w = get_workload("seed-mlp")
    with pytest.raises(RuntimeError, match="no CUDA GPU visible to PyTorch"):
        BACKEND.setup(threads=2, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU visible to PyTorch"):
        BACKEND.build(w, init_params(w), load_dataset(w), "eager", "fp32", "cuda")


def test_unknown_precision_and_device_are_rejected():
    w = get_workload("seed-mlp")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        BACKEND.build(w, init_params(w), None, "eager", "fp8")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        BACKEND.build(w, init_params(w), None, "eager", "fp32", "tpu")
    with pytest.raises(ValueError, match="eager mode and fp32 only"):
        TorchTrainer(w, init_params(w), load_dataset(w), "eager", torch.float64, precision="bf16")


def test_unsupported_autocast_is_a_clear_error():
    """Where torch's autocast cannot take a dtype it only warns and runs in float32: that must be an error."""
    def autocast(device_type, dtype):
        warnings.warn(f"In {device_type.upper()} autocast, but the target dtype is not supported. Disabling autocast.")

    fake = types.SimpleNamespace(__version__="0.0", float16="float16", autocast=autocast)
    with pytest.raises(RuntimeError, match="no float16 mixed precision on cpu: .*not supported"):
        _check_amp(fake, "cpu", "float16")


def test_device_peak_reads_the_cuda_allocator_after_a_sync():
    calls = []
    fake = types.SimpleNamespace(synchronize=lambda: calls.append("sync"),
                                 reset_peak_memory_stats=lambda: calls.append("reset"),
                                 max_memory_allocated=lambda: calls.append("read") or 12345)
    reset_cuda_peak(fake)
    assert cuda_peak_bytes(fake) == 12345
    assert calls == ["sync", "reset", "sync", "read"]


def test_cpu_has_no_device_peak():
    w = get_workload("seed-mlp")
    assert BACKEND.build(w, init_params(w), load_dataset(w), "eager").device_peak_bytes() is None
