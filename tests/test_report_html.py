"""HTML and Markdown reports: escaping, every plot present, parity and failures shown, relative links,
deterministic output; and the HTML rendered in headless Chromium (screenshot in test-artifacts/report.png)."""
import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from isobench.backends import colour
from isobench.report import render_verdict
from isobench.report.html import render_html, write_html
from isobench.report.markdown import describe_workload, write_markdown
from isobench.report.plots import epoch_ends, epoch_times, phase_medians, render_plots
from isobench.report.words import NOT_CHECKED
from isobench.results import FAILED, OK, Metrics, ParityResult, ResultSet, RunRecord, RunSpec, WorkerSettings
from isobench.stats import summarize

from test_golden import html_claims  # the text of every verdict item and table cell, one line each

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
EVIL = "<script>alert(1)</script>"
N_PLOTS = 8  # training time, step time, compile cost, accuracy, memory, loss per epoch, loss against time, phases
SECTIONS = ("verdict", "manifest", "results", "plots", "environment", "failures")
FRAMEWORKS = {  # framework: (mode, train s, steady step s, compile s, import s, training peak MiB, settings)
    "torch": ("eager", 0.30, 0.0006, 0.003, 1.9, 300,
              {"version": "2.13.0+cpu", "intra_op_threads": 2, "inter_op_threads": 2, "mkldnn_enabled": True,
               "float32_matmul_precision": "highest", "deterministic_algorithms": False}),
    "tensorflow": ("graph", 0.74, 0.0009, 0.39, 4.9, 680,
                   {"version": "2.21.0", "intra_op_threads": 2, "inter_op_threads": 2, "onednn_enabled": False,
                    "tensor_float_32": True, "XLA_FLAGS": None, "op_determinism": False}),
    "jax": ("jit", 0.75, 0.0002, 0.63, 0.6, 270,
            {"version": "0.10.2", "jaxlib_version": "0.10.2", "threads_note": "JAX has no thread setting",
             "default_matmul_precision": None, "XLA_FLAGS": "--xla_cpu_use_thunk_runtime=false"}),
}
FACTORS = (1.0, 1.03, 0.98, 1.01)  # per repeat
EPOCHS, STEPS = 4, 6                # steps per epoch


def record(workload, framework, repeat, factor, order):
    mode, train, step, comp, imp, mib, settings = FRAMEWORKS[framework]
    steps = [step * factor + comp] + [step * factor] * (EPOCHS * STEPS - 1)
    m = Metrics(import_s=imp * factor, build_s=0.1 * factor, first_step_s=steps[0], compile_s=comp * factor,
                step_time_median_s=step * factor, step_time_p10_s=step * 0.9, step_time_p90_s=step * 1.1,
                train_time_s=train * factor, eval_s=0.05 * factor, throughput_samples_s=1000 / (train * factor),
                test_accuracy=0.877, test_loss=0.9, epoch_losses=[2.2 - 0.3 * e for e in range(EPOCHS)],
                rss_after_import_bytes=int(mib * 0.7) << 20, train_peak_rss_bytes=int(mib * factor) << 20,
                process_peak_rss_bytes=int(mib * 1.01 * factor) << 20, device_peak_bytes=None,
                steps=EPOCHS * STEPS, samples=EPOCHS * STEPS * 32, step_times_s=steps)
    env = {"threads": {"threads": 2, "affinity": [0, 1], "env": {"OMP_NUM_THREADS": "2"}}, "framework": settings}
    return RunRecord(RunSpec(workload, framework, mode, repeat, threads=2), OK, order=order, wall_s=3.0, exit_code=0,
                     metrics=m, environment=WorkerSettings.from_dict(env))


def results(workload="seed-mlp", failed=True):
    """3 frameworks x 4 ok repeats (+ one failed TensorFlow run), in interleaved order."""
    runs = [record(workload, fw, i, f, order=4 * i + j)
            for i, f in enumerate(FACTORS) for j, fw in enumerate(FRAMEWORKS)]
    if failed:
        runs.append(RunRecord(RunSpec(workload, "tensorflow", "graph", 4, threads=2), FAILED, order=len(runs),
                              wall_s=1.0, exit_code=1, error="RuntimeError: <b>out of memory</b> & more",
                              stderr_tail="Traceback (most recent call last):\n  <frame>\nRuntimeError: boom"))
    return ResultSet(config={"workloads": [workload], "frameworks": list(FRAMEWORKS), "repeats": 4, "threads": 2,
                             "seed": 0, "note": "<i>config</i>"},
                     environment={"cpu_model": "Test CPU <x86>", "logical_cores": 2, "affinity": [0, 1],
                                  "memory_total_bytes": 8 << 30, "python": "3.11.7",
                                  "packages": {"torch": "2.13.0+cpu"}, "env": {"XLA_FLAGS": "<flag>"}},
                     runs=runs, isobench_version="0.1.0", created_at="2026-11-27T10:00:00+00:00")


PARITY = {"seed-mlp": {"workload": "seed-mlp", "passed": True, "reference_accuracy": 0.877,
                       "frameworks": [{"framework": "torch", "mode": "eager", "status": "ok", "error": None,
                                       "passed": True, "checks": [{"name": "initial logits", "max_abs_diff": 2.32e-07,
                                                                   "tolerance": 1e-05, "passed": True}]}],
                       "cross": [{"name": "epoch mean loss between frameworks", "max_abs_diff": 4.77e-08,
                                  "tolerance": 1e-04, "passed": True}]}}


@pytest.fixture(scope="module")
def page():
    return render_html(results())


@pytest.fixture(scope="module")
def evil_page():
    return render_html(results(EVIL))


@pytest.fixture
def no_plots(monkeypatch):
    """For tests about text only: skip drawing the figures (about 2 s per report)."""
    monkeypatch.setattr("isobench.report.html.render_plots", lambda summary, runs, efficiency=None: [])
    monkeypatch.setattr("isobench.report.markdown.render_plots", lambda summary, runs, efficiency=None: [])


def test_user_strings_are_escaped(evil_page):
    text = evil_page
    assert EVIL not in text and "<script" not in text.lower()
    assert html_escaped(EVIL) in text
    for raw in ("<b>out of memory</b>", "<frame>", "<i>config</i>", "Test CPU <x86>", "<flag>"):
        assert raw not in text and html_escaped(raw) in text


def html_escaped(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_every_plot_is_inline(page):
    images = re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == page.count("<img") == N_PLOTS
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "<figcaption>" in page and "min-max of the per-process values" in page


def test_self_contained(page):
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)
    assert "<script" not in page and "@import" not in page and "<style>" in page


def test_sections_verdict_and_table(page):
    for section in SECTIONS:
        assert f"<section id={section}>" in page
    (summary,) = summarize(results().runs)
    for line in render_verdict(summary):
        assert html_escaped(line) in page
    assert "PyTorch (eager) trained 2.47x faster than TensorFlow (graph)" in page
    assert "2.13.0+cpu" in page and "--xla_cpu_use_thunk_runtime=false" in page
    # the manifest from the typed settings of stored (schema 6) dicts: TensorFlow's tensor_float_32 is its TF32
    assert "<tr><th>TF32</th><td>n/a</td><td>on</td><td>n/a</td></tr>" in page
    assert "<tr><th>matmul precision</th><td>highest</td><td>n/a</td><td>n/a</td></tr>" in page
    assert "n=4, 1 failed" in page


def test_parity_absent_and_present(page, no_plots):
    assert NOT_CHECKED in page
    r = results()
    r.parity = ParityResult.from_dicts(PARITY)
    text = render_html(r)
    assert NOT_CHECKED not in text and "parity: PASSED" in text
    assert "initial logits" in text and "2.32e-07" in text and "epoch mean loss between frameworks" in text
    r.parity = ParityResult.from_dicts({"seed-mlp": {**PARITY["seed-mlp"], "cross": [
        {**PARITY["seed-mlp"]["cross"][0], "max_abs_diff": 1.0}]}})
    assert "parity: FAILED" in render_html(r)


def test_failures_listed(page, no_plots):
    failures = page[page.index("<section id=failures>"):]
    assert "1 failed run," in failures and "TensorFlow (graph)" in failures and "failed" in failures
    assert html_escaped("RuntimeError: <b>out of memory</b> & more") in failures and "stderr tail" in failures
    assert "No failed runs." in render_html(results(failed=False))


def test_html_deterministic(page, tmp_path):
    write_html(results(), tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == page


def test_markdown_article_and_plots(tmp_path):
    r = results()
    written = write_markdown(r, tmp_path / "report.md")
    md = written[0].read_text(encoding="utf-8")
    assert written[0] == tmp_path / "report.md" and len(written) == 1 + N_PLOTS
    assert all(p.exists() and p.parent == tmp_path / "report_plots" for p in written[1:])
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(f"report_plots/{p.name}" for p in written[1:])
    assert str(tmp_path) not in md
    for heading in ("# PyTorch vs TensorFlow vs JAX on this machine", "## Setup", "## Method", "## Results",
                    "## Conclusion", "## Limitations", "docs/measurement.md"):
        assert heading in md
    conclusion = md[md.index("## Conclusion"):md.index("## Limitations")]
    (summary,) = summarize(r.runs)
    assert [ln[2:] for ln in conclusion.splitlines() if ln.startswith("- ")] == render_verdict(summary)
    assert "MLP 64-128-64-10" in md and "parity was not checked" in md and "1 of 13 runs failed" in md


def test_markdown_escapes_and_unknown_workload(tmp_path, no_plots):
    md = write_markdown(results(EVIL), tmp_path / "x.md")[0].read_text(encoding="utf-8")
    assert EVIL not in md and "<script" not in md
    assert describe_workload(EVIL) == "not a built-in workload; no description recorded"
    assert describe_workload("seed-mlp").startswith("MLP 64-128-64-10")


def test_plot_arithmetic():
    assert epoch_ends([1.0] * 6, 3).tolist() == [2.0, 4.0, 6.0]
    assert epoch_ends([], 3).size == 0
    (summary,) = summarize(results().runs)
    phases = {g.framework: p for g, p in phase_medians(summary).items()}
    assert phases["jax"]["compile"] == pytest.approx(0.63 * 1.005)  # median of the 4 factors
    assert phases["jax"]["train"] == pytest.approx(0.75 * 1.005 - 0.63 * 1.005)
    assert len({colour(f) for f in FRAMEWORKS}) == len(FRAMEWORKS)  # one colour each, from the registry


def test_loss_against_time_prefers_recorded_epoch_times():
    m = record("seed-mlp", "jax", 0, 1.0, 0).metrics
    x, source = epoch_times(m)
    assert source == "steps" and x[0] == pytest.approx(0.63 + STEPS * 0.0002) and x.size == EPOCHS
    m.epoch_train_s = [0.7, 0.8, 0.9, 1.0]  # kept by workers that record per-epoch training time
    assert epoch_times(m)[1] == "recorded" and epoch_times(m)[0].tolist() == [0.7, 0.8, 0.9, 1.0]


def test_language_model_plots_test_loss():
    r = results(failed=False)
    for run in r.runs:
        run.metrics.metric = "loss"  # the workload's test metric (language models)
    (summary,) = summarize(r.runs)
    names = [p.name for p in render_plots(summary, r.runs)]
    assert "test-loss" in names and "accuracy" not in names and len(names) == N_PLOTS


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium package)")
def test_html_in_headless_chromium(evil_page, tmp_path):
    report = tmp_path / "report.html"
    report.write_text(evil_page, encoding="utf-8")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "report.png"
    shot.unlink(missing_ok=True)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0"]

    def chromium(*args, profile):
        return subprocess.run(flags + [f"--user-data-dir={tmp_path / profile}", *args, report.as_uri()],
                              capture_output=True, text=True, timeout=180)

    dom = chromium("--dump-dom", profile="dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [ln for ln in dom.stderr.splitlines()
               if "Uncaught" in ln or "ERROR:CONSOLE" in ln or "Failed to load resource" in ln]
    assert not console, console
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom.stdout
    assert dom.stdout.count("<img") == N_PLOTS and "<script" not in dom.stdout
    assert EVIL not in dom.stdout and "<script>alert" not in dom.stdout

    run = chromium(f"--screenshot={shot}", "--window-size=1280,4000", profile="shot")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from PIL import Image  # a matplotlib dependency
    pixels = Image.open(shot).convert("RGB")
    assert pixels.size == (1280, 4000)
    counts = {c: 0 for c in ("torch", "tensorflow", "jax")}
    wanted = {tuple(int(colour(f)[i:i + 2], 16) for i in (1, 3, 5)): f for f in counts}
    for n, rgb in pixels.getcolors(1280 * 4000):
        for target, fw in wanted.items():
            if max(abs(a - b) for a, b in zip(rgb, target)) <= 24:
                counts[fw] += n
    assert all(n > 5000 for n in counts.values()), counts  # the bars drawn: far more than the table swatches


def deploy_results() -> ResultSet:
    """A deploy session from known data (tests/test_deploy.py's), with torch, tensorflow and jax paths and a name
    that must be escaped."""
    from test_deploy import export, serving
    recs = []
    for fw, ms in (("torch", 1.0), ("tensorflow", 1.5), ("jax", 2.0)):
        recs.append(export(f"{fw}/onnx"))
        recs[-1].environment.exported = {"details": {"exporter": f"{fw}2onnx 1.0", "onnx": "1.23.2"}}
        recs += [serving(f"{fw}/onnx", "none", b, r, ms * (1 + 0.01 * r)) for r in range(4) for b in (1, 8)]
    for r in recs:
        r.environment.runtime, r.environment.runtime_version = "onnxruntime", "1.32.0"
    recs.append(export("jax/litert", "int8", FAILED, EVIL))
    return ResultSet(config={"command": "deploy", "workloads": ["seed-mlp"], "batch_sizes": [1, 8]},
                     environment={"cpu_model": "test", "packages": {"onnxscript": "0.5.6"}}, deploys=recs,
                     created_at="2026-12-03T10:00:00",
                     weights={"seed-mlp": {"trained_by": "numpy", "fingerprint": "abc"}})


def test_deploy_html_and_markdown(tmp_path):
    html = render_html(deploy_results())
    assert "<section id=deployment>" in html and html.count("<img") == 2 and EVIL not in html
    claims = html_claims(html)
    assert "deployment td: 1.02 ms ±1.5%" in claims and "deployment th: p50" in claims  # typed cells, unit per column
    assert ("deployment li: Fastest at batch 1: torch/onnx @1 ran 1.50x faster than tensorflow/onnx @1 (95% CI "
            "1.47-1.53, p=0.029)") in claims  # the summary verdict, then every comparison
    assert "deployment li: torch/onnx @8 ran 2.00x faster than jax/onnx @8 (95% CI" in claims
    assert "<section id=manifest>" in html and "<td>torch/onnx</td><td>onnxruntime 1.32.0</td><td>torch2onnx 1.0</td>" \
        "<td>onnx 1.23.2</td>" in html and "onnxscript 0.5.6" in html
    written = write_markdown(deploy_results(), tmp_path / "a.md")
    text = written[0].read_text()
    assert "## Deployment" in text and "| torch/onnx | fp32 | 1 | 4 | 1.65 s ±9.0% | 1.02 ms ±1.5% |" in text
    assert "| torch/onnx | onnxruntime 1.32.0 | torch2onnx 1.0 | onnx 1.23.2 |" in text
    assert "- Fastest at batch 1: torch/onnx @1 ran 1.50x faster than tensorflow/onnx @1 (95% CI" in text
    assert sorted(p.name for p in written[1:]) == ["seed-mlp-deploy-latency.png", "seed-mlp-deploy-size.png"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium package)")
def test_deploy_html_in_headless_chromium(tmp_path):
    report = tmp_path / "deploy.html"
    write_html(deploy_results(), report)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
    dom = subprocess.run(flags + [f"--user-data-dir={tmp_path / 'dom'}", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<section id="deployment">' in dom.stdout and dom.stdout.count("<img") == 2
    assert EVIL not in dom.stdout and "<script" not in dom.stdout
    shot = tmp_path / "deploy.png"
    run = subprocess.run(flags + [f"--user-data-dir={tmp_path / 'shot'}", f"--screenshot={shot}",
                                  "--window-size=1280,3000", report.as_uri()], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from PIL import Image
    pixels = Image.open(shot).convert("RGB")
    wanted = {tuple(int(colour(f)[i:i + 2], 16) for i in (1, 3, 5)): f for f in ("torch", "tensorflow", "jax")}
    counts = dict.fromkeys(wanted.values(), 0)
    for n, rgb in pixels.getcolors(1280 * 3000):
        for target, fw in wanted.items():
            if max(abs(a - b) for a, b in zip(rgb, target)) <= 40:
                counts[fw] += n
    assert all(n > 200 for n in counts.values()), counts  # boxes and points of every framework drawn
