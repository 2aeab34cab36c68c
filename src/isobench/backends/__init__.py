"""Framework backends, loaded by name. Only backend modules import a framework, and only in
``Backend.setup``/``build``, so isobench works with any subset of frameworks installed."""
from __future__ import annotations

import importlib
import importlib.util

from ..errors import UserError
from .base import Backend, Trainer

# framework id -> "module:class"; order is the display order
REGISTRY: dict[str, str] = {
    "torch": "isobench.backends.torch_backend:TorchBackend",
    "tensorflow": "isobench.backends.tf_backend:TensorFlowBackend",
    "jax": "isobench.backends.jax_backend:JaxBackend",
    "keras-torch": "isobench.backends.keras_backend:KerasTorchBackend",
    "keras-tensorflow": "isobench.backends.keras_backend:KerasTensorFlowBackend",
    "keras-jax": "isobench.backends.keras_backend:KerasJaxBackend",
    "numpy": "isobench.backends.reference:ReferenceBackend",
}
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


__all__ = ["ALIASES", "Backend", "DEFAULT_FRAMEWORKS", "REGISTRY", "Trainer", "get_backend",
           "installed_frameworks", "is_installed"]
