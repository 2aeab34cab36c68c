"""TensorFlow backend: ``tf.Variable`` weights, raw TF ops and a GradientTape training step. The update is the
Keras optimizer a TensorFlow user calls (optimizer implementation ``library``: ``tf.keras.optimizers.SGD``,
``Adam``, ``AdamW``, ``RMSprop`` of Keras 3, applied to the ``tf.Variable`` weights inside the step function,
the learning rate assigned to it in the step) or the spec's update rules written in TF ops (``neutral``). The
model is not a Keras model (Keras has its own backends), so this one measures TensorFlow itself.

Keras's rules depart from the spec's by design for Adam/AdamW (epsilon on sqrt(v) before the bias correction),
RMSprop (epsilon inside the root) and SGD momentum under a changing rate (the rate inside the velocity)
(:func:`~.common.keras_difference`); parity states how far (docs/workloads.md). Both implementations receive the
same gradients: dense (an Embedding's ``IndexedSlices`` densified, which the spec's dense update needs, so Keras takes
its dense path) and, in fp16, unscaled by the loss scaling below; ``library`` clips them with Keras's own
``global_clipnorm``.

Every layer of :mod:`isobench.workloads.spec` is built from native ops in the canonical layout, which is
TensorFlow's own (NHWC data, HWIO conv kernels, ``(in, out)`` dense kernels), so weights load without any
conversion. BatchNorm and LayerNorm are written by hand on ``tf.nn.moments``; the LSTM is a Python loop
unrolled over time inside the traced graph; attention is written out with a causal mask.

Modes (how every step function runs; tracing and compiling happen lazily, at the first call, so the
worker's first step carries them):

- ``graph`` (default): ``tf.function`` without XLA. The batch axis of the signature is ``None``, so the
  partial last batch of an epoch runs the same graph: one trace per run.
- ``eager``: the same step code run op by op, no ``tf.function``.
- ``xla``: ``tf.function(jit_compile=True)``. XLA compiles one executable per input shape, so a partial
  last batch is padded to the full batch with a 0/1 row mask (as the JAX backend does): padded rows have
  weight 0 in the loss and in BatchNorm's batch statistics and are not counted. One trace, one compile.

Precisions: ``fp32`` is float32 with TF32 off; ``tf32`` the same with TF32 execution on (cuda). ``bf16``/``fp16``
are mixed precision in Keras' manner, written out because no Keras layer is used: variables and optimizer state stay
float32, weights and inputs are cast to the compute dtype inside the step (the cast's gradient brings float32
gradients back); BatchNorm and LayerNorm compute their statistics and normalisation in float32 (as Keras' layers do
for 16-bit inputs), attention's softmax runs in the compute dtype (as Keras' MultiHeadAttention), the softmax
cross-entropy in float32. ``fp16`` adds dynamic loss scaling with Keras ``LossScaleOptimizer`` semantics: scale
2**15, a step with non-finite gradients is skipped and halves the scale, 2000 good steps in a row double it;
gradients are unscaled before clipping and the update.

Phases of the forward pass (a Python value, fixed at trace time, so each is its own graph):

- ``train`` (:meth:`TensorFlowTrainer.train_step`): BatchNorm uses batch statistics and updates its moving
  statistics; Dropout is active, drawing from a ``tf.random.Generator`` seeded from the workload seed.
- ``probe`` (:meth:`TensorFlowTrainer.gradients`): batch statistics but no moving-statistics update (so the
  probe changes nothing) and Dropout as identity (parity checks run without dropout anyway).
- ``infer`` (evaluate, logits): moving statistics, Dropout as identity.

Devices: ``cpu`` hides the GPUs from TensorFlow (when set up before its runtime starts) and places
everything on ``/CPU:0``; ``cuda`` places everything on ``/GPU:0`` with memory growth on, so the
allocator's peak is what the run used rather than TensorFlow's default reservation of the whole GPU.

tensorflow is imported in :meth:`TensorFlowBackend.setup` / :meth:`TensorFlowBackend.build` only.
"""
from __future__ import annotations

from math import sqrt
from typing import Any, NamedTuple

import numpy as np

from ..data import Dataset
from ..results import FrameworkSettings
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from . import display_name
from .base import Backend, LayerBuilder, Trainer, check_optimizer, env_flags
from .common import (CLIP_EPS, BatchPadder, HeldRate, conv_padding, keras_difference, keras_optimizer, moments,
                     overflow_free, pool_window)
from .private import Noise, base_workload, check_private, private_padder

# mode -> tf.function options for every step function; None: plain eager Python
_TF_FUNCTION = {"graph": {"jit_compile": False}, "eager": None, "xla": {"jit_compile": True}}
_COMPUTE_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "tf32": "float32"}
_LOSS_SCALE, _GROWTH_STEPS = 2.0 ** 15, 2000  # fp16 dynamic loss scaling: Keras LossScaleOptimizer defaults
_SCHEDULES = ("constant", "step", "cosine")  # computed by the runner; the step only receives the rate
_DISPLAY = display_name("tensorflow")


class _Pass(NamedTuple):
    """What a forward pass needs besides its input."""
    phase: str        # "train", "probe" or "infer" (a Python value: fixed at trace time)
    mask: Any = None  # (B,) float32: 1 for real rows, 0 for padding (xla mode); None: every row is real


class _Builder(LayerBuilder):
    """Turns the neutral layer sequence into callables ``f(x, c) -> y`` (``c`` a :class:`_Pass`) over float32
    ``tf.Variable`` weights, computing in ``dtype`` (each weight cast to it where it is used)."""

    display = _DISPLAY

    def __init__(self, tf, params: dict[str, np.ndarray], seed: int, dtype):
        self.tf, self.params, self.dtype = tf, params, dtype
        self.weights: dict[str, Any] = {}  # canonical name -> trainable tf.Variable, in layer order
        self.state: dict[str, Any] = {}    # canonical name -> BatchNorm moving statistic (non-trainable)
        self.seed = seed
        self._rng = None  # created on the first Dropout with a positive rate

    def var(self, name: str):
        v = self.tf.Variable(self.params[name], name=name.replace("/", "_"))  # canonical layout is TF's layout
        self.weights[name] = v
        return v

    def cast(self, t):
        """``t`` in the compute dtype (float32 tensors and variables unchanged)."""
        return t if self.dtype == self.tf.float32 else self.tf.cast(t, self.dtype)

    def sequence(self, layers) -> list:
        return [self.build(layer) for layer in layers]

    # ---- one method per spec layer kind: layer -> f(x, c) ----

    def dense(self, layer: Dense):
        tf, cast = self.tf, self.cast
        k, b = self.var(f"{layer.name}/kernel"), self.var(f"{layer.name}/bias")
        return lambda x, c: _dense(tf, x, cast(k), cast(b))

    def conv2d(self, layer: Conv2D):
        tf, cast = self.tf, self.cast
        k, b = self.var(f"{layer.name}/kernel"), self.var(f"{layer.name}/bias")
        ks, s, p = layer.kernel_size, layer.stride, layer.pad
        same = conv_padding(ks, s, p)  # TF's "SAME" pads asymmetrically at stride > 1: there, the spec's pixels
        padding = same.upper() if same else [[0, 0], [p, p], [p, p], [0, 0]]
        return lambda x, c: tf.nn.bias_add(tf.nn.conv2d(x, cast(k), strides=s, padding=padding), cast(b))

    def maxpool2d(self, layer: MaxPool2D):
        return self._pool(self.tf.nn.max_pool2d, layer)

    def avgpool2d(self, layer: AvgPool2D):
        return self._pool(self.tf.nn.avg_pool2d, layer)

    def _pool(self, pool, layer):
        k, s = pool_window(layer)
        return lambda x, c: pool(x, ksize=k, strides=s, padding="VALID")

    def global_avg_pool(self, layer: GlobalAvgPool):
        return lambda x, c: self.tf.reduce_mean(x, axis=list(range(1, x.shape.rank - 1)))

    def flatten(self, layer: Flatten):  # NHWC row-major: canonical channels-last order
        return lambda x, c: self.tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])

    def reshape(self, layer: Reshape):
        shape = [-1, *layer.shape]
        return lambda x, c: self.tf.reshape(x, shape)

    def relu(self, layer: ReLU):
        return lambda x, c: self.tf.nn.relu(x)

    def gelu(self, layer: GELU):
        return lambda x, c: self.tf.nn.gelu(x, approximate=False)

    def tanh(self, layer: Tanh):
        return lambda x, c: self.tf.tanh(x)

    def layernorm(self, layer: LayerNorm):
        tf = self.tf
        gamma, beta, eps = self.var(f"{layer.name}/gamma"), self.var(f"{layer.name}/beta"), layer.epsilon

        def layernorm(x, c):  # in float32 whatever the compute dtype
            x32 = tf.cast(x, tf.float32)
            mean, var = tf.nn.moments(x32, axes=[-1], keepdims=True)
            return tf.cast((x32 - mean) * tf.math.rsqrt(var + eps) * gamma + beta, x.dtype)
        return layernorm

    def embedding(self, layer: Embedding):
        e = self.var(f"{layer.name}/embeddings")
        return lambda x, c: self.cast(self.tf.gather(e, x))  # gather, then cast: only the rows used

    def positional_embedding(self, layer: PositionalEmbedding):
        e = self.var(f"{layer.name}/embeddings")
        return lambda x, c: x + self.cast(e[:x.shape[1]])

    def residual(self, layer: Residual):
        block, shortcut = self.sequence(layer.block), self.sequence(layer.shortcut)
        return lambda x, c: _run(block, x, c) + _run(shortcut, x, c)

    def dropout(self, layer: Dropout):
        tf, rate = self.tf, layer.rate
        if rate <= 0:
            return lambda x, c: x
        if self._rng is None:
            self._rng = tf.random.Generator.from_seed(self.seed)

        def dropout(x, c):
            if c.phase != "train":
                return x
            seed = self._rng.make_seeds(1)[:, 0]  # advances the generator state: a fresh mask every step
            return tf.nn.experimental.stateless_dropout(x, rate=rate, seed=seed)
        return dropout

    def batchnorm(self, layer: BatchNorm):
        tf, n = self.tf, layer.name
        gamma, beta = self.var(f"{n}/gamma"), self.var(f"{n}/beta")
        mm = tf.Variable(self.params[f"{n}/moving_mean"], trainable=False, name=f"{n}/moving_mean".replace("/", "_"))
        mv = tf.Variable(self.params[f"{n}/moving_var"], trainable=False, name=f"{n}/moving_var".replace("/", "_"))
        self.state[f"{n}/moving_mean"], self.state[f"{n}/moving_var"] = mm, mv
        mo, eps = layer.momentum, layer.epsilon

        def batchnorm(x, c):  # in float32 whatever the compute dtype (Keras does the same for 16-bit inputs)
            dtype, x = x.dtype, tf.cast(x, tf.float32)
            if c.phase == "infer":
                mean, var = mm, mv
            else:
                axes = list(range(x.shape.rank - 1))
                per_batch_row = int(np.prod(x.shape[1:-1]))  # static; the batch size is dynamic
                if c.mask is None:
                    mean, var = tf.nn.moments(x, axes=axes)  # biased batch variance normalises
                    count = tf.cast(tf.shape(x)[0] * per_batch_row, tf.float32)
                else:  # padded rows weigh 0 and are not counted
                    w = tf.reshape(c.mask, [-1] + [1] * (x.shape.rank - 1))
                    count = tf.reduce_sum(c.mask) * per_batch_row
                    mean = tf.reduce_sum(x * w, axis=axes) / count
                    var = tf.reduce_sum(tf.square((x - mean) * w), axis=axes) / count
                if c.phase == "train":
                    mm.assign(mo * mm + (1.0 - mo) * mean)
                    mv.assign(mo * mv + (1.0 - mo) * var * (count / (count - 1.0)))  # unbiased for the state
            # x * s + (beta - mean * s), s = gamma / sqrt(var + eps): measured ~15% faster than spelling out
            # (x - mean) * s + beta, and as close to the reference
            y = tf.nn.batch_normalization(x, mean, var, offset=beta, scale=gamma, variance_epsilon=eps)
            return tf.cast(y, dtype)
        return batchnorm

    def lstm(self, layer: LSTM):
        tf, n, cast = self.tf, layer.name, self.cast
        w, u, b = self.var(f"{n}/kernel"), self.var(f"{n}/recurrent_kernel"), self.var(f"{n}/bias")

        def lstm(x, c):
            steps, uc = x.shape[1], cast(u)
            xw = tf.unstack(_dense(tf, x, cast(w), cast(b)), axis=1)  # every step's input projection in one matmul
            h = c_t = tf.zeros([tf.shape(x)[0], layer.units], x.dtype)
            hs = []
            for t in range(steps):  # unrolled: T is small and static; ~1.4x faster per step than tf.scan
                z = xw[t] + tf.matmul(h, uc)
                i, f, g, o = tf.split(z, 4, axis=1)
                c_t = tf.sigmoid(f) * c_t + tf.sigmoid(i) * tf.tanh(g)
                h = tf.sigmoid(o) * tf.tanh(c_t)
                hs.append(h)
            return tf.stack(hs, axis=1) if layer.return_sequences else h
        return lstm

    def attention(self, layer: MultiHeadSelfAttention):
        tf, n, heads, cast = self.tf, layer.name, layer.num_heads, self.cast
        # separate q, k, v matmuls: measured ~20% faster per step than one fused (D, 3D) projection,
        # whose kernel concat costs more than it saves at these sizes
        proj = {p: (self.var(f"{n}/{p}/kernel"), self.var(f"{n}/{p}/bias"))
                for p in ("query", "key", "value", "output")}

        def attention(x, c):
            steps, d = x.shape[1], x.shape[2]
            dh = d // heads

            def dense(p, y):
                return _dense(tf, y, cast(proj[p][0]), cast(proj[p][1]))

            def split(p):  # (B, T, D) -> (B, heads, T, dh), head-major split of D
                return tf.transpose(tf.reshape(dense(p, x), [-1, steps, heads, dh]), [0, 2, 1, 3])

            q, k, v = split("query"), split("key"), split("value")
            scores = tf.matmul(q, k, transpose_b=True) / sqrt(dh)
            if layer.causal:  # -inf after the query position (the diagonal is always kept)
                keep = np.tril(np.ones((steps, steps), dtype=bool))
                scores = scores + tf.constant(np.where(keep, 0.0, -np.inf), dtype=scores.dtype)
            o = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
            o = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [-1, steps, d])
            return dense("output", o)
        return attention


def _dense(tf, x, k, b):
    """``x @ k + b`` on the last axis; higher-rank inputs go through one 2-D matmul."""
    if x.shape.rank == 2:
        return tf.nn.bias_add(tf.matmul(x, k), b)
    y = tf.nn.bias_add(tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), k), b)
    return tf.reshape(y, [-1, *x.shape[1:-1], k.shape[1]])  # only the batch axis is dynamic


def _run(layers, x, c):
    for f in layers:
        x = f(x, c)
    return x


class TensorFlowTrainer(Trainer):
    """Weights as float32 ``tf.Variable``, data as constant tensors on the device, train/grad/eval steps
    as traced graphs (``graph``), XLA executables (``xla``) or eager Python (``eager``)."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
                 precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral"):
        import tensorflow as tf

        self._tf, self._library = tf, optimizer == "library"
        self._lr_tensor = None  # the rate as a tensor argument (schedules that change it every step, see _build)
        check_optimizer(_DISPLAY, workload.optimizer.kind)
        if workload.schedule.kind not in _SCHEDULES:
            raise NotImplementedError(f"{_DISPLAY} backend has no schedule {workload.schedule.kind!r}")
        self._device, self._on_cpu = _device_name(tf, device), device == "cpu"
        # TF32 off (also when built without setup()), on only for precision tf32
        tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")
        with tf.device(self._device):
            self._build(tf, workload, params, data, mode, tf.as_dtype(_COMPUTE_DTYPE[precision]))
        if device == "cuda":
            reset_gpu_peak(tf)  # device_peak_bytes() counts from here, the model and data resident

    def _build(self, tf, workload, params, data, mode, dtype):
        builder = _Builder(tf, params, workload.seed, dtype)
        self._layers = builder.sequence(workload.layers)
        self._weights, self._state = builder.weights, builder.state
        self._vars = list(self._weights.values())
        self._opt = opt = workload.optimizer
        self._dtype = dtype
        if self._library:  # its slots made now (build()): a tf.function must not create variables when traced
            self._keras = keras_optimizer(tf.keras.optimizers, opt)
            self._keras.build(self._vars)
        else:  # optimizer slots (zeros like each weight) and the step counter, all tf.Variables
            first, second = moments(opt)
            self._m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._vars] if first else None
            self._v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._vars] if second else None
            self._t = tf.Variable(0.0, dtype=tf.float64, trainable=False)  # steps taken (float64: bias corrections)
        fp16 = dtype == tf.float16
        self._loss_scale = tf.Variable(_LOSS_SCALE, dtype=tf.float32, trainable=False) if fp16 else None
        self._good_steps = tf.Variable(0, dtype=tf.int64, trainable=False) if fp16 else None  # finite in a row

        self.x_train, self.y_train = tf.constant(data.x_train), tf.constant(data.y_train)
        self.x_test, self.y_test = tf.constant(data.x_test), tf.constant(data.y_test)
        self._n_test = int(data.y_test.size)  # every position for sequence outputs
        self._x_dtype = np.int32 if workload.input_dtype == "int32" else np.float32
        self._pad = mode == "xla"
        self._padder = BatchPadder(workload.batch_size, np.int64, lambda n: tf.ones([n], tf.float32))

        # autograph off: every Python branch and loop here is on Python values, fixed at trace time
        options = _TF_FUNCTION[mode]
        idx = tf.TensorSpec([None], tf.int64)  # None batch: the partial last batch does not retrace
        mask = [tf.TensorSpec([None], tf.float32)] if self._pad else []
        # The learning rate: a schedule that changes it every step (cosine, warm-up) passes it as an argument
        # (no retrace per value); otherwise the graph reads a captured variable, written only when the rate
        # changes. Measured per call on seed-mlp (TF 2.21, CPU): an extra scalar argument costs ~130 us of a
        # ~1 ms step, a variable read nothing measurable, a variable write from Python ~250 us.
        sched = workload.schedule
        self._lr_arg = sched.kind == "cosine" or sched.warmup_steps > 0
        self._lr_var = None if self._lr_arg else self._keras.learning_rate if self._library else \
            tf.Variable(float(opt.learning_rate), dtype=tf.float32, trainable=False)  # library: Keras's own
        self._rate = HeldRate(opt.learning_rate, self._write_lr, None if self._lr_arg else float(opt.learning_rate))
        lr = [tf.TensorSpec([], tf.float32)] if self._lr_arg else []

        self._options = options
        wrap = self._wrap
        self._train = wrap(self._train_fn if self._lr_arg else self._train_var_fn, idx, *lr, *mask)
        self._grads = wrap(self._grads_fn, idx, tf.TensorSpec([], tf.float32), *mask)
        self._forward = wrap(self._forward_fn, tf.TensorSpec([None, *workload.input_shape],
                                                             tf.as_dtype(self._x_dtype)))
        self._eval = wrap(self._eval_fn)

    def _wrap(self, fn, *signature):
        """``fn`` as the mode runs it: a ``tf.function`` of ``signature`` (autograph off), or itself (eager)."""
        if self._options is None:
            return fn

        def plain(*args):  # tf.function calls a plain function ~200 us faster than a bound method (measured)
            return fn(*args)
        return self._tf.function(plain, input_signature=signature or None, autograph=False, **self._options)

    # ---- step functions (traced, compiled or run eagerly) ----

    def _inputs(self, x):
        return x if x.dtype.is_integer else self._tf.cast(x, self._dtype)  # float32 stays as it is

    def _loss(self, logits, y, mask=None):
        """Mean softmax cross-entropy in float32 over the real rows and, for sequences, every position."""
        tf = self._tf
        per = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))
        if mask is None:
            return tf.reduce_mean(per)
        w = tf.reshape(mask, [-1] + [1] * (per.shape.rank - 1))
        return tf.reduce_sum(per * w) / (tf.reduce_sum(mask) * int(np.prod(per.shape[1:])))

    def _loss_and_grads(self, idx, c: _Pass, scale=None):
        """The loss and its float32 gradients; with a loss ``scale`` (fp16), those of the scaled loss, unscaled."""
        tf = self._tf
        with tf.GradientTape() as tape:
            logits = _run(self._layers, self._inputs(tf.gather(self.x_train, idx)), c)
            loss = self._loss(logits, tf.gather(self.y_train, idx), c.mask)
            scaled = loss if scale is None else loss * scale
        grads = tape.gradient(scaled, self._vars)
        # embeddings give IndexedSlices; the neutral optimizers decay every row, so densify
        grads = [tf.convert_to_tensor(g) for g in grads]
        return loss, grads if scale is None else [g / scale for g in grads]

    def _train_fn(self, idx, lr, mask=None):
        tf = self._tf
        loss, grads = self._loss_and_grads(idx, _Pass("train", mask), self._loss_scale)
        if self._loss_scale is None:
            self._apply(grads, lr)
        else:  # fp16: a step with overflowed gradients is skipped (BatchNorm statistics still move, as in Keras)
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            tf.cond(finite, lambda: self._apply_and_grow(grads, lr), self._shrink)
        return loss

    def _train_var_fn(self, idx, mask=None):
        return self._train_fn(idx, self._lr_var, mask)

    def _apply_and_grow(self, grads, lr):
        tf = self._tf
        self._apply(grads, lr)
        good = self._good_steps.assign_add(1)
        grow = good >= _GROWTH_STEPS
        self._loss_scale.assign(tf.where(grow, self._loss_scale * 2.0, self._loss_scale))
        self._good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), good))
        return tf.constant(True)

    def _shrink(self):
        self._loss_scale.assign(self._loss_scale / 2.0)
        self._good_steps.assign(0)
        return self._tf.constant(False)

    def _apply(self, grads, lr):
        """Clip (on unscaled gradients), then one optimizer update of every variable: the Keras optimizer's
        (``library``; a rate passed as an argument is assigned to it first, a graph op in a traced step) or the
        spec's rules in TF ops."""
        tf, o = self._tf, self._opt
        if self._library:
            if lr is not self._lr_var:  # a rate argument; the captured rate is the optimizer's own variable
                self._keras.learning_rate = lr
            self._keras.apply(grads, self._vars)
            return
        if o.clip_norm is not None:  # g *= min(1, clip / (global norm + 1e-6))
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
            scale = tf.minimum(o.clip_norm / (norm + CLIP_EPS), 1.0)
            grads = [g * scale for g in grads]
        # the step count feeds Adam's bias corrections only: SGD and RMSprop leave it out of their graph
        t = self._t.assign_add(1.0) if o.kind in ("adam", "adamw") else None
        if o.kind == "sgd":
            for i, (p, g) in enumerate(zip(self._vars, grads)):
                if o.momentum:  # torch form: v = m v + g; step on g + m v (nesterov) or v
                    v = self._m[i].assign(o.momentum * self._m[i] + g)
                    g = g + o.momentum * v if o.nesterov else v
                p.assign_sub(lr * g)
        elif o.kind in ("adam", "adamw"):
            # bias corrections in float64 (as torch's Python floats), then the whole update in float32
            bc1 = tf.cast(1.0 - tf.pow(tf.constant(o.beta1, tf.float64), t), tf.float32)
            bc2 = tf.cast(1.0 - tf.pow(tf.constant(o.beta2, tf.float64), t), tf.float32)
            for p, g, m, v in zip(self._vars, grads, self._m, self._v):
                m = m.assign(o.beta1 * m + (1.0 - o.beta1) * g)
                v = v.assign(o.beta2 * v + (1.0 - o.beta2) * tf.square(g))
                step = lr * (m / bc1) / (tf.sqrt(v / bc2) + o.epsilon)  # eps outside sqrt(vhat): torch form
                if o.kind == "adamw":  # decoupled decay first, on every parameter
                    p.assign(p - lr * o.weight_decay * p - step)
                else:
                    p.assign_sub(step)
        else:  # rmsprop: accumulator from 0, eps outside the square root
            for p, g, v in zip(self._vars, grads, self._v):
                v = v.assign(o.rho * v + (1.0 - o.rho) * tf.square(g))
                p.assign_sub(lr * g / (tf.sqrt(v) + o.epsilon))

    def _forward_fn(self, x):
        return self._tf.cast(_run(self._layers, self._inputs(x), _Pass("infer")), self._tf.float32)

    def _grads_fn(self, idx, scale, mask=None):
        return self._loss_and_grads(idx, _Pass("probe", mask), None if self._loss_scale is None else scale)[1]

    def _eval_fn(self):
        tf = self._tf
        logits = _run(self._layers, self._inputs(self.x_test), _Pass("infer"))
        pred = tf.argmax(logits, axis=-1, output_type=self.y_test.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, self.y_test), tf.int32))
        return self._loss(logits, self.y_test), correct

    def _batch_args(self, idx: np.ndarray) -> tuple:
        """``(idx,)``; under XLA ``(idx, mask)`` with a short batch padded to the full batch size, so every batch
        runs the one compiled shape."""
        return self._padder(idx) if self._pad else (np.asarray(idx, dtype=np.int64),)

    def _write_lr(self, lr: float) -> None:
        with self._tf.device(self._device):
            if self._lr_arg:
                self._lr_tensor = self._tf.constant(lr, dtype=self._tf.float32)
            else:
                self._lr_var.assign(lr)

    # ---- Trainer contract ----

    @property
    def loss_scale(self) -> float | None:
        """The current fp16 loss scale; ``None`` in the other precisions."""
        return None if self._loss_scale is None else float(self._loss_scale.numpy())

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        self._rate.set(lr)  # written only when the schedule changes the rate
        lr_args = (self._lr_tensor,) if self._lr_arg else ()
        if self._on_cpu:  # GPUs are hidden from a CPU worker: no per-step device scope needed (it costs time)
            idx, *mask = self._batch_args(idx)
            return float(self._train(idx, *lr_args, *mask))  # float(): synchronised
        with self._tf.device(self._device):
            idx, *mask = self._batch_args(idx)
            return float(self._train(idx, *lr_args, *mask))  # float(): synchronised

    def evaluate(self) -> tuple[float, float]:
        with self._tf.device(self._device):
            loss, correct = self._eval()
            return float(loss), int(correct) / self._n_test

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self._tf.device(self._device):
            return self._forward(self._tf.convert_to_tensor(np.asarray(x, dtype=self._x_dtype))).numpy()

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """fp16: at the current loss scale, halved (here only) while the gradients overflow: the gradients
        of the first step that training would apply."""
        idx, *mask = self._batch_args(idx)
        scale = self.loss_scale or 1.0
        with self._tf.device(self._device):
            grads, _ = overflow_free(
                lambda sc: [g.numpy() for g in self._grads(idx, self._tf.constant(sc, self._tf.float32), *mask)],
                lambda gs: all(np.isfinite(g).all() for g in gs), scale)
        return {n: g.copy() for n, g in zip(self._weights, grads)}

    def params(self) -> dict[str, np.ndarray]:
        return {n: v.numpy().copy() for n, v in {**self._weights, **self._state}.items()}

    def device_peak_bytes(self) -> int | None:
        return gpu_peak_bytes(self._tf) if self._device.startswith("/GPU") else None


class TensorFlowPrivateTrainer(TensorFlowTrainer):
    """DP-SGD: ``tf.vectorized_map`` of a GradientTape over one example's loss (the per-example gradients of the
    variables, vectorised by pfor), each scaled by min(1, clip / (norm + 1e-6)) and its row mask, summed with
    ``tensordot``, plus the step's numpy noise (one float32 argument), over batch_size; then the base update of
    :class:`TensorFlowTrainer` (``_apply``), all in one ``tf.function`` (``xla``: jit-compiled, a Poisson batch
    padded to a bucketed size; ``eager``: op by op, vectorized_map included)."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
                 precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral"):
        import tensorflow as tf

        check_private(_DISPLAY, workload)
        super().__init__(base_workload(workload), params, data, mode, precision, device, optimizer)
        self._clip, self._batch, self._noise = workload.optimizer.clip, workload.batch_size, Noise(workload)
        self._padder = private_padder(workload, mode == "xla", np.int64, lambda n: tf.ones([n], tf.float32))
        idx, mask = tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32)
        lr = [tf.TensorSpec([], tf.float32)] if self._lr_arg else []
        self._train = self._wrap(self._private_fn if self._lr_arg else self._private_var_fn, idx, mask,
                                 tf.TensorSpec([self._noise.size], tf.float32), *lr)
        self._grads = self._wrap(lambda i, m: self._clipped(i, m)[1], idx, mask)

    def _clipped(self, idx, mask):
        """The batch's mean loss over its real rows (0 when empty) and the clipped per-example gradient sums."""
        tf = self._tf

        def one(example):
            x, y = example
            with tf.GradientTape() as tape:
                loss = self._loss(_run(self._layers, self._inputs(x[None]), _Pass("train")), y[None])
            return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, self._vars)]

        losses, grads = tf.vectorized_map(one, (tf.gather(self.x_train, idx), tf.gather(self.y_train, idx)))
        norms = tf.sqrt(tf.add_n([tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), 1) for g in grads]))
        scale = tf.minimum(self._clip / (norms + CLIP_EPS), 1.0) * mask
        return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0), \
            [tf.tensordot(scale, g, 1) for g in grads]

    def _private_fn(self, idx, mask, z, lr):
        loss, sums = self._clipped(idx, mask)
        z = self._noise.split(z, self._tf.reshape)
        self._apply([(g + self._noise.std * z[n]) / self._batch for g, n in zip(sums, self._weights)], lr)
        return loss

    def _private_var_fn(self, idx, mask, z):
        return self._private_fn(idx, mask, z, self._lr_var)

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        self._rate.set(lr)
        args = (*self._padder(idx), self._noise.draw(), *((self._lr_tensor,) if self._lr_arg else ()))
        if self._on_cpu:
            return float(self._train(*args))  # float(): synchronised
        with self._tf.device(self._device):
            return float(self._train(*args))

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The clipped per-example sum (before noise and the division by the batch size)."""
        with self._tf.device(self._device):
            return {n: g.numpy().copy() for n, g in zip(self._weights, self._grads(*self._padder(idx)))}


class TensorFlowBackend(Backend):
    """TensorFlow on the CPU or one GPU; modes ``graph`` (``tf.function``), ``eager`` and ``xla``
    (``tf.function(jit_compile=True)``); fp32, and bf16/fp16 mixed precision."""

    name = import_name = "tensorflow"
    display = _DISPLAY
    distribution = "tensorflow-cpu"
    install_hint = "pip install 'isobench[tensorflow]'  (tensorflow-cpu==2.21.0)"
    trainer, private_trainer = TensorFlowTrainer, TensorFlowPrivateTrainer
    modes = tuple(_TF_FUNCTION)
    precisions = tuple(_COMPUTE_DTYPE)

    def version(self) -> str | None:
        # the CPU wheel and the full wheel install the same module under two distribution names
        from importlib import metadata

        for dist in (self.distribution, "tensorflow"):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return None

    def setup(self, threads: int, device: str = "cpu") -> FrameworkSettings:
        self.settings = setup_tensorflow(threads, device)
        return self.settings

    def inference_model(self, workload: Workload, params: dict[str, np.ndarray]):
        """``f(x) -> float32 logits``: the layers over float32 ``tf.Variable`` weights (made in the current device
        scope) in the ``infer`` phase, canonical layout in and out (TensorFlow's own). Run eagerly as it is; a
        caller traces it with ``tf.function`` (its input signature, XLA or not, is the caller's)."""
        import tensorflow as tf

        layers = _Builder(tf, params, workload.seed, tf.float32).sequence(workload.layers)

        def forward(x):
            return tf.cast(_run(layers, x, _Pass("infer")), tf.float32)
        return forward

    def library_difference(self, workload: Workload) -> str | None:
        return keras_difference(workload)


def _device_name(tf, device: str) -> str:
    """The TF device everything of a run is placed on; ``RuntimeError`` for ``cuda`` without a GPU."""
    if device != "cuda":
        return "/CPU:0"
    if not tf.config.get_visible_devices("GPU"):
        why = ("this TensorFlow is built without CUDA (the tensorflow-cpu wheel): install tensorflow[and-cuda]"
               if not tf.test.is_built_with_cuda() else "check the driver and CUDA_VISIBLE_DEVICES")
        raise RuntimeError(f"no GPU visible to TensorFlow for device 'cuda': {why}")
    return "/GPU:0"


def reset_gpu_peak(tf) -> None:
    """Start the TF allocator's peak on the first visible GPU now."""
    tf.config.experimental.reset_memory_stats("GPU:0")


def gpu_peak_bytes(tf) -> int:
    """The TF allocator's peak on the first visible GPU since the last reset, in bytes."""
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def _private_flag(module: str, func: str) -> bool | None:
    """A flag TF exposes only privately (oneDNN on, op determinism); ``None`` if this TF moved it.

    ``IsMklEnabled`` reads what TF decided at start-up from ``TF_ENABLE_ONEDNN_OPTS`` and the CPU:
    on x86 Linux oneDNN is on by default only for CPUs with AVX-512 VNNI/BF16 or AMX."""
    import importlib

    try:
        return bool(getattr(importlib.import_module(module), func)())
    except (ImportError, AttributeError):
        return None


def setup_tensorflow(threads: int, device: str = "cpu") -> FrameworkSettings:
    """Thread settings, the device (GPUs hidden from a CPU run, memory growth on a GPU) and TF32 off; the
    settings in effect (the TensorFlow backend's, keras-tensorflow's and the TensorFlow serving paths' set-up)."""
    import tensorflow as tf

    threads_error = device_error = None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:  # only allowed before the runtime is initialised (the first op)
        threads_error = str(e)
    gpus = tf.config.get_visible_devices("GPU")
    gpu, gpu_name = {}, None
    if device == "cuda":
        _device_name(tf, device)  # raises without a GPU
        try:  # grow on demand instead of reserving the whole GPU: the allocator peak is then the run's
            for g in gpus:
                tf.config.experimental.set_memory_growth(g, True)
        except RuntimeError as e:  # only allowed before the GPU is initialised
            device_error = str(e)
        details = tf.config.experimental.get_device_details(gpus[0])
        cc = details.get("compute_capability")
        gpu_name = details.get("device_name")
        gpu = {"gpu_compute_capability": ".".join(map(str, cc)) if cc else None,
               "gpu_memory_growth": tf.config.experimental.get_memory_growth(gpus[0])}
    elif gpus:  # a CPU run keeps TF off the GPUs, which it would otherwise initialise and reserve
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as e:
            device_error = str(e)
    tf.config.experimental.enable_tensor_float_32_execution(False)
    if device == "cuda":  # start the GPU runtime here, not in build: import covers device start-up, as in JAX
        with tf.device("/GPU:0"):
            tf.zeros([1]).numpy()
    return FrameworkSettings(
        version=tf.__version__, device=device, device_name=gpu_name,
        intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(), threads_note=threads_error,
        tf32=tf.config.experimental.tensor_float_32_execution_enabled(),
        # both read what the runtime decided, TF_ENABLE_ONEDNN_OPTS and TF_DETERMINISTIC_OPS included
        onednn=_private_flag("tensorflow.python.util._pywrap_util_port", "IsMklEnabled"),
        determinism=_private_flag("tensorflow.python.framework.config", "is_op_determinism_enabled"),
        xla={"jit_auto_clustering": tf.config.optimizer.get_jit() or None,  # "" when XLA auto-jit is off
             **env_flags("TF_XLA_FLAGS", "XLA_FLAGS")},
        env=env_flags("TF_ENABLE_ONEDNN_OPTS", "TF_DETERMINISTIC_OPS", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                      "TF_GPU_ALLOCATOR"),
        extra={**gpu, "device_error": device_error, "built_with_cuda": tf.test.is_built_with_cuda()})
