"""ONNX Runtime, the runtime of every ``*/onnx`` deployment path: serving an ``.onnx`` file and its int8
quantization (static QDQ with calibration batches from the training split), shared by the torch, TensorFlow
and JAX exporters. Imports onnx/onnxruntime only inside functions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..workloads.spec import Workload
from .deploy import Exported, Served, check_artifact, has_batchnorm, input_dtype, smoke_test

CALIBRATION_BATCH = 32  # examples per calibration batch fed to ORT's MinMax calibrator


def onnx_details(path: Path, workload: Workload) -> dict[str, Any]:
    """What the record keeps of an ``.onnx`` file: opset, producer, node count, BatchNorm handling."""
    import onnx

    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "onnx": onnx.__version__, "nodes": len(ops),
            "batchnorm": _batchnorm(workload, ops)}


def _batchnorm(workload: Workload, ops: list[str]) -> str:
    if not has_batchnorm(workload):
        return "none in the workload"
    if "BatchNormalization" in ops:
        return "kept as BatchNormalization nodes (ONNX Runtime fuses them into the convolutions at load)"
    if "Mul" in ops:
        return "elementwise Mul/Add as the framework's graph computes it (no BatchNormalization node)"
    return "folded into the convolutions by the exporter's optimizer (no BatchNormalization node)"


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray | None, workload: Workload) -> dict[str, Any]:
    """Static int8 quantization of ``fp32`` into ``out`` (QDQ format, int8 weights per channel and int8
    activations, MinMax calibration on ``calibration``, after ``quant_pre_process``); the record's details."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 needs calibration examples from the training split")
    x = np.asarray(calibration, input_dtype(workload))
    pre = out.with_name(out.stem + "_pre.onnx")
    shapes = "symbolic shape inference"
    try:
        quant_pre_process(str(fp32), str(pre))
    except TypeError:  # ORT's symbolic shape inference fails on a reshape of the symbolic batch (jax2onnx's pools)
        shapes = "ONNX shape inference only (ORT's symbolic shape inference fails on this graph)"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    session = onnxruntime.InferenceSession(str(pre), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    del session

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(np.array_split(x, max(1, -(-len(x) // CALIBRATION_BATCH))))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {name: batch}

    weights = "per channel"
    try:
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    except IndexError:  # ORT 1.32's per-channel bias scaling fails on jax2onnx's scalar-shaped bias adds
        weights = "per tensor (ORT's per-channel QDQ quantizer fails on this graph)"
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    pre.unlink()
    return {"int8": f"ONNX Runtime quantize_static: QDQ, int8 weights ({weights}) and activations, MinMax "
                    f"calibration on {len(x)} training examples in batches of {CALIBRATION_BATCH}; pre-processing: "
                    f"{shapes}",
            "onnxruntime": onnxruntime.__version__}


def finish_export(fp32: Path, out_dir: Path, workload: Workload, quantize: str, calibration: np.ndarray | None,
                  details: dict[str, Any]) -> Exported:
    """The exported fp32 ``.onnx`` file as it is, or quantized to ``model_int8.onnx``; the record's details."""
    details = {**details, **onnx_details(fp32, workload), "batch": "dynamic"}
    exported = Exported(fp32, quantize, details)
    smoke_test(serve_onnx, workload, exported, "ONNX Runtime")
    if quantize == "none":
        return exported
    q = out_dir / "model_int8.onnx"
    details.update(quantize_int8(fp32, q, calibration, workload))
    exported = Exported(q, quantize, details)
    smoke_test(serve_onnx, workload, exported, "ONNX Runtime")
    return exported


def serve_onnx(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
               device: str = "cpu") -> Served:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread, sequential execution,
    all graph optimizations."""
    import onnxruntime as ort

    check_artifact(exported.artifact)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(exported.artifact), options, providers=["CPUExecutionProvider"])
    name, dtype, run = session.get_inputs()[0].name, input_dtype(workload), session.run

    def served(x: np.ndarray) -> np.ndarray:
        return np.asarray(run(None, {name: np.asarray(x, dtype)})[0], np.float32)
    return served
