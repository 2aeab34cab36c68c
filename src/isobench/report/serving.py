"""The serving half of the report model: what every report shows of an ``isobench deploy --scenario`` session, as
typed values built once from its :class:`~isobench.stats.LoadSummary` per workload and scenario. The terminal, HTML
and Markdown renderers read it (numbers through :mod:`.fmt`, words from :mod:`.words`) and never each other's text.

- A table per scenario: the deployment's :class:`~.deploy.DeployTable`, a row per (path, precision, batching), a
  column per figure of the scenario (:data:`~isobench.stats.SCENARIO_METRICS`) with its unit chosen once.
- The verdict as :class:`~.model.Claim` s worded like the deployment's (:func:`claims`): rows without figures (failed
  workers, wrong answers), runs LoadGen judged INVALID, p99s its early stopping did not back, then the best row
  against every other on the scenario's headline figure (:data:`~isobench.stats.HEADLINE`) and each path's dynamic
  batching against none; above them, every answer checked (:func:`answers`).
- The fairness manifest: the deployment's (:func:`.deploy.software`), LoadGen's version included.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..results import LoadRecord, Record, ResultSet
from ..stats import HEADLINE, METRIC, SCENARIO_METRICS, LoadRowSummary, LoadSummary, counted, summarize_serving
from .deploy import DeployTable, failed_workers, table
from .model import (ANSWERS, BATCHING, EARLY_STOPPING, FAILED, INSUFFICIENT, INVALID, NOTHING_RAN, ONLY_ONE, TOO_FEW,
                    Claim, claim_kind, metric_claims)

PERCENTILE = {"latency_p50_s": 50.0, "latency_p90_s": 90.0, "latency_p99_s": 99.0}  # a latency figure's percentile
ESTIMATE = re.compile(r"(\d+(?:\.\d+)?)th percentile estimate")  # in LoadGen's early-stopping result


def supported(early_stopping: str) -> tuple[float, ...]:
    """The percentiles LoadGen's early stopping gave an estimate for, from its result ("... Early stopping 90.0th
    percentile estimate: 20821 Early stopping 99.0th percentile estimate: 45368" -> (90.0, 99.0)); "Not enough
    queries processed for 99.0th percentile early stopping estimate" gives none."""
    return tuple(float(x) for x in ESTIMATE.findall(early_stopping))


def unbacked(s: LoadRowSummary) -> tuple[LoadRecord, ...]:
    """The row's VALID runs whose early stopping gave no estimate of its headline percentile (a latency scenario's
    p99): too few queries to bound it. The server's VALID runs passed early stopping at the bound, offline has none."""
    need = PERCENTILE.get(HEADLINE[s.row.scenario])
    return tuple(r for r in s.records if need is not None and counted(r) and r.metrics.early_stopping
                 and need not in supported(r.metrics.early_stopping))


def claims(summary: LoadSummary) -> list[Claim]:
    """One scenario's verdict: rows without figures (every worker failed, a wrong answer, the export failed), runs
    LoadGen judged INVALID and p99s early stopping did not back (first: they qualify what follows); then the best row
    against every other on the headline figure and each path's rows with dynamic batching on and off; then too few
    processes, if so. The best row is not set against its own path's other batching: that is the batching claim."""
    rows = summary.rows
    out = [Claim(FAILED, group=s.row, count=len(s.failed), rows=(s,)) for s in rows if not s.ok or s.parity is False]
    out += [Claim(INVALID, group=s.row, count=s.ok, rows=(s,), records=s.invalid) for s in rows if s.invalid]
    out += [Claim(EARLY_STOPPING, group=s.row, count=s.valid, rows=(s,), records=rs) for s in rows
            if (rs := unbacked(s))]
    ms = summary.headline
    paired = {(pair.best.path, pair.best.quantize) for pair in summary.batching}  # their own claim says it
    out += [Claim(NOTHING_RAN)] if ms is None else [Claim(ONLY_ONE, group=ms.best)] if not ms.comparisons else \
        [c for c in metric_claims(ms) if (c.other.path, c.other.quantize) != (ms.best.path, ms.best.quantize)
         or (ms.best.path, ms.best.quantize) not in paired]
    out += [Claim(claim_kind(pair, other), pair, other, c, role=BATCHING) for pair in summary.batching
            for other, c in pair.comparisons.items()]
    if few := [c.comparison for c in out if c.kind == TOO_FEW]:
        out.append(Claim(INSUFFICIENT, count=min(min(c.n_a, c.n_b) for c in few)))
    return out


def answers(summaries: list[LoadSummary]) -> Claim:
    """Every answer given under load in a workload's scenarios, all checked: their count and the rows with a wrong
    one."""
    rows = [s for summary in summaries for s in summary.rows]
    return Claim(ANSWERS, count=sum(s.answers for s in rows), rows=tuple(s for s in rows if s.parity is False))


@dataclass(frozen=True)
class ScenarioSection:
    """One scenario of one workload: its statistics, table and verdict."""
    summary: LoadSummary
    table: DeployTable
    claims: tuple[Claim, ...]


@dataclass(frozen=True)
class ServingSection:
    """Everything the reports show of one workload served under load."""
    workload: str
    weights: dict | None             # ResultSet.weights[workload]: who trained the served weights, fingerprint
    answers: Claim                   # every answer checked
    scenarios: tuple[ScenarioSection, ...]
    failures: tuple[Record, ...]     # exports and load workers that failed, crashed or timed out


def sections(results: ResultSet) -> list[ServingSection]:
    """The serving report of ``results``: a section per workload, a part per scenario in the session's order."""
    sums = summarize_serving(results.loads, results.deploys, results.config.get("scenarios", ()),
                             results.config.get("latency_bound_s"))
    out = []
    for workload in dict.fromkeys(s.workload for s in sums):
        mine = [s for s in sums if s.workload == workload]
        out.append(ServingSection(
            workload, results.weights.get(workload), answers(mine),
            tuple(ScenarioSection(s, table(s, [METRIC[m] for m in SCENARIO_METRICS[s.scenario]]), tuple(claims(s)))
                  for s in mine),
            tuple(failed_workers(r for r in results.deploys + results.loads if r.spec.workload == workload))))
    return out
