"""What an executor runs: a :class:`Job` is one fresh worker process, whatever kind of session it serves.

The kinds of worker are one table (:data:`WORKERS`): the task's ``kind`` names the function the worker process runs
(``python -m isobench._worker``, which reads the task file once) and, in :mod:`.local`, how its result file becomes
records. Every kind goes through the same executors (local, with ``--gpus`` slots; Ray), timeout, memory cap and
interruption handling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..results import EXPORT, LOAD, SERVE

CELL, PEAK = "cell", "peak"  # a training cell, the machine's peak; EXPORT and SERVE: the deployment's workers
WORKERS = {  # task kind -> "module:function(task, result_path, pinned) -> exit code" run in the worker process
    CELL: "isobench.runner.worker:measure_cell",
    PEAK: "isobench.runner.worker:measure_peak",
    EXPORT: "isobench.runner.deploy_worker:measure_export",
    SERVE: "isobench.runner.deploy_worker:measure_serve",
    LOAD: "isobench.runner.load_worker:measure_load",
}


@dataclass(frozen=True)
class Job:
    """One worker process to run: its ``task`` (``task["kind"]`` one of :data:`WORKERS`), the identities of the
    records it makes (``specs``: one, or a serving process's one per batch size, in the order it reports them), the
    task's keys naming files it reads (``files``: a worker on another node gets copies) and files or folders it
    writes for the parent (``outputs``: brought back to the same paths), its timeout and memory cap."""
    order: int
    specs: tuple[Any, ...]
    task: dict[str, Any]
    files: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    timeout: float | None = None
    max_memory_bytes: int | None = None

    @property
    def spec(self) -> Any:
        """The unit the job stands for (its first record's identity; a serving process's without a batch size)."""
        return getattr(self.specs[0], "unit", self.specs[0])
