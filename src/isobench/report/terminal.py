"""Plain-text rendering of a :class:`~isobench.stats.Summary`: the results table, the verdict, the failures; of a
deployment session (:mod:`.deploy`): its software, tables and summary verdict; and of a serving session
(:mod:`.serving`): its software, a table and verdict per scenario.

Pure functions: data in, text out. The numbers and claims come from :mod:`.model` (units chosen once per row,
3 significant figures), the words from :mod:`.words`; the verdict only claims what the statistics support (the
rule is in :mod:`isobench.stats`).
"""
from __future__ import annotations

import textwrap
from collections.abc import Iterable

from ..backends import display_name
from ..results import EXPORT, Record, ResultSet, RunRecord
from ..stats import Group, Summary
from . import deploy, model, serving, words


def render_table(summary: Summary, efficiency: model.Efficiency | None = None) -> str:
    """The results table: one row per metric, one column per (framework, mode) group.

    A cell holds the median over ok processes with its robust spread (% of the median; accuracy in
    percentage points) and the ratio to the best group with its bootstrap interval (accuracy, and metrics
    with zero values: the difference). A header states n and failures per column; notes explain the notation
    (and, with ``efficiency``, the counted FLOPs, the peak and the energy counters behind the efficiency rows).
    """
    t = model.table(summary, efficiency)
    groups = summary.groups
    titles = [words.title(r.metric.metric.name) for r in t.rows]
    widths = {g: max([len(g.label), len(t.heads[g])]
                     + [len(r.cells[g].value) + 2 + len(r.cells[g].versus) if g in r.cells else
                        len(words.missing(r.metric.metric.name)) for r in t.rows])
              for g in groups}
    first = max(map(len, titles), default=0)

    def line(title: str, cols: dict[Group, str]) -> str:
        return "  ".join([f"{title:<{first}}"] + [f"{cols[g]:<{widths[g]}}" for g in groups]).rstrip()

    out = [f"{summary.workload}: one value per worker process (n = ok processes)",
           line("", {g: g.label for g in groups}), line("", t.heads)]
    # the median on the left, the comparison right-aligned so that ratios line up down the column
    out += [line(title, {g: c.value + c.versus.rjust(widths[g] - len(c.value)) if (c := r.cells.get(g))
                         else words.missing(r.metric.metric.name) for g in groups}) for title, r in zip(titles, t.rows)]
    return "\n".join(out + [ln for n in t.notes for ln in words.note(t, n)])


def render_privacy_cost(p: model.Privacy, level: float = 0.95) -> str:
    """The cost-of-privacy table of a DP-SGD workload whose counterpart ran in the session: one row per metric
    (steady step time, training time, training peak RSS, device peak, test accuracy), one column per framework:
    private vs non-private medians, then private / non-private with its interval (accuracy: the difference in
    pp). ``""`` when the counterpart did not run."""
    if not p.rows:
        return ""
    titles = [words.title(name) for name, _ in p.rows]
    widths = {g: max([len(g.label), len(p.heads[g])] + [len(c.value) + 2 + len(c.versus) for _, row in p.rows
                                                         if (c := row.get(g))]) for g in p.groups}
    first = max(map(len, titles))

    def line(title: str, cols: dict) -> str:
        return "  ".join([f"{title:<{first}}"] + [f"{cols.get(g, '-'):<{widths[g]}}" for g in p.groups]).rstrip()

    # the private vs non-private medians on the left, the comparison right-aligned so that ratios line up
    rows = [{g: c.value + c.versus.rjust(widths[g] - len(c.value)) for g, c in row.items()} for _, row in p.rows]
    return "\n".join([*words.cost_title(p, level), line("", {g: g.label for g in p.groups}), line("", p.heads)]
                     + [line(t, r) for t, r in zip(titles, rows)])


def render_verdict(summary: Summary) -> list[str]:
    """Plain-language conclusions, one per line, claiming only what the intervals and tests support.

    The best group is compared with every other on training time, time to target, steady step time, compile
    cost, test accuracy and peak memory (training RSS; device memory where measured). Then the caveats: groups
    whose runs all failed, too few repeats for a claim, and noisy groups with advice.
    """
    return [words.sentence(summary, c) for c in model.claims(summary)]


def render_failures(runs: Iterable[RunRecord]) -> str:
    """One line per failed run (any status but ok): workload, label, repeat (1-based), status and why.
    Returns ``""`` when every run succeeded."""
    failed = model.failures(runs)
    if not failed:
        return ""
    width = max(len(f"{f.group.workload}  {f.group.label}") for f in failed)
    return "\n".join([f"Failed runs ({len(failed)}, excluded from the statistics):"] + [
        f"  {f.group.workload + '  ' + f.group.label:<{width}}  {f.run.spec.repeat_label}  {f.run.status}: "
        f"{f.reason}" for f in failed])


def _framework_table(title: str, head: list[str], groups: list[tuple[str, list[list[str]]]], note: str = "") -> str:
    """A table of rows grouped by framework (each group under its framework's name), then the note wrapped: a row
    shorter than the head has its last cell (a reason) run across the columns after its own, only its head cells
    setting widths."""
    rows = [r for _, cells in groups for r in cells]
    widths = [max(len(r[i]) for r in [head, *rows] if i < len(r) - (len(r) < len(head))) for i in range(len(head))]
    text = iter("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() if len(r) == len(head) else
                "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in [head, *rows])
    lines = [title, "  " + next(text)]
    for fw, cells in groups:
        lines += [f"{display_name(fw)}:"] + ["  " + next(text) for _ in cells]
    return "\n".join(lines + ([""] + textwrap.wrap(note, words.NOTE_WIDTH) if note else []))


def render_deploy_table(t: deploy.DeployTable) -> str:
    """One workload's deployment table: framework by framework, a row per path, precision and batch size with its
    medians in each column's unit (a row without figures: its reason across the figure columns), then the note."""
    head = [*words.DEPLOY_HEAD, *map(words.column_head, t.columns), words.DLOGIT_HEAD]
    groups = [(fw, [[*words.row_head(s), *(words.figure(s, c) for c in t.columns), words.parity_cell(s)] if s.ok else
                    [*words.row_head(s), words.row_error(s)] for s in rows]) for fw, rows in t.frameworks]
    return _framework_table(f"{t.summary.workload}: deployment, one value per serving process", head, groups,
                            words.DEPLOY_NOTE)


def render_deploy(results: ResultSet) -> str:
    """What ``isobench deploy`` prints at the end (and ``isobench show`` of a deployment session): the software
    line, then per workload the weights, the table and the summary verdict (the full one is in the HTML and Markdown
    reports), then the failed workers."""
    blocks = [words.software_line(deploy.software(results))] if results.deploys else []
    for d in deploy.sections(results):
        n = sum(c.comparison is not None for c in d.claims)
        blocks.append("\n".join(([words.weights_line(d.summary.workload, d.weights)] if d.weights else [])
                                + [render_deploy_table(d.table), ""]
                                + [words.sentence(d.summary, c) for c in d.verdict]
                                + ([words.all_comparisons(n)] if n else [])))
    if failed := deploy.failed_workers(results.deploys):
        blocks.append(_failed_workers(failed))
    return "\n\n".join(blocks) if blocks else "No deploy records in this session"


def _failed_workers(failed: list[Record]) -> str:
    """One line per failed deploy or load worker: workload, what it served (and repeat), status and error."""
    return "\n".join([f"Failed workers ({len(failed)}):"] + [
        f"  {r.spec.workload}  {r.spec.label}" + (f" repeat {r.spec.repeat + 1}" if r.spec.kind != EXPORT else "")
        + f"  {r.status}: {r.error}" for r in failed])


def render_serving(results: ResultSet) -> str:
    """What ``isobench deploy --scenario`` prints at the end (and ``isobench show`` of a serving session): the
    software line, then per workload the weights, the answers checked and per scenario its table and verdict, then
    the failed workers."""
    blocks = [words.software_line(deploy.software(results))]
    for sec in serving.sections(results):
        parts = ([words.weights_line(sec.workload, sec.weights)] if sec.weights else []) + [words.answers(sec.answers)]
        for sc in sec.scenarios:
            t = sc.table
            parts += ["", _framework_table(words.scenario_title(sc.summary), words.load_head(t),
                                           [(fw, [words.load_cells(t, s) for s in rows]) for fw, rows in t.frameworks])]
            parts += [words.sentence(sc.summary, c) for c in sc.claims]
        note = f"{words.SERVING_NOTE} {words.serving_rule(sec.scenarios[0].summary)}" if sec.scenarios else ""
        blocks.append("\n".join(parts + ([""] + textwrap.wrap(note, words.NOTE_WIDTH) if note else [])))
    if failed := deploy.failed_workers(results.deploys + results.loads):
        blocks.append(_failed_workers(failed))
    return "\n\n".join(blocks)
