"""TensorFlow's deployment paths: ``tf.function`` and XLA served natively, tf2onnx to ONNX Runtime and the
TensorFlow converter to LiteRT. The forward is the TensorFlow backend's own inference model
(:meth:`~isobench.backends.tf_backend.TensorFlowBackend.inference_model`: its layers in the inference phase)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..workloads.spec import Workload
from .deploy import Exported, Served, check_artifact, input_dtype, load_weights
from .deploy_onnx import finish_export
from .tf_backend import TensorFlowBackend, setup_tensorflow

ONNX_OPSET = 17


def _signature(tf, workload: Workload):
    return tf.TensorSpec([None, *workload.input_shape], tf.as_dtype(input_dtype(workload)), name="x")


def _frozen(tf, workload: Workload, params: dict[str, np.ndarray]):
    """The forward as a concrete function with the weights folded in as constants (a converter reading the
    variables instead can produce a model whose output is inf/NaN: docs/dependencies.md)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    f = tf.function(TensorFlowBackend().inference_model(workload, params), input_signature=[_signature(tf, workload)],
                    autograph=False)
    return convert_variables_to_constants_v2(f.get_concrete_function())


# ---- native

def _serve_native(workload: Workload, exported: Exported, threads: int, jit: bool, device: str) -> Served:
    """The inference forward as a ``tf.function``, its weights made and its graph run on ``device`` (the first
    GPU of a ``cuda`` worker, which sees one); ``.numpy()`` of the output waits for the device's work."""
    setup_tensorflow(threads, device)  # on cuda: a one-line error (a failed row) when TensorFlow sees no GPU
    import tensorflow as tf

    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        forward = TensorFlowBackend().inference_model(workload, load_weights(check_artifact(exported.artifact)))
    f = tf.function(forward, input_signature=[_signature(tf, workload)], autograph=False, jit_compile=jit)
    dtype = input_dtype(workload)

    def served(x: np.ndarray) -> np.ndarray:  # on cuda TensorFlow places the graph on the GPU beside its weights
        return f(tf.convert_to_tensor(np.asarray(x, dtype))).numpy()
    return served


def serve_function(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
                   device: str = "cpu") -> Served:
    """``tf.function`` (graph, no XLA), traced here by one call at ``batch_size``."""
    served = _serve_native(workload, exported, threads, jit=False, device=device)
    served(np.zeros((batch_size, *workload.input_shape), input_dtype(workload)))
    return served


def serve_xla(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
              device: str = "cpu") -> Served:
    """``tf.function(jit_compile=True)``, compiled here by one call at ``batch_size`` (XLA compiles per shape)."""
    served = _serve_native(workload, exported, threads, jit=True, device=device)
    served(np.zeros((batch_size, *workload.input_shape), input_dtype(workload)))
    return served


# ---- ONNX Runtime

def export_onnx(workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *, quantize: str,
                calibration: np.ndarray | None, batch_sizes: tuple[int, ...]) -> Exported:
    """tf2onnx of the ``tf.function`` (given without its own input signature: tf2onnx fails on one)."""
    import tensorflow as tf
    import tf2onnx

    path = out_dir / "model.onnx"
    f = tf.function(TensorFlowBackend().inference_model(workload, params), autograph=False)
    tf2onnx.convert.from_function(f, input_signature=(_signature(tf, workload),), opset=ONNX_OPSET,
                                  output_path=str(path))
    return finish_export(path, out_dir, workload, quantize, calibration,
                         {"exporter": f"tf2onnx {tf2onnx.__version__} (TensorFlow {tf.__version__})"})


# ---- LiteRT

def export_litert(workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *, quantize: str,
                  calibration: np.ndarray | None, batch_sizes: tuple[int, ...]) -> Exported:
    import tensorflow as tf

    from .deploy_litert import convert_tf, finish_litert

    flat, details = convert_tf(tf, _frozen(tf, workload, params), workload, quantize, calibration)
    path = out_dir / "model.tflite"
    path.write_bytes(flat)
    return finish_litert(path, workload, quantize, {**details, "batch": "dynamic"})
