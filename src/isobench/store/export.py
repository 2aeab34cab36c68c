"""Tidy exports of a session: one row per worker record, one column per variable (pandas ``read_csv`` ready).

The columns of every kind of session are made the same way (:func:`columns`): the session id, the record's identity
(its spec's JSON keys), how its worker ended, every scalar metric of the kind (lists such as per-step times and
per-call latencies stay in the JSON export), then the kind's derived columns."""
from __future__ import annotations

import csv
from dataclasses import fields
from typing import Any, TextIO

from ..results import (DEPLOYMENT, SERVING, TRAINING, DeployMetrics, DeployRecord, LoadMetrics, LoadRecord, Metrics,
                       Record, ResultSet, RunRecord)

ENDING = ("order", "status", "wall_s", "exit_code", "signal", "error")
SPEC_KEYS = {RunRecord: ("workload", "framework", "mode", "repeat", "threads", "device", "precision", "optimizer"),
             DeployRecord: ("workload", "path", "quantize", "batch_size", "repeat", "threads"),
             LoadRecord: ("workload", "path", "quantize", "scenario", "batching", "repeat", "threads")}
ROWS = {TRAINING: RunRecord, DEPLOYMENT: DeployRecord, SERVING: LoadRecord}  # the records a kind of session exports


def _scalars(metrics: type, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A metrics type's scalar fields (not the lists and dicts), in order."""
    return tuple(f.name for f in fields(metrics) if not str(f.type).startswith(("list", "dict")) and f.name not in skip)


# (the record's own columns before its metrics, its metrics, the derived columns after them), per kind of record
KINDS = {RunRecord: (("contended",), _scalars(Metrics), ("epsilon", "delta")),  # epsilon, delta: a DP-SGD guarantee
         DeployRecord: ((), _scalars(DeployMetrics), ("parity_passed",)),
         LoadRecord: ((), _scalars(LoadMetrics), ("trials",))}  # trials: how many LoadGen runs (each in the JSON)


def columns(kind: type[Record]) -> tuple[str, ...]:
    own, metrics, derived = KINDS[kind]
    return ("session_id", *SPEC_KEYS[kind], *ENDING, *own, *metrics, *derived)


def tidy_rows(results: ResultSet) -> list[dict[str, Any]]:
    """One dict per record of the session's kind (:data:`ROWS`: a serving session's load workers; its exports are in
    the JSON export), keys :func:`columns`; metrics are ``None`` for a failed worker. Units as in the metrics types:
    seconds, bytes, samples/s, QPS, accuracy as a fraction. A training run carries its workload's privacy guarantee
    (epsilon at delta) where it is a DP-SGD workload; a deployment record whether its logits passed the parity check;
    a load worker how many LoadGen runs it made (the server's search: each target QPS)."""
    rows = []
    for r in results.records:
        if not isinstance(r, ROWS[results.kind]):
            continue
        d = {**r.to_dict(), "session_id": results.session_id}
        d.update({m: getattr(r.metrics, m) if r.metrics else None for m in KINDS[type(r)][1]})
        if isinstance(r, RunRecord):
            guarantee = results.privacy.get(r.spec.workload)
            d.update({c: guarantee and getattr(guarantee, c) for c in ("epsilon", "delta")})
        elif isinstance(r, LoadRecord):
            d["trials"] = len(r.metrics.trials) if r.metrics else None
        else:
            d["parity_passed"] = r.metrics.parity_passed if r.metrics else None
        rows.append({c: d[c] for c in columns(type(r))})
    return rows


def write_csv(results: ResultSet, stream: TextIO) -> None:
    """Write :func:`tidy_rows` as CSV with a header line; a missing value is an empty field."""
    writer = csv.DictWriter(stream, columns(ROWS[results.kind]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(tidy_rows(results))
