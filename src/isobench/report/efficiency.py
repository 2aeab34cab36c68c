"""Plain-text tables of the machine's measured peaks (``isobench peak``) and of the workloads' counted FLOPs
(``isobench list --flops``). Pure functions: records in, text out; units on every number."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..backends import display_name
from . import fmt

PEAK_HEAD = ("framework", "version", "fp32 matmul", "bf16 matmul", "copy", "measured")
FLOPS_HEAD = ("workload", "FLOPs/step", "matmul/step", "FLOPs/epoch", "FLOPs/run", "parameters", "bytes/step",
              "intensity")


def _columns(head: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    """Aligned columns, the first ``right_from`` left-aligned and the rest right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [head, *rows]]


def _rate(p: dict[str, Any], precision: str) -> str:
    m = next((m for m in p.get("matmul", ()) if m.get("precision") == precision), None)
    if m is None:
        return "-"
    return f"{fmt.sig(m['gflops'])} GFLOP/s" if m.get("gflops") else "not measured"


def peak_line(p: dict[str, Any]) -> str:
    """One framework's peak in a line (the progress of ``isobench run``): rates and where they come from."""
    who = display_name(p["framework"])
    if p.get("error"):
        return f"Peak {who}: not measured ({p['error']})"
    copy = f"{fmt.sig(p['copy_gbps'])} GB/s" if p.get("copy_gbps") else "not measured"
    when = ("stored, measured " if p.get("reused") else "measured ") + p["measured_at"][:16].replace("T", " ")
    return (f"Peak {who} {p.get('version', '')}: fp32 matmul {_rate(p, 'fp32')}, bf16 {_rate(p, 'bf16')}, copy "
            f"{copy} ({when} UTC)")


def render_peaks(peaks: Iterable[dict[str, Any]], threads: int, device: str) -> str:
    """The table of ``isobench peak``: per framework its peak matmul rates, copy bandwidth and when measured."""
    rows, errors = [], []
    for p in peaks:
        if p.get("error"):
            errors.append(f"{display_name(p['framework'])}: not measured ({p['error']})")
            continue
        copy = f"{fmt.sig(p['copy_gbps'])} GB/s" if p.get("copy_gbps") else "not measured"
        when = p["measured_at"][:16].replace("T", " ") + (" (stored)" if p.get("reused") else "")
        rows.append((display_name(p["framework"]), str(p.get("version") or "?"), _rate(p, "fp32"), _rate(p, "bf16"),
                     copy, when))
    out = [f"Measured peak on {device}, {threads} threads (matmul: best sustained n x n product, 2 n^3 FLOPs; copy: "
           "x + 1 over a large float32 array, bytes read + written)"]
    out += _columns(PEAK_HEAD, rows, right_from=2) if rows else []
    return "\n".join(out + errors + ["A stored measurement (same host, CPU, framework version, device and threads) "
                                     "younger than 7 days is reused; --force measures again."])


def render_flops(counts: Iterable[Any]) -> str:
    """The table of ``isobench list --flops``: per workload (a :class:`~isobench.workloads.flops.FlopCount` with
    its epoch figures) the counted FLOPs per step, epoch and run, parameters and the modelled intensity."""
    rows = [(c.workload, fmt.count(c.per_step, "FLOP"), fmt.count(c.matmul, "FLOP"),
             fmt.count(c.per_epoch, "FLOP") if c.per_epoch else "-", fmt.count(c.per_run, "FLOP") if c.per_run else "-",
             f"{c.params:,}", fmt.count(c.bytes_per_step, "B"), f"{fmt.sig(c.intensity)} FLOP/B")
            for c in counts]
    return "\n".join(["Counted from the workload spec (not measured): FLOPs of one full-batch training step (forward, "
                      "backward, optimizer update) and its matmul part; per epoch and per run (every epoch's steps, "
                      "evaluation excluded); bytes per step and intensity are modelled (a lower bound of memory "
                      "traffic). Formulas: docs/efficiency.md"] + _columns(FLOPS_HEAD, rows))
