"""JAX backend in plain JAX (no flax): a dict pytree of parameters, a pure forward function,
``jax.value_and_grad`` and the optimizer update, all under one ``jax.jit`` step. The update is optax's
(optimizer implementation ``library``: ``optax.sgd``/``adam``/``adamw``/``rmsprop`` after
``optax.clip_by_global_norm``, the learning rate injected per step with ``optax.inject_hyperparams``) or
isobench's own rules by ``tree_map`` (``neutral``).

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

Modes: ``jit`` (default) compiles each step function with ``jax.jit`` at its first call (the first step
carries the compilation); ``eager`` runs the same functions without ``jax.jit``: op-by-op dispatch, each
primitive compiled once per shape and cached by JAX (``jnp`` functions that JAX itself jits stay fused).

Precision: ``fp32`` is float32 with the default matmul/convolution precision set to ``"highest"`` (full float32, no
TF32 on a GPU); ``tf32`` sets it to ``"tensorfloat32"``. ``bf16``/``fp16`` are mixed precision by casting: float32
master parameters and optimizer slots; inside the loss the float inputs and the kernels (at their use) are cast to
the compute dtype, so matmuls, convolutions and activations run in it; bias and positional-embedding additions,
BatchNorm and LayerNorm (statistics, normalisation, affine), attention's softmax and the cross-entropy run in
float32 and cast back; the gradients arrive in float32 through the casts, summed over examples in float32. ``fp16``
adds dynamic loss scaling in the carry (scale 2**15; a non-finite gradient halves it and skips the step: parameters,
slots, Adam's count and BatchNorm statistics keep their values; 2000 finite steps in a row double it) and clips
(``clip_norm``) the unscaled gradients.

Device: ``"cuda"`` is the first GPU JAX sees, ``"cpu"`` the CPU; parameters, optimizer state and data are
committed to it, so every step runs there.

jax is imported in :meth:`JaxBackend.setup` / :meth:`JaxBackend.build` only.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Any

import numpy as np

from ..data import Dataset
from ..results import FrameworkSettings
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from . import display_name
from .base import Backend, LayerBuilder, Trainer, check_optimizer, env_flags
from .common import CLIP_EPS, BatchPadder, HeldRate, moments, overflow_free, pool_window
from .private import Noise, base_workload, check_private, private_padder

DISPLAY = display_name("jax")


class _Call:
    """What one forward call needs besides params and state: mode, dropout key, padding mask, and the
    BatchNorm statistics it produces (written here while tracing; returned as the new state)."""

    def __init__(self, train: bool, key, mask):
        self.train, self.key, self.mask = train, key, mask
        self.new_state: dict = {}


class Forward(LayerBuilder):
    """Spec layers -> pure functions ``f(params, state, x, call) -> y`` (``call`` a :class:`_Call`), params keyed by
    canonical name; :meth:`model` the whole forward. Public so that an exporter may subclass it to write a layer in
    another form with the same values (``deploy_jax``'s ONNX max pool), given to :meth:`JaxBackend.inference_model`.

    ``compute_dtype`` (bf16/fp16): float inputs are cast on entry and kernels where they are used; biases,
    positional embeddings and the norms' gamma/beta are applied in float32 and the result cast back, the
    embedding table is gathered in float32, so every sum over examples or positions in the backward pass (a
    bias, embedding or norm gradient) accumulates in float32, as in the fused kernels of cuBLAS and cuDNN."""

    display = DISPLAY

    def __init__(self, compute_dtype=None):
        import jax
        import jax.numpy as jnp
        from jax import lax

        self.jax, self.jnp, self.lax = jax, jnp, lax
        self.compute_dtype, self.low = compute_dtype, compute_dtype is not None
        self._dropout_ids = itertools.count()  # each Dropout layer folds its own number into the step's key

    def lo(self, w):
        """A float32 kernel in the compute dtype."""
        return w.astype(self.compute_dtype) if self.low else w

    def add(self, y, b):
        """``y + b``, in float32 under mixed precision, keeping y's dtype."""
        return (y.astype(self.jnp.float32) + b).astype(y.dtype) if self.low else y + b

    def sequence(self, layers):
        fns = [self.build(layer) for layer in layers]

        def run(p, s, x, c):
            for f in fns:
                x = f(p, s, x, c)
            return x
        return run

    def model(self, workload: Workload):
        """``forward(params, state, x, train, key, mask) -> (logits, new_state)``.

        ``train`` is a Python bool (static); ``key`` is a PRNG key or ``None`` (no dropout); ``mask`` is a
        float (B,) 0/1 vector of real rows or ``None`` (every row is real)."""
        run, jnp, low, compute = self.sequence(workload.layers), self.jnp, self.low, self.compute_dtype

        def forward(params, state, x, train: bool, key=None, mask=None):
            if low and jnp.issubdtype(x.dtype, jnp.floating):
                x = x.astype(compute)
            c = _Call(train, key, mask)
            y = run(params, state, x, c)
            return y, {**state, **c.new_state}
        return forward

    # ---- one method per spec layer kind: layer -> f(p, s, x, c) ----

    def dense(self, layer: Dense):  # canonical layout (in, out), on the last axis
        n = layer.name
        return lambda p, s, x, c: self.add(x @ self.lo(p[f"{n}/kernel"]), p[f"{n}/bias"])

    def conv2d(self, layer: Conv2D):
        n, st, pad = layer.name, layer.stride, layer.pad
        return lambda p, s, x, c: self.add(self.lax.conv_general_dilated(
            x, self.lo(p[f"{n}/kernel"]), window_strides=(st, st), padding=((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC")), p[f"{n}/bias"])

    def maxpool2d(self, layer: MaxPool2D):
        lax, (k, st) = self.lax, pool_window(layer)
        return lambda p, s, x, c: lax.reduce_window(x, -self.jnp.inf, lax.max, (1, k, k, 1), (1, st, st, 1), "VALID")

    def avgpool2d(self, layer: AvgPool2D):
        lax, (k, st) = self.lax, pool_window(layer)
        return lambda p, s, x, c: lax.reduce_window(x, 0.0, lax.add, (1, k, k, 1), (1, st, st, 1), "VALID") / (k * k)

    def global_avg_pool(self, layer: GlobalAvgPool):
        return lambda p, s, x, c: self.jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))

    def flatten(self, layer: Flatten):  # NHWC stays channels-last: the canonical order
        return lambda p, s, x, c: self.jnp.reshape(x, (x.shape[0], -1))

    def reshape(self, layer: Reshape):
        shape = tuple(layer.shape)
        return lambda p, s, x, c: self.jnp.reshape(x, (x.shape[0],) + shape)

    def relu(self, layer: ReLU):
        return lambda p, s, x, c: self.jax.nn.relu(x)

    def gelu(self, layer: GELU):  # exact erf form; jax's default is the tanh approximation
        return lambda p, s, x, c: self.jax.nn.gelu(x, approximate=False)

    def tanh(self, layer: Tanh):
        return lambda p, s, x, c: self.jnp.tanh(x)

    def dropout(self, layer: Dropout):
        jax, jnp, rate, number = self.jax, self.jnp, layer.rate, next(self._dropout_ids)

        def dropout(p, s, x, c):
            if not c.train or rate == 0.0 or c.key is None:
                return x
            keep = jax.random.bernoulli(jax.random.fold_in(c.key, number), 1.0 - rate, x.shape)
            return jnp.where(keep, x / (1.0 - rate), 0.0)
        return dropout

    def batchnorm(self, layer: BatchNorm):
        jnp, lax = self.jnp, self.lax
        n, mo, eps = layer.name, layer.momentum, layer.epsilon
        mm, mv = f"{n}/moving_mean", f"{n}/moving_var"

        def batchnorm(p, s, x0, c):  # in float32 whatever the compute dtype
            x = x0.astype(jnp.float32)
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
            return ((x - mean) * lax.rsqrt(var + eps) * p[f"{n}/gamma"] + p[f"{n}/beta"]).astype(x0.dtype)
        return batchnorm

    def layernorm(self, layer: LayerNorm):
        jnp, lax, n, eps = self.jnp, self.lax, layer.name, layer.epsilon

        def layernorm(p, s, x, c):  # in float32 whatever the compute dtype
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
            return ((xf - mean) * lax.rsqrt(var + eps) * p[f"{n}/gamma"] + p[f"{n}/beta"]).astype(x.dtype)
        return layernorm

    def embedding(self, layer: Embedding):
        n = layer.name
        return lambda p, s, x, c: self.lo(self.jnp.take(p[f"{n}/embeddings"], x, axis=0))

    def positional_embedding(self, layer: PositionalEmbedding):
        n = layer.name
        return lambda p, s, x, c: self.add(x, p[f"{n}/embeddings"][:x.shape[1]])

    def lstm(self, layer: LSTM):
        jax, jnp, lo = self.jax, self.jnp, self.lo
        n, units, seq = layer.name, layer.units, layer.return_sequences

        def lstm(p, s, x, c):
            u = p[f"{n}/recurrent_kernel"]  # cast inside the cell: its gradient sums over steps in float32
            # input projection of every step in one matmul, time-major for the scan
            xz = jnp.swapaxes(self.add(x @ lo(p[f"{n}/kernel"]), p[f"{n}/bias"]), 0, 1)  # (T, B, 4H)

            def cell(carry, zx):
                h, cc = carry
                i, f, g, o = jnp.split(zx + h @ lo(u), 4, axis=-1)
                cc = jax.nn.sigmoid(f) * cc + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(cc)
                return (h, cc), (h if seq else None)

            zeros = jnp.zeros((x.shape[0], units), x.dtype)
            (h, _), hs = self.lax.scan(cell, (zeros, zeros), xz)
            return jnp.swapaxes(hs, 0, 1) if seq else h
        return lstm

    def attention(self, layer: MultiHeadSelfAttention):
        jax, jnp, lo, add = self.jax, self.jnp, self.lo, self.add
        n, heads, causal = layer.name, layer.num_heads, layer.causal

        def attention(p, s, x, c):
            b, t, d = x.shape
            dh = d // heads

            def proj(name):  # (B, T, D) -> (B, T, heads, dh), heads head-major along D
                return jnp.reshape(add(x @ lo(p[f"{n}/{name}/kernel"]), p[f"{n}/{name}/bias"]), (b, t, heads, dh))

            q, k, v = proj("query"), proj("key"), proj("value")
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
            if causal:
                scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -jnp.inf)
            a = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
            o = jnp.reshape(jnp.einsum("bhqk,bkhd->bqhd", a, v), (b, t, d))
            return add(o @ lo(p[f"{n}/output/kernel"]), p[f"{n}/output/bias"])
        return attention

    def residual(self, layer: Residual):
        block, shortcut = self.sequence(layer.block), self.sequence(layer.shortcut)
        return lambda p, s, x, c: block(p, s, x, c) + shortcut(p, s, x, c)


def _neutral_optimizer(spec):
    """``(init(params) -> slots, update(params, grads, slots, lr) -> (params, slots))`` by ``tree_map``,
    exactly the rules of ``isobench.backends.reference.Optimizer`` (clipping by global norm first). The
    slots start as host zeros (numpy): nothing is dispatched, or compiled, to make them."""
    import jax
    import jax.numpy as jnp

    tree_map = jax.tree_util.tree_map
    kind = spec.kind
    check_optimizer(DISPLAY, kind)

    def init(p):
        zeros = lambda: tree_map(lambda w: np.zeros(w.shape, w.dtype), p)  # noqa: E731
        first, second = moments(spec)
        slots = {"t": np.zeros((), np.int32)} if kind in ("adam", "adamw") else {}  # Adam's step count
        return {**slots, **({"m": zeros()} if first else {}), **({"v": zeros()} if second else {})}

    def clip(g):
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(g)))
        scale = jnp.minimum(1.0, spec.clip_norm / (norm + CLIP_EPS))
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


def _optax_optimizer(spec):
    """``(init, update)`` as :func:`_neutral_optimizer`, from optax as a user writes it: ``optax.sgd`` (momentum and
    Nesterov in PyTorch's form), ``adam``, ``adamw`` (decay of every parameter), ``rmsprop`` (epsilon outside the
    root, from a zero accumulator), every hyperparameter explicit, after ``optax.clip_by_global_norm`` where the spec
    clips (it scales by ``clip / norm`` above the bound, the spec by ``clip / (norm + 1e-6)``: a relative difference
    below ``1e-6 / clip``). ``optax.inject_hyperparams`` keeps the learning rate in the optimizer state, where the
    step writes the runner's rate: a new rate is a new value, never a retrace. optax's ``init`` makes its slots
    with jax ops (in build)."""
    try:
        import optax
    except ImportError as e:
        raise ImportError(f"the library optimizers of JAX are optax's, not importable ({e}): "
                          "pip install 'isobench[jax]' (optax==0.2.8), or --optimizer neutral") from e

    check_optimizer(DISPLAY, spec.kind)

    def transformation(learning_rate):
        if spec.kind == "sgd":
            tx = optax.sgd(learning_rate, momentum=spec.momentum or None,
                           nesterov=bool(spec.nesterov and spec.momentum))
        elif spec.kind == "adam":
            tx = optax.adam(learning_rate, b1=spec.beta1, b2=spec.beta2, eps=spec.epsilon, eps_root=0.0)
        elif spec.kind == "adamw":
            tx = optax.adamw(learning_rate, b1=spec.beta1, b2=spec.beta2, eps=spec.epsilon, eps_root=0.0,
                             weight_decay=spec.weight_decay, mask=None)
        else:
            tx = optax.rmsprop(learning_rate, decay=spec.rho, eps=spec.epsilon, initial_scale=0.0, eps_in_sqrt=False,
                               centered=False, momentum=None, bias_correction=False)
        return tx if spec.clip_norm is None else optax.chain(optax.clip_by_global_norm(spec.clip_norm), tx)

    tx = optax.inject_hyperparams(transformation)(learning_rate=spec.learning_rate)

    def update(p, g, state, lr):
        state = state._replace(hyperparams={**state.hyperparams, "learning_rate": lr})
        updates, state = tx.update(g, state, p)
        return optax.apply_updates(p, updates), state

    return tx.init, update


_OPTIMIZERS = {"library": _optax_optimizer, "neutral": _neutral_optimizer}  # implementation -> (init, update)


def _on_device(jax, fn, device):
    """``fn`` run op by op with ``device`` as the default: arrays it creates (zeros, masks) start there too."""
    def run(*args):
        with jax.default_device(device):
            return fn(*args)
    return run


# mode -> how every step function is run: compiled by jax.jit at its first call, or dispatched op by op
_COMPILE = {"jit": lambda jax, fn, device, donate=(): jax.jit(fn, donate_argnums=donate),
            "eager": lambda jax, fn, device, donate=(): _on_device(jax, fn, device)}
_COMPUTE_DTYPE = {"fp32": None, "bf16": "bfloat16", "fp16": "float16", "tf32": None}  # precision -> dtype in the loss
LOSS_SCALE = 2.0 ** 15  # fp16: initial dynamic loss scale
SCALE_GROWTH_STEPS = 2000  # fp16: finite steps in a row that double the scale


def _full_float32(jax) -> str:
    """Float32 matmuls and convolutions in full float32 (no TF32 on a GPU); returns the setting read back."""
    jax.config.update("jax_default_matmul_precision", "highest")
    return jax.config.jax_default_matmul_precision


def _jax_device(jax, device: str):
    """The JAX device for ``"cpu"``, or for ``"cuda"`` the first GPU JAX sees (RuntimeError if none)."""
    if device == "cpu":
        return jax.devices("cpu")[0]
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}; choose from: cpu, cuda")
    try:
        return jax.devices("gpu")[0]
    except (RuntimeError, IndexError) as e:
        raise RuntimeError(
            f"no GPU visible to JAX ({e}) with JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS')!r}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}; a GPU run needs a CUDA build of "
            "jax (pip install 'jax[cuda12]') and a visible NVIDIA GPU") from e


def peak_bytes(device) -> int | None:
    """``peak_bytes_in_use`` of a JAX device's allocator (JAX has no reset: since process start); ``None`` on
    the CPU or where the runtime keeps no statistics."""
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None


def _nll(logits, y):
    """Per-example (and per-position) softmax cross-entropy, in float32."""
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]


def _step_functions(forward, opt_update, scaled: bool) -> dict[str, Any]:
    """The pure functions a trainer runs (``step``, ``grads``, ``logits``, ``evaluate``), before jit. ``step``
    takes and returns the carry; under fp16 (``scaled``) it skips a step with non-finite gradients and moves the
    loss scale, and ``grads`` takes the scale and also returns whether every gradient is finite."""
    import jax
    import jax.numpy as jnp

    tree_map, leaves, nll = jax.tree_util.tree_map, jax.tree_util.tree_leaves, _nll

    def masked_loss(p, s, x_all, y_all, idx, mask, key):
        """Mean over the real rows (mask 1) and every position; gathers the batch inside."""
        logits, new_s = forward(p, s, x_all[idx], True, key, mask)
        per = nll(logits, y_all[idx])
        w = jnp.reshape(mask, (-1,) + (1,) * (per.ndim - 1))
        return jnp.sum(per * w) / (jnp.sum(mask) * math.prod(per.shape[1:])), new_s

    loss_grad = jax.value_and_grad(masked_loss, has_aux=True)

    def scaled_loss(p, s, x_all, y_all, idx, mask, key, scale):
        loss, new_s = masked_loss(p, s, x_all, y_all, idx, mask, key)
        return loss * scale, (loss, new_s)

    scaled_grad = jax.grad(scaled_loss, has_aux=True)

    def unscaled_grads(p, s, x_all, y_all, idx, mask, key, scale):
        """fp16: float32 gradients of the unscaled loss, and whether all of them are finite."""
        g, (loss, new_s) = scaled_grad(p, s, x_all, y_all, idx, mask, key, scale)
        g = tree_map(lambda x: x / scale, g)  # a power of two: exact
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves(g)]))
        return loss, new_s, g, finite

    def step(carry, x_all, y_all, idx, mask, lr):
        key = carry["key"]
        if key is not None:  # a fresh dropout key every step
            key, sub = jax.random.split(key)
        else:
            sub = None
        p, s, slots = carry["params"], carry["state"], carry["slots"]
        if not scaled:
            (loss, new_s), g = loss_grad(p, s, x_all, y_all, idx, mask, sub)
            p, slots = opt_update(p, g, slots, lr)
            return {"params": p, "state": new_s, "slots": slots, "key": key}, loss
        scale, good = carry["scale"], carry["good"]
        loss, new_s, g, finite = unscaled_grads(p, s, x_all, y_all, idx, mask, sub, scale)
        new_p, new_slots = opt_update(p, g, slots, lr)  # clips the unscaled gradients first
        keep = lambda new, old: tree_map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        grow = finite & (good + 1 >= SCALE_GROWTH_STEPS)
        return {"params": keep(new_p, p), "state": keep(new_s, s), "slots": keep(new_slots, slots), "key": key,
                "scale": jnp.where(finite, jnp.where(grow, scale * 2.0, scale), scale * 0.5),
                "good": jnp.where(finite & ~grow, good + 1, 0)}, loss

    def grads(p, s, x_all, y_all, idx, mask):  # training mode, dropout off, new state discarded
        return jax.grad(lambda p: masked_loss(p, s, x_all, y_all, idx, mask, None)[0])(p)

    def grads_scaled(p, s, x_all, y_all, idx, mask, scale):
        return unscaled_grads(p, s, x_all, y_all, idx, mask, None, scale)[2:]

    def logits(p, s, x):
        return forward(p, s, x, False)[0].astype(jnp.float32)

    def evaluate(p, s, x, y):
        out = logits(p, s, x)
        return jnp.mean(nll(out, y)), jnp.sum(jnp.argmax(out, axis=-1) == y)

    return {"step": step, "grads": grads_scaled if scaled else grads, "logits": logits, "evaluate": evaluate}


class JaxTrainer(Trainer):
    """One carried pytree ``{"params", "state", "slots", "key"}`` of device arrays (fp16 adds the loss
    ``scale`` and its count of ``good`` steps), replaced (donated under jit) by every step."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
                 precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral"):
        import jax
        import jax.numpy as jnp

        if precision == "tf32":  # float32 matmuls and convolutions on TF32 tensor cores (cuda)
            jax.config.update("jax_default_matmul_precision", "tensorfloat32")
        else:
            _full_float32(jax)  # also when built without setup(): float32 matmuls are never TF32
        self._device = dev = _jax_device(jax, device)
        compute = _COMPUTE_DTYPE[precision]
        forward = Forward(compute and jnp.dtype(compute)).model(workload)
        opt_init, opt_update = _OPTIMIZERS[optimizer](workload.optimizer)
        self._scaled = precision == "fp16"
        fns, compile_ = _step_functions(forward, opt_update, self._scaled), _COMPILE[mode]
        self._step = compile_(jax, fns["step"], dev, donate=(0,))  # the carried state is updated in place
        self._grads = compile_(jax, fns["grads"], dev)
        self._logits = compile_(jax, fns["logits"], dev)
        self._evaluate = compile_(jax, fns["evaluate"], dev)

        # numpy copies committed to the device (device_put compiles nothing; jnp.array compiles a copy per shape):
        # the caller's arrays are never aliased by donated buffers
        put = lambda v: jax.device_put(np.array(v), dev)  # noqa: E731
        state_names = workload.state_shapes()
        p = {k: put(v) for k, v in params.items() if k not in state_names}
        s = {k: put(params[k]) for k in state_names}
        key = jax.random.key(workload.seed) if workload.has_dropout() else None
        carry = {"params": p, "state": s, "slots": opt_init(p), "key": key}
        if self._scaled:
            carry.update(scale=np.float32(LOSS_SCALE), good=np.int32(0))
        self.carry = jax.device_put(carry, dev)  # host zeros (slots, scale) become device arrays
        self.x_train, self.y_train = put(data.x_train), put(data.y_train)
        self.x_test, self.y_test = put(data.x_test), put(data.y_test)
        self._n_test = int(np.asarray(data.y_test).size)  # every position for sequence targets
        self._x_dtype = np.int32 if workload.input_dtype == "int32" else np.float32
        # indices padded to the full batch: the partial last batch of an epoch reuses the compiled step (JAX best
        # practice; TensorFlow gets the same from its None batch signature, torch needs nothing); int32 indices:
        # jax (x64 off) would narrow int64 anyway; the full batch's mask is a host array, like the padded one
        self._padded = BatchPadder(workload.batch_size, np.int32, lambda n: np.ones(n, dtype=np.float32))
        self._put, self._lr_array = jax.device_put, None  # the rate's float32 device scalar, made when it changes
        self._rate = HeldRate(workload.optimizer.learning_rate, self._write_lr)

    def _write_lr(self, lr: float) -> None:
        self._lr_array = self._put(np.float32(lr), self._device)

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        self._rate.set(lr)
        self.carry, loss = self._step(self.carry, self.x_train, self.y_train, *self._padded(idx), self._lr_array)
        return float(loss)  # blocks until the step is done

    def evaluate(self) -> tuple[float, float]:
        loss, correct = self._evaluate(self.carry["params"], self.carry["state"], self.x_test, self.y_test)
        return float(loss), int(correct) / self._n_test

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.array(self._logits(self.carry["params"], self.carry["state"], np.asarray(x, dtype=self._x_dtype)))

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        args = (self.carry["params"], self.carry["state"], self.x_train, self.y_train, *self._padded(idx))
        if not self._scaled:
            g = self._grads(*args)
        else:  # fp16: from the carry's loss scale, halved until no gradient overflows (nothing is stored)
            (g, _), _ = overflow_free(lambda sc: self._grads(*args, np.float32(sc)), lambda r: bool(r[1]),
                                      float(self.carry["scale"]))
        return {k: np.array(v) for k, v in g.items()}

    def params(self) -> dict[str, np.ndarray]:
        # copies: the buffers are donated by the next step
        return {k: np.array(v) for k, v in {**self.carry["params"], **self.carry["state"]}.items()}

    def device_peak_bytes(self) -> int | None:
        """The allocator's peak on the GPU (since process start); ``None`` on the CPU."""
        return peak_bytes(self._device)


def _private_functions(forward, opt_update, workload: Workload, noise: Noise) -> dict[str, Any]:
    """DP-SGD's ``step`` and ``grads`` (the clipped per-example sum): ``jax.vmap`` of ``jax.value_and_grad`` of
    one example's loss, each example's gradient scaled by min(1, clip / (norm + 1e-6)) and by its mask (padded
    rows add nothing), summed, plus ``std`` x the step's noise, over batch_size; then the base update."""
    import jax
    import jax.numpy as jnp

    tree_map, leaves = jax.tree_util.tree_map, jax.tree_util.tree_leaves
    clip, batch = workload.optimizer.clip, workload.batch_size

    def example_loss(p, s, x, y):  # mean over the example's positions
        return jnp.mean(_nll(forward(p, s, x[None], True)[0], y[None]))

    per_example = jax.vmap(jax.value_and_grad(example_loss), in_axes=(None, None, 0, 0))

    def clipped_sum(p, s, x_all, y_all, idx, mask):
        losses, g = per_example(p, s, x_all[idx], y_all[idx])
        norms = jnp.sqrt(sum(jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=1) for x in leaves(g)))
        scale = jnp.minimum(1.0, clip / (norms + CLIP_EPS)) * mask
        return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0), \
            tree_map(lambda x: jnp.tensordot(scale, x, axes=1), g)

    def step(carry, x_all, y_all, idx, mask, lr, z):
        loss, total = clipped_sum(carry["params"], carry["state"], x_all, y_all, idx, mask)
        z = noise.split(z)
        g = {k: (v + noise.std * z[k]) / batch for k, v in total.items()}
        p, slots = opt_update(carry["params"], g, carry["slots"], lr)
        return {**carry, "params": p, "slots": slots}, loss

    return {"step": step, "grads": lambda *args: clipped_sum(*args)[1]}


class JaxPrivateTrainer(JaxTrainer):
    """DP-SGD (:mod:`isobench.backends.private`): the model and the base optimizer of :class:`JaxTrainer`, its
    step replaced by the private one under the same ``jax.jit`` (``eager``: op by op). Under jit a Poisson
    batch is padded to a bucketed size with a mask, so a few shapes are compiled; the noise is the step's
    numpy draw, one argument."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
                 precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral"):
        import jax

        check_private(DISPLAY, workload)
        base = base_workload(workload)
        super().__init__(base, params, data, mode, precision, device, optimizer)
        self._noise = Noise(workload)
        fns, compile_ = _private_functions(Forward().model(workload), _OPTIMIZERS[optimizer](base.optimizer)[1],
                                           workload, self._noise), _COMPILE[mode]
        self._step = compile_(jax, fns["step"], self._device, donate=(0,))
        self._grads = compile_(jax, fns["grads"], self._device)
        self._padded = private_padder(workload, mode == "jit", np.int32, lambda n: np.ones(n, dtype=np.float32))

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        self._rate.set(lr)
        self.carry, loss = self._step(self.carry, self.x_train, self.y_train, *self._padded(idx), self._lr_array,
                                      self._noise.draw())
        return float(loss)

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        g = self._grads(self.carry["params"], self.carry["state"], self.x_train, self.y_train, *self._padded(idx))
        return {k: np.array(v) for k, v in g.items()}


class JaxBackend(Backend):
    """JAX (XLA) on the CPU or a GPU; modes ``jit`` and ``eager``; fp32, bf16 and fp16 (loss-scaled)."""

    name = distribution = import_name = "jax"
    display = DISPLAY
    install_hint = "pip install 'isobench[jax]'  (jax[cpu]==0.10.2)"
    trainer, private_trainer = JaxTrainer, JaxPrivateTrainer
    modes = tuple(_COMPILE)
    precisions = tuple(_COMPUTE_DTYPE)

    def setup(self, threads: int, device: str = "cpu") -> FrameworkSettings:
        self.settings = setup_jax(threads, device)
        return self.settings

    def inference_model(self, workload: Workload, params: dict[str, np.ndarray], builder: type[Forward] = Forward):
        """``f(x) -> logits``: the forward in inference mode (``train=False``), float32, with ``params`` closed over
        as constants; pure, so ``jax.jit``, jax2onnx and jax2tf take it as it is. ``builder``: a subclass of
        :class:`Forward` writing some layers in another form (default: the training forward)."""
        import jax.numpy as jnp

        forward, state = builder().model(workload), workload.state_shapes()
        p = {k: jnp.asarray(v) for k, v in params.items() if k not in state}
        s = {k: jnp.asarray(params[k]) for k in state}

        def f(x):
            return forward(p, s, x, False)[0]
        return f


def setup_jax(threads: int, device: str = "cpu") -> FrameworkSettings:
    """Full float32 matmuls and the device check (JAX has no thread setting); the settings in effect (the JAX
    backend's, keras-jax's and the JAX serving paths' set-up)."""
    import jax
    import jaxlib

    matmul_precision = _full_float32(jax)
    dev = _jax_device(jax, device)
    return FrameworkSettings(
        version=jax.__version__, device=device, device_name=dev.device_kind if device == "cuda" else None,
        # no thread knob: XLA's CPU thread pool is sized by the CPU affinity mask
        threads_note="JAX has no thread setting; the worker's CPU affinity is the limit",
        tf32=False, matmul_precision=matmul_precision,
        xla=env_flags("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                      "XLA_PYTHON_CLIENT_ALLOCATOR"),
        companions={"jaxlib": jaxlib.__version__}, env=env_flags("JAX_PLATFORMS"),
        extra={"cpu_affinity": len(os.sched_getaffinity(0)), "backend": jax.default_backend(),
               "devices": ", ".join(str(d) for d in jax.devices()), "jax_device": f"{dev} ({dev.device_kind})",
               "enable_x64": bool(jax.config.jax_enable_x64)})
