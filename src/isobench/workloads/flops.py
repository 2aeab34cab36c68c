"""FLOPs and bytes of a workload's training step, counted from the neutral spec (no framework involved).

Conventions (``docs/efficiency.md`` writes out every formula):

- A multiply-add is 2 FLOPs. Matmul FLOPs (Dense, Conv2D, attention's projections and its score and value
  products, LSTM gate products) are kept apart from the other FLOPs (bias adds, activations, norms, pooling,
  softmax, loss): the matmul part is what model FLOPs utilisation (MFU) and ``torch.utils.flop_counter`` count.
- Backward of a matmul = 2x its forward (input gradient + weight gradient), except that no input gradient is
  computed where nothing before the layer is trainable (the first Dense or Conv2D of a model): 1x there.
  Layers without parameters have no backward cost there either.
- Other ops count 1 FLOP per element and operation, a transcendental one (exp, erf, tanh, sqrt, division)
  included; the per-element tallies are the ``_*`` tables below. Causal attention is counted as the full
  (masked) T x T products, as dense kernels compute them.
- Everything is counted per example and scaled by the batch; the optimizer update is per parameter and step.
- Bytes per step are a modelled lower bound, not a measurement: parameters read, gradients written, the update's
  reads and writes of parameters, gradients and optimizer state; the input batch read once; the output of every
  layer with parameters written once in the forward pass and read once in the backward pass (everything between
  is assumed fused).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

from .spec import (LSTM, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                   LayerNorm, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape, Residual, Tanh,
                   UPDATE_RULES, Workload, walk_shapes)

# (forward, backward) FLOPs per output element of an activation: relu max | select; gelu x/sqrt2, erf, +1, *x,
# *0.5 | Phi (4) + x phi(x) (5) + add + *g; tanh 1 | (1 - y^2) g
_ACTIVATION = {"relu": (1, 1), "gelu": (5, 11), "tanh": (1, 3)}
# norms per element, training: mean 1, variance 3 (subtract, square, add), normalise 2, affine 2 | gamma and beta
# gradients 3, input gradient 4 (only when needed); BatchNorm in evaluation: subtract, scale, gamma, beta
_NORM_FORWARD, _NORM_PARAM_GRAD, _NORM_INPUT_GRAD, _BATCHNORM_EVAL = 8, 3, 4, 4
# attention per score element: scale, max, subtract, exp, sum, divide | softmax backward 4 + scale; a causal mask
# adds 1 each way
_SCORE_FORWARD, _SCORE_BACKWARD = 6, 5
# LSTM per unit and time step: bias 4, adding the two products 4, four gate activations, c = f c + i g (3),
# tanh(c), h = o tanh(c); backward 2x
_LSTM_GATES = 17
# softmax cross-entropy per logit: max, subtract, exp, sum | softmax divide, subtract one-hot
_XENT_FORWARD, _XENT_BACKWARD = 4, 2
# optimizer update per parameter and step (rules in backends/reference.py):
# sgd p -= lr g (2); momentum v = m v + g (+2); nesterov g + m v (+2);
# adam m: 3, v: 4, two bias corrections 2, sqrt, +eps, divide, *lr, subtract = 14; adamw + p -= (lr wd) p (2);
# rmsprop v: 4, sqrt, +eps, divide, *lr, subtract = 9; clipping: g*g, sum, scale (+3)
_UPDATE = {"sgd": 2, "adam": 14, "adamw": 16, "rmsprop": 9}
_STATE_SLOTS = {"sgd": 0, "adam": 2, "adamw": 2, "rmsprop": 1}  # optimizer state tensors per parameter


@dataclass(frozen=True)
class LayerFlops:
    """FLOPs per example of one layer: a training step's forward and backward, and evaluation.

    ``saved``: elements per example the bytes model writes in the forward pass and reads back in the backward
    pass (outputs of layers with parameters)."""
    path: str          # position in the spec, e.g. "layers[3].block[1]"
    kind: str
    matmul_forward: int = 0
    matmul_backward: int = 0
    other_forward: int = 0
    other_backward: int = 0
    eval_other: int | None = None  # other forward FLOPs in evaluation when they differ (BatchNorm, Dropout)
    saved: int = 0

    @property
    def forward(self) -> int:
        return self.matmul_forward + self.other_forward

    @property
    def backward(self) -> int:
        return self.matmul_backward + self.other_backward

    @property
    def eval_forward(self) -> int:
        return self.matmul_forward + (self.other_forward if self.eval_other is None else self.eval_other)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one workload, model counts (module docstring). Per-step figures are for a full batch;
    the per-epoch ones need the training set size and follow ``isobench.data.batches`` (the last batch keeps
    the remainder)."""
    workload: str
    batch_size: int
    epochs: int
    params: int                 # trainable parameters
    layers: tuple[LayerFlops, ...]
    loss_forward: int           # per example
    loss_backward: int
    update_per_param: int
    forward: int                # per step: batch x (layers + loss)
    backward: int
    update: int                 # per step: params x update_per_param
    matmul: int                 # per step, forward + backward matmul FLOPs only (the MFU numerator)
    per_step: int               # forward + backward + update
    per_sample: int             # forward + backward per example (the update is per step, not included)
    bytes_per_step: int         # modelled lower bound of memory traffic (module docstring)
    steps_per_epoch: int | None = None
    last_batch: int | None = None  # examples in the last batch of an epoch
    per_epoch: int | None = None
    eval_pass: int | None = None   # evaluation forward + loss + argmax over the test set

    def step(self, batch: int) -> int:
        """FLOPs of one training step on ``batch`` examples."""
        return batch * self.per_sample + self.update

    @property
    def per_run(self) -> int | None:
        """Every epoch's training steps (evaluation excluded)."""
        return None if self.per_epoch is None else self.per_epoch * self.epochs

    @property
    def intensity(self) -> float:
        """Modelled arithmetic intensity of a step, FLOPs per byte."""
        return self.per_step / self.bytes_per_step


def count_flops(workload: Workload, n_train: int | None = None, n_test: int | None = None,
                dtype_bytes: int = 4) -> FlopCount:
    """Count ``workload``'s FLOPs per layer, step, epoch (with ``n_train`` examples, e.g.
    ``len(load_dataset(w).x_train)``) and evaluation pass (``n_test``); ``dtype_bytes``: bytes per element
    in the bytes model (4 for float32)."""
    layers, out_shape, _ = layer_flops(workload.layers, tuple(workload.input_shape))
    positions, classes = prod(out_shape[:-1]), out_shape[-1]
    loss_f, loss_b = positions * classes * _XENT_FORWARD, positions * classes * _XENT_BACKWARD
    params = sum(prod(s) for s in workload.param_shapes().values())
    per_param = update_flops_per_param(workload.optimizer, workload.batch_size)
    b = workload.batch_size
    forward, backward = b * (sum(l.forward for l in layers) + loss_f), b * (sum(l.backward for l in layers) + loss_b)
    per_sample = (forward + backward) // b
    update = params * per_param
    # parameters: forward read, gradient write, update reads p, g and the state, writes p and the state
    param_bytes = params * (5 + 2 * state_slots(workload.optimizer))
    act_bytes = b * (prod(workload.input_shape) + 2 * sum(l.saved for l in layers))
    steps = last = per_epoch = None
    if n_train:
        steps = -(-n_train // b)
        last = n_train - (steps - 1) * b
        per_epoch = (steps - 1) * (b * per_sample + update) + last * per_sample + update
    eval_pass = None if n_test is None else \
        n_test * (sum(l.eval_forward for l in layers) + loss_f + positions * classes)  # argmax: 1 per logit
    return FlopCount(workload=workload.name, batch_size=b, epochs=workload.epochs, params=params, layers=tuple(layers),
                     loss_forward=loss_f, loss_backward=loss_b, update_per_param=per_param, forward=forward,
                     backward=backward, update=update,
                     matmul=b * sum(l.matmul_forward + l.matmul_backward for l in layers),
                     per_step=forward + backward + update, per_sample=per_sample,
                     bytes_per_step=dtype_bytes * (param_bytes + act_bytes), steps_per_epoch=steps, last_batch=last,
                     per_epoch=per_epoch, eval_pass=eval_pass)


def update_flops_per_param(optimizer, batch_size: int = 1) -> int:
    """The optimizer's update FLOPs per parameter and step (an ``OptimizerSpec``), clipping included. DP-SGD:
    its base update, plus per example a squared-norm term and a scaled sum (4 x ``batch_size``), plus the noise
    (multiply-add) and the division by the batch size (3)."""
    if optimizer.private:
        return update_flops_per_param(replace(optimizer, kind=optimizer.base)) + 4 * batch_size + 3
    if optimizer.kind not in UPDATE_RULES:
        raise ValueError(f"no FLOP count for optimizer {optimizer.kind!r}; known: {', '.join(UPDATE_RULES)}")
    sgd = optimizer.kind == "sgd"
    extra = 2 * (sgd and optimizer.momentum > 0) + 2 * (sgd and optimizer.momentum > 0 and optimizer.nesterov)
    return _UPDATE[optimizer.kind] + extra + 3 * (optimizer.clip_norm is not None)


def state_slots(optimizer) -> int:
    """Optimizer state tensors per parameter (SGD momentum 1, Adam/AdamW 2, RMSprop 1)."""
    kind = optimizer.base if optimizer.private else optimizer.kind
    return _STATE_SLOTS[kind] + (kind == "sgd" and optimizer.momentum > 0)


def layer_flops(layers, in_shape: tuple[int, ...], grad_in: bool = False, path: str = "layers"
                ) -> tuple[list[LayerFlops], tuple[int, ...], bool]:
    """Per-example FLOPs of every layer (residual blocks flattened, then one row for the residual add).

    ``grad_in``: whether the input needs a gradient (something before it is trainable). Returns the rows, the
    output shape and whether the output needs a gradient."""
    rows, shape = [], tuple(in_shape)
    for i, layer in enumerate(layers):
        where = f"{path}[{i}]"
        if isinstance(layer, Residual):
            block, out, g1 = layer_flops(layer.block, shape, grad_in, f"{where}.block")
            short, _, g2 = layer_flops(layer.shortcut, shape, grad_in, f"{where}.shortcut")
            # the add, and in backward the sum of the two branches' input gradients
            rows += block + short + [LayerFlops(where, "residual", other_forward=prod(out),
                                                other_backward=prod(shape) if grad_in else 0)]
            shape, grad_in = out, g1 or g2
            continue
        out, params = walk_shapes((layer,), shape, where)
        rows.append(_COUNTERS[type(layer)](layer, shape, out, grad_in, where))
        shape, grad_in = out, grad_in or bool(params)
    return rows, shape, grad_in


def _product(layer, path, matmul, grad_in, outputs):
    """One matmul of ``matmul`` forward FLOPs plus a bias on ``outputs`` elements (its gradient: a sum)."""
    return LayerFlops(path, layer.kind, matmul, matmul * (2 if grad_in else 1), outputs, outputs, saved=outputs)


def _dense(layer, shape, out, grad_in, path):
    return _product(layer, path, 2 * prod(shape) * layer.units, grad_in, prod(out))


def _conv(layer, shape, out, grad_in, path):
    macs = prod(out) * layer.kernel_size ** 2 * shape[-1]  # every output: k x k x C_in multiply-adds
    return _product(layer, path, 2 * macs, grad_in, prod(out))


def _attention(layer, shape, out, grad_in, path):
    t, d = shape
    proj, scores = 2 * t * d * d, 2 * t * t * d  # one D x D projection; q k^T (or a v) over all heads
    n_scores = layer.num_heads * t * t
    mask = int(layer.causal)
    # backward: 4 weight gradients, the output projection's input gradient, q/k/v input gradients when needed,
    # both operands of both score products
    return LayerFlops(path, layer.kind, 4 * proj + 2 * scores, 5 * proj + 3 * proj * grad_in + 4 * scores,
                      4 * t * d + n_scores * (_SCORE_FORWARD + mask), 4 * t * d + n_scores * (_SCORE_BACKWARD + mask),
                      saved=4 * t * d)  # q, k, v and the output


def _lstm(layer, shape, out, grad_in, path):
    t, n = shape
    h4 = 4 * layer.units
    x_proj, h_proj = 2 * t * n * h4, 2 * t * layer.units * h4  # every step: x_t kernel and h recurrent_kernel
    gates = t * layer.units * _LSTM_GATES
    return LayerFlops(path, layer.kind, x_proj + h_proj, x_proj * (2 if grad_in else 1) + 2 * h_proj,
                      gates, 2 * gates, saved=t * (h4 + 2 * layer.units))  # gates, c and h of every step


def _norm(layer, shape, out, grad_in, path):
    n = prod(shape)
    eval_other = _BATCHNORM_EVAL * n if isinstance(layer, BatchNorm) else None
    return LayerFlops(path, layer.kind, other_forward=_NORM_FORWARD * n,
                      other_backward=_NORM_PARAM_GRAD * n + _NORM_INPUT_GRAD * n * grad_in, eval_other=eval_other,
                      saved=n)


def _embedding(layer, shape, out, grad_in, path):
    return LayerFlops(path, layer.kind, other_backward=prod(out), saved=prod(out))  # gather | scatter-add


def _positional(layer, shape, out, grad_in, path):
    return LayerFlops(path, layer.kind, other_forward=prod(out), other_backward=prod(out), saved=prod(out))


def _activation(layer, shape, out, grad_in, path):
    f, b = _ACTIVATION[layer.kind]
    return LayerFlops(path, layer.kind, other_forward=f * prod(out), other_backward=b * prod(out) * grad_in)


def _dropout(layer, shape, out, grad_in, path):
    n = 2 * prod(out) * (layer.rate > 0)  # mask multiply and 1/(1-rate) scale; random draws not counted
    return LayerFlops(path, layer.kind, other_forward=n, other_backward=n * grad_in, eval_other=0)


def _pool(layer, shape, out, grad_in, path):
    window = layer.pool ** 2
    if isinstance(layer, MaxPool2D):  # window - 1 comparisons | route each gradient
        return LayerFlops(path, layer.kind, other_forward=(window - 1) * prod(out),
                          other_backward=prod(out) * grad_in)
    # window - 1 adds and a scale | scale and spread over the window
    return LayerFlops(path, layer.kind, other_forward=window * prod(out), other_backward=window * prod(out) * grad_in)


def _global_pool(layer, shape, out, grad_in, path):
    return LayerFlops(path, layer.kind, other_forward=prod(shape) + prod(out), other_backward=prod(shape) * grad_in)


def _free(layer, shape, out, grad_in, path):
    return LayerFlops(path, layer.kind)


_COUNTERS = {Dense: _dense, Conv2D: _conv, MultiHeadSelfAttention: _attention, LSTM: _lstm, BatchNorm: _norm,
             LayerNorm: _norm, Embedding: _embedding, PositionalEmbedding: _positional, ReLU: _activation,
             GELU: _activation, Tanh: _activation, Dropout: _dropout, MaxPool2D: _pool, AvgPool2D: _pool,
             GlobalAvgPool: _global_pool, Flatten: _free, Reshape: _free}
