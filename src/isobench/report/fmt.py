"""Numbers as text, the same in every report: significant figures, one unit per row, ratios, percentage points,
p-values, intervals, sizes in bytes and recorded configuration values.

Pure functions of numbers; what the numbers are comes from :mod:`.model`, what they are called from :mod:`.words`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ..stats import Interval, Stats

UNITS = {  # (suffix, size in the metric's base unit), largest first
    "time": ((" s", 1.0), (" ms", 1e-3), (" µs", 1e-6)),
    "memory": ((" GiB", 2.0**30), (" MiB", 2.0**20), (" KiB", 2.0**10), (" B", 1.0)),
    "rate": (("M/s", 1e6), ("k/s", 1e3), ("/s", 1.0)),  # samples/s: 6.09k/s
    "loss": (("", 1.0),),  # nats
    "flops": ((" TFLOP/s", 1e12), (" GFLOP/s", 1e9), (" MFLOP/s", 1e6), (" FLOP/s", 1.0)),
    "fraction": (("%", 0.01),),  # of the peak: 0.052 -> 5.20%
    "energy": ((" J", 1.0), (" mJ", 1e-3), (" µJ", 1e-6)),
    "accuracy": (("%", 0.01),),  # a fraction in percent, always one decimal (pp)
}
COUNTS = ((" T", 1e12), (" G", 1e9), (" M", 1e6), (" k", 1e3), (" ", 1.0))  # FLOPs, bytes: decimal prefixes
Unit = tuple[str, float]  # (suffix, size in the metric's base unit)


def sig(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant figures, never in exponent form: 2.31, 0.0500, 1230."""
    x = float(f"{x:.{digits}g}")  # round first so that 0.9996 becomes 1.00, not 1.000
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"


def sci(x: float, digits: int = 3, pad: bool = True) -> str:
    """A small magnitude (a difference, a tolerance, delta) in exponent form to ``digits`` significant figures,
    trailing zeros dropped: 2.32e-07, 1e-05, 2.5e-05 (``pad`` False: 1e-4, 2.5e-5); zero as 0."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.') if '.' in mantissa else mantissa}e{exponent if pad else int(exponent)}"


def percent_range(fractions) -> str:
    """The range of some fractions in percent, two significant figures: ``"30-50"``, ``"1.2"`` when all round alike."""
    low, high = (sig(100 * f(fractions), 2) for f in (min, max))
    return low if low == high else f"{low}-{high}"


def signed(x: float, fmt: Callable[[float], str]) -> str:
    return ("+" if x >= 0 else "-") + fmt(abs(x))


def ratio(r: float) -> str:
    return f"{r:.2f}" if 0.1 <= r < 10 else sig(r)


def pp(x: float) -> str:
    """A fraction in percentage points, one decimal."""
    return f"{100 * x:.1f}"


def unit(kind: str, magnitudes: Iterable[float]) -> Unit:
    """The largest unit in which the largest magnitude is at least 1, then smaller ones while the smallest
    nonzero magnitude is below 0.1 and the largest stays below 10^4 (5.21 ms and 1260 ms, not 0.00521 s)."""
    mags = [m for m in magnitudes if m > 0] or [0.0]
    units, top, bottom = UNITS[kind], max(mags), min(mags)
    i = next((i for i, (_, size) in enumerate(units) if top >= size), len(units) - 1)
    while i + 1 < len(units) and bottom < 0.1 * units[i][1] and top < 1e4 * units[i + 1][1]:
        i += 1
    return units[i]


def p_value(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def ci(level: float) -> str:
    """``"95% CI"`` for a 0.95 interval."""
    return f"{100 * level:g}% CI"


def spread(s: Stats, accuracy: bool = False) -> str:
    """Robust spread as % of the median (accuracy: in pp); none for a single process, where it is unknown."""
    if s.n < 2:
        return ""
    if accuracy:
        return f" ±{pp(s.spread)}"
    cv = 100 * s.cv
    return f" ±{cv:.1f}%" if cv < 9.95 else f" ±{cv:.0f}%"  # 9.96 -> ±10%, not ±10.0%


def figure(s: Stats, kind: str, unit: Unit, with_spread: bool = True) -> str:
    """A median in its row's (or column's) unit, then its robust spread: ``2.31 s ±1.5%``, ``87.7% ±0.0`` (accuracy
    in percent, its spread in pp)."""
    accuracy = kind == "accuracy"
    return (pp(s.median) if accuracy else sig(s.median / unit[1])) + unit[0] + \
        (spread(s, accuracy=accuracy) if with_spread else "")


def versus(iv: Interval, kind: str, fmt: Callable[[float], str], suffix: str) -> str:
    """A comparison as a table cell: ``1.87x [1.82-1.93]`` for a ratio, ``+350 ms [+343, +357]`` for a
    difference (``fmt`` writes a magnitude in the row's unit); the bracket only where the interval was resampled."""
    if kind == "ratio":
        return f"{ratio(iv.estimate)}x" + (f" [{ratio(iv.low)}-{ratio(iv.high)}]" if iv.resampled else "")
    return f"{signed(iv.estimate, fmt)}{suffix}" + (
        f" [{signed(iv.low, fmt)}, {signed(iv.high, fmt)}]" if iv.resampled else "")


def count(v: float, what: str) -> str:
    """A count with a decimal prefix and ``what`` (FLOP, B, FLOP/s), e.g. ``1.23 GFLOP``, ``456 kB``."""
    suffix, scale = next(((p, x) for p, x in COUNTS if abs(v) >= x), COUNTS[-1])
    return f"{sig(v / scale)}{suffix}{what}".replace("  ", " ")


def size(v: int) -> str:
    """Bytes in MiB, or GiB from 1 GiB on, e.g. ``8.0 GiB``."""
    return f"{v / 2**30:.1f} GiB" if v >= 2**30 else f"{v / 2**20:.0f} MiB"


def fmt_value(v: Any) -> str:
    """A configuration or environment value as text: unset for None, on/off for booleans, lists joined."""
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt_value(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_value(x) for x in v) or "none"
    return str(v)


def cpu_ranges(cpus: Any) -> str:
    """CPU list in ranges: [0, 1, 2, 5] -> 0-2, 5."""
    if not isinstance(cpus, (list, tuple)) or not cpus:
        return fmt_value(cpus)
    cpus = sorted(int(c) for c in cpus)
    spans, start = [], cpus[0]
    for prev, c in zip(cpus, cpus[1:] + [None]):
        if c != prev + 1:  # a span ends at prev
            spans.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = c
    return ", ".join(spans)
