"""Harness overhead: isobench's measured training time against a minimal hand-written training loop.

    python benchmarks/overhead.py [--frameworks torch,tensorflow,jax] [--repeats 5] [--threads N]

For each framework this runs R pairs of fresh processes, pairs shuffled with a seeded RNG and the order
inside each pair drawn at random:

* the *minimal loop*: a few lines of idiomatic code written by hand for seed-mlp (no isobench import), run
  as ``python FILE INPUTS.npz THREADS`` under the same CPU pinning, thread variables and framework thread
  calls as an isobench worker; it times the same region as isobench's ``train_time_s`` (from just before the
  first step, compile included, to the end of the last epoch) and prints it as JSON;
* isobench's own worker for the same cell (:func:`isobench.runner.local.run_cell`).

Both read one inputs file (data split, per-epoch orders, initial weights) written once here, so they do
identical work: the epoch losses are printed side by side. The verdict per framework is "within 5%" when
the median over pairs of isobench / minimal is <= 1.05 (the two processes of a pair run back to back, which
cancels the slow drifts of a shared machine's speed); the ratio of medians and 95% bootstrap intervals are
shown with it.
The exit status is 0 unless something crashed: this is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from isobench.backends import get_backend
from isobench.config import OPTIMIZER
from isobench.measure.threads import default_threads
from isobench.results import RunSpec
from isobench.runner.inputs import write_inputs
from isobench.runner.local import WORKER_ENV, run_cell
from isobench.stats import bootstrap_paired_ratio_ci, bootstrap_ratio_ci
from isobench.workloads import get_workload

WORKLOAD = "seed-mlp"
TOLERANCE = 1.05  # isobench may be at most 5% slower than the minimal loop
LOSS_ATOL = 1e-6  # epoch-10 mean loss: identical work gives (nearly) identical floats

# ---------------------------------------------------------------------------------------------------------
# Minimal loops. Each is a complete program: argv = INPUTS.npz THREADS. The preamble pins CPUs and sets the
# thread variables before numpy or the framework is imported, exactly as isobench.measure.threads.pin does.

PREAMBLE = '''\
import json, os, sys
from time import perf_counter
T = int(sys.argv[2])
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:T])
for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
          "TF_NUM_INTEROP_THREADS"):
    os.environ[v] = str(T)
import numpy as np
z = np.load(sys.argv[1])
W = {k[6:]: z[k] for k in z.files if k.startswith("param:")}  # canonical: kernel (in, out), bias (out,)
orders, B, LR = z["orders"], 32, 0.01
'''

REPORT = '''
print(json.dumps({"train_time_s": train_time, "first_step_s": first_step, "epoch_losses": epoch_losses}))
'''

TORCH_THREADS = '''
import torch
torch.set_num_threads(T); torch.set_num_interop_threads(T)
'''

TORCH = '''
import torch
from torch import nn

model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
with torch.no_grad():
    for lin, name in zip(model[::2], ("dense_0", "dense_1", "dense_2")):
        lin.weight.copy_(torch.from_numpy(W[name + "/kernel"].T)); lin.bias.copy_(torch.from_numpy(W[name + "/bias"]))
opt = torch.optim.SGD(model.parameters(), lr=LR)  # torch's default kernel, as isobench's default (library)
loss_fn = nn.CrossEntropyLoss()
x, y = torch.from_numpy(z["x_train"]), torch.from_numpy(z["y_train"].astype(np.int64))
order_t = torch.from_numpy(orders)

epoch_losses, first_step = [], None
t0 = perf_counter()
for order in order_t:
    losses = []
    for i in range(0, len(order), B):
        idx = order[i:i + B]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if first_step is None:
            first_step = perf_counter() - t0
    epoch_losses.append(float(np.mean(losses)))
train_time = perf_counter() - t0
'''

TENSORFLOW_THREADS = '''
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(T); tf.config.threading.set_inter_op_parallelism_threads(T)
'''

TENSORFLOW = '''
import tensorflow as tf

names = ("dense_0", "dense_1", "dense_2")
params = [tf.Variable(W[n + "/" + p]) for n in names for p in ("kernel", "bias")]
x, y = tf.constant(z["x_train"]), tf.constant(z["y_train"])
opt = tf.keras.optimizers.SGD(learning_rate=LR)  # the Keras optimizer, as isobench's default (library)
opt.build(params)

@tf.function(input_signature=[tf.TensorSpec([None], tf.int64)], autograph=False)  # as isobench: no tensor control flow
def train_step(idx):
    with tf.GradientTape() as tape:
        h = tf.gather(x, idx)
        for j in range(0, 6, 2):
            h = tf.nn.bias_add(tf.matmul(h, params[j]), params[j + 1])
            h = tf.nn.relu(h) if j < 4 else h
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.gather(y, idx), logits=h))
    opt.apply_gradients(zip(tape.gradient(loss, params), params))
    return loss

epoch_losses, first_step = [], None
t0 = perf_counter()
for order in orders:
    losses = []
    for i in range(0, len(order), B):
        losses.append(float(train_step(order[i:i + B])))
        if first_step is None:
            first_step = perf_counter() - t0
    epoch_losses.append(float(np.mean(losses)))
train_time = perf_counter() - t0
'''

JAX = '''
from functools import partial
import jax
import jax.numpy as jnp
import optax

def forward(p, x):
    x = jax.nn.relu(x @ p["dense_0/kernel"] + p["dense_0/bias"])
    x = jax.nn.relu(x @ p["dense_1/kernel"] + p["dense_1/bias"])
    return x @ p["dense_2/kernel"] + p["dense_2/bias"]

def loss_fn(p, x, y, idx, mask):  # mean over the real examples of a (padded) batch
    nll = -jnp.take_along_axis(jax.nn.log_softmax(forward(p, x[idx])), y[idx][:, None], axis=1)[:, 0]
    return jnp.sum(nll * mask) / jnp.sum(mask)

tx = optax.sgd(LR)  # optax, as isobench's default (library)

@partial(jax.jit, donate_argnums=(0, 1))
def step(p, s, x, y, idx, mask):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y, idx, mask)
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

p = {k: jnp.asarray(v) for k, v in W.items()}
s = tx.init(p)
x, y = jnp.asarray(z["x_train"]), jnp.asarray(z["y_train"])

epoch_losses, first_step = [], None
t0 = perf_counter()
for order in orders:
    losses = []
    for i in range(0, len(order), B):
        b = order[i:i + B]  # pad the short last batch with mask 0: one compiled shape
        idx = np.zeros(B, np.int32); idx[:len(b)] = b
        mask = np.zeros(B, np.float32); mask[:len(b)] = 1.0
        p, s, loss = step(p, s, x, y, idx, mask)
        losses.append(float(loss))
        if first_step is None:
            first_step = perf_counter() - t0
    epoch_losses.append(float(np.mean(losses)))
train_time = perf_counter() - t0
'''

# (thread set-up, training): a fresh minimal process runs both; the interleaved design runs the thread set-up
# once (through isobench's backend, which makes the same calls) and the training part in every round
MINIMAL = {"torch": (TORCH_THREADS, TORCH), "tensorflow": (TENSORFLOW_THREADS, TENSORFLOW), "jax": ("", JAX)}


def check_workload(workload, inputs: Path) -> None:
    """The minimal loops hard-code seed-mlp; fail loudly if the workload definition or its inputs moved."""
    opt, schedule = workload.optimizer, getattr(workload, "schedule", None)
    got = {"layers": [type(layer).__name__ for layer in workload.layers],
           "param_shapes": workload.param_shapes(), "batch_size": workload.batch_size, "epochs": workload.epochs,
           "loss": workload.loss,
           "optimizer": (opt.kind, opt.learning_rate, opt.momentum, getattr(opt, "nesterov", False),
                         getattr(opt, "weight_decay", 0.0), getattr(opt, "clip_norm", None)),
           "schedule": (getattr(schedule, "kind", "constant"), getattr(schedule, "warmup_steps", 0))}
    with np.load(inputs) as z:
        got["inputs"] = {k: z[k].shape for k in z.files if not k.startswith("param:") and k != "lrs"}
        # every step's learning rate, where the inputs carry it: the minimal loops use the constant LR
        got["schedule"] += (bool(np.all(z["lrs"] == 0.01)) if "lrs" in z.files else True,)
    want = {"layers": ["Dense", "ReLU", "Dense", "ReLU", "Dense"],
            "param_shapes": {"dense_0/kernel": (64, 128), "dense_0/bias": (128,), "dense_1/kernel": (128, 64),
                             "dense_1/bias": (64,), "dense_2/kernel": (64, 10), "dense_2/bias": (10,)},
            "batch_size": 32, "epochs": 10, "loss": "softmax_cross_entropy",
            "optimizer": ("sgd", 0.01, 0.0, False, 0.0, None), "schedule": ("constant", 0, True),
            "inputs": {"x_train": (1438, 64), "y_train": (1438,), "x_test": (359, 64), "y_test": (359,),
                       "orders": (10, 1438)}}
    diff = {k: got[k] for k in want if got[k] != want[k]}
    if diff:
        raise SystemExit(f"{WORKLOAD} changed, update the minimal loops in {__file__}: {diff}")


def run_minimal(framework: str, script: Path, inputs: Path, threads: int, timeout: float) -> dict:
    """One fresh process running the hand-written loop; returns its JSON report."""
    env = {**os.environ, **WORKER_ENV}  # same start-up environment as an isobench worker
    proc = subprocess.run([sys.executable, str(script), str(inputs), str(threads)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"minimal {framework} loop failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_isobench(framework: str, repeat: int, inputs: Path, workdir: Path, order: int, threads: int,
                 timeout: float) -> dict:
    mode = get_backend(framework).modes[0]
    spec = RunSpec(workload=WORKLOAD, framework=framework, mode=mode, repeat=repeat, threads=threads,
                   optimizer=OPTIMIZER)
    record = run_cell(spec, get_workload(WORKLOAD), inputs, workdir, order=order, timeout=timeout)
    if not record.ok:
        raise RuntimeError(f"isobench {framework} run failed ({record.status}): {record.error}\n"
                           f"{record.stderr_tail or ''}")
    m = record.metrics
    return {"train_time_s": m.train_time_s, "first_step_s": m.first_step_s, "epoch_losses": m.epoch_losses}


INTERLEAVED = """
import contextlib, io, random
from isobench.backends import get_backend
from isobench.runner.worker import train
from isobench.workloads import get_workload

task, rounds, seed = json.loads(open(sys.argv[3]).read()), int(sys.argv[4]), int(sys.argv[5])
body = compile(open(sys.argv[6]).read(), "minimal-loop", "exec")
framework = task["spec"]["framework"]
backend, workload = get_backend(framework), get_workload(task["spec"]["workload"])
backend.setup(T)  # the same thread calls as the minimal process makes
rng, rows = random.Random(seed), []
for r in range(rounds):
    kinds = ["minimal", "isobench"]
    rng.shuffle(kinds)
    row = {}
    for kind in kinds:
        if kind == "minimal":  # the hand-written loop, model and optimizer made anew
            ns = dict(z=z, W=W, orders=orders, B=B, LR=LR, T=T, np=np, json=json, perf_counter=perf_counter)
            exec(body, ns)
            row[kind] = {"train_time_s": ns["train_time"], "first_step_s": ns["first_step"],
                         "epoch_losses": ns["epoch_losses"]}
        else:  # isobench's worker function, as a worker process runs it (build, timed loop, evaluations)
            with contextlib.redirect_stdout(io.StringIO()):  # its progress events
                m = train(task, workload, backend)
            row[kind] = {k: getattr(m, k) for k in ("train_time_s", "first_step_s", "epoch_losses")}
    rows.append(row)
    print(f"  {framework:<10} round {r + 1}/{rounds}: minimal {row['minimal']['train_time_s']:.4f} s, "
          f"isobench {row['isobench']['train_time_s']:.4f} s", file=sys.stderr, flush=True)
print(json.dumps(rows))
"""


def run_interleaved(framework: str, tmp: Path, inputs: Path, threads: int, rounds: int, seed: int,
                    timeout: float) -> list[dict]:
    """One fresh process that trains with the minimal loop and with isobench's worker function in turn,
    ``rounds`` times, the order inside each round drawn at random. Both see the same machine state within a
    second or so, which the process pairs cannot give (each process lasts 3-10 s, mostly imports)."""
    body = tmp / f"minimal_{framework}_body.py"
    body.write_text(MINIMAL[framework][1])
    script = tmp / f"interleaved_{framework}.py"
    script.write_text(PREAMBLE + INTERLEAVED)
    spec = RunSpec(workload=WORKLOAD, framework=framework, mode=get_backend(framework).modes[0], repeat=0,
                   threads=threads, optimizer=OPTIMIZER)
    task = tmp / f"interleaved_{framework}.task.json"
    task.write_text(json.dumps({"spec": asdict(spec), "inputs": str(inputs), "capture_steps": 0}))
    env = {**os.environ, **WORKER_ENV}
    proc = subprocess.run([sys.executable, str(script), str(inputs), str(threads), str(task), str(rounds),
                           str(seed), str(body)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"interleaved {framework} process failed (exit {proc.returncode}); its stderr is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def verdict(high: float) -> str:
    """'within 5%' is claimed only when the interval's upper end is inside it."""
    return "within 5%" if high <= TOLERANCE else "not shown"


def summarize(results: dict, label: str, unit: str) -> dict:
    """Print one design's table (ratios of isobench to minimal) and return its figures."""
    head = (f"{'framework':<11}{'minimal s':>11}{'isobench s':>12}{'paired':>8}{'95% CI':>18}"
            f"{'steady':>8}{'95% CI':>18}  {'verdict (CI <= 1.05)':<20}")
    print(f"\n{label}: median over {unit} of isobench / minimal training time")
    print(head)
    print("-" * len(head))
    summary = {}
    for f, res in results.items():
        a = [r["train_time_s"] for r in res["isobench"]]
        b = [r["train_time_s"] for r in res["minimal"]]
        # without the first step (compile/trace): the per-step part of the harness alone
        sa = [r["train_time_s"] - r["first_step_s"] for r in res["isobench"]]
        sb = [r["train_time_s"] - r["first_step_s"] for r in res["minimal"]]
        paired, steady = bootstrap_paired_ratio_ci(a, b), bootstrap_paired_ratio_ci(sa, sb)
        ci = bootstrap_ratio_ci(a, b)
        summary[f] = {"minimal_median_s": float(np.median(b)), "isobench_median_s": float(np.median(a)),
                      "ratio_of_medians": ci.estimate, "ratio_of_medians_ci": [ci.low, ci.high],
                      "paired_ratio": paired.estimate, "paired_ci": [paired.low, paired.high],
                      "steady_paired_ratio": steady.estimate, "steady_paired_ci": [steady.low, steady.high],
                      "within_5_percent": paired.high <= TOLERANCE}
        print(f"{f:<11}{np.median(b):>11.4f}{np.median(a):>12.4f}{paired.estimate:>8.3f}"
              f"{f'[{paired.low:.3f}, {paired.high:.3f}]':>18}{steady.estimate:>8.3f}"
              f"{f'[{steady.low:.3f}, {steady.high:.3f}]':>18}  {verdict(paired.high):<20}")
    return summary


def check_losses(results: dict) -> dict:
    """Identical work: the last epoch's mean loss of every training, minimal and isobench."""
    out = {}
    for f, res in results.items():
        lm = res["minimal"][0]["epoch_losses"][-1]
        li = res["isobench"][0]["epoch_losses"][-1]
        spread = max(abs(r["epoch_losses"][-1] - lm) for k in ("minimal", "isobench") for r in res[k])
        out[f] = {"loss_minimal": lm, "loss_isobench": li, "loss_max_abs_diff": spread}
        print(f"{f:<11} minimal {lm:.8f}  isobench {li:.8f}  max |diff| over all trainings {spread:.1e}"
              f"  {'(agree)' if spread <= LOSS_ATOL else '(DIFFER)'}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frameworks", default="torch,tensorflow,jax", help="comma-separated (default: all three)")
    ap.add_argument("--design", choices=("both", "processes", "interleaved"), default="both",
                    help="processes: pairs of fresh processes; interleaved: both loops in turn inside one "
                         "process per framework; both (default)")
    ap.add_argument("--repeats", type=int, default=20, help="process pairs per framework (default 20)")
    ap.add_argument("--rounds", type=int, default=30,
                    help="interleaved design: recorded rounds per framework, after one warm-up round (default 30)")
    ap.add_argument("--threads", type=int, default=default_threads(), help="CPUs/threads (default: all)")
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded process pairs per framework first (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the run order")
    ap.add_argument("--timeout", type=float, default=900.0, help="per process, seconds")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    args = ap.parse_args(argv)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    for f in frameworks:
        if f not in MINIMAL:
            ap.error(f"no minimal loop for {f!r}; choose from {', '.join(MINIMAL)}")
    if args.repeats < 1 or args.rounds < 1:
        ap.error("--repeats and --rounds must be >= 1")

    workload = get_workload(WORKLOAD)
    load_before = os.getloadavg()[0]
    rng = random.Random(args.seed)
    results = {f: {"minimal": [], "isobench": []} for f in frameworks}
    interleaved = {f: {"minimal": [], "isobench": []} for f in frameworks}
    with tempfile.TemporaryDirectory(prefix="isobench-overhead-") as tmp:
        tmp = Path(tmp)
        inputs = write_inputs(workload, tmp / "inputs.npz")
        check_workload(workload, inputs)
        if args.design in ("both", "interleaved"):
            print(f"interleaved design: 1 warm-up + {args.rounds} rounds per framework", file=sys.stderr)
            for f in frameworks:
                rows = run_interleaved(f, tmp, inputs, args.threads, args.rounds + 1, args.seed, args.timeout)
                for row in rows[1:]:  # the first round warms caches and lazy initialisation up
                    for kind in ("minimal", "isobench"):
                        interleaved[f][kind].append(row[kind])
        if args.design in ("both", "processes"):
            scripts = {}
            for f in frameworks:
                scripts[f] = tmp / f"minimal_{f}.py"
                scripts[f].write_text(PREAMBLE + MINIMAL[f][0] + MINIMAL[f][1] + REPORT)
            warm = [(f, -1 - w) for f in frameworks for w in range(args.warmup)]
            pairs = [(f, r) for f in frameworks for r in range(args.repeats)]
            rng.shuffle(pairs)
            plan = warm + pairs
            order = 0
            for n, (f, r) in enumerate(plan, 1):
                kinds = ["minimal", "isobench"]
                rng.shuffle(kinds)
                for kind in kinds:
                    if kind == "minimal":
                        res = run_minimal(f, scripts[f], inputs, args.threads, args.timeout)
                    else:
                        res = run_isobench(f, max(r, 0), inputs, tmp, order, args.threads, args.timeout)
                        order += 1
                    tag = "warm-up" if r < 0 else f"pair {r + 1}/{args.repeats}"
                    print(f"[{n}/{len(plan)}] {f:<10} {tag:<12} {kind:<8} train {res['train_time_s']:.4f} s"
                          f" (first step {res['first_step_s']:.4f} s)", file=sys.stderr, flush=True)
                    if r >= 0:
                        results[f][kind].append(res)

    print(f"\nisobench overhead, {WORKLOAD}, {args.threads} thread(s)")
    print("train time = first step (compile included) to end of last epoch, as isobench's train_time_s")
    load_after = os.getloadavg()[0]
    print(f"1-minute load average {load_before:.2f} at start, {load_after:.2f} at end (this benchmark alone "
          f"gives about 1; much more means other work competed for the CPUs)")
    out = {"threads": args.threads, "load_average": [load_before, load_after]}
    if args.design in ("both", "interleaved"):
        out["interleaved"] = {"rounds": args.rounds, "runs": interleaved,
                              "summary": summarize(interleaved, "Interleaved, one process per framework",
                                                   f"{args.rounds} rounds")}
    if args.design in ("both", "processes"):
        out["processes"] = {"repeats": args.repeats, "runs": results,
                            "summary": summarize(results, "Fresh processes",
                                                 f"{args.repeats} back-to-back process pairs")}
    print("\npaired: median over pairs (rounds) of isobench / minimal; steady: the same without the first step "
          "(compile/trace); 95% CI: bootstrap over pairs. 'within 5%' is claimed only when the interval's "
          "upper end is <= 1.05.")
    print("\nidentical work: epoch-10 mean training loss (first training of each kind)")
    for design in ("interleaved", "processes"):
        if design in out:
            print(f"{design}:")
            out[design]["losses"] = check_losses(out[design]["runs"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
