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
from typing import Any, Callable, Literal, Protocol, get_args

import numpy as np

from ..errors import UserError
from ..workloads.spec import Workload

QUANTIZATIONS = ("none", "int8")
# how a path's artifact takes the batch sizes it serves (DeployPath.batch): one exported model with a symbolic batch
# dimension serving every size; one exported file per batch size (b<size>.<ext> in a folder: artifact_bytes,
# deploy_litert.batch_file), for an exporter or runtime that needs a fixed shape; or no exported model (the weights
# file), the framework building the model when it is loaded for each batch size (a compiled one compiles there)
BatchHandling = Literal["dynamic", "static per batch size", "native"]
DYNAMIC, STATIC, NATIVE = BATCH_HANDLING = get_args(BatchHandling)


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
    """A loaded model: ``served(x)`` runs one synchronous inference on a batch in the canonical layout and dtype
    (NHWC float32 images, float32 features or int32 tokens: :func:`input_dtype`, contiguous) and returns float32
    numpy logits ``(batch, ...)``.

    The output is the array the runtime hands back (LiteRT ``get_tensor``'s copy, ONNX Runtime's and ExecuTorch's
    output, TensorFlow's ``.numpy()``, a torch output's ``.numpy()`` view, JAX's host array), never copied again by
    isobench: the serving worker's timed call is the runtime's call and the one conversion to NumPy every user
    makes. An int8 LiteRT output is dequantised, as any user of an int8 model must."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DeployPath:
    """One way to deploy a framework's model. ``export``/``serve`` are ``"module:function"`` with signatures
    ``export(workload, params, out_dir, *, quantize, calibration, batch_sizes) -> Exported`` and
    ``serve(workload, exported, *, batch_size, threads, device) -> Served`` (``device``: one of ``devices``)."""
    framework: str                     # the framework that builds the model: "torch", "tensorflow", "jax", ...
    name: str                          # "eager", "onnx", "litert", ...
    runtime: str                       # a key of RUNTIMES
    exporter: str                      # how the artifact is made, in words ("torch.onnx.export (dynamo)")
    export: str                        # "module:function"
    serve: str                         # "module:function"
    quantizations: tuple[str, ...] = ("none",)  # what the path offers; int8 elsewhere is a row with its reason
    requires: tuple[str, ...] = ()     # modules needed to export and serve (checked without importing)
    batch: BatchHandling = DYNAMIC     # how its artifact takes the batch sizes it serves
    # where it can serve: the framework's own inference runs on a GPU; the runtimes installed by the lock (ONNX
    # Runtime's CPU build, LiteRT's and ExecuTorch's Python interpreters) serve on the CPU only
    devices: tuple[str, ...] = ("cpu",)

    @property
    def id(self) -> str:
        return f"{self.framework}/{self.name}"

    @property
    def native(self) -> bool:
        """Served by the framework itself from the weights (no exported artifact)."""
        return self.batch == NATIVE


_REF = "isobench.backends.deploy"
_T, _TF, _J, _K = ("isobench.backends.deploy_torch", "isobench.backends.deploy_tf", "isobench.backends.deploy_jax",
                   "isobench.backends.deploy_keras")
_ONNX, _LITERT = "isobench.backends.deploy_onnx:serve_onnx", "isobench.backends.deploy_litert:serve_litert"
_INT8 = ("none", "int8")
_GPU = ("cpu", "cuda")  # the framework's own inference: on the CPU or on one GPU (--device cuda)
PATHS: dict[str, DeployPath] = {p.id: p for p in (
    DeployPath("numpy", "reference", "numpy", "float64 reference forward (weights file)",
               f"{_REF}:export_weights", f"{_REF}:serve_reference", requires=("numpy",), batch=NATIVE),
    DeployPath("torch", "eager", "torch", "none (nn.Module in eval mode, inference_mode)",
               f"{_REF}:export_weights", f"{_T}:serve_eager", requires=("torch",), batch=NATIVE,
               devices=_GPU),
    DeployPath("torch", "compile", "torch", "none (torch.compile of the eval forward, Inductor)",
               f"{_REF}:export_weights", f"{_T}:serve_compile", requires=("torch",), batch=NATIVE,
               devices=_GPU),
    DeployPath("tensorflow", "function", "tensorflow", "none (tf.function of the inference forward)",
               f"{_REF}:export_weights", f"{_TF}:serve_function", requires=("tensorflow",), batch=NATIVE,
               devices=_GPU),
    DeployPath("tensorflow", "xla", "tensorflow", "none (tf.function(jit_compile=True))",
               f"{_REF}:export_weights", f"{_TF}:serve_xla", requires=("tensorflow",), batch=NATIVE,
               devices=_GPU),
    DeployPath("jax", "jit", "jax", "none (jax.jit of the inference forward)",
               f"{_REF}:export_weights", f"{_J}:serve_jit", requires=("jax",), batch=NATIVE,
               devices=_GPU),
    DeployPath("keras-tensorflow", "predict", "tensorflow", "none (Keras 3 predict_on_batch)",
               f"{_REF}:export_weights", f"{_K}:serve_tensorflow", requires=("keras", "tensorflow"), batch=NATIVE),
    DeployPath("keras-jax", "predict", "jax", "none (Keras 3 predict_on_batch)",
               f"{_REF}:export_weights", f"{_K}:serve_jax", requires=("keras", "jax"), batch=NATIVE),
    DeployPath("keras-torch", "predict", "torch", "none (Keras 3 predict_on_batch)",
               f"{_REF}:export_weights", f"{_K}:serve_torch", requires=("keras", "torch"), batch=NATIVE),
    DeployPath("torch", "onnx", "onnxruntime", "torch.onnx.export (dynamo, onnxscript)",
               f"{_T}:export_onnx", _ONNX, _INT8, requires=("torch", "onnxscript", "onnx", "onnxruntime")),
    DeployPath("tensorflow", "onnx", "onnxruntime", "tf2onnx.convert.from_function",
               f"{_TF}:export_onnx", _ONNX, _INT8, requires=("tensorflow", "tf2onnx", "onnx", "onnxruntime")),
    DeployPath("jax", "onnx", "onnxruntime", "jax2onnx.to_onnx",
               f"{_J}:export_onnx", _ONNX, _INT8, requires=("jax", "jax2onnx", "onnx", "onnxruntime")),
    DeployPath("tensorflow", "litert", "litert", "tf.lite.TFLiteConverter (frozen concrete function)",
               f"{_TF}:export_litert", _LITERT, _INT8, requires=("tensorflow", "ai_edge_litert")),
    DeployPath("jax", "litert", "litert", "jax2tf -> tf.lite.TFLiteConverter",
               f"{_J}:export_litert", _LITERT, _INT8, requires=("jax", "tensorflow", "ai_edge_litert"), batch=STATIC),
    DeployPath("torch", "litert", "litert", "litert_torch.convert",
               f"{_T}:export_litert", _LITERT, _INT8, requires=("torch", "litert_torch", "ai_edge_litert"),
               batch=STATIC),
    DeployPath("torch", "executorch", "executorch", "torch.export -> to_edge_transform_and_lower (XNNPACK)",
               f"{_T}:export_executorch", f"{_T}:serve_executorch", _INT8, requires=("torch", "executorch"),
               batch=STATIC),
)}
INSTALL_HINT = "pip install -c constraints.txt -e '.[deploy]'"

# fp32 parity: the max abs logit difference against reference_logits allowed per path kind, measured on the
# built-in workloads with margin (docs/deploy.md, benchmarks/deploy_matrix.py); int8 has none (accuracy drop)
LOGIT_TOLERANCE = 1e-3


def get_path(path_id: str) -> DeployPath:
    if path_id not in PATHS:
        raise UserError(f"unknown deployment path {path_id!r}; choose from: {', '.join(PATHS)}")
    return PATHS[path_id]


def missing(path: DeployPath) -> list[str]:
    """The modules of ``path.requires`` that cannot be found (checked without importing them)."""
    return [m for m in path.requires if importlib.util.find_spec(m.split(".")[0]) is None]


def available(path: DeployPath) -> str | None:
    """``None`` when ``path`` can run here, else the one-line reason (the missing modules and how to install)."""
    gone = missing(path)
    if not gone:
        return None
    return f"{path.id} needs {', '.join(gone)}: {INSTALL_HINT}"


def runtime_versions() -> dict[str, str | None]:
    """Runtime id -> installed version of its distribution (``None``: not installed), without importing it."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name, runtime in RUNTIMES.items():
        try:
            versions[name] = metadata.version(runtime.distribution)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def logit_tolerance(workload: Workload, quantize: str = "none") -> float | None:
    """The fp32 parity gate: the largest max abs logit difference against :func:`reference_logits` a path may
    show on ``workload``; ``None`` for int8, whose rows state an accuracy drop instead."""
    return None if quantize != "none" else LOGIT_TOLERANCE


def input_dtype(workload: Workload) -> type:
    """The numpy dtype of the workload's canonical input: int32 tokens or float32."""
    return np.int32 if workload.input_dtype == "int32" else np.float32


def artifact_bytes(exported: Exported, batch_size: int | None = None) -> int:
    """The artifact's size on disk: a file's size; for a static-batch directory (one file per batch size,
    ``b<size>.<ext>``) the file serving ``batch_size``, or all files when ``batch_size`` is ``None``."""
    path = exported.artifact
    if not path.is_dir():
        return path.stat().st_size
    files = [p for p in path.iterdir() if p.is_file()]
    if batch_size is not None:
        files = [p for p in files if p.stem == f"b{batch_size}"] or files
    return sum(p.stat().st_size for p in files)


def check_artifact(path: Path) -> Path:
    """``path`` if it exists and is not empty; ``ValueError`` otherwise (a failed row, not a crash)."""
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        raise ValueError(f"artifact {path} is missing or empty")
    return path


def has_batchnorm(workload: Workload) -> bool:
    from ..workloads.spec import iter_layers

    return any(getattr(layer, "kind", None) == "batchnorm" for layer in iter_layers(workload.layers))


def smoke_test(serve_fn: Callable, workload: Workload, exported: Exported, runtime: str, batch: int = 2) -> None:
    """Load ``exported`` with ``serve_fn`` and run a batch of zeros: an exporter whose artifact the runtime
    rejects fails at export, with a one-line reason, instead of at the first timed call."""
    try:
        out = serve_fn(workload, exported, batch_size=batch, threads=1)(np.zeros((batch, *workload.input_shape),
                                                                                 input_dtype(workload)))
    except Exception as e:  # noqa: BLE001  (any runtime error: the artifact does not run)
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RuntimeError(f"the exported model does not run on {runtime}: {msg[:300]}") from e
    if not np.all(np.isfinite(out)):  # e.g. a converter that read uninitialised variables (docs/deploy.md)
        raise RuntimeError(f"the exported model gives non-finite logits on {runtime}")


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


def serve(path: DeployPath, workload: Workload, exported: Exported, *, batch_size: int, threads: int,
          device: str = "cpu") -> Served:
    """Load the artifact in the path's runtime with ``threads`` intra-op threads on ``device``, ready for batches
    of ``batch_size`` (a static-batch artifact is the one exported for that size). On a GPU the served call takes a
    host batch and gives host logits (copies in and out included, the last one synchronising), as a caller's
    does."""
    if device not in path.devices:
        raise ValueError(f"{path.id} serves on {' or '.join(path.devices)} only, not {device}")
    return _function(path.serve)(workload, exported, batch_size=batch_size, threads=threads, device=device)


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
    from .reference import ReferenceBackend

    return ReferenceBackend().inference_model(workload, params)(x)


def serve_reference(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
                    device: str = "cpu") -> Served:
    from .reference import ReferenceBackend

    forward = ReferenceBackend().inference_model(workload, load_weights(exported.artifact))
    return lambda x: forward(x).astype(np.float32)
