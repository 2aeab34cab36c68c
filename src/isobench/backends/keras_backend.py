"""Keras 3 backends: one Keras model definition trained by Keras on PyTorch, TensorFlow or JAX
(frameworks ``keras-torch``, ``keras-tensorflow``, ``keras-jax``), so isobench measures what Keras adds on
top of each framework.

Backend selection. Keras fixes its backend when it is first imported, once per process. :meth:`KerasBackend.setup`
imports the framework (an ``ImportError`` there, or from keras, makes the worker record the framework as
unavailable), applies the framework's own thread and TF32 settings and chooses the device, then sets
``KERAS_BACKEND`` and imports keras. A process that already imported keras with another backend gets a
``RuntimeError``: each Keras framework needs its own process (the runner's workers are).

Model. A functional ``keras.Model`` of Keras layers, built from the neutral spec, channels-last like the spec:

- Dense, Conv2D (``"same"``/``"valid"``; other symmetric padding as ``ZeroPadding2D`` + ``"valid"``),
  MaxPooling2D/AveragePooling2D, GlobalAveragePooling1D/2D/3D, Flatten, Reshape, ReLU, Activation(tanh) and
  Activation(exact GELU: Keras's default is the tanh approximation), Dropout (seeded from the workload
  seed; a rate of 0 builds no layer), LayerNormalization (biased variance, epsilon inside the root: the spec's),
  Embedding, Add for residuals;
- LSTM: ``keras.layers.LSTM`` has the spec's gate order (i, f, g, o), sigmoid/tanh and one bias, and the
  canonical layout (kernel (in, 4H), recurrent kernel (H, 4H), bias (4H,));
- MultiHeadSelfAttention: ``keras.layers.MultiHeadAttention(key_dim=D/heads)`` called as ``mha(x, x,
  use_causal_mask=...)``; its scale is the spec's ``1/sqrt(D/heads)``. Its q/k/v kernels are (D, heads, dh)
  with (heads, dh) biases and its output kernel (heads, dh, D): head-major reshapes of the canonical (D, D);
- two small custom layers where Keras's semantics differ: ``SpecBatchNorm`` (Keras's BatchNormalization
  with the spec's *unbiased* variance in ``moving_variance``; Keras's own update uses the biased one; the
  momentum convention is the spec's) and ``SpecPositionalEmbedding`` (no core Keras layer adds a learned
  position table).

Parameters load through one table of slots (canonical name -> Keras variable and the reshape to and from the
canonical layout), so loading, ``params()`` and ``gradients()`` cannot disagree.

Training is Keras's own compiled step: ``model.compile(optimizer, SparseCategoricalCrossentropy(from_logits=True),
jit_compile="auto")`` and ``model.train_on_batch`` once per runner step (the loop ``model.fit`` runs, with
the runner's batches). ``"auto"`` resolves per backend (recorded in the settings): XLA on JAX, eager on
torch, a ``tf.function`` graph without XLA for TensorFlow on the CPU (XLA on a GPU). The runner's
learning rate is assigned to the optimizer's ``learning_rate`` variable when it changes. Batches are
numpy slices that Keras converts, as ``model.fit`` does with in-memory arrays. The partial last batch of an epoch
is a new input shape: Keras retraces (TF) or recompiles (JAX) once for it, and the cached function serves
it in later epochs (the worker keeps partial batches out of the steady step time).

Optimizers (update rules written out in ``backends/reference.py``). Implementation ``library``: Keras's own
classes (``keras.optimizers.SGD``, ``Adam``, ``AdamW``, ``RMSprop``; on keras-torch Keras routes them to its
``torch._foreach`` forms), every hyperparameter explicit, as a Keras user's script calls them; their rules depart
from the spec's as listed below (:func:`~.common.keras_difference`). Implementation ``neutral``: Keras's classes
with ``update_step`` overridden where Keras writes a different rule than the spec (on keras-torch the override is
the ``torch._foreach`` update of Keras's torch optimizers, as fast as Keras's own):

- Adam/AdamW: Keras folds the bias corrections into the step size, ``lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) +
  eps)``, which puts epsilon on ``sqrt(v)``, not on ``sqrt(v-hat)``: an effective epsilon of ``eps sqrt(1-b2^t)``
  (3% of eps at step 1). Parameters whose gradients are near eps (the LSTM input weights of digits' nearly
  blank first pixel column) then step up to twice as far, and lstm-digits and vit-digits leave the parity
  tolerance within 20 steps (docs/measurement.md). The subclasses put epsilon outside
  ``sqrt(v-hat)`` (bias corrections as ``-expm1(t log b)``, as the JAX backend); AdamW keeps Keras's decoupled
  decay of every variable by ``lr wd`` before the step, the spec's.
- RMSprop: Keras puts epsilon inside the square root; the subclass puts it outside.
- SGD: Keras's momentum form ``m = mu m - lr g; p += m`` equals the spec's ``v = mu v + g; p -= lr v`` while
  the rate is constant, so Keras's SGD runs unchanged then; under a schedule the subclass runs the spec's form.
- Clipping: Keras's ``global_clipnorm`` scales by ``min(1, clip/norm)``, the spec by ``min(1, clip/(norm +
  1e-6))``: a relative difference below ``1e-6/clip`` when clipping is active, under float32 rounding for
  clip 1.0 (vit-digits).
- On TensorFlow an Embedding's gradient is a ``tf.IndexedSlices`` and Keras's sparse-aware ops square each
  occurrence of a token instead of the summed row (Adam's ``v``, RMSprop, the clipping norm), and gpt-tiny's
  losses drift far off the reference. The optimizer densifies such gradients first, as the TF backend does, in
  both implementations: the axis changes the update rule only (a Keras script with an Embedding takes the sparse
  path, docs/workloads.md).

Precision: ``bf16``/``fp16`` give every layer the ``mixed_bfloat16``/``mixed_float16`` policy (float32
variables, low-precision compute), a float32 output cast for the logits, and for ``fp16`` a
``LossScaleOptimizer``. BatchNorm and LayerNorm compute in float32 (Keras's own choice, kept).

:meth:`KerasTrainer.gradients` calls ``model.stateless_call`` (training mode) under each framework's own
autodiff, so the probe changes no variable (BatchNorm state and dropout seeds included); Dropout is off in
the probe. ``evaluate``/``logits`` use Keras's compiled ``predict_on_batch``; the test loss and accuracy are
computed from those logits in float64 numpy.

keras and the frameworks are imported in :meth:`KerasBackend.setup` / :meth:`KerasBackend.build` only.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
from functools import cache
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..data import Dataset
from ..results import FrameworkSettings
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from . import display_name, jax_backend, tf_backend, torch_backend
from .base import PRECISIONS, Backend, LayerBuilder, Trainer, check_build, check_optimizer, env_flags
from .common import HeldRate, conv_padding, keras_difference, keras_optimizer, pool_window

_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _import_keras(backend: str):
    """keras with ``backend``; a process whose keras already runs another backend cannot switch."""
    loaded = sys.modules.get("keras")
    if loaded is not None:
        current = loaded.backend.backend()
        if current != backend:
            raise RuntimeError(f"keras is already imported with the {current!r} backend in this process; "
                               f"keras-{backend} needs a fresh process (KERAS_BACKEND is read once, at import)")
        return loaded
    os.environ["KERAS_BACKEND"] = backend
    import keras

    if keras.backend.backend() != backend:  # only if keras ignored the variable
        raise RuntimeError(f"keras started with the {keras.backend.backend()!r} backend, not {backend!r}")
    return keras


@cache
def _custom(keras):
    """The Keras classes the spec needs beyond core Keras (defined on first use: keras is imported lazily):
    layers, the exact GELU, and the spec's optimizers (keras-torch: their ``torch._foreach`` forms)."""
    optimizers = _torch_foreach_optimizers() if keras.backend.backend() == "torch" else _spec_optimizers(keras)
    return {**_custom_layers(keras), **optimizers}


def _custom_layers(keras):
    """``BatchNorm`` and ``PositionalEmbedding`` layers and the exact ``gelu``."""
    ops = keras.ops

    class SpecBatchNorm(keras.layers.BatchNormalization):
        """Keras BatchNormalization whose moving variance takes the *unbiased* batch variance (the spec's,
        PyTorch's estimator); normalisation uses the biased one, as Keras and the spec do."""

        def call(self, inputs, training=None, mask=None):
            if not training:
                return super().call(inputs, training=False)
            x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))  # float32, as Keras does
            mean, var = ops.moments(x, axes=self._reduction_axes)
            count = 1
            for a in self._reduction_axes:  # the batch axis may be dynamic (TF graphs)
                count = count * ops.shape(x)[a]
            count = ops.cast(count, x.dtype)
            mo = self.momentum
            self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * mo + mean * (1.0 - mo))
            self.moving_variance.assign(ops.cast(self.moving_variance, x.dtype) * mo
                                        + var * (count / (count - 1.0)) * (1.0 - mo))
            y = ops.batch_normalization(x, mean, var, axis=self.axis, offset=ops.cast(self.beta, x.dtype),
                                        scale=ops.cast(self.gamma, x.dtype), epsilon=self.epsilon)
            return ops.cast(y, self.compute_dtype)

    class SpecPositionalEmbedding(keras.layers.Layer):
        """``x + embeddings[:T]`` on (B, T, D), a learned (max_len, D) table."""

        def __init__(self, max_len: int, **kwargs):
            super().__init__(**kwargs)
            self.max_len = max_len

        def build(self, input_shape):
            self.embeddings = self.add_weight(shape=(self.max_len, input_shape[-1]), initializer="zeros",
                                              name="embeddings")

        def call(self, x):
            return x + ops.cast(self.embeddings[:x.shape[1]], x.dtype)

        def compute_output_shape(self, input_shape):
            return input_shape

    def gelu_exact(x):
        return keras.activations.gelu(x, approximate=False)

    return {"BatchNorm": SpecBatchNorm, "PositionalEmbedding": SpecPositionalEmbedding, "gelu": gelu_exact}


def _spec_optimizers(keras):
    """Keras's optimizer classes with ``update_step`` in the spec's form (module docstring)."""
    ops = keras.ops

    class SpecSGD(keras.optimizers.SGD):
        """SGD momentum in the spec's (PyTorch) form ``v = mu v + g; p -= lr (g + mu v if nesterov else v)``."""

        def update_step(self, gradient, variable, learning_rate):
            lr, g = ops.cast(learning_rate, variable.dtype), ops.cast(gradient, variable.dtype)
            v = self.momentums[self._get_variable_index(variable)]
            self.assign(v, ops.add(ops.multiply(v, self.momentum), g))
            step = ops.add(g, ops.multiply(v, self.momentum)) if self.nesterov else v
            self.assign_sub(variable, ops.multiply(step, lr))

    class SpecRMSprop(keras.optimizers.RMSprop):
        """RMSprop with epsilon outside the square root (the spec's), from a zero accumulator."""

        def update_step(self, gradient, variable, learning_rate):
            lr, g = ops.cast(learning_rate, variable.dtype), ops.cast(gradient, variable.dtype)
            v = self._velocities[self._get_variable_index(variable)]
            self.assign(v, ops.add(ops.multiply(v, self.rho), ops.multiply(ops.square(g), 1.0 - self.rho)))
            self.assign_sub(variable, ops.divide(ops.multiply(g, lr), ops.add(ops.sqrt(v), self.epsilon)))

    def adam_update_step(self, gradient, variable, learning_rate):
        """The spec's Adam: ``p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``; ``1 - b^t`` as
        ``-expm1(t log b)`` (no float32 cancellation for b near 1, as the JAX backend)."""
        lr, g = ops.cast(learning_rate, variable.dtype), ops.cast(gradient, variable.dtype)
        t = ops.cast(self.iterations + 1, variable.dtype)
        bc1 = -ops.expm1(t * math.log(self.beta_1))
        bc2 = -ops.expm1(t * math.log(self.beta_2))
        i = self._get_variable_index(variable)
        m, v = self._momentums[i], self._velocities[i]
        self.assign(m, ops.add(ops.multiply(m, self.beta_1), ops.multiply(g, 1.0 - self.beta_1)))
        self.assign(v, ops.add(ops.multiply(v, self.beta_2), ops.multiply(ops.square(g), 1.0 - self.beta_2)))
        step = ops.divide(ops.divide(m, bc1), ops.add(ops.sqrt(ops.divide(v, bc2)), self.epsilon))
        self.assign_sub(variable, ops.multiply(step, lr))

    SpecAdam = type("SpecAdam", (keras.optimizers.Adam,), {"update_step": adam_update_step,
                                                          "__doc__": "Adam, epsilon outside sqrt(v-hat)."})
    SpecAdamW = type("SpecAdamW", (keras.optimizers.AdamW,), {"update_step": adam_update_step,
                                                             "__doc__": "AdamW (Keras's decoupled decay "
                                                                        "first), epsilon outside sqrt(v-hat)."})

    return {"SGD": SpecSGD, "RMSprop": SpecRMSprop, "Adam": SpecAdam, "AdamW": SpecAdamW}


def _torch_foreach_optimizers():
    """The spec optimizers on keras-torch as Keras's own torch optimizers are written: subclasses of its
    (private) ``torch_*`` classes with one ``torch._foreach_*`` update over all variables. A subclass of the
    public class would fall back to Keras's slower per-variable loop (figures in docs/measurement.md)."""
    import torch
    from keras import ops
    from keras.src.backend.torch.optimizers import torch_adam, torch_adamw, torch_rmsprop, torch_sgd

    def slots(opt, name, variables):
        return [getattr(opt, name)[opt._get_variable_index(v)].value for v in variables]

    def sgd_update(self, grads, variables, learning_rate):
        params, lr = [v.value for v in variables], ops.cast(learning_rate, grads[0].dtype)
        if not self.momentum:
            torch._foreach_add_(params, torch._foreach_mul(grads, lr), alpha=-1.0)
            return
        v = slots(self, "momentums", variables)
        torch._foreach_mul_(v, self.momentum)
        torch._foreach_add_(v, grads)  # v = mu v + g
        step = torch._foreach_add(grads, v, alpha=self.momentum) if self.nesterov else v
        torch._foreach_add_(params, torch._foreach_mul(step, lr), alpha=-1.0)

    def rmsprop_update(self, grads, variables, learning_rate):
        params, lr = [v.value for v in variables], ops.cast(learning_rate, grads[0].dtype)
        v = slots(self, "_velocities", variables)
        torch._foreach_mul_(v, self.rho)
        torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=1.0 - self.rho)
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, self.epsilon)  # outside the root
        step = torch._foreach_mul(grads, lr)
        torch._foreach_div_(step, denom)
        torch._foreach_add_(params, step, alpha=-1.0)

    def adam_update(self, grads, variables, learning_rate):
        params, dtype = [v.value for v in variables], grads[0].dtype
        t = (self.iterations.value + 1).to(dtype)
        bc1, bc2 = -torch.expm1(t * math.log(self.beta_1)), -torch.expm1(t * math.log(self.beta_2))
        m, v = slots(self, "_momentums", variables), slots(self, "_velocities", variables)
        torch._foreach_mul_(m, self.beta_1)
        torch._foreach_add_(m, grads, alpha=1.0 - self.beta_1)
        torch._foreach_mul_(v, self.beta_2)
        torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=1.0 - self.beta_2)
        denom = torch._foreach_div(v, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.epsilon)  # outside sqrt(v-hat)
        step = torch._foreach_mul(m, ops.cast(learning_rate, dtype) / bc1)
        torch._foreach_div_(step, denom)
        torch._foreach_add_(params, step, alpha=-1.0)

    def make(name, base, update):
        return type(name, (base,), {"_parallel_update_step": update})

    return {"SGD": make("SpecSGD", torch_sgd.SGD, sgd_update),
            "RMSprop": make("SpecRMSprop", torch_rmsprop.RMSprop, rmsprop_update),
            "Adam": make("SpecAdam", torch_adam.Adam, adam_update),
            "AdamW": make("SpecAdamW", torch_adamw.AdamW, adam_update)}


@cache
def _dense_gradients(cls):
    """``cls`` taking dense gradients on TensorFlow: an Embedding's gradient is a ``tf.IndexedSlices`` there,
    and Keras's sparse-aware ops would square (Adam, RMSprop, the clipping norm) each occurrence of a token
    instead of the summed row: not the spec's dense update."""
    import tensorflow as tf

    def apply(self, grads, trainable_variables=None):
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return cls.apply(self, grads, trainable_variables)

    return type(cls.__name__, (cls,), {"apply": apply})


class _Slot:
    """A Keras variable that holds one canonical parameter, with the reshape between the two layouts."""

    def __init__(self, var, canonical_shape: tuple[int, ...]):
        self.var, self.shape = var, tuple(canonical_shape)

    def load(self, value: np.ndarray) -> None:
        self.var.assign(np.asarray(value, np.float32).reshape(tuple(self.var.shape)))  # reshapes are exact

    def canonical(self, value) -> np.ndarray:
        return np.array(value, dtype=np.float32).reshape(self.shape)  # a copy


def _keras_name(name: str) -> str:
    return name.replace("/", "__")  # Keras names cannot contain "/", torch parameter names no "."


class _Builder(LayerBuilder):
    """Calls Keras layers on symbolic tensors along the neutral layer sequence, recording every slot."""

    display = "Keras"

    def __init__(self, keras, policy: str, seed: int, shapes: dict[str, tuple[int, ...]]):
        self.keras, self.policy, self.seed, self.shapes = keras, keras.DTypePolicy(policy), seed, shapes
        self.custom = _custom(keras)
        self.slots: dict[str, _Slot] = {}
        self._dropouts = 0

    def _slot(self, name: str, var) -> None:
        self.slots[name] = _Slot(var, self.shapes[name])

    def sequence(self, layers, x):
        for layer in layers:
            x = self.build(layer, x)
        return x

    def _named(self, layer) -> dict[str, Any]:
        """Keyword arguments of a Keras layer with weights: its name and the dtype policy. Its initialisers are
        zeros: the neutral weights overwrite them, and random ones cost an XLA compile each on JAX."""
        return {"name": _keras_name(layer.name), "dtype": self.policy}

    # ---- one method per spec layer kind: (layer, symbolic input) -> symbolic output ----

    def dense(self, layer: Dense, x):
        k = self.keras.layers.Dense(layer.units, kernel_initializer="zeros", **self._named(layer))
        y = k(x)
        self._slot(f"{layer.name}/kernel", k.kernel), self._slot(f"{layer.name}/bias", k.bias)
        return y

    def conv2d(self, layer: Conv2D, x):
        L, ks, s, p = self.keras.layers, layer.kernel_size, layer.stride, layer.pad
        padding = conv_padding(ks, s, p)
        if padding is None:  # Keras's "same" pads asymmetrically at stride > 1: pad the spec's pixels first
            x, padding = L.ZeroPadding2D(p, data_format="channels_last", dtype=self.policy)(x), "valid"
        k = L.Conv2D(layer.filters, ks, strides=s, padding=padding, data_format="channels_last",
                     kernel_initializer="zeros", **self._named(layer))
        y = k(x)
        self._slot(f"{layer.name}/kernel", k.kernel), self._slot(f"{layer.name}/bias", k.bias)
        return y

    def maxpool2d(self, layer: MaxPool2D, x):
        return self._pool(self.keras.layers.MaxPooling2D, layer, x)

    def avgpool2d(self, layer: AvgPool2D, x):
        return self._pool(self.keras.layers.AveragePooling2D, layer, x)

    def _pool(self, cls, layer, x):
        k, s = pool_window(layer)
        return cls(k, strides=s, padding="valid", data_format="channels_last", dtype=self.policy)(x)

    def global_avg_pool(self, layer: GlobalAvgPool, x):
        L = self.keras.layers
        pool = {3: L.GlobalAveragePooling1D, 4: L.GlobalAveragePooling2D, 5: L.GlobalAveragePooling3D}
        if len(x.shape) not in pool:
            raise NotImplementedError(f"Keras backend has no global_avg_pool over {len(x.shape) - 2} axes")
        return pool[len(x.shape)](data_format="channels_last", dtype=self.policy)(x)

    def flatten(self, layer: Flatten, x):  # channels-last: the canonical order
        return self.keras.layers.Flatten(data_format="channels_last", dtype=self.policy)(x)

    def reshape(self, layer: Reshape, x):
        return self.keras.layers.Reshape(tuple(layer.shape), dtype=self.policy)(x)

    def relu(self, layer: ReLU, x):
        return self.keras.layers.ReLU(dtype=self.policy)(x)

    def gelu(self, layer: GELU, x):
        return self.keras.layers.Activation(self.custom["gelu"], dtype=self.policy)(x)

    def tanh(self, layer: Tanh, x):
        return self.keras.layers.Activation("tanh", dtype=self.policy)(x)

    def dropout(self, layer: Dropout, x):
        if layer.rate <= 0:
            return x
        self._dropouts += 1
        return self.keras.layers.Dropout(layer.rate, seed=self.seed + self._dropouts, dtype=self.policy)(x)

    def batchnorm(self, layer: BatchNorm, x):
        bn = self.custom["BatchNorm"](momentum=layer.momentum, epsilon=layer.epsilon, **self._named(layer))
        y = bn(x)
        for p, v in (("gamma", bn.gamma), ("beta", bn.beta), ("moving_mean", bn.moving_mean),
                     ("moving_var", bn.moving_variance)):
            self._slot(f"{layer.name}/{p}", v)
        return y

    def layernorm(self, layer: LayerNorm, x):
        ln = self.keras.layers.LayerNormalization(axis=-1, epsilon=layer.epsilon, **self._named(layer))
        y = ln(x)
        self._slot(f"{layer.name}/gamma", ln.gamma), self._slot(f"{layer.name}/beta", ln.beta)
        return y

    def embedding(self, layer: Embedding, x):
        e = self.keras.layers.Embedding(layer.vocab, layer.dim, embeddings_initializer="zeros", **self._named(layer))
        y = e(x)
        self._slot(f"{layer.name}/embeddings", e.embeddings)
        return y

    def positional_embedding(self, layer: PositionalEmbedding, x):
        e = self.custom["PositionalEmbedding"](layer.max_len, **self._named(layer))
        y = e(x)
        self._slot(f"{layer.name}/embeddings", e.embeddings)
        return y

    def lstm(self, layer: LSTM, x):
        lstm = self.keras.layers.LSTM(layer.units, return_sequences=layer.return_sequences, kernel_initializer="zeros",
                                      recurrent_initializer="zeros", **self._named(layer))
        y = lstm(x)
        for p in ("kernel", "recurrent_kernel", "bias"):
            self._slot(f"{layer.name}/{p}", getattr(lstm.cell, p))
        return y

    def attention(self, layer: MultiHeadSelfAttention, x):
        d = x.shape[-1]
        mha = self.keras.layers.MultiHeadAttention(layer.num_heads, d // layer.num_heads, use_bias=True,
                                                   kernel_initializer="zeros", **self._named(layer))
        y = mha(x, x, use_causal_mask=layer.causal)
        for p, dense in (("query", mha._query_dense), ("key", mha._key_dense), ("value", mha._value_dense),
                         ("output", mha._output_dense)):  # EinsumDense sublayers: no public accessor
            self._slot(f"{layer.name}/{p}/kernel", dense.kernel), self._slot(f"{layer.name}/{p}/bias", dense.bias)
        return y

    def residual(self, layer: Residual, x):
        block, shortcut = self.sequence(layer.block, x), self.sequence(layer.shortcut, x)
        return self.keras.layers.Add(dtype=self.policy)([block, shortcut])


def _optimizer(keras, backend: str, workload: Workload, precision: str, implementation: str = "neutral"):
    """The optimizer for the spec, loss-scaled for fp16: Keras's own classes (``library``) or the spec's forms
    (``neutral``, see the module docstring); on TensorFlow both take dense gradients."""
    o, s = workload.optimizer, workload.schedule
    check_optimizer("Keras", o.kind)
    names = ("SGD", "Adam", "AdamW", "RMSprop")
    if implementation == "library":
        classes = {n: getattr(keras.optimizers, n) for n in names}
    else:  # Keras's SGD is the spec's while the rate is constant
        classes = {n: _custom(keras)[n] for n in names}
        if (s.kind == "constant" and not s.warmup_steps) or not o.momentum:
            classes["SGD"] = keras.optimizers.SGD
    if backend == "tensorflow":
        classes = {n: _dense_gradients(c) for n, c in classes.items()}
    opt = keras_optimizer(SimpleNamespace(**classes), o)
    return keras.optimizers.LossScaleOptimizer(opt) if precision == "fp16" else opt


def _softmax_xent(logits: np.ndarray, y: np.ndarray) -> float:
    z = np.asarray(logits, np.float64).reshape(-1, logits.shape[-1])
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(z)), np.asarray(y).reshape(-1)].mean())


def keras_model(keras, workload: Workload, params: dict[str, np.ndarray], precision: str = "fp32"):
    """The workload as a functional ``keras.Model`` holding ``params``, and its slots (canonical name ->
    :class:`_Slot`); also the inference-only model of ``isobench deploy``."""
    builder = _Builder(keras, _POLICY[precision], workload.seed, {**workload.param_shapes(), **workload.state_shapes()})
    inputs = keras.Input(workload.input_shape, dtype=workload.input_dtype)
    out = builder.sequence(workload.layers, inputs)
    if precision != "fp32":  # float32 logits for the loss
        out = keras.layers.Activation("linear", dtype="float32", name="logits")(out)
    model = keras.Model(inputs, out, name=_keras_name(workload.name))
    missing = set(params) ^ set(builder.slots)
    if missing:
        raise RuntimeError(f"Keras model and workload parameters differ: {sorted(missing)}")
    for name, slot in builder.slots.items():
        slot.load(params[name])
    return model, builder.slots


class KerasTrainer(Trainer):
    """A compiled functional ``keras.Model``; data as framework tensors; one ``train_on_batch`` per step."""

    def __init__(self, keras, backend: str, workload: Workload, params: dict[str, np.ndarray], data: Dataset,
                 precision: str, device: str, optimizer: str = "neutral"):
        self._keras, self._backend, self._device = keras, backend, device
        self.model, self._slots = keras_model(keras, workload, params, precision)
        self._trainable = {id(s.var): n for n, s in self._slots.items() if s.var.trainable}

        self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._opt = _optimizer(keras, backend, workload, precision, optimizer)
        self.model.compile(optimizer=self._opt, loss=self._loss, jit_compile="auto")
        self.jit_compile = bool(self.model.jit_compile)  # what "auto" resolved to

        # numpy batches, as model.fit feeds in-memory arrays: measured faster on the CPU than gathering from
        # framework tensors with keras.ops.take (TensorFlow: 2.0 against 4.4 ms per seed-mlp step; torch and
        # JAX about even)
        self.x_train, self.y_train = np.asarray(data.x_train), np.asarray(data.y_train)
        self.x_test, self.y_test = np.asarray(data.x_test), np.asarray(data.y_test)
        self._x_dtype = np.int32 if workload.input_dtype == "int32" else np.float32
        # one variable assignment, only when the schedule moves the rate
        self._rate = HeldRate(workload.optimizer.learning_rate, self._write_lr, workload.optimizer.learning_rate)
        if device != "cpu":
            _reset_peak(backend)  # device_peak_bytes() counts from here, the model and data resident

    # ---- Trainer contract ----

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        self._rate.set(lr)
        loss = self.model.train_on_batch(self.x_train[idx], self.y_train[idx])
        return float(loss)  # Keras returns a host value: synchronised

    def _write_lr(self, lr: float) -> None:
        self._opt.learning_rate = lr

    def evaluate(self) -> tuple[float, float]:
        logits = np.asarray(self.model.predict_on_batch(self.x_test))
        return _softmax_xent(logits, self.y_test), float(np.mean(logits.argmax(axis=-1) == self.y_test))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(np.asarray(x, dtype=self._x_dtype)), dtype=np.float32)

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        ops, model = self._keras.ops, self.model
        x, y = ops.convert_to_tensor(self.x_train[idx]), ops.convert_to_tensor(self.y_train[idx])
        scale = float(ops.convert_to_numpy(self._opt.scale_loss(1.0)))  # the fp16 loss scale, else 1
        tv, ntv = model.trainable_variables, [v.value for v in model.non_trainable_variables]

        def loss(values):  # stateless: BatchNorm statistics and seeds come back as new values, discarded
            logits, _ = model.stateless_call(values, ntv, x, training=True)
            return self._loss(y, logits) * scale

        dropouts = [d for d in model.layers if isinstance(d, self._keras.layers.Dropout)]
        rates = [d.rate for d in dropouts]
        for d in dropouts:  # the probe runs without dropout, as in parity checks
            d.rate = 0.0
        try:
            grads = _GRAD[self._backend](loss, [v.value for v in tv])
        finally:
            for d, r in zip(dropouts, rates):
                d.rate = r
        out = {}
        for v, g in zip(tv, grads):
            name = self._trainable[id(v)]
            out[name] = self._slots[name].canonical(g if scale == 1.0 else np.asarray(g, np.float64) / scale)
        return out

    def params(self) -> dict[str, np.ndarray]:
        ops = self._keras.ops
        return {n: s.canonical(ops.convert_to_numpy(s.var.value)) for n, s in self._slots.items()}

    def device_peak_bytes(self) -> int | None:
        return None if self._device == "cpu" else _device_peak(self._backend)


def _grad_jax(loss, values):
    import jax

    return [np.asarray(g) for g in jax.jit(jax.grad(loss))(values)]  # one compile, not one per operation


def _grad_tensorflow(loss, values):
    import tensorflow as tf

    values = [tf.convert_to_tensor(v) for v in values]
    with tf.GradientTape() as tape:
        tape.watch(values)
        value = loss(values)
    return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(value, values)]  # embeddings: IndexedSlices


def _grad_torch(loss, values):
    import torch

    return [g.detach().cpu().numpy() for g in torch.autograd.grad(loss(values), values)]


_GRAD = {"jax": _grad_jax, "tensorflow": _grad_tensorflow, "torch": _grad_torch}


def _reset_peak(backend: str) -> None:
    """Start the GPU allocator's peak now, as the plain backend does at the end of its build (JAX keeps no
    resettable peak: since process start, in both)."""
    if backend == "torch":
        import torch

        torch_backend.reset_cuda_peak(torch.cuda)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf_backend.reset_gpu_peak(tf)


def _device_peak(backend: str) -> int | None:
    """The GPU allocator's peak since :func:`_reset_peak`, read as the plain backend reads it (synchronised)."""
    if backend == "torch":
        import torch

        return torch_backend.cuda_peak_bytes(torch.cuda)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf_backend.gpu_peak_bytes(tf)
    import jax

    return jax_backend.peak_bytes(jax.devices()[0])


# ---- per-framework set-up before keras is imported: the plain backend's, and what only Keras needs ----

def _setup_torch(threads: int, device: str) -> FrameworkSettings:
    os.environ["KERAS_TORCH_DEVICE"] = device  # keras-torch would otherwise take any visible GPU
    return torch_backend.setup_torch(threads, device)


def _setup_jax(threads: int, device: str) -> FrameworkSettings:
    if device == "cpu":
        import jax

        jax.config.update("jax_platforms", "cpu")  # before the first use initialises the backends
    return jax_backend.setup_jax(threads, device)


_SETUP = {"torch": _setup_torch, "tensorflow": tf_backend.setup_tensorflow, "jax": _setup_jax}


class KerasBackend(Backend):
    """Keras 3 on one framework (``keras_backend``); mode ``fit``: Keras's compiled training step."""

    keras_backend: str  # "torch" | "tensorflow" | "jax", the value of KERAS_BACKEND
    distribution = "keras"
    import_name = "keras"
    modes = ("fit",)
    precisions = PRECISIONS  # not tf32

    def library_difference(self, workload: Workload) -> str | None:
        return keras_difference(workload)

    @property
    def requires(self) -> tuple[str, str]:
        """Modules that must all be importable (``import_name`` alone misses the framework under keras)."""
        return ("keras", self.keras_backend)

    def setup(self, threads: int, device: str = "cpu") -> FrameworkSettings:
        """The framework's own set-up (its settings read back), then keras: ``version`` is Keras's, the framework's
        a companion, and ``xla["jit_compile"]`` what ``jit_compile="auto"`` resolves to (``build`` replaces it by
        the model's own resolution)."""
        if sys.modules.get("keras") is not None:
            _import_keras(self.keras_backend)  # fails early if keras already runs another backend
        else:  # before the framework: importing tensorflow imports keras
            os.environ["KERAS_BACKEND"] = self.keras_backend
        importlib.import_module(self.keras_backend)  # ImportError: the framework is missing
        fw = _SETUP[self.keras_backend](threads, device)
        keras = _import_keras(self.keras_backend)
        probe = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        probe.compile(optimizer="sgd", loss="mse", jit_compile="auto")  # Keras's own resolution of "auto"
        self.settings = dataclasses.replace(
            fw, version=keras.__version__, xla={**(fw.xla or {}), "jit_compile": bool(probe.jit_compile)},
            companions={self.keras_backend: fw.version, **fw.companions}, env={**fw.env, **env_flags("KERAS_BACKEND")},
            extra={"keras_backend": keras.backend.backend(), **fw.extra})
        return self.settings

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
              precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral") -> Trainer:
        check_build(self, workload, mode, precision, device, optimizer)
        trainer = KerasTrainer(_import_keras(self.keras_backend), self.keras_backend, workload, params, data,
                               precision, device, optimizer)
        if self.settings is not None:  # the record the worker stores after training
            self.settings.xla["jit_compile"] = trainer.jit_compile  # "auto" as resolved for this model
        return trainer

    def inference_model(self, workload: Workload, params: dict[str, np.ndarray]):
        """The functional ``keras.Model`` of training (:func:`keras_model`, float32 policy) holding ``params``;
        ``predict_on_batch`` runs it in inference mode. Keras must run this backend's framework in this process
        (:meth:`setup` first, in a process of its own)."""
        return keras_model(_import_keras(self.keras_backend), workload, params)[0]


class KerasTorchBackend(KerasBackend):
    name, display, keras_backend = "keras-torch", display_name("keras-torch"), "torch"
    install_hint = "pip install 'isobench[all]'  (keras ships with tensorflow-cpu==2.21.0; torch==2.13.0)"


class KerasTensorFlowBackend(KerasBackend):
    name, display, keras_backend = "keras-tensorflow", display_name("keras-tensorflow"), "tensorflow"
    install_hint = "pip install 'isobench[tensorflow]'  (keras ships with tensorflow-cpu==2.21.0)"


class KerasJaxBackend(KerasBackend):
    name, display, keras_backend = "keras-jax", display_name("keras-jax"), "jax"
    install_hint = "pip install 'isobench[all]'  (keras ships with tensorflow-cpu==2.21.0; jax[cpu]==0.10.2)"
