"""Deploy workers: one fresh process exports a model along a deployment path, or serves an exported artifact.

    python -m isobench._worker TASK.json RESULT.json      (task "kind": "export" or "serve")

Both are pinned like a training worker (CPU affinity and thread variables before numpy loads). A serving worker
serves every batch size of the session in turn, smallest first; for each it loads the artifact in the path's runtime
(``load_s``; the runtime is imported at the first), runs the first inference (at the first batch size, the
process's cold start: from the launcher's CLOCK_MONOTONIC reading when it spawned the worker, a clock every process
shares, to that first result), makes ``warmup`` untimed calls, then ``calls`` timed calls, each a
``perf_counter_ns`` pair around one synchronous call on a full batch of test examples; then serves the whole test
split for accuracy, loss and the logit difference against the float64 reference, and reads its RSS high-water mark
(VmHWM). Failures are results: status and one line, as the training worker's.
"""
from __future__ import annotations

import gc
import os
import traceback
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from time import perf_counter, perf_counter_ns

import numpy as np

from ..measure.memory import peak_rss_bytes
from ..results import FAILED, OK, UNAVAILABLE, DeployMetrics
from .inputs import read_inputs
from .worker import emit, inject_fault, since_spawn, write_result


def calibration_set(x_train: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` training examples drawn without replacement by ``seed`` (int8 calibration), in split order."""
    idx = np.random.default_rng(seed).choice(len(x_train), min(n, len(x_train)), replace=False)
    return x_train[np.sort(idx)]


def wrap_batch(x: np.ndarray, start: int, size: int) -> np.ndarray:
    """``size`` examples from ``start``, wrapping round the end of ``x`` (every timed call a full batch)."""
    return np.take(x, np.arange(start, start + size), axis=0, mode="wrap")


def predict(served, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of every example of ``x`` served in batches of ``batch_size``; the last batch is filled up by
    wrapping round (static-batch artifacts) and trimmed."""
    out = [served(wrap_batch(x, i, batch_size))[:min(batch_size, len(x) - i)] for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float64)


def accuracy_and_loss(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Top-1 accuracy (fraction) and mean cross-entropy (nats) of class logits ``(..., classes)``."""
    from ..backends.reference import softmax_xent

    labels = np.asarray(y).astype(np.int64)
    return float(np.mean(logits.argmax(axis=-1) == labels)), softmax_xent(logits, labels)[0]


def latency_quantiles(latencies_s: list[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(latencies_s, [50, 90, 99])
    return {"latency_p50_s": float(p50), "latency_p90_s": float(p90), "latency_p99_s": float(p99)}


def runtime_version(path) -> dict[str, str]:
    from ..backends.deploy import RUNTIMES

    runtime = RUNTIMES[path.runtime]
    try:
        return {"runtime": runtime.name, "runtime_version": metadata.version(runtime.distribution)}
    except metadata.PackageNotFoundError:
        return {"runtime": runtime.name}


def task_path(task: dict):
    """The task's deployment path, as the parent resolved it (a path registered at run time serves too)."""
    from ..backends.deploy import DeployPath

    d = task["deploy_path"]
    return DeployPath(**{**d, "quantizations": tuple(d["quantizations"]), "requires": tuple(d["requires"]),
                         "devices": tuple(d.get("devices", ("cpu",)))})


def _fail(e: BaseException) -> tuple[str, str]:
    if isinstance(e, ImportError):
        return UNAVAILABLE, f"not importable: {e}".splitlines()[0]
    if isinstance(e, NotImplementedError):
        return UNAVAILABLE, str(e).splitlines()[0] if str(e) else type(e).__name__
    traceback.print_exc()
    return FAILED, f"{type(e).__name__}: {e}".splitlines()[0]


def measure_export(task: dict, result_path: str, pinned: dict) -> int:
    """An export task: ``export()`` along the path, timed, and the artifact's size on disk."""
    spec, metrics = task["spec"], DeployMetrics()
    status, error, env = OK, None, {"threads": pinned, "pid": os.getpid()}
    try:
        from ..backends import deploy
        from ..workloads import workload_from_dict

        inject_fault("import", spec["path"] + "@export", 0)
        path, workload = task_path(task), workload_from_dict(task["workload"])
        env.update(runtime_version(path))
        params = deploy.load_weights(Path(task["weights"]))
        data = read_inputs(task["inputs"])[0]
        calibration = calibration_set(data.x_train, task["calibration"], task["seed"])
        t0 = perf_counter()
        out = deploy.export(path, workload, params, Path(task["out_dir"]), quantize=spec["quantize"],
                            calibration=calibration, batch_sizes=tuple(task["batch_sizes"]))
        metrics.export_s = perf_counter() - t0
        metrics.artifact_bytes, metrics.details = deploy.artifact_bytes(out), dict(out.details)
        env["exported"] = {"artifact": str(out.artifact), "quantize": out.quantize, "details": out.details}
    except Exception as e:  # noqa: BLE001 - a failed export is a result
        status, error = _fail(e)
    write_result(result_path, {"status": status, "error": error, "environment": env, "metrics": asdict(metrics)})
    return 0 if status == OK else 1


def measure_serve(task: dict, result_path: str, pinned: dict) -> int:
    """A serving task: every batch size of ``task["batch_sizes"]`` in turn (smallest first), each loaded, warmed up,
    timed and checked on the whole test split (module docstring); one record each in the result file. The cold
    start is the first batch size's (spawn to its first result); a batch size that fails is a failed record and the
    process goes on with the next."""
    spec, records = task["spec"], []
    env = {"threads": pinned, "pid": os.getpid(), "device": task.get("device", "cpu")}
    try:
        from ..backends import deploy
        from ..workloads import workload_from_dict

        path, workload = task_path(task), workload_from_dict(task["workload"])
        env.update(runtime_version(path))
        data = read_inputs(task["inputs"])[0]
        x_test = np.ascontiguousarray(data.x_test, deploy.input_dtype(workload))  # the canonical dtype, once
        with np.load(task["reference"]) as z:
            reference = z["logits"]
        exported = deploy.Exported(Path(task["artifact"]), task["exported"]["quantize"],
                                   task["exported"].get("details") or {})
        inject_fault("import", spec["path"], spec["repeat"])  # a runtime that crashes while loading
    except Exception as e:  # noqa: BLE001 - nothing could be served: every batch size fails alike
        status, error = _fail(e)
        records = [{"status": status, "error": error, "metrics": None} for _ in task["batch_sizes"]]
    else:
        for bs in task["batch_sizes"]:
            metrics = DeployMetrics()
            try:
                _serve_batch_size(deploy, path, workload, exported, x_test, data.y_test, reference, bs, task, metrics,
                                  cold=not records)
                records.append({"status": OK, "error": None, "metrics": asdict(metrics)})
            except Exception as e:  # noqa: BLE001 - a failed batch size is a result
                status, error = _fail(e)
                records.append({"status": status, "error": error, "metrics": None})
            gc.collect()  # the previous batch size's model out of memory before the next loads
    write_result(result_path, {"environment": env, "records": records})
    return 0 if all(r["status"] == OK for r in records) else 1


def _serve_batch_size(deploy, path, workload, exported, x_test: np.ndarray, y_test: np.ndarray,
                      reference: np.ndarray, bs: int, task: dict, metrics: DeployMetrics, cold: bool) -> None:
    """Load the artifact for batch size ``bs``, warm up, time the calls, serve the test split: into ``metrics``."""
    first = wrap_batch(x_test, 0, bs)
    t0 = perf_counter()
    served = deploy.serve(path, workload, exported, batch_size=bs, threads=task["spec"]["threads"],
                          device=task.get("device", "cpu"))
    metrics.load_s = perf_counter() - t0
    served(first)
    metrics.first_call_s = perf_counter() - t0 - metrics.load_s
    if cold:  # the process's cold start: spawn (the launcher's CLOCK_MONOTONIC reading) to its first result
        metrics.cold_start_s = since_spawn()
    metrics.artifact_bytes = deploy.artifact_bytes(exported, bs)  # the file that serves this batch size
    inject_fault("serve", task["spec"]["path"], task["spec"]["repeat"])  # a runtime whose memory runs away
    n = len(x_test)
    for i in range(task["warmup"]):
        served(wrap_batch(x_test, (i * bs) % n, bs))
    metrics.warmup_calls = task["warmup"]
    batches = [wrap_batch(x_test, (i * bs) % n, bs) for i in range(min(task["calls"], -(-n // bs)))]
    samples = []
    for i in range(task["calls"]):
        x = batches[i % len(batches)]
        t = perf_counter_ns()
        served(x)
        samples.append(perf_counter_ns() - t)
    metrics.latencies_s = [s * 1e-9 for s in samples]
    metrics.__dict__.update(latency_quantiles(metrics.latencies_s))
    metrics.throughput_samples_s = bs * len(samples) / sum(metrics.latencies_s)
    # after the timed calls, never before them: the parent's handling of an event runs on this process's CPUs
    emit(event="timed", batch_size=bs, cold_start_s=metrics.cold_start_s, p50_s=metrics.latency_p50_s)
    logits = predict(served, x_test, bs)
    if bad := int(np.size(logits) - np.isfinite(logits).sum()):  # a row, never a NaN in the results file
        raise ValueError(f"{bad} of the served model's {np.size(logits)} test logits are not finite")
    metrics.test_accuracy, metrics.test_loss = accuracy_and_loss(logits, y_test)
    metrics.max_abs_logit_diff = float(np.max(np.abs(logits - reference)))
    metrics.logit_tolerance = task.get("tolerance")
    metrics.peak_rss_bytes = peak_rss_bytes()  # the process's peak so far: every batch size served up to here
