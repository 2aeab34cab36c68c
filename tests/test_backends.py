"""The framework backends against the float64 numpy reference, on the real frameworks.

Each framework trains ``seed-mlp`` once per module (fixture ``run``); the tests then check one property
each, with the workload's own parity tolerances.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from isobench.backends import common, get_backend
from isobench.backends.base import LayerBuilder
from isobench.backends.reference import ReferenceTrainer
from isobench.data import batches, epoch_orders, load_dataset
from isobench.workloads import get_workload, init_params
from isobench.workloads.spec import LAYER_TYPES, UPDATE_RULES, Dense, MaxPool2D, OptimizerSpec

FRAMEWORKS = ("torch", "tensorflow", "jax")
WORKLOAD = get_workload("seed-mlp")
TOL = WORKLOAD.parity
LR = WORKLOAD.optimizer.learning_rate  # seed-mlp has a constant schedule: every step's rate


def _max_abs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _train(trainer, orders: np.ndarray) -> tuple[list[float], list[float]]:
    """All epochs; returns the first epoch's per-step losses and every epoch's mean loss."""
    epoch_means, first = [], []
    for order in orders:
        losses = [trainer.train_step(idx, LR) for idx in batches(order, WORKLOAD.batch_size)]
        first = first or losses
        epoch_means.append(float(np.mean(losses)))
    return first, epoch_means


@pytest.fixture(scope="module")
def inputs():
    data = load_dataset(WORKLOAD)
    return init_params(WORKLOAD), data, epoch_orders(len(data.x_train), WORKLOAD.epochs, WORKLOAD.seed)


@pytest.fixture(scope="module")
def reference(inputs):
    params, data, orders = inputs
    ref = ReferenceTrainer(WORKLOAD, params, data)
    out = {"logits": ref.logits(data.x_test), "grads": ref.gradients(batches(orders[0], WORKLOAD.batch_size)[0])}
    out["steps"], out["epochs"] = _train(ref, orders)
    out["accuracy"] = ref.evaluate()[1]
    return out


@pytest.fixture(scope="module", params=FRAMEWORKS)
def run(request, inputs):
    """One framework: set up with 2 threads, build, probe before training, train all epochs."""
    pytest.importorskip(get_backend(request.param).import_name)
    params, data, orders = inputs
    backend = get_backend(request.param)
    settings = backend.setup(threads=2)
    trainer = backend.build(WORKLOAD, params, data, backend.modes[0])
    out = {"backend": backend, "settings": settings, "trainer": trainer, "params0": trainer.params(),
           "logits": trainer.logits(data.x_test),
           "grads": trainer.gradients(batches(orders[0], WORKLOAD.batch_size)[0])}
    out["params_after_grads"] = trainer.params()
    out["steps"], out["epochs"] = _train(trainer, orders)
    out["eval"] = trainer.evaluate()
    return out


def test_importing_backends_does_not_import_frameworks():
    code = ("import sys, isobench.backends.torch_backend, isobench.backends.tf_backend, "
            "isobench.backends.jax_backend, isobench.backends.keras_backend, isobench.backends.common; "
            "loaded = [m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_unknown_mode_is_rejected_before_import(name, inputs):
    with pytest.raises(ValueError, match="unknown mode 'warp'"):
        get_backend(name).build(WORKLOAD, inputs[0], inputs[1], "warp")


# ---- the shape every backend shares (backends/base.py, backends/common.py), no framework needed ----------

def test_layer_builder_dispatches_by_kind_and_names_what_is_missing():
    class Builder(LayerBuilder):
        display = "Toy"

        def dense(self, layer, shape):
            return "dense", shape

        def dense_backward(self, layer):
            return "back"

    b, dense = Builder(), Dense(10, "d")
    assert b.build(dense, (3,)) == ("dense", (3,)) and b.method(dense, "_backward")(dense) == "back"
    with pytest.raises(NotImplementedError, match="Toy backend has no layer 'maxpool2d'"):
        b.build(MaxPool2D(2))
    with pytest.raises(NotImplementedError, match="Toy backend has no layer"):
        b.build(object())


def test_every_backend_has_one_method_per_layer_kind():
    from isobench.backends import jax_backend, keras_backend, reference, tf_backend, torch_backend

    builders = (torch_backend._Builder, tf_backend._Builder, jax_backend.Forward, keras_backend._Builder,
                reference.Model)
    for cls in builders:
        assert issubclass(cls, LayerBuilder)
        assert [k for k in LAYER_TYPES if not callable(getattr(cls, k, None))] == [], cls
    assert [k for k in LAYER_TYPES if not callable(getattr(reference.Model, k + "_backward", None))] == []


def test_window_geometry_and_padding():
    assert common.pool_window(MaxPool2D(2)) == (2, 2) and common.pool_window(MaxPool2D(3, stride=1)) == (3, 1)
    assert common.conv_size(28, 5, 1) == 24 and common.conv_size(8, 3, 2, 1) == 4
    assert common.conv_padding(3, 1, 0) == "valid" and common.conv_padding(3, 1, 1) == "same"
    assert common.conv_padding(3, 2, 1) is None and common.conv_padding(5, 1, 1) is None  # the caller pads


def test_batch_padder_pads_short_batches_and_reuses_the_full_mask():
    made = []
    pad = common.BatchPadder(4, np.int32, lambda n: made.append(n) or np.ones(n, np.float32))
    idx, mask = pad(np.array([5, 6, 7, 8]))
    assert idx.dtype == np.int32 and pad(np.array([1, 2, 3, 4]))[1] is mask and made == [4]
    idx, mask = pad(np.array([9, 3]))
    assert idx.tolist() == [9, 3, 0, 0] and mask.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_held_rate_writes_only_changes():
    written = []
    rate = common.HeldRate(0.1, written.append, value=0.1)
    for lr in (None, 0.1, 0.05, 0.05, None):
        rate.set(lr)
    assert written == [0.05, 0.1] and rate.value == 0.1
    fresh = common.HeldRate(0.1, written.append)  # holds nothing yet: the first set writes
    fresh.set(None)
    assert written[-1] == 0.1


def test_overflow_free_halves_the_loss_scale_until_finite():
    tried = []

    def grads_at(scale):
        tried.append(scale)
        return np.array([np.inf if scale > 4 else scale])

    grads, scale = common.overflow_free(grads_at, lambda g: bool(np.isfinite(g).all()), 32.0)
    assert tried == [32.0, 16.0, 8.0, 4.0] and scale == 4.0 and grads.tolist() == [4.0]
    tried.clear()
    assert common.overflow_free(grads_at, lambda g: False, 1.0)[1] == 1.0 and tried == [1.0]  # no scaling


def test_moments_per_optimizer():
    assert common.moments(OptimizerSpec(kind="sgd")) == (False, False)
    assert common.moments(OptimizerSpec(kind="sgd", momentum=0.9)) == (True, False)
    assert common.moments(OptimizerSpec(kind="adamw")) == (True, True)
    assert common.moments(OptimizerSpec(kind="rmsprop")) == (False, True)


def test_every_update_rule_of_the_spec_is_implemented():
    from isobench.backends import base, torch_backend

    assert set(torch_backend._FAST_IMPL) == set(torch_backend._COMPILED_IMPL) == set(UPDATE_RULES)
    for kind in UPDATE_RULES:
        base.check_optimizer("Toy", kind)
    with pytest.raises(NotImplementedError, match="Toy backend has no optimizer 'dp-sgd'"):
        base.check_optimizer("Toy", "dp-sgd")  # checked by its base update


@pytest.mark.slow
class TestAgainstReference:
    def test_setup_reports_settings(self, run):
        settings, backend = run["settings"], run["backend"]
        assert settings is backend.settings and json.dumps(settings.to_dict())  # typed, and JSON-ready
        if backend.name != "jax":  # JAX has no thread knob
            # TensorFlow takes thread settings only before its runtime starts: when an earlier test in this
            # process started it, the setting in effect is reported together with the refusal
            assert settings.intra_op_threads == 2 or settings.threads_note
        else:
            assert settings.intra_op_threads is None and settings.threads_note
        assert settings.device == "cpu" and settings.device_name is None and settings.tf32 is False
        assert backend.version() and settings.version.startswith(backend.version().split("+")[0])

    def test_initial_params_exact(self, run, inputs):
        p0 = run["params0"]
        assert sorted(p0) == sorted(inputs[0])
        for k, v in inputs[0].items():
            assert p0[k].shape == v.shape and np.array_equal(p0[k], v), k

    def test_forward(self, run, reference):
        assert np.abs(run["logits"] - reference["logits"]).max() <= TOL.forward_atol

    def test_step0_gradients(self, run, reference):
        assert _max_abs(run["grads"], reference["grads"]) <= TOL.grad_atol

    def test_gradients_leave_params_alone(self, run, inputs):
        assert _max_abs(run["params_after_grads"], inputs[0]) == 0.0

    def test_training_leaves_inputs_alone(self, run, inputs):  # no aliasing of the caller's arrays
        assert _max_abs(inputs[0], init_params(WORKLOAD)) == 0.0

    def test_first_steps_loss(self, run, reference):
        n = TOL.steps
        assert np.abs(np.array(run["steps"][:n]) - reference["steps"][:n]).max() <= TOL.loss_atol

    def test_epoch_losses(self, run, reference):
        assert np.abs(np.array(run["epochs"]) - reference["epochs"]).max() <= TOL.epoch_loss_atol

    def test_accuracy_equal(self, run, reference):
        assert run["eval"][1] == reference["accuracy"]
        assert WORKLOAD.accuracy_band[0] <= run["eval"][1] <= WORKLOAD.accuracy_band[1]

    def test_partial_batch_reuses_the_compiled_step(self, run):
        """One trace/compile of the training step for all 10 epochs, partial last batches included."""
        t = run["trainer"]
        name = run["backend"].name
        if name == "tensorflow":
            assert t._train.experimental_get_tracing_count() == 1
        elif name == "jax":
            assert t._step._cache_size() == 1
        else:
            assert name == "torch"  # eager: nothing is compiled


@pytest.mark.slow
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_momentum_matches_heavy_ball(name, inputs):
    """SGD with momentum against float64 heavy-ball SGD (v = m*v + g; p -= lr*v) built on the reference."""
    pytest.importorskip(get_backend(name).import_name)
    params, data, orders = inputs
    workload = dataclasses.replace(WORKLOAD, optimizer=OptimizerSpec(kind="sgd", learning_rate=0.01, momentum=0.9))
    backend = get_backend(name)
    trainer = backend.build(workload, params, data, backend.modes[0])
    ref = ReferenceTrainer(WORKLOAD, params, data)  # used for its float64 gradients only
    velocity = {k: np.zeros_like(v) for k, v in ref.p.items()}
    for idx in batches(orders[0], WORKLOAD.batch_size)[:TOL.steps]:
        expected, grads = ref._loss_and_grads(idx)
        for k, g in grads.items():
            velocity[k] = 0.9 * velocity[k] + g
            ref.p[k] -= 0.01 * velocity[k]
        assert abs(trainer.train_step(idx, 0.01) - expected) <= TOL.loss_atol
    assert _max_abs(trainer.params(), ref.params()) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_unsupported_parts_are_named(name, inputs):
    @dataclasses.dataclass(frozen=True)
    class Mystery:
        kind = "mystery"

    pytest.importorskip(get_backend(name).import_name)
    backend, (params, data, _) = get_backend(name), inputs
    with pytest.raises(NotImplementedError, match="mystery"):
        backend.build(dataclasses.replace(WORKLOAD, layers=(Mystery(), Dense(10, "dense_0"))), params, data,
                      backend.modes[0])
    with pytest.raises(NotImplementedError, match="lion"):
        backend.build(dataclasses.replace(WORKLOAD, optimizer=OptimizerSpec(kind="lion")), params, data,
                      backend.modes[0])


# ---- torch only ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("workload", ["lenet5", "resnet-mini", "lstm-digits", "vit-digits", "gpt-tiny"])
def test_torch_float64_matches_reference_exactly(workload):
    """Built in float64, the torch model is the reference's arithmetic up to rounding: every layer's
    semantics, layout conversion and optimizer rule is checked far below the float32 tolerances."""
    torch = pytest.importorskip("torch")
    from isobench.backends.torch_backend import TorchTrainer
    from isobench.workloads.schedule import learning_rates

    w = get_workload(workload).without_dropout()
    data = load_dataset(w)
    params = init_params(w)
    lrs = learning_rates(w.optimizer, w.schedule, 10)
    idx = batches(epoch_orders(len(data.x_train), 1, w.seed)[0], w.batch_size)[:2]
    ref = ReferenceTrainer(w, params, data)
    trainer = TorchTrainer(w, params, data, "eager", dtype=torch.float64)
    assert np.abs(trainer.logits(data.x_test[:32]) - ref.logits(data.x_test[:32])).max() <= 1e-12
    assert _max_abs(trainer.gradients(idx[0]), ref.gradients(idx[0])) <= 1e-12
    for s, i in enumerate(idx):
        assert abs(trainer.train_step(i, lrs[s]) - ref.train_step(i, lrs[s])) <= 1e-12
    # 1e-8: Adam turns the rounding noise of analytically-zero gradients (conv bias before BatchNorm) into steps
    assert _max_abs(trainer.params(), ref.params()) <= 1e-8
    assert abs(trainer.evaluate()[0] - ref.evaluate()[0]) <= 1e-10


@pytest.mark.slow
def test_torch_dropout_is_seeded_and_off_outside_training():
    pytest.importorskip("torch")
    w = get_workload("vit-digits")
    assert w.has_dropout()
    data = load_dataset(w)
    params = init_params(w)
    idx = batches(epoch_orders(len(data.x_train), 1, w.seed)[0], w.batch_size)[:3]
    backend = get_backend("torch")
    runs, losses = [], []
    for wl in (w, w, w.without_dropout()):  # build seeds torch's default generator: build, then train
        runs.append(backend.build(wl, params, data, "eager"))
        grads = runs[-1].gradients(idx[0])
        losses.append([runs[-1].train_step(i, 1e-4) for i in idx])
        if wl is w:
            dropout_grads = grads
    # gradients() is a deterministic probe: dropout off, so it equals the dropout-free model's
    assert _max_abs(dropout_grads, grads) == 0.0
    assert losses[0] == losses[1]  # seeded from the workload seed
    assert losses[0][0] != losses[2][0]  # active in train_step
