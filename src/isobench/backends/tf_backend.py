"""TensorFlow backend: ``tf.Variable`` weights, raw TF ops and a ``tf.function`` training step
(GradientTape + the optimizer's update rules written in TF ops). Keras is left to its own backend, so this
one measures TensorFlow itself.

Every layer of :mod:`isobench.workloads.spec` is built from native ops in the canonical layout, which is
TensorFlow's own (NHWC data, HWIO conv kernels, ``(in, out)`` dense kernels), so weights load without any
conversion. BatchNorm and LayerNorm are written by hand on ``tf.nn.moments``; the LSTM is a Python loop
unrolled over time inside the traced graph; attention is written out with a causal mask.

Phases of the forward pass (a Python value, fixed at trace time, so each is its own graph):

- ``train`` (:meth:`TensorFlowTrainer.train_step`): BatchNorm uses batch statistics and updates its moving
  statistics; Dropout is active, drawing from a ``tf.random.Generator`` seeded from the workload seed.
- ``probe`` (:meth:`TensorFlowTrainer.gradients`): batch statistics but no moving-statistics update (so the
  probe changes nothing) and Dropout as identity (parity checks run without dropout anyway).
- ``infer`` (evaluate, logits): moving statistics, Dropout as identity.

tensorflow is imported in :meth:`TensorFlowBackend.setup` / :meth:`TensorFlowBackend.build` only.
"""
from __future__ import annotations

from math import sqrt
from typing import Any

import numpy as np

from ..data import Dataset
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from .base import Backend, Trainer, check_build, env_flags

# mode -> tf.function options for every step function; "eager" and "xla" come in later issues
_TF_FUNCTION = {"graph": {"jit_compile": False}}
_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
_SCHEDULES = ("constant", "step", "cosine")  # computed by the runner; the step only receives the rate
_DISPLAY = "TensorFlow"


class _Builder:
    """Turns the neutral layer sequence into callables ``f(x, phase) -> y`` over ``tf.Variable`` weights."""

    def __init__(self, tf, params: dict[str, np.ndarray], seed: int):
        self.tf, self.params = tf, params
        self.weights: dict[str, Any] = {}  # canonical name -> trainable tf.Variable, in layer order
        self.state: dict[str, Any] = {}    # canonical name -> BatchNorm moving statistic (non-trainable)
        self.seed = seed
        self._rng = None  # created on the first Dropout with a positive rate

    def var(self, name: str):
        v = self.tf.Variable(self.params[name], name=name.replace("/", "_"))  # canonical layout is TF's layout
        self.weights[name] = v
        return v

    def sequence(self, layers) -> list:
        return [self.layer(layer) for layer in layers]

    def layer(self, layer):  # noqa: C901 - one branch per layer kind
        tf = self.tf
        if isinstance(layer, Dense):
            k, b = self.var(f"{layer.name}/kernel"), self.var(f"{layer.name}/bias")
            return lambda x, phase: _dense(tf, x, k, b)
        if isinstance(layer, Conv2D):
            k, b = self.var(f"{layer.name}/kernel"), self.var(f"{layer.name}/bias")
            ks, s, p = layer.kernel_size, layer.stride, layer.pad
            if p == 0:
                padding = "VALID"
            elif s == 1 and 2 * p == ks - 1:
                padding = "SAME"  # identical to symmetric (k-1)/2 padding at stride 1
            else:  # TF's "SAME" pads asymmetrically at stride > 1: give the spec's symmetric pixels
                padding = [[0, 0], [p, p], [p, p], [0, 0]]
            return lambda x, phase: tf.nn.bias_add(tf.nn.conv2d(x, k, strides=s, padding=padding), b)
        if isinstance(layer, (MaxPool2D, AvgPool2D)):
            pool = tf.nn.max_pool2d if isinstance(layer, MaxPool2D) else tf.nn.avg_pool2d
            k, s = layer.pool, layer.stride or layer.pool
            return lambda x, phase: pool(x, ksize=k, strides=s, padding="VALID")
        if isinstance(layer, GlobalAvgPool):
            return lambda x, phase: tf.reduce_mean(x, axis=list(range(1, x.shape.rank - 1)))
        if isinstance(layer, Flatten):  # NHWC row-major: canonical channels-last order
            return lambda x, phase: tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
        if isinstance(layer, Reshape):
            shape = [-1, *layer.shape]
            return lambda x, phase: tf.reshape(x, shape)
        if isinstance(layer, ReLU):
            return lambda x, phase: tf.nn.relu(x)
        if isinstance(layer, GELU):
            return lambda x, phase: tf.nn.gelu(x, approximate=False)
        if isinstance(layer, Tanh):
            return lambda x, phase: tf.tanh(x)
        if isinstance(layer, Dropout):
            return self._dropout(layer.rate)
        if isinstance(layer, BatchNorm):
            return self._batchnorm(layer)
        if isinstance(layer, LayerNorm):
            gamma, beta, eps = self.var(f"{layer.name}/gamma"), self.var(f"{layer.name}/beta"), layer.epsilon

            def layernorm(x, phase):
                mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
                return (x - mean) * tf.math.rsqrt(var + eps) * gamma + beta
            return layernorm
        if isinstance(layer, Embedding):
            e = self.var(f"{layer.name}/embeddings")
            return lambda x, phase: tf.gather(e, x)
        if isinstance(layer, PositionalEmbedding):
            e = self.var(f"{layer.name}/embeddings")
            return lambda x, phase: x + e[:x.shape[1]]
        if isinstance(layer, LSTM):
            return self._lstm(layer)
        if isinstance(layer, MultiHeadSelfAttention):
            return self._attention(layer)
        if isinstance(layer, Residual):
            block, shortcut = self.sequence(layer.block), self.sequence(layer.shortcut)
            return lambda x, phase: _run(block, x, phase) + _run(shortcut, x, phase)
        raise NotImplementedError(f"{_DISPLAY} backend has no layer {getattr(layer, 'kind', layer)!r}")

    def _dropout(self, rate: float):
        tf = self.tf
        if rate <= 0:
            return lambda x, phase: x
        if self._rng is None:
            self._rng = tf.random.Generator.from_seed(self.seed)

        def dropout(x, phase):
            if phase != "train":
                return x
            seed = self._rng.make_seeds(1)[:, 0]  # advances the generator state: a fresh mask every step
            return tf.nn.experimental.stateless_dropout(x, rate=rate, seed=seed)
        return dropout

    def _batchnorm(self, layer: BatchNorm):
        tf, n = self.tf, layer.name
        gamma, beta = self.var(f"{n}/gamma"), self.var(f"{n}/beta")
        mm = tf.Variable(self.params[f"{n}/moving_mean"], trainable=False, name=f"{n}/moving_mean".replace("/", "_"))
        mv = tf.Variable(self.params[f"{n}/moving_var"], trainable=False, name=f"{n}/moving_var".replace("/", "_"))
        self.state[f"{n}/moving_mean"], self.state[f"{n}/moving_var"] = mm, mv
        mo, eps = layer.momentum, layer.epsilon

        def batchnorm(x, phase):
            if phase == "infer":
                mean, var = mm, mv
            else:
                axes = list(range(x.shape.rank - 1))
                mean, var = tf.nn.moments(x, axes=axes)  # biased batch variance normalises
                if phase == "train":
                    per_batch_row = int(np.prod(x.shape[1:-1]))  # static; the batch size is dynamic
                    count = tf.cast(tf.shape(x)[0] * per_batch_row, x.dtype)
                    mm.assign(mo * mm + (1.0 - mo) * mean)
                    mv.assign(mo * mv + (1.0 - mo) * var * (count / (count - 1.0)))  # unbiased for the state
            # x * s + (beta - mean * s), s = gamma / sqrt(var + eps): measured ~15% faster than spelling out
            # (x - mean) * s + beta, and as close to the reference
            return tf.nn.batch_normalization(x, mean, var, offset=beta, scale=gamma, variance_epsilon=eps)
        return batchnorm

    def _lstm(self, layer: LSTM):
        tf, n = self.tf, layer.name
        w, u, b = self.var(f"{n}/kernel"), self.var(f"{n}/recurrent_kernel"), self.var(f"{n}/bias")

        def lstm(x, phase):
            steps = x.shape[1]
            xw = tf.unstack(_dense(tf, x, w, b), axis=1)  # every step's input projection in one matmul
            h = c = tf.zeros([tf.shape(x)[0], layer.units], x.dtype)
            hs = []
            for t in range(steps):  # unrolled: T is small and static; ~1.4x faster per step than tf.scan
                z = xw[t] + tf.matmul(h, u)
                i, f, g, o = tf.split(z, 4, axis=1)
                c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
                h = tf.sigmoid(o) * tf.tanh(c)
                hs.append(h)
            return tf.stack(hs, axis=1) if layer.return_sequences else h
        return lstm

    def _attention(self, layer: MultiHeadSelfAttention):
        tf, n, heads = self.tf, layer.name, layer.num_heads
        # separate q, k, v matmuls: measured ~20% faster per step than one fused (D, 3D) projection,
        # whose kernel concat costs more than it saves at these sizes
        proj = {p: (self.var(f"{n}/{p}/kernel"), self.var(f"{n}/{p}/bias"))
                for p in ("query", "key", "value", "output")}

        def attention(x, phase):
            steps, d = x.shape[1], x.shape[2]
            dh = d // heads

            def split(p):  # (B, T, D) -> (B, heads, T, dh), head-major split of D
                return tf.transpose(tf.reshape(_dense(tf, x, *proj[p]), [-1, steps, heads, dh]), [0, 2, 1, 3])

            q, k, v = split("query"), split("key"), split("value")
            scores = tf.matmul(q, k, transpose_b=True) / sqrt(dh)
            if layer.causal:  # -inf after the query position (the diagonal is always kept)
                keep = np.tril(np.ones((steps, steps), dtype=bool))
                scores = scores + tf.constant(np.where(keep, 0.0, -np.inf).astype(np.float32))
            o = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
            o = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [-1, steps, d])
            return _dense(tf, o, *proj["output"])
        return attention


def _dense(tf, x, k, b):
    """``x @ k + b`` on the last axis; higher-rank inputs go through one 2-D matmul."""
    if x.shape.rank == 2:
        return tf.nn.bias_add(tf.matmul(x, k), b)
    y = tf.nn.bias_add(tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), k), b)
    return tf.reshape(y, [-1, *x.shape[1:-1], k.shape[1]])  # only the batch axis is dynamic


def _run(layers, x, phase):
    for f in layers:
        x = f(x, phase)
    return x


class TensorFlowTrainer(Trainer):
    """Weights as ``tf.Variable``, data as constant tensors, train/grad/eval steps as traced graphs."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str):
        import tensorflow as tf

        self._tf = tf
        self._lr_value, self._lr_tensor = None, None  # the last learning rate and its tensor
        opt = workload.optimizer
        if opt.kind not in _OPTIMIZERS:
            raise NotImplementedError(f"{_DISPLAY} backend has no optimizer {opt.kind!r}")
        if workload.schedule.kind not in _SCHEDULES:
            raise NotImplementedError(f"{_DISPLAY} backend has no schedule {workload.schedule.kind!r}")
        builder = _Builder(tf, params, workload.seed)
        self._layers = builder.sequence(workload.layers)
        self._weights, self._state = builder.weights, builder.state
        self._vars = list(self._weights.values())
        self._opt = opt
        # optimizer slots (zeros like each weight) and the step counter, all tf.Variables
        first = (opt.kind == "sgd" and opt.momentum) or opt.kind in ("adam", "adamw")
        second = opt.kind in ("adam", "adamw", "rmsprop")
        self._m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._vars] if first else None
        self._v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._vars] if second else None
        self._t = tf.Variable(0.0, dtype=tf.float64, trainable=False)  # steps taken (float64: bias corrections)

        self.x_train, self.y_train = tf.constant(data.x_train), tf.constant(data.y_train)
        self.x_test, self.y_test = tf.constant(data.x_test), tf.constant(data.y_test)
        self._n_test = int(data.y_test.size)  # every position for sequence outputs
        self._x_dtype = np.int32 if workload.input_dtype == "int32" else np.float32

        # autograph off: every Python branch and loop here is on Python values, fixed at trace time
        opts = {"autograph": False, **_TF_FUNCTION[mode]}
        idx = tf.TensorSpec([None], tf.int64)  # None batch: the partial last batch does not retrace
        lr = tf.TensorSpec([], tf.float32)     # the schedule's rate is an argument: no retrace per value
        self._train = tf.function(self._train_fn, input_signature=[idx, lr], **opts)
        self._grads = tf.function(self._grads_fn, input_signature=[idx], **opts)
        x_sig = tf.TensorSpec([None, *workload.input_shape], tf.as_dtype(self._x_dtype))
        self._forward = tf.function(self._forward_fn, input_signature=[x_sig], **opts)
        self._eval = tf.function(self._eval_fn, **opts)

    # ---- traced functions ----

    def _loss(self, logits, y):
        tf = self._tf  # mean over the batch and, for sequence outputs, over every position
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

    def _loss_and_grads(self, idx, phase):
        tf = self._tf
        with tf.GradientTape() as tape:
            logits = _run(self._layers, tf.gather(self.x_train, idx), phase)
            loss = self._loss(logits, tf.gather(self.y_train, idx))
        grads = tape.gradient(loss, self._vars)
        # embeddings give IndexedSlices; the neutral optimizers decay every row, so densify
        return loss, [tf.convert_to_tensor(g) for g in grads]

    def _train_fn(self, idx, lr):
        tf, o = self._tf, self._opt
        loss, grads = self._loss_and_grads(idx, "train")
        if o.clip_norm is not None:  # g *= min(1, clip / (global norm + 1e-6))
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
            scale = tf.minimum(o.clip_norm / (norm + 1e-6), 1.0)
            grads = [g * scale for g in grads]
        t = self._t.assign_add(1.0)
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
        return loss

    def _forward_fn(self, x):
        return _run(self._layers, x, "infer")

    def _grads_fn(self, idx):
        return self._loss_and_grads(idx, "probe")[1]

    def _eval_fn(self):
        tf = self._tf
        logits = _run(self._layers, self.x_test, "infer")
        pred = tf.argmax(logits, axis=-1, output_type=self.y_test.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, self.y_test), tf.int32))
        return self._loss(logits, self.y_test), correct

    # ---- Trainer contract ----

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        lr = self._opt.learning_rate if lr is None else float(lr)
        if lr != self._lr_value:  # a float32 tensor, made again only when the schedule changes the rate
            self._lr_value, self._lr_tensor = lr, self._tf.constant(lr, dtype=self._tf.float32)
        return float(self._train(np.asarray(idx, dtype=np.int64), self._lr_tensor))  # float(): synchronised

    def evaluate(self) -> tuple[float, float]:
        loss, correct = self._eval()
        return float(loss), int(correct) / self._n_test

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._forward(np.asarray(x, dtype=self._x_dtype)).numpy()

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        grads = self._grads(np.asarray(idx, dtype=np.int64))
        return {n: g.numpy().copy() for n, g in zip(self._weights, grads)}

    def params(self) -> dict[str, np.ndarray]:
        return {n: v.numpy().copy() for n, v in {**self._weights, **self._state}.items()}


class TensorFlowBackend(Backend):
    """TensorFlow on the CPU; mode ``graph`` (``tf.function`` without XLA)."""

    name = "tensorflow"
    display = _DISPLAY
    distribution = "tensorflow-cpu"
    import_name = "tensorflow"
    install_hint = "pip install 'isobench[tensorflow]'  (tensorflow-cpu==2.21.0)"
    modes = tuple(_TF_FUNCTION)
    precisions = ("fp32",)

    def version(self) -> str | None:
        # the CPU wheel and the full wheel install the same module under two distribution names
        from importlib import metadata

        for dist in (self.distribution, "tensorflow"):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return None

    def setup(self, threads: int, device: str = "cpu") -> dict[str, Any]:
        import tensorflow as tf

        threads_error = None
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as e:  # only allowed before the runtime is initialised (the first op)
            threads_error = str(e)
        return {
            "version": tf.__version__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "threads_error": threads_error,
            "onednn_enabled": _private_flag("tensorflow.python.util._pywrap_util_port", "IsMklEnabled"),
            "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "op_determinism": _private_flag("tensorflow.python.framework.config", "is_op_determinism_enabled"),
            "jit_auto_clustering": tf.config.optimizer.get_jit() or None,  # "" when XLA auto-jit is off
            **env_flags("TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS", "XLA_FLAGS", "TF_DETERMINISTIC_OPS",
                        "OMP_NUM_THREADS"),
        }

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
              precision: str = "fp32", device: str = "cpu") -> Trainer:
        check_build(self, workload, mode, precision, device)
        return TensorFlowTrainer(workload, params, data, mode)


def _private_flag(module: str, func: str) -> bool | None:
    """A flag TF exposes only privately (oneDNN on, op determinism); ``None`` if this TF moved it.

    ``IsMklEnabled`` reads what TF decided at start-up from ``TF_ENABLE_ONEDNN_OPTS`` and the CPU:
    on x86 Linux oneDNN is on by default only for CPUs with AVX-512 VNNI/BF16 or AMX."""
    import importlib

    try:
        return bool(getattr(importlib.import_module(module), func)())
    except (ImportError, AttributeError):
        return None
