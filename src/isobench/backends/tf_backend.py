"""TensorFlow backend: ``tf.Variable`` weights, raw TF ops and a ``tf.function`` training step
(GradientTape + an explicit SGD update). Keras is left to its own backend, so this one measures TensorFlow.

tensorflow is imported in :meth:`TensorFlowBackend.setup` / :meth:`TensorFlowBackend.build` only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Dataset
from ..workloads.spec import Dense, ReLU, Workload
from .base import Backend, Trainer, check_build, env_flags

# mode -> tf.function options for every step function; "eager" and "xla" come in later issues
_TF_FUNCTION = {"graph": {"jit_compile": False}}


class TensorFlowTrainer(Trainer):
    """Weights as ``tf.Variable``, data as constant tensors, train/grad/eval steps as traced graphs."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str):
        import tensorflow as tf

        self._tf = tf
        self._dense: list[tuple[str, Any, Any]] = []  # (canonical layer name, kernel, bias)
        self._layers: list = []  # callables x -> y, in order
        for layer in workload.layers:
            if isinstance(layer, Dense):  # canonical layout (in, out) is TF's layout
                k = tf.Variable(params[f"{layer.name}/kernel"], name=f"{layer.name}/kernel")
                b = tf.Variable(params[f"{layer.name}/bias"], name=f"{layer.name}/bias")
                self._dense.append((layer.name, k, b))
                self._layers.append(lambda x, k=k, b=b: tf.nn.bias_add(tf.matmul(x, k), b))
            elif isinstance(layer, ReLU):
                self._layers.append(tf.nn.relu)
            else:
                raise NotImplementedError(f"TensorFlow backend has no layer {layer.kind!r}")
        self._vars = [v for _, k, b in self._dense for v in (k, b)]
        self._lr, self._momentum = workload.optimizer.learning_rate, workload.optimizer.momentum
        # heavy-ball velocity, torch convention (v = m*v + g; p -= lr*v); none for plain SGD
        self._velocity = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._vars] \
            if self._momentum else []
        self.x_train, self.y_train = tf.constant(data.x_train), tf.constant(data.y_train)
        self.x_test, self.y_test = tf.constant(data.x_test), tf.constant(data.y_test)
        self._n_test = len(data.y_test)

        opts = _TF_FUNCTION[mode]
        idx_sig = [tf.TensorSpec([None], tf.int64)]  # None batch: the partial last batch does not retrace
        self._train = tf.function(self._train_fn, input_signature=idx_sig, **opts)
        self._grads = tf.function(self._grads_fn, input_signature=idx_sig, **opts)
        self._forward = tf.function(self._forward_fn, **opts,
                                    input_signature=[tf.TensorSpec([None, *workload.input_shape], tf.float32)])
        self._eval = tf.function(self._eval_fn, **opts)

    def _forward_fn(self, x):
        x = self._tf.reshape(x, [self._tf.shape(x)[0], -1])  # flatten in canonical (NHWC) order
        for f in self._layers:
            x = f(x)
        return x

    def _loss(self, logits, y):
        tf = self._tf
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

    def _loss_and_grads(self, idx):
        with self._tf.GradientTape() as tape:
            loss = self._loss(self._forward_fn(self._tf.gather(self.x_train, idx)), self._tf.gather(self.y_train, idx))
        return loss, tape.gradient(loss, self._vars)

    def _train_fn(self, idx):
        loss, grads = self._loss_and_grads(idx)
        if self._momentum:
            for v, g in zip(self._velocity, grads):
                v.assign(self._momentum * v + g)
            grads = self._velocity
        for p, g in zip(self._vars, grads):
            p.assign_sub(self._lr * g)
        return loss

    def _grads_fn(self, idx):
        return self._loss_and_grads(idx)[1]

    def _eval_fn(self):
        tf = self._tf
        logits = self._forward_fn(self.x_test)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), self.y_test),
                                        tf.int32))
        return self._loss(logits, self.y_test), correct

    def train_step(self, idx: np.ndarray) -> float:
        return float(self._train(np.asarray(idx, dtype=np.int64)))  # float() fetches the value: synchronised

    def evaluate(self) -> tuple[float, float]:
        loss, correct = self._eval()
        return float(loss), int(correct) / self._n_test

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._forward(np.asarray(x, dtype=np.float32)).numpy()

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return self._canonical(self._grads(np.asarray(idx, dtype=np.int64)))

    def params(self) -> dict[str, np.ndarray]:
        return self._canonical(self._vars)

    def _canonical(self, tensors) -> dict[str, np.ndarray]:
        """Tensors in ``self._vars`` order (kernel, bias per Dense layer) -> canonical names."""
        names = [f"{name}/{p}" for name, _, _ in self._dense for p in ("kernel", "bias")]
        return {n: t.numpy().copy() for n, t in zip(names, tensors)}


class TensorFlowBackend(Backend):
    """TensorFlow on the CPU; mode ``graph`` (``tf.function`` without XLA)."""

    name = "tensorflow"
    display = "TensorFlow"
    distribution = "tensorflow-cpu"
    import_name = "tensorflow"
    install_hint = "pip install 'isobench[tensorflow]'  (tensorflow-cpu==2.21.0)"
    modes = tuple(_TF_FUNCTION)

    def version(self) -> str | None:
        # the CPU wheel and the full wheel install the same module under two distribution names
        from importlib import metadata

        for dist in (self.distribution, "tensorflow"):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return None

    def setup(self, threads: int) -> dict[str, Any]:
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

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str) -> Trainer:
        check_build(self, workload, mode)
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
