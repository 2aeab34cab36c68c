"""The training session (``isobench run``): its kind for the loop of :func:`.session.run_session`.

The plan is the interleaved matrix of cells x repeats (:func:`.plan.make_plan`, warm-up blocks first); before
measuring, every workload's parity is checked through the session's executor and the machine's peak is taken
(:mod:`.peak`); the units are then measured in fresh workers (:func:`.runs.iter_runs`, or :mod:`.adaptive` under
``--until-confident``). Each DP-SGD workload's privacy guarantee is computed once, here in the parent, when the
session is created.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..backends import get_backend, is_installed
from ..config import RunConfig, parity_scale, refusals, resolve_workloads
from ..data import split_sizes
from ..results import TRAINING, PrivacyRecord, Record, ResultSet
from ..workloads import Workload, counterpart
from ..workloads.privacy import guarantee
from .adaptive import AdaptiveRuns
from .executor import Executor
from .local import EventHandler
from .parity import parity_summary, run_parity
from .peak import peak_frameworks, session_peaks
from .plan import make_plan
from .runs import iter_runs
from .session import Session, SessionKind, SessionStore, Watcher, new_results


def new_result_set(config: RunConfig) -> ResultSet:
    return new_results(config, TRAINING)


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


class TrainingKind(SessionKind):
    """Training sessions: ``parity`` and ``peaks`` say whether to check parity and take the machine's peak first."""
    name, command, config_type, units = TRAINING, "isobench run", RunConfig, "runs"

    def __init__(self, parity: bool = True, peaks: bool = True):
        self.parity, self.peaks = parity, peaks

    def new_results(self, config: RunConfig) -> ResultSet:
        results = new_result_set(config)
        results.privacy = privacy_guarantees(resolve_workloads(config).values(), config.data_dir)
        return results

    def plan(self, config: RunConfig, results: ResultSet) -> tuple[list[str], list[Any], int]:
        resolved = resolve_workloads(config)
        plan = make_plan(list(resolved), config.cells(), config.repeats, config.threads, config.seed, config.device,
                         refusals(resolved, config.cells(), config.device), config.warmup)
        warm = sum(s.warmup for s in plan)
        total = warm + (len(plan) - warm) // max(config.repeats, 1) * (
            config.max_repeats if config.adaptive else config.repeats)
        return list(resolved), plan, total

    def prepare(self, session: Session, executor: Executor, store: SessionStore | None, watcher: Watcher,
                work: Path, keep: Callable[[Record], None]) -> None:
        if self.parity and not session.results.parity:
            _check_parity(session, executor, store, watcher)
        if self.peaks and not session.results.peaks:
            _take_peaks(session, store, watcher)

    def records(self, session: Session, executor: Executor, work: Path, on_event: EventHandler) -> Iterator[Record]:
        config = session.config
        if config.adaptive:
            session.adaptive = AdaptiveRuns(config, on_event, executor)
            return iter(session.adaptive)
        return iter_runs(config, on_event, plan=session.plan, skip=session.done, executor=executor,
                         first_order=max((r.order for r in session.results.runs), default=-1) + 1)


def _check_parity(session: Session, executor: Executor, store: SessionStore | None, watcher: Watcher) -> None:
    """Parity of every workload on the installed chosen frameworks, through the session's executor, kept in the
    session (keyed by workload name, as the runs are)."""
    config, results = session.config, session.results
    installed = [c for c in config.cells() if is_installed(get_backend(c.framework))]
    if not installed:
        return
    resolved = resolve_workloads(config)
    refused = refusals(resolved, installed, config.device)
    for w, name in zip(config.workloads, resolved):  # the config's entries (names or TOML paths) and their names
        cells = [c for c in installed if (name, c) not in refused]
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
    session.results.peaks = session_peaks(frameworks, config.threads, config.device, store,
                                          gpu=(config.gpus or [0])[0], precisions=config.precisions,
                                          on_start=watcher.peak_started)
    watcher.peaks_done(session.results.peaks)
    if store:
        store.set_peaks(session.results.session_id, session.results.peaks)
