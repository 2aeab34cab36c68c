"""The optimizer implementation axis (``library``: the framework's optimizer library; ``neutral``: isobench's own
rules): its resolution, plan, refusals, labels, JSON form and database migration, without workers; the slow
parity of the library optimizers runs in tests/test_frameworks_e2e.py."""
import json
import sqlite3
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from isobench.backends import OPTIMIZER_IMPLS, get_backend
from isobench.backends.common import keras_difference
from isobench.config import OPTIMIZER, RunChoices, RunConfig, resolve_optimizers, resolve_run
from isobench.errors import UserError
from isobench.results import CRASHED, Cell, ResultSet, RunRecord, RunSpec
from isobench.runner.parity import _library_notes, _tolerances
from isobench.runner.plan import make_plan
from isobench.stats import Group
from isobench.store import Store
from isobench.store.export import columns
from isobench.workloads import get_workload
from isobench.workloads.spec import LIBRARY_ATOL, ScheduleSpec

DATA = Path(__file__).parent / "data"


def test_the_default_is_the_library_and_a_stored_config_without_the_axis_ran_neutral():
    assert OPTIMIZER == OPTIMIZER_IMPLS[0] == "library"
    config, notes = resolve_run(RunChoices(frameworks="torch,jax"))
    assert config.optimizers == ["library"] and notes == []
    assert [str(c) for c in config.cells()] == ["torch/eager/library", "jax/jit/library"]
    old = {k: v for k, v in asdict(config).items() if k != "optimizers"}
    assert RunConfig.from_dict(old).optimizers == ["neutral"]  # what it ran: --resume plans those cells
    assert RunConfig.from_dict(asdict(config)) == config


def test_all_and_lists_resolve_in_order_and_the_reference_runs_its_own_rules():
    assert resolve_optimizers("all", ["torch"]) == (["library", "neutral"], [])
    assert resolve_optimizers(" neutral, library,neutral ", ["jax"]) == (["neutral", "library"], [])
    names, notes = resolve_optimizers("library", ["torch", "numpy"])
    assert notes == ["NumPy (float64 reference) has no library optimizer implementation; it runs neutral"]
    config = RunConfig(["seed-mlp"], ["torch", "numpy"], optimizers=names)
    assert config.cells() == [Cell("torch", "eager", "fp32", "library"), Cell("numpy", "reference", "fp32", "neutral")]


@pytest.mark.parametrize("text,frameworks,message", [
    ("adam", ["torch"], "--optimizer: unknown implementation 'adam'; choose from: library, neutral, all"),
    (",", ["torch"], "--optimizer is empty"),
    ("library", ["numpy"], "--optimizer library: none of the chosen frameworks has it (they have: NumPy (float64 "
                           "reference) neutral)"),
])
def test_bad_choices_are_one_line_errors(text, frameworks, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_optimizers(text, frameworks)


def test_the_plan_has_one_cell_per_implementation_and_private_workloads_run_both():
    config = RunConfig(["dp-mlp", "seed-mlp"], ["torch", "jax"], optimizers=["library", "neutral"], repeats=2)
    plan = make_plan(config.workloads, config.cells(), config.repeats, threads=1, seed=3, refused=config.refused())
    assert len(plan) == 2 * 2 * 2 * 2
    assert {(s.workload, s.framework, s.optimizer) for s in plan if s.repeat == 0} == \
        {(w, f, o) for w in config.workloads for f in ("torch", "jax") for o in ("library", "neutral")}


def test_a_backend_refuses_an_implementation_it_lacks_before_building():
    with pytest.raises(ValueError, match="PyTorch has no 'optax' optimizer implementation; choose from: library, "
                                         "neutral"):
        get_backend("torch").build(get_workload("seed-mlp"), {}, None, "eager", optimizer="optax")
    with pytest.raises(ValueError, match="NumPy .* has no 'library' optimizer implementation"):
        get_backend("numpy").build(get_workload("seed-mlp"), {}, None, "reference", optimizer="library")


def test_labels_name_the_library_so_that_an_old_label_keeps_its_meaning():
    spec = RunSpec("seed-mlp", "jax", "jit", 0, 2)
    assert spec.optimizer == "neutral" and Group.of(spec).label == "JAX (jit)"  # as every older report shows it
    lib = replace(spec, optimizer="library", precision="bf16")
    assert Group.of(lib).label == "JAX (jit, bf16, library)" and str(lib.cell) == "jax/jit/bf16/library"
    assert Group.of(lib) != Group.of(replace(lib, optimizer="neutral"))  # compare keys and statistics apart
    assert sorted([Group.of(replace(lib, optimizer="neutral")), Group.of(lib)], key=Group.sort_key)[0] == Group.of(lib)


def test_json_round_trip_keeps_the_implementation_and_old_runs_read_as_neutral():
    rec = RunRecord(RunSpec("seed-mlp", "torch", "eager", 0, 2, optimizer="library"), CRASHED, signal=11)
    d = rec.to_dict()
    assert d["optimizer"] == "library" and RunRecord.from_dict(json.loads(json.dumps(d))) == rec
    del d["optimizer"]
    assert RunRecord.from_dict(d).spec.optimizer == "neutral"
    cols = columns(RunRecord)
    assert "optimizer" in cols and cols.index("optimizer") == cols.index("precision") + 1


def test_a_database_from_before_the_axis_migrates_keeping_rows_ids_and_index(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as c:
        c.executescript((DATA / "v1.sql").read_text())
        before = c.execute('SELECT id, workload, framework, mode, repeat, status, "order" FROM runs ORDER BY id'
                           ).fetchall()
    with Store(path, create=True) as store:
        rows = store.conn.execute('SELECT id, workload, framework, mode, repeat, status, "order", optimizer FROM runs '
                                  'ORDER BY id').fetchall()
        assert [r[:-1] for r in rows] == before and {r[-1] for r in rows} == {"neutral"}
        schema = store.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
        assert "UNIQUE (session_id, workload, framework, mode, repeat, threads, device, precision, optimizer)" in schema
        assert store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' AND "
                                  "sql IS NOT NULL").fetchall() == [("runs_by_session",)]  # and the UNIQUE's own
        old = store.load(1).runs[0]
        assert old.spec.optimizer == "neutral"
        store.add_run(1, replace(old, spec=replace(old.spec, optimizer="library")))  # the same cell, other impl
        assert store.conn.execute("SELECT max(id) FROM runs").fetchone()[0] == max(r[0] for r in before) + 1
        with pytest.raises(UserError, match="UNIQUE constraint failed"):
            store.add_run(1, old)
        assert [r.spec.optimizer for r in store.load(1).runs].count("library") == 1


def test_keras_rules_that_depart_from_the_spec_get_the_library_tolerances_and_a_note():
    lstm, lenet = get_workload("lstm-digits"), get_workload("lenet5")
    assert "epsilon on sqrt(v)" in keras_difference(lstm) and keras_difference(lenet) is None
    scheduled = replace(lenet, schedule=ScheduleSpec(kind="cosine", warmup_steps=20))
    assert "inside the velocity" in keras_difference(scheduled)
    rmsprop = replace(lstm, optimizer=replace(lstm.optimizer, kind="rmsprop"))
    assert "inside the square root" in keras_difference(rmsprop)
    for framework in ("tensorflow", "keras-jax"):
        assert get_backend(framework).library_difference(lstm) == keras_difference(lstm)
    for framework in ("torch", "jax", "numpy"):
        assert get_backend(framework).library_difference(lstm) is None
    tol = _tolerances(lstm, "tensorflow", "fp32", "library")
    assert (tol.loss_atol, tol.epoch_loss_atol, tol.forward_atol) == (LIBRARY_ATOL["loss_atol"],
                                                                       LIBRARY_ATOL["epoch_loss_atol"], 1e-5)
    assert _tolerances(lstm, "tensorflow", "fp32", "neutral") == lstm.parity == _tolerances(lstm, "jax", "fp32",
                                                                                           "library")
    cells = [Cell("tensorflow", "graph", "fp32", "library"), Cell("keras-jax", "fit", "fp32", "library"),
             Cell("tensorflow", "graph", "fp32", "neutral")]
    [note] = _library_notes(lstm, cells)
    assert note.startswith("library optimizer of TensorFlow, Keras (JAX): Keras's Adam")


def cli(capsys, *args) -> tuple[int, str, str]:
    """isobench's main() in this process: (exit code, stdout, stderr)."""
    from isobench.cli import main
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse: --help, usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,message", [
    (["run", "--optimizer", "sgd", "--no-store"], "--optimizer: unknown implementation 'sgd'"),
    (["parity", "seed-mlp", "--frameworks", "numpy", "--optimizer", "library"], "none of the chosen frameworks"),
    (["run", "--resume", "1", "--optimizer", "neutral"], "--resume reruns the stored plan of the session; drop "
                                                        "--optimizer"),
])
def test_the_command_line_refuses_in_one_line(args, message, tmp_path, capsys):
    with Store(tmp_path / "r.db", create=True) as store:  # a session to resume
        store.save(ResultSet.read_json(DATA / "golden" / "session.json"))
    code, out, err = cli(capsys, *args, *(["--db", tmp_path / "r.db"] if "--resume" in args else []))
    assert (code, out) == (2, "") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["run", "parity"])
def test_help_explains_the_flag(command, capsys):
    code, out, _ = cli(capsys, command, "--help")
    out = " ".join(out.split())
    assert code == 0 and "--optimizer LIST" in out
    assert "library (default library" in out and "neutral (isobench's own" in out


def test_compare_says_when_two_sessions_differ_only_in_the_implementation(tmp_path, capsys):
    session = json.loads((DATA / "golden" / "session.json").read_text())
    db = tmp_path / "r.db"
    with Store(db, create=True) as store:
        store.save(ResultSet.from_dict(session))
        for run in session["runs"]:
            run["optimizer"] = "library"
        store.save(ResultSet.from_dict(session))
    code, _, err = cli(capsys, "compare", "1", "2", "--db", db)
    assert code == 2 and "optimizer implementations: neutral and library; see --optimizer" in err
