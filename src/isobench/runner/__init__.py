"""Expand the matrix, prepare identical inputs, run every cell in a fresh worker through an executor, and run
whole sessions (:func:`run_session`: parity, plan, records kept as they arrive, resume, interruption).

Layout: :mod:`.plan` (the interleaved plan), :mod:`.inputs` (the identical inputs file), :mod:`.runs` (the
records of a plan), :mod:`.adaptive` (repeats until confident), :mod:`.parity`, :mod:`.session`;
:mod:`.executor` (the registry, the local executor) and :mod:`.ray_executor`; :mod:`.local` and :mod:`.worker`
(one supervised worker process); :mod:`.deploy` and :mod:`.deploy_worker` (``isobench deploy``: export and serving
workers)."""
from __future__ import annotations

from ..config import RunConfig, resolve_workloads
from .local import run_cell
from .parity import parity_summary, run_parity
from .plan import make_plan
from .runs import iter_runs
from .session import Session, Watcher, new_result_set, run_benchmark, run_session

__all__ = ["RunConfig", "Session", "Watcher", "iter_runs", "make_plan", "new_result_set", "parity_summary",
           "resolve_workloads", "run_benchmark", "run_cell", "run_parity", "run_session"]
