"""One session of ``isobench deploy``: the same trained model exported and served along each deployment path.

The workflow, per workload: train the weights once (a training worker of ``config.trained_by``, default the
float64 numpy reference, so no framework is favoured; cached by the workload's fingerprint, see
:func:`trained_weights`), compute the float64 reference logits of the test split in this process; then one export
worker per (path, quantization), and one serving worker per (path, quantization, batch size, repeat), repeats in
interleaved blocks of a seeded random order as training runs are. Every record is kept as it arrives (store and
JSON file). A path that cannot run (missing runtime, int8 it does not offer) is a record without a worker; a
failed export leaves its serving rows out (the export's record carries the reason).

Like :mod:`.session`, this module neither imports the store nor renders: the caller passes a store and a
:class:`DeployWatcher`.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import __version__
from ..backends import deploy, get_backend
from ..config import DEPLOY_CALIBRATION, DeployConfig, cache_dir, resolve_workload
from ..errors import UserError
from ..measure import host_environment
from ..results import CRASHED, FAILED, OK, TIMEOUT, UNAVAILABLE, DeployMetrics, DeployRecord, DeploySpec, ResultSet, RunSpec
from ..workloads import Workload, workload_to_dict
from .devices import worker_env
from .inputs import params_fingerprint, read_inputs, write_inputs
from .local import _read_events, kill_running, launch, run_cell
from .session import FINISHED, INTERRUPTED, _interrupt_on_sigterm, write_json

CORRUPT_ENV = "ISOBENCH_DEPLOY_CORRUPT"  # test hook: PATH_ID[,...]: truncate that path's artifact before serving
FP32_TOLERANCE = 1e-4  # until backends.deploy states its own: max |dlogit| <= this x max(1, max |reference logit|)


class DeployStore(Protocol):
    """What a deploy session writes (:class:`isobench.store.Store` is one)."""
    def create_session(self, results: ResultSet) -> int: ...
    def set_weights(self, session_id: int, weights: dict[str, Any]) -> None: ...
    def add_deploy(self, session_id: int, record: DeployRecord) -> None: ...
    def finish_session(self, session_id: int, status: str) -> None: ...


class DeployWatcher:
    """Follows a deploy session; every method does nothing here (the command line's draws progress)."""

    def started(self, session: "DeploySession") -> None: ...

    def training(self, workload: str, trained_by: str) -> None:
        """The served weights of ``workload`` are being trained (no cached copy)."""

    def weights(self, workload: str, info: dict[str, Any]) -> None:
        """The weights ``workload`` serves: trained now or taken from the cache."""

    def event(self, spec: DeploySpec, event: dict) -> None:
        """A worker's progress (start, loaded, timed)."""

    def record(self, record: DeployRecord) -> None:
        """A deploy worker's record, already kept."""


@dataclass
class DeploySession:
    config: DeployConfig
    results: ResultSet
    todo: int                              # worker records planned (exports + serving processes)
    status: str = FAILED

    @property
    def parity_failed(self) -> list[DeployRecord]:
        return [r for r in self.results.deploys if r.metrics and r.metrics.parity_passed is False]

    @property
    def ok(self) -> bool:
        """Finished, every fp32 row within its logit tolerance, and no worker failed, crashed or timed out (a path
        that cannot run here, or int8 where a path offers none, is ``unavailable``: a row, not a failure)."""
        return self.status == FINISHED and not self.parity_failed and \
            all(r.status in (OK, UNAVAILABLE) for r in self.results.deploys)


def tolerance(workload: Workload, quantize: str, reference: np.ndarray) -> float | None:
    """The fp32 logit tolerance (backends.deploy.logit_tolerance where it exists); ``None``: int8, not checked."""
    stated = getattr(deploy, "logit_tolerance", None)
    if stated is not None:
        return stated(workload, quantize)
    return None if quantize != "none" else FP32_TOLERANCE * max(1.0, float(np.abs(reference).max()))


def unavailable(path: deploy.DeployPath, quantize: str) -> str | None:
    """Why ``path`` cannot run at ``quantize`` here, without a worker; ``None``: it can be tried."""
    if quantize not in path.quantizations:
        return f"{path.id} offers no {quantize} quantization (it offers {', '.join(path.quantizations)})"
    check = getattr(deploy, "available", None)
    if check is not None:
        return check(path)
    if missing := deploy.missing(path):
        return f"needs {', '.join(missing)}, which is not installed"
    return None


def weights_key(workload: Workload, trained_by: str, data_dir: str | None) -> str:
    """The cache key of a workload's trained weights (float32, as every path serves them): its whole spec, the
    trainer, the data folder and the isobench version."""
    text = json.dumps({"workload": workload_to_dict(workload), "trained_by": trained_by, "data_dir": data_dir,
                       "isobench": __version__.split("+")[0], "layout": "float32"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trained_weights(workload: Workload, inputs: Path, config: DeployConfig, work: Path,
                    on_train: Callable[[], None] = lambda: None) -> tuple[Path, dict[str, Any]]:
    """The trained weights of ``workload`` (npz, canonical layout) and their record: from the cache, else trained
    now in a fresh training worker of ``config.trained_by`` (its default mode) and cached."""
    key = weights_key(workload, config.trained_by, config.data_dir)
    cached = cache_dir() / "weights" / f"{workload.name}-{key}.npz"
    info: dict[str, Any] = {"trained_by": config.trained_by, "key": key, "file": str(cached)}
    if not cached.exists():
        on_train()
        backend = get_backend(config.trained_by)
        spec = RunSpec(workload.name, backend.name, backend.modes[0], 0, config.threads)
        out = work / f"weights-{workload.name}.npz"
        record = run_cell(spec, workload, inputs, work, order=10_000, timeout=config.timeout_s, save_params=out,
                          env=worker_env("cpu"))
        if not record.ok or not out.exists():
            raise UserError(f"training the weights of {workload.name} with {backend.display} failed "
                            f"({record.status}: {record.error}); try --trained-by another framework")
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, cached.with_suffix(".tmp"))
        os.replace(cached.with_suffix(".tmp"), cached)
        info.update(trained_now=True, train_time_s=record.metrics.train_time_s,
                    trained_test_accuracy=record.metrics.test_accuracy)
    info["fingerprint"] = params_fingerprint(deploy.load_weights(cached))
    return cached, info


def plan_serving(config: DeployConfig, workloads: list[str]) -> list[DeploySpec]:
    """Every serving process: repeat r of every row before repeat r + 1 of any, each block in a seeded random
    order (slow drift of the machine spreads over the rows instead of favouring the first)."""
    rng, plan = random.Random(config.seed), []
    for repeat in range(config.repeats):
        block = [DeploySpec(w, p, q, b, repeat, config.threads) for w in workloads for p in config.paths
                 for q in config.quantize for b in config.batch_sizes]
        rng.shuffle(block)
        plan.extend(block)
    return plan


def _record(spec: DeploySpec, order: int, ended, result: dict | None, stderr: str, timeout: float | None) -> DeployRecord:
    """A deploy worker's record from how it ended (the same reading as :func:`.local.run_cell`'s)."""
    common = dict(spec=spec, order=order, wall_s=ended.wall_s, exit_code=ended.exit_code, signal=ended.signal,
                  stderr_tail=stderr or None)
    if ended.timed_out:
        return DeployRecord(status=TIMEOUT, error=f"exceeded the timeout of {timeout:g} s; killed", **common)
    if result is not None:
        m = result.get("metrics")
        metrics = DeployMetrics.from_dict({**m, "process_peak_rss_bytes": (ended.maxrss_kib or 0) * 1024 or None}) \
            if m else None
        return DeployRecord(status=result["status"], error=result.get("error"), metrics=metrics,
                            environment=result.get("environment") or {}, **common)
    if ended.signal is not None:
        name = signal.Signals(ended.signal).name if ended.signal in signal.valid_signals() else ended.signal
        return DeployRecord(status=CRASHED, error=f"worker killed by signal {name}", **common)
    last = [ln for ln in (stderr or "").splitlines() if ln.strip()]
    return DeployRecord(status=FAILED, error=f"worker exited with code {ended.exit_code} without a result: "
                                             f"{last[-1].strip() if last else 'no output'}", **common)


def _corrupt(artifact: Path) -> None:
    """Test hook (:data:`CORRUPT_ENV`): truncate the artifact (every file of a directory) to half its size."""
    for f in [artifact] if artifact.is_file() else [f for f in artifact.rglob("*") if f.is_file()]:
        with open(f, "r+b") as handle:
            handle.truncate(f.stat().st_size // 2)


class _Runner:
    """The workers of one session: tasks, files under ``work``, records in order."""

    def __init__(self, config: DeployConfig, work: Path, watcher: DeployWatcher):
        self.config, self.work, self.watcher, self.order = config, work, watcher, 0

    def launch(self, spec: DeploySpec, task: dict) -> DeployRecord:
        self.watcher.event(spec, {"event": "start"})
        order, self.order = self.order, self.order + 1
        task = {"kind": spec.kind, "spec": asdict(spec), "deploy_path": asdict(deploy.get_path(spec.path)), **task,
                "spawned_at": time.monotonic()}
        ended, result, stderr = launch(task, self.work / f"{spec.kind}-{order:04d}", worker_env("cpu"),
                                       self.config.timeout_s, None,
                                       lambda out: _read_events(out, spec, self.watcher.event))
        record = _record(spec, order, ended, result, stderr, self.config.timeout_s)
        if result and result.get("exported"):
            record.environment["exported"] = result["exported"]
        return record

    def without_worker(self, spec: DeploySpec, status: str, error: str) -> DeployRecord:
        order, self.order = self.order, self.order + 1
        return DeployRecord(spec=spec, status=status, order=order, error=error)


def new_deploy_results(config: DeployConfig) -> ResultSet:
    return ResultSet(config={**asdict(config), "frameworks": config.frameworks}, environment=host_environment(), isobench_version=__version__,
                     created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def run_deploy(config: DeployConfig, *, store: DeployStore | None = None, json_path: Path | None = None,
               watcher: DeployWatcher | None = None, workdir: Path | None = None) -> DeploySession:
    """Run one ``isobench deploy`` session of ``config`` (see the module docstring) and return it, finished or
    interrupted (Ctrl-C keeps every record so far); any other exception marks it failed and propagates."""
    watcher = watcher or DeployWatcher()
    results = new_deploy_results(config)
    workloads = {w.name: w for w in (resolve_workload(n, config.data_dir, config.scale) for n in config.workloads)}
    runnable = sum(unavailable(deploy.get_path(p), q) is None for p in config.paths for q in config.quantize)
    session = DeploySession(config, results, len(workloads) * (len(config.paths) * len(config.quantize)
                                                               + runnable * len(config.batch_sizes) * config.repeats))
    watcher.started(session)
    if store:
        results.session_id = store.create_session(results)

    def keep(record: DeployRecord) -> None:
        results.deploys.append(record)
        if store:
            store.add_deploy(results.session_id, record)
        if json_path:
            write_json(results, json_path)
        watcher.record(record)

    status, restore_sigterm = FAILED, _interrupt_on_sigterm()  # SIGTERM ends the session as Ctrl-C does
    try:
        with tempfile.TemporaryDirectory(prefix="isobench-deploy-") as tmp:
            work = Path(workdir or tmp)
            runner, prepared = _Runner(config, work, watcher), {}
            for i, (name, w) in enumerate(workloads.items()):
                prepared[name] = _prepare(w, i, config, work, watcher)
                results.weights[name] = prepared[name]["weights_info"]
            if store:
                store.set_weights(results.session_id, results.weights)
            exported = {}
            for name, w in workloads.items():
                for path_id in config.paths:
                    for q in config.quantize:
                        record = _export(runner, w, prepared[name], deploy.get_path(path_id), q)
                        keep(record)
                        if record.status == OK:
                            exported[name, path_id, q] = record.environment["exported"]
            for spec in plan_serving(config, list(workloads)):
                if (spec.workload, spec.path, spec.quantize) in exported:
                    keep(_serve(runner, workloads[spec.workload], prepared[spec.workload], spec,
                                exported[spec.workload, spec.path, spec.quantize]))
        status = FINISHED
    except KeyboardInterrupt:
        status = INTERRUPTED
        kill_running()
    finally:
        restore_sigterm()
        if store and results.session_id is not None:
            store.finish_session(results.session_id, status)
        session.status = status
    if json_path:
        write_json(results, json_path)
    return session


def _prepare(w: Workload, i: int, config: DeployConfig, work: Path, watcher: DeployWatcher) -> dict[str, Any]:
    """A workload's inputs file, trained weights and reference logits (test split, float64, in this process)."""
    inputs = write_inputs(w, work / f"inputs-{i}.npz", config.data_dir)
    weights, info = trained_weights(w, inputs, config, work, lambda: watcher.training(w.name, config.trained_by))
    watcher.weights(w.name, info)
    data = read_inputs(inputs)[0]
    logits = deploy.reference_logits(w, deploy.load_weights(weights), data.x_test)
    np.savez(reference := work / f"reference-{i}.npz", logits=logits)
    return {"inputs": str(inputs), "weights": str(weights), "reference": str(reference), "logits": logits,
            "weights_info": info}


def _export(runner: _Runner, w: Workload, prep: dict, path: deploy.DeployPath, quantize: str) -> DeployRecord:
    spec = DeploySpec(w.name, path.id, quantize, 0, 0, runner.config.threads)
    if why := unavailable(path, quantize):
        return runner.without_worker(spec, UNAVAILABLE, why)
    out = runner.work / "artifacts" / w.name / path.id.replace("/", "-") / quantize
    record = runner.launch(spec, {"workload": workload_to_dict(w), "inputs": prep["inputs"], "weights": prep["weights"],
                                  "out_dir": str(out), "calibration": DEPLOY_CALIBRATION, "seed": w.seed,
                                  "batch_sizes": runner.config.batch_sizes})
    if record.status == OK and path.id in os.environ.get(CORRUPT_ENV, "").split(","):
        _corrupt(Path(record.environment["exported"]["artifact"]))
    return record


def _serve(runner: _Runner, w: Workload, prep: dict, spec: DeploySpec, exported: dict) -> DeployRecord:
    return runner.launch(spec, {"workload": workload_to_dict(w), "inputs": prep["inputs"],
                                "reference": prep["reference"], "exported": exported,
                                "calls": runner.config.calls, "warmup": runner.config.warmup,
                                "tolerance": tolerance(w, spec.quantize, prep["logits"])})


def runtime_versions() -> dict[str, str | None]:
    """Runtime name -> installed version (``None``: not installed); backends.deploy.runtime_versions where it exists."""
    stated = getattr(deploy, "runtime_versions", None)
    if stated is not None:
        return dict(stated())
    from importlib import metadata
    from importlib.util import find_spec

    out: dict[str, str | None] = {}
    for name, rt in deploy.RUNTIMES.items():
        try:
            out[name] = metadata.version(rt.distribution) if find_spec(rt.import_name) else None
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def catalogue() -> tuple[list[tuple[str, str, str | None]], list[tuple[deploy.DeployPath, str | None]]]:
    """What ``isobench list`` shows of deployment: runtimes ``(name, display, version)`` and every path with why it
    cannot run here (``None``: it can)."""
    versions = runtime_versions()
    runtimes = [(name, rt.display, versions.get(name)) for name, rt in deploy.RUNTIMES.items()]
    return runtimes, [(p, unavailable(p, "none")) for p in deploy.PATHS.values()]
