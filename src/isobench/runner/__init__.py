"""Expand the matrix, prepare identical inputs, run every cell in a fresh worker through an executor, and run
whole sessions (:func:`run_session`: parity, plan, records kept as they arrive, resume, interruption).

Layout: :mod:`.plan` (the interleaved plan), :mod:`.inputs` (the identical inputs file), :mod:`.runs` (the
records of a plan), :mod:`.adaptive` (repeats until confident), :mod:`.parity`, :mod:`.session`;
:mod:`.executor` (the registry, the local executor) and :mod:`.ray_executor`; :mod:`.local` and :mod:`.worker`
(one supervised worker process); :mod:`.deploy` and :mod:`.deploy_worker` (``isobench deploy``: export and serving
workers).

Names are imported from their module on first use (:mod:`isobench._lazy`): a worker process imports
:mod:`.worker` alone, never the session, statistics or configuration it would otherwise carry into its figures."""
from .._lazy import lazy_exports

_EXPORTS = {"RunConfig": "..config", "resolve_workloads": "..config", "run_cell": ".local",
            "parity_summary": ".parity", "run_parity": ".parity", "make_plan": ".plan", "iter_runs": ".runs",
            "Session": ".session", "Watcher": ".session", "new_result_set": ".training", "run_benchmark": ".session",
            "run_session": ".session"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
