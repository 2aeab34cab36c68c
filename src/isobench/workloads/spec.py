"""Framework-neutral workload description: model, data, loss, optimizer and schedule.

Nothing here imports a framework. A model is a sequence of layers (a :class:`Residual` holds a nested
sequence). Tensors are batch-first and channels-last: images NHWC, sequences (batch, time, features).
Parameters use one canonical numpy layout, named ``"<layer name>/<param>"``; each backend converts on load:

=====================  ==============================================================================
layer                  parameters (canonical shape)
=====================  ==============================================================================
Dense                  kernel (in, out), bias (out,)
Conv2D                 kernel HWIO (kh, kw, in, out), bias (out,)
BatchNorm              gamma (C,), beta (C,); state moving_mean (C,), moving_var (C,)
LayerNorm              gamma (D,), beta (D,)
Embedding              embeddings (vocab, dim)
PositionalEmbedding    embeddings (max_len, dim), added to the input
LSTM                   kernel (in, 4H), recurrent_kernel (H, 4H), bias (4H,); gates in order i, f, g, o
MultiHeadSelfAttention query|key|value|output kernel (D, D) and bias (D,) each
=====================  ==============================================================================

Semantics every backend must follow exactly (``isobench.backends.reference`` is the executable spec):

- Conv2D: symmetric zero padding of ``pad`` pixels (``"same"`` = (k-1)/2, odd k, stride 1 only;
  ``"valid"`` = 0); output size ``(H + 2 pad - k) // stride + 1``. Pools have no padding.
- BatchNorm over all axes but the last. Training: normalise with the batch mean and the *biased* batch
  variance; update ``moving = momentum * moving + (1 - momentum) * batch`` with the *unbiased* variance
  for ``moving_var`` (PyTorch's estimator). Evaluation uses the moving statistics.
  ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta``.
- LayerNorm over the last axis, biased variance, epsilon inside the square root.
- GELU is the exact form ``0.5 x (1 + erf(x / sqrt 2))``, not the tanh approximation.
- LSTM: ``z = x_t kernel + h recurrent_kernel + bias``; ``i, f, g, o = split(z, 4)``; ``c = s(f) c + s(i)
  tanh(g)``; ``h = s(o) tanh(c)``; zero initial state; returns the last ``h`` or the whole sequence.
- MultiHeadSelfAttention on (B, T, D): project q, k, v; split D into heads of D/heads (head-major);
  ``softmax(q k^T / sqrt(D/heads))`` with positions after the query masked when causal; concat heads; output
  projection.
- GlobalAvgPool averages every axis between batch and channels; Flatten keeps the canonical
  (channels-last) order.
- Dropout is identity in evaluation and in parity checks; in training each framework uses its own RNG.
- Loss: softmax cross-entropy on logits, mean over the batch (and over positions for sequence outputs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from math import prod
from typing import ClassVar, Union


# ---- layers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dense:
    """Fully connected layer on the last axis: ``y = x @ kernel + bias``."""
    units: int
    name: str
    kind: ClassVar[str] = "dense"


@dataclass(frozen=True)
class Conv2D:
    """2-D convolution, NHWC data, HWIO kernel; ``padding`` is pixels per side, ``"same"`` or ``"valid"``."""
    filters: int
    kernel_size: int
    name: str
    stride: int = 1
    padding: Union[int, str] = "same"
    kind: ClassVar[str] = "conv2d"

    @property
    def pad(self) -> int:
        if self.padding == "valid":
            return 0
        if self.padding == "same":
            return (self.kernel_size - 1) // 2
        return int(self.padding)


@dataclass(frozen=True)
class _Pool2D:
    pool: int = 2
    stride: int | None = None  # default: pool


@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    kind: ClassVar[str] = "maxpool2d"


@dataclass(frozen=True)
class AvgPool2D(_Pool2D):
    kind: ClassVar[str] = "avgpool2d"


@dataclass(frozen=True)
class Reshape:
    """Reshape every example (the batch axis is kept) to ``shape``."""
    shape: tuple[int, ...]
    kind: ClassVar[str] = "reshape"


def _fieldless(name: str, kind: str, doc: str) -> type:
    """A layer without fields or parameters (an activation, a pooling over all positions, a flatten)."""
    return dataclass(frozen=True)(type(name, (), {"__doc__": doc, "__module__": __name__, "kind": kind,
                                                  "__annotations__": {"kind": ClassVar[str]}}))


GlobalAvgPool = _fieldless("GlobalAvgPool", "global_avg_pool", "Mean over every axis between batch and channels.")
Flatten = _fieldless("Flatten", "flatten", "Flatten every example in the canonical (channels-last) order.")
ReLU = _fieldless("ReLU", "relu", "max(x, 0).")
GELU = _fieldless("GELU", "gelu", "The exact GELU, 0.5 x (1 + erf(x / sqrt 2)).")
Tanh = _fieldless("Tanh", "tanh", "tanh(x).")


@dataclass(frozen=True)
class Dropout:
    rate: float
    kind: ClassVar[str] = "dropout"


@dataclass(frozen=True)
class BatchNorm:
    name: str
    momentum: float = 0.9   # weight of the old moving value (Keras convention; torch momentum = 1 - this)
    epsilon: float = 1e-5
    kind: ClassVar[str] = "batchnorm"


@dataclass(frozen=True)
class LayerNorm:
    name: str
    epsilon: float = 1e-5
    kind: ClassVar[str] = "layernorm"


@dataclass(frozen=True)
class Embedding:
    """Integer tokens (B, T) -> vectors (B, T, dim)."""
    vocab: int
    dim: int
    name: str
    kind: ClassVar[str] = "embedding"


@dataclass(frozen=True)
class PositionalEmbedding:
    """Adds a learned vector per position: ``x + embeddings[:T]`` on (B, T, D)."""
    max_len: int
    name: str
    kind: ClassVar[str] = "positional_embedding"


@dataclass(frozen=True)
class LSTM:
    """One LSTM layer over a sequence (B, T, features), zero initial state (gate order i, f, g, o)."""
    units: int                      # H, the width of the hidden and cell state
    name: str
    return_sequences: bool = False  # (B, T, H) instead of the last step's (B, H)
    kind: ClassVar[str] = "lstm"


@dataclass(frozen=True)
class MultiHeadSelfAttention:
    """Self-attention on (B, T, D) with ``num_heads`` heads of width D / num_heads and an output projection."""
    num_heads: int
    name: str
    causal: bool = False  # mask the positions after each query (a decoder)
    kind: ClassVar[str] = "attention"


@dataclass(frozen=True)
class Residual:
    """``y = block(x) + shortcut(x)``; an empty shortcut is the identity."""
    block: tuple["Layer", ...]
    shortcut: tuple["Layer", ...] = ()
    kind: ClassVar[str] = "residual"


Layer = Union[Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool, Flatten, Reshape, ReLU, GELU, Tanh, Dropout,
              BatchNorm, LayerNorm, Embedding, PositionalEmbedding, LSTM, MultiHeadSelfAttention, Residual]
LAYER_TYPES: dict[str, type] = {t.kind: t for t in Layer.__args__}


# ---- data, optimizer, schedule, parity -------------------------------------------------------------

@dataclass(frozen=True)
class DataSpec:
    """Where the examples come from (a loader in :mod:`isobench.data`) and how they are split.

    ``source``: ``digits`` (scikit-learn, 8x8), ``mnist``/``fashion-mnist`` (IDX files), ``cifar10`` (python
    pickle batches), ``synthetic-images``, ``synthetic-tokens`` or ``synthetic-token-classes`` (seeded
    generators). ``image_size`` resizes square images (bilinear); ``n_train``/``n_test`` cap or size the split
    (synthetic sources generate that many); ``seq_len``/``vocab`` shape token data."""
    source: str = "digits"
    dir_source: str | None = None  # source used instead when the user gives --data-dir (e.g. mnist)
    test_fraction: float = 0.2
    image_size: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    seq_len: int = 16
    vocab: int = 32


# The optimizer kinds a workload may name (``OptimizerSpec.kind``), the one list: validation, TOML loading, the
# backends' check and the FLOP count read it. Every kind but dp-sgd is an update rule every backend implements; dp-sgd
# privatises the gradient, then runs one of PRIVATE_BASES
OPTIMIZER_KINDS = ("sgd", "adam", "adamw", "rmsprop", "dp-sgd")
PRIVATE_KIND = "dp-sgd"
UPDATE_RULES = tuple(k for k in OPTIMIZER_KINDS if k != PRIVATE_KIND)
PRIVATE_BASES = ("sgd", "adam")


@dataclass(frozen=True)
class OptimizerSpec:
    """Every hyperparameter explicit; the update rules are written out in ``backends/reference.py``.

    ``kind``: ``sgd`` (``momentum``, ``nesterov``; PyTorch form v = m v + g), ``adam``, ``adamw`` (decoupled
    ``weight_decay``: p -= lr wd p before the Adam step), ``rmsprop`` (accumulator starts at 0; epsilon outside
    the square root). ``clip_norm``: gradients scaled by min(1, clip_norm / (global norm + 1e-6)).

    ``dp-sgd`` (differentially private SGD): every example's gradient is clipped to L2 norm ``clip`` (scaled by
    min(1, clip / (its norm + 1e-6)), over all trainable parameters together), the clipped gradients are summed,
    Gaussian noise of standard deviation ``noise_multiplier * clip`` is added, and the sum is divided by
    ``batch_size`` (the expected batch under Poisson sampling); then the ``base`` update (``sgd`` with its
    momentum, or ``adam``) runs on that gradient. Batches: ``sampling = "poisson"`` includes each training example
    in a step independently with probability ``sampling_rate`` (default batch_size / n_train), as the privacy
    analysis assumes; ``"shuffle"`` keeps the shuffled fixed-size batches of the other optimizers. The guarantee
    is epsilon at ``delta`` (default 1/n_train rounded down to a power of ten), from an accountant library;
    ``target_epsilon`` states the epsilon a run must not exceed."""
    kind: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    rho: float = 0.9
    weight_decay: float = 0.0
    clip_norm: float | None = None
    base: str = "sgd"                     # dp-sgd: the update after the private gradient (PRIVATE_BASES)
    clip: float | None = None             # dp-sgd: per-example L2 norm bound C
    noise_multiplier: float = 0.0         # dp-sgd: sigma; noise N(0, (sigma C)^2) on the clipped sum
    sampling: str = "poisson"             # dp-sgd: "poisson" or "shuffle"
    sampling_rate: float | None = None    # dp-sgd, poisson: q per step; None = batch_size / n_train
    delta: float | None = None            # dp-sgd: None = 1 / n_train rounded down to a power of ten
    target_epsilon: float | None = None   # dp-sgd: the largest epsilon the run may spend; None = no bound

    @property
    def private(self) -> bool:
        return self.kind == PRIVATE_KIND


@dataclass(frozen=True)
class ScheduleSpec:
    """Learning rate per step, computed in numpy by the runner and handed to every backend.

    ``kind``: ``constant``, ``step`` (multiply by ``gamma`` every ``step_size`` steps) or ``cosine`` (from the
    base rate to ``min_lr`` over the run). ``warmup_steps``: linear warm-up from ``lr / warmup_steps``."""
    kind: str = "constant"
    warmup_steps: int = 0
    step_size: int = 1000
    gamma: float = 0.1
    min_lr: float = 0.0


@dataclass(frozen=True)
class ParitySpec:
    """Tolerances for ``isobench parity``, all absolute, float32 frameworks against a float64 reference.

    The check trains ``epochs`` epochs (``None``: the whole workload) with dropout disabled.
    ``epoch_loss_atol`` bounds the per-epoch mean training loss over the whole run; ``loss_atol`` the
    loss of each of the first ``steps`` steps; ``grad_atol`` every step-0 gradient entry; ``forward_atol``
    every initial logit; ``state_atol`` BatchNorm moving statistics after training; ``accuracy_atol`` the final
    test accuracy (or test loss for language models)."""
    steps: int = 20
    epochs: int | None = 1  # epochs trained in the check (None: all of the workload's)
    forward_atol: float = 1e-5
    grad_atol: float = 1e-5
    loss_atol: float = 1e-5
    epoch_loss_atol: float = 1e-4
    state_atol: float = 1e-5
    accuracy_atol: float = 0.0  # final test accuracy; 0 = identical (a test loss uses epoch_loss_atol)
    # relative parts (mixed precision only, 0 in float32): the gradient and first-steps loss tolerances grow by
    # this fraction of the largest reference value, e.g. atol + rtol * max |reference gradient|
    grad_rtol: float = 0.0
    loss_rtol: float = 0.0

    def for_precision(self, precision: str) -> "ParitySpec":
        """The tolerances for a mixed-precision run: each is the larger of the workload's float32 tolerance
        and the floor in :data:`LOW_PRECISION_ATOL` (bf16 keeps 8 significant bits, fp16 11, float32 24)."""
        floors = LOW_PRECISION_ATOL.get(precision)
        if not floors:
            return self
        return replace(self, **{k: max(getattr(self, k), v) for k, v in floors.items()})

    def for_library(self) -> "ParitySpec":
        """The tolerances for a ``library`` optimizer whose update rule departs from the spec's by design (a
        backend's ``library_difference``, e.g. Keras's Adam): each the larger of these and :data:`LIBRARY_ATOL`."""
        return replace(self, **{k: max(getattr(self, k), v) for k, v in LIBRARY_ATOL.items()})

    def grad_tolerance(self, reference_max_abs: float) -> float:
        """Step-0 gradient tolerance given the largest reference gradient entry."""
        return self.grad_atol + self.grad_rtol * reference_max_abs

    def loss_tolerance(self, reference_max_abs: float) -> float:
        """First-steps loss tolerance given the largest reference loss among those steps."""
        return self.loss_atol + self.loss_rtol * reference_max_abs


# Tolerance floors for mixed precision against the float64 reference (see ParitySpec.for_precision), set from the
# largest differences measured on the six built-in workloads in every framework and mode, with margin
# (docs/workloads.md). The relative gradient term covers TensorFlow's CPU bf16 kernels, which accumulate partly in
# bf16 (vit-digits' patch-embedding bias gradient, about 7.5, is 0.65 off); the relative loss term covers fp16's
# loss scaling, which skips the first steps of vit-digits on overflow (as it should) and so lags the reference.
LOW_PRECISION_ATOL: dict[str, dict[str, float]] = {
    "bf16": {"forward_atol": 0.15, "grad_atol": 0.1, "grad_rtol": 0.1, "loss_atol": 0.05, "epoch_loss_atol": 0.1,
             "state_atol": 0.1, "accuracy_atol": 0.08},
    "fp16": {"forward_atol": 0.04, "grad_atol": 0.01, "grad_rtol": 0.02, "loss_atol": 0.01, "loss_rtol": 0.1,
             "epoch_loss_atol": 0.03, "state_atol": 0.02, "accuracy_atol": 0.03},
    # TF32 keeps fp16's 11 significant bits with float32's range and no loss scaling: fp16's floors without the
    # loss-scaling term. Provisional: not yet measured on a GPU (docs/workloads.md)
    "tf32": {"forward_atol": 0.04, "grad_atol": 0.01, "grad_rtol": 0.02, "loss_atol": 0.01, "epoch_loss_atol": 0.03,
             "state_atol": 0.02, "accuracy_atol": 0.03},
}

# Tolerance floors for a library optimizer that follows its own rule by design (ParitySpec.for_library), sized for
# Keras's Adam epsilon (on sqrt(v), not sqrt(v-hat)): 1.7e-4 on lstm-digits' first 20 losses and 2.1e-4 on its
# epoch loss, the largest of the built-in workloads in TensorFlow and the three Keras backends (docs/workloads.md,
# "Optimizer implementations"), with margin; the test accuracy may differ by one test example of the digits' 359.
# The initial logits and step-0 gradients precede any update and keep the workload's tolerances, and so do
# BatchNorm statistics (not measured under such a rule). Keras's RMSprop (epsilon inside the root) and its SGD
# momentum under a changing rate are other algorithms: they miss these floors by far, and parity says so.
LIBRARY_ATOL: dict[str, float] = {"loss_atol": 5e-4, "epoch_loss_atol": 5e-4, "accuracy_atol": 0.003}


@dataclass(frozen=True)
class Workload:
    """One unit of identical work, built natively by every backend."""
    name: str
    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    layers: tuple[Layer, ...]
    data: DataSpec = field(default_factory=DataSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    loss: str = "softmax_cross_entropy"  # logits in, mean over the batch (and positions)
    batch_size: int = 32
    epochs: int = 10
    seed: int = 0
    init: str = "glorot_uniform"  # kernels; biases zero, norms' gamma one
    parity: ParitySpec = field(default_factory=ParitySpec)
    metric: str = "accuracy"  # test metric: "accuracy" (higher is better) or "loss" (per token, lower is better)
    target: float | None = None  # time-to-target threshold on the test metric
    accuracy_band: tuple[float, float] = (0.0, 1.0)  # test accuracy (or loss) a correct implementation reaches

    @property
    def input_dtype(self) -> str:
        """``int32`` for token inputs (the model starts with an Embedding), else ``float32``."""
        return "int32" if self.layers and isinstance(self.layers[0], Embedding) else "float32"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical trainable parameter names and shapes, in layer order."""
        return {k: v for k, v in walk_shapes(self.layers, self.input_shape)[1].items() if not _is_state(k)}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Non-trainable state (BatchNorm moving statistics)."""
        return {k: v for k, v in walk_shapes(self.layers, self.input_shape)[1].items() if _is_state(k)}

    def output_shape(self) -> tuple[int, ...]:
        return walk_shapes(self.layers, self.input_shape)[0]

    def steps_per_epoch(self, n_train: int) -> int:
        """Batches per epoch; the last batch keeps the remainder (no sample is dropped)."""
        return -(-n_train // self.batch_size)

    def for_parity(self) -> "Workload":
        """The workload a parity check trains: no dropout, ``parity.epochs`` epochs."""
        w = self.without_dropout()
        return dataclasses.replace(w, epochs=self.parity.epochs) if self.parity.epochs else w

    def without_dropout(self) -> "Workload":
        """The same workload with every Dropout rate set to 0 (for parity checks)."""
        return dataclasses.replace(self, layers=_map_layers(self.layers, lambda l: Dropout(0.0)
                                                             if isinstance(l, Dropout) else l))

    def has_dropout(self) -> bool:
        return any(isinstance(l, Dropout) and l.rate > 0 for l in iter_layers(self.layers))


def _is_state(name: str) -> bool:
    return name.endswith("/moving_mean") or name.endswith("/moving_var")


def _map_layers(layers, fn):
    return tuple(Residual(_map_layers(l.block, fn), _map_layers(l.shortcut, fn)) if isinstance(l, Residual)
                 else fn(l) for l in layers)


def iter_layers(layers):
    """Every layer, depth first, residual blocks before their shortcut."""
    for layer in layers:
        if isinstance(layer, Residual):
            yield from iter_layers(layer.block)
            yield from iter_layers(layer.shortcut)
        else:
            yield layer


class ShapeError(ValueError):
    """A layer that cannot take its input; ``path`` names it (e.g. ``layers[3]`` or ``layers[2].block[0]``)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


def walk_shapes(layers, in_shape: tuple[int, ...], path: str = "layers"
                ) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
    """Infer the output shape (per example, no batch axis) and every parameter's shape.

    Raises :class:`ShapeError` naming the layer whose input is incompatible."""
    shape, params = tuple(in_shape), {}
    for i, layer in enumerate(layers):
        where = f"{path}[{i}]"
        shape = _layer_shape(layer, shape, params, where)
    return shape, params


def _layer_shape(layer, shape, params, where):
    def need(rank, what):
        if len(shape) != rank:
            raise ShapeError(where, f"{layer.kind} needs {what} input, got shape {shape}")

    if isinstance(layer, Dense):
        params[f"{layer.name}/kernel"], params[f"{layer.name}/bias"] = (shape[-1], layer.units), (layer.units,)
        return shape[:-1] + (layer.units,)
    if isinstance(layer, Conv2D):
        need(3, "an image (H, W, C)")
        h, w, c = shape
        k, s, p = layer.kernel_size, layer.stride, layer.pad
        if layer.padding == "same" and (k % 2 == 0 or s != 1):
            raise ShapeError(where, "padding 'same' needs an odd kernel_size and stride 1; give padding in pixels")
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if oh < 1 or ow < 1:
            raise ShapeError(where, f"kernel {k} does not fit the {h}x{w} input")
        params[f"{layer.name}/kernel"], params[f"{layer.name}/bias"] = (k, k, c, layer.filters), (layer.filters,)
        return (oh, ow, layer.filters)
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        need(3, "an image (H, W, C)")
        h, w, c = shape
        k, s = layer.pool, layer.stride or layer.pool
        if h < k or w < k:
            raise ShapeError(where, f"pool {k} does not fit the {h}x{w} input")
        return ((h - k) // s + 1, (w - k) // s + 1, c)
    if isinstance(layer, GlobalAvgPool):
        if len(shape) < 2:
            raise ShapeError(where, f"global_avg_pool needs spatial or time axes, got shape {shape}")
        return (shape[-1],)
    if isinstance(layer, Flatten):
        return (prod(shape),)
    if isinstance(layer, Reshape):
        if prod(layer.shape) != prod(shape):
            raise ShapeError(where, f"cannot reshape {shape} to {tuple(layer.shape)}")
        return tuple(layer.shape)
    if isinstance(layer, (ReLU, GELU, Tanh, Dropout)):
        return shape
    if isinstance(layer, (BatchNorm, LayerNorm)):
        for p in ("gamma", "beta") + (("moving_mean", "moving_var") if isinstance(layer, BatchNorm) else ()):
            params[f"{layer.name}/{p}"] = (shape[-1],)
        return shape
    if isinstance(layer, Embedding):
        need(1, "token (T,)")
        params[f"{layer.name}/embeddings"] = (layer.vocab, layer.dim)
        return shape + (layer.dim,)
    if isinstance(layer, PositionalEmbedding):
        need(2, "a sequence (T, D)")
        if shape[0] > layer.max_len:
            raise ShapeError(where, f"sequence length {shape[0]} exceeds max_len {layer.max_len}")
        params[f"{layer.name}/embeddings"] = (layer.max_len, shape[1])
        return shape
    if isinstance(layer, LSTM):
        need(2, "a sequence (T, features)")
        h = layer.units
        params[f"{layer.name}/kernel"] = (shape[1], 4 * h)
        params[f"{layer.name}/recurrent_kernel"] = (h, 4 * h)
        params[f"{layer.name}/bias"] = (4 * h,)
        return (shape[0], h) if layer.return_sequences else (h,)
    if isinstance(layer, MultiHeadSelfAttention):
        need(2, "a sequence (T, D)")
        d = shape[1]
        if d % layer.num_heads:
            raise ShapeError(where, f"model width {d} is not divisible by num_heads {layer.num_heads}")
        for p in ("query", "key", "value", "output"):
            params[f"{layer.name}/{p}/kernel"], params[f"{layer.name}/{p}/bias"] = (d, d), (d,)
        return shape
    if isinstance(layer, Residual):
        out, sub = walk_shapes(layer.block, shape, f"{where}.block")
        short, sub2 = walk_shapes(layer.shortcut, shape, f"{where}.shortcut")
        if out != short:
            raise ShapeError(where, f"residual block gives {out} but the shortcut gives {short}")
        params.update(sub)
        params.update(sub2)
        return out
    raise ShapeError(where, f"unknown layer {getattr(layer, 'kind', layer)!r}")
