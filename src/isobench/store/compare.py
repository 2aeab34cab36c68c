"""What differs between two stored sessions' set-ups (threads, repeats, host, Python, package versions, flags),
printed above ``isobench compare``'s table. The statistics of the comparison itself are in
:func:`isobench.stats.compare_sessions`.
"""
from __future__ import annotations

from typing import Any

from ..results import ResultSet

SETUP_KEYS = ("isobench", "python", "platform", "hostname", "cpu_model", "logical_cores")


def _setup(r: ResultSet) -> dict[str, Any]:
    env = r.environment
    d = {k: r.config.get(k) for k in ("threads", "repeats")}
    d.update({k: env.get(k) for k in SETUP_KEYS})
    d.update({f"{k} version": v for k, v in (env.get("packages") or {}).items()})
    d.update({f"${k}": v for k, v in (env.get("env") or {}).items()})
    return d


def setup_differences(a: ResultSet, b: ResultSet) -> list[tuple[str, Any, Any]]:
    """What differs between the sessions' set-ups: (key, value in A, value in B) in the keys' order."""
    fa, fb = _setup(a), _setup(b)
    return [(k, fa.get(k), fb.get(k)) for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k)]
