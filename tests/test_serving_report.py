"""The serving report from known data: hand-built load records (no LoadGen, no framework) through the statistics,
the report model's claims, the terminal, HTML and Markdown renderers, the server-latency plot, the CSV export and
the comparison of two serving sessions. Timings are never asserted."""
import csv
import io
import shutil
import subprocess

import pytest

from isobench.backends import colour
from isobench.report import fmt, serving, words
from isobench.report.html import render_html, write_html
from isobench.report.markdown import write_markdown
from isobench.report.plots import render_serving_plots
from isobench.report.sessions import describe_session, render_history, render_results
from isobench.results import (CRASHED, FAILED, OK, UNAVAILABLE, DeployMetrics, DeployRecord, DeploySpec, LoadMetrics,
                              LoadRecord, LoadSpec, ResultSet, Trial)
from isobench.stats import compare_sessions, summarize_serving
from isobench.store import Store
from isobench.store.export import columns, write_csv
from test_golden import html_claims

BOUND = 0.01
EARLY = ("Processed at least 64 queries (21687). Would discard 2065 highest latency queries. Early stopping 90.0th "
         "percentile estimate: 20821 Early stopping 99.0th percentile estimate: 45368")
SHORT = ("Processed at least 64 queries (300). Would discard 20 highest latency queries. Early stopping 90.0th "
         "percentile estimate: 20821 Not enough queries processed for 99.0th percentile early stopping estimate "
         "(would need to process at least 662 total queries).")
UNSUCCESSFUL = "Run unsuccessful. Processed 900 queries. Would need to run at least 9000 more queries."
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def load(path: str, scenario: str, repeat: int, figure: float, batching: str = "off", quantize: str = "none",
         valid: bool = True, early: str = EARLY, wrong: int = 0, status: str = OK) -> LoadRecord:
    """A load worker's record: ``figure`` is its max QPS (server), samples/s (offline) or p99 in ms (the others)."""
    trials, m = [], LoadMetrics(answers=10_000, wrong_answers=wrong, max_abs_logit_diff=0.5 if wrong else 1e-7,
                                logit_tolerance=None if quantize == "int8" else 1e-3, accuracy=0.88,
                                peak_rss_bytes=200 * 2**20, valid=valid, early_stopping=early)
    if scenario == "server":
        qps = figure if valid else 100.0
        trials = [Trial(2 * qps, False, "Reduce target QPS to improve latency.", UNSUCCESSFUL, 1.5 * qps, 900, 0.02,
                        0.04, 0.05, 600), Trial(qps, valid, "" if valid else "Reduce target QPS to improve latency.",
                                                "Run successful." if valid else UNSUCCESSFUL, qps, 5000, 2e-4, 1e-3,
                                                4e-3, 0)]
        m.max_qps, m.samples_per_s = (qps if valid else 0.0), qps
        m.latency_p50_s, m.latency_p90_s, m.latency_p99_s = 2e-4, 1e-3, 4e-3
        m.early_stopping = trials[-1].early_stopping
    elif scenario == "offline":
        m.samples_per_s = figure
        trials = [Trial(None, valid, "", "", figure, 1, 1.0, 2.0, 3.0)]
    else:
        m.latency_p50_s, m.latency_p90_s, m.latency_p99_s = 0.4 * figure * 1e-3, 0.6 * figure * 1e-3, figure * 1e-3
        trials = [Trial(None, valid, "", early, None, 20_000, m.latency_p50_s, m.latency_p90_s, m.latency_p99_s)]
    m.trials = trials
    if not valid:
        m.reason = trials[-1].reason or "Too few queries"
    if wrong:
        status = FAILED
    return LoadRecord(LoadSpec("seed-mlp", path, quantize, scenario, batching, repeat, 2), status,
                      metrics=None if status == CRASHED else m,
                      error=("worker killed by signal SIGSEGV" if status == CRASHED else
                             f"{wrong} of 10000 answers under load differ from the float64 reference beyond the "
                             "tolerance 0.001 (largest 0.5)" if wrong else None))


def export(path: str, quantize: str = "none", status: str = OK, error: str | None = None) -> DeployRecord:
    r = DeployRecord(DeploySpec.export("seed-mlp", path, quantize, 2), status, error=error,
                     metrics=DeployMetrics(export_s=0.5, artifact_bytes=70_000) if status == OK else None)
    r.environment.runtime, r.environment.runtime_version = path.split("/")[1], "1.0"
    return r


def known_results() -> ResultSet:
    """torch/onnx sustains 1.8x the QPS of tensorflow/litert under the bound and doubles it with dynamic batching;
    jax/jit has one INVALID server run and gives wrong answers offline; tensorflow/litert's single-stream p99s are
    not backed by early stopping in one run; torch/onnx int8 was never exported."""
    recs = [export("torch/onnx"), export("tensorflow/litert"), export("jax/jit"),
            export("torch/onnx", "int8", UNAVAILABLE, "torch/onnx int8: onnxruntime's quantizer is not installed")]
    for r in range(4):
        recs += [load("torch/onnx", "server", r, 18_000 * (1 + 0.01 * r)),
                 load("torch/onnx", "server", r, 36_000 * (1 + 0.01 * r), "dynamic"),
                 load("tensorflow/litert", "server", r, 10_000 * (1 + 0.01 * r)),
                 load("jax/jit", "server", r, 9_000 * (1 + 0.01 * r), valid=r != 2),
                 load("torch/onnx", "offline", r, 150_000 * (1 + 0.01 * r)),
                 load("tensorflow/litert", "offline", r, 70_000 * (1 + 0.01 * r)),
                 load("jax/jit", "offline", r, 300_000, wrong=3 if r == 1 else 0),
                 load("torch/onnx", "single-stream", r, 0.05 * (1 + 0.01 * r)),
                 load("tensorflow/litert", "single-stream", r, 0.08 * (1 + 0.01 * r), early=SHORT if r == 0 else EARLY)]
    recs.append(load("tensorflow/litert", "server", 4, 0, status=CRASHED))
    for i, r in enumerate(recs):
        r.order = i
        r.environment.runtime = r.environment.runtime or r.spec.path.split("/")[1]
    return ResultSet(config={"command": "deploy", "workloads": ["seed-mlp"], "paths": ["torch/onnx",
                                                                                     "tensorflow/litert", "jax/jit"],
                             "scenarios": ["server", "offline", "single-stream"], "batching": ["off", "dynamic"],
                             "latency_bound_s": BOUND, "repeats": 4, "threads": 2, "duration_s": 0.5},
                     environment={"cpu_model": "test", "packages": {"mlcommons-loadgen": "6.0.17"}},
                     deploys=[r for r in recs if isinstance(r, DeployRecord)],
                     loads=[r for r in recs if isinstance(r, LoadRecord)], session_id=7,
                     weights={"seed-mlp": {"trained_by": "numpy", "fingerprint": "abc123"}},
                     created_at="2026-12-06T10:00:00")


@pytest.fixture(scope="module")
def results() -> ResultSet:
    return known_results()


@pytest.fixture(scope="module")
def text(results) -> dict[str, list[str]]:
    """Every scenario's claims as sentences."""
    return {sc.summary.scenario: [words.sentence(sc.summary, c) for c in sc.claims]
            for sc in serving.sections(results)[0].scenarios}


def test_statistics_count_valid_runs_and_leave_wrong_answers_out(results):
    server, offline, single = summarize_serving(results.loads, results.deploys, results.config["scenarios"], BOUND)
    assert [s.scenario for s in (server, offline, single)] == ["server", "offline", "single-stream"]
    rows = {(s.row.path, s.row.quantize, s.row.batching): s for s in server.rows}
    jax, tf = rows["jax/jit", "none", "off"], rows["tensorflow/litert", "none", "off"]
    assert (jax.ok, jax.valid, len(jax.invalid)) == (4, 3, 1) and jax.stats["max_qps"].n == 3
    assert (tf.ok, tf.valid, [r.status for r in tf.failed]) == (4, 4, [CRASHED])
    assert words.row_error(rows["torch/onnx", "int8", "off"]) == ("export unavailable: torch/onnx int8: onnxruntime's "
                                                                  "quantizer is not installed")
    assert server.headline.best == rows["torch/onnx", "none", "dynamic"].row and server.headline.favourable
    assert server.headline.comparisons[tf.row].interval.estimate == pytest.approx(3.6, rel=0.01)
    pair, = server.batching  # torch/onnx measured both ways
    assert pair.best.batching == "dynamic" and pair.comparisons[rows["torch/onnx", "none", "off"].row].significant
    wrong = next(s for s in offline.rows if s.row.path == "jax/jit")
    assert wrong.parity is False and wrong.wrong_answers == 3 and wrong.answers == 40_000
    assert wrong.row not in offline.headline.stats  # a quick wrong answer is not a better path
    assert single.headline.metric.name == "latency_p99_s" and single.headline.best.path == "torch/onnx"


def test_each_row_shows_its_headline_figure_with_a_bootstrap_interval(results):
    """The max QPS cell carries the interval of its median over VALID processes (jax/jit: its 3 VALID runs, 9000,
    9090 and 9270 QPS, so the interval lies within them); a row of one process has no interval to show."""
    server = summarize_serving(results.loads, results.deploys, ["server"], BOUND)[0]
    rows = {(s.row.path, s.row.batching): s for s in server.rows}
    iv = rows["jax/jit", "off"].headline_ci
    assert iv.resampled and 9000 <= iv.low <= iv.estimate <= iv.high <= 9270 and iv.estimate == 9090
    table = serving.sections(results)[0].scenarios[0].table
    cells = dict(zip(words.load_head(table), words.load_cells(table, rows["jax/jit", "off"])))
    assert cells["max QPS"] == f"9.09k/s ±1.5% [{fmt.sig(iv.low / 1e3)}-{fmt.sig(iv.high / 1e3)}k/s]"
    alone = LoadRecord(LoadSpec("seed-mlp", "jax/jit", "none", "server", "off", 0, 2), OK,
                       metrics=load("jax/jit", "server", 0, 9000).metrics)
    one, = summarize_serving([alone], [], ["server"], BOUND)[0].rows
    assert not one.headline_ci.resampled and words.headline_interval(one, table.columns[0]) == ""


def test_claims_name_the_bound_invalid_runs_early_stopping_and_batching(text):
    server = text["server"]
    assert "jax/jit: in 1 of 4 processes LoadGen judged no target QPS VALID under a 10 ms p99 (Reduce target QPS to " \
           "improve latency.); left out of its figures" in server
    assert server[0] == "torch/onnx int8: export unavailable: torch/onnx int8: onnxruntime's quantizer is not " \
                        "installed; left out of the comparisons"
    assert not any(t.startswith("torch/onnx dynamic batching sustained 2.00x the QPS of torch/onnx ") for t in server)
    assert any(t.startswith("torch/onnx dynamic batching sustained 3.60x the QPS of tensorflow/litert under a 10 ms "
                            "p99 (95% CI") for t in server)
    assert any(t.startswith("torch/onnx dynamic batching and jax/jit: too few repeats to compare max QPS under a "
                            "10 ms p99") for t in server)
    assert "torch/onnx: dynamic batching raised the max QPS under a 10 ms p99 2.00x (95% CI 1.96-2.04, p=0.029)" \
        in server
    assert any(t.startswith("Too few repeats for a claim: with 3 ok processes") for t in server)
    offline = text["offline"]
    assert offline[1].startswith("jax/jit: failed: 3 of 10000 answers under load differ from the float64 reference")
    assert any(t.startswith("torch/onnx served 2.14x the samples/s of tensorflow/litert (95% CI") for t in offline)
    single = text["single-stream"]
    assert single[1] == (f"tensorflow/litert: LoadGen's early stopping did not back the p99 latency in 1 of 4 VALID "
                         f"runs: it supported the 90th percentile (\"{SHORT}\"); the figure shown is the measured one")
    assert any(t.startswith("torch/onnx answered 1.60x faster at p99 than tensorflow/litert (95% CI") for t in single)


def test_terminal_report(results):
    out = render_results(results)
    assert out.startswith("Software: runtimes onnx 1.0, litert 1.0, jit 1.0; exporters none (native paths serve the "
                          "weights file); LoadGen mlcommons-loadgen 6.0.17")
    assert ("WRONG ANSWERS: 3 of the 360,000 answers given under load differ from the float64 reference beyond the "
            "tolerance, in jax/jit offline (3): left out of the comparisons") in out
    lines = out.splitlines()
    head = next(ln for ln in lines if ln.lstrip().startswith("path") and "max QPS" in ln)
    assert head.split() == ["path", "prec", "batching", "n", "VALID", "max", "QPS", "samples/s", "p50", "p90", "p99",
                            "accuracy", "RSS", "answers", "max", "|dlogit|"]
    jax = next(ln for ln in lines if ln.lstrip().startswith("jax/jit") and "3/4" in ln)
    assert jax.split()[:7] == ["jax/jit", "fp32", "off", "4", "3/4", "9.09k/s", "±1.5%"]
    assert any(ln.split()[:5] == ["jax/jit", "fp32", "off", "3", "3/3"] and "failed: 3 of 10000 answers" in ln
               for ln in lines)  # a row with a wrong answer: its reason across the figure columns
    assert "Failed workers (2):" in out
    assert "  seed-mlp  tensorflow/litert server repeat 5  crashed: worker killed" in out


def test_html_and_markdown_sections_and_plot(results, tmp_path):
    html = render_html(results)
    assert "<section id=serving>" in html and html.count("<img") == 1
    claims = html_claims(html)
    assert "serving th: max QPS" in claims and "serving td: 18.3k/s ±1.5%" in claims
    assert "serving li: torch/onnx: dynamic batching raised the max QPS under a 10 ms p99 2.00x (95% CI 1.96-2.04, " \
           "p=0.029)" in claims
    assert "Load generator: mlcommons-loadgen 6.0.17" in html
    written = write_markdown(results, tmp_path / "s.md")
    md = written[0].read_text()
    assert "## Serving under load" in md and "#### seed-mlp server (Poisson arrivals" in md
    assert "| torch/onnx | fp32 | dynamic | 4 | 4/4 | 36.5k/s ±1.5% \\[36.0-37.1k/s\\] |" in md
    assert "- torch/onnx: dynamic batching raised the max QPS under a 10 ms p99 2.00x (95% CI" in md
    assert [p.name for p in written[1:]] == ["seed-mlp-server-latency.png"]


def test_server_plot_draws_every_trial_of_every_process(results):
    plot, = render_serving_plots("seed-mlp", results.loads, BOUND)
    assert plot.name == "server-latency" and plot.png.startswith(b"\x89PNG") and "dashed: the p99 bound" in plot.caption
    assert render_serving_plots("other", results.loads, BOUND) == []


def test_csv_has_a_row_per_load_worker(results):
    buf = io.StringIO()
    write_csv(results, buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(rows) == len(results.loads) and list(rows[0]) == list(columns(LoadRecord))
    assert {"scenario", "batching", "max_qps", "valid", "early_stopping", "wrong_answers", "trials"} <= set(rows[0])
    server = next(r for r in rows if r["scenario"] == "server" and r["batching"] == "dynamic")
    assert float(server["max_qps"]) == 36_000 and server["trials"] == "2" and server["valid"] == "True"


def test_two_serving_sessions_compare_row_by_row(results):
    faster = known_results()
    for r in faster.loads:
        if r.metrics and r.spec.path == "tensorflow/litert" and r.spec.scenario == "server":
            r.metrics.max_qps *= 2
    groups = {g.group.label: g for g in compare_sessions(results, faster)}
    tf = groups["TensorFlow (litert, server)"]
    changes = {c.metric.name: c for c in tf.changes}
    assert (tf.n_a, tf.n_b) == (4, 4) and changes["max_qps"].flag == "improvement"
    assert changes["max_qps"].comparison.interval.estimate == pytest.approx(2.0)
    assert "PyTorch (onnx, server, dynamic batching)" in groups and "samples_per_s" in {
        c.metric.name for c in groups["PyTorch (onnx, offline)"].changes}
    assert describe_session(results, "finished") == (
        "Session 7: 2026-12-06 10:00 UTC, isobench , serving seed-mlp | torch/onnx, tensorflow/litert, jax/jit | "
        "server, offline, single-stream (p99 bound 10 ms), batching off, dynamic | 4 repeats, 2 threads | 37 load "
        "workers, 4 exports, finished")


def test_history_names_the_kind_and_what_was_served(results, tmp_path):
    with Store(tmp_path / "s.db", create=True) as store:
        store.save(results)
        info, = store.sessions()
        assert store.load(info.id).loads == results.loads
    assert (info.kind, info.paths, info.scenarios) == ("serving", ("torch/onnx", "tensorflow/litert", "jax/jit"),
                                                       ("server", "offline", "single-stream"))
    assert info.parity_passed is False  # jax/jit's wrong answers offline
    assert "  serving server,offline,single-stream: torch/onnx,tensorflow/litert,jax/jit  seed-mlp  " in \
        render_history([info])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium package)")
def test_serving_html_in_headless_chromium(results, tmp_path):
    report = tmp_path / "serving.html"
    write_html(results, report)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
    shot = tmp_path / "serving.png"
    run = subprocess.run(flags + [f"--user-data-dir={tmp_path / 'shot'}", f"--screenshot={shot}",
                                  "--window-size=1280,4000", report.as_uri()], capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from PIL import Image
    pixels = Image.open(shot).convert("RGB")
    wanted = {tuple(int(colour(f)[i:i + 2], 16) for i in (1, 3, 5)): f for f in ("torch", "tensorflow", "jax")}
    counts = dict.fromkeys(wanted.values(), 0)
    for n, rgb in pixels.getcolors(1280 * 4000):
        for target, fw in wanted.items():
            if max(abs(a - b) for a, b in zip(rgb, target)) <= 40:
                counts[fw] += n
    assert all(n > 30 for n in counts.values()), counts  # every framework's server runs drawn, in its colour
