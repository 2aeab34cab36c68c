"""Expand the matrix, prepare identical inputs, run every cell in a fresh worker, return the records."""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from .. import __version__
from ..backends import get_backend, is_installed
from ..measure import host_environment
from ..results import UNAVAILABLE, ResultSet, RunRecord, RunSpec
from ..workloads import get_workload
from .inputs import write_inputs
from .local import EventHandler, run_cell
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

    def cells(self) -> list[tuple[str, str]]:
        return [(f, self.modes.get(f) or get_backend(f).modes[0]) for f in self.frameworks]


def iter_runs(config: RunConfig, on_event: EventHandler | None = None,
              workdir: Path | None = None) -> Iterator[RunRecord]:
    """Yield one :class:`RunRecord` per planned cell as soon as its worker has finished."""
    with tempfile.TemporaryDirectory(prefix="isobench-") as tmp:
        work = Path(workdir or tmp)
        inputs = {w: write_inputs(get_workload(w), work / f"inputs-{i}.npz") for i, w in enumerate(config.workloads)}
        missing = {f: get_backend(f) for f in config.frameworks if not is_installed(get_backend(f))}
        for order, spec in enumerate(make_plan(config.workloads, config.cells(), config.repeats,
                                               config.threads, config.seed)):
            if spec.framework in missing:
                b = missing[spec.framework]
                yield RunRecord(spec=spec, status=UNAVAILABLE, order=order,
                                error=f"{b.display} is not installed; install it: {b.install_hint}")
                continue
            if on_event:
                on_event(spec, {"event": "start"})
            yield run_cell(spec, inputs[spec.workload], work, order=order, timeout=config.timeout_s,
                           on_event=on_event)


def new_result_set(config: RunConfig) -> ResultSet:
    return ResultSet(config=asdict(config), environment=host_environment(), isobench_version=__version__,
                     created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def run_benchmark(config: RunConfig, on_event: EventHandler | None = None,
                  on_record: Callable[[RunRecord], None] | None = None) -> ResultSet:
    """Run the whole plan and return its :class:`ResultSet` (notebook-friendly entry point)."""
    results = new_result_set(config)
    for record in iter_runs(config, on_event):
        results.runs.append(record)
        if on_record:
            on_record(record)
    return results


__all__ = ["RunConfig", "iter_runs", "make_plan", "new_result_set", "run_benchmark", "run_cell"]
