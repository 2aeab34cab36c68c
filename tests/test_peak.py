"""The peak measurement's arithmetic and structure, on tiny sizes: rates computed exactly from FLOPs and time
(a fake clock), sane and complete records per framework; never a check of how fast this machine is."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from isobench.backends.peak import copy_gbps, matmul_gflops, measure, peak, time_calls
from isobench.errors import UserError

TINY = dict(sizes=(32, 64), repeats=2, min_time=0.002, copy_mib=1)


def test_rates_from_flops_and_time():
    assert matmul_gflops(1000, 3, 0.5) == 2 * 1000 ** 3 * 3 / 0.5 / 1e9 == 12.0
    assert copy_gbps(2 ** 20, 10, 0.001) == 2 * 2 ** 20 * 10 / 0.001 / 1e9


def test_calibration_grows_the_loop_to_min_time():
    done = []  # every call takes exactly 1 ms on this clock

    def fn():
        done.append(1)

    t = time_calls(fn, lambda _: None, repeats=3, min_time=0.01, clock=lambda: len(done) * 1e-3)
    assert t == (pytest.approx(0.012), 12, pytest.approx(0.001))  # 1.2 x 0.01 / 0.001 calls per loop


def test_measured_rate_is_exactly_flops_over_time():
    clock = itertools.count(0.0, 1.0).__next__  # every loop lasts exactly 1 s on this clock
    p = measure("numpy", 1, sizes=(32, 64), repeats=2, min_time=0.5, copy_mib=1, clock=clock)
    (fp32,) = p.matmul
    assert fp32.by_size == {32: 2 * 32 ** 3 / 1e9, 64: 2 * 64 ** 3 / 1e9}
    assert (fp32.gflops, fp32.size, fp32.calls, fp32.seconds) == (2 * 64 ** 3 / 1e9, 64, 1, 1.0)
    assert p.copy_gbps == 2 * 2 ** 20 / 1e9 and p.rate("fp32") == fp32.gflops


def test_numpy_record_is_complete_and_sane():
    p = measure("numpy", 1, **TINY)
    assert (p.framework, p.device, p.threads, p.repeats, p.copy_bytes) == ("numpy", "cpu", 1, 2, 2 ** 20)
    (fp32,) = p.matmul
    assert fp32.precision == "fp32" and fp32.error is None and set(fp32.by_size) == {32, 64}
    assert fp32.gflops == max(fp32.by_size.values()) == matmul_gflops(fp32.size, fp32.calls, fp32.seconds) > 0
    assert p.copy_gbps == copy_gbps(p.copy_bytes, p.copy_calls, p.copy_seconds) > 0
    assert p.version and p.rate("bf16") is None


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
    from datetime import datetime, timedelta, timezone

    from isobench.runner.peak import peak_warning

    now = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    fresh = {"framework": "torch", "measured_at": (now - timedelta(hours=2)).isoformat(), "load_average_1m": 1.2}
    assert peak_warning(fresh, now, load_now=1.0) is None
    assert peak_warning({**fresh, "load_average_1m": None}, now, 0.1) is None  # stored before the load was recorded
    old = peak_warning({**fresh, "measured_at": (now - timedelta(days=3)).isoformat()}, now, 1.0)
    assert "measured 3.0 days ago" in old and "isobench peak --force" in old
    busy = peak_warning({**fresh, "load_average_1m": 5.6}, now, 1.2)
    assert "load average of 5.6 (now 1.20)" in busy and "inflates % of peak" in busy
