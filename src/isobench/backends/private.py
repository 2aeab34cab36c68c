"""DP-SGD's framework-neutral parts, written once for every backend: the request check, the base update's spec,
the per-step noise drawn in numpy and the batch padding of a compiled private step. Nothing here imports a
framework.

The private step (``OptimizerSpec``'s docstring is the contract, ``reference.PrivateReferenceTrainer`` the executable
spec): per-example gradients of every trainable parameter, each example's scaled by
``min(1, clip / (its norm + 1e-6))``, summed, plus ``noise_multiplier * clip`` times the step's standard normal
draw, divided by ``batch_size``; then the base update (``sgd`` or ``adam``, the non-private rules).

The noise is drawn by the trainer in ``train_step`` (inside the timed step, the same numpy work in every
framework) from :func:`~isobench.workloads.privacy.noise_rng` seeded with the training seed at build: one flat
float32 vector per step over every trainable parameter in the canonical order of ``Workload.param_shapes()``,
handed to the framework in one transfer and split there (the reference reads the same float32 values in
float64). ``gradients(idx)`` of a private trainer returns the clipped per-example sum before noise and before
the division, the quantity parity compares."""
from __future__ import annotations

from dataclasses import replace
from math import prod
from typing import Any, Callable

import numpy as np

from ..workloads.privacy import noise_rng
from ..workloads.spec import BatchNorm, Dropout, OptimizerSpec, Workload, iter_layers
from .common import BatchPadder

BUCKETS = 4  # a compiled private step pads a Poisson batch up to a multiple of batch_size / BUCKETS


def check_private(display: str, workload: Workload, supported: bool = True) -> None:
    """NotImplementedError for DP-SGD where the backend has no private step, or with a layer whose per-example
    gradient is not one: BatchNorm (batch statistics mix the examples) and Dropout (a random mask per step that
    the per-example vectorisation would have to draw per example)."""
    if not workload.optimizer.private:
        return
    if not supported:
        raise NotImplementedError(f"{display} backend has no dp-sgd (per-example gradients); run it in PyTorch, "
                                  "TensorFlow or JAX")
    for layer in iter_layers(workload.layers):
        if isinstance(layer, (BatchNorm, Dropout)):
            name = getattr(layer, "name", f"rate {getattr(layer, 'rate', '')}")
            raise NotImplementedError(f"dp-sgd does not allow {type(layer).__name__} ({name}): per-example "
                                      "gradients need layers without batch statistics or dropout")


def base_optimizer(spec: OptimizerSpec) -> OptimizerSpec:
    """The non-private optimizer that applies DP-SGD's gradient: ``kind`` = the spec's ``base``."""
    return replace(spec, kind=spec.base, clip_norm=None)


def base_workload(workload: Workload) -> Workload:
    """The workload with its base optimizer, from which a backend builds the model and the update."""
    return replace(workload, optimizer=base_optimizer(workload.optimizer))


class Noise:
    """The noise of every private step: ``draw()`` is one flat float32 standard normal vector over every
    trainable parameter (canonical order); ``std`` = noise_multiplier x clip; ``pieces``: (name, offset, shape)
    to split it."""

    def __init__(self, workload: Workload):
        o, shapes = workload.optimizer, workload.param_shapes()
        self.std, self._rng = float(o.noise_multiplier * o.clip), noise_rng(workload.seed)
        sizes = [prod(s) for s in shapes.values()]
        self.size, offsets = sum(sizes), np.cumsum([0] + sizes)
        self.pieces = [(name, int(off), shape) for (name, shape), off in zip(shapes.items(), offsets)]

    def draw(self) -> np.ndarray:
        return self._rng.standard_normal(self.size, dtype=np.float32)

    def split(self, flat, reshape: Callable = lambda t, shape: t.reshape(shape)) -> dict[str, Any]:
        """Canonical name -> the noise piece of that parameter, from a numpy array or a framework tensor."""
        return {name: reshape(flat[off:off + prod(shape)], shape) for name, off, shape in self.pieces}


def private_padder(workload: Workload, fixed_shape: bool, index_dtype, ones: Callable[[int], Any]) -> BatchPadder:
    """Indices and row mask of a private step. ``fixed_shape`` (jit, XLA): a short batch is padded to the batch
    size and a larger Poisson batch to the next multiple of ``batch_size / BUCKETS``, so a handful of shapes are
    compiled however the draws vary; otherwise only an empty batch is padded (to one masked row), which then
    adds only the noise."""
    bs = workload.batch_size
    if not fixed_shape:
        return BatchPadder(1, index_dtype, ones)
    return BatchPadder(bs, index_dtype, ones, bucket=max(1, bs // BUCKETS)
                       if workload.optimizer.sampling == "poisson" else None)
