"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG, no script, no external
resource) that reads offline.

:func:`render_html` is pure (results in, text out, the same text for the same results); :func:`write_html`
writes it. The page is the template ``templates/report.html.j2`` filled from the report model (:mod:`.model`)
with jinja2's autoescaping, so every string that comes from the results (workload names, modes, errors, stderr,
configuration and environment values) is escaped. The verdict's sentences and the table cells are the terminal
report's: the same claims and numbers, worded by :mod:`.words` and :mod:`.fmt`.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from ..backends import colour
from ..results import ResultSet
from . import deploy as deployment, model, serving, words
from .plots import ERROR_BARS, Plot, render_deploy_plots, render_plots, render_serving_plots

SECTIONS = (("verdict", "Verdict"), ("manifest", "Fairness manifest"), ("results", "Results"), ("plots", "Plots"),
            ("environment", "Environment"), ("failures", "Failures"))
DEPLOY_SECTIONS = (("deployment", "Deployment"), ("manifest", "Fairness manifest"),  # failures: in each workload's
                   ("environment", "Environment"))                                     # part of the deployment
SERVING_SECTIONS = (("serving", "Serving under load"),) + DEPLOY_SECTIONS[1:]
BADGE = {model.PASSED: "pass", model.PARITY_FAILED: "fail"}  # other parity states: "unk"


@dataclass(frozen=True)
class Figure:
    plot: Plot
    data: str                        # the PNG in base64


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2")


def _inline(plots: list[Plot]) -> list[Figure]:
    return [Figure(p, base64.b64encode(p.png).decode("ascii")) for p in plots]


def render_html(results: ResultSet) -> str:
    """The whole report as one HTML document (deterministic: the same results give the same text)."""
    report = model.build(results)
    sums = [s.summary for s in report.sections]
    n_ok = sum(r.ok for r in results.runs)
    title = f"isobench report: {', '.join(report.workloads) or 'no runs'}"
    sub = (f"{' vs '.join(report.labels) or 'no frameworks'} · {len(results.runs)} worker processes ({n_ok} ok) · "
           f"isobench {results.isobench_version or '?'} · {results.created_at or 'date not recorded'}")
    plots = [(s, _inline(render_plots(s.summary, results.runs, s.efficiency))) for s in report.sections]
    deploy = [(d, _inline(render_deploy_plots(d.summary, results.deploys)))
              for d in deployment.sections(results)] if results.is_deploy else []
    served = [(sec, _inline(render_serving_plots(sec.workload, results.loads, results.config.get("latency_bound_s"))))
              for sec in serving.sections(results)] if results.is_serving else []
    if results.is_deploy or results.is_serving:
        records = results.deploys + results.loads
        title = (f"isobench {'serving' if results.is_serving else 'deploy'} report: "
                 f"{', '.join(dict.fromkeys(r.spec.workload for r in records)) or 'no records'}")
        sub = (f"{words.workers(results)} ({sum(r.ok for r in records)} ok) · "
               f"isobench {results.isobench_version or '?'} · {results.created_at or 'date not recorded'}")
    first = served[0][0].scenarios if served else ()
    return _template().render(
        report=report, title=title, sub=sub, deploy=deploy, is_deploy=results.is_deploy, served=served,
        is_serving=results.is_serving,
        software=deployment.software(results) if results.is_deploy or results.is_serving else None,
        sections=DEPLOY_SECTIONS if results.is_deploy else SERVING_SECTIONS if results.is_serving else SECTIONS,
        rule=words.deploy_rule(deploy[0][0].summary) if deploy else words.serving_rule(first[0].summary) if first
        else words.verdict_rule(sums[0]) if sums else "",
        plots=plots, error_bars=ERROR_BARS, badge=lambda p: BADGE.get(p.state, "unk"),
        node_head=model.NODE_HEAD, node_rows=[[row[k] for k in model.NODE_HEAD] for row in report.nodes],
        colour=colour, sentence=words.sentence, parity_status=words.parity_status, title_of=words.title,
        missing=words.missing, paragraphs=words.paragraphs, flatten=model.flatten, settings=model.settings,
        guarantee=words.guarantee, cost_title=words.cost_title, parity_head=words.PARITY_HEAD,
        parity_verdict_row=words.PARITY_VERDICT, parity_title=words.parity_title, parity_verdict=words.parity_verdict,
        parity_value=words.parity_value, parity_failure=words.parity_failure, w=words)


def write_html(results: ResultSet, path: Path) -> None:
    """Write :func:`render_html` of ``results`` to ``path`` (UTF-8)."""
    Path(path).write_text(render_html(results), encoding="utf-8")
