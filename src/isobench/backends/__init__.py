"""Framework backends, loaded by name. Only backend modules import a framework, and only in
``Backend.setup``/``build``, so isobench works with any subset of frameworks installed."""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from ..errors import UserError
from .base import OPTIMIZER_IMPLS, Backend, Trainer


@dataclass(frozen=True)
class FrameworkInfo:
    """What every layer may know of a framework without importing its backend: the one place for its name,
    human name and colour. The registry's order is the column order of every table and plot."""
    name: str        # framework id on the command line, e.g. "torch"
    display: str     # human name, e.g. "PyTorch"
    colour: str      # its colour in every figure of every report
    backend: str     # "module:class" of its Backend


FRAMEWORKS: dict[str, FrameworkInfo] = {i.name: i for i in (
    FrameworkInfo("torch", "PyTorch", "#EE4C2C", "isobench.backends.torch_backend:TorchBackend"),
    FrameworkInfo("tensorflow", "TensorFlow", "#FF8F00", "isobench.backends.tf_backend:TensorFlowBackend"),
    FrameworkInfo("jax", "JAX", "#4285F4", "isobench.backends.jax_backend:JaxBackend"),
    FrameworkInfo("keras-torch", "Keras (PyTorch)", "#D00000", "isobench.backends.keras_backend:KerasTorchBackend"),
    FrameworkInfo("keras-tensorflow", "Keras (TensorFlow)", "#9467BD",
                  "isobench.backends.keras_backend:KerasTensorFlowBackend"),
    FrameworkInfo("keras-jax", "Keras (JAX)", "#2CA02C", "isobench.backends.keras_backend:KerasJaxBackend"),
    FrameworkInfo("numpy", "NumPy (float64 reference)", "#7F7F7F", "isobench.backends.reference:ReferenceBackend"),
)}
REGISTRY: dict[str, str] = {name: info.backend for name, info in FRAMEWORKS.items()}  # id -> "module:class"
FALLBACK_COLOURS = ("#8C564B", "#E377C2", "#17BECF", "#BCBD22")  # a framework outside the registry, by name
PRECISION_ORDER = ("fp32", "tf32", "bf16", "fp16")


def display_name(framework: str) -> str:
    """The framework's human name ("PyTorch"); an id outside the registry stands for itself."""
    info = FRAMEWORKS.get(framework)
    return info.display if info else framework


def colour(framework: str) -> str:
    """The framework's colour, the same in every figure of every report."""
    info = FRAMEWORKS.get(framework)
    return info.colour if info else FALLBACK_COLOURS[sum(framework.encode()) % len(FALLBACK_COLOURS)]


def framework_rank(framework: str) -> int:
    """Column position of a framework: the registry's order, others after it (callers break ties by name)."""
    return list(FRAMEWORKS).index(framework) if framework in FRAMEWORKS else len(FRAMEWORKS)


def precision_rank(precision: str) -> int:
    return PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else len(PRECISION_ORDER)


def optimizer_rank(optimizer: str) -> int:
    """Column position of an optimizer implementation: the default (library) first."""
    return OPTIMIZER_IMPLS.index(optimizer) if optimizer in OPTIMIZER_IMPLS else len(OPTIMIZER_IMPLS)


DEFAULT_FRAMEWORKS = ("torch", "tensorflow", "jax")  # compared by default when installed
ALIASES = {"pytorch": "torch", "tf": "tensorflow"}


def get_backend(name: str) -> Backend:
    """The backend object for a framework id (or alias); importing it does not import the framework."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in REGISTRY:
        raise UserError(f"unknown framework {name!r}; choose from: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[key].split(":")
    return getattr(importlib.import_module(module), cls)()


def is_installed(backend: Backend) -> bool:
    """True when the framework can be found; checked without importing it."""
    return all(importlib.util.find_spec(m) is not None for m in getattr(backend, "requires", (backend.import_name,)))


def installed_frameworks(names=DEFAULT_FRAMEWORKS) -> list[str]:
    return [n for n in names if is_installed(get_backend(n))]


__all__ = ["ALIASES", "Backend", "DEFAULT_FRAMEWORKS", "FRAMEWORKS", "FrameworkInfo", "OPTIMIZER_IMPLS",
           "PRECISION_ORDER", "REGISTRY", "Trainer", "colour", "display_name", "framework_rank", "get_backend",
           "installed_frameworks", "is_installed", "optimizer_rank", "precision_rank"]
