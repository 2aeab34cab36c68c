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

Optimizers (update rules written out in ``backends/reference.py``). Keras's own optimizer classes, with
``update_step`` overridden where Keras writes a different rule than the spec (on keras-torch the override is
the ``torch._foreach`` update of Keras's torch optimizers, as fast as Keras's own):

- Adam/AdamW: Keras folds the bias corrections into the step size, ``lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) +
  eps)``, which puts epsilon on ``sqrt(v)``, not on ``sqrt(v-hat)``: an effective epsilon of ``eps sqrt(1-b2^t)``
  (3% of eps at step 1). Parameters whose gradients are near eps (the LSTM input weights of digits' nearly
  blank first pixel column) then step up to twice as far: with Keras's Adam lstm-digits' first 20 losses
  differ by 1.7e-4 and vit-digits' by 7.6e-5 (tolerance 1e-5). The subclasses put epsilon outside
  ``sqrt(v-hat)`` (bias corrections as ``-expm1(t log b)``, as the JAX backend); AdamW keeps Keras's decoupled
  decay of every variable by ``lr wd`` before the step, the spec's.
- RMSprop: Keras puts epsilon inside the square root; the subclass puts it outside.
- SGD: Keras's momentum form ``m = mu m - lr g; p += m`` equals the spec's ``v = mu v + g; p -= lr v`` while
  the rate is constant, so Keras's SGD runs unchanged then; under a schedule the subclass runs the spec's form.
- Clipping: Keras's ``global_clipnorm`` scales by ``min(1, clip/norm)``, the spec by ``min(1, clip/(norm +
  1e-6))``: a relative difference below ``1e-6/clip`` when clipping is active, under float32 rounding for
  clip 1.0 (vit-digits).
- On TensorFlow an Embedding's gradient is a ``tf.IndexedSlices`` and Keras's sparse-aware ops square each
  occurrence of a token instead of the summed row (Adam's ``v``, RMSprop, the clipping norm): gpt-tiny's
  losses drifted by 7e-2 in 20 steps. The optimizer densifies such gradients first, as the TF backend does.

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

import importlib
import math
import os
import sys
from functools import cache
from typing import Any

import numpy as np

from ..data import Dataset
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from .base import PRECISIONS, Backend, Trainer, check_build, env_flags

_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_DISPLAY = {"torch": "Keras (PyTorch)", "tensorflow": "Keras (TensorFlow)", "jax": "Keras (JAX)"}


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
    """The Keras classes the spec needs beyond core Keras (defined on first use: keras is imported lazily)."""
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

    def gelu_exact(x):
        return keras.activations.gelu(x, approximate=False)

    optimizers = {"SGD": SpecSGD, "RMSprop": SpecRMSprop, "Adam": SpecAdam, "AdamW": SpecAdamW}
    if keras.backend.backend() == "torch":
        optimizers = _torch_foreach_optimizers()
    return {"BatchNorm": SpecBatchNorm, "PositionalEmbedding": SpecPositionalEmbedding, "gelu": gelu_exact,
            **optimizers}


def _torch_foreach_optimizers():
    """The spec optimizers on keras-torch as Keras's own torch optimizers are written: subclasses of its
    (private) ``torch_*`` classes with one ``torch._foreach_*`` update over all variables. A subclass of the
    public class would fall back to Keras's per-variable loop: measured 35 ms against 22 ms per gpt-tiny step."""
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


class _Builder:
    """Calls Keras layers on symbolic tensors along the neutral layer sequence, recording every slot."""

    def __init__(self, keras, policy: str, seed: int, shapes: dict[str, tuple[int, ...]]):
        self.keras, self.policy, self.seed, self.shapes = keras, keras.DTypePolicy(policy), seed, shapes
        self.custom = _custom(keras)
        self.slots: dict[str, _Slot] = {}
        self._dropouts = 0

    def _slot(self, name: str, var) -> None:
        self.slots[name] = _Slot(var, self.shapes[name])

    def sequence(self, layers, x):
        for layer in layers:
            x = self.layer(layer, x)
        return x

    def layer(self, layer, x):  # noqa: C901 - one branch per layer kind
        # zeros initialisers: the neutral weights overwrite them, and random ones cost an XLA compile each on JAX
        L, dt, zeros = self.keras.layers, {"dtype": self.policy}, {"kernel_initializer": "zeros"}
        if isinstance(layer, Dense):
            k = L.Dense(layer.units, name=_keras_name(layer.name), **zeros, **dt)
            y = k(x)
            self._slot(f"{layer.name}/kernel", k.kernel), self._slot(f"{layer.name}/bias", k.bias)
            return y
        if isinstance(layer, Conv2D):
            ks, s, p = layer.kernel_size, layer.stride, layer.pad
            padding = "valid" if p == 0 else "same" if s == 1 and 2 * p == ks - 1 else None
            if padding is None:  # Keras's "same" pads asymmetrically at stride > 1: pad the spec's pixels first
                x, padding = L.ZeroPadding2D(p, data_format="channels_last", **dt)(x), "valid"
            k = L.Conv2D(layer.filters, ks, strides=s, padding=padding, data_format="channels_last",
                         name=_keras_name(layer.name), **zeros, **dt)
            y = k(x)
            self._slot(f"{layer.name}/kernel", k.kernel), self._slot(f"{layer.name}/bias", k.bias)
            return y
        if isinstance(layer, (MaxPool2D, AvgPool2D)):
            pool = L.MaxPooling2D if isinstance(layer, MaxPool2D) else L.AveragePooling2D
            return pool(layer.pool, strides=layer.stride or layer.pool, padding="valid",
                        data_format="channels_last", **dt)(x)
        if isinstance(layer, GlobalAvgPool):
            pool = {3: L.GlobalAveragePooling1D, 4: L.GlobalAveragePooling2D, 5: L.GlobalAveragePooling3D}
            if len(x.shape) not in pool:
                raise NotImplementedError(f"Keras backend has no global_avg_pool over {len(x.shape) - 2} axes")
            return pool[len(x.shape)](data_format="channels_last", **dt)(x)
        if isinstance(layer, Flatten):  # channels-last: the canonical order
            return L.Flatten(data_format="channels_last", **dt)(x)
        if isinstance(layer, Reshape):
            return L.Reshape(tuple(layer.shape), **dt)(x)
        if isinstance(layer, ReLU):
            return L.ReLU(**dt)(x)
        if isinstance(layer, GELU):
            return L.Activation(self.custom["gelu"], **dt)(x)
        if isinstance(layer, Tanh):
            return L.Activation("tanh", **dt)(x)
        if isinstance(layer, Dropout):
            if layer.rate <= 0:
                return x
            self._dropouts += 1
            return L.Dropout(layer.rate, seed=self.seed + self._dropouts, **dt)(x)
        if isinstance(layer, BatchNorm):
            bn = self.custom["BatchNorm"](momentum=layer.momentum, epsilon=layer.epsilon,
                                          name=_keras_name(layer.name), **dt)
            y = bn(x)
            for p, v in (("gamma", bn.gamma), ("beta", bn.beta), ("moving_mean", bn.moving_mean),
                         ("moving_var", bn.moving_variance)):
                self._slot(f"{layer.name}/{p}", v)
            return y
        if isinstance(layer, LayerNorm):
            ln = L.LayerNormalization(axis=-1, epsilon=layer.epsilon, name=_keras_name(layer.name), **dt)
            y = ln(x)
            self._slot(f"{layer.name}/gamma", ln.gamma), self._slot(f"{layer.name}/beta", ln.beta)
            return y
        if isinstance(layer, Embedding):
            e = L.Embedding(layer.vocab, layer.dim, embeddings_initializer="zeros", name=_keras_name(layer.name), **dt)
            y = e(x)
            self._slot(f"{layer.name}/embeddings", e.embeddings)
            return y
        if isinstance(layer, PositionalEmbedding):
            e = self.custom["PositionalEmbedding"](layer.max_len, name=_keras_name(layer.name), **dt)
            y = e(x)
            self._slot(f"{layer.name}/embeddings", e.embeddings)
            return y
        if isinstance(layer, LSTM):
            lstm = L.LSTM(layer.units, return_sequences=layer.return_sequences, recurrent_initializer="zeros",
                          name=_keras_name(layer.name), **zeros, **dt)
            y = lstm(x)
            for p in ("kernel", "recurrent_kernel", "bias"):
                self._slot(f"{layer.name}/{p}", getattr(lstm.cell, p))
            return y
        if isinstance(layer, MultiHeadSelfAttention):
            d = x.shape[-1]
            mha = L.MultiHeadAttention(layer.num_heads, d // layer.num_heads, use_bias=True,
                                       name=_keras_name(layer.name), **zeros, **dt)
            y = mha(x, x, use_causal_mask=layer.causal)
            for p, dense in (("query", mha._query_dense), ("key", mha._key_dense), ("value", mha._value_dense),
                             ("output", mha._output_dense)):  # EinsumDense sublayers: no public accessor
                self._slot(f"{layer.name}/{p}/kernel", dense.kernel), self._slot(f"{layer.name}/{p}/bias", dense.bias)
            return y
        if isinstance(layer, Residual):
            return L.Add(**dt)([self.sequence(layer.block, x), self.sequence(layer.shortcut, x)])
        raise NotImplementedError(f"Keras backend has no layer {getattr(layer, 'kind', layer)!r}")


def _optimizer(keras, backend: str, workload: Workload, precision: str):
    """The optimizer for the spec (see the module docstring for the forms), loss-scaled for fp16."""
    o, s, custom = workload.optimizer, workload.schedule, _custom(keras)
    kwargs = {} if o.clip_norm is None else {"global_clipnorm": o.clip_norm}
    if o.kind == "sgd":
        constant_lr = s.kind == "constant" and not s.warmup_steps
        cls = keras.optimizers.SGD if constant_lr or not o.momentum else custom["SGD"]
        kwargs.update(momentum=o.momentum, nesterov=o.nesterov)
    elif o.kind in ("adam", "adamw"):
        cls = custom["AdamW" if o.kind == "adamw" else "Adam"]
        kwargs.update(beta_1=o.beta1, beta_2=o.beta2, epsilon=o.epsilon)
        if o.kind == "adamw":
            kwargs["weight_decay"] = o.weight_decay
    elif o.kind == "rmsprop":
        cls = custom["RMSprop"]
        kwargs.update(rho=o.rho, epsilon=o.epsilon)
    else:
        raise NotImplementedError(f"Keras backend has no optimizer {o.kind!r}")
    if backend == "tensorflow":
        cls = _dense_gradients(cls)
    opt = cls(o.learning_rate, **kwargs)
    return keras.optimizers.LossScaleOptimizer(opt) if precision == "fp16" else opt


def _softmax_xent(logits: np.ndarray, y: np.ndarray) -> float:
    z = np.asarray(logits, np.float64).reshape(-1, logits.shape[-1])
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(z)), np.asarray(y).reshape(-1)].mean())


class KerasTrainer(Trainer):
    """A compiled functional ``keras.Model``; data as framework tensors; one ``train_on_batch`` per step."""

    def __init__(self, keras, backend: str, workload: Workload, params: dict[str, np.ndarray], data: Dataset,
                 precision: str, device: str):
        self._keras, self._backend, self._device = keras, backend, device
        builder = _Builder(keras, _POLICY[precision], workload.seed,
                           {**workload.param_shapes(), **workload.state_shapes()})
        inputs = keras.Input(workload.input_shape, dtype=workload.input_dtype)
        out = builder.sequence(workload.layers, inputs)
        if precision != "fp32":  # float32 logits for the loss
            out = keras.layers.Activation("linear", dtype="float32", name="logits")(out)
        self.model = keras.Model(inputs, out, name=_keras_name(workload.name))
        self._slots = builder.slots
        missing = set(params) ^ set(self._slots)
        if missing:
            raise RuntimeError(f"Keras model and workload parameters differ: {sorted(missing)}")
        for name, slot in self._slots.items():
            slot.load(params[name])
        self._trainable = {id(s.var): n for n, s in self._slots.items() if s.var.trainable}

        self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._opt = _optimizer(keras, backend, workload, precision)
        self.model.compile(optimizer=self._opt, loss=self._loss, jit_compile="auto")
        self.jit_compile = bool(self.model.jit_compile)  # what "auto" resolved to

        # numpy batches, as model.fit feeds in-memory arrays: measured faster on the CPU than gathering from
        # framework tensors with keras.ops.take (TensorFlow: 2.0 against 4.4 ms per seed-mlp step; torch and
        # JAX about even)
        self.x_train, self.y_train = np.asarray(data.x_train), np.asarray(data.y_train)
        self.x_test, self.y_test = np.asarray(data.x_test), np.asarray(data.y_test)
        self._x_dtype = np.int32 if workload.input_dtype == "int32" else np.float32
        self._lr = workload.optimizer.learning_rate  # the rate the optimizer variable holds

    # ---- Trainer contract ----

    def train_step(self, idx: np.ndarray, lr: float | None = None) -> float:
        if lr is not None and float(lr) != self._lr:  # one variable assignment, only when the schedule moves
            self._lr = float(lr)
            self._opt.learning_rate = self._lr
        loss = self.model.train_on_batch(self.x_train[idx], self.y_train[idx])
        return float(loss)  # Keras returns a host value: synchronised

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


def _device_peak(backend: str) -> int | None:
    """The allocator's peak on the GPU since the process started."""
    if backend == "torch":
        import torch

        return int(torch.cuda.max_memory_allocated())
    if backend == "tensorflow":
        import tensorflow as tf

        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    import jax

    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


# ---- per-framework set-up: device, threads, TF32 off, before keras is imported ----

def _setup_torch(threads: int, device: str) -> dict[str, Any]:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for keras-torch, but torch sees no GPU")
    os.environ["KERAS_TORCH_DEVICE"] = device  # keras-torch would otherwise take any visible GPU
    torch.set_num_threads(threads)
    interop_error = None
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError as e:  # only allowed before inter-op work has started
        interop_error = str(e)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return {"framework_version": torch.__version__, "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(), "inter_op_threads_error": interop_error,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "devices": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
            **env_flags("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def _setup_tensorflow(threads: int, device: str) -> dict[str, Any]:
    import tensorflow as tf

    errors = []
    try:  # both only allowed before the runtime is initialised (the first op)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:
        errors.append(str(e))
    if device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as e:
            errors.append(str(e))
    elif not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("device 'cuda' asked for keras-tensorflow, but TensorFlow sees no GPU")
    tf.config.experimental.enable_tensor_float_32_execution(False)
    return {"framework_version": tf.__version__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "settings_errors": errors or None,
            "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "devices": ", ".join(d.name for d in tf.config.list_logical_devices()),
            **env_flags("TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS", "XLA_FLAGS", "OMP_NUM_THREADS")}


def _setup_jax(threads: int, device: str) -> dict[str, Any]:
    import jax

    if device == "cpu":
        jax.config.update("jax_platforms", "cpu")  # before the first use initialises the backends
    elif jax.default_backend() != "gpu":
        raise RuntimeError("device 'cuda' asked for keras-jax, but JAX sees no GPU")
    jax.config.update("jax_default_matmul_precision", "highest")
    return {"framework_version": jax.__version__, "intra_op_threads": None,
            "threads_note": "JAX has no thread setting; the worker's CPU affinity is the limit",
            "cpu_affinity": len(os.sched_getaffinity(0)),
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "devices": ", ".join(str(d) for d in jax.devices()), **env_flags("XLA_FLAGS", "JAX_PLATFORMS")}


_SETUP = {"torch": _setup_torch, "tensorflow": _setup_tensorflow, "jax": _setup_jax}


class KerasBackend(Backend):
    """Keras 3 on one framework (``keras_backend``); mode ``fit``: Keras's compiled training step."""

    keras_backend: str  # "torch" | "tensorflow" | "jax", the value of KERAS_BACKEND
    distribution = "keras"
    import_name = "keras"
    modes = ("fit",)
    precisions = PRECISIONS

    @property
    def requires(self) -> tuple[str, str]:
        """Modules that must all be importable (``import_name`` alone misses the framework under keras)."""
        return ("keras", self.keras_backend)

    def setup(self, threads: int, device: str = "cpu") -> dict[str, Any]:
        if sys.modules.get("keras") is not None:
            _import_keras(self.keras_backend)  # fails early if keras already runs another backend
        else:  # before the framework: importing tensorflow imports keras
            os.environ["KERAS_BACKEND"] = self.keras_backend
        importlib.import_module(self.keras_backend)  # ImportError: the framework is missing
        settings = _SETUP[self.keras_backend](threads, device)
        keras = _import_keras(self.keras_backend)
        probe = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        probe.compile(optimizer="sgd", loss="mse", jit_compile="auto")  # Keras's own resolution of "auto"
        # build() adds what only the model decides to this same dict, which the worker records after training
        self._settings = {"keras_version": keras.__version__, "keras_backend": keras.backend.backend(),
                          "version": keras.__version__, "jit_compile": bool(probe.jit_compile), "tf32": False,
                          "device": device, **settings, **env_flags("KERAS_BACKEND")}
        return self._settings

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
              precision: str = "fp32", device: str = "cpu") -> Trainer:
        check_build(self, workload, mode, precision, device)
        keras, settings = _import_keras(self.keras_backend), getattr(self, "_settings", {})
        trainer = KerasTrainer(keras, self.keras_backend, workload, params, data, precision, device)
        settings["jit_compile"] = trainer.jit_compile  # "auto" as resolved for this model
        return trainer


class KerasTorchBackend(KerasBackend):
    name, display, keras_backend = "keras-torch", _DISPLAY["torch"], "torch"
    install_hint = "pip install 'isobench[all]'  (keras ships with tensorflow-cpu==2.21.0; torch==2.13.0)"


class KerasTensorFlowBackend(KerasBackend):
    name, display, keras_backend = "keras-tensorflow", _DISPLAY["tensorflow"], "tensorflow"
    install_hint = "pip install 'isobench[tensorflow]'  (keras ships with tensorflow-cpu==2.21.0)"


class KerasJaxBackend(KerasBackend):
    name, display, keras_backend = "keras-jax", _DISPLAY["jax"], "jax"
    install_hint = "pip install 'isobench[all]'  (keras ships with tensorflow-cpu==2.21.0; jax[cpu]==0.10.2)"
