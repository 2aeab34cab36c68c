"""Data sets, seeded splits and per-epoch index orders. Produced by the runner, identical for every backend."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..workloads.spec import DataSpec, Workload

SPLIT_STREAM = 1
ORDER_STREAM = 3


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays: ``x`` float32 with the workload's input shape, ``y`` int32 class labels."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _load_digits(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # digits pixels are 0..16
    return x, bunch.target.astype(np.int32)


LOADERS = {"digits": _load_digits}


def load_dataset(workload: Workload) -> Dataset:
    """Load the workload's data and split it with a permutation seeded by the workload seed."""
    spec = workload.data
    x, y = LOADERS[spec.source](spec)
    x = x.reshape((len(x),) + tuple(workload.input_shape))
    perm = np.random.default_rng([workload.seed, SPLIT_STREAM]).permutation(len(x))
    n_test = int(round(spec.test_fraction * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    return Dataset(x[train], y[train], x[test], y[test])


def epoch_orders(n_train: int, epochs: int, seed: int) -> np.ndarray:
    """Index order of every epoch, shape ``(epochs, n_train)``: a fresh seeded shuffle per epoch."""
    rng = np.random.default_rng([seed, ORDER_STREAM])
    return np.stack([rng.permutation(n_train) for _ in range(epochs)]).astype(np.int64)


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split one epoch's order into batches; the last one keeps the remainder."""
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def fingerprint(*arrays: np.ndarray) -> str:
    """Short content hash, recorded with each run so identical inputs can be checked after the fact."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
