"""The two regimes: one training step of each compute-bound workload against seed-mlp, in % of the measured peak.

    .venv/bin/python benchmarks/compute_bound.py [--workloads resnet18,gpt2-small,bert-base]
        [--frameworks torch,tensorflow,jax] [--batch resnet18=8,gpt2-small=2,bert-base=8] [--scale 1]
        [--threads N] [--db PATH] [--timeout 1800] [--json out.json]

For each compute-bound workload at ``--scale`` (default full scale) and each framework (its default mode, fp32),
one fresh worker process (isobench's own, :func:`isobench.runner.local.run_cell`) trains two steps of ``--batch``
examples: the first is the warm-up (tracing, compilation, allocation), the second is the step reported, then
evaluates ``--batch`` test examples. seed-mlp runs as defined (10 epochs of batch 32; the steady median step).
Reported per cell: the steady step time, the counted matmul FLOPs of the step divided by it (achieved GFLOP/s),
and that as a percentage of the machine's measured fp32 matmul peak (the best rate of the frameworks and numpy in
``isobench peak``: the peaks stored in ``--db``, younger than 7 days and uncontended, else measured now and stored
there). Counted FLOPs come from the spec
(docs/efficiency.md), the step time is measured. This is a benchmark, not a test: one step on a shared machine
is noisy; the point is the order of magnitude between the regimes. Results: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from isobench.backends import DEFAULT_FRAMEWORKS, get_backend, installed_frameworks
from isobench.config import resolve_threads, resolve_workload
from isobench.results import RunSpec, machine_peak, peak_rate
from isobench.runner.inputs import write_inputs
from isobench.runner.local import run_cell
from isobench.runner.peak import peak_frameworks, session_peaks
from isobench.store import open_store
from isobench.workloads import SCALABLE, get_workload
from isobench.workloads.flops import count_flops

# examples per step on this 24 GiB, 2-core CPU: even (TensorFlow's oneDNN conv backward), and small enough that
# one worker stays under about 4 GiB (gpt2-small's 50257-way logits and 162M parameters with Adam state dominate)
BATCH = {"resnet18": 8, "gpt2-small": 2, "bert-base": 8}


def step_workload(name: str, scale: float, batch: int):
    """The workload trimmed to a warm-up step and one measured step of ``batch`` examples, ``batch`` test ones."""
    w = resolve_workload(name, scale=scale)
    return replace(w, batch_size=batch, epochs=1, data=replace(w.data, n_train=2 * batch, n_test=batch))


def measure(workload, framework: str, threads: int, timeout: float, work: Path, order: int) -> dict:
    inputs = write_inputs(workload, work / f"inputs-{order}.npz")
    spec = RunSpec(workload=workload.name, framework=framework, mode=get_backend(framework).modes[0], repeat=0,
                   threads=threads)
    rec = run_cell(spec, workload, inputs, work, order=order, timeout=timeout)
    inputs.unlink()
    row = {"workload": workload.name, "framework": framework, "batch": workload.batch_size, "status": rec.status}
    if not rec.ok:
        return {**row, "error": rec.error}
    m = rec.metrics
    return {**row, "step_s": m.step_time_median_s, "first_step_s": m.first_step_s,
            "matmul_flops_per_step": m.counted_matmul_flops_per_step, "gflops": m.achieved_matmul_flops_s / 1e9,
            "peak_rss_gib": (m.train_peak_rss_bytes or 0) / 2**30}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(SCALABLE))
    p.add_argument("--frameworks", default=",".join(f for f in DEFAULT_FRAMEWORKS if f in installed_frameworks()))
    p.add_argument("--batch", default="", help="NAME=N,... examples per step (default: %s)" % BATCH)
    p.add_argument("--scale", type=float, default=1.0, help="scale of the compute-bound workloads (default 1: full)")
    p.add_argument("--threads", type=int)
    p.add_argument("--db", default="isobench-results/isobench.db", help="where the measured peak is kept and read")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    batch = {**BATCH, **{k: int(v) for k, v in (x.split("=") for x in a.batch.split(",") if x)}}
    frameworks, threads = a.frameworks.split(","), resolve_threads(a.threads)
    with open_store(a.db, create=True) as store:
        peaks = session_peaks(peak_frameworks(frameworks), threads, "cpu", store)
    for f, r in peaks.items():
        print(f"peak {f}: {peak_rate(r)} GFLOP/s fp32 matmul, measured {r.get('measured_at')}"
              f"{' (stored)' if r.get('reused') else ''}{r.get('error', '')}", file=sys.stderr)
    best = machine_peak(peaks.values())  # one denominator for every framework: the machine peak
    peak = {f: best and best[0] for f in frameworks}
    workloads = [get_workload("seed-mlp")] + [step_workload(n, a.scale, batch[n]) for n in a.workloads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="isobench-compute-bound-") as tmp:
        for w in workloads:
            print(f"{w.name}: {count_flops(w).matmul / 1e9:.4g} GFLOP matmul per step of {w.batch_size}",
                  file=sys.stderr)
            for f in frameworks:
                row = measure(w, f, threads, a.timeout, Path(tmp), len(rows))
                if "gflops" in row and peak.get(f):
                    row["percent_of_peak"] = 100 * row["gflops"] / peak[f]
                row["peak_gflops"] = peak.get(f)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    print("| workload | framework | batch | step (s) | first step (s) | matmul GFLOP/step | achieved GFLOP/s | "
          "peak GFLOP/s | % of peak | peak RSS (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['workload']} | {r['framework']} | {r['batch']} | {r['status']}: {r.get('error')} |")
            continue
        pct = f"{r['percent_of_peak']:.1f}%" if "percent_of_peak" in r else "not measured"
        print(f"| {r['workload']} | {r['framework']} | {r['batch']} | {r['step_s']:.4g} | {r['first_step_s']:.4g} | "
              f"{r['matmul_flops_per_step'] / 1e9:.4g} | {r['gflops']:.3g} | {r['peak_gflops'] or '-'} | {pct} | "
              f"{r['peak_rss_gib']:.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
