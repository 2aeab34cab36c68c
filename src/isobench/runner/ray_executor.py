"""The Ray executor: each job is a Ray task that runs :func:`~.local.run_job` on a cluster node, so every training
cell, export and serving process still runs in its own fresh worker process, launched and measured exactly as on
this machine.

Timing fairness comes from a custom resource: a task takes one ``isobench_slot``, and each node is expected to
offer one, so a node runs one timed cell at a time (offer more to run more side by side). Ray starts its
workers at nice 15; ``RAY_worker_niceness=0`` keeps a timed cell at the node's normal priority::

    RAY_worker_niceness=0 ray start --head --resources='{"isobench_slot": 1}'                  # the head node
    RAY_worker_niceness=0 ray start --address=HEAD_IP:6379 --resources='{"isobench_slot": 1}'  # every other node

With ``--device cuda`` a task takes one GPU instead (one cell per GPU, as ``--gpus`` does locally); Ray picks
the GPU and the worker sees only that one. Every node needs the same isobench and frameworks installed in the
Python that ran ``ray start``; no shared file system is assumed: the files a job reads (inputs, weights, reference
logits, an exported artifact, files or folders) travel through Ray's object store, once each, and so do the files
it writes for the parent (parity captures, an export's artifact, trained weights) on their way back. Each record carries the environment record of the
node that ran it (``environment.host``) and the node's identity (``environment.node``: id, hostname, IP,
niceness). A task that fails or a node that is lost becomes a failed record (``lost``: --resume reruns it).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import tarfile
import tempfile
import threading
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import UserError
from ..results import CRASHED, FAILED, OUT_OF_MEMORY, Record
from .executor import Executor
from .jobs import Job
from .local import READERS, STDERR_TAIL_CHARS, EventHandler
from .worker import FAULT_ENV

SLOT = "isobench_slot"  # the per-node custom resource: one per cell a node may time at once
INSTALL_HINT = "--executor ray needs Ray: pip install 'isobench[ray]'"
CANCEL_WAIT_S = 10.0  # how long an interrupted run waits for its cancelled cells to stop
FORWARDED_ENV = (FAULT_ENV,)  # driver variables the node's workers see too (the runner's fault-injection hook)


def import_ray():
    """The ``ray`` module, or a one-line :class:`UserError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


class RayExecutor(Executor):
    """Cells as Ray tasks on the cluster at ``address`` (default ``$RAY_ADDRESS``, else a local instance started
    here and shut down by :meth:`close`). At most as many cells run at once as the cluster has slots
    (``isobench_slot`` resources; GPUs with ``device="cuda"``); the plan is taken lazily in its order. ``gpus``
    (this machine's GPU indices) is accepted for the common interface and ignored: Ray assigns each task its GPU."""

    name = "ray"

    def __init__(self, device: str = "cpu", gpus: Iterable[int] = (), address: str | None = None):
        self.ray = import_ray()
        self.address, self.device = address or os.environ.get("RAY_ADDRESS") or None, device
        self._owned = False  # whether this executor called ray.init (and so shuts it down)

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # the caller's own connection (a notebook): use it, leave it open
            return
        quiet = dict(ignore_reinit_error=True, log_to_driver=False, logging_level=logging.ERROR)
        main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if main else None
        try:
            if self.address:
                ray.init(address=self.address, **quiet)
            else:  # "local": a new one-machine instance with one slot (cells one at a time, as run locally),
                # even where this machine is part of a cluster (pass --ray-address auto to join that one)
                ray.init(address="local", resources={SLOT: 1}, include_dashboard=False,
                         _system_config={"worker_niceness": 0}, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = self.address or "a local instance"
            raise UserError(f"--executor ray: cannot connect to {where}: {_first_line(e)}") from None
        finally:
            if callable(sigterm):  # ray.init replaces the caller's SIGTERM handler (the CLI's: stop like Ctrl-C)
                signal.signal(signal.SIGTERM, sigterm)
        self._owned = True

    def start(self) -> None:
        self._connect()
        if not self._capacity():
            what = ("no GPU" if self.device == "cuda" else
                    f"""no {SLOT} resource; start its nodes with ray start --resources='{{"{SLOT}": 1}}'""")
            raise UserError(f"--executor ray: the Ray cluster has {what}")

    def _capacity(self) -> int:
        """How many cells the cluster can run at once now: its slots (GPUs on cuda)."""
        return int(self.ray.cluster_resources().get("GPU" if self.device == "cuda" else SLOT, 0))

    def run(self, jobs: Iterable[Job], workdir: Path, on_event: EventHandler | None = None) -> Iterator[Record]:
        ray = self.ray
        self.start()
        need = {"num_gpus": 1} if self.device == "cuda" else {"resources": {SLOT: 1}}
        # num_cpus=0: the slot alone decides placement; max_retries=0: a lost job is recorded, not rerun silently
        task = ray.remote(_job_on_node).options(num_cpus=0, max_retries=0, **need)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        blobs: dict[str, Any] = {}  # a file or folder the jobs read -> its bytes in the object store, put once
        pending: dict[Any, Job] = {}
        jobs, exhausted = iter(jobs), False
        try:
            while True:
                limit = max(1, self._capacity())  # nodes may join or leave during a session
                while len(pending) < limit and not exhausted:
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    for key in job.files:
                        if (path := job.task[key]) not in blobs:
                            blobs[path] = ray.put(pack(Path(path)))
                    if on_event:
                        on_event(job.spec, {"event": "start"})
                    paths = [job.task[k] for k in job.files]  # refs as top-level arguments: Ray resolves only those
                    pending[task.remote(job, paths, self.device, env, *(blobs[p] for p in paths))] = job
                if not pending:
                    return
                [ref], _ = ray.wait(list(pending), num_returns=1)
                yield from self._records(ref, pending.pop(ref))
        finally:
            if pending:  # interrupted: a cancelled task kills its worker's process group (run_cell); wait for that
                # before anyone disconnects, which would kill the Ray workers mid-clean-up. Best effort: a failure
                # here (cluster gone) must not replace the interruption being handled
                with contextlib.suppress(Exception):
                    for ref in pending:
                        ray.cancel(ref)
                    ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)

    def _records(self, ref, job: Job) -> list[Record]:
        """The records a finished task returned (the files it wrote for the parent unpacked where the job said), or
        failed ones naming the node when the task or node was lost."""
        errors, lost = self.ray.exceptions, None
        record_type = READERS[job.task["kind"]][0]
        try:
            records, outputs = self.ray.get(ref)
            for key, data in outputs.items():
                unpack(data, Path(job.task[key]))
            return [record_type.from_dict(r) for r in records]
        except errors.RayTaskError as e:  # the task itself raised (e.g. isobench missing on the node)
            status, why = FAILED, (f"Ray task failed on node {getattr(e, 'ip', None) or '?'}: "
                                   f"{_first_line(getattr(e, 'cause', None) or e)}")
            detail = str(e)
        except errors.OutOfMemoryError as e:  # Ray's memory monitor killed the task on a node short of memory
            status, why, detail = OUT_OF_MEMORY, f"Ray killed the cell for memory: {_first_line(e)}", str(e)
        except (errors.NodeDiedError, errors.WorkerCrashedError, errors.ObjectLostError,
                errors.TaskCancelledError, errors.RaySystemError) as e:  # the node or its Ray worker is gone
            status, why, detail = CRASHED, f"Ray lost the cell ({type(e).__name__}): {_first_line(e)}", str(e)
            lost = type(e).__name__  # --resume runs it again
        except errors.RayError as e:
            status, why, detail = FAILED, f"Ray error ({type(e).__name__}): {_first_line(e)}", str(e)
        return [record_type.failed(spec, status, why, order=job.order, stderr_tail=detail[-STDERR_TAIL_CHARS:],
                                   lost=lost) for spec in job.specs]

    def close(self) -> None:
        """Disconnect from Ray if this executor connected (a local instance it started stops with it)."""
        if self._owned:
            self.ray.shutdown()
            self._owned = False


def _job_on_node(job: Job, paths: list[str], device: str, env: dict[str, str],
                 *blobs: bytes) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """The Ray task: unpack the job's files into a private directory on this node, point its task at them and at
    private places for its outputs, run one fresh worker there; return its records as dicts, each with this node's
    environment record and identity, and the outputs' bytes."""
    import ray

    from ..measure import host_environment
    from .devices import worker_env
    from .local import run_job

    context = ray.get_runtime_context()
    node = {"id": context.get_node_id(), "hostname": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
            "niceness": _unnice()}
    outputs: dict[str, bytes] = {}
    files = dict(zip(paths, blobs))
    record_type = READERS[job.task["kind"]][0]
    try:
        gpu = int(ray.get_gpu_ids()[0]) if device == "cuda" else None
        with tempfile.TemporaryDirectory(prefix="isobench-ray-") as tmp:
            here = {path: str(Path(tmp) / f"in-{i}-{Path(path).name}") for i, path in enumerate(files)}
            for path, data in files.items():
                unpack(data, Path(here[path]))
            here.update({job.task[k]: str(Path(tmp) / f"out-{i}-{Path(job.task[k]).name}")
                         for i, k in enumerate(job.outputs)})
            local = replace(job, task=_moved(job.task, here))
            records = run_job(local, Path(tmp), env={**env, **worker_env(device, gpu)})
            outputs = {k: pack(Path(local.task[k])) for k in job.outputs if Path(local.task[k]).exists()}
            back = {new: old for old, new in here.items()}
            for r in records:  # paths the worker reported (an export's artifact) named as the parent will find them
                if r.environment.exported:
                    r.environment.exported = _moved(r.environment.exported, back)
    except Exception as e:  # noqa: BLE001 - a failure on the node is a record like any other
        records = [record_type.failed(spec, FAILED, f"on node {node['hostname']} ({node['ip']}): "
                                      f"{type(e).__name__}: {_first_line(e)}", order=job.order,
                                      stderr_tail=traceback.format_exc()[-STDERR_TAIL_CHARS:]) for spec in job.specs]
    for r in records:
        r.environment.host, r.environment.node = host_environment(), node
    return [r.to_dict() for r in records], outputs


def _moved(value: Any, paths: dict[str, str]) -> Any:
    """``value`` (a task, nested dicts and lists) with every string that is, or lies under, a key of ``paths``
    pointing at its new place instead."""
    if isinstance(value, dict):
        return {k: _moved(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, paths) for v in value]
    if isinstance(value, str):
        for old, new in paths.items():
            if value == old or value.startswith(old.rstrip("/") + "/"):
                return new + value[len(old):]
    return value


def pack(path: Path) -> bytes:
    """A file or folder as bytes (a tar archive), to travel through Ray's object store."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=".")
    return buffer.getvalue()


def unpack(data: bytes, path: Path) -> None:
    """What :func:`pack` made of a file or folder, written at ``path`` (its parent made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        if len(members) == 1 and members[0].isfile():  # a single file
            path.write_bytes(tar.extractfile(members[0]).read())
        else:
            path.mkdir(exist_ok=True)
            tar.extractall(path, filter="data")


def _unnice() -> int:
    """Give this Ray worker (and so the cell's worker process) the raylet's scheduling priority back, where
    allowed, and return the niceness the cell runs at. Ray starts its workers at nice 15 unless the node was
    started with ``RAY_worker_niceness=0``; on a busy node that would slow the timed cell against everything else."""
    base = os.getpriority(os.PRIO_PROCESS, int(os.environ.get("RAY_RAYLET_PID", 0)))
    if os.getpriority(os.PRIO_PROCESS, 0) > base:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, base)
        except OSError:  # lowering niceness needs CAP_SYS_NICE; the record shows what it ran at
            pass
    return os.getpriority(os.PRIO_PROCESS, 0)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__
