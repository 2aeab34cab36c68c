"""The identical inputs of a workload: data split, per-epoch orders and initial weights, made once by
the runner in numpy and written to one file that every worker reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Dataset, epoch_orders, fingerprint, load_dataset
from ..workloads import Workload, init_params


def write_inputs(workload: Workload, path: Path) -> Path:
    data = load_dataset(workload)
    orders = epoch_orders(len(data.x_train), workload.epochs, workload.seed)
    params = init_params(workload)
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
             orders=orders, **{f"param:{k}": v for k, v in params.items()})
    return path


def read_inputs(path: str | Path) -> tuple[Dataset, np.ndarray, dict[str, np.ndarray]]:
    with np.load(path) as z:
        data = Dataset(z["x_train"], z["y_train"], z["x_test"], z["y_test"])
        params = {k[len("param:"):]: z[k] for k in z.files if k.startswith("param:")}
        return data, z["orders"], params


def input_fingerprints(data: Dataset, orders: np.ndarray, params: dict[str, np.ndarray]) -> dict[str, str]:
    return {"data": fingerprint(data.x_train, data.y_train, data.x_test, data.y_test),
            "orders": fingerprint(orders), "init_weights": params_fingerprint(params)}


def params_fingerprint(params: dict[str, np.ndarray]) -> str:
    """Hash of float32 parameters in sorted-name order."""
    names = sorted(params)
    return fingerprint(np.array(names), *(np.asarray(params[n], dtype=np.float32) for n in names))
