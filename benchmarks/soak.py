"""Soak check: one long isobench session in which about a third of the workers fail, and nothing is lost.

    python benchmarks/soak.py [--frameworks numpy] [--runs 66] [--fault-fraction 0.33] [--timeout 10]
                              [--max-memory 1G] [--seed 0] [--keep DIR]

Runs ONE ``isobench run`` session through the command line, into a fresh database in a temporary folder, of
``--runs`` worker processes (spread over ``--frameworks``, default the framework-free numpy reference) on a
two-epoch version of seed-mlp's model. A seeded random choice of about ``--fault-fraction`` of the cells is made to
fail with ``ISOBENCH_FAULT`` entries aimed at single (framework, repeat) cells, cycling through the ways a worker
can fail: segfault, SIGKILL, exit code 3, an exception, a hang (killed at ``--timeout``), a NaN loss and runaway
memory (killed at ``--max-memory``). Then it reads the database back and checks:

* the session is stored as finished and isobench exited with 1 (some runs failed), not 2 or a crash;
* every planned cell has exactly one record, in one session;
* every cell without a fault is ``ok`` with complete metrics (one step time per step, finite loss per epoch,
  accuracy, peak memory);
* every faulted cell has the status its fault should give (crashed, failed, timeout, diverged, out_of_memory)
  with its reason: the signal or exit code, the error line and, where the worker printed one, the stderr tail;
* no worker, launcher or child process of the session is left running.

It prints the counts per status, the wall time and one line per problem; the exit status is 0 only when every
check passes.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from isobench.results import CRASHED, DIVERGED, FAILED, OK, OUT_OF_MEMORY, TIMEOUT
from isobench.store import Store

# seed-mlp's model (MLP 64-128-64-10 on digits), two epochs instead of ten: ~2 s per numpy worker
WORKLOAD = """name = "soak-mlp"
description = "seed-mlp's MLP 64-128-64-10 on digits, 2 epochs (soak check)"
input_shape = [64]
num_classes = 10
batch_size = 32
epochs = 2

[[layers]]
kind = "dense"
units = 128

[[layers]]
kind = "relu"

[[layers]]
kind = "dense"
units = 64

[[layers]]
kind = "relu"

[[layers]]
kind = "dense"
units = 10
"""

# fault -> (status, check of the record) ; the order is the cycle in which faults are handed out
FAULTS = {
    "segfault": (CRASHED, lambda r: r.signal == signal.SIGSEGV and "SIGSEGV" in r.error),
    "kill": (CRASHED, lambda r: r.signal == signal.SIGKILL and "SIGKILL" in r.error),
    "exit": (FAILED, lambda r: r.exit_code == 3 and "injected fault: exit 3" in (r.stderr_tail or "")
             and "exited with code 3" in r.error),
    "hang": (TIMEOUT, lambda r: r.signal == signal.SIGKILL and "exceeded the timeout" in r.error
             and "injected fault: hang" in (r.stderr_tail or "")),
    "nan": (DIVERGED, lambda r: re.fullmatch(r"loss became nan at step 3 \(epoch 1\)", r.error) is not None),
    "oom": (OUT_OF_MEMORY, lambda r: re.fullmatch(r"resident memory reached \d+ MiB, over --max-memory \d+ MiB; killed",
                                                  r.error) is not None),
    "raise": (FAILED, lambda r: r.exit_code == 1 and r.error == "RuntimeError: injected fault"
              and "Traceback" in (r.stderr_tail or "")),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frameworks", default="numpy", help="comma-separated frameworks (default numpy; e.g. numpy,torch)")
    p.add_argument("--runs", type=int, default=66, help="worker processes in the session (at least 60; default 66)")
    p.add_argument("--fault-fraction", type=float, default=1 / 3, help="share of the workers made to fail (1/3)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="--timeout of the session: hung workers cost this much each; keep it above the slowest "
                        "healthy worker (default 10 s; give torch or tensorflow more on a busy machine)")
    p.add_argument("--max-memory", default="1G", help="--max-memory of the session (default 1G)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault placement and of the run order")
    p.add_argument("--keep", metavar="DIR", help="write the database and logs to DIR instead of a temporary folder")
    return p.parse_args(argv)


def place_faults(frameworks: list[str], repeats: int, fraction: float, seed: int) -> dict[tuple[str, int], str]:
    """(framework, repeat) -> fault, for a seeded random ``fraction`` of the cells, faults in turn."""
    cells = [(f, r) for f in frameworks for r in range(repeats)]
    chosen = random.Random(seed).sample(cells, round(fraction * len(cells)))
    kinds = list(FAULTS)
    return {cell: kinds[i % len(kinds)] for i, cell in enumerate(sorted(chosen, key=lambda c: (c[1], c[0])))}


def processes_mentioning(text: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def check(results, faults: dict[tuple[str, int], str], frameworks: list[str], repeats: int) -> list[str]:
    """Every problem found in the stored session, one line each."""
    problems = []
    seen = Counter((r.spec.framework, r.spec.repeat) for r in results.runs)
    for cell in ((f, i) for f in frameworks for i in range(repeats)):
        if seen[cell] != 1:
            problems.append(f"{cell[0]} repeat {cell[1]}: {seen[cell]} records, expected exactly 1")
    for cell in set(seen) - {(f, i) for f in frameworks for i in range(repeats)}:
        problems.append(f"{cell}: a record outside the plan")
    for r in results.runs:
        where = f"{r.spec.framework} repeat {r.spec.repeat}"
        fault = faults.get((r.spec.framework, r.spec.repeat))
        if fault is None:
            m = r.metrics
            if r.status != OK:
                problems.append(f"{where}: no fault injected but status {r.status}: {r.error}")
            elif m is None:
                problems.append(f"{where}: ok without metrics")
            elif not (m.train_time_s > 0 and m.steps > 0 and len(m.step_times_s) == m.steps
                      and len(m.epoch_losses) == 2 and all(math.isfinite(x) for x in m.epoch_losses)
                      and 0 <= m.test_accuracy <= 1 and (m.process_peak_rss_bytes or 0) > 0):
                problems.append(f"{where}: incomplete metrics")
            continue
        status, reason = FAULTS[fault]
        if r.status != status:
            problems.append(f"{where}: {fault} injected, recorded {r.status} ({r.error}), expected {status}")
        elif r.metrics is not None or not r.error:
            problems.append(f"{where}: {fault}: a failure must have an error and no metrics")
        elif not reason(r):
            problems.append(f"{where}: {fault}: the record does not give the reason (signal {r.signal}, exit code "
                            f"{r.exit_code}, error {r.error!r}, stderr {(r.stderr_tail or '')[-120:]!r})")
    return problems


def main(argv=None) -> int:
    args = parse_args(argv)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    repeats = math.ceil(args.runs / len(frameworks))
    if repeats * len(frameworks) < 60:
        sys.exit("soak.py: a soak session needs at least 60 runs")
    faults = place_faults(frameworks, repeats, args.fault_fraction, args.seed)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="isobench-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp"  # the workers' files: /proc tells whether any of their processes outlived the session
    tmp.mkdir(exist_ok=True)
    toml, db, log = folder / "soak-mlp.toml", folder / "soak.db", folder / "isobench.log"
    toml.write_text(WORKLOAD)
    if db.exists():
        sys.exit(f"soak.py: {db} exists; give an empty --keep folder")
    fault_env = ",".join(f"{kind}:{fw}:{rep}" for (fw, rep), kind in sorted(faults.items(), key=lambda x: x[0][::-1]))
    cmd = [sys.executable, "-m", "isobench", "run", str(toml), "--frameworks", ",".join(frameworks),
           "--repeats", str(repeats), "--threads", "1", "--no-parity", "--warmup", "0", "--seed", str(args.seed),
           "--timeout", str(args.timeout), "--max-memory", args.max_memory, "--db", str(db)]
    print(f"soak: {repeats * len(frameworks)} runs ({', '.join(frameworks)} x {repeats} repeats), {len(faults)} "
          f"made to fail ({', '.join(f'{n} {k}' for k, n in Counter(faults.values()).items())}); "
          f"--timeout {args.timeout:g} --max-memory {args.max_memory}; log: {log}", file=sys.stderr)
    t0 = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, "TMPDIR": str(tmp), "ISOBENCH_FAULT": fault_env})
    wall = time.monotonic() - t0
    left = processes_mentioning(str(tmp))

    problems = [] if code == 1 else [f"isobench exited with {code}, expected 1 (some runs failed); see {log}"]
    if left:
        problems.append(f"{len(left)} worker processes outlived the session: {left}")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    with Store(db) as store:
        sessions = store.sessions()
        if len(sessions) != 1:
            problems.append(f"{len(sessions)} sessions stored, expected 1")
        results = store.load()
        if store.status(results.session_id) != "finished":
            problems.append(f"session {results.session_id} is {store.status(results.session_id)}, expected finished")
    problems += check(results, faults, frameworks, repeats)

    counts = Counter(r.status for r in results.runs)
    healthy = len([r for r in results.runs if (r.spec.framework, r.spec.repeat) not in faults])
    print(f"\nsoak: {len(results.runs)} runs stored in {wall:.0f} s wall: "
          + ", ".join(f"{s} {n}" for s, n in counts.most_common()), file=sys.stderr)
    for fw in frameworks:
        mine = Counter(r.status for r in results.runs if r.spec.framework == fw)
        print(f"  {fw:<12} " + ", ".join(f"{s} {n}" for s, n in mine.most_common()), file=sys.stderr)
    for p in problems:
        print(f"  PROBLEM: {p}", file=sys.stderr)
    verdict = "PASS" if not problems else f"FAIL ({len(problems)} problems)"
    print(f"soak: {verdict}: {counts[OK]} of {healthy} healthy runs stored ok with metrics, "
          f"{len(results.runs) - counts[OK]} of {len(faults)} injected failures recorded with status and reason; "
          f"{len(left)} processes left behind", file=sys.stderr)
    if not args.keep and not problems:
        for f in sorted(folder.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        folder.rmdir()
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
