"""The peak measurement's arithmetic and structure, on tiny sizes: rates computed exactly from FLOPs and time
(a fake clock), the best of the trials and their contention (a fake meter), sane and complete records per
framework, the nominal peak from fixed /proc/cpuinfo texts; never a check of how fast this machine is."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from isobench.backends.peak import calibrate, copy_gbps, matmul_gflops, measure, peak
from isobench.errors import UserError
from isobench.measure.nominal import nominal_peak

TINY = dict(sizes=(32, 64), repeats=2, min_time=0.002, copy_mib=1)


def test_rates_from_flops_and_time():
    assert matmul_gflops(1000, 3, 0.5) == 2 * 1000 ** 3 * 3 / 0.5 / 1e9 == 12.0
    assert copy_gbps(2 ** 20, 10, 0.001) == 2 * 2 ** 20 * 10 / 0.001 / 1e9


def test_calibration_grows_the_loop_to_min_time():
    done = []  # every call takes exactly 1 ms on this clock

    def fn():
        done.append(1)

    assert calibrate(fn, lambda _: None, min_time=0.01, clock=lambda: len(done) * 1e-3) == \
        (12, pytest.approx(0.001))  # 1.2 x 0.01 / 0.001 calls per loop; one call 1 ms


def test_measured_rate_is_exactly_flops_over_time():
    clock = itertools.count(0.0, 1.0).__next__  # every loop lasts exactly 1 s on this clock
    p = measure("numpy", 1, sizes=(32, 64), repeats=2, min_time=0.5, copy_mib=1, clock=clock)
    (fp32,) = p.matmul
    assert fp32.by_size == {32: 2 * 32 ** 3 / 1e9, 64: 2 * 64 ** 3 / 1e9}
    assert (fp32.gflops, fp32.size, fp32.calls, fp32.seconds) == (2 * 64 ** 3 / 1e9, 64, 1, 1.0)
    assert p.trials == 2 and fp32.by_trial == (fp32.gflops, fp32.gflops) and fp32.trial == 0
    assert p.copy_gbps == 2 * 2 ** 20 / 1e9 and p.rate("fp32") == fp32.gflops
    assert p.contention == (None, None) and p.contended is None  # no meter


class _Window:
    def __init__(self, contended):
        self.contended = contended

    def to_dict(self):
        return {"contended": self.contended, "fraction": 0.4 if self.contended else 0.0}


class _Meter:
    """Trial t's loops each last ``loop_s[t]`` on :meth:`clock` (calibration: 1 s); ``contended[t]`` its window."""

    def __init__(self, loop_s, contended):
        self.loop_s, self.contended, self.trial, self.t = loop_s, contended, -1, 0.0

    def clock(self):
        self.t += self.loop_s[self.trial] if self.trial >= 0 else 1.0
        return self.t

    def start(self):
        self.trial += 1

    def stop(self):
        return _Window(self.contended[self.trial])


@pytest.mark.parametrize("loop_s, contended, best_trial, flagged", [
    ((2.0, 1.0), (True, False), 1, False),   # the best loops came from the quiet trial: not contended
    ((1.0, 2.0), (True, False), 0, True),    # ... from the contended one: the record is contended
])
def test_the_best_trial_is_kept_and_its_contention_decides(loop_s, contended, best_trial, flagged):
    meter = _Meter(loop_s, contended)
    p = measure("numpy", 1, sizes=(32,), repeats=2, min_time=0.5, copy_mib=1, clock=meter.clock, meter=meter)
    (fp32,) = p.matmul
    assert fp32.by_trial == (2 * 32 ** 3 / 1e9 / loop_s[0], 2 * 32 ** 3 / 1e9 / loop_s[1])
    assert (fp32.trial, p.copy_trial, fp32.gflops) == (best_trial, best_trial, max(fp32.by_trial))
    assert p.contended is flagged and [w["contended"] for w in p.contention] == list(contended)


def test_numpy_record_is_complete_and_sane():
    p = measure("numpy", 1, **TINY)
    assert (p.framework, p.device, p.threads, p.repeats, p.copy_bytes) == ("numpy", "cpu", 1, 2, 2 ** 20)
    (fp32,) = p.matmul
    assert fp32.precision == "fp32" and fp32.error is None and set(fp32.by_size) == {32, 64}
    assert fp32.gflops == max(fp32.by_size.values()) == max(fp32.by_trial) == \
        matmul_gflops(fp32.size, fp32.calls, fp32.seconds) > 0
    assert p.copy_gbps == copy_gbps(p.copy_bytes, p.copy_calls, p.copy_seconds) > 0
    assert p.version and p.rate("bf16") is None and len(fp32.by_trial) == p.trials == 2


def test_unsupported_precision_is_recorded_not_raised():
    p = measure("numpy", 1, precisions=("fp32", "bf16"), **TINY)
    assert p.matmul[0].gflops > 0
    assert p.matmul[1].gflops is None and "numpy has no bf16 matmul" in p.matmul[1].error


def test_peak_is_a_json_ready_dict():
    d = peak("numpy", 1, **TINY)
    assert json.loads(json.dumps(d))["matmul"][0]["precision"] == "fp32"


@pytest.mark.parametrize("framework, device, message", [("mxnet", "cpu", "no peak measurement"),
                                                        ("numpy", "tpu", "unknown device"),
                                                        ("numpy", "cuda", "CPU only")])
def test_bad_requests_are_user_errors(framework, device, message):
    with pytest.raises(UserError, match=message):
        measure(framework, 1, device, **TINY)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "tensorflow", "jax"])
def test_each_framework_in_a_fresh_process(framework):
    pytest.importorskip(framework)
    code = ("import json; from isobench.backends.peak import peak; "
            f"print(json.dumps(peak({framework!r}, 1, sizes=(32, 64), repeats=2, min_time=0.002, copy_mib=1), "
            "default=str))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["framework"] == framework and d["version"] and d["threads"] == 1 and d["settings"]
    assert [m["precision"] for m in d["matmul"]] == ["fp32", "bf16"]
    assert d["matmul"][0]["gflops"] > 0 and d["copy_gbps"] > 0


def test_a_stale_or_loaded_stored_peak_is_flagged():
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    from isobench.results import PeakRecord
    from isobench.runner.peak import peak_warning

    now = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    fresh = PeakRecord("torch", measured_at=(now - timedelta(hours=2)).isoformat(), load_average_1m=1.2)
    assert peak_warning(fresh, now, load_now=1.0) is None
    assert peak_warning(replace(fresh, load_average_1m=None), now, 0.1) is None  # stored before the load was recorded
    old = peak_warning(replace(fresh, measured_at=(now - timedelta(days=3)).isoformat()), now, 1.0)
    assert "measured 3.0 days ago" in old and "isobench peak --force" in old
    busy = peak_warning(replace(fresh, load_average_1m=5.6), now, 1.2)
    assert "load average of 5.6 (now 1.20)" in busy and "inflates % of peak" in busy


EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
cpu MHz\t\t: 2596.122
siblings\t: 2
cpu cores\t: 2
flags\t\t: fpu sse2 ht fma avx2 hypervisor avx512f avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
"""
EPYC_FLAGS = "fpu sse2 ht fma avx2 hypervisor avx512f avx512_bf16 avx512_vnni"


def cpuinfo(vendor="GenuineIntel", family=6, model=63, mhz=2300.0, flags="fma avx2"):
    """EPYC's text with another vendor, family, model, clock and flags."""
    text = EPYC.replace("AuthenticAMD", vendor).replace("26", str(family)).replace("2596.122", str(mhz))
    return text.replace("model\t\t: 2", f"model\t\t: {model}").replace(EPYC_FLAGS, flags)


def test_nominal_peak_of_this_zen5_vm():
    n = nominal_peak(EPYC, 2)
    assert n.gflops == {"fp32": pytest.approx(2 * 2.596122 * 64), "bf16": pytest.approx(2 * 2 * 2.596122 * 64)}
    assert n.derivation.startswith("2 CPUs x 2.6 GHz x 64 FLOP/cycle (AMD Zen 5 (family 26, model 0x2): 2 x 512-bit")
    assert any("SMT siblings" in c for c in n.caveats) and any("boost" in c for c in n.caveats)
    assert n.reason is None and n.cpu == "AMD EPYC" and n.to_dict()["caveats"] == list(n.caveats)


@pytest.mark.parametrize("text, cpus, fp32, bf16", [
    (cpuinfo(), 4, 4 * 2.3 * 32, None),                                            # Intel Haswell+: AVX2 + FMA
    (cpuinfo(model=0x8F, flags="fma avx2 avx512f avx512_bf16 amx_bf16"), 1, 2.3 * 64, None),  # Sapphire Rapids
    (cpuinfo("AuthenticAMD", 23, 0x31), 2, 2 * 2.3 * 32, None),                    # Zen 2
    (cpuinfo("AuthenticAMD", 23, 0x01), 1, 2.3 * 16, None),                        # Zen 1: 128-bit FMA pipes
    (cpuinfo("AuthenticAMD", 25, 0x11, flags="fma avx2 avx512f avx512_bf16"), 1, 2.3 * 32, 2.3 * 64),  # Zen 4
    (cpuinfo("AuthenticAMD", 26, 0x24, flags="fma avx2 avx512f"), 1, 2.3 * 32, None),  # Zen 5 mobile: 256-bit
])
def test_nominal_peak_from_family_model_and_flags(text, cpus, fp32, bf16):
    n = nominal_peak(text, cpus)
    assert n.gflops.get("fp32") == pytest.approx(fp32) and n.gflops.get("bf16") == (bf16 and pytest.approx(bf16))


@pytest.mark.parametrize("text, device, why", [
    (cpuinfo(model=85, flags="fma avx2 avx512f"), "cpu", "1 or 2 512-bit FMA units per core"),  # Skylake-SP
    (cpuinfo(model=0x97, flags="fma avx2 hybrid_cpu"), "cpu", "hybrid Intel part"),
    (cpuinfo(flags="sse2"), "cpu", "without AVX2 + FMA"),
    ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n", "cpu",
     "no x86 family, model and clock"),
    (EPYC, "cuda", "a GPU's nominal peak"),
])
def test_a_nominal_peak_not_derivable_says_why(text, device, why):
    n = nominal_peak(text, 2, device)
    assert n.gflops == {} and why in n.reason
