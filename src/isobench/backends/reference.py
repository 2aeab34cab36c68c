"""float64 numpy implementation of the neutral spec: the reference that ``isobench parity`` compares
every framework against. Also selectable as framework ``numpy`` (mode ``reference``) so the runner can
be exercised without any deep-learning framework installed."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Dataset
from ..workloads.spec import Dense, ReLU, Workload
from .base import Backend, Trainer


def _softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the batch and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -logp[np.arange(n), y].mean()
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1.0
    return float(loss), grad / n


class ReferenceTrainer(Trainer):
    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, dtype=np.float64):
        if workload.optimizer.kind != "sgd" or workload.optimizer.momentum:
            raise NotImplementedError("the numpy reference implements plain SGD only")
        self.w, self.dtype = workload, dtype
        self.p = {k: v.astype(dtype) for k, v in params.items()}
        self.x_train, self.y_train = data.x_train.astype(dtype), data.y_train
        self.x_test, self.y_test = data.x_test.astype(dtype), data.y_test

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, list]:
        x = x.reshape(len(x), -1)
        tape = []
        for layer in self.w.layers:
            tape.append((layer, x))
            if isinstance(layer, Dense):
                x = x @ self.p[f"{layer.name}/kernel"] + self.p[f"{layer.name}/bias"]
            elif isinstance(layer, ReLU):
                x = np.maximum(x, 0.0)
            else:
                raise NotImplementedError(f"reference has no layer {layer.kind!r}")
        return x, tape

    def _loss_and_grads(self, idx: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        logits, tape = self._forward(self.x_train[idx])
        loss, g = _softmax_xent(logits, self.y_train[idx])
        grads: dict[str, np.ndarray] = {}
        for layer, x in reversed(tape):
            if isinstance(layer, Dense):
                grads[f"{layer.name}/kernel"] = x.T @ g
                grads[f"{layer.name}/bias"] = g.sum(axis=0)
                g = g @ self.p[f"{layer.name}/kernel"].T
            elif isinstance(layer, ReLU):
                g = g * (x > 0)
        return loss, grads

    def train_step(self, idx: np.ndarray) -> float:
        loss, grads = self._loss_and_grads(idx)
        lr = self.w.optimizer.learning_rate
        for k, g in grads.items():
            self.p[k] -= lr * g
        return loss

    def evaluate(self) -> tuple[float, float]:
        logits, _ = self._forward(self.x_test)
        loss, _ = _softmax_xent(logits, self.y_test)
        return loss, float((logits.argmax(axis=1) == self.y_test).mean())

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x.astype(self.dtype))[0]

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return self._loss_and_grads(idx)[1]

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.p.items()}


class ReferenceBackend(Backend):
    name = "numpy"
    display = "NumPy (float64 reference)"
    distribution = "numpy"
    import_name = "numpy"
    install_hint = "pip install numpy"
    modes = ("reference",)

    def setup(self, threads: int) -> dict[str, Any]:
        return {"note": "numpy BLAS threads follow OMP/OPENBLAS/MKL_NUM_THREADS set by the worker"}

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str) -> Trainer:
        return ReferenceTrainer(workload, params, data)
