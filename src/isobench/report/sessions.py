"""Plain-text rendering of stored sessions: the full terminal report, parity lines, history and comparisons.

Pure functions, like :mod:`.terminal` (whose number formatting, :mod:`.fmt`, they share): data in, text out.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..results import DEPLOYMENT, OK, SERVING, FrameworkParity, ParityResult, ResultSet
from ..stats import IMPROVEMENT, REGRESSION, UNTESTED, Change, GroupChanges, Group, min_repeats, summarize
from . import fmt, model, words
from .terminal import (render_deploy, render_failures, render_privacy_cost, render_serving, render_table,
                       render_verdict)


def _label(f: FrameworkParity) -> str:
    """A parity record's cell as a group label, e.g. "PyTorch (eager)"."""
    return Group("", f.framework, f.mode, f.precision, optimizer=f.optimizer).label


def parity_line(parity: ParityResult) -> str:
    """One line for a stored parity result (``ResultSet.parity[workload]``): PASSED with the largest epoch-loss
    difference, or FAILED with every check and framework that failed."""
    name = parity.workload
    checks = [c for f in parity.frameworks for c in f.checks] + list(parity.cross)
    if parity.passed:
        epoch = [c for c in checks if c.name.startswith("epoch mean loss")]
        if not epoch:
            return f"Parity {name}: PASSED"
        worst = max(epoch, key=lambda c: c.max_abs_diff)
        return (f"Parity {name}: PASSED (max epoch-loss difference {worst.max_abs_diff:.1e}, "
                f"tolerance {fmt.sci(worst.tolerance, 2)})")
    why = [f"{_label(f)} {f.status}: {f.error}" for f in parity.frameworks if f.status != OK]
    why += [f"{who} {c.name} {c.max_abs_diff:.1e} > tolerance {fmt.sci(c.tolerance, 2)}"
            for who, cs in [(_label(f), f.checks) for f in parity.frameworks] + [("between frameworks:", parity.cross)]
            for c in cs if not c.passed]
    return f"Parity {name}: FAILED ({'; '.join(why)})"


def parity_warning(parity: ParityResult) -> str | None:
    """The warning a report prints under the table of a workload whose parity check failed; None if it passed."""
    if parity.passed:
        return None
    name = parity.workload
    if any(not c.passed for f in parity.frameworks for c in f.checks) or any(not c.passed for c in parity.cross):
        return (f"WARNING: frameworks disagree beyond tolerance on {name}: results compare different work "
                f"(details: isobench parity {name})")
    broken = ", ".join(_label(f) for f in parity.frameworks if f.status != OK)
    return f"WARNING: parity could not be checked on {name} for {broken}: identical work is not proven"


def render_results(results: ResultSet) -> str:
    """The report a session's command prints (and ``isobench show``). A training session: per workload the table (a
    DP-SGD workload's guarantee above it), a parity warning where parity failed and the verdict, then a DP-SGD
    workload's cost of privacy; then the failed runs. A deployment session: :func:`.terminal.render_deploy`; a
    serving session: :func:`.terminal.render_serving`."""
    if results.is_deploy:
        return render_deploy(results)
    if results.is_serving:
        return render_serving(results)
    blocks = []
    for summary in summarize(results.runs, peak=results.peak_flops_s):
        warning = parity_warning(results.parity[summary.workload]) if summary.workload in results.parity else None
        private = model.privacy(results, summary.workload)
        table = render_table(summary, model.efficiency(results, summary.workload))
        blocks.append((words.guarantee(private.guarantee) + "\n" if private else "") + table + "\n\n"
                      + "\n".join(([warning] if warning else []) + render_verdict(summary)))
        if private and private.rows:
            blocks.append(render_privacy_cost(private, summary.level))
    if failures := render_failures(results.runs):
        blocks.append(failures)
    return "\n\n".join(blocks)


def _date(iso: str) -> str:
    return iso[:16].replace("T", " ")  # 2026-11-27T10:01:02+00:00 -> 2026-11-27 10:01 (UTC)


def describe_session(results: ResultSet, status: str) -> str:
    """One line naming a stored session: id, date, version, what ran and how it ended."""
    c = results.config
    head = f"Session {results.session_id}: {_date(results.created_at)} UTC, isobench {results.isobench_version}, "
    gpu = " on cuda" if c.get("device") == "cuda" else ""  # a serving session on a GPU says so (cpu: unsaid)
    if results.is_serving:
        bound = c.get("latency_bound_s")
        return (f"{head}serving {', '.join(c.get('workloads', []))} | {', '.join(c.get('paths', []))} | "
                f"{', '.join(c.get('scenarios', []))}" + (f" (p99 bound {words.bound_ms(bound)})" if bound else "")
                + f", batching {', '.join(c.get('batching', []))} | {c.get('repeats')} repeats, {c.get('threads')} "
                f"threads{gpu} | {len(results.loads)} load workers, {len(results.deploys)} export"
                f"{'s' * (len(results.deploys) != 1)}, {status}")
    if results.is_deploy:
        return (f"{head}deploy {', '.join(c.get('workloads', []))} | {', '.join(c.get('paths', []))} | batch "
                f"{', '.join(map(str, c.get('batch_sizes', [])))} | {c.get('repeats')} repeats, {c.get('threads')} "
                f"threads{gpu} | {len(results.deploys)} deploy workers, {status}")
    repeats = (f"{c.get('repeats')}-{c['max_repeats']} repeats (until ±{100 * c['target_width']:g}%)"
               if c.get("target_width") else f"{c.get('repeats')} repeats")
    return (f"{head}{', '.join(c.get('workloads', []))} | {', '.join(c.get('frameworks', []))} | {repeats}, "
            f"{c.get('threads')} threads | {len(results.runs)} runs, {status}")


def _kind(s) -> str:
    """A stored session's kind and what it served, e.g. ``serving server,offline: torch/onnx,jax/jit``."""
    if s.kind == SERVING:
        return f"serving {','.join(s.scenarios)}: {','.join(s.paths)}"
    return f"deploy {','.join(s.paths)}" if s.kind == DEPLOYMENT else s.kind


def render_history(sessions: Iterable) -> str:
    """The ``isobench history`` table, one row per :class:`~isobench.store.SessionInfo`, oldest first: its kind (and
    what a deployment or serving session served) beside what ran and how it ended."""
    head = ("id", "date (UTC)", "kind", "workloads", "frameworks", "runs ok/failed", "parity", "status")
    rows = [(str(s.id), _date(s.created_at), _kind(s), ",".join(s.workloads), ",".join(s.frameworks),
             f"{s.ok}/{s.failed}", {True: "passed", False: "FAILED", None: "-"}[s.parity_passed], s.status)
            for s in sessions]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i == 0 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     .rstrip() for r in [head, *rows])


def _change_cells(ch: Change) -> tuple[str, ...]:
    """One metric row of a comparison: title, median A -> median B, B/A [interval], p, flag."""
    iv, kind = ch.comparison.interval, ch.metric.kind
    if kind == "accuracy":
        value = lambda x: f"{fmt.pp(x)}%"  # noqa: E731
        diff = lambda x: fmt.signed(x, fmt.pp) + " pp"  # noqa: E731
    else:
        suffix, size = fmt.unit(kind, [abs(ch.a.median), abs(ch.b.median)])
        value = lambda x: f"{fmt.sig(x / size)}{suffix}"  # noqa: E731
        diff = lambda x: fmt.signed(x / size, fmt.sig) + suffix  # noqa: E731
    if ch.comparison.kind == "ratio":
        change = fmt.versus(iv, "ratio", fmt.sig, "")
    else:  # zero values: the difference B - A, each end in its unit
        change = diff(iv.estimate) + (f" [{diff(iv.low)}, {diff(iv.high)}]" if iv.resampled else "")
    return ("  " + words.title(ch.metric.name), f"{value(ch.a.median)} -> {value(ch.b.median)}", change,
            fmt.p_value(ch.comparison.p_value), words.FLAGS[ch.flag])


def render_comparison(a: ResultSet, b: ResultSet, groups: list[GroupChanges], differences: list[tuple[str, Any, Any]],
                      alpha: float = 0.05) -> str:
    """The ``isobench compare`` report: set-up differences, then per (workload, framework, mode) and metric the
    medians in A and B, the ratio B/A with its interval, the p-value and the flag
    (:func:`isobench.stats.compare_sessions`)."""
    out = [f"Session {a.session_id} ({_date(a.created_at)}) -> session {b.session_id} ({_date(b.created_at)}): "
           f"B/A = session {b.session_id} / session {a.session_id}",
           "Set-up differences: " + ("; ".join(f"{k} {va} -> {vb}" for k, va, vb in differences)
                                     if differences else "none (threads, repeats, host, Python, packages)")]
    rows = [row for gc in groups for row in [("",), (f"{gc.group.workload}  {gc.group.label}  n={gc.n_a} -> "
                                                     f"n={gc.n_b}",), *map(_change_cells, gc.changes)]]
    widths = [max((len(r[i]) for r in rows if len(r) > 1), default=0) for i in range(5)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() if len(r) > 1 else r[0] for r in rows]
    out += ["", "Medians over ok processes, then B/A: the ratio of medians [95% CI, bootstrap over processes] and "
            f"the\ntwo-sided Mann-Whitney p. A change is flagged only when the interval excludes 1 and p < {alpha:g};"
            "\nlower time and memory and higher accuracy are improvements."]
    changes = [(gc, ch) for gc in groups for ch in gc.changes]
    if any(ch.comparison.insufficient for _, ch in changes):
        out.append(f"Too few processes in a session to flag anything: the rank test needs at least "
                   f"{min_repeats(alpha)} per session")
    worse = [f"{gc.group.workload} {gc.group.label} {words.title(ch.metric.name)}" for gc, ch in changes
             if ch.flag == REGRESSION]
    better = sum(ch.flag == IMPROVEMENT for _, ch in changes)
    untested = [f"{gc.group.workload} {gc.group.label} {words.title(ch.metric.name)}" for gc, ch in changes
                if ch.flag == UNTESTED]
    out.append(f"{len(worse)} regression{'s' * (len(worse) != 1)}{': ' + ', '.join(worse) if worse else ''}; "
               f"{better} improvement{'s' * (better != 1)}; "
               + (f"{len(untested)} changed but untested, the same in every repeat of each session "
                  f"({', '.join(untested)}; see docs/measurement.md, 'Test accuracy'); " if untested else "")
               + f"{len(changes) - len(worse) - better - len(untested)} without a significant change")
    return "\n".join(out)
