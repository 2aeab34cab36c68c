"""Live progress on stderr while workers run: one updating line on a terminal, one line per run otherwise."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from ..results import EXPORT, LOAD, RunRecord, RunSpec
from ..stats import Group
from . import fmt


def _fmt_s(s: float) -> str:
    return f"{fmt.sig(s * 1e3)} ms" if s < 1 else f"{fmt.sig(s)} s"


class Progress:
    """Callbacks for the runner: ``on_event`` (worker progress) and ``on_record`` (run finished)."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = self.started = time.monotonic()

    def _name(self, spec: RunSpec) -> str:
        return Group.of(spec).label

    def _prefix(self, n: int) -> str:
        return f"[{n:>{len(str(self.total))}}/{self.total}]"

    def on_event(self, spec: RunSpec, event: dict) -> None:
        if event.get("event") == "start":
            self.started = time.monotonic()
            self._live(f"{self._prefix(self.done + 1)} {self._name(spec)} {spec.repeat_label}: "
                       "starting worker, importing framework")
        elif event.get("event") == "epoch":
            self._live(f"{self._prefix(self.done + 1)} {self._name(spec)} {spec.repeat_label}: "
                       f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.4f}  "
                       f"{time.monotonic() - self.started:.1f} s")

    def on_record(self, r: RunRecord) -> None:
        self.done += 1
        if r.ok and r.metrics:
            m = r.metrics
            what = ("ok  " + (f"to trained {_fmt_s(m.time_to_trained_s)}  " if m.time_to_trained_s else "")
                    + f"train {_fmt_s(m.train_time_s)}  step {_fmt_s(m.step_time_median_s)}  "
                    f"first step {_fmt_s(m.first_step_s)}  acc {m.test_accuracy:.1%}"
                    + (f"  UNDER LOAD: others took {m.contention:.0%} of its CPUs" if m.contended else ""))
        else:
            what = f"{r.status.upper()}: {r.error or 'no detail'}"
        wall = f"  [{r.wall_s:.1f} s]" if r.wall_s is not None else ""
        self._final(f"{self._prefix(self.done)} {self._name(r.spec)} {r.spec.repeat_label}: {what}{wall}")

    def clear(self) -> None:
        """Remove the live line (terminal only)."""
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    def finish(self) -> None:
        self._final(f"{self.done} runs in {time.monotonic() - self.t0:.1f} s")

    def _live(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text[:200])
            self.stream.flush()

    def _final(self, text: str) -> None:
        self.stream.write(("\r\x1b[2K" if self.tty else "") + text + "\n")
        self.stream.flush()


class DeployProgress(Progress):
    """:class:`Progress` for ``isobench deploy``: export and serving workers, named by path, precision, batch; the
    count is of worker processes (a serving process leaves a record per batch size)."""

    def __init__(self, total: int, stream: TextIO | None = None):
        super().__init__(total, stream)
        self._last: tuple | None = None  # the process of the last record

    def on_event(self, spec, event: dict) -> None:
        step = "exporting" if spec.kind == EXPORT else f"repeat {spec.repeat + 1}"
        if event.get("event") == "start":
            self.started = time.monotonic()
            self._live(f"{self._prefix(self.done + 1)} {spec.workload} {spec.label} {step}: starting worker")
        elif event.get("event") == "timed":
            self._live(f"{self._prefix(self.done + 1)} {spec.workload} {spec.label} batch {event['batch_size']} "
                       f"{step}: p50 {_fmt_s(event['p50_s'])}; serving the test split")
        elif event.get("event") == "trial":
            self._live(f"{self._prefix(self.done + 1)} {spec.workload} {spec.label} {step}: {event['qps']:.0f} QPS "
                       + ("VALID, trying higher" if event["valid"] else "INVALID, trying lower"))

    def on_record(self, r) -> None:
        if (process := (r.spec.unit, r.order)) != self._last:
            self.done, self._last = self.done + 1, process
        m, spec = r.metrics, r.spec
        if r.status != "ok" or m is None:
            what = f"{r.status.upper()}: {r.error or 'no detail'}"
        elif spec.kind == EXPORT:
            what = f"ok  export {_fmt_s(m.export_s)}  artifact {m.artifact_bytes / 2**10:.1f} KiB"
        elif spec.kind == LOAD:
            rate = f"max {m.max_qps:.0f} QPS under the bound" if m.max_qps is not None else \
                f"{m.samples_per_s:.0f} samples/s" if m.samples_per_s else ""
            what = (f"ok  {rate}  p99 {_fmt_s(m.latency_p99_s) if m.latency_p99_s else '-'}  "
                    f"{'VALID' if m.valid else 'INVALID'}  {m.answers} answers checked, acc {m.accuracy:.1%}")
        else:
            parity = {True: "  logits pass", False: "  logits FAIL", None: ""}[m.parity_passed]
            cold = f"cold start {_fmt_s(m.cold_start_s)}  " if m.cold_start_s is not None else ""
            what = (f"ok  {cold}p50 {_fmt_s(m.latency_p50_s)}  p99 {_fmt_s(m.latency_p99_s)}  "
                    f"acc {m.test_accuracy:.1%}{parity}")
        step = "" if spec.kind == EXPORT else f" repeat {spec.repeat + 1}"
        wall = f"  [{r.wall_s:.1f} s]" if r.wall_s is not None else ""
        self._final(f"{self._prefix(self.done)} {spec.workload} {spec.label}{step}: {what}{wall}")

    def finish(self) -> None:
        self._final(f"{self.done} deploy workers in {time.monotonic() - self.t0:.1f} s")
