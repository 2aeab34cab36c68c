"""PyTorch's deployment paths: eager and ``torch.compile`` served natively, ``torch.onnx`` (dynamo) to ONNX
Runtime, litert-torch to LiteRT and ``torch.export`` + XNNPACK to ExecuTorch. The model is the torch backend's
own inference model (:meth:`~isobench.backends.torch_backend.TorchBackend.inference_model`: an eval ``nn.Module``
taking and giving the canonical layout)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..workloads.spec import Workload
from .deploy import Exported, Served, check_artifact, has_batchnorm, input_dtype, load_weights, smoke_test
from .deploy_onnx import finish_export
from .torch_backend import TorchBackend, setup_torch

MAX_BATCH = 4096  # upper bound of the symbolic batch dimension of torch.export (ExecuTorch, ONNX)


def _sample(workload: Workload, batch: int = 2):
    import torch

    return torch.from_numpy(np.zeros((batch, *workload.input_shape), input_dtype(workload)))


def _batch_dim(torch):
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def _numpy_callable(torch, forward, device: str = "cpu") -> Served:
    """``forward`` as a numpy-to-numpy call; on ``cuda`` the batch is copied to the GPU and the logits back, the
    copy back waiting for the GPU's work (a clock read after the call is honest)."""
    if device == "cpu":
        def served(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return forward(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        return served

    gpu = torch.device(device)

    def served_gpu(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return forward(torch.from_numpy(np.ascontiguousarray(x)).to(gpu)).cpu().numpy()
    return served_gpu


def _module(workload: Workload, exported: Exported, threads: int, device: str):
    """The torch backend's eval module of the served weights, on ``device`` (threads and device checked first: no
    GPU visible on ``cuda`` is a one-line error, a failed row)."""
    setup_torch(threads, device)
    module = TorchBackend().inference_model(workload, load_weights(check_artifact(exported.artifact)))
    return module.to(device)


# ---- native

def serve_eager(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
                device: str = "cpu") -> Served:
    import torch

    return _numpy_callable(torch, _module(workload, exported, threads, device), device)


def serve_compile(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
                  device: str = "cpu") -> Served:
    """``torch.compile`` (Inductor, static shapes) of the eval forward, compiled here by one call at
    ``batch_size``, so the compile is load time, not the first measured call."""
    import torch

    module = _module(workload, exported, threads, device)
    torch._dynamo.reset()
    served = _numpy_callable(torch, torch.compile(module, dynamic=False), device)
    served(np.zeros((batch_size, *workload.input_shape), input_dtype(workload)))
    return served


# ---- ONNX Runtime

def export_onnx(workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *, quantize: str,
                calibration: np.ndarray | None, batch_sizes: tuple[int, ...]) -> Exported:
    import torch

    module = TorchBackend().inference_model(workload, params)
    path = out_dir / "model.onnx"
    program = torch.onnx.export(module, (_sample(workload),), dynamo=True, dynamic_shapes=_batch_dim(torch),
                                input_names=["x"], output_names=["logits"], verbose=False)
    program.save(str(path))
    return finish_export(path, out_dir, workload, quantize, calibration,
                         {"exporter": f"torch.onnx.export(dynamo=True) torch {torch.__version__}"})


# ---- LiteRT

def export_litert(workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *, quantize: str,
                  calibration: np.ndarray | None, batch_sizes: tuple[int, ...]) -> Exported:
    """litert-torch converts at a fixed batch: one ``b<size>.tflite`` per batch size in ``out_dir/model``."""
    from importlib import metadata

    import litert_torch

    from .deploy_litert import finish_litert

    import torch

    module = TorchBackend().inference_model(workload, params)
    details = {"exporter": f"litert_torch.convert {metadata.version('litert-torch')}", "batch": "static",
               "batch_sizes": list(batch_sizes)}
    if quantize == "int8":  # litert-torch's own PT2E quantizer, quantize/dequantize kept for the converter
        from litert_torch.quantize import pt2e_quantizer

        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        module, details["int8"] = _pt2e_int8(torch, module, _sample(workload), calibration, workload, quantizer,
                                             fold=False)
    folder = out_dir / "model"
    folder.mkdir(exist_ok=True)
    for b in batch_sizes:
        litert_torch.convert(module, (_sample(workload, b),)).export(str(folder / f"b{b}.tflite"))
    return finish_litert(folder, workload, quantize, details, batch_sizes[0])


# ---- ExecuTorch

def export_executorch(workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *, quantize: str,
                      calibration: np.ndarray | None, batch_sizes: tuple[int, ...]) -> Exported:
    """``torch.export`` -> edge dialect lowered to XNNPACK -> ``b<size>.pte``, one static-batch program per batch
    size in ``out_dir/model`` (with a symbolic batch, the program's memory plan bounds the input below the
    requested maximum: resnet-mini's at 15 examples, see docs/deploy.md); int8: the XNNPACK PT2E quantizer
    (symmetric, per channel, static) calibrated on ``calibration``."""
    from importlib import metadata

    import torch

    from .deploy_litert import batch_file

    module = TorchBackend().inference_model(workload, params)
    details: dict[str, Any] = {"exporter": f"torch.export + executorch {metadata.version('executorch')} "
                                           "to_edge_transform_and_lower(XnnpackPartitioner)", "batch": "static",
                               "batch_sizes": list(batch_sizes),
                               "batchnorm": "folded into the convolutions by the XNNPACK lowering"
                               if has_batchnorm(workload) else "none in the workload"}
    if quantize == "int8":
        module, details["int8"] = _pt2e_int8(torch, module, _sample(workload), calibration, workload)
    folder = out_dir / "model"
    folder.mkdir(exist_ok=True)
    for b in batch_sizes:
        details.update(_lower(torch, module, _sample(workload, b), folder / f"b{b}.pte"))
    smoke_test(serve_executorch, workload, Exported(folder, quantize), "ExecuTorch", batch_sizes[0])
    assert batch_file(folder, batch_sizes[0], ".pte").is_file()
    return Exported(folder, quantize, details)


def _lower(torch, module, sample, path: Path) -> dict[str, Any]:
    """One static-shape program lowered to XNNPACK, written to ``path``; what was and was not delegated."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(torch.export.export(module, (sample,)), partitioner=[XnnpackPartitioner()])
    names = [str(getattr(n.target, "__name__", n.target)) for n in edge.exported_program().graph_module.graph.nodes
             if n.op == "call_function"]
    path.write_bytes(edge.to_executorch().buffer)
    return {"xnnpack_delegates": sum("executorch_call_delegate" in n for n in names),
            "not_delegated": sorted({n for n in names if "executorch_call_delegate" not in n and "getitem" not in n})}


def _pt2e_int8(torch, module, sample, calibration, workload, quantizer=None, fold: bool = True):
    """``module`` quantized with a PT2E ``quantizer`` (default: XNNPACK's symmetric per-channel static int8),
    calibrated on ``calibration`` in batches of 32; and the record's description."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 needs calibration examples from the training split")
    if quantizer is None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                              get_symmetric_quantization_config)
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(module, (sample,), dynamic_shapes=_batch_dim(torch)).module(),
                            quantizer)
    x = np.asarray(calibration, input_dtype(workload))
    with torch.no_grad():
        for batch in np.array_split(x, max(1, -(-len(x) // 32))):
            prepared(torch.from_numpy(np.ascontiguousarray(batch)))
    return convert_pt2e(prepared, fold_quantize=fold), (
        f"{type(quantizer).__name__} (PT2E): symmetric int8, per-channel weights, static activations "
        f"calibrated on {len(x)} training examples")


def serve_executorch(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
                     device: str = "cpu") -> Served:
    """``executorch.runtime``: the program's ``forward`` method; XNNPACK's thread pool set to ``threads`` with
    ``_unsafe_reset_threadpool`` (ExecuTorch's only thread control from Python)."""
    import torch
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    from .deploy_litert import batch_file

    path = batch_file(check_artifact(exported.artifact), batch_size, ".pte")
    torch.set_num_threads(threads)
    _unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(path).load_method("forward")
    dtype = input_dtype(workload)

    def served(x: np.ndarray) -> np.ndarray:
        return method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype))])[0].numpy()
    return served
