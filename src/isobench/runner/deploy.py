"""The deployment session (``isobench deploy``): the same trained model exported and served along each deployment
path, a kind of the one session (:func:`.session.run_session`).

Before measuring, per workload: the inputs, the trained weights (trained once by a training worker of
``config.trained_by``, default the float64 numpy reference, so no framework is favoured; cached by the workload's
spec, see :func:`trained_weights`), the float64 reference logits of the test split (computed in this process); then
one export worker per (path, quantization), through the session's executor, each record kept as it arrives. The
artifacts go to the session's artifact folder (:func:`artifacts_dir`: beside the results database unless
``--keep-artifacts DIR`` says where; a temporary one without a database), so that ``--resume`` serves the same files
and the JSON points at them. The measured units are the serving processes: one per (path, quantization, repeat),
in interleaved blocks of a seeded random order as training runs are, each serving every batch size of the session
(smallest first: its first result is the cold start) and leaving one record per batch size. A path that cannot run
here (missing runtime, int8 it does not offer) is a record without a worker; a failed export leaves its serving
units out (its record carries the reason).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backends import deploy, get_backend
from ..config import DEPLOY_CALIBRATION, DeployConfig, cache_dir, resolve_workload
from ..errors import UserError
from ..results import DEPLOYMENT, EXPORT, OK, SERVE, UNAVAILABLE, DeployRecord, DeploySpec, Record, ResultSet, RunSpec
from ..workloads import Workload, workload_to_dict
from .executor import Executor
from .inputs import params_fingerprint, read_inputs, write_inputs
from .jobs import Job
from .local import EventHandler, training_task
from .session import Session, SessionKind, SessionStore, Watcher, new_results

CORRUPT_ENV = "ISOBENCH_DEPLOY_CORRUPT"  # test hook: PATH_ID[,...]: truncate that path's artifact before serving


def unavailable(path: deploy.DeployPath, quantize: str) -> str | None:
    """Why ``path`` cannot run at ``quantize`` here, without a worker; ``None``: it can be tried."""
    if quantize not in path.quantizations:
        return f"{path.id} offers no {quantize} quantization (it offers {', '.join(path.quantizations)})"
    return deploy.available(path)


def weights_key(workload: Workload, trained_by: str, data_dir: str | None) -> str:
    """The cache key of a workload's trained weights (float32, as every path serves them): its whole spec, the
    trainer, the data folder and the isobench version."""
    text = json.dumps({"workload": workload_to_dict(workload), "trained_by": trained_by, "data_dir": data_dir,
                       "isobench": __version__.split("+")[0], "layout": "float32"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trained_weights(workload: Workload, inputs: Path, config: DeployConfig, executor: Executor, work: Path,
                    on_train: Callable[[], None] = lambda: None) -> tuple[Path, dict[str, Any]]:
    """The trained weights of ``workload`` (npz, canonical layout) and their record: from the cache, else trained
    now in a fresh training worker of ``config.trained_by`` (its default mode) through the session's executor, and
    cached. The cached file is named by the weights' fingerprint (sha256 of the float32 parameters in name order),
    the name every report gives them; a small index file maps the cache key to it."""
    key = weights_key(workload, config.trained_by, config.data_dir)
    folder = cache_dir() / "weights"
    index = folder / f"{workload.name}-{key}.json"
    info: dict[str, Any] = {"trained_by": config.trained_by, "key": key}
    known = json.loads(index.read_text()) if index.exists() else {}
    cached = folder / f"{workload.name}-{known.get('fingerprint')}.npz"
    if not known or not cached.exists():
        on_train()
        backend = get_backend(config.trained_by)
        spec = RunSpec(workload.name, backend.name, backend.modes[0], 0, config.threads)
        out = work / f"weights-{workload.name}.npz"
        job = Job(-1, (spec,), training_task(spec, workload, inputs, save_params=out), files=("inputs",),
                  outputs=("save_params",), timeout=config.timeout_s)
        [record] = list(executor.run([job], work))
        if not record.ok or not out.exists():
            raise UserError(f"training the weights of {workload.name} with {backend.display} failed "
                            f"({record.status}: {record.error}); try --trained-by another framework")
        fingerprint = params_fingerprint(deploy.load_weights(out))
        cached = folder / f"{workload.name}-{fingerprint}.npz"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, tmp := cached.with_suffix(".tmp"))
        os.replace(tmp, cached)  # the weights first, then the index that names them: a reader never sees half
        index.with_suffix(".tmp").write_text(json.dumps({"fingerprint": fingerprint}))
        os.replace(index.with_suffix(".tmp"), index)
        info.update(trained_now=True, train_time_s=record.metrics.train_time_s,
                    trained_test_accuracy=record.metrics.test_accuracy)
    info.update(file=str(cached), fingerprint=params_fingerprint(deploy.load_weights(cached)))
    return cached, info


def artifacts_dir(config: DeployConfig, store: SessionStore | None, session_id: int | None) -> Path | None:
    """Where a session's exported artifacts are kept: ``--keep-artifacts DIR`` (one folder per session under it),
    else beside the results database (``artifacts/session-N``); ``None`` without either (a temporary folder, gone
    when the session ends)."""
    base = Path(config.keep_artifacts) if config.keep_artifacts else \
        Path(store.path).parent / "artifacts" if store is not None else None
    return base / f"session-{session_id}" if base is not None and session_id is not None else base


def _corrupt(artifact: Path) -> None:
    """Test hook (:data:`CORRUPT_ENV`): truncate the artifact (every file of a directory) to half its size."""
    for f in [artifact] if artifact.is_file() else [f for f in artifact.rglob("*") if f.is_file()]:
        with open(f, "r+b") as handle:
            handle.truncate(f.stat().st_size // 2)


class DeploymentKind(SessionKind):
    """Deployment sessions (the module docstring)."""
    name, command, config_type, units = DEPLOYMENT, "isobench deploy", DeployConfig, "workers"

    def __init__(self, **_options: Any):  # training's options (parity, peaks) do not apply
        self._tmp: tempfile.TemporaryDirectory | None = None

    def new_results(self, config: DeployConfig) -> ResultSet:
        return new_results(config, DEPLOYMENT, frameworks=config.frameworks)

    def exports(self, config: DeployConfig) -> list[DeploySpec]:
        return [DeploySpec.export(w, p, q, config.threads) for w in config.workloads for p in config.paths
                for q in config.quantize]

    def plan(self, config: DeployConfig, results: ResultSet) -> tuple[list[str], list[Any], int]:
        """Every export, then every serving process: repeat r of every (path, quantization) before repeat r + 1 of
        any, each block in a seeded random order (slow drift of the machine spreads over the rows). A path that
        cannot run here (:func:`unavailable`) has its export's record and no serving process."""
        rng, serving = random.Random(config.seed), []
        runnable = [(p, q) for p in config.paths for q in config.quantize if unavailable(deploy.get_path(p), q) is None]
        for repeat in range(config.repeats):
            block = [DeploySpec(w, p, q, None, repeat, config.threads) for w in config.workloads for p, q in runnable]
            rng.shuffle(block)
            serving += block
        plan = self.exports(config) + serving
        return list(config.workloads), plan, len(plan)

    def unit(self, record: Record) -> Any:
        return record.spec.unit

    def ok(self, session: Session) -> bool:
        """Every fp32 row within its logit tolerance, and no worker failed, crashed or timed out (a path that cannot
        run here, or int8 where a path offers none, is ``unavailable``: a row, not a failure)."""
        return all(r.status == UNAVAILABLE or r.ok for r in session.results.deploys)

    def prepare(self, session: Session, executor: Executor, store: SessionStore | None, watcher: Watcher,
                work: Path, keep: Callable[[Record], None]) -> None:
        """Per workload its inputs, trained weights and reference logits; then every export not already made (or
        whose artifact is gone), through the executor."""
        config, results = session.config, session.results
        folder = artifacts_dir(config, store, results.session_id)
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="isobench-artifacts-")
            folder = Path(self._tmp.name)
        for i, name in enumerate(session.workloads):
            w = resolve_workload(name, config.data_dir, config.scale)
            inputs = write_inputs(w, work / f"inputs-{i}.npz", config.data_dir)
            weights, info = trained_weights(w, inputs, config, executor, work, lambda: watcher.training(w.name,
                                                                                                        config.trained_by))
            watcher.weights(w.name, info)
            results.weights[w.name] = info
            logits = deploy.reference_logits(w, deploy.load_weights(weights), read_inputs(inputs)[0].x_test)
            np.savez(reference := work / f"reference-{i}.npz", logits=logits)
            session.prepared[w.name] = {"workload": w, "inputs": str(inputs), "weights": str(weights),
                                        "reference": str(reference), "logits": logits}
        if store:
            store.set_weights(results.session_id, results.weights)
        made = {r.spec: r for r in results.deploys if r.spec.kind == EXPORT and r.ok
                and r.environment.exported and Path(r.environment.exported["artifact"]).exists()}
        todo = [s for s in self.exports(config) if s not in made]
        jobs, order = [], max((r.order for r in results.deploys), default=-1) + 1
        for spec in todo:
            path = deploy.get_path(spec.path)
            if why := unavailable(path, spec.quantize):
                keep(DeployRecord.failed(spec, UNAVAILABLE, why, order=order))
            else:
                jobs.append(self._export_job(order, spec, session.prepared[spec.workload], config, folder))
            order += 1
        for record in executor.run(jobs, work, watcher.event):
            if record.ok and record.spec.path in os.environ.get(CORRUPT_ENV, "").split(","):
                _corrupt(Path(record.environment.exported["artifact"]))
            keep(record)

    def _export_job(self, order: int, spec: DeploySpec, prep: dict, config: DeployConfig, folder: Path) -> Job:
        out = folder / spec.workload / spec.path.replace("/", "-") / spec.quantize
        task = {"kind": EXPORT, "spec": spec.to_dict(), "deploy_path": asdict(deploy.get_path(spec.path)),
                "workload": workload_to_dict(prep["workload"]), "inputs": prep["inputs"], "weights": prep["weights"],
                "out_dir": str(out), "calibration": DEPLOY_CALIBRATION, "seed": prep["workload"].seed,
                "batch_sizes": config.batch_sizes}
        return Job(order, (spec,), task, files=("inputs", "weights"), outputs=("out_dir",), timeout=config.timeout_s,
                   max_memory_bytes=config.max_memory_bytes)

    measured = SERVE  # the kind of the units measured on the exports, and the job of one (ServingKind: load workers)

    @staticmethod
    def measured_job(order: int, unit, workload: Workload, inputs: str, reference: str, exported: dict,
                     config: DeployConfig) -> Job:
        return serving_job(order, unit, workload, inputs, reference, exported, config)

    def first_order(self, results: ResultSet) -> int:
        """The order of the first measured unit's record: after every record the session holds."""
        return max((r.order for r in results.deploys), default=-1) + 1

    def records(self, session: Session, executor: Executor, work: Path, on_event: EventHandler) -> Iterator[Record]:
        """The measured units not yet done whose path and precision were exported (a failed export's record stands
        for its units), through the executor."""
        config, results = session.config, session.results
        exported = {(r.spec.workload, r.spec.path, r.spec.quantize): r.environment.exported
                    for r in results.deploys if r.spec.kind == EXPORT and r.ok and r.environment.exported}

        def jobs() -> Iterator[Job]:
            order = self.first_order(results)
            for unit in session.plan:
                if unit.kind != self.measured or unit in session.done:
                    continue
                if (made := exported.get((unit.workload, unit.path, unit.quantize))) is not None:
                    prep = session.prepared[unit.workload]
                    yield self.measured_job(order, unit, prep["workload"], prep["inputs"], prep["reference"], made,
                                            config)
                    order += 1
        return executor.run(jobs(), work, on_event)

    def close(self, session: Session) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def serving_job(order: int, unit: DeploySpec, workload: Workload, inputs: str, reference: str, exported: dict,
                config: DeployConfig) -> Job:
    """The job of serving process ``unit`` (a serving spec without a batch size): ``exported`` (an export worker's
    ``environment.exported``) on ``workload``'s inputs file, its logits checked against the ``reference`` logits file,
    every batch size of ``config`` in turn, the smallest first (its first result is the process's cold start)."""
    sizes = sorted(config.batch_sizes)
    task = {"kind": SERVE, "spec": unit.to_dict() | {"batch_size": sizes[0]},
            "deploy_path": asdict(deploy.get_path(unit.path)), "workload": workload_to_dict(workload),
            "inputs": inputs, "reference": reference, "artifact": exported["artifact"], "exported": exported,
            "batch_sizes": sizes, "calls": config.calls, "warmup": config.warmup,
            "tolerance": deploy.logit_tolerance(workload, unit.quantize), "device": config.device}
    return Job(order, tuple(DeploySpec(unit.workload, unit.path, unit.quantize, b, unit.repeat, unit.threads)
                            for b in sizes), task, files=("inputs", "reference", "artifact"),
               timeout=config.timeout_s, max_memory_bytes=config.max_memory_bytes)


def runtime_versions() -> dict[str, str | None]:
    """Runtime name -> installed version (``None``: not installed)."""
    return dict(deploy.runtime_versions())


def catalogue() -> tuple[list[tuple[str, str, str | None]], list[tuple[deploy.DeployPath, str | None]]]:
    """What ``isobench list`` shows of deployment: runtimes ``(name, display, version)`` and every path with why it
    cannot run here (``None``: it can)."""
    versions = runtime_versions()
    runtimes = [(name, rt.display, versions.get(name)) for name, rt in deploy.RUNTIMES.items()]
    return runtimes, [(p, unavailable(p, "none")) for p in deploy.PATHS.values()]
