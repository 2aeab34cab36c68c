"""The identical inputs of a workload: data split, per-epoch orders and initial weights, made once by
the runner in numpy and written to one file that every worker reads."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import resolve_workload  # noqa: F401 - its former home; benchmarks/rounding.py imports it here
from ..data import Dataset, epoch_orders, fingerprint, load_dataset
from ..workloads import Workload, init_params
from ..workloads.schedule import learning_rates


def training_seed(workload: Workload, repeat: int, seeds: int = 1) -> int:
    """The seed of repeat ``repeat`` under ``--seeds``: the workload's own seed plus ``repeat mod seeds``. It draws
    the initial weights, the epoch orders and dropout; the data split always comes from the workload's seed."""
    return workload.seed + repeat % max(1, seeds)


def write_inputs(workload: Workload, path: Path, data_dir: str | Path | None = None, seed: int | None = None) -> Path:
    """Data split, per-epoch orders, initial weights and every step's learning rate, in one file. ``seed``
    (default: the workload's) draws the weights and orders; the split and any synthetic data use the workload's
    seed whatever ``seed`` is, so every seed is tested on the same test set."""
    data = load_dataset(workload, data_dir)
    seed = workload.seed if seed is None else seed
    orders = epoch_orders(len(data.x_train), workload.epochs, seed)
    params = init_params(replace(workload, seed=seed))
    lrs = learning_rates(workload.optimizer, workload.schedule,
                         workload.epochs * workload.steps_per_epoch(len(data.x_train)))
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
             orders=orders, lrs=lrs, **{f"param:{k}": v for k, v in params.items()})
    return path


def read_inputs(path: str | Path) -> tuple[Dataset, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    with np.load(path) as z:
        data = Dataset(z["x_train"], z["y_train"], z["x_test"], z["y_test"])
        params = {k[len("param:"):]: z[k] for k in z.files if k.startswith("param:")}
        return data, z["orders"], params, z["lrs"]


def input_fingerprints(data: Dataset, orders: np.ndarray, params: dict[str, np.ndarray]) -> dict[str, str]:
    return {"data": fingerprint(data.x_train, data.y_train, data.x_test, data.y_test),
            "orders": fingerprint(orders), "init_weights": params_fingerprint(params)}


def params_fingerprint(params: dict[str, np.ndarray]) -> str:
    """Hash of float32 parameters in sorted-name order."""
    names = sorted(params)
    return fingerprint(np.array(names), *(np.asarray(params[n], dtype=np.float32) for n in names))
