"""Keras 3's native deployment paths: the Keras backend's functional model (its inference model,
:meth:`~isobench.backends.keras_backend.KerasBackend.inference_model`) served with ``predict_on_batch``, on
TensorFlow, JAX or PyTorch. Keras reads its backend once per process: each of these
serves in a process of its own (the runner's worker)."""
from __future__ import annotations

import numpy as np

from ..workloads.spec import Workload
from .deploy import Exported, Served, check_artifact, input_dtype, load_weights


def _serve(framework: str, workload: Workload, exported: Exported, batch_size: int, threads: int) -> Served:
    from . import get_backend

    params = load_weights(check_artifact(exported.artifact))
    backend = get_backend(f"keras-{framework}")
    backend.setup(threads)
    model = backend.inference_model(workload, params)
    dtype = input_dtype(workload)

    def served(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(np.asarray(x, dtype)), np.float32)
    served(np.zeros((batch_size, *workload.input_shape), dtype))  # Keras builds its predict function here
    return served


def serve_tensorflow(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
                     device: str = "cpu") -> Served:
    return _serve("tensorflow", workload, exported, batch_size, threads)


def serve_jax(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
              device: str = "cpu") -> Served:
    return _serve("jax", workload, exported, batch_size, threads)


def serve_torch(workload: Workload, exported: Exported, *, batch_size: int, threads: int,
                device: str = "cpu") -> Served:
    return _serve("torch", workload, exported, batch_size, threads)
