"""The records of a plan: every planned cell through an executor, one fresh worker each, on identical inputs."""
from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from ..backends import get_backend, is_installed
from ..config import RunConfig, refusals, resolve_workloads
from ..results import UNAVAILABLE, RunRecord, RunSpec
from .executor import Executor, make_executor
from .jobs import Job
from .inputs import training_seed, write_inputs
from .local import EventHandler, training_task
from .plan import make_plan


def iter_runs(config: RunConfig, on_event: EventHandler | None = None,
              workdir: Path | None = None, plan: Iterable[RunSpec] | None = None,
              executor: Executor | None = None, skip: Iterable[RunSpec] = (), first_order: int = 0) -> Iterator[RunRecord]:
    """Yield one :class:`RunRecord` per planned cell as soon as its worker has finished.

    ``plan`` (default: :func:`make_plan` of the config) is consumed lazily, one spec after the previous record
    was taken (per free executor slot), so a caller may decide the rest of the plan from the records so far
    (see :mod:`.adaptive`). Specs in ``skip`` (already measured: ``--resume``) are left out; ``first_order``
    numbers the first new record. A framework that is not installed, or whose import failed in a worker, is
    tried once: its later cells are recorded ``unavailable`` with the same message, without a worker. The
    ``executor`` (default: the config's, closed at the end) stays open when given: its owner closes it."""
    own = executor is None
    executor = executor or make_executor(config.executor, config.device, config.gpus, config.ray_address)
    skip = set(skip)
    unavailable = {f: f"{b.display} is not installed; install it: {b.install_hint}"
                   for f in config.frameworks if not is_installed(b := get_backend(f))}
    held: list[RunRecord] = []  # records made without a worker, handed out between the executor's
    try:
        with tempfile.TemporaryDirectory(prefix="isobench-") as tmp:
            work = Path(workdir or tmp)
            job = _job_maker(config, work)
            if plan is None:
                resolved = resolve_workloads(config)
                plan = make_plan(list(resolved), config.cells(), config.repeats, config.threads, config.seed,
                                 config.device, refusals(resolved, config.cells(), config.device), config.warmup)

            def jobs() -> Iterator[Job]:
                order = first_order
                for spec in plan:
                    if spec in skip:
                        continue
                    if spec.framework in unavailable:
                        held.append(RunRecord(spec=spec, status=UNAVAILABLE, order=order,
                                              error=unavailable[spec.framework]))
                    else:
                        yield job(order, spec)
                    order += 1

            for record in executor.run(jobs(), work, on_event):
                yield from _drain(held)
                if record.status == UNAVAILABLE and record.error:
                    unavailable.setdefault(record.spec.framework, record.error)
                yield record
            yield from _drain(held)
    finally:
        if own:
            executor.close()


def _job_maker(config: RunConfig, work: Path):
    """``job(order, spec)``: the :class:`Job` of a planned cell, its inputs file written once per (workload,
    training seed). The first seed's are written now, so a data error stops the session before any worker."""
    workloads = resolve_workloads(config)
    inputs = {(name, w.seed): write_inputs(w, work / f"inputs-{i}.npz", config.data_dir)
              for i, (name, w) in enumerate(workloads.items())}

    def job(order: int, spec: RunSpec) -> Job:
        base = workloads[spec.workload]
        seed = training_seed(base, spec.repeat, config.seeds)
        if (spec.workload, seed) not in inputs:
            inputs[spec.workload, seed] = write_inputs(base, work / f"inputs-{len(inputs)}.npz", config.data_dir, seed)
        return Job(order, (spec,), training_task(spec, replace(base, seed=seed), inputs[spec.workload, seed]),
                   files=("inputs",), timeout=config.timeout_s, max_memory_bytes=config.max_memory_bytes)
    return job


def _drain(held: list[RunRecord]) -> Iterator[RunRecord]:
    while held:
        yield held.pop(0)
