"""The serving session (``isobench deploy --scenario ...``): each deployment path's exported model served under load,
MLPerf-style, as a kind of the one session (:func:`.session.run_session`).

It is a deployment session in what it prepares (the same trained weights, reference logits and exports, through the
same code: :class:`.deploy.DeploymentKind`), with the batch sizes the scenarios serve (1; 8 for multi-stream; the
largest batch for offline and the server's dynamic batching). Its measured units are load workers
(:mod:`.load_worker`): one fresh process per (path, quantization, scenario, batching, repeat), repeats in
interleaved blocks of a seeded random order; batching (off, dynamic) applies to the server scenario, the others
serve one query at a time (offline: in batches of the largest batch size).
"""
from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

from ..backends import deploy
from ..config import DeployConfig
from ..results import LOAD, MULTI_STREAM, SERVING, UNAVAILABLE, LoadSpec, ResultSet
from ..workloads import Workload, workload_to_dict
from .deploy import DeploymentKind, unavailable
from .jobs import Job
from .session import Session, new_results


def scenario_batch_sizes(scenario: str, batching: str, max_batch: int) -> list[int]:
    """The batch sizes a load worker loads its model at: the server's dynamic batching serves one sample at batch 1
    and more padded to the largest batch."""
    return {"single-stream": [1], "multi-stream": [MULTI_STREAM], "offline": [max_batch],
            "server": [1, max_batch] if batching == "dynamic" else [1]}[scenario]


def load_job(order: int, unit: LoadSpec, workload: Workload, inputs: str, reference: str, exported: dict,
             config: DeployConfig) -> Job:
    """The job of load worker ``unit``: its scenario served under LoadGen from the artifact ``exported``."""
    sizes = scenario_batch_sizes(unit.scenario, unit.batching, config.max_batch)
    load = {"duration_s": config.duration_s, "latency_bound_s": config.latency_bound_s, "min_queries": config.min_queries,
            "concurrency": config.concurrency, "batching": unit.batching == "dynamic", "max_batch": config.max_batch,
            "max_queue_delay_s": config.max_queue_delay_s, "seed": config.seed, "qps": config.qps}
    task = {"kind": LOAD, "spec": unit.to_dict(), "deploy_path": asdict(deploy.get_path(unit.path)),
            "workload": workload_to_dict(workload), "inputs": inputs, "reference": reference,
            "artifact": exported["artifact"], "exported": exported, "batch_sizes": sizes, "load": load,
            "tolerance": deploy.logit_tolerance(workload, unit.quantize), "device": config.device}
    return Job(order, (unit,), task, files=("inputs", "reference", "artifact"), timeout=config.timeout_s,
               max_memory_bytes=config.max_memory_bytes)


class ServingKind(DeploymentKind):
    """Serving sessions (the module docstring)."""
    name = SERVING

    def new_results(self, config: DeployConfig) -> ResultSet:
        return new_results(config, SERVING, frameworks=config.frameworks)

    def plan(self, config: DeployConfig, results: ResultSet) -> tuple[list[str], list[Any], int]:
        """Every export, then every load worker: repeat r of every (path, quantization, scenario, batching) before
        repeat r + 1 of any, each block in a seeded random order. A path that cannot run here has its export's
        record and no load worker."""
        rng, loads = random.Random(config.seed), []
        runnable = [(p, q) for p in config.paths for q in config.quantize if unavailable(deploy.get_path(p), q) is None]
        for repeat in range(config.repeats):
            block = [LoadSpec(w, p, q, s, b, repeat, config.threads) for w in config.workloads for p, q in runnable
                     for s in config.scenarios for b in (config.batching if s == "server" else ["off"])]
            rng.shuffle(block)
            loads += block
        plan = self.exports(config) + loads
        return list(config.workloads), plan, len(plan)

    def ok(self, session: Session) -> bool:
        """Every export ran (or cannot run here: a row, not a failure) and every load worker ran with every fp32
        answer within tolerance."""
        results = session.results
        return all(r.status == UNAVAILABLE or r.ok for r in results.deploys) and all(r.ok for r in results.loads)

    measured, measured_job = LOAD, staticmethod(load_job)  # DeploymentKind.records runs these on the exports

    def first_order(self, results: ResultSet) -> int:
        return max((r.order for r in results.records), default=-1) + 1
