"""Issue 14 in the product: counted FLOPs and energy in every run, the machine's peak stored and reused, % of peak
in the table, the roofline plot, ``isobench list --flops`` and ``isobench peak``, schema 2 -> 3. Timings never
decide a test: the arithmetic is checked on records with known values."""
import base64
import io
import json
import re
import shutil
import sqlite3
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from isobench.backends import colour
from isobench.cli import main
from isobench.data import load_dataset
from isobench.report.html import render_html
from isobench.report.markdown import render_markdown
from isobench.report.plots import render_plots
from isobench.report import model
from isobench.report.sessions import render_results
from isobench.measure.nominal import nominal_peak
from isobench.results import OK, Metrics, PeakRecord, ResultSet, RunRecord, RunSpec
from isobench.runner import RunConfig, run_benchmark
from isobench.runner import peak as runner_peak
from isobench.stats import summarize
from isobench.store import Store
from isobench.store.db import SCHEMA_VERSION as DB_SCHEMA_VERSION, _v2
from isobench.workloads import get_workload
from isobench.workloads.flops import count_flops

import test_peak

DATA = Path(__file__).parent / "data"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def _peak(framework="torch", gflops=10.0, copy=5.0, when=T0, threads=2, version="1.0", **more) -> PeakRecord:
    return PeakRecord.from_dict({
        "host": "h", "cpu_model": "cpu", "framework": framework, "version": version, "device": "cpu",
        "threads": threads, "measured_at": when.isoformat(timespec="seconds"), "copy_gbps": copy,
        "matmul": [{"precision": "fp32", "gflops": gflops}, {"precision": "bf16", "gflops": None, "error": "no bf16"}],
        **more})


def _metrics(step_s: float, **counted) -> Metrics:
    base = dict(import_s=1, build_s=1, first_step_s=1, compile_s=0.5, step_time_median_s=step_s, step_time_p10_s=step_s,
                step_time_p90_s=step_s, train_time_s=1, eval_s=0.1, throughput_samples_s=100, test_accuracy=0.9,
                test_loss=0.3, epoch_losses=[0.5], rss_after_import_bytes=1, train_peak_rss_bytes=1,
                process_peak_rss_bytes=1, device_peak_bytes=None, steps=10, samples=100)
    return Metrics(**base, **counted)


def _known_session(peaks: dict) -> ResultSet:
    """torch at 0.5 s and jax at 0.25 s per step of 2 GFLOP (1 GFLOP matmul, 0.5 GB modelled), 4 repeats each."""
    counted = dict(counted_flops_per_step=2 * 10**9, counted_matmul_flops_per_step=10**9,
                   modelled_bytes_per_step=5 * 10**8, energy_reason="no RAPL package zone under /fake")
    runs = [RunRecord(RunSpec("seed-mlp", fw, mode, i, 2), OK, order=i, metrics=_metrics(step, **counted))
            for i in range(4) for fw, mode, step in (("torch", "eager", 0.5), ("jax", "jit", 0.25))]
    return ResultSet(config={}, environment={}, runs=runs, peaks=peaks)


def test_achieved_flops_and_percent_of_peak_against_one_machine_peak_from_known_records():
    m = _metrics(0.5, counted_flops_per_step=2 * 10**9, counted_matmul_flops_per_step=10**9,
                 modelled_bytes_per_step=5 * 10**8)
    assert (m.achieved_flops_s, m.achieved_matmul_flops_s, m.intensity) == (4e9, 2e9, 4.0)
    assert _metrics(0.5).achieved_flops_s is None  # a record from before schema 3: not recorded
    rs = _known_session({"torch": _peak("torch", 10.0), "jax": _peak("jax", 40.0)})
    assert {rs.peak_flops_s(r.spec) for r in rs.runs} == {40e9}  # one denominator: the best framework's rate
    [s] = summarize(rs.runs, n_boot=200, peak=rs.peak_flops_s)
    frac = s.metrics["peak_fraction"]
    assert {g.framework: st.median for g, st in frac.stats.items()} == {"torch": 2e9 / 40e9, "jax": 4e9 / 40e9}
    assert {g.framework: st.median for g, st in s.metrics["achieved_flops_s"].stats.items()} == \
        {"torch": 4e9, "jax": 8e9}
    text = render_results(rs)
    assert "achieved FLOP/s" in text and "4.00 GFLOP/s" in text and "8.00 GFLOP/s" in text
    [row] = [ln for ln in text.splitlines() if ln.startswith("% of peak (MFU) ")]
    assert "5.00%" in row and "10.0%" in row  # 2x the work shows as 2x, whatever each framework's own peak
    note = " ".join(text.split())
    assert "the machine peak, the best matmul rate any framework reached on this cpu (fp32 40.0 GFLOP/s by JAX)" in note
    assert "PyTorch fp32 10.0 GFLOP/s (25.0%, low) (2026-12-01 12:00 UTC; fp32 below 70% of the machine peak)" in note
    assert "JAX fp32 40.0 GFLOP/s (100%) (2026-12-01 12:00 UTC)" in note
    assert "2.00 GFLOP, 1.00 GFLOP of it matmul" in text and "4.00 FLOP/B" in text
    assert "Energy: not measured (no RAPL package zone under /fake); never estimated." in text
    assert "energy per sample" not in text  # no value in any column: no row
    assert "Nominal peak" not in text  # records stored before the nominal peak: nothing said


def test_the_report_shows_the_nominal_peak_and_a_contended_or_twice_measured_peak():
    nominal = nominal_peak(test_peak.EPYC, 2).to_dict()
    torch = _peak("torch", 100.0, nominal=nominal, measured_again={"measured_at": "x", "gflops": {}},
                  contended=True, contention=[{"contended": True, "fraction": 0.31}, None])
    note = " ".join(render_results(_known_session({"torch": torch, "jax": _peak("jax", 120.0)})).split())
    assert "(fp32 120 GFLOP/s by JAX)" in note and "A contended machine peak" not in note
    flagged = " ".join(render_results(_known_session({"torch": torch, "jax": _peak("jax", 120.0, contended=True)}))
                       .split())
    assert "(fp32 120 GFLOP/s by JAX (contended))" in flagged and "A contended machine peak is lower than" in flagged
    assert "PyTorch fp32 100 GFLOP/s (83.3%) (2026-12-01 12:00 UTC; measured twice (below 70% once); contended: " \
           "other processes took 31% of its CPUs)" in note
    assert "Nominal peak (AMD EPYC, from /proc/cpuinfo): fp32 332 GFLOP/s, bf16 665 GFLOP/s = 2 CPUs x 2.6 GHz x 64 " \
           "FLOP/cycle (AMD Zen 5" in note and "caveats: clock:" in note
    missing = _peak("jax", nominal=nominal_peak("", 2).to_dict())
    assert "Nominal peak: not derivable (/proc/cpuinfo gives no x86 family" in \
        " ".join(render_results(_known_session({"jax": missing})).split())


def test_percent_of_peak_not_measured_without_peaks():
    text = render_results(_known_session({}))
    [row] = [ln for ln in text.splitlines() if ln.startswith("% of peak (MFU)")]
    assert "achieved FLOP/s" in text and row.split()[4:] == ["not", "measured", "not", "measured"]
    assert "% of peak: not measured in this session" in text


def test_peak_lookup_by_framework_precision_and_device():
    rs = _known_session({"torch": _peak("torch", 10.0), "numpy": _peak("numpy", 30.0)})
    assert rs.peak_gflops("torch") == rs.peak_gflops("keras-torch") == 10.0  # Keras: its backend's peak
    assert rs.peak_gflops("torch", "bf16") is None and rs.peak_gflops("torch", device="cuda") is None
    assert rs.peak_gflops("jax") is None
    assert rs.machine_peak_gflops() == 30.0 and rs.machine_peak_gflops("bf16") is None  # numpy's BLAS counts
    assert rs.peak_flops_s(RunSpec("seed-mlp", "jax", "jit", 0, 2)) == 30e9  # jax has no peak of its own: still one
    assert rs.peak_flops_s(RunSpec("seed-mlp", "numpy", "reference", 0, 2)) is None  # float64: no float64 peak
    assert ResultSet.from_dict(json.loads(json.dumps(rs.to_dict()))).peaks == rs.peaks


def test_peak_store_round_trip_and_the_reuse_rule(tmp_path):
    with Store(tmp_path / "p.db", create=True) as store:
        store.add_peak(_peak(gflops=10.0))
        store.add_peak(_peak(gflops=12.0, when=T0 + timedelta(days=1)))
        key = {k: getattr(_peak(), k) for k in ("host", "cpu_model", "framework", "version", "device", "threads")}
        assert store.recent_peak(key, now=T0 + timedelta(days=7)).rate() == 12.0  # the newest
        assert store.recent_peak(key, now=T0 + timedelta(days=8)) is None  # 7 days old: measured again
        assert store.recent_peak({**key, "threads": 1}, now=T0) is None
        assert store.recent_peak({**key, "version": "2.0"}, now=T0) is None  # another framework version
        store.add_peak(_peak(gflops=50.0, when=T0 + timedelta(days=2), contended=True))
        assert store.recent_peak(key, now=T0 + timedelta(days=2)).rate() == 12.0  # not the contended
        rs = _known_session({"torch": _peak()})
        sid = store.save(rs)
        assert store.load(sid).peaks == rs.peaks
        store.set_peaks(sid, {})
        assert store.load(sid).peaks == {}


class _FakeStore:
    def __init__(self, stored=None):
        self.stored, self.added = stored, []

    def recent_peak(self, key):
        return self.stored

    def add_peak(self, peak):
        self.added.append(peak)


def test_session_peaks_reuses_a_recent_one_unless_forced(monkeypatch):
    measured = []
    monkeypatch.setattr(runner_peak, "measure_peak", lambda fw, *a, **k: measured.append(fw) or _peak(fw, 99.0))
    store = _FakeStore(_peak("numpy", 10.0))
    out = runner_peak.session_peaks(["numpy"], 2, store=store, host={"hostname": "h", "cpu_model": "cpu"})
    assert out["numpy"].reused and out["numpy"].rate() == 10.0 and not measured
    warning = {"warning": out["numpy"].warning} if out["numpy"].warning else {}  # an old one (T0 is a fixed date)
    assert out["numpy"].to_dict() == {**store.stored.to_dict(), "reused": True, **warning}  # as stored, then reused
    out = runner_peak.session_peaks(["numpy"], 2, store=store, force=True, host={})
    assert measured == ["numpy"] and store.added == [out["numpy"]] and "reused" not in out["numpy"].to_dict()
    assert runner_peak.peak_frameworks(["keras-jax", "jax", "numpy", "torch"]) == ["numpy", "jax", "torch"]
    assert runner_peak.peak_frameworks(["numpy"]) == [] and runner_peak.peak_frameworks(["jax"], "cuda") == ["jax"]


def test_a_framework_below_70_percent_of_the_best_is_measured_again_and_flagged_if_it_stays_low(monkeypatch):
    rates = {"numpy": [50.0], "torch": [100.0], "tensorflow": [40.0, 60.0], "jax": [50.0, 80.0]}  # numpy low too
    calls = []

    def fake(fw, *a, **k):
        calls.append(fw)
        return _peak(fw, rates[fw].pop(0))
    monkeypatch.setattr(runner_peak, "measure_peak", fake)
    store = _FakeStore()
    started = []
    out = runner_peak.session_peaks(["numpy", "torch", "tensorflow", "jax"], 2, store=store, host={},
                                    on_start=lambda fw, again: started.append((fw, again)))
    assert calls == ["numpy", "torch", "tensorflow", "jax", "tensorflow", "jax"]  # the low ones, once (not numpy)
    assert started[-2:] == [("tensorflow", True), ("jax", True)]
    assert [out[f].rate() for f in ("tensorflow", "jax")] == [60.0, 80.0]  # the better measurement kept
    assert out["tensorflow"].measured_again["gflops"] == {"fp32": 40.0, "bf16": None}
    assert [p.framework for p in store.added[-2:]] == ["tensorflow", "jax"]  # kept with the second measurement
    figures = model.peak_figures(out.values())
    assert {p.framework: p.low for p in figures.frameworks} == {"numpy": ("fp32",), "torch": (),
                                                               "tensorflow": ("fp32",), "jax": ()}  # 60% stays low
    assert runner_peak.low_frameworks(out, ["fp32"], "cpu") == ["numpy", "tensorflow"]
    calls.clear()
    again = runner_peak.session_peaks(["tensorflow"], 2, store=_FakeStore(out["tensorflow"]), host={})
    assert not calls and again["tensorflow"].reused  # measured twice already: not a third time


def test_isobench_run_prints_the_peaks_it_took_with_their_efficiency(capsys):
    from isobench.cli_run import RunDisplay

    RunDisplay().peaks_done({"numpy": _peak("numpy", 50.0), "jax": _peak("jax", 100.0, reused=True, warning="old")})
    err = capsys.readouterr().err
    assert "Peak NumPy: fp32 matmul 50.0 GFLOP/s (50.0%, low), copy 5.00 GB/s " \
           "(2026-12-01 12:00 UTC; fp32 below 70% of the machine peak)" in err
    assert "Peak JAX: fp32 matmul 100 GFLOP/s (100%)" in err and "stored" in err and "note: old" in err
    assert "Machine peak (the best matmul rate any framework reached; % of peak divides by it): fp32 100 GFLOP/s by " \
           "JAX." in err


def test_peak_command_stores_then_reuses(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner_peak, "measure_peak",
                        lambda fw, threads, device, **k: _peak(
                            fw, 91.8, 13.9, threads=threads, version=runner_peak.peak_key(fw, threads, device)["version"],
                            host=(k["host"] or {}).get("hostname"), cpu_model=(k["host"] or {}).get("cpu_model")))
    db = str(tmp_path / "p.db")
    assert main(["peak", "--frameworks", "numpy", "--threads", "1", "--db", db]) == 0
    first = capsys.readouterr().out
    assert "91.8 GFLOP/s (100%)" in first and "13.9 GB/s" in first and "(stored)" not in first
    assert "Machine peak (the best matmul rate any framework reached; % of peak divides by it): fp32 91.8 GFLOP/s " \
           "by NumPy." in first
    assert main(["peak", "--frameworks", "numpy", "--threads", "1", "--db", db]) == 0
    assert "(stored)" in capsys.readouterr().out
    assert main(["peak", "--frameworks", "keras-torch", "--db", db]) == 2


def test_list_flops_prints_every_built_in_workload(capsys):
    assert main(["list", "--flops"]) == 0
    out = capsys.readouterr().out
    w = get_workload("seed-mlp")
    data = load_dataset(w)
    c = count_flops(w, len(data.x_train), len(data.x_test))
    assert "FLOPs/step" in out and "FLOP/B" in out and f"{c.params:,}" in out
    for name in ("seed-mlp", "lenet5", "resnet-mini", "lstm-digits", "vit-digits", "gpt-tiny"):
        assert any(line.startswith(name + " ") for line in out.splitlines())


def test_roofline_plot_in_the_report():
    rs = _known_session({"torch": _peak("torch", 10.0), "jax": _peak("jax", 40.0)})
    report = model.build(rs)
    [section] = report.sections
    names = [p.name for p in render_plots(section.summary, rs.runs, section.efficiency)]
    assert names[-1] == "roofline"
    html = render_html(rs)
    assert "alt='seed-mlp: roofline'" in html and "FLOP/B" in html  # the plot and the modelled intensity
    for text in (html, render_markdown(rs)):  # the machine peak and each framework's matmul efficiency
        assert "(fp32 40.0 GFLOP/s by JAX): one denominator" in text
        assert "PyTorch fp32 10.0 GFLOP/s (25.0%, low)" in text
    old = replace(rs, runs=[replace(r, metrics=_metrics(0.5)) for r in rs.runs], peaks={})
    assert "roofline" not in [p.name for p in render_plots(model.build(old).sections[0].summary, old.runs,
                                                            model.build(old).sections[0].efficiency)]


def test_a_version_2_database_migrates_to_the_current_version(tmp_path, capsys):
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as c:
        c.executescript((DATA / "v1.sql").read_text())
        _v2(c)
        c.execute("PRAGMA user_version = 2")
    with Store(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == DB_SCHEMA_VERSION
        assert store.load(1).peaks == {}
        assert store.conn.execute("SELECT count(*) FROM peaks").fetchone()[0] == 0
    assert main(["show", "--db", str(path)]) == 0
    assert capsys.readouterr().out == (DATA / "golden" / "show.txt").read_text()


def test_a_run_records_counted_flops_and_energy_with_its_source_or_reason(tmp_path, monkeypatch):
    """Real numpy reference workers: the count is the spec's; a fake powercap tree is read through the worker,
    an empty one gives null joules with the reason."""
    zone = tmp_path / "rapl" / "intel-rapl:0"
    zone.mkdir(parents=True)
    for name, text in (("name", "package-0"), ("energy_uj", "5000"), ("max_energy_range_uj", "262143328850")):
        (zone / name).write_text(text + "\n")
    (tmp_path / "none").mkdir()
    config = RunConfig(workloads=["seed-mlp"], frameworks=["numpy"], repeats=1, threads=1)
    got = {}
    for tree in ("rapl", "none"):
        monkeypatch.setenv("ISOBENCH_POWERCAP", str(tmp_path / tree))
        [run] = run_benchmark(config, parity=False, peaks=False).runs
        assert run.ok
        got[tree] = run.metrics
    w = get_workload("seed-mlp")
    data = load_dataset(w)
    c = count_flops(w, len(data.x_train), len(data.x_test))
    m = got["rapl"]
    assert (m.counted_flops_per_step, m.counted_matmul_flops_per_step, m.modelled_bytes_per_step) == \
        (c.per_step, c.matmul, c.bytes_per_step)
    assert (m.energy_train_j, m.energy_per_sample_j, m.energy_source, m.energy_reason) == \
        (0.0, 0.0, "rapl:package-0", None)  # the fake counter does not advance
    n = got["none"]
    assert n.energy_train_j is None and n.energy_per_sample_j is None and n.energy_source is None
    assert n.energy_reason.startswith("no RAPL package zone under")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_roofline_in_headless_chromium(tmp_path):
    """The report with a roofline loads in headless Chromium without errors and shows the plot; the PNG has both
    frameworks' colours (their points and roofs)."""
    rs = _known_session({"torch": _peak("torch", 10.0), "jax": _peak("jax", 40.0)})
    page = tmp_path / "report.html"
    page.write_text(render_html(rs), encoding="utf-8")
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--enable-logging=stderr", "--v=0",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not [ln for ln in dom.stderr.splitlines() if "Uncaught" in ln or "Failed to load resource" in ln]
    img = re.search(r'<img src="data:image/png;base64,([^"]+)" alt="seed-mlp: roofline">', dom.stdout)
    assert img, "no roofline image in the rendered page"
    from PIL import Image  # a matplotlib dependency
    pixels = Image.open(io.BytesIO(base64.b64decode(img.group(1)))).convert("RGB")
    assert pixels.size == (640, 420)
    colours = {rgb for _, rgb in pixels.getcolors(640 * 420)}
    for fw in ("torch", "jax"):
        want = tuple(int(colour(fw)[i:i + 2], 16) for i in (1, 3, 5))
        assert any(max(abs(a - b) for a, b in zip(rgb, want)) <= 24 for rgb in colours), fw


def test_a_peak_is_measured_in_a_pinned_worker_process():
    """A real worker (numpy, tiny sizes): the record has the key, the date, the rates and the worker's pinning."""
    rec = runner_peak.measure_peak("numpy", 1, options=dict(sizes=(32,), repeats=1, min_time=0.001, copy_mib=1),
                                   host={"hostname": "h", "cpu_model": "cpu"},
                                   now=lambda: T0)
    assert (rec.host, rec.cpu_model, rec.framework, rec.device, rec.threads) == ("h", "cpu", "numpy", "cpu", 1)
    assert rec.measured_at == T0.isoformat(timespec="seconds") and rec.rate() > 0
    assert rec.copy_gbps > 0 and len(rec.extra["pinned"]["affinity"]) == 1
    assert rec.extra["pinned"]["env"]["OMP_NUM_THREADS"] == "1"
    assert rec.extra["trials"] == 2 and [w["cpus"] for w in rec.contention] == [1, 1]  # each trial watched
    assert rec.contended in (True, False) and (rec.nominal["gflops"] or rec.nominal["reason"])
