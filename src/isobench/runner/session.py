"""One session, of any kind, the same from the command line and from Python (:func:`run_session`).

A session is planned, prepared and measured by one loop; its *kind* (:class:`SessionKind`: training in
:mod:`.training`, deployment in :mod:`.deploy`) supplies what differs: its results, its plan of units (a training
cell's repeat; an export or a serving process), what is done before measuring (parity and the machine's peak;
trained weights and exports) and the jobs of its units. The loop runs every job through the session's executor
(local or Ray, with its timeout and memory cap), keeps each record as soon as it arrives (in the results database,
one transaction per record, and in the JSON file, rewritten after each), and handles Ctrl-C or SIGTERM (the records
so far are kept and the session is marked interrupted) and ``resume``: a stored session of the same kind goes on with
the units of its plan that have no record, and units the executor lost run again, their new records replacing the
lost ones.

The runner neither imports the store nor renders anything: the caller passes a store (any object with the
:class:`SessionStore` methods) and a :class:`Watcher` that displays what happens.
"""
from __future__ import annotations

import importlib
import signal
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from .. import __version__
from ..errors import UserError
from ..measure import host_environment
from ..results import ParityResult, PeakRecord, Record, ResultSet
from .executor import Executor, make_executor
from .local import EventHandler, kill_running

FINISHED, INTERRUPTED, FAILED = "finished", "interrupted", "failed"  # a session's end (FAILED: isobench raised)


class SessionStore(Protocol):
    """What a session writes to a results database (:class:`isobench.store.Store` is one)."""
    path: Path
    def create_session(self, results: ResultSet) -> int: ...  # returns the new session's id
    def reopen_session(self, session_id: int) -> None: ...
    def set_parity(self, session_id: int, parity: dict[str, ParityResult]) -> None: ...
    def set_peaks(self, session_id: int, peaks: dict[str, PeakRecord]) -> None: ...
    def set_weights(self, session_id: int, weights: dict[str, Any]) -> None: ...
    def recent_peak(self, key: dict[str, Any]) -> PeakRecord | None: ...  # see runner.peak.PeakStore
    def add_peak(self, peak: PeakRecord) -> None: ...
    def add_record(self, session_id: int, record: Record) -> None: ...
    def replace_record(self, session_id: int, record: Record) -> None: ...
    def finish_session(self, session_id: int, status: str) -> None: ...


class Watcher:
    """Follows a session as it runs; every method does nothing here (the command line's draws progress). The
    preparation hooks belong to one kind each: parity and peaks to training, weights to deployment."""

    def started(self, session: "Session") -> None:
        """The plan is made; nothing has run or been stored yet."""

    def parity_started(self, workload: str, cells: int) -> None:
        """The parity check of ``workload`` (a name or TOML path) starts ``cells`` workers."""

    def parity_done(self, summary: ParityResult) -> None:
        """One workload's parity result (:func:`~.parity.parity_summary`)."""

    def peak_started(self, framework: str, again: bool = False) -> None:
        """The machine's peak for ``framework`` is being measured (no recent stored one; ``again``: its rate was
        below 70% of the best, see :func:`~.peak.session_peaks`)."""

    def peaks_done(self, peaks: dict[str, PeakRecord]) -> None:
        """Every framework's peak record (:func:`~.peak.session_peaks`), once all are in: measured, reused or its
        error."""

    def training(self, workload: str, trained_by: str) -> None:
        """Deployment: the served weights of ``workload`` are being trained (no cached copy)."""

    def weights(self, workload: str, info: dict[str, Any]) -> None:
        """Deployment: the weights ``workload`` serves, trained now or taken from the cache."""

    def runs_started(self, session: "Session") -> None:
        """Measuring starts: ``session.todo`` units at most."""

    def event(self, spec: Any, event: dict) -> None:
        """A worker's progress (start, epoch, timed), while preparing and measuring."""

    def record(self, record: Record) -> None:
        """A record, already kept (preparation records such as exports included)."""


@dataclass
class Session:
    """A session as it runs and after: its kind, configuration, results so far and how far through its plan."""
    kind: "SessionKind"
    config: Any
    results: ResultSet
    workloads: list[str]                # their names, in the config's order
    plan: list[Any]                     # the units of the fixed plan (adaptive: its first config.repeats blocks)
    done: set[Any]                      # units measured before this call (--resume)
    lost: dict[Any, list[Record]]       # --resume: records of units the executor lost, to rerun and replace
    total: int                          # units in the whole plan (adaptive: at most)
    todo: int                           # units this call starts (adaptive: at most)
    resumed: bool = False
    finished: set[Any] = field(default_factory=set)  # units whose records were kept in this call
    status: str = FAILED                # FINISHED or INTERRUPTED once run_session returns
    adaptive: Any = field(default=None, repr=False)  # training's AdaptiveRuns under --until-confident
    prepared: dict[str, Any] = field(default_factory=dict, repr=False)  # what the kind prepared (per workload)

    @property
    def measured(self) -> int:
        """Units finished in this call (a serving process's records count once)."""
        return len(self.finished)

    @property
    def precision(self):
        """Adaptive repeats: the widest interval after the last block (None otherwise, or if interrupted)."""
        return self.adaptive.precision if self.adaptive else None

    @property
    def ok(self) -> bool:
        """Finished, and every record as its kind requires (:meth:`SessionKind.ok`)."""
        return self.status == FINISHED and self.kind.ok(self)


class SessionKind:
    """What one kind of session supplies to the loop of :func:`run_session`."""
    name: str                           # results.TRAINING or results.DEPLOYMENT
    command: str                        # the command that runs it, for messages ("isobench run")
    units: str                          # what its units are called in messages ("runs")

    def new_results(self, config: Any) -> ResultSet:
        raise NotImplementedError

    def plan(self, config: Any, results: ResultSet) -> tuple[list[str], list[Any], int]:
        """(the workloads' names, the fixed plan's units in order, the units of the whole plan)."""
        raise NotImplementedError

    def unit(self, record: Record) -> Any:
        """The unit of the plan a record belongs to."""
        return record.spec

    def prepare(self, session: "Session", executor: Executor, store: SessionStore | None, watcher: Watcher,
                work: Path, keep: Callable[[Record], None]) -> None:
        """What the measured units need, done before them through the same executor (records it makes are kept)."""

    def records(self, session: "Session", executor: Executor, work: Path, on_event: EventHandler) -> Iterator[Record]:
        """Run the units of the plan that are to run; yield their records as they arrive."""
        raise NotImplementedError

    def ok(self, session: "Session") -> bool:
        return all(r.ok for r in session.results.records)

    def close(self, session: "Session") -> None:
        """The session ended (finished, interrupted or failed): release what the kind holds."""


def new_results(config: Any, kind: str, **extra: Any) -> ResultSet:
    """An empty :class:`ResultSet` of ``kind`` for ``config``, with this machine's environment record."""
    return ResultSet(config={**asdict(config), **extra}, environment=host_environment(), isobench_version=__version__,
                     created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), kind=kind)


# the kinds of session, by results.ResultSet.kind: "module:class" of each SessionKind, imported on use (as the
# executors and backends are), so that the kinds' modules import this one and never the reverse
KINDS = {"training": "isobench.runner.training:TrainingKind", "deployment": "isobench.runner.deploy:DeploymentKind",
         "serving": "isobench.runner.serving:ServingKind"}


def kind_of_name(name: str, **options: Any) -> SessionKind:
    """The :class:`SessionKind` named ``name`` (a key of :data:`KINDS`), made with its ``options``."""
    module, cls = KINDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)


def kind_of(config: Any, **options: Any) -> SessionKind:
    """The kind of session a configuration runs (its ``kind``: a RunConfig's training, a DeployConfig's
    deployment), made with the kind's ``options`` (training: ``parity``, ``peaks``)."""
    return kind_of_name(config.kind, **options)


def check_resumable(results: ResultSet, command: str, session_id: int) -> None:
    """A one-line error unless the stored session ``results`` is of a kind ``command`` runs (``isobench deploy``:
    deployment and serving sessions), naming the command that continues it."""
    other = kind_of_name(results.kind)
    if other.command != command:
        raise UserError(f"session {session_id} is a {results.kind} session; continue it with "
                        f"'{other.command} --resume {session_id}'")


def plan_session(config: Any, resume: ResultSet | None = None, kind: SessionKind | None = None) -> Session:
    """The :class:`Session` of ``config``, or the continuation of the stored ``resume`` (whose configuration
    ``config`` is), before anything runs."""
    kind = kind or kind_of(config)
    results = resume or kind.new_results(config)
    workloads, plan, total = kind.plan(config, results)
    lost: dict[Any, list[Record]] = {}
    for r in results.records:
        if r.lost:
            lost.setdefault(kind.unit(r), []).append(r)
    done = {kind.unit(r) for r in results.records} - set(lost)
    return Session(kind, config, results, workloads, plan, done, lost, total, total - len(done & set(plan)),
                   resumed=resume is not None)


def run_session(config: Any, *, store: SessionStore | None = None, resume: ResultSet | None = None,
                parity: bool = True, peaks: bool = True, json_path: Path | None = None,
                watcher: Watcher | None = None) -> Session:
    """Run one session of ``config`` (validated: its ``check``; a :class:`~isobench.config.RunConfig` runs a training
    session, a :class:`~isobench.config.DeployConfig` a deployment session) and return it, finished or interrupted.

    ``store`` keeps the session and each record as it arrives; ``resume`` is a stored session of the same kind to
    continue (``config`` its stored configuration); ``parity`` and ``peaks`` (training) check every workload's parity
    first (not again on a resumed session that has its result) and take the machine's peak (a recent stored one,
    else measured in a worker first: :mod:`.peak`) so that reports give % of peak; ``json_path`` is rewritten after
    every record. Ctrl-C (SIGTERM too, from the main thread) ends the session as ``interrupted`` with its records
    kept; any other exception marks it failed and propagates."""
    watcher = watcher or Watcher()
    kind = kind_of(config, parity=parity, peaks=peaks)
    if resume is not None:
        check_resumable(resume, kind.command, resume.session_id)
    executor = make_executor(config.executor, config.device, config.gpus, config.ray_address)  # Ray missing: stop
    session, records = plan_session(config, resume, kind), None
    status, restore_sigterm = FAILED, _interrupt_on_sigterm()
    try:
        with tempfile.TemporaryDirectory(prefix=f"isobench-{kind.name}-") as tmp:
            work = Path(tmp)
            executor.start()  # e.g. a Ray cluster without GPUs for a cuda session: one line, nothing recorded
            watcher.started(session)
            _open(session, store)

            def keep(record: Record) -> None:
                _keep(session, record, store, json_path)
                watcher.record(record)

            kind.prepare(session, executor, store, watcher, work, keep)
            watcher.runs_started(session)
            records = kind.records(session, executor, work, watcher.event)
            for record in records:
                keep(record)
            status = FINISHED
    except KeyboardInterrupt:
        status = INTERRUPTED
    finally:
        if records is not None:
            records.close()  # the executor stops what still runs (Ray: cancels its tasks)
        if status != FINISHED:  # a worker started just before an interruption reached its own clean-up; a
            kill_running()      # finished session has none left, and must not kill a concurrent session's workers
        executor.close()
        kind.close(session)
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


def _keep(session: Session, record: Record, store: SessionStore | None, json_path: Path | None) -> None:
    """One finished record into the results, the store (its own transaction: an interruption loses nothing already
    measured) and the JSON file (rewritten for the same reason); a rerun of a lost unit replaces its records, and an
    export made again (its artifact was gone) replaces the stored one."""
    results, records = session.results, session.results.records_of(record)
    unit = session.kind.unit(record)
    session.finished.add(unit)
    replaced = next((r for r in session.lost.get(unit, ()) if r.spec == record.spec), None)
    replaced = replaced or next((r for r in records if r.spec == record.spec), None)
    if replaced is not None:
        if replaced.lost:
            record.replaces = f"{replaced.status} record: {replaced.error}"
        records.remove(replaced)
        if replaced in session.lost.get(unit, ()):
            session.lost[unit].remove(replaced)
    records.append(record)
    records.sort(key=lambda r: r.order)  # plan order, as the database returns them (parallel workers end in any)
    if store and replaced is not None:
        store.replace_record(results.session_id, record)
    elif store:
        store.add_record(results.session_id, record)
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
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt: finished records kept); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)


def run_benchmark(config: Any, on_event: EventHandler | None = None,
                  on_record: Callable[[Record], None] | None = None, *, parity: bool = True, peaks: bool = True,
                  store: SessionStore | None = None, json_path: Path | None = None) -> ResultSet:
    """Run a session of ``config`` as the command line does (the same defaults, a training session's parity check
    included) and return its :class:`ResultSet`: the notebook-friendly entry point. The config is checked first; its
    notes (e.g. a precision a framework lacks) come as warnings. ``on_event`` and ``on_record`` follow the workers
    and records."""
    for note in config.check():
        warnings.warn(note, stacklevel=2)
    return run_session(config, store=store, parity=parity, peaks=peaks, json_path=json_path,
                       watcher=_Callbacks(on_event, on_record)).results


class _Callbacks(Watcher):
    def __init__(self, on_event: EventHandler | None, on_record: Callable[[Record], None] | None):
        self.on_event, self.on_record = on_event, on_record

    def event(self, spec: Any, event: dict) -> None:
        if self.on_event:
            self.on_event(spec, event)

    def record(self, record: Record) -> None:
        if self.on_record:
            self.on_record(record)

