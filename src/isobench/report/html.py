"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG, no script, no external
resource) that reads offline.

:func:`render_html` is pure (results in, text out, the same text for the same results); :func:`write_html`
writes it. Every string that comes from the results (workload names, modes, errors, stderr, configuration
and environment values) passes through :func:`html.escape`. The verdict sentences are
:func:`~isobench.report.terminal.render_verdict`'s, the table cells :func:`~isobench.report.terminal.render_table`'s.

The bookkeeping shared with the Markdown report (the fairness manifest, parity, environment and failure
rows) lives here too, as functions returning plain strings that each renderer escapes its own way.
"""
from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..results import ResultSet, RunRecord
from ..stats import Group, Summary, min_repeats, summarize
from .plots import ERROR_BARS, Plot, color, render_plots
from .terminal import _cells, _reason, render_table, render_verdict

NOT_CHECKED = "parity: not checked in this session"
MANIFEST = ("runs", "seeds", "node", "version", "mode", "device / precision", "TF32", "threads set", "threads read back",
            "CPU affinity", "matmul precision", "oneDNN", "XLA / JIT flags", "determinism")  # the manifest's rows


# ---- bookkeeping shared by the HTML and Markdown reports -----------------------------------------------------

def summaries(results: ResultSet) -> list[Summary]:
    """The statistics every report shows, one per workload (the default display names)."""
    return summarize(results.runs)


def group_runs(summary: Summary, runs: Iterable[RunRecord]) -> dict[Group, list[RunRecord]]:
    """Every run of each group of ``summary``, failed ones included, by repeat."""
    out: dict[Group, list[RunRecord]] = {g: [] for g in summary.groups}
    for r in runs:
        if (g := Group.of(r.spec)) in out:
            out[g].append(r)
    return {g: sorted(rs, key=lambda r: r.spec.repeat) for g, rs in out.items()}


def fmt_value(v: Any) -> str:
    """A configuration or environment value as text: unset for None, on/off for booleans, lists joined."""
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt_value(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_value(x) for x in v) or "none"
    return str(v)


def _bytes(v: int) -> str:
    return f"{v / 2**30:.1f} GiB" if v >= 2**30 else f"{v / 2**20:.0f} MiB"


def _item_label(item: dict, i: int) -> tuple[str, tuple[str, ...]]:
    """How a record in a list is named, and by which of its keys: its name, else its framework and mode,
    else its position."""
    for keys in (("name",), ("framework", "mode")):
        used = tuple(k for k in keys if item.get(k) is not None)
        if used:
            return " ".join(str(item[k]) for k in used), used
    return str(i), ()


def _leaf(k: str, v: Any) -> str:
    if k == "passed" and isinstance(v, bool):
        return "PASS" if v else "FAIL"
    if k.endswith("_bytes") and isinstance(v, int) and not isinstance(v, bool):
        return f"{_bytes(v)} ({v} B)"
    return fmt_value(v)


def flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as (dotted key, text) rows in their own order. A list of records becomes one row per
    record, ``key[name]``, or nested rows when the record nests further; sizes in bytes also in MiB/GiB."""
    if dataclasses.is_dataclass(d) and not isinstance(d, type):
        d = dataclasses.asdict(d)
    if not isinstance(d, dict):
        return [(prefix or "value", fmt_value(d))]
    rows = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            rows += flatten(v, key)
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            for i, item in enumerate(v):
                label, used = _item_label(item, i)
                rest = {ik: iv for ik, iv in item.items() if ik not in used}
                name = f"{key}[{label}]"
                if any(isinstance(x, (dict, list, tuple)) and x for x in rest.values()):
                    rows += flatten(rest, name)
                else:  # a flat record on one line, its verdict last
                    rows.append((name, ", ".join([f"{ik} {_leaf(ik, iv)}" for ik, iv in rest.items() if ik != "passed"]
                                                 + [_leaf("passed", rest["passed"])] * ("passed" in rest))))
        else:
            rows.append((key, _leaf(str(k), v)))
    return rows


def _affinity(cpus: Any) -> str:
    """CPU list in ranges: [0, 1, 2, 5] -> 0-2, 5."""
    if not isinstance(cpus, (list, tuple)) or not cpus:
        return fmt_value(cpus)
    cpus = sorted(int(c) for c in cpus)
    spans, start = [], cpus[0]
    for prev, c in zip(cpus, cpus[1:] + [None]):
        if c != prev + 1:  # a span ends at prev
            spans.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = c
    return ", ".join(spans)


def _settings(r: RunRecord) -> dict[str, str]:
    """One run's manifest cells, from the settings its worker read back."""
    fw = r.environment.get("framework") or {}
    th = r.environment.get("threads") or {}
    version = fmt_value(fw.get("version"))
    version += "".join(f", {k.removesuffix('_version')} {v}" for k, v in fw.items()
                       if k.endswith("_version") and v and v != fw.get("version"))
    if "intra_op_threads" in fw:
        read = f"intra-op {fmt_value(fw['intra_op_threads'])}, inter-op {fmt_value(fw.get('inter_op_threads'))}"
    else:
        read = fmt_value(fw.get("threads_note") or fw.get("threads"))
    matmul = [f"{k} {fmt_value(fw[k])}" for k in ("float32_matmul_precision", "default_matmul_precision")
              if k in fw]
    if "tensor_float_32" in fw:
        matmul.append(f"TF32 {'allowed' if fw['tensor_float_32'] else 'off'}")
    if fw.get("enable_x64") is not None:
        matmul.append(f"x64 {fmt_value(fw['enable_x64'])}")
    onednn = [fmt_value(fw[k]) for k in ("onednn_enabled", "mkldnn_enabled") if k in fw]
    if fw.get("TF_ENABLE_ONEDNN_OPTS") is not None:
        onednn.append(f"TF_ENABLE_ONEDNN_OPTS={fw['TF_ENABLE_ONEDNN_OPTS']}")
    xla = [f"{k}={fmt_value(v)}" for k, v in fw.items() if ("XLA" in k or k == "jit_auto_clustering") and v is not None]
    det = [fmt_value(fw[k]) for k in ("deterministic_algorithms", "op_determinism") if k in fw]
    if fw.get("TF_DETERMINISTIC_OPS") is not None:
        det.append(f"TF_DETERMINISTIC_OPS={fw['TF_DETERMINISTIC_OPS']}")
    has_xla = any("XLA" in k or k == "jit_auto_clustering" for k in fw)
    tf32 = next((fw[k] for k in ("tf32", "tensor_float_32", "allow_tf32") if k in fw), None)
    device = fw.get("device_name") or fw.get("cuda_device_name") or fw.get("gpu_name")
    node = r.environment.get("node") or {}
    return {"node": str(node.get("hostname") or node.get("ip") or "this machine"), "version": version,
            "mode": r.spec.mode,
            "device / precision": f"{r.spec.device}{f' ({device})' if device else ''} / {r.spec.precision}",
            "TF32": "n/a" if tf32 is None else ("on" if tf32 else "off"),
            "threads set": fmt_value(th.get("threads", r.spec.threads)), "threads read back": read,
            "CPU affinity": _affinity(th.get("affinity")), "matmul precision": ", ".join(matmul) or "n/a",
            "oneDNN": ", ".join(onednn) or "n/a",
            "XLA / JIT flags": ", ".join(xla) or ("none set" if has_xla else "n/a"),
            "determinism": ", ".join(det) or "n/a"}


def manifest_rows(summary: Summary, runs: Iterable[RunRecord]) -> list[tuple[str, dict[Group, str]]]:
    """The fairness manifest of one workload: per :data:`MANIFEST` setting, its value in each group. A setting
    that differed between runs of a group lists each value with `` | ``; a group that recorded nothing says so."""
    cells: dict[Group, dict[str, str]] = {}
    for g, rs in group_runs(summary, runs).items():
        recorded = [_settings(r) for r in rs if r.environment.get("framework")]
        cells[g] = {"runs": f"{summary.ok[g]} ok" + (f", {summary.failed[g]} failed" if summary.failed[g] else "")}
        seeds = sorted({r.environment["seed"] for r in rs if r.environment.get("seed") is not None})
        cells[g]["seeds"] = _affinity(seeds) if seeds else "not recorded"  # of weights, orders and dropout
        for key in MANIFEST[2:]:
            values = list(dict.fromkeys(x[key] for x in recorded))
            cells[g][key] = " | ".join(values) if values else "not recorded"
    return [(key, {g: c[key] for g, c in cells.items()}) for key in MANIFEST]


def parity_for(results: ResultSet, workload: str) -> tuple[str, list[tuple[str, str]]]:
    """(one-line status, detail rows) of the parity check of ``workload`` carried by ``results``, if any."""
    parity = getattr(results, "parity", None)
    if not parity:  # None (no such attribute) or {} (skipped)
        return NOT_CHECKED, []
    if dataclasses.is_dataclass(parity) and not isinstance(parity, type):
        parity = dataclasses.asdict(parity)
    entry = parity.get(workload) if isinstance(parity, dict) else None
    if entry is None:
        return f"parity: not checked for {workload} in this session", []
    if dataclasses.is_dataclass(entry) and not isinstance(entry, type):
        entry = dataclasses.asdict(entry)
    if not isinstance(entry, dict):
        return f"parity: {fmt_value(entry)}", []
    passed = entry.get("passed")
    status = "parity: PASSED" if passed else "parity: FAILED" if passed is not None else "parity: no verdict"
    return status, flatten({k: v for k, v in entry.items() if k != "passed"})


def setting_rows(summary: Summary, runs: Iterable[RunRecord]) -> tuple[list[Group], list[tuple[str, dict]]]:
    """Every framework setting a worker read back: (groups, [(key, {group: values})]) over the union of keys."""
    by_group = group_runs(summary, runs)
    groups = [g for g, rs in by_group.items() if any(r.environment for r in rs)]
    keys: dict[str, None] = {}
    values: dict[Group, dict[str, list[str]]] = {}
    for g in groups:
        for r in by_group[g]:
            # settings only: the pid and sizes measured before the import are measurements, not settings
            env = {k: v for k, v in r.environment.items()
                   if k not in ("pid", "host", "node") and not k.endswith("_bytes")}
            for k, v in flatten(env):
                keys.setdefault(k)
                seen = values.setdefault(g, {}).setdefault(k, [])
                if v not in seen:
                    seen.append(v)
    return groups, [(k, {g: " | ".join(values[g].get(k, ["-"])) for g in groups}) for k in keys]


def failure_rows(results: ResultSet) -> list[dict[str, str]]:
    """One row per failed run (any status but ok), in column order then repeat."""
    failed = sorted(((Group.of(r.spec), r) for r in results.runs if not r.ok),
                    key=lambda gr: (gr[0].sort_key(), gr[1].spec.repeat))
    return [{"workload": g.workload, "framework (mode)": g.label, "repeat": str(r.spec.repeat + 1),
             "status": r.status, "exit": (f"signal {r.signal}" if r.signal else fmt_value(r.exit_code)),
             "reason": _reason(r), "stderr": (r.stderr_tail or "").rstrip()} for g, r in failed]


def table_notes(summary: Summary) -> list[str]:
    """The notes under the terminal table (what a cell means), one paragraph each."""
    notes: list[str] = []
    for line in render_table(summary).splitlines()[3 + len(summary.metrics):]:
        if notes and line[:1].islower():  # a sentence wrapped onto the next line
            notes[-1] += " " + line
        else:
            notes.append(line)
    return notes


def verdict_rule(summary: Summary) -> str:
    """The verdict rule in one sentence, with this summary's level, alpha and noise threshold."""
    return (f"A difference is claimed only when its {100 * summary.level:g}% bootstrap interval (processes "
            f"resampled) excludes no difference (ratio 1, or 0 pp for accuracy) and a two-sided Mann-Whitney U test "
            f"gives p < {summary.alpha:g}; otherwise the verdict says \"no significant difference\". That needs at "
            f"least {min_repeats(summary.alpha)} ok processes per framework. A framework is flagged as noisy when "
            f"its per-process training or step times vary by more than {100 * summary.cv_threshold:g}% "
            "(robust coefficient of variation).")


def machine_line(results: ResultSet) -> str:
    env = results.environment
    parts = [env.get("cpu_model"), f"{env['logical_cores']} logical cores" if env.get("logical_cores") else None,
             f"affinity {_affinity(env['affinity'])}" if env.get("affinity") else None,
             _bytes(env["memory_total_bytes"]) + " RAM" if env.get("memory_total_bytes") else None,
             env.get("platform"), f"Python {env['python']}" if env.get("python") else None]
    return ", ".join(str(p) for p in parts if p) or "not recorded"


NODE_HEAD = ("node", "CPU", "cores", "RAM", "Python", "platform", "runs", "cells")


def node_rows(results: ResultSet) -> list[dict[str, str]]:
    """One row per cluster node that ran cells (``--executor ray``): its environment record and what ran there.
    Empty for a session run on one machine, whose record is the session's own (:func:`machine_line`)."""
    nodes: dict[str, dict] = {}
    for r in results.runs:
        node = r.environment.get("node")
        if not node:
            continue
        host = r.environment.get("host") or {}
        key = str(node.get("id") or node.get("hostname"))
        row = nodes.setdefault(key, {"host": host, "name": node.get("hostname") or node.get("ip") or key[:12],
                                     "runs": 0, "cells": {}})
        row["runs"] += 1
        row["cells"][Group.of(r.spec).label] = None
    return [{"node": n["name"], "CPU": str(n["host"].get("cpu_model", "?")),
             "cores": str(n["host"].get("logical_cores", "?")),
             "RAM": _bytes(n["host"]["memory_total_bytes"]) if n["host"].get("memory_total_bytes") else "?",
             "Python": str(n["host"].get("python", "?")), "platform": str(n["host"].get("platform", "?")),
             "runs": str(n["runs"]), "cells": ", ".join(n["cells"])} for n in nodes.values()]


def workloads(results: ResultSet) -> list[str]:
    return list(dict.fromkeys(r.spec.workload for r in results.runs))


# ---- HTML ---------------------------------------------------------------------------------------------------

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;
 margin:0;background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:28px;margin:0 0 4px}h2{font-size:21px;margin:36px 0 8px;border-bottom:2px solid #e4e6ea;
 padding-bottom:4px}h3{font-size:17px;margin:20px 0 6px}
.sub{color:#555;margin:0 0 12px}nav a{margin-right:14px;color:#0b57d0;text-decoration:none}
table{border-collapse:collapse;margin:8px 0 6px;font-size:13.5px}
th,td{border:1px solid #dcdfe4;padding:4px 9px;text-align:left;vertical-align:top}
table.manifest td{max-width:340px;overflow-wrap:anywhere}
th{background:#f0f2f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{background:#eaf6ec}.vs{display:block;color:#555;font-size:12.5px}.best .vs{color:#1e7b34;font-weight:600}
.wide{overflow-x:auto}.note{color:#555;font-size:13px;margin:4px 0}
ul.verdict li{margin:3px 0}li.caveat{color:#8a5300}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:13px}
.pass{background:#d7f0dc;color:#1e6b2f}.fail{background:#fadbd8;color:#9b1c12}.unk{background:#eceff3;color:#444}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:18px}
figure{margin:0;border:1px solid #e4e6ea;border-radius:6px;padding:8px;background:#fff}
figure img{width:100%;height:auto;display:block}figcaption{font-size:12.5px;color:#444;margin-top:4px}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f7f9;padding:8px;font-size:12px;max-height:320px;
 overflow:auto}details summary{cursor:pointer;color:#0b57d0}
"""
SECTIONS = (("verdict", "Verdict"), ("manifest", "Fairness manifest"), ("results", "Results"), ("plots", "Plots"),
            ("environment", "Environment"), ("failures", "Failures"))


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (already HTML)."""
    cell = (lambda c: c) if raw else _e
    return ("<div class=wide><table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
            + "</tbody></table></div>")


def _label(g: Group) -> str:
    return f'<span class=swatch style="background:{color(g.framework)}"></span>{_e(g.label)}'


def _parity_html(results: ResultSet, workload: str) -> str:
    status, rows = parity_for(results, workload)
    cls = "pass" if status.endswith("PASSED") else "fail" if status.endswith("FAILED") else "unk"
    out = f"<p>{_e(workload)}: <span class='badge {cls}'>{_e(status)}</span></p>"
    return out + (_table(("check", "value"), rows) if rows else "")


def _manifest(summary: Summary, results: ResultSet) -> str:
    rows = manifest_rows(summary, results.runs)
    head = "".join(f"<th>{_label(g)}</th>" for g in summary.groups)
    body = "".join(f"<tr><th>{_e(k)}</th>" + "".join(f"<td>{_e(v[g])}</td>" for g in summary.groups) + "</tr>"
                   for k, v in rows)
    return (f"<h3>{_e(summary.workload)}</h3><div class=wide><table class=manifest><thead><tr><th>setting</th>{head}"
            f"</tr></thead><tbody>{body}</tbody></table></div>")


def _verdict(summary: Summary, results: ResultSet) -> str:
    caveat = ("Noisy:", "To tighten", "Too few", "Only ", "No successful")
    items = "".join(f"<li class=caveat>{_e(s)}</li>" if s.startswith(caveat) or " failed; left out" in s
                    else f"<li>{_e(s)}</li>" for s in render_verdict(summary))
    status, _ = parity_for(results, summary.workload)
    return f"<h3>{_e(summary.workload)}</h3><ul class=verdict>{items}<li class=caveat>{_e(status)}</li></ul>"


def _results(summary: Summary) -> str:
    groups = summary.groups
    head = "".join(f"<th>{_label(g)}<br><span class=vs>n={summary.ok[g]}"
                   + (f", {summary.failed[g]} failed" if summary.failed[g] else "") + "</span></th>" for g in groups)
    rows = []
    for ms in summary.metrics.values():
        cells = _cells(ms)
        tds = "".join(
            f"<td class='num{' best' if g == ms.best and ms.comparisons else ''}'>{_e(cells[g][0])}"
            f"<span class=vs>{_e(cells[g][1]) or '&nbsp;'}</span></td>" if g in cells else f"<td class=num>{_e(ms.metric.missing)}</td>"
            for g in groups)
        rows.append(f"<tr><th>{_e(ms.metric.title)}</th>{tds}</tr>")
    notes = "".join(f"<p class=note>{_e(n)}</p>" for n in table_notes(summary))
    return (f"<h3>{_e(summary.workload)}</h3><div class=wide><table><thead><tr><th>metric</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>{notes}")


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{_e(plot.title)}'>"
            f"<figcaption>{_e(plot.caption)}</figcaption></figure>")


def _environment(results: ResultSet, sums: list[Summary]) -> str:
    out = ["<h3>Configuration</h3>", _table(("key", "value"), flatten(results.config) or [("-", "not recorded")]),
           "<h3>Host</h3>", _table(("key", "value"), flatten(results.environment) or [("-", "not recorded")])]
    for s in sums:
        groups, rows = setting_rows(s, results.runs)
        if groups:
            out += [f"<h3>Settings read back by each worker: {_e(s.workload)}</h3>",
                    "<p class=note>Values that differed between runs of one framework are separated by |.</p>",
                    "<div class=wide><table><thead><tr><th>setting</th>"
                    + "".join(f"<th>{_label(g)}</th>" for g in groups) + "</tr></thead><tbody>"
                    + "".join(f"<tr><td>{_e(k)}</td>" + "".join(f"<td>{_e(v[g])}</td>" for g in groups) + "</tr>"
                              for k, v in rows) + "</tbody></table></div>"]
    return "".join(out)


def _failures(results: ResultSet) -> str:
    rows = failure_rows(results)
    if not rows:
        return "<p>No failed runs.</p>"
    body = [[_e(r["workload"]), _e(r["framework (mode)"]), _e(r["repeat"]), _e(r["status"]), _e(r["exit"]),
             _e(r["reason"]) + (f"<details><summary>stderr tail</summary><pre>{_e(r['stderr'])}</pre></details>"
                                if r["stderr"] else "")] for r in rows]
    return (f"<p>{len(rows)} failed run{'s' if len(rows) > 1 else ''}, excluded from the statistics.</p>"
            + _table(("workload", "framework (mode)", "repeat", "status", "exit", "reason"), body, raw=True))


def render_html(results: ResultSet) -> str:
    """The whole report as one HTML document (deterministic: the same results give the same text)."""
    sums = summaries(results)
    names = workloads(results)
    n_ok = sum(r.ok for r in results.runs)
    frameworks = list(dict.fromkeys(g.label for s in sums for g in s.groups))
    title = f"isobench report: {', '.join(names) or 'no runs'}"
    sub = (f"{' vs '.join(frameworks) or 'no frameworks'} · {len(results.runs)} worker processes ({n_ok} ok) · "
           f"isobench {results.isobench_version or '?'} · {results.created_at or 'date not recorded'}")
    plots = [(s, render_plots(s, results.runs)) for s in sums]
    rule = verdict_rule(sums[0]) if sums else ""
    body = [
        f"<h1>{_e(title)}</h1><p class=sub>{_e(sub)}</p>",
        "<nav>" + "".join(f"<a href='#{i}'>{t}</a>" for i, t in SECTIONS) + "</nav>",
        f"<section id=verdict><h2>Verdict</h2><p class=note>{_e(rule)}</p>"
        + ("".join(_verdict(s, results) for s in sums) or "<p>No runs.</p>") + "</section>",
        f"<section id=manifest><h2>Fairness manifest</h2><p>Machine: {_e(machine_line(results))}</p>"
        + (("<h3>Cluster nodes</h3><p class=note>Cells ran on these nodes (--executor ray); each run stores its "
            "node's environment record.</p>" + _table(NODE_HEAD, [[row[k] for k in NODE_HEAD] for row in nodes]))
           if (nodes := node_rows(results)) else "")
        + "".join(_manifest(s, results) for s in sums) + "<h3>Parity</h3>"
        + "".join(_parity_html(results, w) for w in names) + "</section>",
        "<section id=results><h2>Results</h2>" + "".join(_results(s) for s in sums) + "</section>",
        f"<section id=plots><h2>Plots</h2><p class=note>Bars: median over ok processes; {_e(ERROR_BARS)}. "
        "One colour per framework in every plot.</p>"
        + "".join(f"<h3>{_e(s.workload)}</h3><div class=plots>{''.join(_figure(p) for p in ps)}</div>"
                  for s, ps in plots) + "</section>",
        "<section id=environment><h2>Environment</h2>" + _environment(results, sums) + "</section>",
        "<section id=failures><h2>Failures</h2>" + _failures(results) + "</section>",
    ]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<link rel=icon href='data:,'><title>{_e(title)}</title><style>{CSS}</style></head>\n"
            "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


def write_html(results: ResultSet, path: Path) -> None:
    """Write :func:`render_html` of ``results`` to ``path`` (UTF-8)."""
    Path(path).write_text(render_html(results), encoding="utf-8")
