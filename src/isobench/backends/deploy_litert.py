"""LiteRT (formerly TensorFlow Lite), the runtime of every ``*/litert`` deployment path: serving a ``.tflite``
file (or a directory holding one per batch size, for static-batch exporters) with
``ai_edge_litert.interpreter.Interpreter``, and the TensorFlow converter shared by the TensorFlow and JAX (via
jax2tf) exporters, with full-integer int8. Imports tensorflow/ai_edge_litert only inside functions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..workloads.spec import Workload
from .deploy import Exported, Served, check_artifact, has_batchnorm, input_dtype, smoke_test

REPRESENTATIVE = 200  # calibration examples the converter's representative data set yields (one per batch)


def batch_file(artifact: Path, batch_size: int, suffix: str = ".tflite") -> Path:
    """The file serving ``batch_size``: the artifact itself, or ``b<size><suffix>`` in a directory (a
    static-batch export: one file per batch size)."""
    if not artifact.is_dir():
        return artifact
    path = artifact / f"b{batch_size}{suffix}"
    if not path.is_file():
        sizes = sorted(int(p.stem[1:]) for p in artifact.glob(f"b*{suffix}"))
        raise ValueError(f"this static-batch artifact has no batch size {batch_size} (exported: {sizes})")
    return path


def convert_tf(tf, concrete, workload: Workload, quantize: str, calibration: np.ndarray | None, batch: int = 1
               ) -> tuple[bytes, dict[str, Any]]:
    """A concrete function with constant weights (frozen: see docs/deploy.md) -> ``.tflite`` bytes, fp32 or
    full-integer int8 (int8 kernels only, int8 input/output for float inputs); ``batch``: the size of each
    representative batch (the input's static batch, or 1 for a dynamic one)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    details: dict[str, Any] = {"converter": f"tf.lite.TFLiteConverter {tf.__version__}"}
    if quantize == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 needs calibration examples from the training split")
        x = np.asarray(calibration[:REPRESENTATIVE], input_dtype(workload))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i:i + batch]] for i in range(0, len(x) - batch + 1, batch))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if workload.input_dtype != "int32":  # token ids stay int32
            converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        io = "output" if workload.input_dtype == "int32" else "input and output"
        details["int8"] = (f"full integer (TFLITE_BUILTINS_INT8, int8 {io}), representative data set of "
                           f"{len(x)} training examples in batches of {batch}")
    return converter.convert(), details


def serve_litert(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
                 device: str = "cpu") -> Served:
    """A LiteRT interpreter with ``threads`` threads (XNNPACK delegate, LiteRT's default on the CPU), its input
    resized to ``batch_size`` when the batch is dynamic; int8 inputs/outputs are (de)quantized here, inside
    the timed call, as a deployed model's caller would."""
    from ai_edge_litert.interpreter import Interpreter

    path = batch_file(check_artifact(exported.artifact), batch_size)
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = [batch_size, *inp["shape"][1:]]
    if int(inp["shape"][0]) != batch_size:
        interpreter.resize_tensor_input(inp["index"], shape)
    interpreter.allocate_tensors()
    in_index, out_index = inp["index"], out["index"]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    quantized_in = inp["dtype"] == np.int8
    dtype = inp["dtype"]
    set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor

    if not quantized_in and out["dtype"] != np.int8:  # a float model: the runtime's three calls, nothing else
        def served(x: np.ndarray) -> np.ndarray:
            set_tensor(in_index, x)  # the canonical dtype (Served); LiteRT refuses another with a clear error
            invoke()
            return get_tensor(out_index)  # a copy the runtime makes (it reuses its buffer): the caller's own
        return served

    def served_int8(x: np.ndarray) -> np.ndarray:  # quantize the input, dequantize the output: every user does
        if quantized_in:
            x = np.clip(np.round(np.asarray(x, np.float32) / in_scale + in_zero), -128, 127)
        set_tensor(in_index, np.asarray(x, dtype))
        invoke()
        y = get_tensor(out_index)
        return (y.astype(np.float32) - out_zero) * np.float32(out_scale) if y.dtype == np.int8 else y
    return served_int8


def litert_details(path: Path, workload: Workload) -> dict[str, Any]:
    """LiteRT runtime version, the artifact's operators and BatchNorm handling, for the record."""
    from importlib import metadata

    from ai_edge_litert.interpreter import Interpreter

    ops = sorted({o["op_name"] for o in Interpreter(model_path=str(path))._get_ops_details()})
    bn = ("none in the workload" if not has_batchnorm(workload) else
          "folded into the convolutions by the converter (LiteRT has no batch-norm op)" if "MUL" not in ops else
          "elementwise MUL/ADD (LiteRT has no batch-norm op)")
    return {"ai_edge_litert": metadata.version("ai-edge-litert"), "ops": ops, "batchnorm": bn}


def finish_litert(path: Path, workload: Workload, quantize: str, details: dict[str, Any],
                  batch: int = 2) -> Exported:
    """The written ``.tflite`` (or folder) as an :class:`Exported`, checked to run on LiteRT."""
    first = batch_file(path, batch)
    exported = Exported(path, quantize, {**details, **litert_details(first, workload)})
    smoke_test(serve_litert, workload, exported, "LiteRT", batch)
    return exported
