"""Data sets, seeded splits and per-epoch index orders. Produced by the runner, identical for every backend.

Sources (``DataSpec.source``): ``digits`` (scikit-learn's bundled 8x8 digits, no download), ``mnist`` and
``fashion-mnist`` (IDX files, gzipped or not, from ``--data-dir``), ``cifar10`` (the python pickle batches
from ``--data-dir``), ``synthetic-images``, ``synthetic-tokens`` and ``synthetic-token-classes`` (seeded
generators of any size).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..workloads.spec import DataSpec, Workload
from .formats import read_cifar10, read_idx_pair

SPLIT_STREAM = 1
ORDER_STREAM = 3
DATA_STREAM = 4


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays: ``x`` float32 (images, sequences) or int32 (tokens) with the workload's input shape,
    ``y`` int32 class labels, shape (N,) or (N, T) for per-position targets."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W) or (N, H, W, C) images to size x size."""
    from scipy.ndimage import zoom

    factors = (1, size / images.shape[1], size / images.shape[2]) + (1,) * (images.ndim - 3)
    return zoom(images, factors, order=1, grid_mode=True, mode="nearest").astype(np.float32)


def _digits(spec: DataSpec, workload: Workload, data_dir):
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # digits pixels are 0..16
    if spec.image_size:
        x = _resize(x.reshape(-1, 8, 8), spec.image_size)
    return x, bunch.target.astype(np.int32)


def _idx(kind: str):
    def load(spec: DataSpec, workload: Workload, data_dir):
        if data_dir is None:
            raise UserError(f"{kind} needs --data-dir: a folder with the four IDX files "
                            "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-..., gzipped or not)")
        (xtr, ytr), (xte, yte) = (read_idx_pair(Path(data_dir), part) for part in ("train", "t10k"))
        return _split_given(spec, xtr, ytr, xte, yte)
    return load


def _cifar(spec: DataSpec, workload: Workload, data_dir):
    if data_dir is None:
        raise UserError("cifar10 needs --data-dir: the folder with data_batch_1..5 and test_batch "
                        "(CIFAR-10 python version)")
    (xtr, ytr), (xte, yte) = read_cifar10(Path(data_dir))
    return _split_given(spec, xtr, ytr, xte, yte)


def _split_given(spec, xtr, ytr, xte, yte):
    """Scale 8-bit pixels into [0, 1], resize if asked; the files' own train/test split is kept."""
    def prep(x):
        x = x.astype(np.float32) / 255.0
        return _resize(x, spec.image_size) if spec.image_size and spec.image_size != x.shape[1] else x
    xtr, xte = prep(xtr[:spec.n_train]), prep(xte[:spec.n_test])
    return (xtr, ytr[:spec.n_train].astype(np.int32)), (xte, yte[:spec.n_test].astype(np.int32))


def _synthetic_images(spec: DataSpec, workload: Workload, data_dir):
    """Class templates (a colour cast plus a smooth oriented stripe pattern) under per-image contrast changes
    and pixel noise: learnable by a small CNN in a few epochs, not separable by a single pixel."""
    rng = np.random.default_rng([workload.seed, DATA_STREAM])
    h, w, c = workload.input_shape
    n = (spec.n_train or 1024) + (spec.n_test or 256)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    templates = np.zeros((workload.num_classes, h, w, c))
    for k in range(workload.num_classes):
        for ch in range(c):
            fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
            templates[k, :, :, ch] = np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    colours = rng.uniform(-0.25, 0.25, (workload.num_classes, 1, 1, c))
    y = rng.integers(0, workload.num_classes, n)
    shift = rng.uniform(0.6, 1.4, (n, 1, 1, 1))  # per-image contrast
    x = 0.5 + colours[y] + 0.25 * shift * templates[y] + rng.normal(0.0, 0.3, (n, h, w, c))
    return x.astype(np.float32), y.astype(np.int32)


def _synthetic_tokens(spec: DataSpec, workload: Workload, data_dir):
    """Windows of a seeded Markov chain whose every token has three likely successors (probabilities
    0.6/0.3/0.1): a next-token model can learn it down to the chain's entropy rate, about 0.9 nats/token."""
    rng = np.random.default_rng([workload.seed, DATA_STREAM])
    v, t = spec.vocab, spec.seq_len
    n = (spec.n_train or 2048) + (spec.n_test or 256)
    successors = np.stack([rng.choice(v, 3, replace=False) for _ in range(v)])
    probs = np.array([0.6, 0.3, 0.1])
    length = n * (t + 1)
    corpus = np.empty(length, dtype=np.int32)
    corpus[0] = rng.integers(v)
    picks = rng.choice(3, size=length, p=probs)
    for i in range(1, length):
        corpus[i] = successors[corpus[i - 1], picks[i]]
    windows = corpus.reshape(n, t + 1)
    return windows[:, :-1].copy(), windows[:, 1:].copy()


def _synthetic_token_classes(spec: DataSpec, workload: Workload, data_dir):
    """Sequence classification: each class is a seeded Markov chain in which every token has three likely
    successors (0.6/0.3/0.1, drawn per class); a sequence of ``seq_len`` tokens comes from its class's chain from a
    uniform first token. A classifier learns the class from the transitions it sees."""
    rng = np.random.default_rng([workload.seed, DATA_STREAM])
    v, t, k = spec.vocab, spec.seq_len, workload.num_classes
    n = (spec.n_train or 1024) + (spec.n_test or 256)
    successors = rng.integers(0, v, (k, v, 3), dtype=np.int32)
    y = rng.integers(0, k, n)
    picks = rng.choice(3, size=(n, t), p=[0.6, 0.3, 0.1])
    x = np.empty((n, t), dtype=np.int32)
    x[:, 0] = rng.integers(0, v, n)
    for i in range(1, t):
        x[:, i] = successors[y, x[:, i - 1], picks[:, i]]
    return x, y.astype(np.int32)


LOADERS = {"digits": _digits, "mnist": _idx("mnist"), "fashion-mnist": _idx("fashion-mnist"),
           "cifar10": _cifar, "synthetic-images": _synthetic_images, "synthetic-tokens": _synthetic_tokens,
           "synthetic-token-classes": _synthetic_token_classes}
GIVEN_SPLIT = {"mnist", "fashion-mnist", "cifar10"}  # the files carry their own train/test split


def scaled(workload: Workload, factor: float) -> Workload:
    """The workload with ``factor`` times as many synthetic examples (``--scale``)."""
    spec = workload.data
    if not spec.source.startswith("synthetic"):
        raise UserError(f"--scale applies to synthetic data; {workload.name} uses {spec.source}")
    n_train = max(workload.batch_size, int(round((spec.n_train or 1024) * factor)))
    n_test = max(1, int(round((spec.n_test or 256) * factor)))
    return replace(workload, data=replace(spec, n_train=n_train, n_test=n_test))


def split_sizes(workload: Workload, data_dir: str | Path | None = None) -> tuple[int, int]:
    """(training, test) examples of the workload's data set; a synthetic one's sizes without generating it."""
    spec = workload.data
    if spec.source.startswith("synthetic") and spec.n_train and spec.n_test:
        return spec.n_train, spec.n_test
    data = load_dataset(workload, data_dir)
    return len(data.x_train), len(data.x_test)


def load_dataset(workload: Workload, data_dir: str | Path | None = None) -> Dataset:
    """Load the workload's data; split it with a permutation seeded by the workload seed unless the
    source has its own split."""
    spec = workload.data
    if spec.source not in LOADERS:
        raise UserError(f"unknown data source {spec.source!r}; choose from: {', '.join(LOADERS)}")
    loaded = LOADERS[spec.source](spec, workload, data_dir)
    if spec.source in GIVEN_SPLIT:
        (xtr, ytr), (xte, yte) = loaded
    else:
        x, y = loaded
        perm = np.random.default_rng([workload.seed, SPLIT_STREAM]).permutation(len(x))
        n_test = spec.n_test if spec.n_test and spec.source.startswith("synthetic") else \
            int(round(spec.test_fraction * len(x)))
        test, train = perm[:n_test], perm[n_test:]
        if spec.n_train and not spec.source.startswith("synthetic"):
            train = train[:spec.n_train]
        xtr, ytr, xte, yte = x[train], y[train], x[test], y[test]
    shape = tuple(workload.input_shape)
    if tuple(xtr.shape[1:]) != shape:
        if int(np.prod(xtr.shape[1:])) != int(np.prod(shape)):
            raise UserError(f"{workload.name}: {spec.source} examples have shape {tuple(xtr.shape[1:])}, "
                            f"the model expects {shape}")
        xtr, xte = xtr.reshape((len(xtr),) + shape), xte.reshape((len(xte),) + shape)
    return Dataset(xtr, ytr, xte, yte)


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
