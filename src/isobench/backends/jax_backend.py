"""JAX backend in plain JAX (no flax, no optax): a dict pytree of parameters, a pure forward function,
``jax.value_and_grad`` and the optimizer update by ``tree_map``, all under one ``jax.jit`` step.

- Parameters, BatchNorm moving statistics, optimizer slots (and step counter) and the dropout key form one
  carried pytree that the jitted step takes, donates and returns, so nothing is copied between steps.
- The learning rate is a float32 scalar argument of the step: the runner's schedule never retraces it.
- The data lives on the device from :meth:`JaxTrainer.__init__`; the step gathers its batch by index.
  A partial last batch is padded to the full batch with a 0/1 mask, so one compiled step serves every
  batch: the loss is the mean over the real examples (and positions) and BatchNorm batch statistics are
  masked too (padded rows have weight 0 in mean and variance, and are not counted).
- Dropout draws from ``jax.random`` with a key seeded from the workload seed, carried in the state and
  split every training step. :meth:`JaxTrainer.gradients` is a parity probe: training mode (batch
  statistics), dropout off, and it leaves everything (key included) untouched.

jax is imported in :meth:`JaxBackend.setup` / :meth:`JaxBackend.build` only.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Any

import numpy as np

from ..data import Dataset
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from .base import Backend, Trainer, check_build, env_flags

DISPLAY = "JAX"


class _Call:
    """What one forward call needs besides params and state: mode, dropout key, padding mask, and the
    BatchNorm statistics it produces (written here while tracing; returned as the new state)."""

    def __init__(self, train: bool, key, mask):
        self.train, self.key, self.mask = train, key, mask
        self.new_state: dict = {}


def _forward_fn(workload: Workload):
    """``forward(params, state, x, train, key, mask) -> (logits, new_state)``, params keyed by canonical name.

    ``train`` is a Python bool (static); ``key`` is a PRNG key or ``None`` (no dropout); ``mask`` is a
    float (B,) 0/1 vector of real rows or ``None`` (every row is real)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    dropout_ids = itertools.count()  # each Dropout layer folds its own number into the step's key

    def build(layer):
        if isinstance(layer, Dense):  # canonical layout (in, out), on the last axis
            n = layer.name
            return lambda p, s, x, c: x @ p[f"{n}/kernel"] + p[f"{n}/bias"]
        if isinstance(layer, Conv2D):
            n, st, pad = layer.name, layer.stride, layer.pad
            return lambda p, s, x, c: lax.conv_general_dilated(
                x, p[f"{n}/kernel"], window_strides=(st, st), padding=((pad, pad), (pad, pad)),
                dimension_numbers=("NHWC", "HWIO", "NHWC")) + p[f"{n}/bias"]
        if isinstance(layer, MaxPool2D):
            k, st = layer.pool, layer.stride or layer.pool
            return lambda p, s, x, c: lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, st, st, 1), "VALID")
        if isinstance(layer, AvgPool2D):
            k, st = layer.pool, layer.stride or layer.pool
            return lambda p, s, x, c: lax.reduce_window(x, 0.0, lax.add, (1, k, k, 1), (1, st, st, 1),
                                                        "VALID") / (k * k)
        if isinstance(layer, GlobalAvgPool):
            return lambda p, s, x, c: jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
        if isinstance(layer, Flatten):  # NHWC stays channels-last: the canonical order
            return lambda p, s, x, c: jnp.reshape(x, (x.shape[0], -1))
        if isinstance(layer, Reshape):
            shape = tuple(layer.shape)
            return lambda p, s, x, c: jnp.reshape(x, (x.shape[0],) + shape)
        if isinstance(layer, ReLU):
            return lambda p, s, x, c: jax.nn.relu(x)
        if isinstance(layer, GELU):  # exact erf form; jax's default is the tanh approximation
            return lambda p, s, x, c: jax.nn.gelu(x, approximate=False)
        if isinstance(layer, Tanh):
            return lambda p, s, x, c: jnp.tanh(x)
        if isinstance(layer, Dropout):
            return _dropout(layer.rate, next(dropout_ids))
        if isinstance(layer, BatchNorm):
            return _batchnorm(layer)
        if isinstance(layer, LayerNorm):
            n, eps = layer.name, layer.epsilon

            def layernorm(p, s, x, c):
                mean = jnp.mean(x, axis=-1, keepdims=True)
                var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
                return (x - mean) * lax.rsqrt(var + eps) * p[f"{n}/gamma"] + p[f"{n}/beta"]
            return layernorm
        if isinstance(layer, Embedding):
            n = layer.name
            return lambda p, s, x, c: jnp.take(p[f"{n}/embeddings"], x, axis=0)
        if isinstance(layer, PositionalEmbedding):
            n = layer.name
            return lambda p, s, x, c: x + p[f"{n}/embeddings"][:x.shape[1]]
        if isinstance(layer, LSTM):
            return _lstm(layer)
        if isinstance(layer, MultiHeadSelfAttention):
            return _attention(layer)
        if isinstance(layer, Residual):
            block, shortcut = sequence(layer.block), sequence(layer.shortcut)
            return lambda p, s, x, c: block(p, s, x, c) + shortcut(p, s, x, c)
        raise NotImplementedError(f"{DISPLAY} backend has no layer {getattr(layer, 'kind', layer)!r}")

    def sequence(layers):
        fns = [build(layer) for layer in layers]

        def run(p, s, x, c):
            for f in fns:
                x = f(p, s, x, c)
            return x
        return run

    def _dropout(rate, number):
        def dropout(p, s, x, c):
            if not c.train or rate == 0.0 or c.key is None:
                return x
            keep = jax.random.bernoulli(jax.random.fold_in(c.key, number), 1.0 - rate, x.shape)
            return jnp.where(keep, x / (1.0 - rate), 0.0)
        return dropout

    def _batchnorm(layer):
        n, mo, eps = layer.name, layer.momentum, layer.epsilon
        mm, mv = f"{n}/moving_mean", f"{n}/moving_var"

        def batchnorm(p, s, x, c):
            if c.train:
                axes = tuple(range(x.ndim - 1))
                per_row = math.prod(x.shape[1:-1])  # positions per example
                if c.mask is None:
                    mean = jnp.mean(x, axis=axes)
                    var = jnp.mean(jnp.square(x - mean), axis=axes)
                    count = float(x.shape[0] * per_row)
                else:  # padded rows have weight 0 and are not counted
                    w = jnp.reshape(c.mask, (-1,) + (1,) * (x.ndim - 1))
                    count = jnp.sum(c.mask) * per_row
                    mean = jnp.sum(x * w, axis=axes) / count
                    var = jnp.sum(jnp.square(x - mean) * w, axis=axes) / count
                # moving statistics: constants for the gradient, unbiased variance (PyTorch's estimator)
                bm, bv = lax.stop_gradient(mean), lax.stop_gradient(var)
                c.new_state[mm] = mo * s[mm] + (1.0 - mo) * bm
                c.new_state[mv] = mo * s[mv] + (1.0 - mo) * bv * (count / (count - 1.0))
            else:
                mean, var = s[mm], s[mv]
            return (x - mean) * lax.rsqrt(var + eps) * p[f"{n}/gamma"] + p[f"{n}/beta"]
        return batchnorm

    def _lstm(layer):
        n, units, seq = layer.name, layer.units, layer.return_sequences

        def lstm(p, s, x, c):
            u = p[f"{n}/recurrent_kernel"]
            # input projection of every step in one matmul, time-major for the scan
            xz = jnp.swapaxes(x @ p[f"{n}/kernel"] + p[f"{n}/bias"], 0, 1)  # (T, B, 4H)

            def cell(carry, zx):
                h, cc = carry
                i, f, g, o = jnp.split(zx + h @ u, 4, axis=-1)
                cc = jax.nn.sigmoid(f) * cc + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(cc)
                return (h, cc), (h if seq else None)

            zeros = jnp.zeros((x.shape[0], units), x.dtype)
            (h, _), hs = lax.scan(cell, (zeros, zeros), xz)
            return jnp.swapaxes(hs, 0, 1) if seq else h
        return lstm

    def _attention(layer):
        n, heads, causal = layer.name, layer.num_heads, layer.causal

        def attention(p, s, x, c):
            b, t, d = x.shape
            dh = d // heads

            def proj(name):  # (B, T, D) -> (B, T, heads, dh), heads head-major along D
                return jnp.reshape(x @ p[f"{n}/{name}/kernel"] + p[f"{n}/{name}/bias"], (b, t, heads, dh))

            q, k, v = proj("query"), proj("key"), proj("value")
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
            if causal:
                scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -jnp.inf)
            a = jax.nn.softmax(scores, axis=-1)
            o = jnp.reshape(jnp.einsum("bhqk,bkhd->bqhd", a, v), (b, t, d))
            return o @ p[f"{n}/output/kernel"] + p[f"{n}/output/bias"]
        return attention

    model = sequence(workload.layers)

    def forward(params, state, x, train: bool, key=None, mask=None):
        c = _Call(train, key, mask)
        y = model(params, state, x, c)
        return y, {**state, **c.new_state}

    return forward


def _optimizer(spec):
    """``(init(params) -> slots, update(params, grads, slots, lr) -> (params, slots))`` by ``tree_map``,
    exactly the rules of ``isobench.backends.reference.Optimizer`` (clipping by global norm first)."""
    import jax
    import jax.numpy as jnp

    tree_map = jax.tree_util.tree_map
    kind = spec.kind
    if kind not in ("sgd", "adam", "adamw", "rmsprop"):
        raise NotImplementedError(f"{DISPLAY} backend has no optimizer {kind!r}")

    def init(p):
        zeros = lambda: tree_map(jnp.zeros_like, p)  # noqa: E731
        if kind == "sgd":
            return {"m": zeros()} if spec.momentum else {}
        if kind == "rmsprop":
            return {"v": zeros()}
        return {"t": jnp.zeros((), jnp.int32), "m": zeros(), "v": zeros()}

    def clip(g):
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(g)))
        scale = jnp.minimum(1.0, spec.clip_norm / (norm + 1e-6))
        return tree_map(lambda x: x * scale, g)

    def update(p, g, slots, lr):
        if spec.clip_norm is not None:
            g = clip(g)
        if kind == "sgd":
            if not spec.momentum:
                return tree_map(lambda w, g: w - lr * g, p, g), slots
            mo = spec.momentum
            m = tree_map(lambda m, g: mo * m + g, slots["m"], g)
            step = tree_map(lambda m, g: g + mo * m, m, g) if spec.nesterov else m
            return tree_map(lambda w, d: w - lr * d, p, step), {"m": m}
        if kind == "rmsprop":
            rho, eps = spec.rho, spec.epsilon
            v = tree_map(lambda v, g: rho * v + (1.0 - rho) * g * g, slots["v"], g)
            return tree_map(lambda w, g, v: w - lr * g / (jnp.sqrt(v) + eps), p, g, v), {"v": v}
        b1, b2, eps = spec.beta1, spec.beta2, spec.epsilon
        t = slots["t"] + 1
        tf = t.astype(jnp.float32)
        # 1 - beta^t as -expm1(t log beta): no float32 cancellation for beta close to 1
        bc1, bc2 = -jnp.expm1(tf * math.log(b1)), -jnp.expm1(tf * math.log(b2))
        if kind == "adamw":  # decoupled weight decay before the Adam step, on every parameter
            wd = spec.weight_decay
            p = tree_map(lambda w: w - lr * wd * w, p)
        m = tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, slots["m"], g)
        v = tree_map(lambda v, g: b2 * v + (1.0 - b2) * g * g, slots["v"], g)
        p = tree_map(lambda w, m, v: w - lr * (m / bc1) / (jnp.sqrt(v / bc2) + eps), p, m, v)
        return p, {"t": t, "m": m, "v": v}

    return init, update


# mode -> how every step function is compiled; a later issue adds "eager" (no jit)
_COMPILE = {"jit": lambda jax, fn, donate=(): jax.jit(fn, donate_argnums=donate)}


class JaxTrainer(Trainer):
    """One carried pytree ``{"params", "state", "slots", "key"}`` of device arrays, replaced (donated) by
    every jitted step."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str):
        import jax
        import jax.numpy as jnp

        forward = _forward_fn(workload)
        opt_init, opt_update = _optimizer(workload.optimizer)
        state_names = workload.state_shapes()

        def nll(logits, y):  # per-example (and per-position) softmax cross-entropy
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], axis=-1)[..., 0]

        def masked_loss(p, s, x_all, y_all, idx, mask, key):
            """Mean over the real rows (mask 1) and every position; gathers the batch inside."""
            logits, new_s = forward(p, s, x_all[idx], True, key, mask)
            per = nll(logits, y_all[idx])
            w = jnp.reshape(mask, (-1,) + (1,) * (per.ndim - 1))
            return jnp.sum(per * w) / (jnp.sum(mask) * math.prod(per.shape[1:])), new_s

        loss_grad = jax.value_and_grad(masked_loss, has_aux=True)

        def step(carry, x_all, y_all, idx, mask, lr):
            key = carry["key"]
            if key is not None:  # a fresh dropout key every step
                key, sub = jax.random.split(key)
            else:
                sub = None
            (loss, new_s), g = loss_grad(carry["params"], carry["state"], x_all, y_all, idx, mask, sub)
            p, slots = opt_update(carry["params"], g, carry["slots"], lr)
            return {"params": p, "state": new_s, "slots": slots, "key": key}, loss

        def grads(p, s, x_all, y_all, idx, mask):  # training mode, dropout off, new state discarded
            return jax.grad(lambda p: masked_loss(p, s, x_all, y_all, idx, mask, None)[0])(p)

        def logits(p, s, x):
            return forward(p, s, x, False)[0]

        def evaluate(p, s, x, y):
            out = logits(p, s, x)
            return jnp.mean(nll(out, y)), jnp.sum(jnp.argmax(out, axis=-1) == y)

        compile_ = _COMPILE[mode]
        self._step = compile_(jax, step, donate=(0,))  # the carried state is updated in place
        self._grads = compile_(jax, grads)
        self._logits = compile_(jax, logits)
        self._evaluate = compile_(jax, evaluate)

        # jnp.array copies: the caller's numpy arrays are never aliased by donated buffers
        p = {k: jnp.array(v) for k, v in params.items() if k not in state_names}
        s = {k: jnp.array(params[k]) for k in state_names}
        key = jax.random.key(workload.seed) if workload.has_dropout() else None
        self.carry = {"params": p, "state": s, "slots": opt_init(p), "key": key}
        self.x_train, self.y_train = jnp.array(data.x_train), jnp.array(data.y_train)
        self.x_test, self.y_test = jnp.array(data.x_test), jnp.array(data.y_test)
        self._n_test = int(np.asarray(data.y_test).size)  # every position for sequence targets
        self._x_dtype = np.int32 if workload.input_dtype == "int32" else np.float32
        self._batch = workload.batch_size
        self._base_lr = workload.optimizer.learning_rate
        self._jnp, self._full_mask = jnp, None
        self._lr_value, self._lr_array = None, None  # the last learning rate and its device scalar

    def _padded(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices padded to the full batch size and a 0/1 mask: the partial last batch of an epoch
        reuses the compiled step instead of compiling a second one for its shape (JAX best practice;
        TensorFlow gets the same from its ``None`` batch signature, torch needs nothing)."""
        n = len(idx)
        # int32 indices: jax (x64 off) would narrow int64 anyway
        if n >= self._batch:  # the common full batch: a mask of ones made once (host array, like the padded
            if self._full_mask is None or len(self._full_mask) != n:  # one: the same jit cache entry)
                self._full_mask = np.ones(n, dtype=np.float32)
            return np.asarray(idx, dtype=np.int32), self._full_mask
        padded = np.zeros(self._batch, dtype=np.int32)
        padded[:n] = idx
        mask = np.zeros(self._batch, dtype=np.float32)
        mask[:n] = 1.0
        return padded, mask

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        lr = self._base_lr if lr is None else float(lr)
        if lr != self._lr_value:  # a float32 device scalar, made again only when the schedule changes it
            self._lr_value, self._lr_array = lr, self._jnp.asarray(lr, dtype=self._jnp.float32)
        self.carry, loss = self._step(self.carry, self.x_train, self.y_train, *self._padded(idx), self._lr_array)
        return float(loss)  # blocks until the step is done

    def evaluate(self) -> tuple[float, float]:
        loss, correct = self._evaluate(self.carry["params"], self.carry["state"], self.x_test, self.y_test)
        return float(loss), int(correct) / self._n_test

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.array(self._logits(self.carry["params"], self.carry["state"], np.asarray(x, dtype=self._x_dtype)))

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        g = self._grads(self.carry["params"], self.carry["state"], self.x_train, self.y_train, *self._padded(idx))
        return {k: np.array(v) for k, v in g.items()}

    def params(self) -> dict[str, np.ndarray]:
        # copies: the buffers are donated by the next step
        return {k: np.array(v) for k, v in {**self.carry["params"], **self.carry["state"]}.items()}

    def device_peak_bytes(self) -> int | None:
        """The allocator's peak on an accelerator (since process start); ``None`` on the CPU."""
        import jax

        stats = jax.devices()[0].memory_stats()
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


class JaxBackend(Backend):
    """JAX (XLA) on the CPU; mode ``jit``."""

    name = "jax"
    display = DISPLAY
    distribution = "jax"
    import_name = "jax"
    install_hint = "pip install 'isobench[jax]'  (jax[cpu]==0.10.2)"
    modes = tuple(_COMPILE)
    precisions = ("fp32",)

    def setup(self, threads: int, device: str = "cpu") -> dict[str, Any]:
        import jax
        import jaxlib

        return {
            "version": jax.__version__,
            "jaxlib_version": jaxlib.__version__,
            "threads": None,  # no thread knob: XLA's CPU thread pool is sized by the CPU affinity mask
            "threads_note": "JAX has no thread setting; the worker's CPU affinity is the limit",
            "cpu_affinity": len(os.sched_getaffinity(0)),
            "backend": jax.default_backend(),
            "devices": ", ".join(str(d) for d in jax.devices()),
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "enable_x64": bool(jax.config.jax_enable_x64),
            **env_flags("XLA_FLAGS", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE"),
        }

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
              precision: str = "fp32", device: str = "cpu") -> Trainer:
        check_build(self, workload, mode, precision, device)
        return JaxTrainer(workload, params, data, mode)
