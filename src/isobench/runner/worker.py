"""Worker entry point: one fresh process measures one cell.

    python -m isobench._worker TASK.json RESULT.json

The order matters: pin CPUs and thread variables (done by the bootstrap before numpy loads), load the runner's inputs (numpy), then import the
framework (timed), reset the RSS high-water mark, build (timed), train with a clock read after every
synchronised step, read the training peak, evaluate (timed). The result is written atomically;
progress goes to stdout as ``ISOBENCH {json}`` lines that the parent shows live.
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
from pathlib import Path
from time import perf_counter

import numpy as np

from ..data import batches
from ..measure import PeakTracker, rss_bytes
from ..results import DIVERGED, FAILED, OK, UNAVAILABLE
from .inputs import input_fingerprints, params_fingerprint, read_inputs

EVENT_PREFIX = "ISOBENCH "
FAULT_ENV = "ISOBENCH_FAULT"  # test hook, see inject_fault()


class Diverged(Exception):
    pass


def emit(**event) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def inject_fault(point: str, framework: str, repeat: int) -> str | None:
    """Fault injection for the runner's own tests: ``ISOBENCH_FAULT=KIND[:FRAMEWORK[:REPEAT]],...``
    with KIND one of segfault, kill, exit, hang (with a child process, both in the worker's group), raise (at
    import), nan (the loss of step 3) or oom (before training: allocate and touch 64 MiB chunks until killed, as
    a runaway framework would; --max-memory's watcher should end it). Returns ``"nan"`` when it applies."""
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        kind, fw, rep = (item.split(":") + ["", ""])[:3]
        if (fw and fw != framework) or (rep and int(rep) != repeat):
            continue
        if point == "import" and kind == "segfault":
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
        elif point == "train" and kind == "oom":
            hoard = []
            while len(hoard) < 64:  # 4 GiB: a safety stop should the parent's watcher fail; then hang
                hoard.append(np.ones(8 * 2**20))  # 64 MiB, every page touched
                time.sleep(0.02)
            time.sleep(1e6)
        elif point == "train" and kind == "nan":
            return kind
    return None


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def train(task: dict, workload, backend, out: dict) -> dict:
    """Run one measured training; fills ``out`` (environment, fingerprints) and returns metrics."""
    spec = task["spec"]
    data, orders, params, lrs = read_inputs(task["inputs"])
    out["fingerprints"] = input_fingerprints(data, orders, params)
    rss_before = rss_bytes()

    inject_fault("import", spec["framework"], spec["repeat"])
    t = perf_counter()
    try:
        settings = backend.setup(spec["threads"], spec.get("device", "cpu"))
    except ImportError as e:
        raise _Unavailable(f"{backend.display} is not importable ({e}); install it: {backend.install_hint}")
    import_s = perf_counter() - t
    rss_after_import = rss_bytes()
    out["environment"]["framework"] = settings
    out["environment"]["rss_before_import_bytes"] = rss_before

    peak = PeakTracker()
    peak.start()
    t = perf_counter()
    trainer = backend.build(workload, params, data, spec["mode"], spec.get("precision", "fp32"),
                            spec.get("device", "cpu"))
    build_s = perf_counter() - t
    out["environment"]["peak_reset"] = peak.reset_ok
    loaded = params_fingerprint(trainer.params())
    out["fingerprints"]["loaded_weights"] = loaded
    if loaded != out["fingerprints"]["init_weights"]:
        raise RuntimeError("the backend's weights after loading differ from the neutral initial weights")

    fault = inject_fault("train", spec["framework"], spec["repeat"])
    capture = task.get("capture_steps", 0)
    if capture:  # parity artefacts, taken before the first update
        first = batches(orders[0], workload.batch_size)[0]
        out["arrays"] = {"logits": trainer.logits(data.x_test),
                         **{f"grad:{k}": v for k, v in trainer.gradients(first).items()}}
    # Objects alive now (the framework's and the harness's imports, the built model) are moved out of the
    # collector's reach: otherwise a full collection rescans them (hundreds of thousands after importing
    # TensorFlow, 0.05-0.3 s each) whenever the allocation counters happen to trigger one inside the timed
    # loop, a lottery that depends on what was imported, not on the training. Garbage made from here on is
    # collected as usual.
    gc.collect()
    gc.freeze()
    out["environment"]["gc_frozen_objects"] = gc.get_freeze_count()
    lower_is_better = workload.metric == "loss"
    step_times, step_losses, epoch_losses, full = [], [], [], []
    test_losses, test_accs, eval_times, epoch_ends = [], [], [], []
    time_to_target = None
    B, train_time = workload.batch_size, 0.0
    for epoch, order in enumerate(orders):
        losses = []
        t_epoch = perf_counter()
        for idx in batches(order, B):
            t = perf_counter()
            loss = trainer.train_step(idx, lrs[len(step_times)])  # synchronised: returns a host float
            step_times.append(perf_counter() - t)
            full.append(len(idx) == B)
            if fault == "nan" and len(step_times) == 3:
                loss = float("nan")
            if not math.isfinite(loss):
                raise Diverged(f"loss became {loss} at step {len(step_times)} (epoch {epoch + 1})")
            losses.append(loss)
        train_time += perf_counter() - t_epoch  # evaluation below is kept out of training time
        epoch_ends.append(train_time)
        epoch_losses.append(float(np.mean(losses)))
        step_losses.extend(losses)
        if epoch == len(orders) - 1:
            train_peak = peak.stop()  # before the last evaluation: the training high-water mark
        t = perf_counter()
        test_loss, test_acc = trainer.evaluate()
        eval_times.append(perf_counter() - t)
        test_losses.append(test_loss)
        test_accs.append(test_acc)
        value = test_loss if lower_is_better else test_acc
        if time_to_target is None and workload.target is not None and \
                (value <= workload.target if lower_is_better else value >= workload.target):
            time_to_target = train_time
        emit(event="epoch", epoch=epoch + 1, epochs=len(orders), loss=epoch_losses[-1],
             test_loss=test_loss, test_accuracy=test_acc)
    if capture:
        out["arrays"]["step_losses"] = np.array(step_losses)
        out["arrays"]["final:logits"] = trainer.logits(data.x_test)
        state = workload.state_shapes()
        out["arrays"].update({f"state:{k}": v for k, v in trainer.params().items() if k in state})

    steady = [s for i, s in enumerate(step_times) if i > 0 and full[i]]
    median = _percentile(steady, 50)
    samples = int(sum(len(o) for o in orders))
    best = min(test_losses) if lower_is_better else max(test_accs)
    return {
        "import_s": import_s, "build_s": build_s, "first_step_s": step_times[0],
        "compile_s": max(0.0, step_times[0] - median), "step_time_median_s": median,
        "step_time_p10_s": _percentile(steady, 10), "step_time_p90_s": _percentile(steady, 90),
        "train_time_s": train_time, "eval_s": eval_times[-1], "eval_total_s": float(sum(eval_times)),
        "throughput_samples_s": samples / train_time,
        "test_accuracy": test_accs[-1], "test_loss": test_losses[-1], "epoch_losses": epoch_losses,
        "epoch_test_losses": test_losses, "epoch_test_accuracies": test_accs, "epoch_train_s": epoch_ends,
        "metric": workload.metric, "target": workload.target, "time_to_target_s": time_to_target,
        "best_test_metric": best,
        "rss_after_import_bytes": rss_after_import, "train_peak_rss_bytes": train_peak if peak.reset_ok else None,
        "process_peak_rss_bytes": None, "device_peak_bytes": trainer.device_peak_bytes(),
        "steps": len(step_times), "samples": samples, "step_times_s": step_times,
    }


class _Unavailable(Exception):
    pass


def measure_cell(task_path: str, result_path: str, pinned: dict) -> int:
    """Measure the task, write the result file, return the exit code (0 only for status ok)."""
    task = json.loads(Path(task_path).read_text())
    spec = task["spec"]
    out: dict = {"status": OK, "environment": {"threads": pinned, "pid": os.getpid()}}
    try:
        from ..backends import get_backend
        from ..workloads import workload_from_dict

        backend, workload = get_backend(spec["framework"]), workload_from_dict(task["workload"])
        out["environment"]["seed"] = workload.seed  # of weights, orders and dropout (--seeds varies it per repeat)
        out["metrics"] = train(task, workload, backend, out)
    except _Unavailable as e:
        out.update(status=UNAVAILABLE, error=str(e))
    except Diverged as e:
        out.update(status=DIVERGED, error=str(e))
    except Exception as e:  # noqa: BLE001 - every failure becomes a result record
        traceback.print_exc()
        out.update(status=FAILED, error=f"{type(e).__name__}: {e}".splitlines()[0])
    arrays = out.pop("arrays", None)
    if arrays is not None:
        np.savez(result_path + ".npz", **arrays)
    tmp = result_path + ".tmp"
    Path(tmp).write_text(json.dumps(out))
    os.replace(tmp, result_path)
    sys.stdout.flush()
    return 0 if out["status"] == OK else 1


def run(argv: list[str], pinned: dict) -> None:
    code = measure_cell(*argv, pinned)
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: some frameworks' thread pools make a normal exit slow
