"""Expand the matrix, prepare identical inputs, run every cell in a fresh worker, return the records."""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import __version__
from ..backends import get_backend, is_installed
from ..measure import host_environment
from ..results import UNAVAILABLE, ResultSet, RunRecord, RunSpec
from ..errors import UserError
from ..workloads import Workload
from .inputs import resolve_workload, training_seed, write_inputs
from .executor import Executor, Job, make_executor
from .local import EventHandler, run_cell
from .parity import ParityReport
from .plan import make_plan


@dataclass
class RunConfig:
    """The resolved configuration of one ``isobench run``; stored with its results."""
    workloads: list[str]
    frameworks: list[str]
    repeats: int = 5
    threads: int = 1
    timeout_s: float | None = 600.0
    seed: int = 0  # orders the plan; the workload's own seed fixes weights and data
    # --seeds: repeat r trains from seed workload.seed + r mod seeds (weights, epoch orders, dropout), the same
    # seed for every framework; 1 = every repeat the identical training
    seeds: int = 1
    # framework -> its modes, in order; a framework not listed runs its default (the backend's first) mode
    modes: dict[str, list[str]] = field(default_factory=dict)
    # adaptive repeats (runner.adaptive): after `repeats`, add blocks until every ratio's 95% interval is within
    # +/- target_width (a fraction of the ratio) or max_repeats is reached; None = exactly `repeats`
    target_width: float | None = None
    max_repeats: int | None = None
    data_dir: str | None = None  # real data sets (MNIST, CIFAR-10) for workloads that have one
    scale: float | None = None   # multiply synthetic data set sizes
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    device: str = "cpu"          # "cpu" or "cuda" (resolved: never "auto")
    gpus: list[int] = field(default_factory=list)  # cuda: one parallel worker slot per GPU index
    max_memory_bytes: int | None = None  # kill a worker whose RSS exceeds this (status out_of_memory)
    executor: str = "local"      # "local" or "ray"
    ray_address: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """A stored configuration (any isobench version's) back as a config, e.g. to resume its session."""
        names = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in d.items() if k in names})
        out.modes = {f: [m] if isinstance(m, str) else list(m) for f, m in (out.modes or {}).items()}
        return out

    def modes_of(self, framework: str) -> list[str]:
        return list(self.modes.get(framework) or [get_backend(framework).modes[0]])

    def cells(self) -> list[tuple[str, str, str]]:
        """Every measured ``(framework, mode, precision)``, in column order; precisions a backend lacks are left
        out (see :meth:`skipped`)."""
        return [(f, m, p) for f in self.frameworks for m in self.modes_of(f) for p in self.precisions
                if p in get_backend(f).precisions]

    def skipped(self) -> list[str]:
        """Notes on (framework, precision) pairs left out because the backend does not implement them."""
        return [f"{get_backend(f).display} has no {p} precision; left out" for f in self.frameworks
                for p in self.precisions if p not in get_backend(f).precisions]


def resolve_workloads(config: RunConfig) -> dict[str, Workload]:
    """The config's workloads (names or TOML paths) by workload name, with data_dir and scale applied."""
    out: dict[str, Workload] = {}
    for entry in config.workloads:
        w = resolve_workload(entry, config.data_dir, config.scale)
        if w.name in out:
            raise UserError(f"two workloads are named {w.name!r}; give each TOML workload a unique name")
        out[w.name] = w
    return out


def iter_runs(config: RunConfig, on_event: EventHandler | None = None,
              workdir: Path | None = None, plan: Iterable[RunSpec] | None = None,
              executor: Executor | None = None, skip: Iterable[RunSpec] = (), first_order: int = 0) -> Iterator[RunRecord]:
    """Yield one :class:`RunRecord` per planned cell as soon as its worker has finished.

    ``plan`` (default: :func:`make_plan` of the config) is consumed lazily, one spec after the previous record
    was taken (per free executor slot), so a caller may decide the rest of the plan from the records so far
    (see :mod:`.adaptive`). Specs in ``skip`` (already measured: ``--resume``) are left out; ``first_order``
    numbers the first new record. A framework that is not installed, or whose import failed in a worker, is
    tried once: its later cells are recorded ``unavailable`` with the same message, without a worker."""
    executor = executor or make_executor(config.executor, config.device, config.gpus, config.ray_address)
    skip = set(skip)
    with tempfile.TemporaryDirectory(prefix="isobench-") as tmp:
        work = Path(workdir or tmp)
        workloads = resolve_workloads(config)
        inputs = {(name, w.seed): write_inputs(w, work / f"inputs-{i}.npz", config.data_dir)
                  for i, (name, w) in enumerate(workloads.items())}  # the first seed's now: data errors stop here

        def job(order: int, spec: RunSpec) -> Job:
            base = workloads[spec.workload]
            seed = training_seed(base, spec.repeat, config.seeds)
            if (spec.workload, seed) not in inputs:
                inputs[spec.workload, seed] = write_inputs(base, work / f"inputs-{len(inputs)}.npz", config.data_dir,
                                                           seed)
            return Job(order, spec, replace(base, seed=seed), inputs[spec.workload, seed], config.timeout_s,
                       config.max_memory_bytes)

        unavailable = {f: f"{b.display} is not installed; install it: {b.install_hint}"
                       for f in config.frameworks if not is_installed(b := get_backend(f))}
        if plan is None:
            plan = make_plan(list(workloads), config.cells(), config.repeats, config.threads, config.seed, config.device)
        held: list[RunRecord] = []  # records made without a worker, handed out between the executor's

        def jobs() -> Iterator[Job]:
            order = first_order
            for spec in plan:
                if spec in skip:
                    continue
                if spec.framework in unavailable:
                    held.append(RunRecord(spec=spec, status=UNAVAILABLE, order=order, error=unavailable[spec.framework]))
                else:
                    yield job(order, spec)
                order += 1

        try:
            for record in executor.run(jobs(), work, on_event):
                yield from _drain(held)
                if record.status == UNAVAILABLE and record.error:
                    unavailable.setdefault(record.spec.framework, record.error)
                yield record
            yield from _drain(held)
        finally:
            executor.close()


def _drain(held: list[RunRecord]) -> Iterator[RunRecord]:
    while held:
        yield held.pop(0)


def new_result_set(config: RunConfig) -> ResultSet:
    return ResultSet(config=asdict(config), environment=host_environment(), isobench_version=__version__,
                     created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def run_benchmark(config: RunConfig, on_event: EventHandler | None = None,
                  on_record: Callable[[RunRecord], None] | None = None) -> ResultSet:
    """Run the whole plan and return its :class:`ResultSet` (notebook-friendly entry point); with
    ``config.target_width`` set, adaptive repeats (:class:`~.adaptive.AdaptiveRuns`)."""
    from .adaptive import AdaptiveRuns  # it imports this module

    results = new_result_set(config)
    for record in AdaptiveRuns(config, on_event) if config.target_width is not None else iter_runs(config, on_event):
        results.runs.append(record)
        if on_record:
            on_record(record)
    return results


def parity_summary(report: ParityReport) -> dict[str, Any]:
    """The compact, JSON-ready form of a :class:`~.parity.ParityReport` kept with a session
    (``ResultSet.parity[workload]``): the verdict, and per framework and check the largest absolute
    difference against its tolerance. Full details stay with ``isobench parity``."""
    def checks(cs) -> list[dict[str, Any]]:
        return [{"name": c.name, "max_abs_diff": c.max_abs_diff, "tolerance": c.tolerance, "passed": c.passed}
                for c in cs]
    return {"workload": report.workload, "passed": report.passed, "reference_accuracy": report.reference_accuracy,
            "frameworks": [{"framework": f.framework, "mode": f.mode, "precision": f.precision, "status": f.status,
                            "error": f.error,
                            "passed": f.passed, "checks": checks(f.checks)} for f in report.frameworks],
            "cross": checks(report.cross)}


__all__ = ["RunConfig", "iter_runs", "make_plan", "new_result_set", "parity_summary", "run_benchmark", "run_cell"]
