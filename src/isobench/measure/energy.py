"""Energy from the hardware counters that exist, never estimated.

Two counters, each read at start and stop (and at any :meth:`EnergyMeter.poll` between, which a caller may do
to survive more than one counter wrap in a long run):

- RAPL through the Linux powercap interface (Intel, and AMD on kernels that expose it the same way):
  ``<root>/intel-rapl:N/energy_uj``, microjoules, one top-level zone per CPU package; the counter wraps to 0
  after ``max_energy_range_uj``. Top-level package zones are summed; their sub-zones (core, uncore, DRAM) are
  parts of them and ``psys`` overlaps them, so neither is added. Most VMs expose no zone, and since Linux 5.10
  ``energy_uj`` is readable by root only.
- NVML's total energy of an NVIDIA GPU since the driver loaded (``nvmlDeviceGetTotalEnergyConsumption``,
  millijoules, Volta and newer), through nvidia-ml-py (``import pynvml``), imported lazily.

A reading whose counter cannot be read has ``joules=None`` and the reason, e.g. no zone in this VM,
permission denied, no NVML.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

POWERCAP = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")  # top level; "intel-rapl:0:1" is a sub-zone


class Unavailable(Exception):
    """A counter that cannot be read; the message is the reason recorded with the reading."""


@dataclass(frozen=True)
class EnergyReading:
    """Energy over a timed region: ``joules`` from ``source``, or ``None`` with the ``reason``."""
    joules: float | None
    source: str            # "rapl" or "nvml", with the zones or devices read, e.g. "rapl:package-0"
    reason: str | None = None
    seconds: float | None = None  # wall time between start and stop (perf_counter)

    @property
    def watts(self) -> float | None:
        """Mean power over the region."""
        return self.joules / self.seconds if self.joules is not None and self.seconds else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


class RaplCounter:
    """The package zones of ``root`` (``/sys/class/powercap``; injectable for tests)."""
    kind, unit = "rapl", 1e-6  # joules per count

    def __init__(self, root: Path | str = POWERCAP):
        self.root = Path(root)
        self.zones: dict[str, Path] = {}
        self.wrap: dict[str, int] = {}

    def open(self) -> str:
        """Find the zones and their wrap ranges; returns the source name. Raises :class:`Unavailable`."""
        dirs = sorted(p for p in self.root.glob("intel-rapl:*") if _PACKAGE_ZONE.match(p.name)) \
            if self.root.is_dir() else []
        for d in dirs:
            name = (d / "name").read_text().strip() if (d / "name").is_file() else d.name
            if name != "psys":  # the whole platform: overlaps the packages
                self.zones[name] = d
        if not self.zones:
            raise Unavailable(f"no RAPL package zone under {self.root} (not exposed on this machine or VM)")
        for name, d in self.zones.items():
            self.wrap[name] = self._read(d / "max_energy_range_uj")
        return "rapl:" + "+".join(self.zones)

    def read(self) -> dict[str, int]:
        """Microjoules per zone now."""
        return {name: self._read(d / "energy_uj") for name, d in self.zones.items()}

    @staticmethod
    def _read(path: Path) -> int:
        try:
            return _read_int(path)
        except PermissionError:
            raise Unavailable(f"permission denied reading {path} (root only since Linux 5.10)") from None
        except (OSError, ValueError) as e:
            raise Unavailable(f"cannot read {path}: {e}") from None


class NvmlCounter:
    """NVML's total-energy counter of the GPUs ``devices`` (indices; ``None``: all). ``nvml``: the pynvml module
    (injectable for tests)."""
    kind, unit = "nvml", 1e-3  # millijoules per count

    def __init__(self, devices: list[int] | None = None, nvml=None):
        self.devices, self.nvml, self.handles, self.wrap = devices, nvml, {}, {}  # 64-bit counter: no wrap

    def open(self) -> str:
        nvml = self.nvml
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                raise Unavailable("no NVML: nvidia-ml-py is not installed") from None
        self.nvml = nvml
        try:
            nvml.nvmlInit()
            indices = self.devices if self.devices is not None else range(nvml.nvmlDeviceGetCount())
            self.handles = {f"gpu{i}": nvml.nvmlDeviceGetHandleByIndex(i) for i in indices}
        except nvml.NVMLError as e:
            raise Unavailable(f"NVML unavailable: {e}") from None
        if not self.handles:
            raise Unavailable("NVML sees no GPU")
        return "nvml:" + "+".join(self.handles)

    def read(self) -> dict[str, int]:
        """Millijoules per GPU since the driver loaded."""
        try:
            return {name: int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for name, h in self.handles.items()}
        except self.nvml.NVMLError as e:  # e.g. NotSupported before Volta
            raise Unavailable(f"NVML total energy not readable: {e}") from None


class EnergyMeter:
    """start/poll/stop around a region; :meth:`stop` returns an :class:`EnergyReading`."""

    def __init__(self, counter: RaplCounter | NvmlCounter, clock=time.perf_counter):
        self.counter, self.clock = counter, clock
        self.source, self.reason = counter.kind, None
        self._last: dict[str, int] = {}
        self._total = 0    # counts accumulated since start
        self._t0 = 0.0

    def start(self) -> None:
        self._total, self.reason = 0, None
        try:
            self.source = self.counter.open()
            self._last = self.counter.read()
        except Unavailable as e:
            self.reason = str(e)
        self._t0 = self.clock()

    def poll(self) -> None:
        """Add what each counter advanced since the last read, unwrapping one wrap-around per zone."""
        if self.reason is not None:
            return
        try:
            now = self.counter.read()
        except Unavailable as e:
            self.reason = str(e)
            return
        for zone, value in now.items():
            delta = value - self._last[zone]
            if delta < 0:
                if not self.counter.wrap.get(zone):
                    self.reason = f"{zone} counter went backwards ({self._last[zone]} -> {value})"
                    return
                delta += self.counter.wrap[zone]
            self._total += delta
        self._last = now

    def stop(self) -> EnergyReading:
        self.poll()
        seconds = self.clock() - self._t0
        if self.reason is not None:
            return EnergyReading(None, self.source, self.reason, seconds)
        return EnergyReading(self._total * self.counter.unit, self.source, None, seconds)


def default_meters(device: str = "cpu", powercap_root: Path | str = POWERCAP) -> list[EnergyMeter]:
    """The meters for a run on ``device``: the CPU packages always, on ``cuda`` also every GPU NVML sees (NVML
    numbers GPUs by itself, ignoring ``CUDA_VISIBLE_DEVICES``: build an :class:`NvmlCounter` with ``devices``
    to meter fewer)."""
    meters = [EnergyMeter(RaplCounter(powercap_root))]
    if device.startswith("cuda"):
        meters.append(EnergyMeter(NvmlCounter()))
    return meters
