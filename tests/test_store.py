"""The results database, tidy exports, session comparison and the adaptive stopping rule, without workers."""
import csv
import dataclasses
import io
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from isobench.errors import UserError
from isobench.results import (CRASHED, OK, FrameworkSettings, Metrics, ParityResult, ResultSet, RunRecord, RunSpec,
                              ThreadSettings, WorkerSettings)
from isobench.store import SCHEMA_VERSION, Store, db
from isobench.store.export import columns, write_csv


def metrics(train=1.0, step=1e-3, acc=0.877, rss=300 * 2**20) -> Metrics:
    return Metrics(import_s=0.5, build_s=0.1, first_step_s=10 * step, compile_s=9 * step, step_time_median_s=step,
                   step_time_p10_s=0.9 * step, step_time_p90_s=1.1 * step, train_time_s=train, eval_s=0.01,
                   throughput_samples_s=14380 / train, test_accuracy=acc, test_loss=0.41,
                   epoch_losses=[2.3 - 0.2 * i for i in range(10)], rss_after_import_bytes=200 * 2**20,
                   train_peak_rss_bytes=rss, process_peak_rss_bytes=rss + 2**20, device_peak_bytes=None, steps=450,
                   samples=14380, step_times_s=[10 * step] + [step * (1 + 0.01 * (i % 7)) for i in range(449)])


def record(framework="torch", repeat=0, order=0, **kw) -> RunRecord:
    spec = RunSpec("seed-mlp", framework, {"torch": "eager", "jax": "jit"}.get(framework, "reference"), repeat, 2)
    return RunRecord(spec, OK, order=order, wall_s=3.2, exit_code=0, metrics=metrics(**kw),
                     environment=WorkerSettings(threads=ThreadSettings(2), pid=1234 + order),
                     fingerprints={"data": "ab12", "init_weights": "cd34"})


PARITY = {"workload": "seed-mlp", "passed": True, "reference_accuracy": 0.877,
          "frameworks": [{"framework": "torch", "mode": "eager", "status": "ok", "error": None, "passed": True,
                          "checks": [{"name": "epoch mean loss, 10 epochs", "max_abs_diff": 9.42e-08,
                                      "tolerance": 1e-4, "passed": True}]}],
          "cross": [{"name": "epoch mean loss between frameworks", "max_abs_diff": 4.77e-08, "tolerance": 1e-4,
                     "passed": True}]}


def result_set(runs, threads=2, packages=None) -> ResultSet:
    return ResultSet(config={"workloads": ["seed-mlp"], "frameworks": ["torch", "jax"], "repeats": 5,
                             "threads": threads, "seed": 0},
                     environment={"hostname": "vm", "cpu_model": "AMD EPYC",
                                  "packages": packages or {"torch": "2.13.0"}},
                     runs=runs, isobench_version="0.1.0", created_at="2026-11-27T10:01:02+00:00",
                     parity={"seed-mlp": ParityResult.from_dict(PARITY)})


def test_round_trip_keeps_every_field_of_ok_and_failed_runs(tmp_path):
    crashed = RunRecord(RunSpec("seed-mlp", "jax", "jit", 0, 2), CRASHED, order=1, wall_s=0.8, signal=11,
                        error="worker killed by signal SIGSEGV", stderr_tail="Fatal Python error\nSegmentation fault")
    original = result_set([record(order=0), crashed, record(repeat=1, order=2)])
    with Store(tmp_path / "r.db", create=True) as store:
        session_id = store.save(original)
        loaded = store.load(session_id)
        original.runs[2].metrics.test_loss = float("nan")  # a stored run is never refused for a NaN
        store.add_run(session_id, RunRecord(RunSpec("seed-mlp", "torch", "eager", 2, 2), OK, order=3,
                                            metrics=original.runs[2].metrics))
        nan = store.load(session_id).runs[3].metrics.test_loss
    assert session_id == original.session_id == 1
    assert loaded == original.__class__(**{**original.__dict__, "runs": loaded.runs}) and nan != nan
    original.runs[2].metrics.test_loss = 0.41
    assert loaded == original
    assert loaded.runs[0].metrics.step_times_s == original.runs[0].metrics.step_times_s  # raw samples kept
    assert loaded.runs[1].metrics is None and loaded.runs[1].signal == 11


def test_framework_settings_round_trip_typed(tmp_path):
    fw = FrameworkSettings(version="2.13.0", device="cuda", device_name="NVIDIA H100", intra_op_threads=2,
                           inter_op_threads=2, tf32=True, matmul_precision="high", onednn=True, determinism=False,
                           companions={"cuda": "12.8"}, env={"OMP_NUM_THREADS": "2"}, extra={"cpu_capability": "AVX2"})
    original = result_set([dataclasses.replace(record(), environment=WorkerSettings(framework=fw))])
    with Store(tmp_path / "r.db", create=True) as store:
        loaded = store.load(store.save(original))
    assert loaded.runs[0].environment.framework == fw and loaded.runs[0].environment["framework"]["tf32"] is True


# one setup() dict per framework as a schema-6 session stored it (trimmed): field -> value it must map to
OLD_SETTINGS = [
    ({"version": "2.13.0", "device": "cuda", "cuda_device_name": "H100", "cuda_version": "12.8", "cudnn_version": 91,
      "intra_op_threads": 2, "inter_op_threads": 2, "inter_op_threads_error": None, "mkldnn_enabled": True,
      "tf32": False, "float32_matmul_precision": "highest", "deterministic_algorithms": False,
      "compile_backend": "inductor", "OMP_NUM_THREADS": "2"},
     dict(device_name="H100", tf32=False, matmul_precision="highest", onednn=True, determinism=False, xla=None,
          companions={"cuda": "12.8", "cudnn": 91}, env={"OMP_NUM_THREADS": "2"},
          extra={"compile_backend": "inductor"})),
    ({"version": "2.21.0", "device": "cuda", "gpu_name": "H100", "intra_op_threads": 2, "inter_op_threads": 2,
      "threads_error": "set too late", "onednn_enabled": False, "tensor_float_32": True, "op_determinism": True,
      "jit_auto_clustering": None, "XLA_FLAGS": None, "TF_DETERMINISTIC_OPS": "1"},
     dict(device_name="H100", threads_note="set too late", tf32=True, onednn=False, determinism=True,
          xla={"jit_auto_clustering": None, "XLA_FLAGS": None}, env={"TF_DETERMINISTIC_OPS": "1"})),
    ({"version": "0.10.2", "jaxlib_version": "0.10.2", "threads": None, "threads_note": "no knob", "device": "cpu",
      "device_name": "cpu:0 (cpu)", "default_matmul_precision": "highest", "tf32": False, "XLA_FLAGS": "--x"},
     dict(intra_op_threads=None, threads_note="no knob", device_name="cpu:0 (cpu)", matmul_precision="highest",
          companions={"jaxlib": "0.10.2"}, xla={"XLA_FLAGS": "--x"}, extra={"threads": None})),
    ({"keras_version": "3.13.0", "keras_backend": "jax", "version": "3.13.0", "jit_compile": True, "tf32": False,
      "framework_version": "0.10.2", "jaxlib_version": "0.10.2", "KERAS_BACKEND": "jax"},
     dict(version="3.13.0", companions={"jax": "0.10.2", "jaxlib": "0.10.2"}, xla={"jit_compile": True},
          env={"KERAS_BACKEND": "jax"}, extra={"keras_backend": "jax"})),
    ({"note": "numpy BLAS threads follow OMP_NUM_THREADS"},
     dict(version=None, threads_note="numpy BLAS threads follow OMP_NUM_THREADS", tf32=None, extra={})),
]


@pytest.mark.parametrize("old, typed", OLD_SETTINGS)
def test_framework_settings_of_an_old_session_are_typed_and_kept_as_stored(old, typed):
    fw = FrameworkSettings.from_dict(old)
    assert {k: getattr(fw, k) for k in typed} == typed
    assert fw.to_dict() == old and list(fw.to_dict()) == list(old)  # an old session exports as it was stored
    assert WorkerSettings.from_dict({"framework": old}).to_dict() == {"framework": old}


def test_sessions_get_increasing_ids_and_latest_is_the_default(tmp_path):
    with Store(tmp_path / "r.db", create=True) as store:
        ids = [store.save(result_set([record()])) for _ in range(3)]
        assert ids == [1, 2, 3] and store.resolve(None) == store.resolve("latest") == 3
        assert store.load().session_id == 3 and store.resolve("2") == 2
        with pytest.raises(UserError, match="no session 9 in .*; list them with 'isobench history'"):
            store.resolve("9")
        with pytest.raises(UserError, match="session must be a number or 'latest', got 'x'"):
            store.resolve("x")
        info = store.sessions()
    assert [(s.id, s.ok, s.failed, s.parity_passed, s.status) for s in info] == [(i, 1, 0, True, "finished")
                                                                                 for i in ids]


def test_a_newer_database_is_refused_with_upgrade_advice(tmp_path):
    path = tmp_path / "r.db"
    Store(path, create=True).close()
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for create in (False, True):
        with pytest.raises(UserError, match=f"schema version {SCHEMA_VERSION + 1}, newer .* upgrade isobench"):
            Store(path, create=create)


def test_migrations_run_forward_in_order_and_keep_the_data(tmp_path, monkeypatch):
    path = tmp_path / "r.db"
    with Store(path, create=True) as store:
        store.save(result_set([record()]))

    def later(conn):  # a later isobench adds a column
        conn.execute("ALTER TABLE sessions ADD COLUMN note TEXT")

    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, later])
    monkeypatch.setattr(db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert store.conn.execute("SELECT note FROM sessions").fetchall() == [(None,)]
        assert len(store.load(1).runs) == 1


@pytest.mark.parametrize("content", [b"this is not a database\n" * 10, bytes(range(256)) * 8,
                                     b"SQLite format 3\x00" + b"\xff" * 2000])
def test_a_corrupt_file_is_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "r.db"
    path.write_bytes(content)
    for create in (False, True):
        with pytest.raises(UserError) as e:
            Store(path, create=create)
        assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert path.read_bytes() == content and sorted(os.listdir(tmp_path)) == ["r.db"]


def test_another_programs_sqlite_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (x)")
    before = path.read_bytes()
    with pytest.raises(UserError, match="not an isobench results database"):
        Store(path, create=True)
    assert path.read_bytes() == before


def test_unusable_paths_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        Store(tmp_path, create=True)
    with pytest.raises(UserError, match="directory .*nope does not exist"):
        Store(tmp_path / "nope" / "r.db", create=True)
    with pytest.raises(UserError, match="no results database at .*'isobench run' creates it"):
        Store(tmp_path / "missing.db")
    with pytest.raises(UserError, match="cannot"):  # a read-only file system, even for root
        Store("/proc/isobench.db", create=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_a_read_only_database_cannot_be_written(tmp_path):
    path = tmp_path / "r.db"
    Store(path, create=True).close()
    path.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(UserError, match="results database"):
            Store(path, create=True).create_session(result_set([]))
    finally:
        tmp_path.chmod(0o755)


WRITER = """
import sys
from isobench.results import OK, RunRecord, RunSpec, ResultSet
from isobench.store import Store
with Store(sys.argv[1], create=True) as store:
    sid = store.create_session(ResultSet(config={}, environment={}, created_at="2026-11-27T10:00:00+00:00"))
    for i in range(int(sys.argv[2])):
        store.add_run(sid, RunRecord(RunSpec("seed-mlp", "numpy", "reference", i, 1), OK, order=i,
                                     stderr_tail="x" * 4000))
    store.finish_session(sid)
"""


def test_two_processes_writing_at_once_lose_and_duplicate_nothing(tmp_path):
    path, n = tmp_path / "r.db", 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    with Store(path) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        sessions = store.sessions()
        assert [(s.ok, s.status) for s in sessions] == [(n, "finished")] * 2
        for s in sessions:
            assert sorted(r.spec.repeat for r in store.load(s.id).runs) == list(range(n))


def test_an_interrupt_during_a_write_waits_for_the_commit(tmp_path):
    with Store(tmp_path / "r.db", create=True) as store:
        sid = store.create_session(result_set([]))
        with pytest.raises(KeyboardInterrupt):
            with store._transaction() as c:
                c.execute("UPDATE sessions SET status = 'interrupted' WHERE id = ?", (sid,))
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the statement and the COMMIT
        assert store.status(sid) == "interrupted"  # committed, then the interrupt was delivered
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_csv_export_is_tidy():
    crashed = RunRecord(RunSpec("seed-mlp", "jax", "jit", 0, 2), CRASHED, order=1, signal=11, error="killed, badly")
    results = result_set([record(), crashed])
    results.session_id = 4
    out = io.StringIO()
    write_csv(results, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == columns(RunRecord) and len(rows) == 2
    assert "step_times_s" not in columns(RunRecord) and "epoch_losses" not in columns(RunRecord)
    ok, bad = rows
    assert (ok["session_id"], ok["framework"], ok["mode"], ok["repeat"], ok["status"]) == ("4", "torch", "eager",
                                                                                          "0", "ok")
    assert float(ok["train_time_s"]) == 1.0 and int(ok["train_peak_rss_bytes"]) == 300 * 2**20
    assert ok["device_peak_bytes"] == "" and bad["train_time_s"] == "" and bad["error"] == "killed, badly"


OPENER = "import sys\nfrom isobench.store import Store\nStore(sys.argv[1], create=True).close()\n"


def test_processes_creating_the_same_new_database_at_once_all_succeed(tmp_path):
    # Regression: two creators could both hold a shared lock and both want the exclusive one ("database is
    # locked" without waiting), or read the application id before and the tables after another's migration.
    for round_ in range(8):
        path = tmp_path / f"r{round_}.db"
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(path)], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()
        with Store(path) as store:
            assert store.sessions() == []
