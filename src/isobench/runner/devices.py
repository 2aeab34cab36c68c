"""What a worker may see of the machine's GPUs (the device itself is chosen by :func:`isobench.config.resolve_device`).

The parent decides; the worker's environment enforces it before any framework is imported:

- ``cpu``: no GPU is visible (``CUDA_VISIBLE_DEVICES=""``) and JAX is held to its CPU platform, so no framework
  grabs a GPU that happens to be there, and a CPU number is never a GPU number by accident.
- ``cuda``: exactly one GPU is visible (``CUDA_VISIBLE_DEVICES=<index>``): each worker has its own, and
  no framework can allocate on another worker's. Allocators grow on demand instead of reserving the card
  (``XLA_PYTHON_CLIENT_PREALLOCATE=false`` for JAX, ``TF_FORCE_GPU_ALLOW_GROWTH=true`` for TensorFlow), so
  the allocator peak each backend reports is what the training needed.
"""
from __future__ import annotations


def worker_env(device: str, gpu: int | None = None) -> dict[str, str]:
    """The environment variables that give one worker its device (added to the worker's environment)."""
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    if gpu is None:
        raise ValueError("a cuda worker needs its GPU index")
    return {"CUDA_VISIBLE_DEVICES": str(gpu), "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "TF_FORCE_GPU_ALLOW_GROWTH": "true", "JAX_PLATFORMS": "cuda,cpu"}
