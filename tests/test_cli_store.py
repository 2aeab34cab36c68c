"""The results database from the command line: run, history, show, export, compare, report, interruptions and
adaptive repeats, with real worker processes of the framework-free numpy reference."""
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from isobench.results import SCHEMA_VERSION
from isobench.store import Store

QUICK = ("--frameworks", "numpy", "--threads", "1")


def isobench(*args, db=None, env=None, timeout=300):
    env = {**os.environ, **(env or {}), **({"ISOBENCH_DB": str(db)} if db else {})}
    return subprocess.run([sys.executable, "-m", "isobench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def one_line_error(p, message):
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two sessions in one database: 1 with the parity check, 2 without but with --json."""
    d = tmp_path_factory.mktemp("store")
    db, out = d / "results.db", d / "run.json"
    first = isobench("run", *QUICK, "--repeats", "2", "--db", str(db))
    second = isobench("run", *QUICK, "--repeats", "2", "--no-parity", "--warmup", "0", "--json", str(out),
                      db=db)  # via $ISOBENCH_DB
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    return db, out, first, second


def test_every_run_appends_a_session_with_its_parity_result(stored):
    db, _, first, second = stored
    assert "Parity seed-mlp: PASSED (max epoch-loss difference" in first.stderr
    assert "Parity" not in second.stderr
    assert "Session 1 stored in" in first.stderr and "Session 2 stored in" in second.stderr
    with Store(db) as store:
        assert [(s.id, s.ok, s.failed, s.parity_passed, s.status) for s in store.sessions()] == [
            (1, 2, 0, True, "finished"), (2, 2, 0, None, "finished")]
        parity = store.load(1).parity["seed-mlp"]
    assert parity.passed and parity.frameworks[0].framework == "numpy"
    assert all(c.max_abs_diff <= c.tolerance for c in parity.frameworks[0].checks)


def test_history_lists_the_sessions(stored):
    p = isobench("history", "--db", str(stored[0]))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["id", "date", "(UTC)", "kind", "workloads", "frameworks", "runs", "ok/failed",
                                "parity", "status"]
    assert lines[1].split()[0] == "1" and lines[1].split()[-4:] == ["numpy", "2/0", "passed", "finished"]
    assert lines[2].split()[0] == "2" and lines[2].split()[-4:] == ["numpy", "2/0", "-", "finished"]


def test_show_renders_the_stored_table_without_running_anything(stored):
    db, _, first, second = stored
    latest = isobench("show", "--db", str(db))
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout.startswith("Session 2: ") and "| 2 runs, finished" in latest.stdout.splitlines()[0]
    assert latest.stdout.split("\n\n", 1)[1].strip() == second.stdout.strip()  # the same report as the run printed
    old = isobench("show", "1", "--db", str(db))
    assert "Parity seed-mlp: PASSED" in old.stdout.splitlines()[1] and "training time" in old.stdout
    assert latest.stderr == old.stderr == ""


def test_export_json_is_the_run_json_document(stored):
    db, out, _, _ = stored
    p = isobench("export", "2", "--format", "json", "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert p.stdout == out.read_text()
    doc = json.loads(p.stdout)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["session_id"] == 2 and len(doc["runs"]) == 2
    assert len(doc["runs"][0]["metrics"]["step_times_s"]) == doc["runs"][0]["metrics"]["steps"]


def test_export_csv_is_tidy_one_row_per_run(stored, tmp_path):
    path = tmp_path / "runs.csv"
    p = isobench("export", "--format", "csv", "--output", str(path), "--db", str(stored[0]))
    assert p.returncode == 0 and "Session 2: 2 records written to" in p.stderr
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == 2 and {r["session_id"] for r in rows} == {"2"}
    assert sorted(r["repeat"] for r in rows) == ["0", "1"] and {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert float(r["train_time_s"]) > 0 and 0.8 <= float(r["test_accuracy"]) <= 1
        assert int(r["train_peak_rss_bytes"]) > 0 and r["device_peak_bytes"] == ""


def test_compare_two_sessions(stored):
    p = isobench("compare", "1", "2", "--db", str(stored[0]))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("Session 1 (") and "B/A = session 2 / session 1" in out
    assert "seed-mlp  NumPy (float64 reference) (reference)  n=2 -> n=2" in out
    for metric in ("training time", "steady step time", "first step", "test accuracy", "training peak RSS"):
        line = next(ln for ln in out.splitlines() if ln.startswith("  " + metric))
        assert line.endswith("no significant change")  # 2 vs 2 processes cannot reach p < 0.05
    assert "Too few processes in a session to flag anything" in out
    assert isobench("compare", "1", "--db", str(stored[0])).stdout == out  # SESSION_B defaults to the latest


@pytest.mark.parametrize("args", [["show", "99"], ["export", "99"], ["compare", "1", "99"],
                                  ["report", "99", "--html", "r.html"]])
def test_an_unknown_session_is_one_line_pointing_to_history(stored, args):
    p = isobench(*args, "--db", str(stored[0]))
    one_line_error(p, "no session 99 in")
    assert "list them with 'isobench history'" in p.stderr


def test_report_arguments_are_checked_before_loading(stored, tmp_path):
    db = str(stored[0])
    one_line_error(isobench("report", "--db", db), "give --html PATH and/or --markdown PATH")
    one_line_error(isobench("report", "--html", "/no/such/dir/r.html", "--db", db), "--html: directory /no/such/dir")
    one_line_error(isobench("compare", "2", "2", "--db", db), "both sessions are 2")
    one_line_error(isobench("show", "two", "--db", db), "session must be a number or 'latest'")


def test_report_writes_html_and_markdown(stored, tmp_path):
    pytest.importorskip("isobench.report.html")
    pytest.importorskip("isobench.report.markdown")
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    p = isobench("report", "1", "--html", str(html), "--markdown", str(md), "--db", str(stored[0]))
    assert p.returncode == 0, p.stderr
    assert html.stat().st_size > 0 and md.stat().st_size > 0


def test_database_problems_are_one_line_and_stop_before_any_worker(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"definitely not sqlite\n" * 50)
    before = bad.read_bytes()
    for args in (["run", *QUICK, "--repeats", "2"], ["history"], ["show"]):
        one_line_error(isobench(*args, "--db", str(bad)), "is not an SQLite database")
    assert bad.read_bytes() == before
    one_line_error(isobench("history", "--db", str(tmp_path / "none.db")), "no results database at")
    one_line_error(isobench("run", *QUICK, "--db", "/proc/isobench.db"), "results database")
    newer = tmp_path / "newer.db"
    Store(newer, create=True).close()
    with sqlite3.connect(newer) as c:
        c.execute("PRAGMA user_version = 99")
    one_line_error(isobench("show", "--db", str(newer)), "upgrade isobench")
    one_line_error(isobench("run", "--no-store", "--db", str(newer)), "--db and --no-store exclude each other")


def test_no_store_writes_no_database(tmp_path):
    db = tmp_path / "never.db"
    p = isobench("run", *QUICK, "--repeats", "1", "--no-store", "--no-parity", "--warmup", "0", db=db)
    assert p.returncode == 0 and not db.exists() and "stored in" not in p.stderr


def test_two_runs_at_once_into_one_database(tmp_path):
    db = tmp_path / "shared.db"
    cmd = [sys.executable, "-m", "isobench", "run", *QUICK, "--repeats", "2", "--no-parity", "--warmup", "0",
           "--db", str(db)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    with Store(db) as store:
        assert [(s.ok, s.status) for s in store.sessions()] == [(2, "finished")] * 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killing_a_run_keeps_every_finished_run(tmp_path, sig):
    db = tmp_path / "killed.db"
    env = {**os.environ, "ISOBENCH_FAULT": "hang:numpy:2"}  # the third run hangs until we interrupt
    proc = subprocess.Popen([sys.executable, "-m", "isobench", "run", *QUICK, "--repeats", "6", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while _stored_runs(db) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: 2 of 6 runs finished and kept" in err and "training time" in out
    with Store(db) as store:
        [session] = store.sessions()
        assert (session.ok, session.failed, session.status) == (2, 0, "interrupted")
        assert sorted(r.spec.repeat for r in store.load().runs) == [0, 1]


def _stored_runs(db) -> int:
    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_until_confident_stops_at_max_repeats(tmp_path):
    p = isobench("run", *QUICK, "--repeats", "2", "--until-confident", "--max-repeats", "3", "--no-parity",
                 "--warmup", "0")
    assert p.returncode == 0, p.stderr
    assert "2 to 3 repeats until every interval is within ±5%, 1 threads on cpu, up to 3 worker processes" in p.stderr
    assert "Stopped at --max-repeats 3 without reaching ±5%: seed-mlp: NumPy (float64 reference) (reference) has 3 " \
           "ok processes, fewer than the 4 a claim needs" in p.stderr
    with Store(os.environ["ISOBENCH_DB"]) as store:
        results = store.load()
    assert sorted(r.spec.repeat for r in results.runs) == [0, 1, 2]
    assert results.config["target_width"] == 0.05 and results.config["max_repeats"] == 3


def test_until_confident_stops_when_confident(tmp_path):
    # numpy's process-to-process noise is far below ±90%: confident as soon as a claim is possible (4 processes)
    p = isobench("run", *QUICK, "--repeats", "2", "--until-confident", "--target-width", "0.9", "--max-repeats", "8",
                 "--no-parity", "--warmup", "0")
    assert p.returncode == 0, p.stderr
    assert "Confident after 4 repeats: every training-time and steady-step-time interval is within ±90%" in p.stderr
    with Store(os.environ["ISOBENCH_DB"]) as store:
        assert sorted(r.spec.repeat for r in store.load().runs) == [0, 1, 2, 3]


@pytest.mark.parametrize("args,message", [
    (["run", "--target-width", "0.1"], "--target-width and --max-repeats apply only with --until-confident"),
    (["run", "--until-confident", "--max-repeats", "3"], "--max-repeats 3 is below --repeats 5"),
    (["run", "--until-confident", "--target-width", "5"], "argument --target-width: must be between 0 and 1"),
    (["export", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
])
def test_bad_store_flags_are_one_line(args, message):
    one_line_error(isobench(*args), message)


def test_help_explains_every_new_flag():
    run = isobench("run", "--help").stdout
    for flag in ("--db", "--no-store", "--no-parity", "--until-confident", "--target-width", "--max-repeats"):
        assert flag in run
    for command, flags in {"history": ["--db"], "show": ["SESSION", "--db"], "export": ["--format", "--output"],
                           "compare": ["SESSION_A", "SESSION_B"], "report": ["--html", "--markdown"]}.items():
        p = isobench(command, "--help")
        assert p.returncode == 0 and all(f in p.stdout for f in flags), p.stdout
