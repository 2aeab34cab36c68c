"""Clocks, host memory, thread pinning and environment capture. Knows nothing about frameworks."""
from .environment import host_environment, package_versions
from .memory import PeakTracker, peak_rss_bytes, reset_peak, rss_bytes
from .threads import available_cpus, default_threads, pin
from .timing import Clock, Stopwatch, Timeline, summarise, time_to_target

__all__ = ["Clock", "PeakTracker", "Stopwatch", "Timeline", "available_cpus", "default_threads", "host_environment",
           "package_versions", "peak_rss_bytes", "pin", "reset_peak", "rss_bytes", "summarise", "time_to_target"]
