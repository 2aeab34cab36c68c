"""The neutral inputs: seeded split, per-epoch orders and initial weights are reproducible and correct."""
import numpy as np

from isobench.data import batches, epoch_orders, load_dataset
from isobench.workloads import get_workload, init_params

W = get_workload("seed-mlp")


def test_digits_split_is_seeded_and_disjoint():
    a, b = load_dataset(W), load_dataset(W)
    assert a.x_train.shape == (1438, 64) and a.x_test.shape == (359, 64)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0 and a.x_train.dtype == np.float32
    rows = {r.tobytes() for r in a.x_test}
    assert sum(r.tobytes() in rows for r in a.x_train) < 5  # digits has a few duplicate images, no leak of the split


def test_epoch_orders_are_permutations_that_differ_per_epoch():
    o = epoch_orders(1438, 10, seed=0)
    assert o.shape == (10, 1438)
    assert all(np.array_equal(np.sort(row), np.arange(1438)) for row in o)
    assert not np.array_equal(o[0], o[1])
    assert np.array_equal(o, epoch_orders(1438, 10, seed=0))
    b = batches(o[0], 32)
    assert len(b) == 45 and len(b[-1]) == 1438 - 44 * 32


def test_glorot_uniform_init_is_deterministic_with_zero_biases():
    p, q = init_params(W), init_params(W)
    assert list(p) == ["dense_0/kernel", "dense_0/bias", "dense_1/kernel", "dense_1/bias",
                       "dense_2/kernel", "dense_2/bias"]
    assert p["dense_0/kernel"].shape == (64, 128) and p["dense_2/kernel"].shape == (64, 10)
    for k in p:
        assert np.array_equal(p[k], q[k]) and p[k].dtype == np.float32
    limit = np.sqrt(6 / (64 + 128))
    k0 = p["dense_0/kernel"]
    assert np.abs(k0).max() <= limit and np.abs(k0).max() > 0.95 * limit
    assert not p["dense_1/bias"].any()
