"""Deployment paths: how a trained model leaves its framework and is served (``isobench deploy``).

A path is (framework, exporter, runtime): ``torch/eager`` serves natively, ``torch/onnx`` exports with
``torch.onnx`` (dynamo + onnxscript) and serves on ONNX Runtime, ``tensorflow/litert`` converts with the TF
converter and serves on the LiteRT interpreter, and so on (:data:`PATHS`). Every path implements two steps, each
run in its own fresh worker process by the runner:

- :func:`export` builds the workload natively from the trained neutral weights (canonical numpy layout, the
  same file for every framework) and writes the artifact the runtime loads (for a native path: nothing but the
  weights), optionally quantized to int8 with calibration batches drawn from the training split;
- :func:`serve` loads that artifact in the runtime and returns a :class:`Served`: a synchronous callable from a
  numpy batch to numpy logits (float32), so a clock read after it returns is honest.

This module imports no framework; each path names its implementation as ``"module:function"`` pairs, imported
only when the path is used (backends are the only code that imports a framework or a runtime).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..errors import UserError
from ..workloads.spec import Workload

QUANTIZATIONS = ("none", "int8")


@dataclass(frozen=True)
class Runtime:
    """What serves an artifact: its id, human name and the pip distribution whose version is recorded."""
    name: str          # "onnxruntime"
    display: str       # "ONNX Runtime"
    distribution: str  # "onnxruntime"
    import_name: str   # the module whose presence makes it available


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("torch", "PyTorch", "torch", "torch"),
    Runtime("tensorflow", "TensorFlow", "tensorflow-cpu", "tensorflow"),
    Runtime("jax", "JAX", "jax", "jax"),
    Runtime("numpy", "NumPy", "numpy", "numpy"),
    Runtime("onnxruntime", "ONNX Runtime", "onnxruntime", "onnxruntime"),
    Runtime("litert", "LiteRT", "ai-edge-litert", "ai_edge_litert"),
    Runtime("executorch", "ExecuTorch", "executorch", "executorch"),
)}


@dataclass(frozen=True)
class Exported:
    """What :func:`export` made: the artifact (a file or a directory; for a native path the weights file), the
    quantization actually applied and what the exporter did, for the record (e.g. ``{"batchnorm": "folded",
    "int8": "static QDQ, 8 calibration batches", "opset": 18}``)."""
    artifact: Path
    quantize: str = "none"
    details: dict[str, Any] = field(default_factory=dict)


class Served(Protocol):
    """A loaded model: ``served(x)`` runs one synchronous inference on a batch in the canonical layout (NHWC
    float32 images, float32 features or int32 tokens) and returns float32 numpy logits ``(batch, ...)``."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DeployPath:
    """One way to deploy a framework's model. ``export``/``serve`` are ``"module:function"`` with signatures
    ``export(workload, params, out_dir, *, quantize, calibration, batch_sizes) -> Exported`` and
    ``serve(workload, exported, *, batch_size, threads) -> Served``."""
    framework: str                     # the framework that builds the model: "torch", "tensorflow", "jax", ...
    name: str                          # "eager", "onnx", "litert", ...
    runtime: str                       # a key of RUNTIMES
    exporter: str                      # how the artifact is made, in words ("torch.onnx.export (dynamo)")
    export: str                        # "module:function"
    serve: str                         # "module:function"
    quantizations: tuple[str, ...] = ("none",)  # what the path offers; int8 elsewhere is a row with its reason
    requires: tuple[str, ...] = ()     # modules needed to export and serve (checked without importing)
    native: bool = False               # served by the framework itself (no exported artifact)

    @property
    def id(self) -> str:
        return f"{self.framework}/{self.name}"


_REF = "isobench.backends.deploy"
PATHS: dict[str, DeployPath] = {p.id: p for p in (
    DeployPath("numpy", "reference", "numpy", "float64 reference forward (weights file)",
               f"{_REF}:export_weights", f"{_REF}:serve_reference", requires=("numpy",), native=True),
)}


def get_path(path_id: str) -> DeployPath:
    if path_id not in PATHS:
        raise UserError(f"unknown deployment path {path_id!r}; choose from: {', '.join(PATHS)}")
    return PATHS[path_id]


def missing(path: DeployPath) -> list[str]:
    """The modules of ``path.requires`` that cannot be found (checked without importing them)."""
    return [m for m in path.requires if importlib.util.find_spec(m.split(".")[0]) is None]


def _function(ref: str) -> Callable:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def export(path: DeployPath, workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *,
           quantize: str = "none", calibration: np.ndarray | None = None,
           batch_sizes: tuple[int, ...] = (1,)) -> Exported:
    """Export ``params`` (trained, canonical layout) along ``path`` into ``out_dir``. ``calibration``: training
    examples for int8 calibration; ``batch_sizes``: for exporters whose artifact has a static batch."""
    if quantize not in path.quantizations:
        raise NotImplementedError(f"{path.id} offers no {quantize} quantization")
    out_dir.mkdir(parents=True, exist_ok=True)
    return _function(path.export)(workload, params, out_dir, quantize=quantize, calibration=calibration,
                                  batch_sizes=batch_sizes)


def serve(path: DeployPath, workload: Workload, exported: Exported, *, batch_size: int, threads: int) -> Served:
    """Load the artifact in the path's runtime with ``threads`` intra-op threads, ready for batches of
    ``batch_size`` (a static-batch artifact is the one exported for that size)."""
    return _function(path.serve)(workload, exported, batch_size=batch_size, threads=threads)


# ---- the reference path: the float64 forward of the trained weights (what every other path is checked against)

def save_weights(params: dict[str, np.ndarray], out_dir: Path) -> Path:
    path = out_dir / "weights.npz"
    np.savez(path, **params)
    return path


def load_weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def export_weights(workload: Workload, params: dict[str, np.ndarray], out_dir: Path, *, quantize: str,
                   calibration: np.ndarray | None, batch_sizes: tuple[int, ...]) -> Exported:
    """A native path's "artifact": the trained weights as they are (the runtime builds the model from them)."""
    return Exported(save_weights(params, out_dir), quantize)


def reference_logits(workload: Workload, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The float64 reference forward in inference mode: the logits every exported model is checked against."""
    from .reference import Model

    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    state = workload.state_shapes()
    model = Model(workload.layers, {k: v for k, v in p.items() if k not in state},
                  {k: v for k, v in p.items() if k in state})
    x = x if np.issubdtype(x.dtype, np.integer) else np.asarray(x, np.float64)
    return model.forward(x, train=False)[0]


def serve_reference(workload: Workload, exported: Exported, *, batch_size: int, threads: int) -> Served:
    params = load_weights(exported.artifact)
    return lambda x: reference_logits(workload, params, x).astype(np.float32)
