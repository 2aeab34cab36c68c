"""The local executor: each cell in its own fresh worker process, supervised by the parent."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Callable

from ..results import (CRASHED, EXPORT, FAILED, LOAD, OUT_OF_MEMORY, SERVE, TIMEOUT, DeployMetrics, DeployRecord,
                       LoadMetrics, LoadRecord, Metrics, Record, RunRecord, RunSpec, WorkerSettings)
from ..workloads import Workload, workload_to_dict
from .jobs import CELL, Job
from .worker import EVENT_PREFIX

STDERR_TAIL_CHARS = 4000
# Quiet framework start-up chatter in workers (TF's C++ logging, oneDNN notices); errors still show.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}

EventHandler = Callable[[RunSpec, dict], None]
MEMORY_POLL_S = 0.1  # how often the parent reads a capped worker's resident memory
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_running: set[int] = set()  # process groups of the workers running now (see kill_running)
_running_lock = threading.Lock()

# A small launcher between isobench and the worker. Linux charges a child's ru_maxrss with the memory of
# the process it was forked from, so a worker forked straight from isobench (numpy, scikit-learn loaded)
# would inherit isobench's RSS. The launcher runs with -S (stdlib only, a few MiB), spawns the worker,
# reaps it with wait4 and writes its exit status and ru_maxrss (KiB) to a file. It also tells the worker when it
# was spawned (CLOCK_MONOTONIC, system-wide), from which the worker states the harness's own start-up time.
LAUNCHER = """import json, os, sys, time
env = {**os.environ, "ISOBENCH_SPAWNED_AT": repr(time.monotonic())}
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], env)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"status": status, "maxrss_kib": usage.ru_maxrss}, f)
"""


def training_task(spec: RunSpec, workload: Workload, inputs: Path, *, capture: Path | None = None,
                  capture_steps: int = 0, save_params: Path | None = None) -> dict[str, Any]:
    """The task of one training worker: ``spec``'s cell on exactly this (possibly user-defined or rescaled)
    workload, read from ``inputs``; parity captures written to ``capture``; ``save_params``: the worker writes its
    trained weights there (npz, canonical layout; the deployment's served weights)."""
    return {"kind": CELL, "spec": asdict(spec), "workload": workload_to_dict(workload), "inputs": str(inputs),
            "capture_steps": capture_steps, **({"captures": str(capture)} if capture else {}),
            **({"save_params": str(save_params)} if save_params else {})}


def run_cell(spec: RunSpec, workload: Workload, inputs: Path, workdir: Path, *, order: int = 0,
             timeout: float | None = None, on_event: EventHandler | None = None, env: dict[str, str] | None = None,
             max_memory_bytes: int | None = None, save_params: Path | None = None) -> RunRecord:
    """One training worker for ``spec`` on this machine (:func:`training_task`, :func:`run_job`), its record."""
    task = training_task(spec, workload, inputs, save_params=save_params)
    [record] = run_job(Job(order, (spec,), task, timeout=timeout, max_memory_bytes=max_memory_bytes), workdir,
                       env=env, on_event=on_event)
    return record


def run_job(job: Job, workdir: Path, *, env: dict[str, str] | None = None,
            on_event: EventHandler | None = None) -> list[Record]:
    """Run one fresh worker process for ``job`` on this machine and turn whatever happened into its records.

    The worker runs in its own process group (so a timeout kills it and any children) and in isobench's session
    (module docstring of :mod:`.worker`'s launcher, ``LAUNCHER``). Its whole-process peak RSS comes from ``wait4``'s
    rusage, a cross-check on the worker's own figure. ``env`` is added to the worker's environment (the device, see
    :mod:`.devices`). With ``job.max_memory_bytes`` a watcher thread reads the resident memory of the worker and its
    descendants every ``MEMORY_POLL_S`` and kills the group when it exceeds the cap (an address-space rlimit would
    break TensorFlow and JAX, which reserve far more virtual memory than they use)."""
    ended, result, stderr = launch(job.task, workdir / f"{job.task['kind']}-{job.order:04d}", env, job.timeout,
                                   job.max_memory_bytes, lambda out: _read_events(out, job.specs[0], on_event))
    return job_records(job, ended, result, stderr)


def job_records(job: Job, ended: "Ended", result: dict | None, stderr: str) -> list[Record]:
    """The records of a job's worker from how it ended: its reported results (through the reader of its kind,
    :data:`READERS`), else one record per spec saying why there are none (memory cap, timeout, signal, exit code)."""
    common = dict(order=job.order, wall_s=ended.wall_s, exit_code=ended.exit_code, signal=ended.signal,
                  stderr_tail=stderr or None)
    record_type, read = READERS[job.task["kind"]]
    if ended.memory_peak is not None:
        status, error = OUT_OF_MEMORY, out_of_memory_message(ended.memory_peak, job.max_memory_bytes)
    elif ended.timed_out:
        status, error = TIMEOUT, f"exceeded the timeout of {job.timeout:g} s; killed"
    elif result is not None:
        return read(result, job.specs, ended.maxrss_kib * 1024 if ended.maxrss_kib is not None else None, common)
    elif ended.signal is not None:
        name = signal.Signals(ended.signal).name if ended.signal in signal.valid_signals() else ended.signal
        status, error = CRASHED, f"worker killed by signal {name}"
    else:
        status, error = FAILED, (f"worker exited with code {ended.exit_code} without a result: "
                                 f"{_last_line(common['stderr_tail'])}")
    return [record_type.failed(spec, status, error, **common) for spec in job.specs]


def _training_records(result: dict, specs: tuple, maxrss: int | None, common: dict) -> list[Record]:
    """A training worker's result: one run; the parent adds the whole-process peak from wait4."""
    metrics = result.get("metrics")
    if metrics and maxrss is not None:
        metrics = {**metrics, "process_peak_rss_bytes": maxrss}
    return [RunRecord(spec=specs[0], status=result["status"], error=result.get("error"),
                      metrics=Metrics.from_dict(metrics) if metrics else None,
                      environment=WorkerSettings.from_dict(result.get("environment") or {}),
                      fingerprints=result.get("fingerprints") or {}, **common)]


def _deployment_records(result: dict, specs: tuple, maxrss: int | None, common: dict) -> list[Record]:
    """A deployment worker's result: one record per spec (an export; a serving process's batch sizes), each with
    the process's environment and its whole-process peak from wait4."""
    environment = WorkerSettings.from_dict(result.get("environment") or {})
    out = []
    for spec, r in zip(specs, result.get("records") or [result]):
        m = r.get("metrics")
        out.append(DeployRecord(spec=spec, status=r["status"], error=r.get("error"), environment=environment,
                                metrics=DeployMetrics.from_dict({**m, "process_peak_rss_bytes": maxrss}) if m else None,
                                **common))
    return out


def _load_records(result: dict, specs: tuple, maxrss: int | None, common: dict) -> list[Record]:
    """A load worker's result: one record, with its whole-process peak from wait4."""
    m = result.get("metrics")
    return [LoadRecord(spec=specs[0], status=result["status"], error=result.get("error"),
                       environment=WorkerSettings.from_dict(result.get("environment") or {}),
                       metrics=LoadMetrics.from_dict({**m, "process_peak_rss_bytes": maxrss}) if m else None, **common)]


# a worker kind (the task's "kind", runner.worker.WORKERS) -> (its record type, how its result file becomes records)
READERS = {CELL: (RunRecord, _training_records), EXPORT: (DeployRecord, _deployment_records),
           SERVE: (DeployRecord, _deployment_records), LOAD: (LoadRecord, _load_records)}


def launch(task: dict, stem: Path, env: dict[str, str] | None = None, timeout: float | None = None,
           max_memory_bytes: int | None = None, read_events: Callable = lambda out: None,
           ) -> tuple["Ended", dict | None, str]:
    """Run one fresh worker process on ``task`` (its ``spec["threads"]`` pins it; files ``stem.*``) under the
    launcher and the supervision of :func:`run_cell`; returns how it ended, its result file (``None``: none written)
    and its stderr tail."""
    task_path, result_path, stderr_path, exit_path = (
        stem.with_suffix(s) for s in (".task.json", ".result.json", ".stderr", ".exit.json"))
    task_path.write_text(json.dumps(task))
    cmd = [sys.executable, "-S", "-c", LAUNCHER, str(exit_path),
           sys.executable, "-m", "isobench._worker", str(task_path), str(result_path)]
    env = {**os.environ, **WORKER_ENV, **(env or {})}
    # a fresh compiler cache per worker (unless the user chose one): torch.compile's cost is then the cold cost
    # in every repeat, instead of 10x less whenever an earlier worker left its kernels in the shared cache
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(stem) + ".inductor-cache")
    ended = _supervise(cmd, env, stderr_path, exit_path, read_events, timeout, max_memory_bytes)
    return ended, _read_result(result_path), _tail(stderr_path)


@dataclass(frozen=True)
class Ended:
    """How a worker process ended, as the parent saw it."""
    wall_s: float                # process start to exit
    exit_code: int | None
    signal: int | None
    timed_out: bool
    memory_peak: int | None      # bytes: the summed resident memory that went over --max-memory; None: it did not
    maxrss_kib: int | None       # the worker's ru_maxrss from wait4, when the launcher could report it


def _supervise(cmd: list[str], env: dict[str, str], stderr_path: Path, exit_path: Path, read_events: Callable,
               timeout: float | None, max_memory_bytes: int | None) -> Ended:
    """Start the launcher in its own process group, enforce the timeout and the memory cap, wait for it."""
    t0 = perf_counter()
    with open(stderr_path, "wb") as err, _running_lock:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env,
                                process_group=0)
        _running.add(proc.pid)
    reader = threading.Thread(target=read_events, args=(proc.stdout,), daemon=True)
    reader.start()
    timed_out, stop = threading.Event(), threading.Event()

    def kill_group() -> None:
        timed_out.set()
        _killpg(proc.pid)

    timer = threading.Timer(timeout, kill_group) if timeout else None
    if timer:
        timer.start()
    memory = _MemoryWatch(proc.pid, max_memory_bytes, stop) if max_memory_bytes else None
    try:
        launcher_status = proc.wait()
    except BaseException:  # interrupted: leave no worker behind
        _killpg(proc.pid)
        proc.wait()
        raise
    finally:
        stop.set()
        if timer:
            timer.cancel()
        with _running_lock:
            _running.discard(proc.pid)
    wall = perf_counter() - t0
    reader.join(timeout=5)
    proc.stdout.close()
    _killpg(proc.pid)  # anything the worker left running in its group
    if memory:
        memory.join()
    reaped = _read_result(exit_path) or {}
    return Ended(wall, *_exit_status(reaped, launcher_status), timed_out.is_set(),
                 memory.peak if memory and memory.exceeded else None, reaped.get("maxrss_kib"))


def _exit_status(reaped: dict, launcher_status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) of the worker, from the launcher's wait4 report, else from the launcher itself."""
    if "status" in reaped:
        status = reaped["status"]
        return (os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                os.WTERMSIG(status) if os.WIFSIGNALED(status) else None)
    if launcher_status < 0:  # the launcher itself was killed (timeout or from outside)
        return None, -launcher_status
    return launcher_status, None


def out_of_memory_message(peak: int, cap: int) -> str:
    """The one-line error of a worker killed above ``--max-memory``. The peak is rounded up to whole MiB: it
    was strictly above the cap, and 300.4 MiB shown as "300 MiB, over 300 MiB" would read as a contradiction."""
    return f"resident memory reached {math.ceil(peak / 2**20)} MiB, over --max-memory {cap / 2**20:g} MiB; killed"


class _MemoryWatch(threading.Thread):
    """Polls the summed resident memory of process group ``pgid`` and kills the group above ``cap`` bytes;
    ``peak`` is the largest sum seen."""

    def __init__(self, pgid: int, cap: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.pgid, self.cap, self.stop, self.peak, self.exceeded = pgid, cap, stop, 0, False
        self.start()

    def run(self) -> None:
        while not self.stop.wait(MEMORY_POLL_S):
            rss = group_rss_bytes(self.pgid)
            self.peak = max(self.peak, rss)
            if rss > self.cap:
                self.exceeded = True
                _killpg(self.pgid)
                return


def group_rss_bytes(pid: int) -> int:
    """Summed VmRSS of process ``pid`` (the launcher) and all its descendants (the worker and anything it
    started), following /proc/PID/task/TID/children: a few small reads, cheap enough to poll beside a timed run."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def kill_running() -> None:
    """Kill every worker process group still running (isobench is stopping: leave none behind)."""
    with _running_lock:
        for pgid in list(_running):
            _killpg(pgid)


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_events(stream, spec: Any, on_event: EventHandler | None) -> None:
    for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if line.startswith(EVENT_PREFIX) and on_event:
            try:
                on_event(spec, json.loads(line[len(EVENT_PREFIX):]))
            except json.JSONDecodeError:
                pass


def _read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _tail(path: Path) -> str:
    try:
        return path.read_bytes()[-STDERR_TAIL_CHARS:].decode(errors="replace").strip()
    except OSError:
        return ""


def _last_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"
