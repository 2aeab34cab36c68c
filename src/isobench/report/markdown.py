"""The Markdown report: an honest "PyTorch vs TensorFlow vs JAX on this machine" article with PNG plots.

:func:`render_markdown` is pure (results and the plots' relative paths in, text out); :func:`write_markdown`
writes the article and its figures beside it. The conclusion is exactly
:func:`~isobench.report.terminal.render_verdict`'s sentences: nothing is claimed that the intervals and rank
tests do not support. The limitations are facts read from the results (machine, device, process counts,
failures, parity), not boilerplate.
"""
from __future__ import annotations

import html
import re
from collections.abc import Sequence
from math import prod
from pathlib import Path
from urllib.parse import quote

from ..errors import UserError
from ..results import ResultSet
from ..stats import DISPLAY_NAMES, Summary
from ..workloads import get_workload
from .html import (NODE_HEAD, failure_rows, machine_line, manifest_rows, node_rows, parity_for, summaries, table_notes,
                   verdict_rule, workloads)
from .plots import Plot, render_plots
from .terminal import _cells, render_verdict

MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def _md(text: object) -> str:
    """A user-supplied string made inert in Markdown: HTML escaped, Markdown punctuation backslashed, one line."""
    return MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], right: int = 0) -> list[str]:
    """A Markdown table of already escaped cells; columns from ``right`` on are right-aligned."""
    align = ["---:" if right and i >= right else "---" for i in range(len(head))]
    return ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def describe_workload(name: str) -> str:
    """The built-in workload's description and parameter count, or a note that it is not built in."""
    try:
        w = get_workload(name)
    except UserError:
        return "not a built-in workload; no description recorded"
    try:
        params = sum(prod(s) for s in w.param_shapes().values())
    except Exception:  # a spec whose shapes cannot be walked still has a description
        return w.description
    return f"{w.description}; {params:,} parameters"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "workload"


def plot_files(sums: Sequence[Summary]) -> list[str]:
    """A distinct, file-name-safe prefix per workload."""
    seen: set[str] = set()
    out = []
    for s in sums:
        base = slug = _slug(s.workload)
        i = 2
        while slug in seen:
            slug, i = f"{base}-{i}", i + 1
        seen.add(slug)
        out.append(slug)
    return out


def _title(sums: Sequence[Summary]) -> str:
    names = list(dict.fromkeys(DISPLAY_NAMES.get(g.framework, g.framework) for s in sums for g in s.groups))
    return f"{' vs '.join(names) or 'isobench'} on this machine"


def _results(summary: Summary) -> list[str]:
    groups = summary.groups
    head = ["metric"] + [f"{_md(g.label)}<br>n={summary.ok[g]}" + (f", {summary.failed[g]} failed"
                                                                   if summary.failed[g] else "") for g in groups]
    rows = []
    for ms in summary.metrics.values():
        cells = _cells(ms)
        row = [_md(ms.metric.title)]
        for g in groups:
            if g not in cells:
                row.append(_md(ms.metric.missing))
                continue
            value, vs = cells[g]
            row.append(f"**{_md(value)}** (best)" if vs == "best" else f"{_md(value)} · {_md(vs)}" if vs
                       else _md(value))
        rows.append(row)
    return _table(head, rows, right=1) + [""] + [_md(n) for n in table_notes(summary)]


def _limitations(results: ResultSet, sums: Sequence[Summary]) -> list[str]:
    env, runs = results.environment, results.runs
    devices = sorted({r.spec.device for r in runs})
    precisions = sorted({r.spec.precision for r in runs})
    threads = sorted({r.spec.threads for r in runs})
    out = [f"One machine ({_md(machine_line(results))}), measured {_md(results.created_at or 'on an unrecorded date')}"
           f" on {'the CPU only' if devices == ['cpu'] else 'device ' + ', '.join(_md(d) for d in devices)}, "
           f"with {', '.join(map(str, threads))} thread{'s' if threads != [1] else ''} per worker and "
           f"{', '.join(_md(p) for p in precisions)} precision. Another CPU, a GPU, other thread counts or other "
           "library versions can order the frameworks differently."]
    for s in sums:
        counts = ", ".join(f"{_md(g.label)} {s.ok[g]}" for g in s.groups)
        line = (f"{_md(s.workload)}: one model ({_md(describe_workload(s.workload))}); ok processes per framework, "
                f"each one full training run: {counts}.")
        train = s.metrics.get("train_time_s")
        widths = [max(c.interval.high / c.interval.estimate - 1, 1 - c.interval.low / c.interval.estimate)
                  for c in (train.comparisons.values() if train and train.kind == "ratio" else ())
                  if c.interval.resampled and c.interval.estimate > 0]
        if widths:
            line += (f" The {100 * s.level:g}% intervals of the training-time ratios reach up to "
                     f"{100 * max(widths):.0f}% from their estimates; more repeats would narrow them.")
        out.append(line)
        if s.noisy:
            out.append(f"{_md(s.workload)}: " + "; ".join(
                f"{_md(n.group.label)}'s {n.metric.title} varied by {100 * n.cv:.1f}% between processes"
                for n in s.noisy) + ", so the machine was not quiet.")
    failed = sum(not r.ok for r in runs)
    if failed:
        out.append(f"{failed} of {len(runs)} runs failed and are excluded from the statistics (listed below).")
    for w in workloads(results):
        status, _ = parity_for(results, w)
        if "not checked" in status:
            out.append(f"{_md(w)}: parity was not checked in this session: identical inputs were used, but that the "
                       "frameworks did the same arithmetic is not proven by this report.")
        elif not status.endswith("PASSED"):
            out.append(f"{_md(w)}: {_md(status)}: the frameworks may not have done the same work.")
    out.append("Every step returns its loss to the host, which synchronises each step: a framework that could "
               "overlap steps asynchronously is not allowed to here. Timings are of a whole training run "
               "including Python overhead, not of kernels.")
    return [f"- {x}" for x in out]


def render_markdown(results: ResultSet, plots: Sequence[tuple[Summary, Sequence[tuple[Plot, str]]]] = ()) -> str:
    """The article. ``plots``: per summary, its figures with the relative link of each PNG (as written by
    :func:`write_markdown`); without them the article has no figures."""
    sums = [s for s, _ in plots] if plots else summaries(results)
    figures = {s.workload: fs for s, fs in plots}
    names = workloads(results)
    cfg, n_ok = results.config, sum(r.ok for r in results.runs)
    lines = [f"# {_title(sums)}", "",
             f"*Measured with isobench {_md(results.isobench_version or '?')} on "
             f"{_md(results.created_at or 'an unrecorded date')}: {len(results.runs)} worker processes, {n_ok} ok.*",
             "", "## Setup", "",
             f"- **Machine:** {_md(machine_line(results))}"]
    if nodes := node_rows(results):
        lines += ["- **Cluster nodes** (`--executor ray`; each run stores its node's environment record):", ""]
        lines += _table(list(NODE_HEAD), [[_md(row[k]) for k in NODE_HEAD] for row in nodes]) + [""]
    lines += [f"- **Workload {_md(w)}:** {_md(describe_workload(w))}" for w in names]
    lines += [f"- **Session:** {cfg.get('repeats', '?')} repeats per framework, {cfg.get('threads', '?')} threads, "
              f"timeout {cfg.get('timeout_s', '?')} s, plan seed {cfg.get('seed', '?')}"
              + (f", {cfg['seeds']} training seeds (repeat r of every framework: the workload's seed + r mod "
                 f"{cfg['seeds']}; manifest row 'seeds')" if (cfg.get("seeds") or 1) > 1 else ""), "",
              "Fairness manifest: what each worker read back from its framework (a value that differed between "
              "runs is listed with |).", ""]
    for s in sums:
        lines += ([f"**{_md(s.workload)}**", ""] if len(sums) > 1 else []) + _table(
            ["setting"] + [_md(g.label) for g in s.groups],
            [[_md(k)] + [_md(v[g]) for g in s.groups] for k, v in manifest_rows(s, results.runs)]) + [""]
    for w in names:
        status, rows = parity_for(results, w)
        lines.append(f"- **{_md(w)}** {_md(status)}")
        lines += [f"  - {_md(k)}: {_md(v)}" for k, v in rows]
    rule = verdict_rule(sums[0]) if sums else ""
    lines += ["", "## Method", "",
              "Each measurement is one fresh worker process (one framework, one workload, one repeat), pinned to "
              "the same CPUs with the same thread settings before any framework is imported. Repeats are "
              "interleaved in randomised blocks (every framework's repeat r runs before any repeat r+1, shuffled "
              "with the plan seed), so slow drift of the machine does not favour one framework. All frameworks "
              "start from the same initial weights and see the same data in the same order, made once in numpy "
              "(with --seeds, one set per seed: repeat r of every framework uses the same one).",
              "",
              "- **training time**: first data touch to the end of the last epoch, evaluation excluded;",
              "- **steady step time**: each process's median over the full-batch steps after the first;",
              "- **compile cost**: the first step (tracing, compilation) minus the steady median step;",
              "- **test accuracy**: after training, on the held-out split;",
              "- **training peak RSS**: resident memory high-water mark from after the framework import to the end "
              "of training; **process peak RSS**: the whole worker process.",
              "",
              "The process is the unit of replication: every statistic is over one value per process. "
              + _md(rule) + " The full method is in [docs/measurement.md](docs/measurement.md) in the isobench "
              "repository.", "", "## Results", ""]
    for s, slug in zip(sums, plot_files(sums)):
        lines += [f"### {_md(s.workload)}", ""] + _results(s) + [""]
        for plot, link in figures.get(s.workload, ()):
            lines += [f"![{_md(plot.title)}]({link})", "", f"*{_md(plot.caption)}*", ""]
    lines += ["## Conclusion", ""]
    for s in sums:
        if len(sums) > 1:
            lines += [f"### {_md(s.workload)}", ""]
        lines += [f"- {_md(v)}" for v in render_verdict(s)] + [""]
    lines += ["## Limitations", ""] + _limitations(results, sums) + [""]
    failures = failure_rows(results)
    if failures:
        lines += ["## Failed runs", ""] + _table(
            ("workload", "framework (mode)", "repeat", "status", "exit", "reason"),
            [[_md(f[k]) for k in ("workload", "framework (mode)", "repeat", "status", "exit", "reason")]
             for f in failures]) + [""]
    return "\n".join(lines)


def write_markdown(results: ResultSet, path: Path) -> list[Path]:
    """Write the article to ``path`` and its PNG plots to ``<stem>_plots/`` beside it.

    Returns every written path, the article first. Figures are linked with relative paths, so the article and
    its folder can be moved together.
    """
    path = Path(path)
    folder = path.with_name(f"{path.stem}_plots")
    sums = summaries(results)
    written: list[Path] = []
    plots = []
    for s, slug in zip(sums, plot_files(sums)):
        figs = []
        for p in render_plots(s, results.runs):
            folder.mkdir(parents=True, exist_ok=True)
            f = folder / f"{slug}-{p.name}.png"
            f.write_bytes(p.png)
            written.append(f)
            figs.append((p, f"{quote(folder.name)}/{quote(f.name)}"))
        plots.append((s, figs))
    path.write_text(render_markdown(results, plots), encoding="utf-8")
    return [path] + written
