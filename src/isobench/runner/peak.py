"""Each framework's measured peak, as a run sees it, and the machine peak they give: each framework measured in its
own fresh worker process, pinned like a run's (CPU affinity, thread variables, device environment), by
:func:`isobench.backends.peak.peak` (two timing passes, each watched for contention); kept in the results database
and reused while recent.

The **machine peak** of a (device, precision) is the best rate any framework's record reached
(:func:`isobench.results.machine_peak`): numpy's BLAS is measured beside the compared frameworks on the CPU as a
framework-neutral reference. A framework whose rate is below :data:`~isobench.results.LOW_MATMUL_EFFICIENCY` (70%)
of the best in a compared precision is measured once more in a fresh worker (a slow process, not a slow framework,
is then caught; numpy, the reference, is not); the better of its two measurements is kept, and the report flags it
if it stays low.

A stored peak is reused when its key (:data:`isobench.store.db.PEAK_KEY`: host, CPU model, framework, framework
version, device, threads) matches, it is younger than the store's ``max_age`` (7 days) and it was not measured under
contention; ``force`` measures again. The runner never imports the store: ``store`` is any object with
``recent_peak(key)`` and ``add_peak(peak)``.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ..backends import get_backend, is_installed
from ..config import PEAK_LOAD_MARGIN, PEAK_WARN_AGE_S
from ..backends.peak import FRAMEWORKS
from ..errors import UserError
from ..measure import host_environment
from ..measure.nominal import read_nominal
from ..results import LOW_MATMUL_EFFICIENCY, PeakRecord, machine_peak, peak_framework
from .devices import worker_env
from .local import launch

PEAK_FRAMEWORKS = FRAMEWORKS  # those backends.peak measures
PEAK_TIMEOUT_S = 600.0


class PeakStore(Protocol):
    """Where measured peaks are kept (:class:`isobench.store.Store` is one)."""
    def recent_peak(self, key: dict[str, Any]) -> PeakRecord | None: ...
    def add_peak(self, peak: PeakRecord) -> None: ...


def peak_frameworks(frameworks: Iterable[str], device: str = "cpu") -> list[str]:
    """The frameworks whose peaks runs of ``frameworks`` are compared with, in order, once: each one's own (Keras:
    its backend's) and, on the CPU, numpy's BLAS (first: a framework-neutral reference for the machine peak). The
    float64 numpy reference has no float64 peak: numpy alone gives none."""
    own = list(dict.fromkeys(f for f in map(peak_framework, frameworks) if f in PEAK_FRAMEWORKS and f != "numpy"))
    return ["numpy"] + own if own and device == "cpu" else own


def peak_key(framework: str, threads: int, device: str, host: dict[str, Any] | None = None) -> dict[str, Any]:
    """The key a stored peak is reused under: this host, its CPU model, the framework's installed version, the
    device and the thread count."""
    host = host or host_environment()
    return {"host": host.get("hostname") or "", "cpu_model": host.get("cpu_model") or "", "framework": framework,
            "version": get_backend(framework).version() or "", "device": device, "threads": threads}


def measure_peak(framework: str, threads: int, device: str = "cpu", *, gpu: int = 0, timeout: float = PEAK_TIMEOUT_S,
                 options: dict[str, Any] | None = None, host: dict[str, Any] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> PeakRecord:
    """Measure ``framework``'s peak in a fresh worker process; returns the record (:func:`isobench.backends.peak.
    peak`'s fields, the key, ``measured_at``, the load and the nominal peak), or one with only the ``error`` when it
    could not be measured.
    ``gpu``: the GPU index a cuda worker sees; ``options`` go to :func:`~isobench.backends.peak.peak` (sizes,
    repeats, min_time, copy_mib: tests)."""
    key = peak_key(framework, threads, device, host)
    load = os.getloadavg()[0]  # the machine's load as the measurement starts (other jobs lower the peak)
    task = {"kind": "peak", "spec": {"framework": framework, "threads": threads, "device": device},
            "options": options or {}}
    with tempfile.TemporaryDirectory(prefix="isobench-peak-") as tmp:
        env = worker_env(device, gpu if device == "cuda" else None)
        ended, result, stderr = launch(task, Path(tmp) / f"peak-{framework}", env, timeout)
    if ended.timed_out:
        return PeakRecord(framework, f"exceeded the timeout of {timeout:g} s; killed")
    if not result or result.get("status") != "ok":
        return PeakRecord(framework, (result or {}).get("error") or (stderr.strip().splitlines() or ["no result"])[-1])
    found = result["peak"]
    # the key's version (the installed distribution's) is what a later lookup compares; the module's own is kept
    return PeakRecord.from_dict({
        **found, **key, "measured_at": now().isoformat(timespec="seconds"), "pinned": result.get("pinned"),
        "load_average_1m": round(load, 2), "nominal": read_nominal(threads, device).to_dict(),
        **({"module_version": found["version"]} if found.get("version") != key["version"] else {})})


def session_peaks(frameworks: Iterable[str], threads: int, device: str = "cpu", store: PeakStore | None = None, *,
                  force: bool = False, precisions: Iterable[str] = ("fp32",),
                  on_start: Callable[[str, bool], None] | None = None, **measure) -> dict[str, PeakRecord]:
    """framework -> peak record for each of ``frameworks``: the stored one when recent and uncontended (unless
    ``force``; the record is then ``reused``), else measured now and stored. Then every framework (numpy,
    the reference, excepted) below :data:`~isobench.results.LOW_MATMUL_EFFICIENCY` of the machine peak in one of
    ``precisions`` (those compared) is measured again, unless its record was measured twice already
    (:func:`better`). A framework that is not installed or could not be measured has a record with its ``error``
    (not stored). ``on_start(framework, again)`` is called before each measurement; ``measure``: :func:`measure_peak`'s
    keywords."""
    out, host = {}, measure.pop("host", None) or host_environment()

    def measured(fw: str, again: bool = False) -> PeakRecord:
        if on_start:
            on_start(fw, again)
        return measure_peak(fw, threads, device, host=host, **measure)

    for fw in frameworks:
        if fw not in PEAK_FRAMEWORKS:
            raise UserError(f"no peak measurement for {fw!r}; choose from: {', '.join(PEAK_FRAMEWORKS)}")
        if not is_installed(get_backend(fw)):
            out[fw] = PeakRecord(fw, f"not installed ({get_backend(fw).install_hint})")
            continue
        stored = None if force or store is None else store.recent_peak(peak_key(fw, threads, device, host))
        if stored is None:
            out[fw] = measured(fw)
            if store is not None and out[fw].error is None:
                store.add_peak(out[fw])
        else:
            out[fw] = replace(stored, reused=True,
                              warning=peak_warning(stored, datetime.now(timezone.utc), os.getloadavg()[0]))
    precisions = tuple(precisions)
    for fw in low_frameworks(out, precisions, device):
        if fw != "numpy" and not out[fw].measured_again:  # numpy: the machine peak's reference, not compared
            out[fw] = better(out[fw], measured(fw, again=True), out, precisions, device)
            if store is not None:  # the kept one with its second measurement: not measured a third time
                store.add_peak(replace(out[fw], reused=False, warning=None))
    return out


def low_frameworks(peaks: dict[str, PeakRecord], precisions: Iterable[str], device: str) -> list[str]:
    """The frameworks whose measured rate is below :data:`~isobench.results.LOW_MATMUL_EFFICIENCY` of the machine
    peak (the best of ``peaks``) in one of ``precisions``."""
    low = []
    for p in precisions:
        best = machine_peak(peaks.values(), p, device)
        low += [fw for fw, rec in peaks.items() if best and (r := rec.rate(p)) and
                r < LOW_MATMUL_EFFICIENCY * best[0]]
    return list(dict.fromkeys(low))


def better(first: PeakRecord, again: PeakRecord, peaks: dict[str, PeakRecord], precisions: Iterable[str],
           device: str) -> PeakRecord:
    """The better of two measurements of one framework (each figure of a record comes from one worker, so the
    records are not mixed): the one whose lowest rate relative to the machine peak of ``peaks`` in ``precisions``
    is higher. It has ``measured_again``: the other's date, rates per precision and whether it was contended."""
    if again.error is not None:
        return replace(first, measured_again={"error": again.error})

    def worst(rec):
        return min((rec.rate(p) or 0) / best[0] for p in precisions
                   if (best := machine_peak(peaks.values(), p, device)))
    keep, other = (again, first) if worst(again) > worst(first) else (first, again)
    rates = {m["precision"]: m.get("gflops") for m in other.matmul}
    return replace(keep, measured_again={"measured_at": other.measured_at, "gflops": rates,
                                         "contended": other.contended})


def peak_warning(peak: PeakRecord, now: datetime, load_now: float) -> str | None:
    """Why a reused stored ``peak`` may not fit a run starting ``now`` under 1-minute load ``load_now``: measured more
    than :data:`~isobench.config.PEAK_WARN_AGE_S` before, or under a load more than
    :data:`~isobench.config.PEAK_LOAD_MARGIN` higher (its rates then too low, every % of peak too high); ``None``
    when neither (or unknown: peaks stored before the load was recorded are judged by age only)."""
    why = []
    age = (now - datetime.fromisoformat(peak.measured_at)).total_seconds()
    if age > PEAK_WARN_AGE_S:
        why.append(f"measured {age / 86400:.1f} days ago")
    load = peak.load_average_1m
    if load is not None and load > load_now + PEAK_LOAD_MARGIN:
        why.append(f"measured under a load average of {load:g} (now {load_now:.2f}), which lowers it and inflates "
                   "% of peak")
    if not why:
        return None
    return (f"the stored peak of {peak.framework} was " + " and ".join(why)
            + "; 'isobench peak --force' measures it again")
