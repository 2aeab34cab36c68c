"""PyTorch backend: ``nn.Sequential`` + ``torch.optim.SGD``, run eagerly.

torch is imported in :meth:`TorchBackend.setup` / :meth:`TorchBackend.build`, never at module import.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

from ..data import Dataset
from ..workloads.spec import Dense, ReLU, Workload
from .base import Backend, Trainer, check_build, env_flags


class TorchTrainer(Trainer):
    """An ``nn.Sequential`` built from the workload, its SGD optimizer and the data as CPU tensors."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str):
        import torch
        from torch import nn

        modules: list = [nn.Flatten()]  # (batch, ...) -> (batch, features), canonical order
        self._dense: list[tuple[str, Any]] = []  # (canonical layer name, nn.Linear)
        width = int(np.prod(workload.input_shape))
        for layer in workload.layers:
            if isinstance(layer, Dense):
                linear = nn.Linear(width, layer.units)
                with torch.no_grad():  # canonical kernel is (in, out); Linear.weight is (out, in)
                    linear.weight.copy_(torch.from_numpy(params[f"{layer.name}/kernel"].T))
                    linear.bias.copy_(torch.from_numpy(params[f"{layer.name}/bias"]))
                self._dense.append((layer.name, linear))
                modules.append(linear)
                width = layer.units
            elif isinstance(layer, ReLU):
                modules.append(nn.ReLU())
            else:
                raise NotImplementedError(f"PyTorch backend has no layer {layer.kind!r}")
        self.model = nn.Sequential(*modules).train()
        self.forward = {"eager": self.model}[mode]  # later modes wrap the model (torch.compile)
        opt = workload.optimizer
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                                         dampening=0.0, weight_decay=0.0, nesterov=False)
        self.loss_fn = nn.CrossEntropyLoss(reduction="mean")
        self.x_train, self.x_test = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
        # class indices must be int64 for CrossEntropyLoss
        self.y_train = torch.from_numpy(data.y_train.astype(np.int64))
        self.y_test = torch.from_numpy(data.y_test.astype(np.int64))
        self._torch = torch

    def _loss(self, idx: np.ndarray):
        i = self._torch.from_numpy(np.asarray(idx, dtype=np.int64))  # tensor index: one gather op
        return self.loss_fn(self.forward(self.x_train[i]), self.y_train[i])

    def train_step(self, idx: np.ndarray) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(idx)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    @contextmanager
    def _inference(self):
        """Eval mode without autograd, then back to training mode."""
        self.model.eval()
        try:
            with self._torch.inference_mode():
                yield
        finally:
            self.model.train()

    def evaluate(self) -> tuple[float, float]:
        with self._inference():
            logits = self.forward(self.x_test)
            loss = self.loss_fn(logits, self.y_test).item()
            correct = int((logits.argmax(dim=1) == self.y_test).sum())
        return loss, correct / len(self.y_test)

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self._inference():
            return self.forward(self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        weights = [p for _, lin in self._dense for p in (lin.weight, lin.bias)]
        grads = self._torch.autograd.grad(self._loss(idx), weights)  # leaves .grad and the params alone
        return self._canonical(zip(grads[::2], grads[1::2]))

    def params(self) -> dict[str, np.ndarray]:
        return self._canonical((lin.weight, lin.bias) for _, lin in self._dense)

    def _canonical(self, pairs) -> dict[str, np.ndarray]:
        """One ``(weight, bias)`` pair per Dense layer -> canonical names, kernel back to ``(in, out)``."""
        out: dict[str, np.ndarray] = {}
        for (name, _), (w, b) in zip(self._dense, pairs):
            out[f"{name}/kernel"] = w.detach().T.numpy().copy()  # copy: C order, detached from torch memory
            out[f"{name}/bias"] = b.detach().numpy().copy()
        return out


class TorchBackend(Backend):
    """PyTorch on the CPU; mode ``eager``."""

    name = "torch"
    display = "PyTorch"
    distribution = "torch"
    import_name = "torch"
    install_hint = "pip install 'isobench[torch]'  (torch==2.13.0)"
    modes = ("eager",)

    def setup(self, threads: int) -> dict[str, Any]:
        import torch

        torch.set_num_threads(threads)
        interop_note = None
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError as e:  # only allowed once, before any inter-op parallel work has started
            interop_note = str(e)
        return {
            "version": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "inter_op_threads_error": interop_note,
            "parallel_backend": _parallel_backend(torch),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_available": torch.backends.mkldnn.is_available(),
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
            "mkl_available": torch.backends.mkl.is_available(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            **env_flags("OMP_NUM_THREADS", "MKL_NUM_THREADS"),
        }

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str) -> Trainer:
        check_build(self, workload, mode)
        return TorchTrainer(workload, params, data, mode)


def _parallel_backend(torch) -> str | None:
    """The ATen parallel backend line of ``torch.__config__.parallel_info()`` (e.g. "OpenMP")."""
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.split(":", 1)[1].strip()
    return None


# Framework-neutral helpers shared by the tf and jax backends (importing this module does not import torch).
