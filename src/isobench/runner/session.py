"""One session of ``isobench run``, the same from the command line and from Python (:func:`run_session`).

The workflow: plan the matrix; check parity of every workload through the session's executor; run every
planned cell through that executor (adaptive repeats with ``--until-confident``); keep each record as soon as
it arrives: in the results database, one transaction per run, and in the JSON file, rewritten after each run.
Ctrl-C or SIGTERM stops the session: the finished runs are kept and the session is marked interrupted.
``resume`` continues a stored session: the cells of its plan without a record run, and cells the executor lost
run again, their new record replacing the lost one.

The runner neither imports the store nor renders anything: the caller passes a store (any object with the
:class:`SessionStore` methods) and a :class:`Watcher` that displays what happens.
"""
from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable, Generator, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from .. import __version__
from ..backends import get_backend, is_installed
from ..config import RunConfig, parity_scale, resolve_workloads
from ..data import split_sizes
from ..errors import UserError
from ..measure import host_environment
from ..results import ParityResult, PeakRecord, PrivacyRecord, ResultSet, RunRecord, RunSpec
from ..workloads import Workload, counterpart
from ..workloads.privacy import guarantee
from .adaptive import AdaptiveRuns, Precision
from .executor import Executor, make_executor
from .local import EventHandler, kill_running
from .parity import parity_summary, run_parity
from .peak import peak_frameworks, session_peaks
from .plan import make_plan, private_names
from .runs import iter_runs

FINISHED, INTERRUPTED, FAILED = "finished", "interrupted", "failed"  # a session's end (FAILED: isobench raised)


class SessionStore(Protocol):
    """What a session writes to a results database (:class:`isobench.store.Store` is one)."""
    def create_session(self, results: ResultSet) -> int: ...  # returns the new session's id
    def reopen_session(self, session_id: int) -> None: ...
    def set_parity(self, session_id: int, parity: dict[str, ParityResult]) -> None: ...
    def set_peaks(self, session_id: int, peaks: dict[str, PeakRecord]) -> None: ...
    def recent_peak(self, key: dict[str, Any]) -> PeakRecord | None: ...  # see runner.peak.PeakStore
    def add_peak(self, peak: PeakRecord) -> None: ...
    def add_run(self, session_id: int, record: RunRecord) -> None: ...
    def replace_run(self, session_id: int, record: RunRecord) -> None: ...
    def finish_session(self, session_id: int, status: str) -> None: ...


class Watcher:
    """Follows a session as it runs; every method does nothing here (the command line's draws progress)."""

    def started(self, session: "Session") -> None:
        """The plan is made; nothing has run or been stored yet."""

    def parity_started(self, workload: str, cells: int) -> None:
        """The parity check of ``workload`` (a name or TOML path) starts ``cells`` workers."""

    def parity_done(self, summary: ParityResult) -> None:
        """One workload's parity result (:func:`~.parity.parity_summary`)."""

    def peak_started(self, framework: str, again: bool = False) -> None:
        """``framework``'s peak is being measured (no recent uncontended stored one; ``again``: its rate was below
        70% of the machine peak)."""

    def peaks_done(self, peaks: dict[str, PeakRecord]) -> None:
        """Every framework's peak record (:func:`~.peak.session_peaks`): measured, reused or its error."""

    def runs_started(self, session: "Session") -> None:
        """Measuring starts: ``session.todo`` runs at most."""

    def event(self, spec: RunSpec, event: dict) -> None:
        """A worker's progress (start, epoch), during parity and measuring."""

    def record(self, record: RunRecord) -> None:
        """A measured run, already kept."""


@dataclass
class Session:
    """A session as it runs and after: configuration, results so far and how far through its plan."""
    config: RunConfig
    results: ResultSet
    workloads: list[str]                # their names, in the config's order
    plan: list[RunSpec]                 # the fixed plan (adaptive: its first config.repeats blocks)
    done: set[RunSpec]                  # measured before this call (--resume)
    lost: dict[RunSpec, RunRecord]      # --resume: records of cells the executor lost, to rerun and replace
    total: int                          # runs in the whole plan (adaptive: at most)
    todo: int                           # runs this call starts (adaptive: at most)
    resumed: bool = False
    measured: int = 0                   # runs finished in this call
    status: str = FAILED                # FINISHED or INTERRUPTED once run_session returns
    adaptive: AdaptiveRuns | None = field(default=None, repr=False)

    @property
    def precision(self) -> Precision | None:
        """Adaptive repeats: the widest interval after the last block (None otherwise, or if interrupted)."""
        return self.adaptive.precision if self.adaptive else None

    @property
    def ok(self) -> bool:
        """Finished, and every run ok."""
        return self.status == FINISHED and all(r.ok for r in self.results.runs)


def new_result_set(config: RunConfig) -> ResultSet:
    return ResultSet(config=asdict(config), environment=host_environment(), isobench_version=__version__,
                     created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def plan_session(config: RunConfig, resume: ResultSet | None = None) -> Session:
    """The :class:`Session` of ``config``, or the continuation of the stored ``resume`` (whose configuration
    ``config`` is), before anything runs."""
    resolved = resolve_workloads(config)
    results = resume or new_result_set(config)
    if resume is None:  # a resumed session keeps the guarantee it recorded
        results.privacy = privacy_guarantees(resolved.values(), config.data_dir)
    done = {r.spec for r in results.runs if not r.lost}  # a cell the executor lost runs again
    workloads = list(resolved)
    plan = make_plan(workloads, config.cells(), config.repeats, config.threads, config.seed, config.device,
                     private_names(resolved), config.warmup)
    warm = sum(s.warmup for s in plan)
    total = warm + (len(plan) - warm) // max(config.repeats, 1) * (
        config.max_repeats if config.adaptive else config.repeats)
    return Session(config, results, workloads, plan, done, {r.spec: r for r in results.runs if r.lost}, total,
                   total - len(done & set(plan)), resumed=resume is not None)


def privacy_guarantees(workloads: Iterable[Workload], data_dir: str | None = None) -> dict[str, PrivacyRecord]:
    """The (epsilon, delta) guarantee of every DP-SGD workload among ``workloads``, computed once here in the parent
    by the accountant library (:func:`~isobench.workloads.privacy.guarantee`; a missed ``target_epsilon`` is a
    UserError before anything runs), with ``counterpart``: the non-private workload of the session it is compared
    with (``None`` if that is not among ``workloads``)."""
    workloads = list(workloads)
    names = {w.name for w in workloads}
    return {w.name: PrivacyRecord.from_dict({**guarantee(w, split_sizes(w, data_dir)[0]).to_dict(),
                                             "counterpart": c if (c := counterpart(w.name)) in names else None})
            for w in workloads if w.optimizer.private}


def run_session(config: RunConfig, *, store: SessionStore | None = None, resume: ResultSet | None = None,
                parity: bool = True, peaks: bool = True, json_path: Path | None = None,
                watcher: Watcher | None = None) -> Session:
    """Run one session of ``config`` (validated: :meth:`RunConfig.check`) and return it, finished or interrupted.

    ``store`` keeps the session and each run as it arrives; ``resume`` is a stored session to continue (``config``
    its stored configuration); ``parity`` checks every workload's parity first (not again on a resumed session
    that has its result); ``peaks`` takes the machine's peak of every framework (a recent stored one, else
measured in a worker first: :mod:`.peak`) so that reports give % of peak; ``json_path`` is rewritten after every
run. Ctrl-C (SIGTERM too, from the main thread)
    ends the session as ``interrupted`` with its finished runs kept; any other exception marks it failed and
    propagates."""
    watcher = watcher or Watcher()
    executor = make_executor(config.executor, config.device, config.gpus, config.ray_address)  # Ray missing: stop
    session, records = plan_session(config, resume), None
    status, restore_sigterm = FAILED, _interrupt_on_sigterm()
    try:
        executor.start()  # e.g. a Ray cluster without GPUs for a cuda session: one line, nothing recorded
        watcher.started(session)
        _open(session, store)
        if parity and not session.results.parity:
            _check_parity(session, executor, store, watcher)
        if peaks and not session.results.peaks:
            _take_peaks(session, store, watcher)
        watcher.runs_started(session)
        records = _records(session, executor, watcher.event)
        for record in records:
            _keep(session, record, store, json_path)
            watcher.record(record)
        status = FINISHED
    except KeyboardInterrupt:
        status = INTERRUPTED
    finally:
        if records is not None:
            records.close()  # the executor stops what still runs (Ray: cancels its tasks)
        if status != FINISHED:  # a worker started just before an interruption reached its own clean-up; a
            kill_running()      # finished session has none left, and must not kill a concurrent session's workers
        executor.close()
        restore_sigterm()
        if store and session.results.session_id is not None:
            store.finish_session(session.results.session_id, status)
    session.status = status
    if json_path:
        write_json(session.results, json_path)
    return session


def _open(session: Session, store: SessionStore | None) -> None:
    if store and session.resumed:
        store.reopen_session(session.results.session_id)
    elif store:
        session.results.session_id = store.create_session(session.results)


def _check_parity(session: Session, executor: Executor, store: SessionStore | None, watcher: Watcher) -> None:
    """Parity of every workload on the installed chosen frameworks, through the session's executor, kept in the
    session (keyed by workload name, as the runs are)."""
    config, results = session.config, session.results
    cells = [c for c in config.cells() if is_installed(get_backend(c.framework))]
    if not cells:
        return
    for w in config.workloads:
        watcher.parity_started(w, len(cells))
        report = run_parity(w, cells, config.threads, config.timeout_s, on_event=watcher.event,
                            data_dir=config.data_dir, device=config.device, executor=executor,
                            scale=parity_scale(w, config.scale))
        results.parity[report.workload] = parity_summary(report)
        watcher.parity_done(results.parity[report.workload])
    if store:
        store.set_parity(results.session_id, results.parity)


def _take_peaks(session: Session, store: SessionStore | None, watcher: Watcher) -> None:
    """The peaks the session's runs are compared with, kept in the session (and its stored row)."""
    config = session.config
    frameworks = peak_frameworks((c.framework for c in config.cells()), config.device)
    if not frameworks or config.executor != "local":  # a cluster's nodes are not this machine
        return
    session.results.peaks = session_peaks(frameworks, config.threads, config.device, store, gpu=(config.gpus or [0])[0],
                                          precisions=config.precisions, on_start=watcher.peak_started)
    watcher.peaks_done(session.results.peaks)
    if store:
        store.set_peaks(session.results.session_id, session.results.peaks)


def _records(session: Session, executor: Executor, on_event: EventHandler) -> Generator[RunRecord, None, None]:
    config = session.config
    if config.adaptive:
        session.adaptive = AdaptiveRuns(config, on_event, executor)
        return iter(session.adaptive)
    return iter_runs(config, on_event, plan=session.plan, skip=session.done, executor=executor,
                     first_order=max((r.order for r in session.results.runs), default=-1) + 1)


def _keep(session: Session, record: RunRecord, store: SessionStore | None, json_path: Path | None) -> None:
    """One finished run into the results, the store (its own transaction: an interruption loses nothing already
    measured) and the JSON file (rewritten for the same reason); a rerun of a lost cell replaces its record."""
    results = session.results
    session.measured += 1
    if replaced := session.lost.pop(record.spec, None):
        record.replaces = f"{replaced.status} record: {replaced.error}"
        results.runs.remove(replaced)
    results.runs.append(record)
    if store and replaced:
        store.replace_run(results.session_id, record)
    elif store:
        store.add_run(results.session_id, record)
    if json_path:
        write_json(results, json_path)


def write_json(results: ResultSet, path: Path) -> None:
    """Write ``results`` to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        results.write_json(tmp)
        tmp.replace(path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None


def _interrupt_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt: finished runs kept); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)


def run_benchmark(config: RunConfig, on_event: EventHandler | None = None,
                  on_record: Callable[[RunRecord], None] | None = None, *, parity: bool = True, peaks: bool = True,
                  store: SessionStore | None = None, json_path: Path | None = None) -> ResultSet:
    """Run a session of ``config`` as ``isobench run`` does (the same defaults, parity check included) and return
    its :class:`ResultSet`: the notebook-friendly entry point. The config is checked first; its notes (e.g. a
    precision a framework lacks) come as warnings. ``on_event`` and ``on_record`` follow the workers and runs."""
    for note in config.check():
        warnings.warn(note, stacklevel=2)
    return run_session(config, store=store, parity=parity, peaks=peaks, json_path=json_path,
                       watcher=_Callbacks(on_event, on_record)).results


class _Callbacks(Watcher):
    def __init__(self, on_event: EventHandler | None, on_record: Callable[[RunRecord], None] | None):
        self.on_event, self.on_record = on_event, on_record

    def event(self, spec: RunSpec, event: dict) -> None:
        if self.on_event:
            self.on_event(spec, event)

    def record(self, record: RunRecord) -> None:
        if self.on_record:
            self.on_record(record)
