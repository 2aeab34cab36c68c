"""JAX's deployment paths: ``jax.jit`` served natively, jax2onnx to ONNX Runtime and jax2tf + the TensorFlow
converter to LiteRT. The forward is the JAX backend's own inference model
(:meth:`~isobench.backends.jax_backend.JaxBackend.inference_model`: ``train=False``, the weights closed over as
constants)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..workloads.spec import Workload, iter_layers
from .common import pool_window
from .deploy import Exported, Served, check_artifact, input_dtype, load_weights
from .deploy_onnx import finish_export
from .jax_backend import Forward, JaxBackend, setup_jax


def serve_jit(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
              device: str = "cpu") -> Served:
    """``jax.jit`` of the forward, compiled here by one call at ``batch_size``. JAX has no thread setting (the
    worker's CPU affinity is the limit: :func:`~isobench.backends.jax_backend.setup_jax`). On ``cuda`` the weights
    and the computation are on JAX's default device, the worker's one GPU; ``np.asarray`` of the output waits for
    it."""
    setup_jax(threads, device)  # on cuda: a one-line error (a failed row) when JAX has no GPU; else its default
    import jax

    f = jax.jit(JaxBackend().inference_model(workload, load_weights(check_artifact(exported.artifact))))
    dtype = input_dtype(workload)

    def served(x: np.ndarray) -> np.ndarray:
        return np.asarray(f(np.asarray(x, dtype)))
    served(np.zeros((batch_size, *workload.input_shape), dtype))
    return served


class OnnxForward(Forward):
    """The JAX backend's forward with one change for jax2onnx: a max pool whose stride equals its window is a
    reshape and a max over each window (the same values, inference only), because jax2onnx turns the NHWC
    ``reduce_window`` into a ``MaxPool`` node that ONNX Runtime rejects ("Unsupported pooling size")."""

    def maxpool2d(self, layer):
        k, st = pool_window(layer)
        if k != st:
            return super().maxpool2d(layer)
        jnp = self.jnp

        def pool(p, s, x, c):
            _, h, w, ch = x.shape
            x = x[:, :h // k * k, :w // k * k, :]  # VALID: a partial window at the edge is dropped
            return jnp.max(jnp.reshape(x, (-1, h // k, k, w // k, k, ch)), axis=(2, 4))
        return pool


def export_onnx(workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *, quantize: str,
                calibration: np.ndarray | None, batch_sizes: tuple[int, ...]) -> Exported:
    """jax2onnx with a symbolic batch ``B``."""
    from importlib import metadata

    import jax
    import jax2onnx
    import onnx

    spec = jax.ShapeDtypeStruct(("B", *workload.input_shape), input_dtype(workload))
    model = jax2onnx.to_onnx(JaxBackend().inference_model(workload, params, OnnxForward), [spec], return_mode="proto")
    path = out_dir / "model.onnx"
    onnx.save(model, str(path))
    return finish_export(path, out_dir, workload, quantize, calibration,
                         {"exporter": f"jax2onnx {metadata.version('jax2onnx')} (jax {jax.__version__})"})


def export_litert(workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *, quantize: str,
                  calibration: np.ndarray | None, batch_sizes: tuple[int, ...]) -> Exported:
    """jax2tf wrapped in a ``tf.function``, then the TensorFlow converter: one static-batch ``b<size>.tflite``
    per batch size in ``out_dir/model``. (A polymorphic batch converts and runs, but its shape arithmetic
    (SHAPE, GATHER, BROADCAST_TO, ...) keeps the graph off XNNPACK: resnet-mini took 200 ms per batch of 32
    against 7 ms for TensorFlow's own conversion; docs/deploy.md.)"""
    import jax
    import tensorflow as tf
    from jax.experimental import jax2tf

    from .deploy_litert import convert_tf, finish_litert

    kinds = {getattr(layer, "kind", None) for layer in iter_layers(workload.layers)}
    if quantize == "int8" and kinds & {"lstm", "attention"}:  # a crash would take the worker's reason with it
        raise NotImplementedError("jax/litert int8 of LSTM/attention models: the TF converter's int8 calibration of "
                                  "the jax2tf graph crashes the process (SIGSEGV/SIGABRT, docs/deploy.md)")
    converted = jax2tf.convert(JaxBackend().inference_model(workload, params), with_gradient=False)
    folder = out_dir / "model"
    folder.mkdir(exist_ok=True)
    details: dict = {}
    for b in batch_sizes:
        signature = tf.TensorSpec([b, *workload.input_shape], tf.as_dtype(input_dtype(workload)), name="x")
        concrete = tf.function(converted, input_signature=[signature], autograph=False).get_concrete_function()
        flat, details = convert_tf(tf, concrete, workload, quantize, calibration, b)
        (folder / f"b{b}.tflite").write_bytes(flat)
    return finish_litert(folder, workload, quantize, {**details, "exporter": f"jax2tf (jax {jax.__version__})",
                                                      "batch": "static", "batch_sizes": list(batch_sizes)},
                         batch_sizes[0])
