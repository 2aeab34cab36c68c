"""DP-SGD in the backends: the float64 reference step against a hand computation, the step plan, the padding of
a compiled private step, the requests a backend rejects, and parity of dp-mlp in every framework (slow)."""
from dataclasses import replace

import numpy as np
import pytest

from isobench.backends import get_backend, is_installed
from isobench.backends.common import BatchPadder
from isobench.backends.private import Noise
from isobench.backends.reference import ReferenceBackend
from isobench.data import Dataset, epoch_orders, load_dataset
from isobench.runner.inputs import step_plan
from isobench.workloads import get_workload, init_params
from isobench.workloads.privacy import noise_rng
from isobench.workloads.spec import BatchNorm, Dense, OptimizerSpec, Workload

DP = OptimizerSpec(kind="dp-sgd", base="sgd", learning_rate=0.5, clip=1.0, noise_multiplier=0.5, sampling="shuffle")
TINY = Workload(name="tiny", description="one dense layer", input_shape=(2,), num_classes=2,
                layers=(Dense(2, "out"),), optimizer=DP, batch_size=4, epochs=1, seed=3)
X = np.array([[3.0, 4.0], [0.1, 0.2], [-2.0, 1.0]], np.float32)  # the first example's gradient is clipped
Y = np.array([1, 1, 0])
PARAMS = {"out/kernel": np.array([[0.5, -0.5], [0.25, 0.0]], np.float32), "out/bias": np.zeros(2, np.float32)}
DATA = Dataset(X, Y, X, Y)


def test_the_reference_step_is_the_hand_computed_one():
    trainer = ReferenceBackend().build(TINY, PARAMS, DATA, "reference")
    w, b = PARAMS["out/kernel"].astype(np.float64), PARAMS["out/bias"].astype(np.float64)
    total_w, total_b, losses, scales = np.zeros_like(w), np.zeros_like(b), [], []
    for x, y in zip(X.astype(np.float64), Y):
        z = x @ w + b
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        losses.append(-np.log(p[y]))
        d = p - np.eye(2)[y]                                   # d loss / d logits of one example
        gw, gb = np.outer(x, d), d
        scale = min(1.0, 1.0 / (np.sqrt((gw ** 2).sum() + (gb ** 2).sum()) + 1e-6))
        scales.append(scale)
        total_w, total_b = total_w + scale * gw, total_b + scale * gb
    assert scales[0] < 1.0 and scales[1] == 1.0              # clipping scaled the first example only
    assert np.allclose(trainer.gradients(np.arange(3))["out/kernel"], total_w, atol=1e-12)
    z = noise_rng(TINY.seed).standard_normal(6, dtype=np.float32).astype(np.float64)  # kernel (2, 2), then bias
    sigma_c = 0.5 * 1.0
    grad_w, grad_b = (total_w + sigma_c * z[:4].reshape(2, 2)) / 4, (total_b + sigma_c * z[4:]) / 4  # over batch 4
    loss = trainer.train_step(np.arange(3), 0.5)
    assert loss == pytest.approx(np.mean(losses), abs=1e-12)
    after = trainer.params()
    assert np.allclose(after["out/kernel"], w - 0.5 * grad_w, atol=1e-12)
    assert np.allclose(after["out/bias"], b - 0.5 * grad_b, atol=1e-12)


def test_an_empty_batch_adds_only_the_noise():
    trainer = ReferenceBackend().build(TINY, PARAMS, DATA, "reference")
    noise = Noise(TINY)
    z = noise.split(noise_rng(TINY.seed).standard_normal(noise.size, dtype=np.float32).astype(np.float64))
    assert trainer.train_step(np.array([], np.int64), 0.5) == 0.0
    assert np.allclose(trainer.params()["out/bias"], -0.5 * 0.5 * z["out/bias"] / 4, atol=1e-12)


def test_poisson_steps_are_drawn_per_epoch_and_every_non_empty_one_is_steady():
    w = get_workload("dp-mlp")
    n = 1437
    plan = step_plan(w, epoch_orders(n, w.epochs, w.seed), n)
    assert plan.poisson and len(plan.epochs) == w.epochs and all(len(e) == w.steps_per_epoch(n) for e in plan.epochs)
    sizes = [len(i) for e in plan.epochs for i in e]
    assert len(set(sizes)) > 5 and abs(np.mean(sizes) - 32) < 2 and plan.samples == sum(sizes)
    assert plan.steady(np.arange(37)) and not plan.steady(np.arange(0))
    again = step_plan(replace(w, seed=1), epoch_orders(n, w.epochs, 1), n)
    assert not np.array_equal(again.epochs[0][0], plan.epochs[0][0])  # the training seed draws them
    shuffled = step_plan(get_workload("seed-mlp"), epoch_orders(n, 2, 0), n)
    assert not shuffled.poisson and shuffled.steady(np.arange(32)) and not shuffled.steady(np.arange(30))


def test_a_compiled_private_step_pads_to_a_few_bucketed_sizes():
    pad = BatchPadder(32, np.int32, lambda n: np.ones(n, np.float32), bucket=8)
    assert [pad.size(n) for n in (0, 5, 32, 33, 40, 41, 57)] == [32, 32, 32, 40, 40, 48, 64]
    idx, mask = pad(np.arange(37))
    assert len(idx) == 40 and mask.sum() == 37 and mask[37:].sum() == 0
    idx, mask = BatchPadder(1, np.int64, lambda n: np.ones(n))(np.array([], np.int64))
    assert len(idx) == 1 and mask.sum() == 0  # eager: only an empty batch is padded


@pytest.mark.parametrize("framework", ["torch", "tensorflow", "jax", "keras-jax"])
def test_dp_sgd_with_batchnorm_or_in_keras_is_refused_by_name(framework):
    mlp = get_workload("dp-mlp")
    with_bn = replace(mlp, layers=(Dense(16, "d"), BatchNorm("bn"), Dense(10, "out")))
    backend = get_backend(framework)
    with pytest.raises(NotImplementedError) as e:  # before the framework is imported
        backend.build(with_bn if not framework.startswith("keras") else mlp, {}, None, backend.modes[0])
    expected = "no dp-sgd" if framework.startswith("keras") else "dp-sgd does not allow BatchNorm (bn)"
    assert expected in str(e.value)


def _trainers(framework: str, modes: tuple[str, str]):
    backend = get_backend(framework)
    if not is_installed(backend):
        pytest.skip(f"{framework} is not installed")
    backend.setup(1)
    w = get_workload("dp-mlp")
    data = load_dataset(w)
    return w, [backend.build(w, init_params(w), data, m) for m in modes]


@pytest.mark.slow
@pytest.mark.parametrize("framework, modes", [("jax", ("jit", "eager")), ("tensorflow", ("xla", "graph")),
                                              ("torch", ("compile", "eager"))])
def test_padded_poisson_batches_train_as_the_unpadded_ones(framework, modes):
    w, (padded, plain) = _trainers(framework, modes)
    rng = np.random.default_rng(0)
    batches = [rng.choice(1437, n, replace=False) for n in (37, 0, 21, 32, 45)]  # padded to 40, 32, 32, -, 48
    for idx in batches:
        assert padded.train_step(idx, 0.02) == pytest.approx(plain.train_step(idx, 0.02), abs=1e-6)
    a, b = padded.params(), plain.params()
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) < 1e-6
    assert padded.train_step(np.array([], np.int64), 0.02) == 0.0  # an empty batch: loss 0, only noise


@pytest.mark.slow
def test_dp_mlp_parity_in_every_framework():
    from isobench.runner.parity import run_parity

    cells = [(f, get_backend(f).modes[0]) for f in ("torch", "tensorflow", "jax") if is_installed(get_backend(f))]
    report = run_parity("dp-mlp", cells, threads=1)
    assert report.passed, [(f.framework, f.error, [c for c in f.checks if not c.passed]) for f in report.frameworks]
    names = {c.name for f in report.frameworks for c in f.checks}
    assert {"step-0 gradients, clipped per-example sum", "loss, first 20 steps"} <= names


def test_the_opacus_mode_is_for_private_workloads_only():
    from isobench.config import RunChoices, resolve_run
    from isobench.errors import UserError
    from isobench.runner.session import plan_session

    seed = get_workload("seed-mlp")
    with pytest.raises(ValueError, match="mode 'opacus' of PyTorch is for dp-sgd workloads only"):
        get_backend("torch").build(seed, init_params(seed), None, "opacus")  # before anything is built
    alone, _ = resolve_run(RunChoices(workloads=["seed-mlp"], frameworks="torch", modes="all"))
    assert alone.modes == {"torch": ["eager", "compile"]}
    with pytest.raises(UserError, match="only dp-sgd workloads"):
        resolve_run(RunChoices(workloads=["seed-mlp"], frameworks="torch", modes="opacus"))
    mixed, _ = resolve_run(RunChoices(workloads=["dp-mlp"], frameworks="torch", modes="all", repeats=2))
    assert mixed.workloads == ["dp-mlp", "seed-mlp"] and mixed.modes == {"torch": ["eager", "compile", "opacus"]}
    session = plan_session(mixed)
    assert {(s.workload, s.mode) for s in session.plan if s.mode == "opacus"} == {("dp-mlp", "opacus")}
    assert len(session.plan) == session.total == 2 * 5  # dp-mlp in 3 modes, seed-mlp in 2, twice


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["dp-mlp", "dp-lenet5"])
def test_opacus_mode_parity(workload):
    from isobench.runner.parity import run_parity

    if not is_installed(get_backend("torch")):
        pytest.skip("torch is not installed")
    pytest.importorskip("opacus")
    report = run_parity(workload, [("torch", "opacus")], threads=1)
    assert report.passed, [(f.framework, f.error, [c for c in f.checks if not c.passed]) for f in report.frameworks]
    assert "step-0 gradients, clipped per-example sum" in {c.name for f in report.frameworks for c in f.checks}
