"""float64 numpy implementation of the neutral spec: forward, backward and every optimizer.

It is the executable definition of the semantics in :mod:`isobench.workloads.spec` and the reference
that ``isobench parity`` compares every framework against. It is also selectable as framework ``numpy``
(mode ``reference``) so the runner can be exercised without any deep-learning framework installed.
Each layer has a forward ``(y, cache)`` and a backward ``dy -> dx`` that accumulates parameter gradients;
the backward passes are checked against finite differences in the tests.
"""
from __future__ import annotations

from math import sqrt

import numpy as np
from scipy.special import erf

from ..data import Dataset
from ..results import FrameworkSettings
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from .base import Backend, LayerBuilder, Trainer, check_build, check_optimizer
from .common import CLIP_EPS, conv_size, pool_window
from .private import Noise, base_workload, check_private


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over every position (batch, and time for sequences) and its logit gradient."""
    shape = logits.shape
    z = logits.reshape(-1, shape[-1])
    y = np.asarray(y).reshape(-1)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -logp[np.arange(n), y].mean()
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1.0
    return float(loss), (grad / n).reshape(shape)


class Model(LayerBuilder):
    """Forward/backward over a layer sequence with parameters ``p`` and BatchNorm state ``s`` (dicts).

    Each layer kind has a forward method named after it, ``kind(layer, x, train) -> (y, cache)``, and a backward
    method ``kind_backward(layer, cache, dy, grads) -> dx`` that accumulates the parameter gradients."""

    display = "reference"

    def __init__(self, layers, p: dict[str, np.ndarray], s: dict[str, np.ndarray]):
        self.layers, self.p, self.s = layers, p, s

    def forward(self, x, train: bool):
        return self._seq_forward(self.layers, x, train)

    def backward(self, caches, dy) -> dict[str, np.ndarray]:
        grads = {k: np.zeros_like(v) for k, v in self.p.items()}
        self._seq_backward(self.layers, caches, dy, grads)
        return grads

    def _seq_forward(self, layers, x, train):
        caches = []
        for layer in layers:
            x, c = self.build(layer, x, train)
            caches.append(c)
        return x, caches

    def _seq_backward(self, layers, caches, dy, g):
        for layer, c in zip(reversed(layers), reversed(caches)):
            dy = self.method(layer, "_backward")(layer, c, dy, g)
        return dy

    # ---- one forward and one backward method per spec layer kind ----

    def dense(self, layer: Dense, x, train):
        return x @ self.p[f"{layer.name}/kernel"] + self.p[f"{layer.name}/bias"], x

    def dense_backward(self, layer: Dense, c, dy, g):
        n = layer.name
        g[f"{n}/kernel"] += c.reshape(-1, c.shape[-1]).T @ dy.reshape(-1, dy.shape[-1])
        g[f"{n}/bias"] += dy.reshape(-1, dy.shape[-1]).sum(axis=0)
        return dy @ self.p[f"{n}/kernel"].T

    def relu(self, layer: ReLU, x, train):
        return np.maximum(x, 0.0), x

    def relu_backward(self, layer: ReLU, c, dy, g):
        return dy * (c > 0)

    def tanh(self, layer: Tanh, x, train):
        y = np.tanh(x)
        return y, y

    def tanh_backward(self, layer: Tanh, c, dy, g):
        return dy * (1.0 - c * c)

    def gelu(self, layer: GELU, x, train):
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0))), x

    def gelu_backward(self, layer: GELU, c, dy, g):
        return dy * (0.5 * (1.0 + erf(c / sqrt(2.0))) + c * np.exp(-0.5 * c * c) / sqrt(2.0 * np.pi))

    def dropout(self, layer: Dropout, x, train):
        if train and layer.rate > 0:
            raise NotImplementedError("the reference trains without dropout (parity disables it)")
        return x, None

    def dropout_backward(self, layer: Dropout, c, dy, g):
        return dy

    def flatten(self, layer: Flatten, x, train):
        return x.reshape((len(x), -1)), x.shape

    def reshape(self, layer: Reshape, x, train):
        return x.reshape((len(x),) + tuple(layer.shape)), x.shape

    def flatten_backward(self, layer, c, dy, g):
        return dy.reshape(c)

    reshape_backward = flatten_backward

    def global_avg_pool(self, layer: GlobalAvgPool, x, train):
        return x.mean(axis=tuple(range(1, x.ndim - 1))), x.shape

    def global_avg_pool_backward(self, layer: GlobalAvgPool, shape, dy, g):
        count = np.prod(shape[1:-1])
        return np.broadcast_to(dy.reshape((shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)) / count, shape).copy()

    def conv2d(self, layer: Conv2D, x, train):
        k, st, pad = layer.kernel_size, layer.stride, layer.pad
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        oh, ow = conv_size(xp.shape[1], k, st), conv_size(xp.shape[2], k, st)
        cols = np.stack([w for _, _, w in _windows(xp, k, st, oh, ow)], axis=3)  # (B, oh, ow, k*k, C)
        cols = cols.reshape(len(x), oh, ow, -1)
        w = self.p[f"{layer.name}/kernel"]
        y = cols @ w.reshape(-1, w.shape[-1]) + self.p[f"{layer.name}/bias"]
        return y, (cols, xp.shape, oh, ow)

    def conv2d_backward(self, layer: Conv2D, c, dy, g):
        cols, xp_shape, oh, ow = c
        n, k, st, pad = layer.name, layer.kernel_size, layer.stride, layer.pad
        w = self.p[f"{n}/kernel"]
        g[f"{n}/kernel"] += (cols.reshape(-1, cols.shape[-1]).T @ dy.reshape(-1, dy.shape[-1])).reshape(w.shape)
        g[f"{n}/bias"] += dy.reshape(-1, dy.shape[-1]).sum(axis=0)
        dcols = (dy @ w.reshape(-1, w.shape[-1]).T).reshape(dy.shape[:3] + (k * k, xp_shape[-1]))
        dxp = np.zeros(xp_shape)
        for idx, (i, j, _) in enumerate(_windows(dxp, k, st, oh, ow)):
            dxp[:, i:i + st * (oh - 1) + 1:st, j:j + st * (ow - 1) + 1:st, :] += dcols[:, :, :, idx, :]
        return dxp[:, pad:xp_shape[1] - pad, pad:xp_shape[2] - pad, :]

    def _windows_of(self, layer, x):
        (k, st) = pool_window(layer)
        oh, ow = conv_size(x.shape[1], k, st), conv_size(x.shape[2], k, st)
        return np.stack([w for _, _, w in _windows(x, k, st, oh, ow)], axis=0), oh, ow  # (k*k, B, oh, ow, C)

    def avgpool2d(self, layer: AvgPool2D, x, train):
        wins, oh, ow = self._windows_of(layer, x)
        return wins.mean(axis=0), (x.shape, oh, ow)

    def maxpool2d(self, layer: MaxPool2D, x, train):
        wins, oh, ow = self._windows_of(layer, x)
        arg = wins.argmax(axis=0)  # first maximum on ties
        return np.take_along_axis(wins, arg[None], 0)[0], (x.shape, oh, ow, arg)

    def maxpool2d_backward(self, layer, c, dy, g):
        (k, st), (shape, oh, ow) = pool_window(layer), c[:3]
        dx = np.zeros(shape)
        for idx, (i, j, _) in enumerate(_windows(dx, k, st, oh, ow)):
            part = dy / (k * k) if isinstance(layer, AvgPool2D) else dy * (c[3] == idx)
            dx[:, i:i + st * (oh - 1) + 1:st, j:j + st * (ow - 1) + 1:st, :] += part
        return dx

    avgpool2d_backward = maxpool2d_backward

    def batchnorm(self, layer: BatchNorm, x, train):
        n, s = layer.name, self.s
        axes = tuple(range(x.ndim - 1))
        if train:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            count = x.size // x.shape[-1]
            mo = layer.momentum
            s[f"{n}/moving_mean"] = mo * s[f"{n}/moving_mean"] + (1 - mo) * mean
            s[f"{n}/moving_var"] = mo * s[f"{n}/moving_var"] + (1 - mo) * var * count / (count - 1)
        else:
            mean, var = s[f"{n}/moving_mean"], s[f"{n}/moving_var"]
        inv = 1.0 / np.sqrt(var + layer.epsilon)
        xhat = (x - mean) * inv
        return self.p[f"{n}/gamma"] * xhat + self.p[f"{n}/beta"], (xhat, inv, axes)

    def batchnorm_backward(self, layer: BatchNorm, c, dy, g):
        xhat, inv, axes = c
        n = layer.name
        g[f"{n}/gamma"] += (dy * xhat).sum(axis=axes)
        g[f"{n}/beta"] += dy.sum(axis=axes)
        dxhat = dy * self.p[f"{n}/gamma"]
        if not self.train:  # evaluation-mode statistics are constants
            return dxhat * inv
        return inv * (dxhat - dxhat.mean(axis=axes) - xhat * (dxhat * xhat).mean(axis=axes))

    def layernorm(self, layer: LayerNorm, x, train):
        n = layer.name
        mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
        inv = 1.0 / np.sqrt(var + layer.epsilon)
        xhat = (x - mean) * inv
        return self.p[f"{n}/gamma"] * xhat + self.p[f"{n}/beta"], (xhat, inv)

    def layernorm_backward(self, layer: LayerNorm, c, dy, g):
        xhat, inv = c
        n = layer.name
        flat = tuple(range(dy.ndim - 1))
        g[f"{n}/gamma"] += (dy * xhat).sum(axis=flat)
        g[f"{n}/beta"] += dy.sum(axis=flat)
        dxhat = dy * self.p[f"{n}/gamma"]
        return inv * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))

    def embedding(self, layer: Embedding, x, train):
        tokens = np.asarray(x, dtype=np.int64)
        return self.p[f"{layer.name}/embeddings"][tokens], tokens

    def embedding_backward(self, layer: Embedding, c, dy, g):
        np.add.at(g[f"{layer.name}/embeddings"], c, dy)
        return None

    def positional_embedding(self, layer: PositionalEmbedding, x, train):
        return x + self.p[f"{layer.name}/embeddings"][:x.shape[1]], x.shape[1]

    def positional_embedding_backward(self, layer: PositionalEmbedding, c, dy, g):
        g[f"{layer.name}/embeddings"][:c] += dy.sum(axis=0)
        return dy

    def lstm(self, layer: LSTM, x, train):
        return _lstm_forward(self, layer, x)

    def lstm_backward(self, layer: LSTM, c, dy, g):
        return _lstm_backward(self, layer, c, dy, g)

    def attention(self, layer: MultiHeadSelfAttention, x, train):
        return _attention_forward(self, layer, x)

    def attention_backward(self, layer: MultiHeadSelfAttention, c, dy, g):
        return _attention_backward(self, layer, c, dy, g)

    def residual(self, layer: Residual, x, train):
        y, cb = self._seq_forward(layer.block, x, train)
        sc, cs = self._seq_forward(layer.shortcut, x, train)
        return y + sc, (cb, cs)

    def residual_backward(self, layer: Residual, c, dy, g):
        cb, cs = c
        dx = self._seq_backward(layer.block, cb, dy, g)
        return dx + self._seq_backward(layer.shortcut, cs, dy, g)


def _windows(x, k, s, oh, ow):
    """Every (ki, kj) offset of a k x k window with stride s: views of shape (B, oh, ow, C)."""
    for i in range(k):
        for j in range(k):
            yield i, j, x[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s, :]


def _lstm_forward(m, layer, x):
    n, hdim = layer.name, layer.units
    w, u, b = m.p[f"{n}/kernel"], m.p[f"{n}/recurrent_kernel"], m.p[f"{n}/bias"]
    bsz, steps, _ = x.shape
    h, cell = np.zeros((bsz, hdim)), np.zeros((bsz, hdim))
    hs, cache = [], []
    for t in range(steps):
        z = x[:, t] @ w + h @ u + b
        i, f, gg, o = (z[:, k * hdim:(k + 1) * hdim] for k in range(4))
        i, f, gg, o = _sigmoid(i), _sigmoid(f), np.tanh(gg), _sigmoid(o)
        c_prev, h_prev = cell, h
        cell = f * c_prev + i * gg
        tc = np.tanh(cell)
        h = o * tc
        cache.append((x[:, t], h_prev, c_prev, i, f, gg, o, tc))
        hs.append(h)
    y = np.stack(hs, axis=1) if layer.return_sequences else h
    return y, cache


def _lstm_backward(m, layer, cache, dy, g):
    n = layer.name
    w, u = m.p[f"{n}/kernel"], m.p[f"{n}/recurrent_kernel"]
    steps = len(cache)
    dx = np.zeros((cache[0][0].shape[0], steps, w.shape[0]))
    dh_next = np.zeros_like(cache[0][1])
    dc_next = np.zeros_like(dh_next)
    for t in reversed(range(steps)):
        xt, h_prev, c_prev, i, f, gg, o, tc = cache[t]
        dh = dh_next + (dy[:, t] if layer.return_sequences else (dy if t == steps - 1 else 0.0))
        do = dh * tc
        dc = dc_next + dh * o * (1.0 - tc * tc)
        di, df, dg = dc * gg, dc * c_prev, dc * i
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - gg * gg), do * o * (1 - o)], axis=1)
        g[f"{n}/kernel"] += xt.T @ dz
        g[f"{n}/recurrent_kernel"] += h_prev.T @ dz
        g[f"{n}/bias"] += dz.sum(axis=0)
        dx[:, t] = dz @ w.T
        dh_next, dc_next = dz @ u.T, dc * f
    return dx


def _attention_forward(m, layer, x):
    n, heads = layer.name, layer.num_heads
    bsz, steps, d = x.shape
    dh = d // heads

    def proj(name):
        y = x @ m.p[f"{n}/{name}/kernel"] + m.p[f"{n}/{name}/bias"]
        return y.reshape(bsz, steps, heads, dh).transpose(0, 2, 1, 3)  # (B, h, T, dh)

    q, k, v = proj("query"), proj("key"), proj("value")
    scores = q @ k.transpose(0, 1, 3, 2) / sqrt(dh)
    if layer.causal:
        scores = np.where(np.tril(np.ones((steps, steps), dtype=bool)), scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    a = np.exp(scores)
    a /= a.sum(axis=-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(bsz, steps, d)
    y = o @ m.p[f"{n}/output/kernel"] + m.p[f"{n}/output/bias"]
    return y, (x, q, k, v, a, o)


def _attention_backward(m, layer, c, dy, g):
    x, q, k, v, a, o = c
    n, heads = layer.name, layer.num_heads
    bsz, steps, d = x.shape
    dh = d // heads
    g[f"{n}/output/kernel"] += o.reshape(-1, d).T @ dy.reshape(-1, d)
    g[f"{n}/output/bias"] += dy.reshape(-1, d).sum(axis=0)
    do = (dy @ m.p[f"{n}/output/kernel"].T).reshape(bsz, steps, heads, dh).transpose(0, 2, 1, 3)
    da = do @ v.transpose(0, 1, 3, 2)
    dv = a.transpose(0, 1, 3, 2) @ do
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) / sqrt(dh)
    dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
    dx = np.zeros_like(x)
    for name, dproj in (("query", dq), ("key", dk), ("value", dv)):
        flat = dproj.transpose(0, 2, 1, 3).reshape(-1, d)
        g[f"{n}/{name}/kernel"] += x.reshape(-1, d).T @ flat
        g[f"{n}/{name}/bias"] += flat.sum(axis=0)
        dx += (flat @ m.p[f"{n}/{name}/kernel"].T).reshape(x.shape)
    return dx


class Optimizer:
    """The neutral update rules, one step at a time, in float64.

    sgd:     v = momentum v + g;  g' = g + momentum v (nesterov) or v;  p -= lr g'   (v starts at 0)
    adam:    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
    adamw:   p -= lr wd p, then the adam step
    rmsprop: v = rho v + (1-rho) g^2 (v starts at 0);  p -= lr g / (sqrt(v) + eps)
    Clipping first: g *= min(1, clip_norm / (global_norm + 1e-6))."""

    def __init__(self, spec, params: dict[str, np.ndarray]):
        check_optimizer("reference", spec.kind)
        self.spec, self.t = spec, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, p: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        o, self.t = self.spec, self.t + 1
        if o.clip_norm is not None:
            norm = sqrt(sum(float((gr * gr).sum()) for gr in grads.values()))
            scale = min(1.0, o.clip_norm / (norm + CLIP_EPS))
            grads = {k: gr * scale for k, gr in grads.items()}
        for k, gr in grads.items():
            if o.kind == "sgd":
                if o.momentum:
                    self.m[k] = o.momentum * self.m[k] + gr
                    gr = gr + o.momentum * self.m[k] if o.nesterov else self.m[k]
                p[k] -= lr * gr
            elif o.kind in ("adam", "adamw"):
                if o.kind == "adamw":
                    p[k] -= lr * o.weight_decay * p[k]
                self.m[k] = o.beta1 * self.m[k] + (1 - o.beta1) * gr
                self.v[k] = o.beta2 * self.v[k] + (1 - o.beta2) * gr * gr
                mhat, vhat = self.m[k] / (1 - o.beta1 ** self.t), self.v[k] / (1 - o.beta2 ** self.t)
                p[k] -= lr * mhat / (np.sqrt(vhat) + o.epsilon)
            else:  # rmsprop
                self.v[k] = o.rho * self.v[k] + (1 - o.rho) * gr * gr
                p[k] -= lr * gr / (np.sqrt(self.v[k]) + o.epsilon)


class ReferenceTrainer(Trainer):
    """The whole workload in float64 numpy: forward, backward, optimizer, BatchNorm state."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, dtype=np.float64):
        self.w, self.dtype = workload, dtype
        state = workload.state_shapes()
        self.p = {k: v.astype(dtype) for k, v in params.items() if k not in state}
        self.s = {k: v.astype(dtype) for k, v in params.items() if k in state}
        self.model = Model(workload.layers, self.p, self.s)
        self.opt = Optimizer(workload.optimizer, self.p)
        cast = (lambda a: a) if workload.input_dtype == "int32" else (lambda a: a.astype(dtype))
        self.x_train, self.y_train = cast(data.x_train), data.y_train
        self.x_test, self.y_test = cast(data.x_test), data.y_test

    def _run(self, x, train: bool):
        self.model.train = train
        return self.model.forward(x, train)

    def _loss_and_grads(self, idx: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        logits, caches = self._run(self.x_train[idx], True)
        loss, dlogits = softmax_xent(logits, self.y_train[idx])
        return loss, self.model.backward(caches, dlogits)

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        loss, grads = self._loss_and_grads(idx)
        self.opt.step(self.p, grads, self.w.optimizer.learning_rate if lr is None else lr)
        return loss

    def evaluate(self) -> tuple[float, float]:
        logits, _ = self._run(self.x_test, False)
        loss, _ = softmax_xent(logits, self.y_test)
        return loss, float((logits.argmax(axis=-1) == self.y_test).mean())

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = x if self.w.input_dtype == "int32" else x.astype(self.dtype)
        return self._run(x, False)[0]

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        saved = {k: v.copy() for k, v in self.s.items()}  # a gradient probe must not move BatchNorm state
        grads = self._loss_and_grads(idx)[1]
        self.s.update(saved)
        return grads

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in {**self.p, **self.s}.items()}


class PrivateReferenceTrainer(ReferenceTrainer):
    """DP-SGD in float64, example by example, exactly as ``OptimizerSpec`` states it: each example's gradient
    scaled by min(1, clip / (norm + 1e-6)), summed, plus noise_multiplier x clip x the step's noise (the
    frameworks' float32 draw, read in float64), divided by batch_size; then the base optimizer."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, dtype=np.float64):
        check_private("reference", workload)
        super().__init__(base_workload(workload), params, data, dtype)
        self.clip, self.noise = workload.optimizer.clip, Noise(workload)

    def clipped_sum(self, idx: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """The batch's mean loss (0 when empty) and the sum of its clipped per-example gradients."""
        total, losses = {k: np.zeros_like(v) for k, v in self.p.items()}, []
        for i in idx:
            loss, g = self._loss_and_grads(np.array([i]))
            scale = min(1.0, self.clip / (sqrt(sum(float((x * x).sum()) for x in g.values())) + CLIP_EPS))
            for k in total:
                total[k] += scale * g[k]
            losses.append(loss)
        return float(np.mean(losses)) if losses else 0.0, total

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        loss, total = self.clipped_sum(idx)
        noise = self.noise.split(self.noise.draw().astype(self.dtype))
        grads = {k: (g + self.noise.std * noise[k]) / self.w.batch_size for k, g in total.items()}
        self.opt.step(self.p, grads, self.w.optimizer.learning_rate if lr is None else lr)
        return loss

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return self.clipped_sum(idx)[1]


class ReferenceBackend(Backend):
    name = "numpy"
    display = "NumPy (float64 reference)"
    distribution = "numpy"
    import_name = "numpy"
    install_hint = "pip install numpy"
    modes = ("reference",)
    precisions = ("fp32",)
    optimizer_impls = ("neutral",)  # the spec's rules themselves; numpy has no optimizer library
    trainer, private_trainer = ReferenceTrainer, PrivateReferenceTrainer  # what check_build reads: it has DP-SGD

    def setup(self, threads: int, device: str = "cpu") -> FrameworkSettings:
        self.settings = FrameworkSettings(
            version=np.__version__, device="cpu",
            threads_note="numpy BLAS threads follow OMP/OPENBLAS/MKL_NUM_THREADS set by the worker")
        return self.settings

    def inference_model(self, workload: Workload, params: dict[str, np.ndarray]):
        """``f(x) -> logits`` in float64: :class:`Model`'s forward in inference mode over ``params`` in float64 (float
        inputs widened, token ids as they are); the logits every deployment path is checked against."""
        p = {k: np.asarray(v, np.float64) for k, v in params.items()}
        state = workload.state_shapes()
        model = Model(workload.layers, {k: v for k, v in p.items() if k not in state},
                      {k: v for k, v in p.items() if k in state})

        def f(x: np.ndarray) -> np.ndarray:
            return model.forward(x if np.issubdtype(x.dtype, np.integer) else np.asarray(x, np.float64), train=False)[0]
        return f

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
              precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral") -> Trainer:
        check_build(self, workload, mode, precision, device, optimizer)  # the check the session's plan made
        return (self.private_trainer if workload.optimizer.private else self.trainer)(workload, params, data)
