"""Host memory readings from /proc (Linux). Values in bytes; ``None`` where the kernel does not offer them."""
from __future__ import annotations

from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB (KiB)
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """Resident set size now (VmRSS)."""
    return _status_kib("VmRSS")


def peak_rss_bytes() -> int | None:
    """High-water mark of the resident set (VmHWM) since start or the last :func:`reset_peak`."""
    return _status_kib("VmHWM")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS by writing 5 to /proc/self/clear_refs (Linux >= 4.0).

    Returns False where the kernel refuses, in which case VmHWM keeps covering the whole process."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakTracker:
    """start/stop/peak around a region: the process's RSS high-water mark inside it."""

    def __init__(self) -> None:
        self.reset_ok = False
        self.peak: int | None = None

    def start(self) -> None:
        self.reset_ok = reset_peak()

    def stop(self) -> int | None:
        self.peak = peak_rss_bytes()
        return self.peak
