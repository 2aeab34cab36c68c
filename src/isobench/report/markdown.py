"""The Markdown report: an honest "PyTorch vs TensorFlow vs JAX on this machine" article with PNG plots (a deployment
or serving session's: its own article, from its part of the report model).

:func:`render_markdown` is pure (the report model and the plots' relative paths in, text out);
:func:`write_markdown` writes the article and its figures beside it. The conclusion is the verdict's claims
(:mod:`.model`) in the terminal report's words (:mod:`.words`): nothing is claimed that the intervals and rank
tests do not support. The limitations are facts read from the results (machine, device, process counts,
failures, parity), not boilerplate.
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from math import prod
from pathlib import Path
from urllib.parse import quote

from ..backends import display_name
from ..errors import UserError
from ..results import OK, ResultSet
from ..workloads import get_workload
from . import deploy as deployment, model, serving, words
from .plots import Plot, render_deploy_plots, render_plots, render_serving_plots

Figures = Mapping[str, Sequence[tuple[Plot, str]]]  # per workload: each plot with the relative link of its PNG
FAILURE_HEAD = ("workload", "framework (mode)", "repeat", "status", "exit", "reason")

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


def plot_files(workloads: Sequence[str]) -> list[str]:
    """A distinct, file-name-safe prefix per workload."""
    seen: set[str] = set()
    out = []
    for w in workloads:
        base = slug = _slug(w)
        i = 2
        while slug in seen:
            slug, i = f"{base}-{i}", i + 1
        seen.add(slug)
        out.append(slug)
    return out


def _title(report: model.Report) -> str:
    names = list(dict.fromkeys(display_name(g.framework) for s in report.sections for g in s.summary.groups))
    return f"{' vs '.join(names) or 'isobench'} on this machine"


def _results(section: model.Section) -> list[str]:
    t, groups = section.table, section.summary.groups
    head = ["metric"] + [f"{_md(g.label)}<br>{t.heads[g]}" for g in groups]
    rows = []
    for r in t.rows:
        row = [_md(words.title(r.metric.metric.name))]
        for g in groups:
            c = r.cells.get(g)
            row.append(_md(words.missing(r.metric.metric.name)) if c is None else
                       f"**{_md(c.value)}** (best)" if c.versus == "best" else
                       f"{_md(c.value)} · {_md(c.versus)}" if c.versus else _md(c.value))
        rows.append(row)
    return ([_md(words.guarantee(section.privacy.guarantee)), ""] if section.privacy else []) + \
        _table(head, rows, right=1) + [""] + [_md(n) for n in words.paragraphs(t)]


def _privacy_cost(section: model.Section) -> list[str]:
    """The cost-of-privacy table of a DP-SGD workload whose counterpart ran in the session (else nothing)."""
    p = section.privacy
    if not p or not p.rows:
        return []
    head = ["metric"] + [f"{_md(g.label)}<br>{p.heads[g]}" for g in p.groups]
    rows = [[_md(words.title(name))] + [f"{_md(c.value)} · {_md(c.versus)}" if (c := cells.get(g)) else "-"
                                        for g in p.groups] for name, cells in p.rows]
    return [f"#### Cost of privacy: {_md(p.workload)} against {_md(p.counterpart)}", ""] + \
        _table(head, rows, right=1) + ["", _md(" ".join(words.cost_title(p, section.summary.level))), ""]


def _widest_interval(s: model.Section) -> list[str]:
    """How far the training-time ratios' intervals reach from their estimates, if they were resampled."""
    train = s.summary.metrics.get("train_time_s")
    widths = [max(c.interval.high / c.interval.estimate - 1, 1 - c.interval.low / c.interval.estimate)
              for c in (train.comparisons.values() if train and train.kind == "ratio" else ())
              if c.interval.resampled and c.interval.estimate > 0]
    return [f" The {100 * s.summary.level:g}% intervals of the training-time ratios reach up to "
            f"{100 * max(widths):.0f}% from their estimates; more repeats would narrow them."] if widths else []


def _limitations(report: model.Report) -> list[str]:
    results, runs = report.results, report.results.runs
    devices = sorted({r.spec.device for r in runs})
    precisions = sorted({r.spec.precision for r in runs})
    threads = sorted({r.spec.threads for r in runs})
    out = [f"One machine ({_md(report.machine)}), measured {_md(results.created_at or 'on an unrecorded date')}"
           f" on {'the CPU only' if devices == ['cpu'] else 'device ' + ', '.join(_md(d) for d in devices)}, "
           f"with {', '.join(map(str, threads))} thread{'s' if threads != [1] else ''} per worker and "
           f"{', '.join(_md(p) for p in precisions)} precision. Another CPU, a GPU, other thread counts or other "
           "library versions can order the frameworks differently."]
    for s in report.sections:
        w = s.summary.workload
        counts = ", ".join(f"{_md(g.label)} {s.summary.ok[g]}" for g in s.summary.groups)
        out.append(f"{_md(w)}: one model ({_md(describe_workload(w))}); ok processes per framework, each one full "
                   f"training run: {counts}." + "".join(_widest_interval(s)))
        if s.privacy and s.privacy.rows:
            out.append(f"{_md(w)}: its cost of privacy compares it with {_md(s.privacy.counterpart)}, which keeps its "
                       "own optimizer settings: the ratios are those of the private recipe against the usual "
                       "non-private one, not of per-example clipping and noise alone.")
        if s.summary.noisy:
            out.append(f"{_md(w)}: " + "; ".join(
                f"{_md(n.group.label)}'s {words.title(n.metric.name)} varied by {100 * n.cv:.1f}% between processes"
                for n in s.summary.noisy) + ", so the machine was not quiet.")
    if report.failures:
        out.append(f"{len(report.failures)} of {len(runs)} runs failed and are excluded from the statistics (listed "
                   "below).")
    for p in report.parity:
        if p.state in (model.NOT_CHECKED, model.NOT_CHECKED_HERE):
            out.append(f"{_md(p.workload)}: parity was not checked in this session: identical inputs were used, but "
                       "that the frameworks did the same arithmetic is not proven by this report.")
        elif p.state != model.PASSED:
            out.append(f"{_md(p.workload)}: {_md(words.parity_status(p))}: the frameworks may not have done the "
                       "same work.")
    out.append("Every step returns its loss to the host, which synchronises each step: a framework that could "
               "overlap steps asynchronously is not allowed to here. Timings are of a whole training run "
               "including Python overhead, not of kernels.")
    return [f"- {x}" for x in out]


def _setup(report: model.Report) -> list[str]:
    """The Setup section: machine, cluster nodes, workloads, session, fairness manifest and parity."""
    cfg = report.results.config
    lines = ["## Setup", "", f"- **Machine:** {_md(report.machine)}"]
    if report.nodes:
        lines += ["- **Cluster nodes** (`--executor ray`; each run stores its node's environment record):", ""]
        lines += _table(list(model.NODE_HEAD), [[_md(row[k]) for k in model.NODE_HEAD] for row in report.nodes]) + [""]
    lines += [f"- **Workload {_md(w)}:** {_md(describe_workload(w))}" for w in report.workloads]
    lines += [f"- **Session:** {cfg.get('repeats', '?')} repeats per framework, {cfg.get('threads', '?')} threads, "
              f"timeout {cfg.get('timeout_s', '?')} s, plan seed {cfg.get('seed', '?')}"
              + (f", {cfg['seeds']} training seeds (repeat r of every framework: the workload's seed + r mod "
                 f"{cfg['seeds']}; manifest row 'seeds')" if (cfg.get("seeds") or 1) > 1 else ""), "",
              "Fairness manifest: what each worker read back from its framework (a value that differed between "
              "runs is listed with |).", ""]
    for s in report.sections:
        groups = s.summary.groups
        lines += ([f"**{_md(s.summary.workload)}**", ""] if len(report.sections) > 1 else []) + _table(
            ["setting"] + [_md(g.label) for g in groups],
            [[_md(k)] + [_md(v[g]) for g in groups] for k, v in s.manifest]) + [""]
    for p in report.parity:
        lines += [f"- **{_md(p.workload)}** {_md(words.parity_status(p))}"]
        lines += ["", f"  {_md(words.parity_title(p))}.", ""] + [f"  {x}" for x in _parity_table(p)] + [""] \
            if p.columns else []
    return lines


def _parity_table(p: model.Parity) -> list[str]:
    """The parity table: a row per check, a column per cell; a cell whose worker did not finish has its status
    and error in its verdict."""
    verdict = [words.parity_verdict(c) + (f": {words.parity_failure(c)}" if c.status != OK else "") for c in p.columns]
    return _table([*words.PARITY_HEAD, *(_md(c.label) for c in p.columns)],
                  [[words.PARITY_VERDICT, "", *map(_md, verdict)]]
                  + [[_md(r.check), r.tolerance, *(words.parity_value(v) for v in r.values)] for r in p.rows])


METHOD = (
    "Each measurement is one fresh worker process (one framework, one workload, one repeat), pinned to the same CPUs "
    "with the same thread settings before any framework is imported. Repeats are interleaved in randomised blocks "
    "(every framework's repeat r runs before any repeat r+1, shuffled with the plan seed), so slow drift of the "
    "machine does not favour one framework. All frameworks start from the same initial weights and see the same "
    "data in the same order, made once in numpy (with --seeds, one set per seed: repeat r of every framework uses "
    "the same one).",
    "",
    "- **training time**: first data touch to the end of the last epoch, evaluation excluded;",
    "- **steady step time**: each process's median over the full-batch steps after the first;",
    "- **compile cost**: the first step (tracing, compilation) minus the steady median step;",
    "- **test accuracy**: after training, on the held-out split;",
    "- **training peak RSS**: resident memory high-water mark from after the framework import to the end of "
    "training; **process peak RSS**: the whole worker process.",
    "")


DEPLOY_FAILURE_HEAD = ("workload", "worker", "repeat", "status", "exit", "reason")


def _figures(plots: Sequence[tuple[Plot, str]]) -> list[str]:
    return [x for plot, link in plots for x in (f"![{_md(plot.title)}]({link})", "", f"*{_md(plot.caption)}*", "")]


def _load_table(t: deployment.DeployTable) -> list[str]:
    """A scenario's serving table: a row per path, precision and batching; a row without figures has its reason in
    the first figure column."""
    head = [_md(x) for x in words.load_head(t)]
    return _table(head, [[_md(c) for c in row] + [""] * (len(head) - len(row)) for row in words.load_rows(t)],
                  right=len(words.SERVING_HEAD))


def _deploy_table(t: deployment.DeployTable) -> list[str]:
    """The deployment table: a row per path, precision and batch size; a row without figures has its reason in
    the first figure column."""
    head = [*words.DEPLOY_HEAD, *map(words.column_head, t.columns), _md(words.DLOGIT_HEAD)]
    rows = [[*map(_md, words.row_head(s)), *(_md(words.figure(s, c)) for c in t.columns), _md(words.parity_cell(s))]
            if s.ok else [*map(_md, words.row_head(s)), _md(words.row_error(s))] + [""] * len(t.columns)
            for _, group in t.frameworks for s in group]
    return _table(head, rows, right=len(words.DEPLOY_HEAD))


def _failed_workers(workload: str, failures) -> list[str]:
    """The table of a workload's failed deploy or load workers (none: nothing)."""
    if not failures:
        return []
    return [f"Failed workers ({len(failures)}), left out of the statistics:", ""] + _table(
        DEPLOY_FAILURE_HEAD, [[_md(x) for x in (workload, *words.worker_cells(r))] for r in failures]) + [""]


def _software(results: ResultSet, frameworks: Sequence[str], what: str, session: str) -> list[str]:
    """A deployment or serving article's head and set-up: its title naming ``frameworks``, the machine, the
    ``session`` line and the fairness manifest (what each path ran on; a serving session's LoadGen)."""
    sw = deployment.software(results)
    records = results.deploys + results.loads
    return [f"# {' vs '.join(frameworks) or 'isobench'}: {what} on this machine", "",
            f"*Measured with isobench {_md(results.isobench_version or '?')} on "
            f"{_md(results.created_at or 'an unrecorded date')}: {words.workers(results)}, "
            f"{sum(r.ok for r in records)} ok.*", "", "## Setup", "",
            f"- **Machine:** {_md(model.machine(results))}", session, "",
            "Fairness manifest: what each path ran on, from its records (the runtime that served it, the exporter of "
            "its artifacts as each export named itself, other versions the exports recorded).", ""] + \
        _table(words.SOFTWARE_HEAD, [[_md(x) for x in row] for row in words.software_rows(sw)]) + [""] + \
        ([f"Load generator: {_md(words.loadgen(sw))}", ""] if sw.serving else []) + \
        [f"Installed packages (the session's environment): {_md(words.packages(sw))}", ""]


def _deploy_article(results: ResultSet, sections: Sequence[deployment.DeploySection], figures: Figures) -> str:
    """The article of a deployment session: set-up with the fairness manifest (what each path ran on), method, then
    per workload (``sections``) the weights, the table, the summary verdict, every comparison, the figures and the
    failed workers."""
    cfg = results.config
    names = list(dict.fromkeys(display_name(s.row.framework) for d in sections for s in d.summary.rows))
    lines = _software(results, names, "deployment",
                      f"- **Session:** {cfg.get('repeats', '?')} repeats of every path and precision at batch sizes "
                      f"{', '.join(map(str, cfg.get('batch_sizes', []))) or '?'}; {cfg.get('calls', '?')} timed calls "
                      f"after {cfg.get('warmup', '?')} warm-up calls; {cfg.get('threads', '?')} threads; weights "
                      f"trained by {_md(cfg.get('trained_by', '?'))}")
    lines += ["## Method", "",
              "The same trained weights served along each deployment path, each serving worker a fresh process "
              "(method: docs/measurement.md, Deployment). " + _md(words.DEPLOY_NOTE), "",
              _md(words.deploy_rule(sections[0].summary)) if sections else "", "", "## Deployment", ""]
    for d in sections:
        w = d.summary.workload
        lines += [f"### {_md(w)}", ""] + ([_md(words.weights_line(w, d.weights)), ""] if d.weights else [])
        lines += _deploy_table(d.table) + ["", "**Verdict**", ""]
        lines += [f"- {_md(words.sentence(d.summary, c))}" for c in d.verdict] + ["", "**Every comparison**", ""]
        lines += [f"- {_md(words.sentence(d.summary, c))}" for c in d.claims] or ["- Nothing to compare."]
        lines += [""] + _figures(figures.get(w, ())) + _failed_workers(w, d.failures)
    return "\n".join(lines)


def _serving_article(results: ResultSet, sections: Sequence[serving.ServingSection], figures: Figures) -> str:
    """The article of a serving session: set-up with the fairness manifest, method, then per workload the weights,
    the answers checked, per scenario its table and verdict, the figures and the failed workers."""
    cfg = results.config
    names = list(dict.fromkeys(display_name(r.spec.framework) for r in results.loads))
    bound = cfg.get("latency_bound_s")
    lines = _software(results, names, "serving under load",
                      f"- **Session:** {cfg.get('repeats', '?')} repeats of every path, precision, scenario "
                      f"({', '.join(cfg.get('scenarios', [])) or '?'}) and batching "
                      f"({', '.join(cfg.get('batching', [])) or '?'}); each LoadGen run at least "
                      f"{cfg.get('duration_s', '?')} s; server p99 bound {words.bound_ms(bound) if bound else '?'}; "
                      f"{cfg.get('threads', '?')} threads; weights trained by {_md(cfg.get('trained_by', '?'))}")
    first = sections[0].scenarios[0].summary if sections and sections[0].scenarios else None
    lines += ["## Method", "",
              "Each path's exported model served under MLPerf LoadGen's scenarios, each load worker a fresh process "
              "(method: docs/measurement.md, Serving under load). " + _md(words.SERVING_NOTE), "",
              _md(words.serving_rule(first)) if first else "", "", "## Serving under load", ""]
    for sec in sections:
        lines += [f"### {_md(sec.workload)}", ""] + ([_md(words.weights_line(sec.workload, sec.weights)), ""]
                                                      if sec.weights else [])
        lines += [_md(words.answers(sec.answers)), ""]
        for sc in sec.scenarios:
            lines += [f"#### {_md(words.scenario_title(sc.summary))}", ""] + _load_table(sc.table) + [""]
            lines += [f"- {_md(words.sentence(sc.summary, c))}" for c in sc.claims] + [""]
        lines += _figures(figures.get(sec.workload, ())) + _failed_workers(sec.workload, sec.failures)
    return "\n".join(lines)


def render_markdown(report: model.Report | ResultSet, figures: Figures | None = None) -> str:
    """The article (a deployment session's: :func:`_deploy_article`). ``figures``: per workload, its plots with the
    relative link of each PNG (as written by :func:`write_markdown`); without them the article has no figures."""
    results = report if isinstance(report, ResultSet) else report.results
    if results.is_deploy:
        return _deploy_article(results, deployment.sections(results), figures or {})
    if results.is_serving:
        return _serving_article(results, serving.sections(results), figures or {})
    report = model.build(report) if isinstance(report, ResultSet) else report
    figures = figures or {}
    lines = [f"# {_title(report)}", "",
             f"*Measured with isobench {_md(results.isobench_version or '?')} on "
             f"{_md(results.created_at or 'an unrecorded date')}: {len(results.runs)} "
             f"worker processes, {sum(r.ok for r in results.runs)} ok.*", ""] + _setup(report)
    rule = words.verdict_rule(report.sections[0].summary) if report.sections else ""
    lines += ["", "## Method", "", *METHOD,
              "The process is the unit of replication: every statistic is over one value per process. "
              + _md(rule) + " The full method is in [docs/measurement.md](docs/measurement.md) in the isobench "
              "repository.", "", "## Results", ""]
    for s in report.sections:
        lines += [f"### {_md(s.summary.workload)}", ""] + _results(s) + [""] + _privacy_cost(s)
        lines += _figures(figures.get(s.summary.workload, ()))
    lines += ["## Conclusion", ""]
    for s in report.sections:
        if len(report.sections) > 1:
            lines += [f"### {_md(s.summary.workload)}", ""]
        lines += [f"- {_md(words.sentence(s.summary, c))}" for c in s.claims] + [""]
    lines += ["## Limitations", ""] + _limitations(report) + [""]
    if report.failures:
        lines += ["## Failed runs", ""] + _table(FAILURE_HEAD, [
            [_md(x) for x in (f.group.workload, f.group.label, f.run.spec.repeat_label.removeprefix("repeat "), f.run.status, f.exit, f.reason)]
            for f in report.failures]) + [""]
    return "\n".join(lines)


def write_markdown(results: ResultSet, path: Path) -> list[Path]:
    """Write the article to ``path`` and its PNG plots to ``<stem>_plots/`` beside it.

    Returns every written path, the article first. Figures are linked with relative paths, so the article and
    its folder can be moved together.
    """
    path = Path(path)
    folder = path.with_name(f"{path.stem}_plots")
    if results.is_deploy:
        sections = deployment.sections(results)
        plots = {d.summary.workload: render_deploy_plots(d.summary, results.deploys) for d in sections}
    elif results.is_serving:
        sections = serving.sections(results)
        plots = {sec.workload: render_serving_plots(sec.workload, results.loads, results.config.get("latency_bound_s"))
                 for sec in sections}
    else:
        report = model.build(results)
        plots = {s.summary.workload: render_plots(s.summary, results.runs, s.efficiency) for s in report.sections}
    written: list[Path] = []
    figures: dict[str, list[tuple[Plot, str]]] = {}
    for (workload, ps), slug in zip(plots.items(), plot_files(list(plots))):
        for p in ps:
            folder.mkdir(parents=True, exist_ok=True)
            f = folder / f"{slug}-{p.name}.png"
            f.write_bytes(p.png)
            written.append(f)
            figures.setdefault(workload, []).append((p, f"{quote(folder.name)}/{quote(f.name)}"))
    path.write_text(_deploy_article(results, sections, figures) if results.is_deploy else
                    _serving_article(results, sections, figures) if results.is_serving else
                    render_markdown(report, figures), encoding="utf-8")
    return [path] + written
