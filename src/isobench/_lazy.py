"""Lazy re-exports for a package's ``__init__`` (PEP 562): a name is imported from its module on first use.

A worker process imports ``isobench.measure.threads`` and ``isobench.runner.worker``; with eager re-exports the
package ``__init__`` would first import everything the package offers the parent (numpy before the CPUs are pinned,
the session, statistics and scipy), which the worker would then carry into the figures of the framework it
measures."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` for ``exports`` (name -> the module that defines it, relative to
    ``package``: ``".memory"``, ``"..config"``)."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)
    return __getattr__
