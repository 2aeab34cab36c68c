"""Executors: where and how many worker processes run at once. The plan, inputs and records are the same
for every executor and every kind of session; only the placement of the (always fresh, always one-job) worker
process differs.

- :class:`LocalExecutor` (default): workers on this machine, one at a time on the CPU (a timed run never
  shares the CPUs with another), or one per GPU slot in parallel with ``--gpus``.
- ``ray`` (:mod:`.ray_executor`): the same worker entry point launched by Ray tasks on a cluster.

:data:`EXECUTORS` names them as the backends' registry names the frameworks ("module:class", imported on use), so
an executor module imports this one and never the reverse.
"""
from __future__ import annotations

import importlib
import queue
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import UserError
from ..results import Record
from .devices import worker_env
from .jobs import Job
from .local import EventHandler, kill_running, run_job

EXECUTORS: dict[str, str] = {  # --executor name -> "module:class" of its Executor
    "local": "isobench.runner.executor:LocalExecutor",
    "ray": "isobench.runner.ray_executor:RayExecutor",
}


class Executor(ABC):
    """Runs jobs, each in its own fresh worker process, and yields each job's records as it finishes.

    ``jobs`` is consumed lazily: a job is taken only when a slot is free, so a caller may decide the rest of the
    plan from the records so far (adaptive repeats)."""

    name: str

    @abstractmethod
    def run(self, jobs: Iterable[Job], workdir: Path, on_event: EventHandler | None = None) -> Iterator[Record]:
        ...

    def start(self) -> None:
        """Connect and check that cells can run (a cluster with no slot cannot), so that a session stops with a
        one-line error before it is recorded; :meth:`run` starts the executor itself if needed."""

    def close(self) -> None:
        """Release what the executor holds (cluster connections); the local one holds nothing."""


class LocalExecutor(Executor):
    """Workers on this machine. ``slots`` are GPU indices (one worker per GPU at a time) or ``[None]`` for the
    CPU: one worker at a time."""

    name = "local"

    def __init__(self, device: str = "cpu", gpus: Iterable[int] = (), address: str | None = None):
        self.device, self.slots = device, list(gpus) or [None]  # address: no cluster here

    def _run(self, job: Job, workdir: Path, slot: int | None, on_event: EventHandler | None) -> list[Record]:
        if on_event:
            on_event(job.spec, {"event": "start"})
        return run_job(job, workdir, env=worker_env(self.device, slot), on_event=on_event)

    def run(self, jobs: Iterable[Job], workdir: Path, on_event: EventHandler | None = None) -> Iterator[Record]:
        if len(self.slots) == 1:
            for job in jobs:
                yield from self._run(job, workdir, self.slots[0], on_event)
            return
        yield from self._parallel(iter(jobs), workdir, on_event)

    def _parallel(self, jobs: Iterator[Job], workdir: Path, on_event: EventHandler | None) -> Iterator[Record]:
        """One thread per busy slot; records come back in the order they finish."""
        done: queue.Queue = queue.Queue()
        free, busy = list(self.slots), 0

        def work(job: Job, slot: int) -> None:
            try:
                done.put((slot, self._run(job, workdir, slot, on_event), None))  # the job's records
            except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
                done.put((slot, None, e))

        exhausted, finished = False, False
        try:
            while True:
                while free and not exhausted:
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    threading.Thread(target=work, args=(job, free.pop(0)), daemon=True).start()
                    busy += 1
                if not busy:
                    finished = True
                    return
                slot, records, error = done.get()
                busy -= 1
                free.append(slot)
                if error is not None:
                    raise error
                yield from records
        finally:
            if not finished:  # interrupted or failed: leave no worker behind
                kill_running()
            while busy:
                done.get()
                busy -= 1


def make_executor(name: str, device: str = "cpu", gpus: Iterable[int] = (), address: str | None = None) -> Executor:
    """The executor registered as ``name`` in :data:`EXECUTORS`, for ``device`` (and its GPU slots) at ``address``
    (a cluster's, where the executor has one)."""
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; choose from: {', '.join(EXECUTORS)}")
    module, cls = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(device=device, gpus=list(gpus), address=address)
