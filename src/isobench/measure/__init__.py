"""Clocks, host memory, CPU contention, thread pinning and environment capture. Knows nothing about frameworks.

Names are imported from their module on first use (:mod:`isobench._lazy`): the worker's bootstrap imports
:mod:`.threads` to pin the CPUs before numpy loads (its BLAS threads are started, and take their affinity, at import)."""
from .._lazy import lazy_exports

_EXPORTS = {"host_environment": ".environment", "package_versions": ".environment", "PeakTracker": ".memory",
            "peak_rss_bytes": ".memory", "reset_peak": ".memory", "rss_bytes": ".memory", "available_cpus": ".threads",
            "default_threads": ".threads", "pin": ".threads", "Clock": ".timing", "Stopwatch": ".timing",
            "Timeline": ".timing", "summarise": ".timing", "time_to_target": ".timing"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
