"""Readers for the standard files: MNIST/Fashion-MNIST IDX (gzipped or not) and CIFAR-10 python pickles.

Every problem is a :class:`UserError` naming the file and what is wrong with it."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from ..errors import UserError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"missing {stem} (or {stem}.gz) in {folder}")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file: magic 0x0000 <dtype> <ndim>, big-endian dimension sizes, then the data."""
    try:
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(f"{path}: IDX header promises {dims} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def read_idx_pair(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28, 1) uint8 and labels (N,) of one part: ``train`` or ``t10k``."""
    if not folder.is_dir():
        raise UserError(f"--data-dir {folder} is not a folder")
    images = read_idx(_find(folder, f"{part}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{part}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{folder}: {part} images {images.shape} and labels {labels.shape} do not match")
    return images[..., None], labels


class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, bytes and numpy arrays. A pickle that asks for any other
    callable (the way pickles run code) is refused."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not plain data")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _DataUnpickler(f, encoding="bytes").load()  # the official files hold plain dicts and arrays
        data, labels = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is not a CIFAR-10 python batch: {type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise UserError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # CHW rows -> NHWC


def read_cifar10(folder: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``data_batch_1..5`` (those present, at least one) and ``test_batch`` from the python version."""
    if not folder.is_dir():
        raise UserError(f"--data-dir {folder} is not a folder")
    train = [folder / f"data_batch_{i}" for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    if not train:
        raise UserError(f"missing data_batch_1 in {folder} (CIFAR-10 python version)")
    if not (folder / "test_batch").is_file():
        raise UserError(f"missing test_batch in {folder} (CIFAR-10 python version)")
    parts = [_cifar_batch(p) for p in train]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])), \
        _cifar_batch(folder / "test_batch")
