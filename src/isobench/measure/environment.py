"""The host environment record: captured in the parent without importing any framework."""
from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata

from .threads import available_cpus

# Variables that change how frameworks use the CPU or compile; recorded when set.
FLAG_ENV = ("XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "JAX_PLATFORMS", "JAX_ENABLE_X64",
            "TF_DETERMINISTIC_OPS", "CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE")
DISTRIBUTIONS = ("torch", "tensorflow-cpu", "tensorflow", "jax", "jaxlib", "keras", "numpy", "scikit-learn",
                 # the deployment runtimes and exporters, and the serving sessions' load generator (MLPerf LoadGen):
                 # isobench deploy's fairness manifest names them
                 "onnx", "onnxruntime", "onnxscript", "tf2onnx", "jax2onnx", "ai-edge-litert", "litert-torch",
                 "executorch", "mlcommons-loadgen")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    """Installed versions of the frameworks and their numeric stack (read from metadata, not imported)."""
    out = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def host_environment() -> dict:
    from .. import __version__

    return {
        "isobench": __version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "affinity": available_cpus(),
        "memory_total_bytes": _mem_total(),
        "packages": package_versions(),
        "env": {k: os.environ[k] for k in FLAG_ENV if k in os.environ},
    }


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
