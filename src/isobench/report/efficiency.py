"""Plain-text tables of the measured peaks (``isobench peak``, and the lines ``isobench run`` prints when it takes
them) and of the workloads' counted FLOPs (``isobench list --flops``). Pure functions: records in, text out; units on
every number."""
from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

from ..results import PeakRecord
from . import fmt, words
from .model import peak_figures

PEAK_HEAD = ("framework", "version", "fp32 matmul", "bf16 matmul", "copy", "measured")
FLOPS_HEAD = ("workload", "FLOPs/step", "matmul/step", "FLOPs/epoch", "FLOPs/run", "parameters", "bytes/step",
              "intensity")
MACHINE = ("Machine peak (the best matmul rate any framework reached; % of peak divides by it): {}. In parentheses: "
           "each framework's matmul efficiency, its rate / the machine peak; below {:.0%}: measured again in a fresh "
           "worker, flagged 'low' if it stays low.")


def _columns(head: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    """Aligned columns, the first ``right_from`` left-aligned and the rest right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [head, *rows]]


def _copy(gbps: float | None) -> str:
    return f"{fmt.sig(gbps)} GB/s" if gbps else "not measured"


def _machine(records: Iterable[PeakRecord]) -> list[str]:
    """The machine peak and the nominal peak, wrapped."""
    figures = peak_figures(records)
    if not figures.machine:
        return []
    lines = [MACHINE.format(words.machine_peak(figures), words.LOW)
             + (" " + words.CONTENDED_PEAK if any(x.contended for x in figures.machine) else "")]
    lines += [words.nominal(figures)] if figures.nominal else []
    return [w for line in lines for w in textwrap.wrap(line, words.NOTE_WIDTH)]


def peak_lines(peaks: Iterable[PeakRecord]) -> list[str]:
    """The peaks ``isobench run`` took, a line per framework (rates with their matmul efficiency, copy, when, flags),
    then the machine and nominal peaks."""
    records = list(peaks)
    out = []
    for p in peak_figures(records).frameworks:
        who = words.peak_name(p.framework)
        if p.error:
            out.append(f"Peak {who}: not measured ({p.error})")
            continue
        out.append(f"Peak {who}: " + ", ".join(f"{x} matmul {words.rate(p, x)}" for x in p.gflops)
                   + f", copy {_copy(p.copy_gbps)} ({'; '.join([words.when(p)] + words.peak_flags(p))})")
    return out + _machine(records)


def render_peaks(peaks: Iterable[PeakRecord], threads: int, device: str) -> str:
    """The table of ``isobench peak``: per framework its peak matmul rates with their matmul efficiency, copy
    bandwidth, when measured and its flags; then the machine peak and the nominal peak."""
    records = list(peaks)
    rows, notes = [], []
    for p, r in zip(peak_figures(records).frameworks, records):
        who = words.peak_name(p.framework)
        if p.error:
            notes.append(f"{who}: not measured ({p.error})")
            continue
        rows.append((who, str(r.version or "?"), words.rate(p, "fp32"), words.rate(p, "bf16"),
                     _copy(p.copy_gbps), words.when(p).removesuffix(" UTC").replace(", stored", " (stored)")))
        notes += [f"{who}: {flag}" for flag in words.peak_flags(p)]
    out = [f"Measured peak on {device}, {threads} threads (matmul: best sustained n x n product, 2 n^3 FLOPs, best "
           "of 2 timing passes; copy: x + 1 over a large float32 array, bytes read + written)"]
    out += _columns(PEAK_HEAD, rows, right_from=2) if rows else []
    return "\n".join(out + notes + _machine(records) + [
        "A stored measurement (same host, CPU, framework version, device and threads) younger than 7 days and not "
        "taken under contention is reused; --force measures again."])


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
