"""Schema version 1 -> 2: a database and a JSON file written by isobench before the executor's marks became fields
(``lost``, ``replaces``) still open, migrate, and render as before. tests/data/v1.sql is the golden session stored by
the version-1 Store, dumped with iterdump (its header pragmas appended)."""
import json
import sqlite3
from pathlib import Path

import pytest

from isobench.cli import main
from isobench.errors import UserError
from isobench.results import CRASHED, SCHEMA_VERSION, ResultSet, RunRecord, RunSpec
from isobench.store import Store, db

DATA = Path(__file__).parent / "data"
LOST = ("NodeDiedError", None)
REPLACES = (None, "crashed record: worker killed by signal SIGSEGV")


@pytest.fixture
def v1_db(tmp_path) -> Path:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as c:
        c.executescript((DATA / "v1.sql").read_text())
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
    return path


def marks(results: ResultSet) -> list[tuple]:
    return [(r.lost, r.replaces) for r in results.runs if r.lost or r.replaces]


def test_a_version_1_database_migrates_and_keeps_every_run(v1_db):
    with Store(v1_db) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        assert store.load(1).privacy == {}  # sessions older than the privacy column have no guarantee
        results = store.load(1)
        raw = store.conn.execute("SELECT lost, replaces, environment FROM runs ORDER BY id").fetchall()
    assert marks(results) == [REPLACES, LOST]
    assert [(lost, replaces) for lost, replaces, _ in raw if lost or replaces] == [REPLACES, LOST]
    assert not any("lost_by_executor" in env or "replaces" in env for _, _, env in raw)  # moved, not copied
    golden = ResultSet.from_dict(json.loads((DATA / "golden" / "session.json").read_text()))
    assert results.runs == golden.runs and results.config == golden.config and results.parity == golden.parity
    assert results.runs[0].environment.threads.threads == 2 and results.runs[0].environment["seed"] == 0


def test_a_migrated_database_takes_new_runs_with_their_marks(v1_db):
    spec = RunSpec("seed-mlp", "jax", "jit", 4, 2)
    with Store(v1_db, create=True) as store:
        store.replace_run(1, RunRecord(spec, CRASHED, order=16, error="lost again", lost="ActorDiedError"))
        [run] = [r for r in store.load(1).runs if r.spec == spec]
    assert (run.lost, run.replaces, run.environment.to_dict()) == ("ActorDiedError", None, {})


def test_show_renders_a_migrated_database_as_before(v1_db, capsys):
    assert main(["show", "--db", str(v1_db)]) == 0
    assert capsys.readouterr().out == (DATA / "golden" / "show.txt").read_text()


def test_a_version_1_json_file_reads_with_the_marks_as_fields(tmp_path):
    results = ResultSet.read_json(DATA / "golden" / "session.json")  # written by schema version 1
    assert results.schema_version == SCHEMA_VERSION and marks(results) == [REPLACES, LOST]
    assert all("replaces" not in r.environment and "lost_by_executor" not in r.environment for r in results.runs)
    results.write_json(tmp_path / "v2.json")
    written = json.loads((tmp_path / "v2.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION and written["privacy"] == {} and ResultSet.read_json(tmp_path / "v2.json") == results
    assert [(r["lost"], r["replaces"]) for r in written["runs"] if r["lost"] or r["replaces"]] == [REPLACES, LOST]


def test_a_newer_json_file_is_refused(tmp_path):
    (tmp_path / "new.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "runs": []}))
    with pytest.raises(UserError, match=f"schema {SCHEMA_VERSION + 1}, newer than this isobench"):
        ResultSet.read_json(tmp_path / "new.json")
