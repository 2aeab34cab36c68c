"""Framework-neutral workloads and the built-in zoo."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .init import init_params
from .serialize import load_toml, workload_from_dict, workload_to_dict
from .spec import DataSpec, Dense, OptimizerSpec, ParitySpec, ReLU, ScheduleSpec, Workload
from .zoo import BUILTIN, COUNTERPARTS, SCALABLE


def get_workload(name: str) -> Workload:
    """A built-in workload by name, or a TOML workload file by path; a :class:`UserError` otherwise."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name.endswith(".toml") or Path(name).is_file():
        return load_toml(name)
    raise UserError(f"unknown workload {name!r}; choose from: {', '.join(sorted(BUILTIN))} "
                    "or give a .toml workload file (see 'isobench list')")


def counterpart(name: str) -> str | None:
    """The non-private built-in a private built-in is compared with (the cost of privacy), else ``None``."""
    return COUNTERPARTS.get(name)


def list_workloads() -> list[Workload]:
    return list(BUILTIN.values())


__all__ = ["BUILTIN", "COUNTERPARTS", "SCALABLE", "DataSpec", "Dense", "OptimizerSpec", "ParitySpec", "ReLU",
           "ScheduleSpec", "Workload", "counterpart", "get_workload", "init_params", "list_workloads", "load_toml",
           "workload_from_dict", "workload_to_dict"]
