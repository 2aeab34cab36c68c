"""Which device a worker uses and what it may see of the machine's GPUs.

The parent decides; the worker's environment enforces it before any framework is imported:

- ``cpu``: no GPU is visible (``CUDA_VISIBLE_DEVICES=""``) and JAX is held to its CPU platform, so no framework
  grabs a GPU that happens to be there, and a CPU number is never a GPU number by accident.
- ``cuda``: exactly one GPU is visible (``CUDA_VISIBLE_DEVICES=<index>``): each worker has its own, and
  no framework can allocate on another worker's. Allocators grow on demand instead of reserving the card
  (``XLA_PYTHON_CLIENT_PREALLOCATE=false`` for JAX, ``TF_FORCE_GPU_ALLOW_GROWTH=true`` for TensorFlow), so
  the allocator peak each backend reports is what the training needed.

GPUs are found without importing a framework: ``nvidia-smi``, else the driver's ``/proc`` entries.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import UserError

DEVICE_CHOICES = ("cpu", "cuda", "auto")
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def detect_gpus() -> list[int]:
    """Indices of the NVIDIA GPUs this machine has (as ``nvidia-smi`` numbers them); ``[]`` when none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, stdin=subprocess.DEVNULL)
        if out.returncode == 0:
            return [int(line) for line in out.stdout.split() if line.strip().isdigit()]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return list(range(len(list(NVIDIA_PROC.iterdir()))))
    except OSError:
        return []


def resolve_device(device: str, gpus: list[int] | None, available: list[int] | None = None) -> tuple[str, list[int]]:
    """``(device, gpu slots)`` for ``--device`` and ``--gpus``: ``auto`` is ``cuda`` when a GPU exists; on the
    CPU the slot list is ``[]``; on ``cuda`` it is ``--gpus`` (checked against the machine) or the first GPU."""
    if device not in DEVICE_CHOICES:
        raise UserError(f"unknown device {device!r}; choose from: {', '.join(DEVICE_CHOICES)}")
    if gpus and device == "cpu":
        raise UserError("--gpus needs --device cuda (or auto)")
    found = detect_gpus() if available is None else available
    if device == "auto":
        device = "cuda" if found else "cpu"
    if device == "cpu":
        return "cpu", []
    if not found:
        raise UserError("--device cuda: no NVIDIA GPU found (nvidia-smi lists none); use --device cpu")
    if gpus:
        unknown = [g for g in gpus if g not in found]
        if unknown:
            raise UserError(f"--gpus: no GPU {unknown[0]} on this machine; it has {', '.join(map(str, found))}")
        if len(set(gpus)) != len(gpus):
            raise UserError("--gpus lists a GPU twice; each parallel worker needs its own")
        return "cuda", list(gpus)
    return "cuda", [found[0]]


def worker_env(device: str, gpu: int | None = None) -> dict[str, str]:
    """The environment variables that give one worker its device (added to the worker's environment)."""
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    if gpu is None:
        raise ValueError("a cuda worker needs its GPU index")
    return {"CUDA_VISIBLE_DEVICES": str(gpu), "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "TF_FORCE_GPU_ALLOW_GROWTH": "true", "JAX_PLATFORMS": "cuda,cpu"}


def parse_gpus(text: str) -> list[int]:
    """``--gpus 0,1`` -> ``[0, 1]``; a one-line error otherwise."""
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--gpus expects GPU indices such as 0,1, got {text!r}") from None
    if not gpus or any(g < 0 for g in gpus):
        raise UserError(f"--gpus expects GPU indices such as 0,1, got {text!r}")
    return gpus
