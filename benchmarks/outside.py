"""isobench against code it did not write: does every figure belong to the framework it names?

    python benchmarks/outside.py train [--frameworks torch,tensorflow,jax] [--repeats 5] [--busy]
    python benchmarks/outside.py serve [--paths ...] [--repeats 5]

``train``: for each framework, R rounds in a seeded random order, each round one fresh process of the minimal
hand-written seed-mlp loop of ``overhead.py`` (isobench not imported; data, orders and weights from a numpy file)
and one isobench worker for the same cell. Both are spawned through isobench's launcher (``python -S``, which reaps
them with ``wait4``), so the two whole-process peak RSS figures (``ru_maxrss``) are taken the same way. It compares
training time and process peak RSS (verdict: isobench within 5% of the minimal script). With ``--busy`` the rounds
run twice: on the quiet machine, then beside a ``nice -n 19`` single-core busy loop started in this session (the
contention case of issue 19): PyTorch inside isobench must stay within 1.5x of its quiet time, as the minimal loop
does, and every loaded run must be flagged as run under contention.

``serve``: an ``isobench deploy`` session on seed-mlp (fp32, batch 1) exports every path (ONNX Runtime, LiteRT,
ExecuTorch) and keeps the artifacts; then R rounds, each in a seeded random order, of two fresh processes per path:
isobench's own serving worker (the job a session launches) and an outside script that loads the same artifact with
the runtime's own API and times 20 warm-up and 200 calls with ``perf_counter_ns``. Verdict: isobench's p50 and p99
within 10% of the outside loop's, either way (ratio of medians over processes).

The exit status is 0 unless something crashed: this is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import MINIMAL, PREAMBLE, REPORT, WORKLOAD, check_workload  # noqa: E402

from isobench.backends import get_backend  # noqa: E402
from isobench.config import OPTIMIZER  # noqa: E402
from isobench.measure.threads import default_threads  # noqa: E402
from isobench.results import RunSpec  # noqa: E402
from isobench.runner.inputs import write_inputs  # noqa: E402
from isobench.runner.local import LAUNCHER, WORKER_ENV, run_cell  # noqa: E402
from isobench.stats import bootstrap_ratio_ci  # noqa: E402
from isobench.workloads import get_workload  # noqa: E402

RSS_TOLERANCE = 1.05       # isobench's process peak RSS within 5% of the minimal script's
LOADED_TOLERANCE = 1.5     # training time beside the busy loop within 1.5x of quiet
SERVE_TOLERANCE = 1.10     # p50 and p99 within 10% of the outside loop's
BUSY_LOOP = ["nice", "-n", "19", sys.executable, "-c", "while True: pass"]


def launched(cmd: list[str], tmp: Path, name: str, timeout: float) -> tuple[str, int]:
    """Run ``cmd`` under isobench's launcher; (its stdout, its ru_maxrss in bytes)."""
    exit_path = tmp / f"{name}.exit.json"
    proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(exit_path), *cmd], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env={**os.environ, **WORKER_ENV}, timeout=timeout)
    reaped = json.loads(exit_path.read_text())
    if proc.returncode or reaped["status"]:
        raise RuntimeError(f"{name} failed (status {reaped['status']}):\n{proc.stderr[-3000:]}")
    return proc.stdout, reaped["maxrss_kib"] * 1024


def minimal_run(framework: str, script: Path, inputs: Path, threads: int, tmp: Path, timeout: float) -> dict:
    out, maxrss = launched([sys.executable, str(script), str(inputs), str(threads)], tmp, f"minimal-{framework}",
                           timeout)
    return {**json.loads(out.strip().splitlines()[-1]), "process_peak_rss_bytes": maxrss}


def isobench_run(framework: str, repeat: int, inputs: Path, tmp: Path, threads: int, timeout: float) -> dict:
    spec = RunSpec(WORKLOAD, framework, get_backend(framework).modes[0], repeat, threads, optimizer=OPTIMIZER)
    r = run_cell(spec, get_workload(WORKLOAD), inputs, tmp, order=repeat, timeout=timeout)
    if not r.ok:
        raise RuntimeError(f"isobench {framework} failed ({r.status}): {r.error}\n{r.stderr_tail or ''}")
    m = r.metrics
    return {"train_time_s": m.train_time_s, "process_peak_rss_bytes": m.process_peak_rss_bytes,
            "epoch_losses": m.epoch_losses, "contended": m.contended, "contention": m.contention}


def train_rounds(frameworks: list[str], repeats: int, threads: int, seed: int, tmp: Path, inputs: Path,
                 timeout: float, label: str) -> dict:
    scripts = {}
    for f in frameworks:
        scripts[f] = tmp / f"minimal_{f}.py"
        scripts[f].write_text(PREAMBLE + MINIMAL[f][0] + MINIMAL[f][1] + REPORT)
    rng, out = random.Random(seed), {f: {"minimal": [], "isobench": []} for f in frameworks}
    plan = [(f, r) for f in frameworks for r in range(repeats)]
    rng.shuffle(plan)
    for n, (f, r) in enumerate(plan, 1):
        kinds = ["minimal", "isobench"]
        rng.shuffle(kinds)
        for kind in kinds:
            res = minimal_run(f, scripts[f], inputs, threads, tmp, timeout) if kind == "minimal" else \
                isobench_run(f, r, inputs, tmp, threads, timeout)
            out[f][kind].append(res)
            print(f"[{label} {n}/{len(plan)}] {f:<10} {kind:<8} train {res['train_time_s']:.4f} s  peak RSS "
                  f"{res['process_peak_rss_bytes'] / 2**20:.0f} MiB"
                  + (f"  contended ({res['contention']:.0%})" if res.get("contended") else ""),
                  file=sys.stderr, flush=True)
    return out


def _ratio(a: list[float], b: list[float]) -> str:
    ci = bootstrap_ratio_ci(a, b)
    return f"{ci.estimate:.3f} [{ci.low:.3f}-{ci.high:.3f}]"


def cmd_train(args) -> dict:
    frameworks = [f for f in args.frameworks.split(",") if f]
    workload = get_workload(WORKLOAD)
    out: dict = {"threads": args.threads, "repeats": args.repeats, "load_average_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="isobench-outside-") as tmp:
        tmp = Path(tmp)
        inputs = write_inputs(workload, tmp / "inputs.npz")
        check_workload(workload, inputs)
        out["quiet"] = train_rounds(frameworks, args.repeats, args.threads, args.seed, tmp, inputs, args.timeout,
                                    "quiet")
        if args.busy:
            busy = subprocess.Popen(BUSY_LOOP)  # same session as this script and its workers: nice 19 applies
            try:
                out["busy"] = train_rounds(frameworks, args.repeats, args.threads, args.seed + 1, tmp, inputs,
                                           args.timeout, "beside a nice 19 busy loop")
            finally:
                busy.send_signal(signal.SIGKILL)
                busy.wait()
    med = lambda rows, k: float(np.median([r[k] for r in rows]))  # noqa: E731
    print(f"\n{WORKLOAD}, {args.threads} threads, {args.repeats} rounds per framework (median over fresh processes)")
    head = f"{'framework':<11}{'minimal MiB':>12}{'isobench MiB':>13}  {'isobench / minimal [95% CI]':<28}verdict"
    print("\nwhole-process peak RSS (ru_maxrss from wait4, both through isobench's launcher), quiet machine")
    print(head + "\n" + "-" * len(head))
    for f in frameworks:
        q = out["quiet"][f]
        a, b = [r["process_peak_rss_bytes"] for r in q["isobench"]], [r["process_peak_rss_bytes"] for r in q["minimal"]]
        ok = bootstrap_ratio_ci(a, b).estimate <= RSS_TOLERANCE
        print(f"{f:<11}{np.median(b) / 2**20:>12.1f}{np.median(a) / 2**20:>13.1f}  {_ratio(a, b):<28}"
              f"{'within 5%' if ok else 'NOT within 5%'}")
    head = (f"{'framework':<11}{'kind':<10}{'quiet s':>9}" + (f"{'loaded s':>10}{'loaded / quiet [95% CI]':>26}"
                                                               f"{'flagged':>9}" if args.busy else ""))
    print("\ntraining time (first step to the end of the last epoch, as isobench's train_time_s)")
    print(head + "\n" + "-" * len(head))
    for f in frameworks:
        for kind in ("minimal", "isobench"):
            quiet = [r["train_time_s"] for r in out["quiet"][f][kind]]
            line = f"{f:<11}{kind:<10}{np.median(quiet):>9.4f}"
            if args.busy:
                rows = out["busy"][f][kind]
                loaded = [r["train_time_s"] for r in rows]
                flagged = f"{sum(r['contended'] for r in rows)}/{len(rows)}" if kind == "isobench" else "-"
                line += f"{np.median(loaded):>10.4f}{_ratio(loaded, quiet):>26}{flagged:>9}"
            print(line)
    print(f"\nidentical work: the last epoch's loss, minimal {out['quiet'][frameworks[0]]['minimal'][0]['epoch_losses'][-1]:.8f}"
          f" and isobench {out['quiet'][frameworks[0]]['isobench'][0]['epoch_losses'][-1]:.8f} ({frameworks[0]})")
    out["load_average_end"] = os.getloadavg()[0]
    print(f"1-minute load average {out['load_average_start']:.2f} at start, {out['load_average_end']:.2f} at end")
    return out


# ---- serving: the same artifact timed by the runtime's own API ---------------------------------------------------

OUTSIDE_SERVE = '''\
import json, os, sys
from time import perf_counter_ns
T, runtime, artifact, x_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:T])
for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[v] = str(T)
import numpy as np
xs = np.load(x_path)
if runtime == "onnxruntime":
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = T; o.inter_op_num_threads = 1
    sess = ort.InferenceSession(artifact, o, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    call = lambda x: sess.run(None, {name: x})[0]
elif runtime == "litert":
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=artifact, num_threads=T)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    if list(i["shape"]) != list(xs[0].shape):
        it.resize_tensor_input(i["index"], list(xs[0].shape))
    it.allocate_tensors()
    set_tensor, invoke, get_tensor, i_index, o_index = it.set_tensor, it.invoke, it.get_tensor, i["index"], o["index"]
    def call(x):  # as lean as a careful user writes it: bound methods, no lookups per call
        set_tensor(i_index, x); invoke(); return get_tensor(o_index)
else:  # executorch
    import torch
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime
    torch.set_num_threads(T); _unsafe_reset_threadpool(T)  # ExecuTorch's only thread control from Python
    method = Runtime.get().load_program(artifact).load_method("forward")
    execute, from_numpy = method.execute, torch.from_numpy
    call = lambda x: execute([from_numpy(x)])[0].numpy()
batches = [np.ascontiguousarray(xs[k % len(xs)]) for k in range(200)]  # owned arrays, made before any timing
for k in range(20):
    call(batches[k])
ns = []
for x in batches:
    t = perf_counter_ns(); call(x); ns.append(perf_counter_ns() - t)
print(json.dumps({"latency_p50_s": float(np.percentile(ns, 50)) * 1e-9, "latency_p99_s": float(np.percentile(ns, 99)) * 1e-9}))
'''
RUNTIMES = {"onnx": "onnxruntime", "litert": "litert", "executorch": "executorch"}


def cmd_serve(args) -> dict:
    from isobench.backends import deploy
    from isobench.config import DeployChoices, resolve_deploy
    from isobench.results import EXPORT, DeploySpec
    from isobench.runner.deploy import serving_job
    from isobench.runner.inputs import read_inputs
    from isobench.runner.local import run_job
    from isobench.runner.session import run_session

    paths = args.paths.split(",") if args.paths else [p for p in deploy.PATHS if p.split("/")[1] in RUNTIMES]
    workload = get_workload(WORKLOAD)
    out: dict = {"threads": args.threads, "repeats": args.repeats, "paths": {p: {"isobench": [], "outside": []}
                                                                          for p in paths}}
    with tempfile.TemporaryDirectory(prefix="isobench-outside-serve-") as tmp:
        tmp = Path(tmp)
        config, _ = resolve_deploy(DeployChoices([WORKLOAD], paths=",".join(paths), batch_sizes="1", quantize="none",
                                              repeats=1, calls=200, threads=args.threads, timeout=args.timeout,
                                              seed=args.seed, keep_artifacts=str(tmp / "artifacts")))
        session = run_session(config)  # the exports (kept), each served once
        exported = {r.spec.path: r.environment.exported for r in session.results.deploys
                    if r.spec.kind == EXPORT and r.ok}
        inputs = write_inputs(workload, tmp / "inputs.npz")
        data = read_inputs(inputs)[0]
        np.savez(reference := tmp / "reference.npz", logits=deploy.reference_logits(
            workload, deploy.load_weights(Path(session.results.weights[WORKLOAD]["file"])), data.x_test))
        x_path = tmp / "x.npy"
        np.save(x_path, np.ascontiguousarray(data.x_test[:, None].astype(np.float32)))  # batches of 1
        (script := tmp / "outside_serve.py").write_text(OUTSIDE_SERVE)
        rng, order = random.Random(args.seed), 0
        for repeat in range(args.repeats):  # interleaved: every path's two processes in a shuffled round
            units = [(p, kind) for p in exported for kind in ("isobench", "outside")]
            rng.shuffle(units)
            for path, kind in units:
                if kind == "isobench":  # isobench's own serving worker, launched as a session launches it
                    job = serving_job(order, DeploySpec(WORKLOAD, path, "none", None, repeat, args.threads),
                                      workload, str(inputs), str(reference), exported[path], config)
                    [r] = run_job(job, tmp)
                    if not r.ok:
                        raise RuntimeError(f"isobench {path} serving failed ({r.status}): {r.error}")
                    res = {"latency_p50_s": r.metrics.latency_p50_s, "latency_p99_s": r.metrics.latency_p99_s}
                else:  # the runtime's own API on the same batch-1 file
                    artifact = Path(exported[path]["artifact"])
                    artifact = next(artifact.glob("b1.*")) if artifact.is_dir() else artifact
                    stdout, _ = launched([sys.executable, str(script), str(args.threads), RUNTIMES[path.split("/")[1]],
                                          str(artifact), str(x_path)], tmp, f"outside-{order}", args.timeout)
                    res = json.loads(stdout.strip().splitlines()[-1])
                order += 1
                out["paths"][path][kind].append(res)
                print(f"[round {repeat + 1}/{args.repeats}] {path:<18} {kind:<8} p50 {res['latency_p50_s'] * 1e6:.2f} µs"
                      f"  p99 {res['latency_p99_s'] * 1e6:.2f} µs", file=sys.stderr, flush=True)
    print(f"\n{WORKLOAD} fp32 batch 1, {args.threads} threads: isobench's serving processes against an outside loop "
          "on the same artifact (20 warm-up + 200 calls, perf_counter_ns, fresh processes, interleaved)")
    head = f"{'path':<20}{'isobench p50':>13}{'outside p50':>12}{'ratio [95% CI]':>24}{'isobench p99':>14}" \
           f"{'outside p99':>12}{'ratio [95% CI]':>24}  verdict"
    print(head + "\n" + "-" * len(head))
    for path, res in out["paths"].items():
        if not res["isobench"]:
            continue
        cols, ok = [], True
        for q in ("latency_p50_s", "latency_p99_s"):
            a, b = [r[q] for r in res["isobench"]], [r[q] for r in res["outside"]]
            ok &= abs(bootstrap_ratio_ci(a, b).estimate - 1) <= SERVE_TOLERANCE - 1  # either way: faster is wrong too
            cols.append(f"{np.median(a) * 1e6:>11.2f}µs{np.median(b) * 1e6:>10.2f}µs{_ratio(a, b):>24}")
        print(f"{path:<20}{cols[0]}  {cols[1]}  {'within 10%' if ok else 'NOT within 10%'}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="training time and process peak RSS against minimal scripts")
    t.add_argument("--frameworks", default="torch,tensorflow,jax")
    t.add_argument("--busy", action="store_true", help="also run beside a nice 19 single-core busy loop")
    s = sub.add_parser("serve", help="serving latency against an outside loop on the same artifact")
    s.add_argument("--paths", help="deployment paths (default: every exported path)")
    for p in (t, s):
        p.add_argument("--repeats", type=int, default=5, help="fresh processes per framework/path and kind")
        p.add_argument("--threads", type=int, default=default_threads())
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--timeout", type=float, default=900.0)
        p.add_argument("--json", type=Path, help="also write every measurement here")
    args = ap.parse_args(argv)
    out = cmd_train(args) if args.command == "train" else cmd_serve(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
