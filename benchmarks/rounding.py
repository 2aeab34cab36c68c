"""Rounding sensitivity: how far test accuracy moves within one framework when the initial weights change by
about one float32 rounding step, against the gap between frameworks.

    python benchmarks/rounding.py [WORKLOAD] [--frameworks torch,tensorflow,jax] [--copies 4] [--scale 1e-7]
                                  [--epochs N] [--threads N]

isobench's repeats of one cell are the same deterministic training (same weights, data and order), so their
test accuracy is identical and cannot show whether a gap between frameworks is larger than rounding alone
makes it. This script answers that for one workload. Each framework trains, in its own fresh process (pinned
and thread-configured like a worker, default mode, fp32), once from the neutral initial weights and once from
each of ``--copies`` copies whose every weight is multiplied by ``1 + scale * N(0, 1)`` (a seeded draw, the
same copies for every framework; 1e-7 is about one float32 rounding step). It prints every training's epoch
losses and test metric, then compares the frameworks' gap on the neutral weights with the range that the
perturbed copies give inside each framework.

The exit status is 0 unless a training failed: this is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from isobench.backends import get_backend
from isobench.data import batches
from isobench.measure.threads import THREAD_ENV, default_threads, pin
from isobench.config import resolve_workload
from isobench.runner.inputs import read_inputs, write_inputs

FRAMEWORKS = ("torch", "tensorflow", "jax")


def perturb(params: dict[str, np.ndarray], scale: float, seed: int) -> dict[str, np.ndarray]:
    """Every floating-point weight times ``1 + scale * N(0, 1)``, drawn from ``seed`` in name order, in its own
    dtype; other arrays unchanged. ``scale == 0`` returns the weights as they are."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(params):
        v = params[name]
        if scale and v.dtype.kind == "f":
            v = (v.astype(np.float64) * (1 + scale * rng.standard_normal(v.shape))).astype(v.dtype)
        out[name] = v
    return out


def train_copies(framework: str, workload_ref: str, inputs: Path, threads: int, copies: int, scale: float,
                 epochs: int | None) -> list[dict]:
    """In this process: the neutral training (copy 0) and ``copies`` perturbed ones (copy c uses seed c)."""
    pin(threads)
    workload = resolve_workload(workload_ref)
    data, orders, params, lrs = read_inputs(inputs)
    orders = orders[:epochs] if epochs else orders
    backend = get_backend(framework)
    backend.setup(threads, "cpu")
    rows = []
    for copy in range(copies + 1):
        trainer = backend.build(workload, perturb(params, scale if copy else 0.0, copy), data, backend.modes[0],
                                "fp32", "cpu")
        step, epoch_losses = 0, []
        for order in orders:
            losses = []
            for idx in batches(order, workload.batch_size):
                losses.append(trainer.train_step(idx, lrs[step]))
                step += 1
            epoch_losses.append(float(np.mean(losses)))
        test_loss, test_accuracy = trainer.evaluate()
        rows.append({"copy": copy, "epoch_losses": epoch_losses, "test_loss": test_loss,
                     "test_accuracy": test_accuracy})
        which = "neutral" if copy == 0 else f"copy {copy}"
        print(f"  {framework:<10} {which:<8} done", file=sys.stderr, flush=True)
    return rows


def run_framework(framework: str, workload_ref: str, inputs: Path, threads: int, copies: int, scale: float,
                  epochs: int | None, timeout: float) -> list[dict]:
    env = {**os.environ, **{v: str(threads) for v in THREAD_ENV}}  # before numpy loads in the child
    proc = subprocess.run([sys.executable, __file__, "--child", framework, workload_ref, str(inputs), str(threads),
                           str(copies), repr(scale), str(epochs or 0)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{framework}'s process failed (exit {proc.returncode}); its stderr is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def metric_of(row: dict, metric: str) -> float:
    return row["test_accuracy"] if metric == "accuracy" else row["test_loss"]


def compare(results: dict[str, list[dict]], metric: str) -> dict:
    """The frameworks' gap on the neutral weights against the largest range inside one framework over the
    neutral and perturbed trainings (both in the metric's units)."""
    neutral = {f: metric_of(rows[0], metric) for f, rows in results.items()}
    ranges = {f: max(metric_of(r, metric) for r in rows) - min(metric_of(r, metric) for r in rows)
              for f, rows in results.items()}
    gap = max(neutral.values()) - min(neutral.values())
    within = max(ranges.values())
    return {"neutral": neutral, "ranges": ranges, "gap": gap, "within": within, "beyond_rounding": gap > within}


def _fmt(value: float, metric: str) -> str:
    return f"{100 * value:.2f}%" if metric == "accuracy" else f"{value:.4f} nats"


def _units(value: float, metric: str) -> str:
    return f"{100 * value:.2f} pp" if metric == "accuracy" else f"{value:.4f} nats"


def report(results: dict[str, list[dict]], workload, scale: float, threads: int) -> list[str]:
    metric = workload.metric
    title = "test accuracy" if metric == "accuracy" else "test loss"
    epochs = len(next(iter(results.values()))[0]["epoch_losses"])
    lines = [f"{workload.name}, {epochs} epochs, {threads} thread{'s' if threads > 1 else ''}, default modes, fp32; "
             f"copies: every weight times 1 + {scale:g} x N(0, 1)", "",
             f"{'framework':<11} {'weights':<8} {'epoch mean loss':<{11 * epochs}} {title}"]
    for f, rows in results.items():
        for r in rows:
            losses = " ".join(f"{x:10.6f}" for x in r["epoch_losses"])
            which = "neutral" if r["copy"] == 0 else f"copy {r['copy']}"
            lines.append(f"{get_backend(f).display:<11} {which:<8} "
                         f"{losses:<{11 * epochs}} {_fmt(metric_of(r, metric), metric)}")
    c = compare(results, metric)
    lines += ["", f"{title} on the neutral weights: "
              + ", ".join(f"{get_backend(f).display} {_fmt(v, metric)}" for f, v in c["neutral"].items()),
              f"range inside each framework over the neutral and perturbed weights: "
              + ", ".join(f"{get_backend(f).display} {_units(v, metric)}" for f, v in c["ranges"].items())]
    if workload.has_dropout():
        lines.append(f"{workload.name} uses dropout: each framework draws its masks from its own generator, so the "
                     "frameworks' trainings differ by those draws as well as by rounding (parity checks run without "
                     "dropout; isobench run --seeds N varies the draws).")
    if len(results) < 2:
        pass
    elif c["gap"] == 0:
        lines.append(f"The frameworks reached the same {title} on the neutral weights.")
    elif c["beyond_rounding"]:
        lines.append(f"The frameworks' gap on the neutral weights ({_units(c['gap'], metric)}) is larger than the "
                     f"largest range that rounding-size changes of the weights make inside one framework "
                     f"({_units(c['within'], metric)}).")
    else:
        lines.append(f"The frameworks' gap on the neutral weights ({_units(c['gap'], metric)}) is within the range "
                     f"that rounding-size changes of the weights make inside one framework (up to "
                     f"{_units(c['within'], metric)}): it is not evidence of a framework difference.")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        framework, ref, inputs, threads, copies, scale, epochs = argv[1:]
        rows = train_copies(framework, ref, Path(inputs), int(threads), int(copies), float(scale), int(epochs) or None)
        print(json.dumps(rows))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", nargs="?", default="lenet5", help="built-in workload or TOML file (default lenet5)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated (default: all three)")
    ap.add_argument("--copies", type=int, default=4, help="perturbed copies of the weights per framework (default 4)")
    ap.add_argument("--scale", type=float, default=1e-7,
                    help="relative size of the perturbation (default 1e-7, about one float32 rounding step)")
    ap.add_argument("--epochs", type=int, default=0, help="train only the first N epochs (default: the workload's)")
    ap.add_argument("--threads", type=int, default=default_threads(), help="threads per process (default: all)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per framework process (default 1800)")
    a = ap.parse_args(argv)
    frameworks = [f.strip() for f in a.frameworks.split(",") if f.strip()]
    workload = resolve_workload(a.workload)
    results = {}
    with tempfile.TemporaryDirectory(prefix="isobench-rounding-") as tmp:
        inputs = write_inputs(workload, Path(tmp) / "inputs.npz")
        for f in frameworks:
            try:
                results[f] = run_framework(f, a.workload, inputs, a.threads, a.copies, a.scale, a.epochs, a.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"rounding.py: {e}", file=sys.stderr)
                return 1
    print("\n".join(report(results, workload, a.scale, a.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
