"""Expand the matrix, prepare identical inputs, run every cell in a fresh worker, return the records."""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import __version__
from ..backends import get_backend, is_installed
from ..measure import host_environment
from ..results import UNAVAILABLE, ResultSet, RunRecord, RunSpec
from ..errors import UserError
from ..workloads import Workload
from .inputs import resolve_workload, write_inputs
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
    modes: dict[str, str] = field(default_factory=dict)  # framework -> mode; default: the backend's first
    # adaptive repeats (runner.adaptive): after `repeats`, add blocks until every ratio's 95% interval is within
    # +/- target_width (a fraction of the ratio) or max_repeats is reached; None = exactly `repeats`
    target_width: float | None = None
    max_repeats: int | None = None
    data_dir: str | None = None  # real data sets (MNIST, CIFAR-10) for workloads that have one
    scale: float | None = None   # multiply synthetic data set sizes

    def cells(self) -> list[tuple[str, str]]:
        return [(f, self.modes.get(f) or get_backend(f).modes[0]) for f in self.frameworks]


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
              workdir: Path | None = None, plan: Iterable[RunSpec] | None = None) -> Iterator[RunRecord]:
    """Yield one :class:`RunRecord` per planned cell as soon as its worker has finished.

    ``plan`` (default: :func:`make_plan` of the config) is consumed lazily, one spec after the previous record
    was taken, so a caller may decide the rest of the plan from the records so far (see :mod:`.adaptive`)."""
    with tempfile.TemporaryDirectory(prefix="isobench-") as tmp:
        work = Path(workdir or tmp)
        workloads = resolve_workloads(config)
        inputs = {name: write_inputs(w, work / f"inputs-{i}.npz", config.data_dir)
                  for i, (name, w) in enumerate(workloads.items())}
        missing = {f: get_backend(f) for f in config.frameworks if not is_installed(get_backend(f))}
        if plan is None:
            plan = make_plan(list(workloads), config.cells(), config.repeats, config.threads, config.seed)
        for order, spec in enumerate(plan):
            if spec.framework in missing:
                b = missing[spec.framework]
                yield RunRecord(spec=spec, status=UNAVAILABLE, order=order,
                                error=f"{b.display} is not installed; install it: {b.install_hint}")
                continue
            if on_event:
                on_event(spec, {"event": "start"})
            yield run_cell(spec, workloads[spec.workload], inputs[spec.workload], work, order=order,
                           timeout=config.timeout_s,
                           on_event=on_event)


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
            "frameworks": [{"framework": f.framework, "mode": f.mode, "status": f.status, "error": f.error,
                            "passed": f.passed, "checks": checks(f.checks)} for f in report.frameworks],
            "cross": checks(report.cross)}


__all__ = ["RunConfig", "iter_runs", "make_plan", "new_result_set", "parity_summary", "run_benchmark", "run_cell"]
