"""Energy counters on fake powercap trees and a fake NVML: wrap-around, permissions, absence, never a guess."""
from __future__ import annotations

from pathlib import Path

import pytest

from isobench.measure import energy
from isobench.measure.energy import EnergyMeter, EnergyReading, NvmlCounter, RaplCounter, default_meters


def _zone(root: Path, zone: str, name: str, uj: int, max_uj: int = 1_000_000) -> Path:
    d = root / zone
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def _set(d: Path, uj: int) -> None:
    (d / "energy_uj").write_text(f"{uj}\n")


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 2.0
        return self.t


@pytest.fixture
def tree(tmp_path):
    """Two packages, a core sub-zone (part of package 0) and psys (the platform): only packages count."""
    root = tmp_path / "powercap"
    p0, p1 = _zone(root, "intel-rapl:0", "package-0", 500_000), _zone(root, "intel-rapl:1", "package-1", 10)
    _zone(root, "intel-rapl:0:0", "core", 7)
    _zone(root, "intel-rapl:2", "psys", 99)
    return root, p0, p1


def test_packages_summed_in_joules(tree):
    root, p0, p1 = tree
    meter = EnergyMeter(RaplCounter(root), clock=FakeClock())
    meter.start()
    _set(p0, 700_000), _set(p1, 1_010)
    r = meter.stop()
    assert r == EnergyReading(pytest.approx(0.201), "rapl:package-0+package-1", None, 2.0)
    assert r.watts == pytest.approx(0.1005)


def test_wrap_around_uses_the_zone_range(tree):
    root, p0, p1 = tree
    meter = EnergyMeter(RaplCounter(root))
    meter.start()
    _set(p0, 100_000)  # 500_000 -> max 1_000_000 -> wrapped to 100_000: 600_000 uJ
    assert meter.stop().joules == pytest.approx(0.6)


def test_polling_survives_more_than_one_wrap(tree):
    root, p0, p1 = tree
    meter = EnergyMeter(RaplCounter(root))
    meter.start()
    for uj in (900_000, 300_000, 800_000, 200_000):  # +400k, +400k, +500k, +400k
        _set(p0, uj)
        meter.poll()
    assert meter.stop().joules == pytest.approx(1.7)


def test_missing_powercap_is_null_with_reason(tmp_path):
    meter = EnergyMeter(RaplCounter(tmp_path / "absent"))
    meter.start()
    r = meter.stop()
    assert r.joules is None and r.source == "rapl" and "no RAPL package zone" in r.reason
    assert r.watts is None and r.to_dict()["joules"] is None


def test_only_psys_is_not_a_package(tmp_path):
    _zone(tmp_path, "intel-rapl:0", "psys", 5)
    meter = EnergyMeter(RaplCounter(tmp_path))
    meter.start()
    assert "no RAPL package zone" in meter.stop().reason


def test_permission_denied_is_the_reason(tree, monkeypatch):
    root, p0, _ = tree
    real = energy._read_int

    def denied(path: Path) -> int:  # tests run as root here, where chmod 000 would not deny
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(energy, "_read_int", denied)
    meter = EnergyMeter(RaplCounter(root))
    meter.start()
    r = meter.stop()
    assert r.joules is None and "permission denied" in r.reason and "energy_uj" in r.reason


def test_unreadable_at_stop_is_not_a_partial_figure(tree):
    root, p0, _ = tree
    meter = EnergyMeter(RaplCounter(root))
    meter.start()
    (p0 / "energy_uj").write_text("garbage")
    r = meter.stop()
    assert r.joules is None and "cannot read" in r.reason


class FakeNvml:
    """The few pynvml calls the counter makes; ``energy`` in millijoules per GPU."""
    class NVMLError(Exception):
        pass

    def __init__(self, energy_mj, supported=True, driver=True):
        self.energy, self.supported, self.driver = energy_mj, supported, driver

    def nvmlInit(self):
        if not self.driver:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self):
        return len(self.energy)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.supported:
            raise self.NVMLError("Not Supported")
        return self.energy[handle]


def test_nvml_energy_in_joules():
    nvml = FakeNvml([1_000, 5_000])
    meter = EnergyMeter(NvmlCounter(nvml=nvml))
    meter.start()
    nvml.energy = [3_500, 5_250]
    assert meter.stop() == EnergyReading(pytest.approx(2.75), "nvml:gpu0+gpu1", None, pytest.approx(0, abs=1))


def test_nvml_one_device():
    nvml = FakeNvml([1_000, 5_000])
    meter = EnergyMeter(NvmlCounter([1], nvml=nvml))
    meter.start()
    nvml.energy = [9_000, 6_000]
    r = meter.stop()
    assert r.source == "nvml:gpu1" and r.joules == pytest.approx(1.0)


@pytest.mark.parametrize("nvml, reason", [(FakeNvml([1], driver=False), "NVML unavailable: Driver Not Loaded"),
                                          (FakeNvml([1], supported=False), "not readable: Not Supported"),
                                          (FakeNvml([]), "sees no GPU")])
def test_nvml_failures_are_reasons(nvml, reason):
    meter = EnergyMeter(NvmlCounter(nvml=nvml))
    meter.start()
    r = meter.stop()
    assert r.joules is None and reason in r.reason


def test_no_pynvml_here_is_a_reason(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    meter = EnergyMeter(NvmlCounter())
    meter.start()
    assert meter.stop().reason == "no NVML: nvidia-ml-py is not installed"


def test_default_meters(tmp_path):
    assert [m.counter.kind for m in default_meters("cpu", tmp_path)] == ["rapl"]
    assert [m.counter.kind for m in default_meters("cuda", tmp_path)] == ["rapl", "nvml"]
