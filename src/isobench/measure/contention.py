"""How much of a worker's CPUs other processes took while it measured (Linux /proc; stdlib only).

Over a window, the kernel's per-CPU busy time (``/proc/stat``: user + nice + system + irq + softirq, in clock ticks)
on the CPUs the worker is pinned to, minus the CPU time of the worker and its descendants, is the time *other*
processes ran there; the hypervisor's ``steal`` time on those CPUs is counted apart (the virtual CPU wanted to run and
could not). A window is *contended* when the two together exceed :data:`CONTENTION_FRACTION` of the window's CPU
time (and :data:`CONTENTION_MIN_S`, above the tick resolution). ``/proc/stat`` counts in ticks of 1/CLK_TCK s
(10 ms): :attr:`Contention.resolution_s` says how coarse a window's figure is.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
CONTENTION_FRACTION = 0.10  # other processes + steal above 10% of the pinned CPUs' time: the run was contended
CONTENTION_MIN_S = 0.05     # ... and above 50 ms (5 ticks), so that a tick's rounding never flags a short window
_BUSY = (0, 1, 2, 5, 6)     # user, nice, system, irq, softirq (idle 3 and iowait 4 are not busy)
_STEAL = 7


def cpu_ticks(cpus: list[int], stat: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy ticks, steal ticks) summed over ``cpus``; ``None`` where /proc/stat cannot be read."""
    wanted, busy, steal = {f"cpu{c}" for c in cpus}, 0, 0
    try:
        with open(stat) as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if name in wanted:
                    v = [int(x) for x in rest.split()]
                    busy += sum(v[i] for i in _BUSY)
                    steal += v[_STEAL] if len(v) > _STEAL else 0
    except (OSError, ValueError):
        return None
    return busy, steal


def own_cpu_s(pid: int | None = None) -> float:
    """CPU seconds of this process (all threads; nanosecond clock) plus every living descendant's (``/proc`` ticks):
    a framework's helper processes (compile workers) are the worker's own load, not contention."""
    total, todo = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID), _children(pid or os.getpid())
    while todo:
        child = todo.pop()
        try:
            with open(f"/proc/{child}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
        todo += _children(child)
    return total


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def is_contended(fraction: float, taken_s: float) -> bool:
    """Whether a window whose CPUs others took ``taken_s`` CPU seconds of, ``fraction`` of its CPU time, was shared."""
    return fraction > CONTENTION_FRACTION and taken_s > CONTENTION_MIN_S


@dataclass(frozen=True)
class Contention:
    """What other processes and the hypervisor took of ``cpus`` during a window of ``window_s`` seconds."""
    window_s: float
    cpus: int                  # how many CPUs were watched (the worker's affinity)
    other_cpu_s: float         # CPU seconds other processes ran on them (busy minus the worker's own, >= 0)
    steal_s: float             # CPU seconds the hypervisor withheld from them
    load_before: float | None = None  # 1-minute load average at the window's start and end
    load_after: float | None = None

    @property
    def fraction(self) -> float:
        """(other + steal) / the window's CPU time."""
        return (self.other_cpu_s + self.steal_s) / (self.window_s * self.cpus) if self.window_s > 0 else 0.0

    @property
    def contended(self) -> bool:
        return is_contended(self.fraction, self.other_cpu_s + self.steal_s)

    @property
    def resolution_s(self) -> float:
        """How coarse the figures are: one tick on every watched CPU, at each end of the window."""
        return 2 * TICK_S * self.cpus

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction, "contended": self.contended}


class ContentionMeter:
    """start/stop around a window: the :class:`Contention` of this process's CPUs (its affinity at ``start``)."""

    def __init__(self) -> None:
        self._start: tuple | None = None

    def start(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self._start = (cpus, cpu_ticks(cpus), own_cpu_s(), time.monotonic(), _load())

    def stop(self) -> Contention | None:
        """The window since :meth:`start`; ``None`` where /proc/stat could not be read."""
        if self._start is None:
            return None
        cpus, ticks, own, t0, load = self._start
        after = cpu_ticks(cpus)
        if ticks is None or after is None:
            return None
        own_s, window = own_cpu_s() - own, time.monotonic() - t0
        busy_s, steal_s = (after[0] - ticks[0]) * TICK_S, (after[1] - ticks[1]) * TICK_S
        return Contention(window, len(cpus), max(0.0, busy_s - own_s), steal_s, load, _load())


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
