"""Every backend against the float64 numpy reference on every built-in workload (in process, slow).

Dropout is disabled, as in parity checks. A few steps per workload keep it fast; ``isobench parity``
(tests/test_frameworks_e2e.py) runs the longer checks in worker processes."""
import numpy as np
import pytest

from isobench.backends import DEFAULT_FRAMEWORKS, get_backend, is_installed
from isobench.backends.reference import ReferenceBackend
from isobench.data import batches, epoch_orders, load_dataset
from isobench.workloads import SCALABLE, init_params, list_workloads
from isobench.workloads.schedule import learning_rates

pytestmark = pytest.mark.slow
STEPS = 4
# the compute-bound workloads are left out: the float64 reference of the full models takes hours, and their parity
# scale is checked end to end (worker processes, `isobench parity`) in tests/test_compute_bound.py
WORKLOADS = [w.without_dropout() for w in list_workloads() if w.name not in SCALABLE]


def _max_abs(a: dict, b: dict) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


@pytest.fixture(scope="module")
def prepared():
    out = {}
    for w in WORKLOADS:
        data = load_dataset(w)
        orders = epoch_orders(len(data.x_train), w.epochs, w.seed)
        lrs = learning_rates(w.optimizer, w.schedule, w.epochs * w.steps_per_epoch(len(data.x_train)))
        params = init_params(w)
        ref = ReferenceBackend().build(w, params, data, "reference")  # the DP-SGD reference for dp-sgd
        idx = batches(orders[0], w.batch_size)[:STEPS]
        expected = {"logits": ref.logits(data.x_test[:64]), "grads": ref.gradients(idx[0])}
        expected["losses"] = [ref.train_step(i, lrs[s]) for s, i in enumerate(idx)]
        expected["params"] = ref.params()
        expected["eval"] = ref.evaluate()
        out[w.name] = (w, data, params, idx, lrs, expected)
    return out


@pytest.mark.parametrize("framework", DEFAULT_FRAMEWORKS)
@pytest.mark.parametrize("workload", [w.name for w in WORKLOADS])
def test_backend_matches_reference(framework, workload, prepared):
    backend = get_backend(framework)
    if not is_installed(backend):
        pytest.skip(f"{framework} is not installed")
    w, data, params, idx, lrs, expected = prepared[workload]
    tol = w.parity
    trainer = backend.build(w, params, data, backend.modes[0])
    assert _max_abs(trainer.params(), params) == 0.0, "weights must load exactly"
    assert np.max(np.abs(trainer.logits(data.x_test[:64]) - expected["logits"])) <= tol.forward_atol
    assert _max_abs(trainer.gradients(idx[0]), expected["grads"]) <= tol.grad_atol
    assert _max_abs(trainer.params(), params) == 0.0, "gradients() must change nothing (BatchNorm state included)"
    losses = [trainer.train_step(i, lrs[s]) for s, i in enumerate(idx)]
    assert np.max(np.abs(np.array(losses) - expected["losses"])) <= tol.loss_atol
    state = w.state_shapes()
    after = trainer.params()
    # parameters with a structurally zero gradient (an attention key bias: softmax ignores a constant added to
    # every score) are left out: Adam turns float32 rounding noise there into lr-sized steps that move nothing
    moving = [k for k, g in expected["grads"].items() if np.max(np.abs(g)) > 1e-9]
    assert _max_abs({k: after[k] for k in moving}, {k: expected["params"][k] for k in moving}) <= 1e-4
    if state:
        assert _max_abs({k: after[k] for k in state}, {k: expected["params"][k] for k in state}) <= tol.state_atol
    loss, acc = trainer.evaluate()
    assert abs(loss - expected["eval"][0]) <= tol.epoch_loss_atol
    assert abs(acc - expected["eval"][1]) <= 2 / len(data.y_test.reshape(-1))  # at most 2 argmax near-ties differ
