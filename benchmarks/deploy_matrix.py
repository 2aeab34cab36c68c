"""Which deployment path works on which workload: the path x workload matrix of docs/deploy.md.

    python benchmarks/deploy_matrix.py [--workloads seed-mlp,lenet5] [--paths torch/onnx,jax/litert]
                                       [--quantize none,int8] [--json out.json]

Every cell (path, workload, quantization) runs in a fresh process (a crashing exporter loses one cell, and
Keras reads its backend once per process): export the workload's initial weights with random norm parameters and
BatchNorm statistics (:func:`trained_like`; parity needs no training)
with 256 training examples for int8 calibration, serve at batch 1 and 32 with one thread, and compare the
logits on the first test examples with the float64 reference (:func:`isobench.backends.deploy.reference_logits`).
fp32 cells pass when the max abs difference is within :func:`~isobench.backends.deploy.logit_tolerance`; int8
cells report the difference and the top-1 agreement with the reference (untrained weights: no accuracy).
Also printed: export and load times, artifact size and the median latency of 20 calls at batch 32, on this
machine and as they come (sanity numbers, not a benchmark: ``isobench deploy`` measures properly).
The exit status is 0 unless the harness itself fails: a failing cell is a row of the matrix.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORKLOADS = ("seed-mlp", "lenet5", "resnet-mini", "lstm-digits", "vit-digits", "gpt-tiny")
BATCHES = (1, 32)


def trained_like(workload, params: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """``params`` with biases, BatchNorm/LayerNorm's gamma and beta and BatchNorm's moving statistics drawn at
    random (initial values are 1/0, which would let an exporter that drops or misfolds a norm or a bias pass)."""
    rng, out = np.random.default_rng(seed), dict(params)
    for k, v in params.items():
        leaf = k.rsplit("/", 1)[-1]
        if leaf in ("gamma", "moving_var"):
            out[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
        elif leaf in ("beta", "moving_mean", "bias"):
            out[k] = rng.normal(0.0, 0.2, v.shape).astype(np.float32)
    return out


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def cell(path_id: str, workload_name: str, quantize: str, params_file: str | None = None, n_test: int = 64) -> dict:
    """One cell, in this process (``params_file``: a weights ``.npz`` instead of :func:`trained_like` weights;
    ``n_test``: test examples compared, 0 for all)."""
    from isobench.backends import deploy
    from isobench.data import load_dataset
    from isobench.workloads import get_workload, init_params

    wl = get_workload(workload_name)
    params = deploy.load_weights(Path(params_file)) if params_file else trained_like(wl, init_params(wl))
    path, data = deploy.get_path(path_id), load_dataset(wl)
    row: dict = {"path": path_id, "workload": workload_name, "quantize": quantize}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        exported = deploy.export(path, wl, params, Path(tmp), quantize=quantize, calibration=data.x_train[:256],
                                 batch_sizes=BATCHES)
        row["export_s"], row["size_bytes"] = time.perf_counter() - t, _size(exported.artifact)
        row["details"] = exported.details
        x = data.x_test[:n_test or None]
        ref = deploy.reference_logits(wl, params, x)
        diffs, agree = [], []
        for b in BATCHES:
            t = time.perf_counter()
            served = deploy.serve(path, wl, exported, batch_size=b, threads=1)
            row[f"load_s_b{b}"] = time.perf_counter() - t
            out = np.concatenate([served(x[i:i + b]) for i in range(0, len(x) - len(x) % b, b)])
            n = len(out)
            diffs.append(float(np.abs(out - ref[:n]).max()))
            agree.append(float(np.mean(out.argmax(-1) == ref[:n].argmax(-1))))
            if b == BATCHES[-1]:
                times = []
                for _ in range(20):
                    t = time.perf_counter()
                    served(x[:b])
                    times.append(time.perf_counter() - t)
                row["latency_ms_b32"] = 1e3 * float(np.median(times))
    row["max_abs_diff"], row["top1_agreement"] = max(diffs), min(agree)
    tol = deploy.logit_tolerance(wl, quantize)
    row["status"] = "ok" if tol is None or row["max_abs_diff"] <= tol else "over tolerance"
    return row


def run_cell(path_id: str, workload: str, quantize: str, timeout: float, params_file: str | None = None,
             n_test: int = 64) -> dict:
    """One cell in a fresh process; a crash or a timeout is a failed row."""
    base = {"path": path_id, "workload": workload, "quantize": quantize}
    extra = ["--params", params_file] if params_file else []
    try:
        p = subprocess.run([sys.executable, __file__, "--cell", path_id, workload, quantize, "--n-test", str(n_test),
                            *extra], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "status": "failed", "reason": f"timed out after {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = [s for s in p.stderr.splitlines() if s.strip()][-1:] or [f"exit status {p.returncode}"]
    return {**base, "status": "failed", "reason": f"exit status {p.returncode}: {tail[0][:200]}"}


def markdown(rows: list[dict]) -> str:
    """The path x workload matrix (fp32 and int8 cells; a later row of the same cell replaces an earlier one)."""
    cells = {(r["path"], r["workload"], r["quantize"]): r for r in rows}
    paths = list(dict.fromkeys(r["path"] for r in rows))
    workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]

    def text(r: dict | None) -> str:
        if r is None:
            return "not run"
        if r["status"] != "ok":
            return f"**fails**: {r.get('reason', r['status'])[:110]}" if r["status"] == "failed" else \
                f"**{r['status']}** ({r['max_abs_diff']:.1e})"
        if r["quantize"] == "int8":
            return f"int8 ok ({r['max_abs_diff']:.1e} / {100 * r['top1_agreement']:.0f}%)"
        return f"ok ({r['max_abs_diff']:.0e})"

    lines = ["| path | " + " | ".join(workloads) + " |", "| --- |" + " --- |" * len(workloads)]
    for q in ("none", "int8"):
        for p in paths:
            if any(k[0] == p and k[2] == q for k in cells):
                label = p if q == "none" else f"{p} int8"
                lines.append(f"| `{label}` | " + " | ".join(text(cells.get((p, w, q))) for w in workloads) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", nargs=3, metavar=("PATH", "WORKLOAD", "QUANTIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--params", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-test", type=int, default=64, help="test examples compared (0: all)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--paths", default=None, help="comma-separated path ids (default: all but numpy/reference)")
    ap.add_argument("--quantize", default="none,int8")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per cell")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--table", type=Path, nargs="+", default=None,
                    help="print the Markdown matrix of these --json files (later files replace cells) and stop")
    args = ap.parse_args()
    if args.table:
        print(markdown([r for f in args.table for r in json.loads(f.read_text())]))
        return
    if args.cell:
        try:
            row = cell(*args.cell, params_file=args.params, n_test=args.n_test)
        except Exception as e:  # noqa: BLE001  (a failing exporter is a row, with its one-line reason)
            msg = (str(e).strip().splitlines() or [""])[0][:200]
            row = {"path": args.cell[0], "workload": args.cell[1], "quantize": args.cell[2], "status": "failed",
                   "reason": f"{type(e).__name__}: {msg}"}
        print(json.dumps(row, default=str), flush=True)
        return
    from isobench.backends.deploy import PATHS

    paths = args.paths.split(",") if args.paths else [p for p in PATHS if p != "numpy/reference"]
    rows = []
    for wl in args.workloads.split(","):
        for pid in paths:
            for q in args.quantize.split(","):
                if q not in PATHS[pid].quantizations:
                    continue
                row = run_cell(pid, wl, q, args.timeout, n_test=args.n_test)
                rows.append(row)
                keys = ("max_abs_diff", "top1_agreement", "export_s", "size_bytes", "latency_ms_b32")
                print(json.dumps({k: row[k] for k in ("path", "workload", "quantize", "status", "reason", *keys)
                                  if k in row}), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
