"""Serving under load: one fresh worker process runs one MLPerf LoadGen scenario against one exported model.

    python -m isobench._worker TASK.json RESULT.json      (task "kind": "load")

The worker is pinned like every worker (CPU affinity and thread variables before numpy loads), loads the artifact in
its path's runtime once per batch size it serves and per executing thread (a runtime's loaded model is not shared
between threads: LiteRT's interpreter is not thread-safe), and answers LoadGen's queries with a system under test
(:class:`Server`): a queue, ``concurrency`` executing threads, and, with dynamic batching, each thread taking queued
samples until ``max_batch`` or until ``max_queue_delay_s`` has passed since the first (as Triton's, TorchServe's
and TF Serving's batchers do), padded to the batch size the artifact serves. LoadGen (``mlperf_loadgen``) issues the
queries, times them from their scheduled issue to their completion and judges the run (VALID or INVALID, with its
reason and early-stopping result); the worker reads its detail log.

Scenarios (LoadGen's): ``single-stream`` (one query of one sample at a time; latency percentiles), ``multi-stream``
(queries of 8 samples, one at a time), ``offline`` (every sample at once; samples per second) and ``server``
(Poisson arrivals at a target QPS): a search for the largest QPS whose run LoadGen judges VALID under the latency
bound (its early-stopping check of the 99th percentile), each step a run of ``duration_s``. Every answer is kept
and checked after the runs against the float64 reference logits of its sample (none is skipped): an fp32 run with
an answer beyond the tolerance fails, with one line. The schedule and sample order come from the session's seed, so
every path sees the same arrivals.
"""
from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..measure.memory import peak_rss_bytes
from ..results import FAILED, MULTI_STREAM, OK, UNAVAILABLE, LoadMetrics, Trial
from .deploy_worker import runtime_version, task_path
from .inputs import read_inputs
from .worker import emit, inject_fault, write_result

LOADGEN = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "offline": "Offline", "server": "Server"}
PROBE_CALLS = 50          # calls per batch size timed before the runs: LoadGen's expected latency and QPS, the start
SEARCH_STEPS = 8          # server: at most this many runs to find the largest valid QPS
SEARCH_RESOLUTION = 1.1   # ... stopping once the invalid rate is within 10% of the valid one
OFFLINE_TRIES = 3         # offline: runs at most, when LoadGen asks for a larger expected QPS (a run too short)
TOO_SHORT = "Increase expected QPS"  # LoadGen's reason for an offline run that ended before its minimum duration


class Answers:
    """Every answer the server gives: its sample indices and logits, appended by the executing threads."""

    def __init__(self):
        self.lock, self.indices, self.logits = threading.Lock(), [], []

    def add(self, indices: np.ndarray, logits: np.ndarray) -> None:
        with self.lock:
            self.indices.append(indices)
            self.logits.append(logits)

    def check(self, reference: np.ndarray, labels: np.ndarray, tolerance: float | None) -> dict[str, Any]:
        """Every answer against the reference logits of its sample: how many, how many wrong, the largest logit
        difference and the accuracy of the answers."""
        if not self.indices:
            return {"answers": 0}
        idx, logits = np.concatenate(self.indices), np.concatenate(self.logits).astype(np.float64)
        diff = np.abs(logits - reference[idx]).reshape(len(idx), -1).max(axis=1)
        return {"answers": len(idx), "max_abs_logit_diff": float(diff.max()),
                "wrong_answers": int((diff > tolerance).sum()) if tolerance is not None else 0,
                "accuracy": float(np.mean(logits.argmax(axis=-1) == labels[idx]))}


class Server:
    """The system under test: a queue of samples, ``threads`` executing threads each with its own models (batch size ->
    a served callable), and optional dynamic batching (``max_batch`` > 1: a thread takes queued samples until it has
    ``max_batch`` or ``max_delay_s`` has passed since the first, then serves them at once, padded to the smallest
    loaded batch size that holds them). Each finished sample is reported to LoadGen at once; its answer is kept."""

    def __init__(self, lg, x: np.ndarray, models: list[dict[int, Callable]], answers: Answers, max_batch: int = 1,
                 max_delay_s: float = 0.0, wrong: bool = False):
        self.lg, self.x, self.answers, self.max_batch, self.max_delay_s = lg, x, answers, max_batch, max_delay_s
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.wrong = wrong  # test hook: the first answer is made wrong (every answer must be checked)
        self.threads = [threading.Thread(target=self._work, args=(m,), daemon=True) for m in models]
        for t in self.threads:
            t.start()

    def issue(self, samples) -> None:  # LoadGen's thread: queue each query (offline's in parts the threads share)
        items, part = [(s.id, s.index) for s in samples], max(self.max_batch, MULTI_STREAM)
        for start in range(0, len(items), part):
            self.queue.put(items[start:start + part])

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()

    def _take(self, first: list) -> list:
        """The samples one execution serves: ``first`` and, with dynamic batching, what arrives within the delay."""
        batch, deadline = list(first), time.monotonic() + self.max_delay_s
        while len(batch) < self.max_batch:
            try:
                more = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if more is None:
                self.queue.put(None)  # the stop sentinel is for this thread's next get
                break
            batch += more
        return batch

    def _work(self, models: dict[int, Callable]) -> None:
        sizes = sorted(models)
        while (item := self.queue.get()) is not None:
            samples = self._take(item) if self.max_batch > 1 else item
            for start in range(0, len(samples), sizes[-1]):  # a query larger than the largest model: in parts
                part = samples[start:start + sizes[-1]]
                size = next(s for s in sizes if s >= len(part))
                idx = np.array([i for _, i in part])
                x = self.x[np.resize(idx, size)]  # padded with repeats of its own samples to the served size
                y = np.asarray(models[size](x))[:len(part)]
                if self.wrong:
                    y, self.wrong = y + 1.0, False
                self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(qid, 0, 0) for qid, _ in part])
                self.answers.add(idx, y)


def run_loadgen(lg, server: Server, n_samples: int, settings: dict[str, Any], outdir: Path) -> Trial:
    """One LoadGen run of ``settings`` (attributes of ``lg.TestSettings``) against ``server``; its detail log read."""
    s = lg.TestSettings()
    for k, v in settings.items():
        setattr(s, k, v)
    log = lg.LogSettings()
    log.log_output.outdir, log.log_output.copy_summary_to_stdout, log.enable_trace = str(outdir), False, False
    outdir.mkdir(parents=True, exist_ok=True)
    sut = lg.ConstructSUT(server.issue, server.flush)
    qsl = lg.ConstructQSL(n_samples, n_samples, lambda idx: None, lambda idx: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, s, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return read_trial(outdir / "mlperf_log_detail.txt", settings.get("server_target_qps"))


def read_trial(detail: Path, target_qps: float | None) -> Trial:
    """A :class:`Trial` from LoadGen's detail log (``:::MLLOG {json}`` lines; the last value of a key counts)."""
    values: dict[str, Any] = {}
    for line in detail.read_text().splitlines():
        if line.startswith(":::MLLOG "):
            entry = json.loads(line[len(":::MLLOG "):])
            values[entry["key"]] = entry["value"]
    ns = lambda key: values[key] * 1e-9 if key in values else None  # noqa: E731
    rate = values.get("result_completed_samples_per_sec", values.get("result_samples_per_second"))
    return Trial(target_qps, values.get("result_validity") == "VALID",
                 str(values.get("result_invalid_reason") or "").strip(),
                 str(values.get("early_stopping_result") or "").replace(" * ", "").strip(), rate,
                 values.get("result_query_count"), ns("result_50.00_percentile_latency_ns"),
                 ns("result_90.00_percentile_latency_ns"), ns("result_99.00_percentile_latency_ns"),
                 values.get("result_overlatency_query_count"))


def probe(models: dict[int, Callable], x: np.ndarray) -> dict[int, float]:
    """Seconds per call at each loaded batch size, the median of :data:`PROBE_CALLS` calls: LoadGen's expected
    latency (single-, multi-stream) and QPS (offline), and where the server's search starts."""
    out = {}
    for b, served in models.items():
        batch, times = x[np.resize(np.arange(b), b)], []
        for _ in range(PROBE_CALLS):
            t = time.perf_counter()
            served(batch)
            times.append(time.perf_counter() - t)
        out[b] = float(np.median(times))
    return out


def scenario_settings(lg, task: dict, timing: dict[int, float]) -> dict[str, Any]:
    """The LoadGen settings of the task's scenario, stated in full (every one recorded): short durations and query
    counts for a benchmark run (a submission's last 10 minutes), seeds from the session (the same arrivals and sample
    order for every path), expectations from the probe (``timing``: seconds per call by batch size)."""
    load, scenario = task["load"], task["spec"]["scenario"]
    duration_ms, seed = int(load["duration_s"] * 1000), load["seed"]
    out = {"scenario": getattr(lg.TestScenario, LOADGEN[scenario]), "mode": lg.TestMode.PerformanceOnly,
           "min_duration_ms": duration_ms, "max_duration_ms": 10 * duration_ms,
           "min_query_count": load["min_queries"], "qsl_rng_seed": seed, "sample_index_rng_seed": seed + 1,
           "schedule_rng_seed": seed + 2}
    if scenario == "single-stream":
        out.update(single_stream_expected_latency_ns=max(1000, int(timing[1] * 1e9)))
    elif scenario == "multi-stream":
        out.update(multi_stream_samples_per_query=MULTI_STREAM,
                   multi_stream_expected_latency_ns=max(1000, int(timing[MULTI_STREAM] * 1e9)))
    elif scenario == "offline":  # the rate the server reached in a short calibration run (calibrate_offline)
        out.update(offline_expected_qps=timing["offline"], min_query_count=1)
    else:
        out.update(server_target_latency_ns=int(load["latency_bound_s"] * 1e9))
    return out


def calibrate_offline(lg, server: "Server", n_samples: int, settings: dict[str, Any], timing: dict, concurrency: int,
                      outdir: Path) -> None:
    """The offline run's expected rate, ``timing["offline"]``: LoadGen generates one query of expected QPS x duration
    samples, and a rate from the model's call alone (the probe) overstates what the whole server (queue, responses)
    completes, up to 20x, which made a 1 s run last 20 s. A short run (50 ms at the probe's rate) measures it."""
    size = max(b for b in timing if isinstance(b, int))
    probe_rate = concurrency * size / timing[size]
    t = run_loadgen(lg, server, n_samples, {**settings, "offline_expected_qps": probe_rate, "min_duration_ms": 50,
                                             "min_query_count": 1}, outdir / "calibration")
    timing["offline"] = t.samples_per_s or probe_rate


def run_offline(lg, server: Server, n_samples: int, settings: dict[str, Any], outdir: Path) -> list[Trial]:
    """The offline run; while LoadGen judges it INVALID only because it ended before its minimum duration (the
    expected QPS, from the calibration, was below what the server completed), again with a larger expected QPS
    (twice the last, or 1.25x the rate completed, whichever is higher), at most :data:`OFFLINE_TRIES` runs, each
    recorded. The last run is the result."""
    trials = [run_loadgen(lg, server, n_samples, settings, outdir)]
    while not trials[-1].valid and TOO_SHORT in (trials[-1].reason or "") and len(trials) < OFFLINE_TRIES:
        expected = max(2 * settings["offline_expected_qps"], 1.25 * (trials[-1].samples_per_s or 0.0))
        settings = {**settings, "offline_expected_qps": expected}
        trials.append(run_loadgen(lg, server, n_samples, settings, outdir / f"retry-{len(trials)}"))
    return trials


def search_server(lg, server: Server, n_samples: int, base: dict[str, Any], start_qps: float, outdir: Path,
                  on_trial: Callable[[Trial], None]) -> list[Trial]:
    """The largest QPS LoadGen judges VALID: from ``start_qps`` up by 2x until a run is INVALID (or down until one is
    VALID: by 2x, or to 90% of the rate an overloaded run completed, whichever is lower), then halving the interval
    (geometric mean) until the invalid rate is within :data:`SEARCH_RESOLUTION` of the valid one, at most
    :data:`SEARCH_STEPS` runs."""
    trials: list[Trial] = []

    def run(qps: float) -> Trial:
        t = run_loadgen(lg, server, n_samples, {**base, "server_target_qps": qps}, outdir / f"qps-{len(trials)}")
        trials.append(t)
        on_trial(t)
        return t

    valid, invalid, qps = None, None, start_qps
    while len(trials) < SEARCH_STEPS and (valid is None or invalid is None):
        if (t := run(qps)).valid:
            valid, qps = qps, qps * 2
        else:  # an overloaded server completes what it can: no use trying far above that
            invalid, qps = qps, min(qps / 2, 0.9 * (t.samples_per_s or qps))
        if invalid is not None and valid is None and qps < 1:
            break  # not even 1 query per second meets the bound
    while valid is not None and invalid is not None and len(trials) < SEARCH_STEPS and \
            invalid / valid > SEARCH_RESOLUTION:
        qps = math.sqrt(valid * invalid)
        if run(qps).valid:
            valid = qps
        else:
            invalid = qps
    return trials


def measure_load(task: dict, result_path: str, pinned: dict) -> int:
    """A load task: the models loaded, the scenario run (the server's search), every answer checked, the result
    written (module docstring); exit code 0 only when LoadGen ran and every fp32 answer is within tolerance."""
    spec, metrics = task["spec"], LoadMetrics()
    status, error, env = OK, None, {"threads": pinned, "pid": os.getpid(), "device": task.get("device", "cpu")}
    server = None
    try:
        import mlperf_loadgen as lg

        from ..backends import deploy
        from ..workloads import workload_from_dict

        path, workload, load = task_path(task), workload_from_dict(task["workload"]), task["load"]
        env.update(runtime_version(path))
        data = read_inputs(task["inputs"])[0]
        x = np.ascontiguousarray(data.x_test, deploy.input_dtype(workload))
        with np.load(task["reference"]) as z:
            reference = z["logits"]
        exported = deploy.Exported(Path(task["artifact"]), task["exported"]["quantize"],
                                   task["exported"].get("details") or {})
        inject_fault("import", spec["path"], spec["repeat"])  # a runtime that crashes while loading
        per_thread = max(1, spec["threads"] // load["concurrency"])  # the runtime's threads per executing thread
        t0 = time.perf_counter()
        models = [{b: deploy.serve(path, workload, exported, batch_size=b, threads=per_thread,
                                   device=task.get("device", "cpu"))
                   for b in task["batch_sizes"]} for _ in range(load["concurrency"])]
        metrics.load_s = time.perf_counter() - t0
        for m in models:  # warm: the first call of each (a compiling path compiles here, not under load)
            for b, served in m.items():
                served(x[np.resize(np.arange(b), b)])
        timing = probe(models[0], x)
        answers = Answers()
        server = Server(lg, x, models, answers, load["max_batch"] if load["batching"] else 1,
                        load["max_queue_delay_s"], wrong=os.environ.get(WRONG_ENV) == spec["path"])
        inject_fault("serve", spec["path"], spec["repeat"])
        outdir = Path(result_path).with_suffix(".loadgen")
        if spec["scenario"] == "offline":
            calibrate_offline(lg, server, len(x), scenario_settings(lg, task, {**timing, "offline": 1.0}), timing,
                              load["concurrency"], outdir)
        settings = scenario_settings(lg, task, timing)
        on_trial = lambda t: emit(event="trial", qps=t.target_qps, valid=t.valid)  # noqa: E731
        if spec["scenario"] == "server":
            if load["qps"]:  # fixed target rates: the throughput-latency curve, no search
                metrics.trials = [run_loadgen(lg, server, len(x), {**settings, "server_target_qps": q},
                                              outdir / f"qps-{i}") for i, q in enumerate(load["qps"])]
            else:  # start at half what the probe says one sample per call can reach
                start = 0.5 * load["concurrency"] / timing[1]
                metrics.trials = search_server(lg, server, len(x), settings, min(max(start, 10.0), 1e6), outdir,
                                               on_trial)
            best = max((t for t in metrics.trials if t.valid), key=lambda t: t.target_qps, default=None)
            metrics.max_qps = best.target_qps if best else 0.0
        elif spec["scenario"] == "offline":
            metrics.trials = run_offline(lg, server, len(x), settings, outdir)
            best = metrics.trials[-1]
        else:
            metrics.trials = [run_loadgen(lg, server, len(x), settings, outdir)]
            best = metrics.trials[0]
        report = best or metrics.trials[-1]
        metrics.samples_per_s, metrics.valid, metrics.reason = report.samples_per_s, report.valid, report.reason
        metrics.early_stopping = report.early_stopping
        metrics.latency_p50_s, metrics.latency_p90_s, metrics.latency_p99_s = (
            report.latency_p50_s, report.latency_p90_s, report.latency_p99_s)
        server.stop()
        server = None
        metrics.logit_tolerance = task.get("tolerance")
        checked = answers.check(reference, np.asarray(data.y_test), metrics.logit_tolerance)
        metrics.__dict__.update(checked)
        metrics.peak_rss_bytes = peak_rss_bytes()
        metrics.settings = {**{k: (str(v) if not isinstance(v, (int, float)) else v) for k, v in settings.items()},
                            "concurrency": load["concurrency"], "runtime_threads": per_thread,
                            "batching": load["batching"], "max_batch": load["max_batch"],
                            "max_queue_delay_s": load["max_queue_delay_s"], "batch_sizes": task["batch_sizes"],
                            "probe_s": {str(b): t for b, t in timing.items() if isinstance(b, int)},
                            **({"offline_calibrated_qps": timing["offline"]} if "offline" in timing else {})}
        if metrics.wrong_answers:
            status, error = FAILED, (f"{metrics.wrong_answers} of {metrics.answers} answers under load differ from "
                                     f"the float64 reference beyond the tolerance {metrics.logit_tolerance:g} "
                                     f"(largest {metrics.max_abs_logit_diff:.2g})")
    except ImportError as e:
        status, error = UNAVAILABLE, f"not importable: {e}".splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a path that fails under load is a result
        traceback.print_exc()
        status, error = FAILED, f"{type(e).__name__}: {e}".splitlines()[0]
    finally:
        if server is not None:
            server.stop()
    write_result(result_path, {"status": status, "error": error, "environment": env, "metrics": asdict(metrics)})
    return 0 if status == OK else 1


WRONG_ENV = "ISOBENCH_LOAD_WRONG"  # test hook: PATH_ID whose server makes its first answer wrong
