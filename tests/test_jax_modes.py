"""JAX execution modes, mixed precision and device choice, against the float64 numpy reference.

Eager mode must do the float32 work of jit mode (the workload's own tolerances); bf16 and fp16 must stay
within ``ParitySpec.for_precision``. A few steps per workload, the last one a partial batch."""
from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

from isobench.backends import get_backend
from isobench.backends.jax_backend import JaxBackend, peak_bytes
from isobench.backends.reference import ReferenceTrainer
from isobench.data import batches, epoch_orders, load_dataset
from isobench.workloads import get_workload, init_params
from isobench.workloads.schedule import learning_rates
from isobench.workloads.spec import OptimizerSpec

STEPS = 3  # full batches, then one partial batch


def _max_ref(grads: dict) -> float:
    return max(float(np.max(np.abs(g))) for g in grads.values())


def _max_abs(a: dict, b: dict) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


@pytest.fixture(scope="module")
def cases():
    """Workload name (and batch size) -> inputs and the reference's logits, step-0 gradients, losses and final
    parameters."""
    out = {}

    def get(name, batch_size=None):
        if (name, batch_size) not in out:
            w = get_workload(name).without_dropout()
            w = dataclasses.replace(w, batch_size=batch_size or w.batch_size)
            data, params = load_dataset(w), init_params(w)
            order = epoch_orders(len(data.x_train), 1, w.seed)[0]
            full = batches(order, w.batch_size)
            idx = full[:STEPS] + [full[STEPS][:w.batch_size // 2 + 3]]
            lrs = learning_rates(w.optimizer, w.schedule, len(idx))
            ref = ReferenceTrainer(w, params, data)
            expected = {"logits": ref.logits(data.x_test[:64]), "grads": ref.gradients(idx[0])}
            expected["losses"] = [ref.train_step(i, lrs[s]) for s, i in enumerate(idx)]
            expected["params"] = ref.params()
            out[name, batch_size] = (w, data, params, idx, lrs, expected)
        return out[name, batch_size]
    return get


def _check(w, data, params, idx, lrs, expected, trainer, tol) -> dict:
    """Every comparison with the reference; returns the trainer's outputs for further checks."""
    assert _max_abs(trainer.params(), params) == 0.0, "float32 master weights load exactly"
    logits = trainer.logits(data.x_test[:64])
    grads = trainer.gradients(idx[0])
    assert logits.dtype == np.float32 and {g.dtype for g in grads.values()} == {np.dtype(np.float32)}
    assert np.max(np.abs(logits - expected["logits"])) <= tol.forward_atol
    assert _max_abs(grads, expected["grads"]) <= tol.grad_tolerance(_max_ref(expected["grads"]))
    assert _max_abs(trainer.params(), params) == 0.0, "gradients() changes nothing"
    losses = [trainer.train_step(i, lrs[s]) for s, i in enumerate(idx)]
    assert all(isinstance(x, float) for x in losses)
    assert np.max(np.abs(np.array(losses) - expected["losses"])) <= tol.loss_tolerance(max(map(abs, expected["losses"])))
    after = trainer.params()
    assert {v.dtype for v in after.values()} == {np.dtype(np.float32)}
    state = w.state_shapes()
    if state:
        assert _max_abs({k: after[k] for k in state}, {k: expected["params"][k] for k in state}) <= tol.state_atol
    return after


# ---- without a framework run ---------------------------------------------------------------------

def test_declares_modes_and_precisions():
    assert JaxBackend.modes == ("jit", "eager")  # jit stays the default
    assert JaxBackend.precisions == ("fp32", "bf16", "fp16", "tf32")


def test_unknown_precision_is_rejected_before_anything_is_built():
    with pytest.raises(ValueError, match="unknown precision 'fp8'.*fp32, bf16, fp16"):
        get_backend("jax").build(get_workload("seed-mlp"), {}, None, "jit", "fp8")


def test_peak_bytes_reads_the_device_allocator():
    def device(platform, stats):
        return types.SimpleNamespace(platform=platform, memory_stats=lambda: stats)

    assert peak_bytes(device("gpu", {"peak_bytes_in_use": 123, "bytes_in_use": 7})) == 123
    assert peak_bytes(device("gpu", None)) is None  # a runtime without statistics
    assert peak_bytes(device("cpu", {"peak_bytes_in_use": 5})) is None


# ---- JAX itself ----------------------------------------------------------------------------------

def test_setup_reports_full_float32_matmuls():
    jax = pytest.importorskip("jax")
    settings = JaxBackend().setup(threads=2)
    assert settings.matmul_precision == "highest" == jax.config.jax_default_matmul_precision
    assert settings.tf32 is False and settings.device == "cpu" and settings.companions["jaxlib"]
    assert "XLA_FLAGS" in settings.xla and "XLA_PYTHON_CLIENT_PREALLOCATE" in settings.xla
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in settings.extra.values())


def test_cuda_without_a_gpu_is_a_clear_error():
    jax = pytest.importorskip("jax")
    try:
        jax.devices("gpu")
        pytest.skip("a GPU is visible to JAX")
    except RuntimeError:
        pass
    with pytest.raises(RuntimeError, match="no GPU visible to JAX"):
        JaxBackend().setup(threads=2, device="cuda")
    with pytest.raises(RuntimeError, match="no GPU visible to JAX"):  # before any weights or data are touched
        JaxBackend().build(get_workload("seed-mlp"), {}, None, "jit", device="cuda")


@pytest.mark.slow
@pytest.mark.parametrize("name, batch_size", [("seed-mlp", None), ("resnet-mini", 16)])  # 16: a faster reference
def test_eager_matches_reference(name, batch_size, cases):
    pytest.importorskip("jax")
    w, data, params, idx, lrs, expected = cases(name, batch_size)
    trainer = JaxBackend().build(w, params, data, "eager")
    assert not hasattr(trainer._step, "lower"), "eager runs the step function without jax.jit"
    after = _check(w, data, params, idx, lrs, expected, trainer, w.parity)
    moving = [k for k, g in expected["grads"].items() if np.max(np.abs(g)) > 1e-9]
    assert _max_abs({k: after[k] for k in moving}, {k: expected["params"][k] for k in moving}) <= 1e-4
    assert trainer.device_peak_bytes() is None  # the CPU


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", ["seed-mlp", "lenet5"])
def test_mixed_precision_matches_reference(name, precision, cases):
    pytest.importorskip("jax")
    w, data, params, idx, lrs, expected = cases(name)
    trainer = JaxBackend().build(w, params, data, "jit", precision)
    _check(w, data, params, idx, lrs, expected, trainer, w.parity.for_precision(precision))
    assert trainer._step._cache_size() == 1  # the partial batch reuses the compiled step


@pytest.mark.slow
def test_fp16_loss_scale_skips_overflow_grows_and_clips_unscaled(cases):
    """Dynamic loss scaling in the carry, and clipping of the true (unscaled) gradients: one SGD step of rate 1
    moves the parameters by exactly the clip norm (clipping the scaled ones would move them 2**15 times less)."""
    jax = pytest.importorskip("jax")
    base, data, params, idx, _, expected = cases("seed-mlp")

    def set_carry(**values):  # placed like the carry's own scalars, so the compiled step is reused
        trainer.carry = {**trainer.carry, **{k: jax.device_put(v, trainer.carry[k].sharding)
                                             for k, v in values.items()}}

    clip = 0.05
    assert np.sqrt(sum(np.sum(np.square(g)) for g in expected["grads"].values())) > 10 * clip
    w = dataclasses.replace(base, optimizer=OptimizerSpec(kind="sgd", learning_rate=1.0, clip_norm=clip))
    trainer = JaxBackend().build(w, params, data, "jit", "fp16")
    assert float(trainer.carry["scale"]) == 2.0 ** 15
    set_carry(scale=np.float32(2.0 ** 40))  # the float16 backward overflows
    assert np.isfinite(trainer.train_step(idx[0], 1.0))  # the float32 loss of the unscaled batch
    assert _max_abs(trainer.params(), params) == 0.0, "a non-finite gradient skips the update"
    assert float(trainer.carry["scale"]) == 2.0 ** 39 and int(trainer.carry["good"]) == 0
    set_carry(scale=np.float32(2.0 ** 15), good=np.int32(1998))
    trainer.train_step(idx[0], 1.0)
    moved = np.sqrt(sum(np.sum(np.square(v.astype(np.float64) - params[k])) for k, v in trainer.params().items()))
    assert moved == pytest.approx(clip, rel=1e-3)
    assert float(trainer.carry["scale"]) == 2.0 ** 15 and int(trainer.carry["good"]) == 1999
    trainer.train_step(idx[1], 1.0)  # the 2000th finite step in a row doubles the scale
    assert float(trainer.carry["scale"]) == 2.0 ** 16 and int(trainer.carry["good"]) == 0
