"""Worker entry point: one fresh process measures one cell.

    python -m isobench._worker TASK.json RESULT.json

The order matters: pin CPUs and thread variables (done by the bootstrap before numpy loads), load the runner's
inputs (numpy), then import the framework (timed), reset the RSS high-water mark, build (timed), train with a
clock read after every synchronised step, read the training peak, evaluate (timed); the clock arithmetic is
:mod:`isobench.measure.timing`'s. The worker builds its :class:`~isobench.results.Metrics` and
:class:`~isobench.results.WorkerSettings` itself and writes them, with its status, atomically; progress goes to
stdout as ``ISOBENCH {json}`` lines that the parent shows live.
"""
from __future__ import annotations

import gc
import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter

import numpy as np

from ..measure.contention import ContentionMeter
from ..measure.memory import PeakTracker, rss_bytes
from ..measure.timing import Clock, Stopwatch, harness_between, summarise, time_to_target
from ..measure.energy import POWERCAP, EnergyReading, default_meters
from ..results import DIVERGED, FAILED, OK, UNAVAILABLE, Metrics, ThreadSettings, WorkerSettings
from .inputs import StepPlan, input_fingerprints, params_fingerprint, read_inputs, step_plan

EVENT_PREFIX = "ISOBENCH "
EVENT_INTERVAL_S = 1.0  # at most one progress event per second from a measuring worker (see _train_epochs)
SPAWNED_ENV = "ISOBENCH_SPAWNED_AT"  # CLOCK_MONOTONIC seconds as the launcher spawned this process (local.LAUNCHER)
FAULT_ENV = "ISOBENCH_FAULT"  # test hook, see inject_fault()
POWERCAP_ENV = "ISOBENCH_POWERCAP"  # test hook: a fake /sys/class/powercap tree for the energy meters
MODULES_ENV = "ISOBENCH_MODULES"  # test hook: write the modules loaded before the framework import to this file


class Diverged(Exception):
    pass


def emit(**event) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def inject_fault(point: str, framework: str, repeat: int) -> str | None:
    """Fault injection for the runner's own tests: ``ISOBENCH_FAULT=KIND[:FRAMEWORK[:REPEAT]],...``
    with KIND one of segfault, kill, exit, hang (with a child process, both in the worker's group), raise (at
    import), nan (the loss of step 3) or oom (before training, or before a serving worker's first timed calls:
    allocate and touch 64 MiB chunks until killed, as a runaway framework would; --max-memory's watcher should end
    it). FRAMEWORK is a deployment path for a deployment worker. Returns ``"nan"`` when it applies."""
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        kind, fw, rep = (item.split(":") + ["", ""])[:3]
        if (fw and fw != framework) or (rep and int(rep) != repeat):
            continue
        if point in ("import", "serve") and kind == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif point == "import" and kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif point == "import" and kind == "exit":
            print("injected fault: exit 3", file=sys.stderr)
            os._exit(3)
        elif point == "import" and kind == "hang":
            child = os.fork()  # a hung framework may have started helpers: the timeout must take them too
            if child:
                print(f"injected fault: hang, worker {os.getpid()}, child {child}", file=sys.stderr, flush=True)
            time.sleep(1e6)
            os._exit(0)
        elif point == "import" and kind == "raise":
            raise RuntimeError("injected fault")
        elif point in ("train", "serve") and kind == "oom":
            hoard = []
            while len(hoard) < 64:  # 4 GiB: a safety stop should the parent's watcher fail; then hang
                hoard.append(np.ones(8 * 2**20))  # 64 MiB, every page touched
                time.sleep(0.02)
            time.sleep(1e6)
        elif point == "train" and kind == "nan":
            return kind
    return None


@dataclass
class WorkerRun:
    """What a worker has learnt about its run; a failure midway keeps what it had got to."""
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    fingerprints: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # parity captures (capture_steps > 0)


@dataclass
class _Curves:
    """Per-epoch results of the training loop."""
    losses: list[float] = field(default_factory=list)        # mean training loss of each epoch
    step_losses: list[float] = field(default_factory=list)
    test_losses: list[float] = field(default_factory=list)
    test_accuracies: list[float] = field(default_factory=list)
    train_peak: int | None = None                            # VmHWM before the last evaluation


def train(task: dict, workload, backend, run: WorkerRun | None = None, clock: Clock = perf_counter) -> Metrics:
    """Run one measured training and return its metrics; ``run`` (settings, fingerprints, parity captures) is
    filled as the training gets that far. Clock readings follow the backends' synchronised calls."""
    run = run if run is not None else WorkerRun()
    spec, watch, peak = task["spec"], Stopwatch(clock), PeakTracker()
    data, orders, params, lrs = read_inputs(task["inputs"])
    run.fingerprints.update(input_fingerprints(data, orders, params))
    rss_before, run.settings.harness_s = rss_bytes(), since_spawn()
    if os.environ.get(MODULES_ENV):
        Path(os.environ[MODULES_ENV]).write_text(json.dumps(sorted(sys.modules)))
    inject_fault("import", spec["framework"], spec["repeat"])
    contention = ContentionMeter()  # the measured window: framework import to the end of training
    contention.start()
    try:
        run.settings.framework = watch.phase("import", backend.setup, spec["threads"], spec.get("device", "cpu"))
    except ImportError as e:
        raise _Unavailable(f"{backend.display} is not importable ({e}); install it: {backend.install_hint}")
    rss_after_import, run.settings.rss_before_import_bytes = rss_bytes(), rss_before
    peak.start()
    trainer = watch.phase("build", backend.build, workload, params, data, spec["mode"], spec.get("precision", "fp32"),
                          spec.get("device", "cpu"), spec.get("optimizer", "neutral"))
    run.settings.peak_reset = peak.reset_ok
    run.fingerprints["loaded_weights"] = params_fingerprint(trainer.params())
    if run.fingerprints["loaded_weights"] != run.fingerprints["init_weights"]:
        raise RuntimeError("the backend's weights after loading differ from the neutral initial weights")
    fault = inject_fault("train", spec["framework"], spec["repeat"])
    capture = task.get("capture_steps", 0)
    plan = step_plan(workload, orders, len(data.x_train))
    if capture:  # parity artefacts, taken before the first update
        first = plan.epochs[0][0]
        run.arrays.update(logits=trainer.logits(data.x_test),
                          **{f"grad:{k}": v for k, v in trainer.gradients(first).items()})
    meters = default_meters(spec.get("device", "cpu"), os.environ.get(POWERCAP_ENV) or POWERCAP)
    run.settings.gc_frozen_objects = _freeze_gc()
    for meter in meters:
        meter.start()
    curves = _train_epochs(trainer, plan, lrs, watch, peak, fault)
    readings, shared = [meter.stop() for meter in meters], contention.stop()
    if task.get("save_params"):  # isobench deploy: the trained weights, canonical layout, float32 as served
        arrays = {k: np.asarray(v) for k, v in trainer.params().items()}
        np.savez(task["save_params"], **{k: a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a
                                         for k, a in arrays.items()})
    if capture:
        state = workload.state_shapes()
        run.arrays.update({"step_losses": np.array(curves.step_losses), "final:logits": trainer.logits(data.x_test),
                           **{f"state:{k}": v for k, v in trainer.params().items() if k in state}})
    lower_is_better = workload.metric == "loss"
    values = curves.test_losses if lower_is_better else curves.test_accuracies
    samples = plan.samples
    timings = summarise(watch.timeline, samples,
                        time_to_target(watch.timeline.epoch_train_s, values, workload.target, lower_is_better))
    run.settings.harness_between_s = harness_between(watch.timeline)
    return Metrics(**timings, **contention_fields(shared), test_accuracy=curves.test_accuracies[-1], test_loss=curves.test_losses[-1],
                   epoch_losses=curves.losses, epoch_test_losses=curves.test_losses,
                   epoch_test_accuracies=curves.test_accuracies, metric=workload.metric, target=workload.target,
                   best_test_metric=min(values) if lower_is_better else max(values),
                   rss_after_import_bytes=rss_after_import,
                   train_peak_rss_bytes=curves.train_peak if peak.reset_ok else None,
                   process_peak_rss_bytes=None,  # the parent's, from wait4
                   device_peak_bytes=trainer.device_peak_bytes(), steps=len(watch.timeline.step_s), samples=samples,
                   **counted(workload, len(data.x_train), len(data.x_test)), **energy(readings, samples))


def since_spawn() -> float | None:
    """Seconds since the launcher spawned this process (interpreter start and isobench's own imports), ``None``
    when not started by the launcher."""
    spawned = os.environ.get(SPAWNED_ENV)
    return time.monotonic() - float(spawned) if spawned else None


def contention_fields(c) -> dict:
    """The :class:`~isobench.results.Metrics` fields of a :class:`~isobench.measure.contention.Contention` window
    (``None``: /proc/stat unreadable, all fields left empty)."""
    if c is None:
        return {}
    return dict(other_cpu_s=c.other_cpu_s, steal_cpu_s=c.steal_s, contention=c.fraction, load_before=c.load_before,
                load_after=c.load_after)


def counted(workload, n_train: int, n_test: int) -> dict:
    """The counted FLOPs and modelled bytes of one full-batch training step (:mod:`isobench.workloads.flops`), as
    :class:`~isobench.results.Metrics` fields; ``{}`` for a workload the count does not cover (a run never fails
    for want of a count)."""
    from ..workloads.flops import count_flops

    try:
        c = count_flops(workload, n_train, n_test)
    except Exception:  # noqa: BLE001 - e.g. an optimizer or layer the count does not know: recorded as null
        return {}
    return dict(counted_flops_per_step=c.per_step, counted_matmul_flops_per_step=c.matmul,
                modelled_bytes_per_step=c.bytes_per_step)


def energy(readings: list[EnergyReading], samples: int) -> dict:
    """The energy fields of :class:`~isobench.results.Metrics` from the meters' readings: the joules of every
    counter that could be read, summed, with their sources; the reasons of those that could not. No counter read:
    joules ``None`` with the reasons (never an estimate)."""
    read = [r for r in readings if r.joules is not None]
    joules = sum(r.joules for r in read) if read else None
    return dict(energy_train_j=joules, energy_per_sample_j=joules / samples if joules is not None and samples else None,
                energy_source="+".join(r.source for r in read) or None,
                energy_reason="; ".join(r.reason for r in readings if r.reason) or None)


def _freeze_gc() -> int:
    """Move the objects alive now out of the collector's reach; returns how many.

    They are the framework's and the harness's imports and the built model: otherwise a full collection rescans
    them (hundreds of thousands after importing TensorFlow) whenever the allocation counters happen to trigger
    one inside the timed loop, a lottery that depends on what was imported, not on the training. Garbage made
    from here on is collected as usual. No collection first: it would free next to nothing (25 objects after
    importing torch, none after TensorFlow) and cost the harness 0.09-0.26 s per worker."""
    gc.freeze()
    return gc.get_freeze_count()


def _train_epochs(trainer, plan: StepPlan, lrs, watch: Stopwatch, peak: PeakTracker, fault: str | None) -> _Curves:
    """The timed loop: every epoch's steps in the runner's order, then an evaluation kept out of training time.

    Progress events go to the parent at most every :data:`EVENT_INTERVAL_S` (never after the last epoch): each one
    wakes the parent, whose handling runs on the worker's CPUs while the next epoch is timed (an event per epoch
    of a 90 ms seed-mlp training would be ten such interruptions, for a progress line nobody can read)."""
    curves, last_event = _Curves(), watch.clock()
    for epoch, steps in enumerate(plan.epochs):
        losses = []
        watch.start_epoch()
        for idx in steps:
            step = len(watch.timeline.step_s)
            loss = watch.step(plan.steady(idx), trainer.train_step, idx, lrs[step])  # a host float
            if fault == "nan" and step == 2:
                loss = float("nan")
            if not math.isfinite(loss):
                raise Diverged(f"loss became {loss} at step {step + 1} (epoch {epoch + 1})")
            losses.append(loss)
        watch.end_epoch()
        curves.losses.append(float(np.mean(losses)))
        curves.step_losses.extend(losses)
        if epoch == len(plan.epochs) - 1:
            curves.train_peak = peak.stop()  # before the last evaluation: the training high-water mark
        test_loss, test_acc = watch.evaluate(trainer.evaluate)
        curves.test_losses.append(test_loss)
        curves.test_accuracies.append(test_acc)
        if epoch < len(plan.epochs) - 1 and watch.clock() - last_event >= EVENT_INTERVAL_S:
            last_event = watch.clock()
            emit(event="epoch", epoch=epoch + 1, epochs=len(plan.epochs), loss=curves.losses[-1],
                 test_loss=test_loss, test_accuracy=test_acc)
    return curves


class _Unavailable(Exception):
    pass


def measure_cell(task: dict, result_path: str, pinned: dict) -> int:
    """Measure a training task, write the result file, return the exit code (0 only for status ok)."""
    spec = task["spec"]
    run = WorkerRun(WorkerSettings(threads=ThreadSettings(**pinned), pid=os.getpid()))
    status, error, metrics = OK, None, None
    try:
        from ..backends import get_backend
        from ..workloads import workload_from_dict

        backend, workload = get_backend(spec["framework"]), workload_from_dict(task["workload"])
        run.settings.seed = workload.seed
        metrics = train(task, workload, backend, run)
    except _Unavailable as e:
        status, error = UNAVAILABLE, str(e)
    except Diverged as e:
        status, error = DIVERGED, str(e)
    except Exception as e:  # noqa: BLE001 - every failure becomes a result record
        traceback.print_exc()
        status, error = FAILED, f"{type(e).__name__}: {e}".splitlines()[0]
    if run.arrays:
        np.savez(task["captures"], **run.arrays)
    write_result(result_path, {"status": status, "error": error, "environment": run.settings.to_dict(),
                                "fingerprints": run.fingerprints, "metrics": asdict(metrics) if metrics else None})
    sys.stdout.flush()
    return 0 if status == OK else 1


def measure_peak(task: dict, result_path: str, pinned: dict) -> int:
    """A peak task (``{"kind": "peak", "spec": {framework, threads, device}, "options": {...}}``): the framework's
    measured peak (:func:`isobench.backends.peak.peak`, each trial watched by a
    :class:`~isobench.measure.contention.ContentionMeter`) into the result file; exit code 0 when measured."""
    spec, status, error, peak = task["spec"], OK, None, None
    try:
        from ..backends.peak import peak as measure
        from ..measure.contention import ContentionMeter
        peak = measure(spec["framework"], spec["threads"], spec.get("device", "cpu"), meter=ContentionMeter(),
                       **task.get("options", {}))
    except ImportError as e:
        status, error = UNAVAILABLE, f"{spec['framework']} is not importable ({e})"
    except Exception as e:  # noqa: BLE001 - a failed measurement is a result
        traceback.print_exc()
        status, error = FAILED, f"{type(e).__name__}: {e}".splitlines()[0]
    write_result(result_path, {"status": status, "error": error, "pinned": pinned, "peak": peak})
    return 0 if status == OK else 1


def write_result(path: str, value: dict) -> None:
    """``value`` as JSON at ``path``, atomically (a value JSON cannot hold, e.g. a path, as its text)."""
    Path(path + ".tmp").write_text(json.dumps(value, default=str))
    os.replace(path + ".tmp", path)
