"""The contract every framework backend fulfils.

A backend builds a :class:`~isobench.workloads.Workload` natively, loads the neutral float32 weights,
and trains on batches chosen by the runner. It decides nothing about what to measure or how often:
the worker (``isobench.runner.worker``) holds the clock. Every method that returns a value has
finished the device work behind it (it is synchronised), so a clock read right after is honest.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from ..data import Dataset
from ..results import FrameworkSettings
from ..workloads.spec import UPDATE_RULES, Workload
from .private import check_private


class Trainer(ABC):
    """A built model + optimizer holding the train and test data in the framework's own tensors."""

    @abstractmethod
    def train_step(self, idx: np.ndarray, lr: float) -> float:
        """One optimizer step on ``x_train[idx]`` with learning rate ``lr`` (the runner's schedule gives
        every step's rate); returns the batch's mean loss (synchronised). Training mode: BatchNorm uses
        batch statistics and updates its moving statistics, Dropout is active. DP-SGD (a private trainer,
        :mod:`isobench.backends.private`): ``idx`` may have any size, empty included (Poisson sampling; the
        loss of an empty batch is 0), and the step draws its own noise in numpy from the stream seeded at
        build, so the draw is inside the timed step in every framework."""

    @abstractmethod
    def evaluate(self) -> tuple[float, float]:
        """``(mean loss, accuracy)`` on the whole test split in inference mode (synchronised); for
        sequence outputs both are over every position."""

    @abstractmethod
    def logits(self, x: np.ndarray) -> np.ndarray:
        """Forward pass in inference mode on ``x`` (canonical NHWC/feature layout, or int32 tokens)."""

    @abstractmethod
    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of the mean loss on ``x_train[idx]`` in training mode, canonical layout, trainable
        parameters only; changes nothing (no update, BatchNorm moving statistics restored). A private trainer
        returns the sum of the clipped per-example gradients instead (before noise and before the division by
        the batch size): the quantity DP-SGD's parity compares."""

    @abstractmethod
    def params(self) -> dict[str, np.ndarray]:
        """Current parameters and BatchNorm state converted back to the canonical numpy layout."""

    def device_peak_bytes(self) -> int | None:
        """Device allocator peak since build, or ``None`` on the CPU."""
        return None


class LayerBuilder:
    """Builds one spec layer with the method named after its kind (``dense``, ``conv2d``, ``maxpool2d``,
    ``avgpool2d``, ``global_avg_pool``, ``flatten``, ``reshape``, ``relu``, ``gelu``, ``tanh``, ``dropout``,
    ``batchnorm``, ``layernorm``, ``embedding``, ``positional_embedding``, ``lstm``, ``attention``, ``residual``:
    ``Layer.kind`` in :mod:`isobench.workloads.spec`). A backend writes one method per kind; the arguments after
    the layer (shape, symbolic tensor, ...) are the backend's own."""

    display: str = "this"  # the backend's human name, for errors

    def build(self, layer, *args):
        return self.method(layer)(layer, *args)

    def method(self, layer, suffix: str = "") -> Callable:
        """The method for ``layer``'s kind (``suffix``: a second method per kind, e.g. ``"_backward"``);
        ``NotImplementedError`` naming the backend and the kind where there is none."""
        kind = getattr(layer, "kind", None)
        method: Callable | None = getattr(self, kind + suffix, None) if isinstance(kind, str) else None
        if method is None:
            raise NotImplementedError(f"{self.display} backend has no layer {kind or layer!r}")
        return method


# How a backend implements the spec's optimizer (the first is a session's default, docs/measurement.md): "library",
# the framework's optimizer library as a user's script calls it (torch.optim with its default kernels, optax, Keras
# optimizers), every hyperparameter explicit; "neutral", isobench's own update rules (reference.Optimizer) written
# in the framework's ops (torch.optim with the fastest exact kernels for PyTorch, Keras subclasses for Keras)
OPTIMIZER_IMPLS = ("library", "neutral")
PRECISIONS = ("fp32", "bf16", "fp16")  # fp32: float32 with TF32 off everywhere; bf16/fp16: mixed precision
# tf32: float32 weights and compute, matmuls and convolutions on TF32 tensor cores (10-bit mantissa). cuda only: a CPU
# has no TF32, its float32 matmuls are fp32. Named explicitly (not in --precision all); torch, tensorflow and jax
GPU_PRECISIONS = ("tf32",)
DEVICES = ("cpu", "cuda")


class Backend(ABC):
    """One framework. Importing this class must not import the framework: :meth:`setup` does.

    Devices: the parent process chooses the device and, on a GPU, shows the worker only its own GPU
    (``CUDA_VISIBLE_DEVICES``) and sets the allocator environment (``runner.devices.worker_env``); a
    backend asked for ``"cuda"`` uses the first visible GPU and raises ``RuntimeError`` if there is none."""

    name: str                 # framework id used on the command line, e.g. "torch"
    display: str              # human name, e.g. "PyTorch"
    distribution: str         # the pip distribution whose version is recorded
    import_name: str          # the module imported by setup()
    install_hint: str         # one line telling the user how to install it
    modes: tuple[str, ...]    # execution modes; the first is the default
    precisions: tuple[str, ...] = PRECISIONS  # the subset of PRECISIONS this backend implements
    trainer: type[Trainer]    # built by the default build(workload, params, data, mode, precision=, device=)
    private_trainer: type[Trainer] | None = None  # built instead for a dp-sgd workload; None: no DP-SGD
    # modes that only a dp-sgd workload has (after ``modes`` in --modes all), each built by its own trainer
    private_modes: dict[str, type[Trainer]] = {}
    optimizer_impls: tuple[str, ...] = OPTIMIZER_IMPLS  # the subset of OPTIMIZER_IMPLS this backend implements
    # what the last setup() read back; build() records in it what the build set (TF32, on for precision tf32 only), so
    # the worker, which stores the object setup() returned after training, records what was in effect
    settings: FrameworkSettings | None = None

    @abstractmethod
    def setup(self, threads: int, device: str = "cpu") -> FrameworkSettings:
        """Import the framework, apply its thread settings and set TF32 off explicitly (float32 matmuls
        and convolutions in full float32 on every device); return the settings now in effect, read back from the
        framework (threads, device, TF32, matmul precision, oneDNN, XLA, determinism, versions), and keep them
        as :attr:`settings`."""

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
              precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral") -> Trainer:
        """Build model and optimizer (``optimizer``: its implementation, one of :attr:`optimizer_impls`) for
        ``mode`` and ``precision`` on ``device``, load ``params`` (float32 master weights in every precision), move
        ``data`` into framework tensors. The default checks the request (:func:`check_build`) and constructs
        :attr:`trainer`."""
        check_build(self, workload, mode, precision, device, optimizer)
        cls = self.private_modes.get(mode) or (self.private_trainer if workload.optimizer.private else self.trainer)
        trainer = cls(workload, params, data, mode, precision=precision, device=device, optimizer=optimizer)
        if self.settings is not None:  # setup() turned TF32 off; every trainer sets it for its precision
            self.settings.tf32 = precision == "tf32"
        return trainer

    @abstractmethod
    def inference_model(self, workload: Workload, params: dict[str, np.ndarray]) -> Any:
        """The workload built natively for inference from the neutral spec, holding ``params`` (trained weights
        and BatchNorm statistics in the canonical numpy layout): BatchNorm on its moving statistics, Dropout off,
        float32 on the CPU (the numpy reference: float64), canonical layout in and out (NHWC float32 images, float32
        features or int32 tokens in; logits out, NHWC for image outputs). Built by the backend's own layer builder,
        as training builds it, so a deployment path serves or exports the trained model without a layer of its
        own. The framework's own object: see each backend."""

    def library_difference(self, workload: Workload) -> str | None:
        """Why this backend's ``library`` optimizer does not follow the spec's update rule on ``workload`` by design
        (e.g. Keras's epsilon placement), ``None`` where it does; parity then applies the stated
        :data:`~isobench.workloads.spec.LIBRARY_ATOL` floors and says why."""
        return None

    def version(self) -> str | None:
        from importlib import metadata

        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None


def check_build(backend: Backend, workload: Workload, mode: str, precision: str = "fp32",
                device: str = "cpu", optimizer: str = "neutral") -> None:
    """Reject an unknown mode, precision, device or optimizer implementation (ValueError) and an optimizer or loss
    the backends do not implement (NotImplementedError, by name) before anything is built, instead of training
    something else."""
    if mode not in backend.modes + tuple(backend.private_modes):
        raise ValueError(f"unknown mode {mode!r} for {backend.display}; choose from: {', '.join(backend.modes)}")
    if mode in backend.private_modes and not workload.optimizer.private:
        raise ValueError(f"mode {mode!r} of {backend.display} is for dp-sgd workloads only")
    if precision not in backend.precisions:
        raise ValueError(f"unknown precision {precision!r} for {backend.display}; "
                         f"choose from: {', '.join(backend.precisions)}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose from: {', '.join(DEVICES)}")
    if optimizer not in backend.optimizer_impls:
        raise ValueError(f"{backend.display} has no {optimizer!r} optimizer implementation; choose from: "
                         f"{', '.join(backend.optimizer_impls)}")
    o = workload.optimizer
    check_optimizer(backend.display, o.base if o.private else o.kind)
    check_private(backend.display, workload, backend.private_trainer is not None)
    if o.private and precision != "fp32":
        raise NotImplementedError("dp-sgd runs in fp32 only, in every backend; use --precision fp32")
    if workload.loss != "softmax_cross_entropy":
        raise NotImplementedError(f"{backend.display} backend has no loss {workload.loss!r}")


def env_flags(*names: str) -> dict[str, str | None]:
    """The environment variables that shape performance, ``None`` where unset."""
    return {name: os.environ.get(name) for name in names}


def check_optimizer(display: str, kind: str) -> None:
    """NotImplementedError naming the backend for an optimizer kind outside the update rules every backend
    implements (:data:`~isobench.workloads.spec.UPDATE_RULES`; dp-sgd is checked by its base)."""
    if kind not in UPDATE_RULES:
        raise NotImplementedError(f"{display} backend has no optimizer {kind!r}")
