"""The GPU table of benchmarks/README.md from the run records of a session (``isobench run --json PATH``).

    python benchmarks/gpu_table.py RUNS.json [MORE.json ...]

One row per finished run: workload, framework (mode), precision, the steady median step, achieved matmul TFLOP/s
(counted matmul FLOPs of a full-batch step / that step time), MFU (that / the framework's measured peak of the same
precision on the same device, from the session's peaks), energy per training sample (NVML or RAPL; "-" with the
reason where no counter was read) and the device memory peak. Failed runs are listed with their reason. Nothing is
estimated: a figure the run did not record is "-".
"""
from __future__ import annotations

import json
import sys

from isobench.results import ResultSet


def rows(results: ResultSet) -> list[str]:
    out = []
    for r in results.runs:
        s = r.spec
        head = f"| {s.workload} | {s.framework} ({s.mode}) | {s.precision} |"
        if not r.ok:
            out.append(f"{head} {r.status}: {(r.error or '').splitlines()[0][:120] if r.error else ''} | | | | |")
            continue
        m = r.metrics
        achieved, peak = m.achieved_matmul_flops_s, results.peak_flops_s(s)
        mfu = f"{100 * achieved / peak:.1f}%" if achieved and peak else "-"
        energy = f"{m.energy_per_sample_j:.3g} J" if m.energy_per_sample_j is not None else \
            f"- ({m.energy_reason or 'not read'})"
        memory = f"{m.device_peak_bytes / 2**30:.2f} GiB" if m.device_peak_bytes else "-"
        out.append(f"{head} {m.step_time_median_s * 1e3:.4g} ms | {achieved / 1e12:.3g} | {mfu} | {energy} | "
                   f"{memory} |" if achieved else f"{head} {m.step_time_median_s * 1e3:.4g} ms | - | - | {energy} | "
                   f"{memory} |")
    return out


def main(paths: list[str]) -> int:
    print("| workload | framework (mode) | precision | steady step | matmul TFLOP/s | MFU | energy per sample | "
          "device memory peak |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as f:
            results = ResultSet.from_dict(json.load(f))
        print("\n".join(rows(results)))
        for fw, p in results.peaks.items():
            rates = ", ".join(f"{m['precision']} {m['gflops'] / 1e3:.3g} TFLOP/s" for m in p.get("matmul", ())
                              if m.get("gflops"))
            print(f"\npeak {fw} on {p.get('device')}: {rates or p.get('error', '-')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
