"""Fault injection (issue 6): a long benchmark survives faults, loses nothing, resumes, and refuses bad input.

Workers are the framework-free numpy reference on a one-epoch workload (fast); faults are injected with
``ISOBENCH_FAULT=KIND[:FRAMEWORK[:REPEAT]]`` (see :func:`isobench.runner.worker.inject_fault`) into real CLI
sessions. Every item of the issue's lists, and the test that covers it ("elsewhere" = already tested well in
another file):

Faults
- worker segfaults / is SIGKILLed / exits with an error (signal or code, stderr tail; session continues)
      -> test_failed_worker_is_recorded_with_its_signal_or_code[segfault|kill|exit|raise]
- worker hangs: killed at --timeout with its whole process group, recorded timeout
      -> test_hung_worker_and_its_child_are_killed_at_the_timeout
- worker over --max-memory: killed, out_of_memory with the peak
      -> test_worker_over_max_memory_is_out_of_memory_with_the_peak
- NaN loss: stopped early, diverged with the step -> test_nan_loss_is_diverged_with_the_step
- framework that fails to import: every cell unavailable with the import error and install hint, tried once
      -> test_framework_that_fails_to_import_is_unavailable_tried_once_with_the_install_hint
      (not installed at all: elsewhere,
      tests/test_runner.py::test_missing_framework_is_recorded_unavailable_without_a_worker)
- the rest of the session continues, every other run stored -> test_the_rest_of_a_faulty_session_is_stored_exactly_once
- isobench interrupted (Ctrl-C, SIGTERM): finished runs kept, no worker left, --resume runs only the missing cells
      -> test_interrupted_session_leaves_no_worker_and_resumes_only_the_missing_cells[SIGINT|SIGTERM]
      (also tests/test_cli_store.py::test_killing_a_run_keeps_every_finished_run)
- two isobench processes writing one database -> test_two_isobench_processes_write_one_database_at_once
      (also tests/test_store.py::test_two_processes_writing_at_once_lose_and_duplicate_nothing, 150 runs each)
- database corrupt / read-only / newer: one line saying what to do, never an overwrite
      -> test_unusable_database_is_one_line_and_never_overwritten[text|corrupt-pages|another-programs|newer-version],
         test_read_only_database_is_one_line_and_unchanged

Bad input (one line on stderr, exit 2, no traceback, no worker, stored results byte-for-byte untouched)
- unknown workload, framework, mode, precision; negative repeats; zero batch; malformed TOML; wrong types; unknown
  layer; incompatible shapes (field and layer index); missing or malformed files in --data-dir
      -> test_bad_input_is_one_line_exit_2_and_touches_nothing[...]
      (more TOML field errors: tests/test_zoo_spec.py::test_bad_toml_names_the_field; more flags:
      tests/test_cli.py::test_bad_input_is_one_line_and_exit_2)

Security
- workload files are data, loading one never executes code -> test_loading_a_workload_file_never_executes_code
      (CIFAR-10 pickles in --data-dir: elsewhere, tests/test_zoo_spec.py, "refusing to load builtins.eval")
- workers spawned with argument lists, never a shell -> test_workers_are_spawned_from_argument_lists_never_a_shell
- user-supplied names cannot reach commands or paths outside the output location, and every user string in the
  HTML report is escaped (a workload named <script>alert(1)</script>)
      -> test_hostile_workload_names_stay_data_and_are_escaped_in_reports
      (synthetic results: elsewhere, tests/test_report_html.py::test_user_strings_are_escaped)
"""
import gc
import inspect
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from isobench.errors import UserError
from isobench.results import (CRASHED, DIVERGED, FAILED, OK, OUT_OF_MEMORY, TIMEOUT, UNAVAILABLE, ResultSet,
                              RunRecord, RunSpec)
from isobench.runner.local import out_of_memory_message
from isobench.store import SCHEMA_VERSION, Store

ROOT = Path(__file__).resolve().parents[1]
QUICK = ("--threads", "1", "--no-parity", "--warmup", "0")
TINY = """name = "tiny"
description = "one epoch of a small MLP on digits: a worker process of about 1.5 s"
input_shape = [64]
num_classes = 10
batch_size = 64
epochs = 1

[[layers]]
kind = "dense"
units = 32

[[layers]]
kind = "relu"

[[layers]]
kind = "dense"
units = 10
"""
# the faulty session: repeat -> the fault its numpy worker meets; repeats 0 and 8 are healthy
FAULTS = {1: "segfault", 2: "kill", 3: "exit", 4: "hang", 5: "oom", 6: "nan", 7: "raise"}
REPEATS, TIMEOUT_S, MAX_MEMORY_MIB = 9, 10, 300
TORCH_IMPORT_ERROR = "libtorch_cpu.so: cannot open shared object file (injected)"


def spawn(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "isobench", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            stdin=subprocess.DEVNULL)


def processes_mentioning(text) -> list[int]:
    """Live processes whose command line contains ``text`` (zombies have none)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(text).encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def stored_runs(db) -> int:
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:  # not created yet
        return 0
    try:
        return c.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:  # not migrated yet
        return 0
    finally:
        c.close()


def cli(capsys, *args):
    """isobench's main() in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from isobench.cli import main
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, message):
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# ---- one faulty session, and a second session writing the same database at the same time -------------------

@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """Session A: numpy x 9 repeats with a different fault in 7 of them, and torch whose import fails (a shim
    package first on PYTHONPATH); session B, started at the same moment into the same database: numpy x 4 with
    a segfault. Workers' files live under TMPDIR, so /proc tells whether any of their processes is left."""
    d = tmp_path_factory.mktemp("faults")
    tmp, shim = d / "tmp", d / "shim" / "torch"
    tmp.mkdir()
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(f"raise ImportError({TORCH_IMPORT_ERROR!r})\n")
    (d / "tiny.toml").write_text(TINY)
    db = d / "results.db"
    env = {"TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join(filter(None, [str(shim.parent),
                                                                          os.environ.get("PYTHONPATH")]))}
    a = spawn("run", d / "tiny.toml", *QUICK, "--frameworks", "numpy,torch", "--repeats", REPEATS, "--no-peak",
              "--timeout", TIMEOUT_S, "--max-memory", f"{MAX_MEMORY_MIB}M", "--db", db,  # no peak: 4-7 s saved
              env={**env, "ISOBENCH_FAULT": ",".join(f"{k}:numpy:{r}" for r, k in FAULTS.items())})
    b = spawn("run", d / "tiny.toml", *QUICK, "--frameworks", "numpy", "--repeats", 4, "--db", db,
              env={**env, "ISOBENCH_FAULT": "segfault:numpy:2"})
    try:
        out_a, err_a = a.communicate(timeout=300)
        out_b, err_b = b.communicate(timeout=300)
    finally:
        a.kill(), b.kill()
        leftovers = processes_mentioning(tmp)
        kill_all(leftovers)  # reported by a test, never left to the rest of the suite
    with Store(db) as store:
        sessions = {("A" if s.frameworks == ["numpy", "torch"] else "B"): s for s in store.sessions()}
        loaded = {k: store.load(s.id) for k, s in sessions.items()}
        rows = store.conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    return SimpleNamespace(a=SimpleNamespace(code=a.returncode, out=out_a, err=err_a, info=sessions.get("A"),
                                             results=loaded.get("A")),
                           b=SimpleNamespace(code=b.returncode, out=out_b, err=err_b, info=sessions.get("B"),
                                             results=loaded.get("B")),
                           leftovers=leftovers, rows=rows, db=db)


def run_of(faulty, repeat, framework="numpy"):
    [r] = [r for r in faulty.a.results.runs if (r.spec.framework, r.spec.repeat) == (framework, repeat)]
    return r


def repeat_of(fault):
    return next(r for r, k in FAULTS.items() if k == fault)


@pytest.mark.slow
@pytest.mark.parametrize("fault,status,signal_,code,error,stderr", [
    ("segfault", CRASHED, signal.SIGSEGV, None, "worker killed by signal SIGSEGV", None),
    ("kill", CRASHED, signal.SIGKILL, None, "worker killed by signal SIGKILL", None),
    ("exit", FAILED, None, 3, "worker exited with code 3 without a result: injected fault: exit 3",
     "injected fault: exit 3"),
    ("raise", FAILED, None, 1, "RuntimeError: injected fault", "Traceback (most recent call last)"),
])
def test_failed_worker_is_recorded_with_its_signal_or_code(faulty, fault, status, signal_, code, error, stderr):
    r = run_of(faulty, repeat_of(fault))
    assert (r.status, r.signal, r.exit_code, r.metrics) == (status, signal_, code, None)
    assert r.error == error
    if stderr:
        assert stderr in r.stderr_tail
    assert f"repeat {repeat_of(fault) + 1}: {status.upper()}" in faulty.a.err  # the live progress line


@pytest.mark.slow
def test_hung_worker_and_its_child_are_killed_at_the_timeout(faulty):
    r = run_of(faulty, repeat_of("hang"))
    assert (r.status, r.signal, r.metrics) == (TIMEOUT, signal.SIGKILL, None)
    assert r.error == f"exceeded the timeout of {TIMEOUT_S} s; killed" and TIMEOUT_S <= r.wall_s < TIMEOUT_S + 30
    worker, child = map(int, re.search(r"hang, worker (\d+), child (\d+)", r.stderr_tail).groups())
    assert worker != child  # the hung worker had started a helper process in its group...
    assert faulty.leftovers == []  # ...and neither it, nor any other worker or launcher, outlived the session


@pytest.mark.slow
def test_worker_over_max_memory_is_out_of_memory_with_the_peak(faulty):
    r = run_of(faulty, repeat_of("oom"))
    assert (r.status, r.signal, r.metrics) == (OUT_OF_MEMORY, signal.SIGKILL, None)
    peak = int(re.fullmatch(rf"resident memory reached (\d+) MiB, over --max-memory {MAX_MEMORY_MIB} MiB; killed",
                            r.error).group(1))
    assert MAX_MEMORY_MIB < peak < 4096  # killed by the watcher, before the fault's own 4 GiB safety stop
    healthy = [x for x in faulty.a.results.runs if x.status == OK]
    assert healthy and all(x.metrics.process_peak_rss_bytes < MAX_MEMORY_MIB * 2**20 for x in healthy)


@pytest.mark.slow
def test_nan_loss_is_diverged_with_the_step(faulty):
    r = run_of(faulty, repeat_of("nan"))
    assert (r.status, r.metrics, r.exit_code) == (DIVERGED, None, 1)
    assert r.error == "loss became nan at step 3 (epoch 1)"


@pytest.mark.slow
def test_framework_that_fails_to_import_is_unavailable_tried_once_with_the_install_hint(faulty):
    torch = [r for r in faulty.a.results.runs if r.spec.framework == "torch"]
    assert sorted(r.spec.repeat for r in torch) == list(range(REPEATS))
    assert {r.status for r in torch} == {UNAVAILABLE}
    [message] = {r.error for r in torch}  # the same message on every cell
    assert TORCH_IMPORT_ERROR in message and "install it: pip install 'isobench[torch]'" in message
    assert len([r for r in torch if r.wall_s is not None]) == 1  # one worker tried it; the rest never started one


@pytest.mark.slow
def test_the_rest_of_a_faulty_session_is_stored_exactly_once(faulty):
    a = faulty.a
    assert a.code == 1, a.err  # run failures, not a usage error and not a crash of isobench
    assert "Traceback" not in a.err and a.info.status == "finished"
    cells = sorted((r.spec.framework, r.spec.repeat) for r in a.results.runs)
    assert cells == sorted((f, i) for f in ("numpy", "torch") for i in range(REPEATS))
    assert sorted(r.order for r in a.results.runs) == list(range(2 * REPEATS))
    expected = {0: OK, 8: OK, **{r: {"segfault": CRASHED, "kill": CRASHED, "hang": TIMEOUT, "oom": OUT_OF_MEMORY,
                                      "nan": DIVERGED}.get(k, FAILED) for r, k in FAULTS.items()}}
    assert {r.spec.repeat: r.status for r in a.results.runs if r.spec.framework == "numpy"} == expected
    for r in a.results.runs:
        if r.status == OK:
            assert r.metrics.train_time_s > 0 and len(r.metrics.epoch_losses) == 1 and r.metrics.test_accuracy > 0
            assert r.fingerprints["loaded_weights"] == r.fingerprints["init_weights"]
        else:
            assert r.metrics is None and r.error
    assert (a.info.ok, a.info.failed) == (2, 2 * REPEATS - 2)


@pytest.mark.slow
def test_two_isobench_processes_write_one_database_at_once(faulty):
    b = faulty.b
    assert b.code == 1 and b.info.status == "finished", b.err
    assert sorted((r.spec.repeat, r.status) for r in b.results.runs) == [(0, OK), (1, OK), (2, CRASHED), (3, OK)]
    assert b.info.id != faulty.a.info.id
    assert faulty.rows == 2 * REPEATS + 4  # nothing lost, nothing duplicated


# ---- interruption and resume ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_session_leaves_no_worker_and_resumes_only_the_missing_cells(tmp_path, capsys, monkeypatch,
                                                                                 sig):
    tmp, db, toml = tmp_path / "tmp", tmp_path / "r.db", tmp_path / "tiny.toml"
    tmp.mkdir()
    toml.write_text(TINY)
    env = {"TMPDIR": str(tmp)}
    proc = spawn("run", toml, *QUICK, "--frameworks", "numpy", "--repeats", 5, "--db", db,
                 env={**env, "ISOBENCH_FAULT": "hang:numpy:2"})  # the third worker (and a child of it) hangs
    try:
        deadline = time.monotonic() + 120
        while stored_runs(db) < 2 or len(processes_mentioning(tmp)) < 3:  # launcher, hung worker, its child
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        left = processes_mentioning(tmp)
        kill_all(left)
    assert proc.returncode == 130, err
    assert left == []
    assert f"interrupted: 2 of 5 runs finished and kept; continue with: isobench run --resume 1 --db {db}" in err
    assert "Traceback" not in err and "training time" in out
    with Store(db) as store:
        assert store.status(1) == "interrupted"
        assert [(r.spec.repeat, r.status) for r in store.load(1).runs] == [(0, OK), (1, OK)]

    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # the resumed workers' files under tmp as well
    code, _, err = cli(capsys, "run", "--resume", "1", "--db", db)
    assert code == 0, err
    assert "3 worker processes" in err and "resuming session 1: 2 of 5 runs already measured" in err
    with Store(db) as store:
        [info] = store.sessions()
        runs = store.load(1).runs
    assert (info.status, info.ok, info.failed) == ("finished", 5, 0)
    assert sorted(r.spec.repeat for r in runs) == [0, 1, 2, 3, 4]  # every cell exactly once
    assert sorted(r.order for r in runs) == [0, 1, 2, 3, 4]
    assert processes_mentioning(tmp) == []


def test_resume_reruns_a_cell_the_executor_lost_and_keeps_a_worker_failure(tmp_path, capsys, monkeypatch):
    db, toml = tmp_path / "r.db", tmp_path / "tiny.toml"
    toml.write_text(TINY)
    monkeypatch.setenv("ISOBENCH_FAULT", "segfault:numpy:2")  # repeat 2: the worker itself crashed, a result
    code, _, err = cli(capsys, "run", toml, *QUICK, "--frameworks", "numpy", "--repeats", 3, "--db", db)
    monkeypatch.delenv("ISOBENCH_FAULT")
    assert code == 1, err
    with Store(db) as store:  # repeat 1 as the Ray executor records a cell whose node died
        [r1] = [r for r in store.load(1).runs if r.spec.repeat == 1]
        store.replace_run(1, RunRecord(r1.spec, CRASHED, order=r1.order, error="Ray lost the cell (NodeDiedError): "
                                       "node 10.0.0.7 died", lost="NodeDiedError"))
        assert [r.lost for r in store.load(1).runs] == [None, "NodeDiedError", None]

    code, _, err = cli(capsys, "run", "--resume", "1", "--db", db)
    assert code == 1, err  # repeat 2's crash is still a failure of the session
    assert "1 worker processes" in err and "2 of 3 runs already measured, 1 lost by the executor run again" in err
    with Store(db) as store:
        runs = {r.spec.repeat: r for r in store.load(1).runs}
    assert sorted(runs) == [0, 1, 2]  # still one record per cell
    assert (runs[0].status, runs[1].status, runs[2].status) == (OK, OK, CRASHED)
    assert not runs[1].lost and runs[1].order == 3 and runs[1].metrics.epoch_losses
    assert runs[1].replaces == "crashed record: Ray lost the cell (NodeDiedError): node 10.0.0.7 died"


# ---- the results database ---------------------------------------------------------------------------------------

def _text(path):
    path.write_bytes(b"these are my notes, not a database\n" * 40)


def _bad_pages(path):
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)


def _foreign(path):
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
        c.execute("INSERT INTO contacts VALUES ('Ada', '555')")
    c.close()


def _newer(path):
    Store(path, create=True).close()
    c = sqlite3.connect(path)
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.close()


@pytest.mark.parametrize("command", ["run", "history"])
@pytest.mark.parametrize("make,message", [
    (_text, "is not an SQLite database; give another path with --db or $ISOBENCH_DB"),
    (_bad_pages, "is corrupt (file is not a database); it is left untouched: give another path with --db"),
    (_foreign, "is an SQLite database but not an isobench results database; it is left untouched: give another path"),
    (_newer, f"has schema version {SCHEMA_VERSION + 1}, newer than this isobench reads ({SCHEMA_VERSION}); "
             "upgrade isobench to use it"),
], ids=["text", "corrupt-pages", "another-programs", "newer-version"])
def test_unusable_database_is_one_line_and_never_overwritten(tmp_path, capsys, monkeypatch, make, message, command):
    path = tmp_path / "r.db"
    make(path)
    before = path.read_bytes()
    monkeypatch.setattr("isobench.runner.local.subprocess", None)  # any worker start would fail loudly
    args = ["run", "--frameworks", "numpy", "--repeats", "1", *QUICK] if command == "run" else ["history"]
    code, out, err = cli(capsys, *args, "--db", path)
    one_line(code, err, message)
    assert out == "" and path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["r.db"]


SETPRIV = shutil.which("setpriv")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0 and not SETPRIV, reason="root writes read-only files: setpriv drops to nobody")
def test_read_only_database_is_one_line_and_unchanged(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="isobench-ro-"))  # not under pytest's private (0700) folders
    path = folder / "r.db"
    try:
        with Store(path, create=True) as store:
            store.save(ResultSet(config={"workloads": ["seed-mlp"], "frameworks": ["numpy"]}, environment={}))
        before = path.read_bytes()
        path.chmod(0o444)
        folder.chmod(0o555)  # WAL: a writable folder would let SQLite add its -shm file
        # root may write any file: run isobench as nobody, without capabilities
        user = [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        if user and subprocess.run([*user, sys.executable, "-c", "import isobench"], cwd=folder,
                                   capture_output=True, timeout=60).returncode != 0:
            pytest.skip("user nobody cannot import isobench from this checkout (it is in a private folder)")
        for args in (["run", "--frameworks", "numpy", "--repeats", "1", *QUICK], ["history"]):
            p = subprocess.run([*user, sys.executable, "-m", "isobench", *args, "--db", str(path)], cwd=folder,
                               capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            one_line(p.returncode, p.stderr, f"results database {path} is read-only")
            assert "make it and its folder writable, or give another path with --db" in p.stderr
        assert path.read_bytes() == before and os.listdir(folder) == ["r.db"]
    finally:
        folder.chmod(0o755)
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


# ---- bad input ----------------------------------------------------------------------------------------------------

HEAD = 'name = "t"\ninput_shape = [64]\nnum_classes = 10\n'
DENSE = "[[layers]]\nkind = 'dense'\nunits = {}\n"

NP = ["--frameworks", "numpy"]


@pytest.mark.parametrize("args,toml,message", [
    (["no-such-workload", *NP], None, "unknown workload 'no-such-workload'; choose from:"),
    (["missing.toml", *NP], None, "cannot read workload file missing.toml"),
    (["--frameworks", "numpy,mxnet"], None, "unknown framework 'mxnet'; choose from:"),
    ([*NP, "--modes", "turbo"], None, "--modes: no compared framework has a mode 'turbo'"),
    ([*NP, "--modes", "numpy=jit"], None, "--modes numpy=jit: NumPy (float64 reference) has no mode 'jit'"),
    ([*NP, "--precision", "fp8"], None, "unknown precision 'fp8'; choose from: fp32, bf16, fp16, tf32, all"),
    ([*NP, "--repeats", "-2"], None, "argument --repeats: must be at least 1, got -2"),
    ([*NP, "--max-memory", "lots"], None, "argument --max-memory: expected a size such as 4G or 512M, got 'lots'"),
    ([*NP, "--timeout", "-5"], None, "argument --timeout: must be greater than 0"),
    (NP, HEAD + "batch_size = 0\n" + DENSE.format(10), "batch_size: must be at least 1, got 0"),
    (NP, HEAD + "epochs = 2\n[[layers]\nkind = 'dense'\n", "not valid TOML"),
    (NP, HEAD + "epochs = 'ten'\n" + DENSE.format(10), "epochs: expected a whole number, got 'ten'"),
    (NP, HEAD + DENSE.format(32) + DENSE.format("'many'"), "layers[1].units: expected a whole number, got 'many'"),
    (NP, HEAD + DENSE.format(32) + "[[layers]]\nkind = 'relu'\n[[layers]]\nkind = 'transformer'\n",
     "layers[2].kind: unknown layer 'transformer'; one of: dense"),
    (NP, HEAD + DENSE.format(32) + "[[layers]]\nkind = 'conv2d'\nfilters = 4\nkernel_size = 3\n",
     "layers[1]: conv2d needs an image (H, W, C) input, got shape (32,)"),
    (["lenet5", *NP, "--data-dir", "/no/such/folder"], None, "--data-dir /no/such/folder is not a folder"),
    pytest.param(["lenet5", *NP, "--data-dir", "{empty}"], None, "missing train-images-idx3-ubyte"),
    pytest.param(["lenet5", *NP, "--data-dir", "{garbled}"], None, "is not an IDX file (bad magic number"),
    (["--resume", "99"], None, "no session 99 in"),
    (["--resume", "1", "--repeats", "3"], None, "--resume reruns the stored plan of the session; drop --repeats"),
], ids=["unknown-workload", "missing-toml", "unknown-framework", "unknown-mode", "framework-lacks-mode",
        "unknown-precision", "negative-repeats", "bad-max-memory", "negative-timeout", "zero-batch",
        "malformed-toml", "wrong-type", "wrong-type-in-layer", "unknown-layer", "incompatible-shapes",
        "data-dir-not-a-folder", "missing-data-files", "malformed-data-file", "resume-unknown-session",
        "resume-with-other-flags"])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, capsys, monkeypatch, args, toml, message):
    db = tmp_path / "r.db"
    with Store(db, create=True) as store:  # stored results that must survive byte for byte
        store.save(ResultSet(config={"workloads": ["seed-mlp"], "frameworks": ["numpy"], "repeats": 1},
                             environment={"hostname": "here"}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "train-images-idx3-ubyte").write_bytes(b"\x13\x37" * 500)
    if toml:
        (tmp_path / "w.toml").write_text(toml)
        args = [tmp_path / "w.toml", *args]
    args = [str(a).format(empty=tmp_path / "empty", garbled=tmp_path / "garbled") for a in args]
    before = db.read_bytes()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("isobench.runner.local.subprocess", None)  # any worker start would fail loudly
    code, out, err = cli(capsys, "run", *args, "--db", db)
    gc.collect()  # a store left open by the error path closes (a process exiting would close it too)
    one_line(code, err, message)
    assert out == ""
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["r.db", "empty", "garbled"] + (["w.toml"] if toml else []))


# ---- security ---------------------------------------------------------------------------------------------------

def test_loading_a_workload_file_never_executes_code(tmp_path):
    from isobench.workloads import load_toml, serialize, spec

    marker = tmp_path / "pwned"
    payloads = [f"__import__('os').system('touch {marker}')", f"$(touch {marker})", f"`touch {marker}`",
                f"!!python/object/apply:os.system ['touch {marker}']", "{{ ''.__class__.__mro__ }}"]
    path = tmp_path / "w.toml"
    path.write_text(f"name = {payloads[0]!r}\ndescription = {payloads[1]!r}\n" + HEAD.split("\n", 1)[1]
                    + f"[[layers]]\nkind = 'dense'\nunits = 32\nname = {payloads[2]!r}\n"
                    + f"[[layers]]\nkind = 'relu'\n[[layers]]\nkind = 'dense'\nunits = 10\nname = {payloads[3]!r}\n"
                    + f"[data]\nsource = 'digits'\n# {payloads[4]}\n")
    w = load_toml(path)
    assert (w.name, w.description, w.layers[0].name, w.layers[2].name) == tuple(payloads[:4])  # inert strings
    assert not marker.exists()
    path.write_text(HEAD + "[[layers]]\nkind = 'os.system'\n")  # a kind is looked up in a fixed table, never imported
    with pytest.raises(UserError, match=r"layers\[0\]\.kind: unknown layer 'os.system'"):
        load_toml(path)
    for module in (serialize, spec):  # the loader has no way to run code: tomllib data and dataclasses only
        source = inspect.getsource(module)
        assert not re.search(r"(?<![.\w])(eval|exec|compile|__import__)\(|import_module|os\.system|"
                             r"\b(import|from)\s+(pickle|marshal|shelve|yaml|subprocess)\b", source), module.__name__


def test_workers_are_spawned_from_argument_lists_never_a_shell(tmp_path, monkeypatch):
    from isobench.runner import local
    from isobench.runner.inputs import write_inputs
    from isobench.workloads import workload_from_dict
    import tomllib

    for path in (ROOT / "src" / "isobench").rglob("*.py"):  # no shell anywhere in isobench
        source = path.read_text()
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|commands\.|pty\.spawn", source), path
    assert "os.posix_spawn(sys.argv[2], sys.argv[2:]" in local.LAUNCHER  # the launcher execs an argv list too

    calls = []

    class Spy(subprocess.Popen):
        def __init__(self, args, *a, **kw):
            calls.append((args, kw))
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(local.subprocess, "Popen", Spy)
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker} #$(touch {marker})`touch {marker}`"
    w = workload_from_dict({**tomllib.loads(TINY), "name": hostile})
    work = tmp_path / "work"
    work.mkdir()
    inputs = write_inputs(w, work / "in.npz")
    r = local.run_cell(RunSpec(hostile, "numpy", "reference", 0, 1), w, inputs, work)
    assert r.status == OK, r.stderr_tail
    [(args, kw)] = calls
    assert isinstance(args, list) and all(isinstance(a, str) for a in args) and not kw.get("shell")
    assert args[0] == sys.executable and hostile not in " ".join(args)  # the name travels in the task file only
    assert not marker.exists()


@pytest.mark.slow
def test_hostile_workload_names_stay_data_and_are_escaped_in_reports(tmp_path, capsys, monkeypatch):
    evil = "<script>alert(1)</script>"
    escape = "../../../pwned-dir/$(touch pwned1);`touch pwned2`|touch pwned3 && touch pwned4 #"
    work, tmp, out, db = tmp_path / "work", tmp_path / "tmp", tmp_path / "out", tmp_path / "r.db"
    for folder in (work, tmp, out):
        folder.mkdir()
    body = TINY.split("\n", 2)[2]  # without its name and description
    files = [tmp_path / "evil.toml", tmp_path / "a; touch pwned5 $(touch pwned6).toml"]
    files[0].write_text(f"name = {evil!r}\n" + body)
    files[1].write_text(f"name = {escape!r}\ndescription = {evil!r}\n" + body)
    parents = [sorted(os.listdir(p)) for p in (tmp_path.parent, tmp_path.parent.parent)]

    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    code, _, err = cli(capsys, "run", *files, *QUICK, "--frameworks", "numpy", "--repeats", 1, "--db", db)
    assert code == 0, err
    code, _, err = cli(capsys, "report", "--html", out / "r.html", "--markdown", out / "r.md", "--db", db)
    assert code == 0, err

    with Store(db) as store:
        assert {r.spec.workload for r in store.load().runs} == {evil, escape}  # stored as given, not mangled
    written = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file())
    plots = [f for f in written if f.startswith("out/r_plots/")]
    assert written == sorted([files[0].name, files[1].name, "r.db", "out/r.html", "out/r.md", *plots]), written
    assert plots and all(f.endswith(".png") and "/" not in f[len("out/r_plots/"):] for f in plots)
    assert not list(work.iterdir()) and not list(tmp.iterdir())  # no worker file left, nothing in the cwd
    # nothing escaped into the folders above (another pytest session running beside this one may add its own
    # pytest-N and test_* folders there: only those are allowed)
    for before, p in zip(parents, (tmp_path.parent, tmp_path.parent.parent)):
        added = set(os.listdir(p)) - set(before)
        assert all(n.startswith(("pytest-", "test_")) and "pwned" not in n for n in added), added
    html = (out / "r.html").read_text()
    assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert evil not in (out / "r.md").read_text()


def test_out_of_memory_message_never_shows_the_peak_at_or_below_the_cap():
    cap = 300 * 2**20
    assert out_of_memory_message(cap + 400 * 2**10, cap) == \
        "resident memory reached 301 MiB, over --max-memory 300 MiB; killed"  # 300.4 MiB is over 300, so 301
    assert out_of_memory_message(cap + 1, cap).startswith("resident memory reached 301 MiB")
    assert out_of_memory_message(2 * cap, cap).startswith("resident memory reached 600 MiB")
