"""TensorFlow's modes (graph, eager, xla), mixed precisions (bf16, fp16) and devices, on the real framework.

Each check trains a few steps ending with a short batch (the partial last batch of an epoch, or half a batch
where the epoch divides evenly) and compares with the float64 numpy reference: float32 modes against the
workload's own tolerances, bf16/fp16 against :meth:`ParitySpec.for_precision`."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from isobench.backends import get_backend
from isobench.backends import tf_backend
from isobench.backends.reference import ReferenceTrainer
from isobench.data import batches, epoch_orders, load_dataset
from isobench.workloads import get_workload, init_params
from isobench.workloads.schedule import learning_rates

BACKEND = get_backend("tensorflow")


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _max_ref(grads: dict) -> float:
    return max(float(np.max(np.abs(g))) for g in grads.values())


def _max_abs(a: dict, b: dict) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


@lru_cache(maxsize=None)
def _case(name: str):
    """Inputs, three batches (the last one short) and the float64 reference's results on them."""
    w = get_workload(name).without_dropout()
    data, params = load_dataset(w), init_params(w)
    bs = batches(epoch_orders(len(data.x_train), 1, w.seed)[0], w.batch_size)
    # an even short batch: TensorFlow 2.21's oneDNN conv2d_backprop_filter corrupts memory on odd batches of
    # resnet-mini on AVX512-BF16 CPUs (AMD EPYC Zen 4), a framework fault a run records as crashed
    # (docs/measurement.md, "Known framework faults")
    short = bs[-1] if len(bs[-1]) < w.batch_size else bs[2][:w.batch_size // 2 + 4]
    idx = [bs[0], bs[1], short]
    lrs = learning_rates(w.optimizer, w.schedule, len(idx))
    ref = ReferenceTrainer(w, params, data)
    expected = {"logits": ref.logits(data.x_test[:64]), "grads": ref.gradients(idx[0]),
                "losses": [ref.train_step(i, lrs[s]) for s, i in enumerate(idx)]}
    expected["params"] = ref.params()
    return w, data, params, idx, lrs, expected


def _check_against_reference(trainer, name: str, tol) -> None:
    w, data, params, idx, lrs, expected = _case(name)
    assert _max_abs(trainer.params(), params) == 0.0, "float32 master weights load exactly"
    assert np.max(np.abs(trainer.logits(data.x_test[:64]) - expected["logits"])) <= tol.forward_atol
    grads = trainer.gradients(idx[0])
    assert all(g.dtype == np.float32 for g in grads.values())
    assert _max_abs(grads, expected["grads"]) <= tol.grad_tolerance(_max_ref(expected["grads"]))
    assert _max_abs(trainer.params(), params) == 0.0, "gradients() changes nothing"
    losses = [trainer.train_step(i, lrs[s]) for s, i in enumerate(idx)]
    assert all(type(loss) is float for loss in losses)
    assert np.max(np.abs(np.array(losses) - expected["losses"])) <= tol.loss_tolerance(max(map(abs, expected["losses"])))
    after, state = trainer.params(), w.state_shapes()
    assert all(v.dtype == np.float32 for v in after.values())
    if state:  # the short batch's statistics count its real rows only (xla pads it)
        assert _max_abs({k: after[k] for k in state}, {k: expected["params"][k] for k in state}) <= tol.state_atol


# ---- no training ----------------------------------------------------------------------------------

def test_modes_and_precisions():
    assert BACKEND.modes == ("graph", "eager", "xla")  # graph first: the default
    assert BACKEND.precisions == ("fp32", "bf16", "fp16", "tf32")


@pytest.mark.parametrize("precision, device, message", [("fp8", "cpu", "unknown precision 'fp8'"),
                                                        ("fp32", "tpu", "unknown device 'tpu'")])
def test_unknown_precision_or_device_is_rejected(precision, device, message):
    w, data, params = _case("seed-mlp")[:3]
    with pytest.raises(ValueError, match=message):
        BACKEND.build(w, params, data, "graph", precision, device)


def test_cuda_without_gpu_is_a_clear_error(tf):
    if tf.config.get_visible_devices("GPU"):
        pytest.skip("a GPU is visible")
    w, data, params = _case("seed-mlp")[:3]
    with pytest.raises(RuntimeError, match="no GPU visible to TensorFlow"):
        BACKEND.setup(2, "cuda")
    with pytest.raises(RuntimeError, match="no GPU visible to TensorFlow"):
        BACKEND.build(w, params, data, "graph", "fp32", "cuda")


def test_setup_turns_tf32_off_and_reports_it(tf):
    tf.config.experimental.enable_tensor_float_32_execution(True)
    settings = BACKEND.setup(2, "cpu")
    assert settings.tf32 is False
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
    assert settings.device == "cpu" and settings.onednn is not None and settings.determinism is False
    assert set(settings.xla) == {"jit_auto_clustering", "TF_XLA_FLAGS", "XLA_FLAGS"}
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in settings.extra.values())


def test_device_peak_bytes(tf, monkeypatch):
    """The GPU reading is TF's allocator peak on GPU:0; a CPU trainer reports none."""
    asked = []
    monkeypatch.setattr(tf.config.experimental, "get_memory_info",
                        lambda device: asked.append(device) or {"current": 1024, "peak": 4096})
    assert tf_backend.gpu_peak_bytes(tf) == 4096 and asked == ["GPU:0"]
    w, data, params = _case("seed-mlp")[:3]
    assert BACKEND.build(w, params, data, "graph").device_peak_bytes() is None


# ---- a few steps against the reference ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "xla"])
@pytest.mark.parametrize("name", ["seed-mlp", "resnet-mini"])
def test_mode_matches_reference(tf, mode, name):
    w = _case(name)[0]
    trainer = BACKEND.build(w, _case(name)[2], _case(name)[1], mode)
    _check_against_reference(trainer, name, w.parity)  # resnet-mini's grad_atol allows XLA's one ReLU flip (zoo.py)
    if mode == "xla":  # one trace, and the short batch padded to the compiled batch size
        assert trainer._train.experimental_get_tracing_count() == 1
        idx, mask = trainer._batch_args(_case(name)[3][-1])
        assert idx.shape == mask.shape == (w.batch_size,) and mask.sum() == len(_case(name)[3][-1])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", ["seed-mlp", "lenet5"])
def test_mixed_precision_matches_reference(tf, precision, name):
    w, data, params = _case(name)[:3]
    trainer = BACKEND.build(w, params, data, "graph", precision)
    _check_against_reference(trainer, name, w.parity.for_precision(precision))
    assert trainer.loss_scale == (2.0 ** 15 if precision == "fp16" else None)  # no overflow in these steps


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["graph", "eager", "xla"])
def test_fp16_dynamic_loss_scaling(tf, mode):
    """Overflowed gradients skip the step and halve the scale; 2000 good steps in a row double it."""
    w, data, params, idx = _case("seed-mlp")[:4]
    trainer = BACKEND.build(w, params, data, mode, "fp16")
    trainer._loss_scale.assign(2.0 ** 40)  # the float32 loss gradient times 2**40 overflows float16
    loss = trainer.train_step(idx[0], 0.01)
    assert np.isfinite(loss) and abs(loss - _case("seed-mlp")[5]["losses"][0]) < 0.01  # the unscaled loss
    assert trainer.loss_scale == 2.0 ** 39
    assert _max_abs(trainer.params(), params) == 0.0, "the overflowed step is skipped"
    trainer._loss_scale.assign(2.0 ** 10)
    trainer._good_steps.assign(1999)
    trainer.train_step(idx[0], 0.01)
    assert trainer.loss_scale == 2.0 ** 11 and int(trainer._good_steps.numpy()) == 0
    assert _max_abs(trainer.params(), params) > 0.0
