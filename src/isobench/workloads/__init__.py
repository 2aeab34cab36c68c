"""Framework-neutral workloads and the built-in zoo."""
from __future__ import annotations

from ..errors import UserError
from .init import init_params
from .spec import DataSpec, Dense, OptimizerSpec, ParitySpec, ReLU, Workload
from .zoo import BUILTIN


def get_workload(name: str) -> Workload:
    """A built-in workload by name; a :class:`UserError` naming the choices otherwise."""
    try:
        return BUILTIN[name]
    except KeyError:
        raise UserError(f"unknown workload {name!r}; choose from: {', '.join(sorted(BUILTIN))} "
                        "(see 'isobench list')") from None


def list_workloads() -> list[Workload]:
    return list(BUILTIN.values())


__all__ = ["BUILTIN", "DataSpec", "Dense", "OptimizerSpec", "ParitySpec", "ReLU", "Workload",
           "get_workload", "init_params", "list_workloads"]
