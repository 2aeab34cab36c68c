"""The identical inputs of a workload: data split, per-epoch orders and initial weights, made once by
the runner in numpy and written to one file that every worker reads."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data import Dataset, batches, epoch_orders, fingerprint, load_dataset
from ..workloads import Workload, init_params
from ..workloads.privacy import poisson_batches, private_steps, sampling_rate
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


@dataclass(frozen=True)
class StepPlan:
    """Every training step's batch, epoch by epoch, and which steps count as steady (see :meth:`steady`).

    Shuffled batches: each epoch's order cut into ``batch_size`` batches (the last keeps the remainder). Poisson
    sampling (DP-SGD): ``steps_per_epoch`` independent draws per epoch from the training seed
    (:func:`~isobench.workloads.privacy.poisson_batches`), so epochs stay the unit of evaluation."""
    epochs: list[list[np.ndarray]]
    batch_size: int
    poisson: bool = False

    def steady(self, idx: np.ndarray) -> bool:
        """A step the steady-state timing counts: a full batch; under Poisson sampling, whose batch size varies
        by design, every non-empty one."""
        return len(idx) > 0 if self.poisson else len(idx) == self.batch_size

    @property
    def samples(self) -> int:
        """Examples trained on over the run (under Poisson sampling, the sum of the drawn batches)."""
        return sum(len(idx) for epoch in self.epochs for idx in epoch)


def step_plan(workload: Workload, orders: np.ndarray, n_train: int) -> StepPlan:
    """The batches a worker (and the reference) trains on: ``workload.seed`` is the training seed."""
    o, bs = workload.optimizer, workload.batch_size
    if not (o.private and o.sampling == "poisson"):
        return StepPlan([batches(order, bs) for order in orders], bs)
    per_epoch = workload.steps_per_epoch(n_train)
    drawn = poisson_batches(n_train, sampling_rate(workload, n_train), private_steps(workload, n_train),
                            workload.seed)
    return StepPlan([drawn[e * per_epoch:(e + 1) * per_epoch] for e in range(len(orders))], bs, poisson=True)
