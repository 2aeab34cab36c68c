"""Tidy exports of a session: one row per worker process, one column per variable (pandas ``read_csv`` ready)."""
from __future__ import annotations

import csv
from dataclasses import fields
from typing import Any, TextIO

from ..results import DeployMetrics, DeploySpec, Metrics, ResultSet, RunSpec

# every scalar metric; the per-epoch losses and per-step times are lists and stay in the JSON export
SCALAR_METRICS = tuple(f.name for f in fields(Metrics) if not str(f.type).startswith("list"))
PRIVACY_COLUMNS = ("epsilon", "delta")  # a DP-SGD workload's guarantee (ResultSet.privacy), empty otherwise
CSV_COLUMNS = ("session_id", *(f.name for f in fields(RunSpec)), "order", "status", "wall_s", "exit_code",
               "signal", "error", "contended", *SCALAR_METRICS, *PRIVACY_COLUMNS)


# a deploy session: one row per export or serving worker (the per-call latencies stay in the JSON export)
DEPLOY_SCALARS = tuple(f.name for f in fields(DeployMetrics) if f.name not in ("latencies_s", "details"))
DEPLOY_CSV_COLUMNS = ("session_id", *(f.name for f in fields(DeploySpec)), "order", "status", "wall_s", "exit_code",
                      "signal", "error", *DEPLOY_SCALARS, "parity_passed")


def tidy_rows(results: ResultSet) -> list[dict[str, Any]]:
    """One dict per run, keys :data:`CSV_COLUMNS`; metrics are ``None`` for a failed run. Units as in
    :class:`~isobench.results.Metrics`: seconds, bytes, samples/s, accuracy as a fraction; the run's workload's
    privacy guarantee (epsilon at delta) where it is a DP-SGD workload, else ``None``."""
    if results.is_deploy:
        return _deploy_rows(results)
    rows = []
    for r in results.runs:
        d = r.to_dict()
        d["session_id"] = results.session_id
        d.update({m: getattr(r.metrics, m) if r.metrics else None for m in SCALAR_METRICS})
        guarantee = results.privacy.get(r.spec.workload)
        d.update({c: guarantee and getattr(guarantee, c) for c in PRIVACY_COLUMNS})
        rows.append({c: d[c] for c in CSV_COLUMNS})
    return rows


def _deploy_rows(results: ResultSet) -> list[dict[str, Any]]:
    """One dict per deploy worker, keys :data:`DEPLOY_CSV_COLUMNS`: seconds, bytes, samples/s, fractions."""
    rows = []
    for r in results.deploys:
        d = {**r.to_dict(), "session_id": results.session_id,
             **{m: getattr(r.metrics, m) if r.metrics else None for m in DEPLOY_SCALARS + ("parity_passed",)}}
        rows.append({c: d[c] for c in DEPLOY_CSV_COLUMNS})
    return rows


def write_csv(results: ResultSet, stream: TextIO) -> None:
    """Write :func:`tidy_rows` as CSV with a header line; a missing value is an empty field."""
    writer = csv.DictWriter(stream, DEPLOY_CSV_COLUMNS if results.is_deploy else CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(tidy_rows(results))
