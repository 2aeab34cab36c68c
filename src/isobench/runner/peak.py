"""The machine's measured peak per framework, as a run sees it: each framework measured in its own fresh worker
process, pinned like a run's (CPU affinity, thread variables, device environment), by
:func:`isobench.backends.peak.peak`; kept in the results database and reused while recent.

A stored peak is reused when its key (:data:`isobench.store.db.PEAK_KEY`: host, CPU model, framework, framework
version, device, threads) matches and it is younger than the store's ``max_age`` (7 days); ``force`` measures
again. The runner never imports the store: ``store`` is any object with ``recent_peak(key)`` and ``add_peak(peak)``.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ..backends import get_backend, is_installed
from ..config import PEAK_LOAD_MARGIN, PEAK_WARN_AGE_S
from ..errors import UserError
from ..measure import host_environment
from ..results import peak_framework
from .devices import worker_env
from .local import launch

PEAK_FRAMEWORKS = ("numpy", "torch", "tensorflow", "jax")  # those backends.peak measures
PEAK_TIMEOUT_S = 600.0


class PeakStore(Protocol):
    """Where measured peaks are kept (:class:`isobench.store.Store` is one)."""
    def recent_peak(self, key: dict[str, Any]) -> dict[str, Any] | None: ...
    def add_peak(self, peak: dict[str, Any]) -> None: ...


def peak_frameworks(frameworks: Iterable[str]) -> list[str]:
    """The frameworks whose peaks runs of ``frameworks`` compare with (Keras: its backend's), in order, once;
    numpy's float64 reference has no float64 peak measured, so it has none."""
    return list(dict.fromkeys(f for f in map(peak_framework, frameworks) if f in PEAK_FRAMEWORKS and f != "numpy"))


def peak_key(framework: str, threads: int, device: str, host: dict[str, Any] | None = None) -> dict[str, Any]:
    """The key a stored peak is reused under: this host, its CPU model, the framework's installed version, the
    device and the thread count."""
    host = host or host_environment()
    return {"host": host.get("hostname") or "", "cpu_model": host.get("cpu_model") or "", "framework": framework,
            "version": get_backend(framework).version() or "", "device": device, "threads": threads}


def measure_peak(framework: str, threads: int, device: str = "cpu", *, gpu: int = 0, timeout: float = PEAK_TIMEOUT_S,
                 options: dict[str, Any] | None = None, host: dict[str, Any] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> dict[str, Any]:
    """Measure ``framework``'s peak in a fresh worker process; returns the record (the key, ``measured_at`` and
    :func:`isobench.backends.peak.peak`'s fields) or ``{"framework", "error"}`` when it could not be measured.
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
        return {"framework": framework, "error": f"exceeded the timeout of {timeout:g} s; killed"}
    if not result or result.get("status") != "ok":
        why = (result or {}).get("error") or (stderr.strip().splitlines() or ["no result"])[-1]
        return {"framework": framework, "error": why}
    found = result["peak"]
    # the key's version (the installed distribution's) is what a later lookup compares; the module's own is kept
    return {**found, **key, "measured_at": now().isoformat(timespec="seconds"), "pinned": result.get("pinned"),
            "load_average_1m": round(load, 2),
            **({"module_version": found["version"]} if found.get("version") != key["version"] else {})}


def session_peaks(frameworks: Iterable[str], threads: int, device: str = "cpu", store: PeakStore | None = None, *,
                  force: bool = False, on_start: Callable[[str], None] | None = None,
                  on_done: Callable[[dict[str, Any]], None] | None = None, **measure) -> dict[str, dict[str, Any]]:
    """framework -> peak record for each of ``frameworks``: the stored one when recent (unless ``force``; the
    record then has ``"reused": True``), else measured now and stored. A framework that is not installed or
    could not be measured has ``{"framework", "error"}`` (not stored). ``measure``: :func:`measure_peak`'s
    keywords."""
    out, host = {}, measure.pop("host", None) or host_environment()
    for fw in frameworks:
        if fw not in PEAK_FRAMEWORKS:
            raise UserError(f"no peak measurement for {fw!r}; choose from: {', '.join(PEAK_FRAMEWORKS)}")
        if not is_installed(get_backend(fw)):
            out[fw] = {"framework": fw, "error": f"not installed ({get_backend(fw).install_hint})"}
            continue
        stored = None if force or store is None else store.recent_peak(peak_key(fw, threads, device, host))
        if stored is None:
            if on_start:
                on_start(fw)
            rec = measure_peak(fw, threads, device, host=host, **measure)
            if store is not None and "error" not in rec:
                store.add_peak(rec)
        else:
            rec = {**stored, "reused": True}
            warning = peak_warning(rec, datetime.now(timezone.utc), os.getloadavg()[0])
            if warning:
                rec["warning"] = warning
        out[fw] = rec
        if on_done:
            on_done(rec)
    return out


def peak_warning(peak: dict[str, Any], now: datetime, load_now: float) -> str | None:
    """Why a reused stored ``peak`` may not fit a run starting ``now`` under 1-minute load ``load_now``: measured more
    than :data:`~isobench.config.PEAK_WARN_AGE_S` before, or under a load more than
    :data:`~isobench.config.PEAK_LOAD_MARGIN` higher (its rates then too low, every % of peak too high); ``None``
    when neither (or unknown: peaks stored before the load was recorded are judged by age only)."""
    why = []
    age = (now - datetime.fromisoformat(peak["measured_at"])).total_seconds()
    if age > PEAK_WARN_AGE_S:
        why.append(f"measured {age / 86400:.1f} days ago")
    load = peak.get("load_average_1m")
    if load is not None and load > load_now + PEAK_LOAD_MARGIN:
        why.append(f"measured under a load average of {load:g} (now {load_now:.2f}), which lowers it and inflates "
                   "% of peak")
    if not why:
        return None
    return (f"the stored peak of {peak['framework']} was " + " and ".join(why)
            + "; 'isobench peak --force' measures it again")
