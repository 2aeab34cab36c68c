"""Arithmetic and bookkeeping every framework backend shares, written once: window geometry and padding,
the padded batch of a fixed-shape compiled step, the learning rate a trainer holds, the fp16 gradient probe,
the optimizer slots a spec needs and the Keras optimizer of a spec (TensorFlow's and the Keras backends' library
optimizers). Nothing here imports a framework."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import numpy as np

G = TypeVar("G")
CLIP_EPS = 1e-6  # clipping by global norm: g *= min(1, clip / (norm + CLIP_EPS)), torch clip_grad_norm_'s form


def pool_window(layer) -> tuple[int, int]:
    """``(window, stride)`` of a MaxPool2D/AvgPool2D (the stride defaults to the window)."""
    return layer.pool, layer.stride or layer.pool


def conv_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Output length of a window over ``size`` pixels padded by ``pad`` on each side."""
    return (size + 2 * pad - kernel) // stride + 1


def conv_padding(kernel: int, stride: int, pad: int) -> str | None:
    """The framework padding string equal to the spec's symmetric ``pad``: ``"valid"`` (none), ``"same"`` (at
    stride 1 with ``2 pad = kernel - 1``), or ``None`` where the framework's "same" would pad asymmetrically
    (stride > 1) or differently: the caller pads the spec's pixels explicitly."""
    if pad == 0:
        return "valid"
    return "same" if stride == 1 and 2 * pad == kernel - 1 else None


class BatchPadder:
    """Indices padded to the full batch size and a 0/1 row mask, so the partial last batch of an epoch reuses
    the compiled step of the full batch instead of compiling one for its shape (padding index 0, mask 0).
    ``ones(n)``: the mask of a full batch in the framework's preferred form, made once and reused. ``bucket``
    (batches larger than ``batch``, DP-SGD's Poisson draws): padded up to a multiple of ``bucket``, so a few
    shapes serve every size."""

    def __init__(self, batch: int, index_dtype, ones: Callable[[int], Any], bucket: int | None = None):
        self.batch, self.index_dtype, self._ones, self.bucket = batch, index_dtype, ones, bucket
        self._full: tuple[int, Any] | None = None  # (n, mask of n ones)

    def size(self, n: int) -> int:
        """The padded size of a batch of ``n`` rows."""
        if n <= self.batch:
            return self.batch
        return -(-n // self.bucket) * self.bucket if self.bucket else n

    def __call__(self, idx: np.ndarray) -> tuple[np.ndarray, Any]:
        n, size = len(idx), self.size(len(idx))
        if n == size:  # the common full batch: a ready mask of ones
            if self._full is None or self._full[0] != n:
                self._full = (n, self._ones(n))
            return np.asarray(idx, dtype=self.index_dtype), self._full[1]
        padded = np.zeros(size, dtype=self.index_dtype)
        padded[:n] = idx
        mask = np.zeros(size, dtype=np.float32)
        mask[:n] = 1.0
        return padded, mask


class HeldRate:
    """The learning rate a trainer's optimizer holds: ``write(lr)`` runs only when the runner's schedule changes
    it (a write costs device work; most schedules hold the rate for many steps). ``set(None)``: the base rate."""

    def __init__(self, base: float, write: Callable[[float], None], value: float | None = None):
        self.base, self.value, self._write = float(base), value, write

    def set(self, lr: float | None) -> None:
        lr = self.base if lr is None else float(lr)
        if lr != self.value:
            self.value = lr
            self._write(lr)


def overflow_free(grads_at: Callable[[float], G], finite: Callable[[G], bool], scale: float) -> tuple[G, float]:
    """The fp16 gradient probe: gradients at the current loss ``scale``, halved (here only, nothing is stored)
    while any of them overflows, down to 1: the gradients of the first step that training would apply.
    Returns them and the scale they were taken at. Without loss scaling (``scale`` 1) one call, no check."""
    while True:
        grads = grads_at(scale)
        if scale <= 1.0 or finite(grads):
            return grads, scale
        scale /= 2.0


def moments(optimizer) -> tuple[bool, bool]:
    """Whether the optimizer spec keeps a first moment (SGD momentum, Adam's m) and a second (Adam's and
    RMSprop's v), each a zero tensor per parameter at the start."""
    first = (optimizer.kind == "sgd" and bool(optimizer.momentum)) or optimizer.kind in ("adam", "adamw")
    return first, optimizer.kind in ("adam", "adamw", "rmsprop")


def keras_optimizer(classes, spec):
    """The Keras optimizer of the spec ``spec`` built from ``classes`` (anything with the attributes ``SGD``,
    ``Adam``, ``AdamW``, ``RMSprop`` taking Keras's arguments: ``keras.optimizers``, or subclasses of its classes),
    every hyperparameter explicit. Clipping is Keras's ``global_clipnorm`` (scale ``min(1, clip / norm)``; the
    spec's ``clip / (norm + 1e-6)`` differs by less than ``1e-6 / clip``)."""
    kwargs = {"global_clipnorm": spec.clip_norm}
    if spec.kind == "sgd":
        return classes.SGD(spec.learning_rate, momentum=spec.momentum, nesterov=spec.nesterov, **kwargs)
    if spec.kind in ("adam", "adamw"):
        decay = {"weight_decay": spec.weight_decay} if spec.kind == "adamw" else {}
        return (classes.AdamW if decay else classes.Adam)(spec.learning_rate, beta_1=spec.beta1, beta_2=spec.beta2,
                                                           epsilon=spec.epsilon, amsgrad=False, **decay, **kwargs)
    return classes.RMSprop(spec.learning_rate, rho=spec.rho, momentum=0.0, epsilon=spec.epsilon, centered=False,
                           **kwargs)


def keras_difference(workload) -> str | None:
    """Where Keras's own optimizer (the ``library`` implementation of TensorFlow and the Keras backends) departs by
    design from the spec's update rule on ``workload``, in words; ``None`` where it follows it (up to rounding).
    DP-SGD: its base update."""
    o, s = workload.optimizer, workload.schedule
    kind = o.base if o.private else o.kind
    if kind in ("adam", "adamw"):
        return ("Keras's Adam folds the bias corrections into the step size, lr sqrt(1 - b2^t) / (1 - b1^t), which "
                "puts epsilon on sqrt(v), not on sqrt(v-hat): an effective epsilon of eps sqrt(1 - b2^t)")
    if kind == "rmsprop":
        return "Keras's RMSprop puts epsilon inside the square root, sqrt(v + eps), not outside it"
    if kind == "sgd" and o.momentum and (s.kind != "constant" or s.warmup_steps):
        return ("Keras's SGD keeps the learning rate inside the velocity, m = mu m - lr g, so a rate the schedule "
                "changes weighs past gradients by their own rates, not by the current one")
    return None
