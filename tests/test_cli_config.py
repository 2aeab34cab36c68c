"""The one path from a command's flags to its work: choices -> resolve -> a checked config for run, deploy, parity and
peak; threads checked by every config (a resumed one too); cells that cannot build a workload refused when the session
is planned, from the check the worker's build makes. No worker starts here."""
from dataclasses import replace
from pathlib import Path

import pytest

from isobench.cli import main
from isobench.config import (DeployConfig, ParityChoices, PeakChoices, RunChoices, RunConfig, resolve_parity,
                             resolve_peak, resolve_run)
from isobench.errors import UserError
from isobench.measure import default_threads
from isobench.results import Cell, ResultSet
from isobench.runner.plan import make_plan
from isobench.store import Store

DATA = Path(__file__).parent / "data"
TOO_MANY = default_threads() + 1


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_private_workload_in_bf16_is_refused_in_one_line_before_any_worker(capsys):
    code, out, err = cli(capsys, "run", "dp-mlp", "--precision", "bf16", "--frameworks", "torch,jax", "--no-store")
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert err.strip() == ("isobench: error: dp-mlp cannot run in any chosen cell: torch/eager/bf16/library, "
                           "jax/jit/bf16/library: dp-sgd runs in fp32 only, in every backend; use --precision fp32")


def test_cells_that_cannot_build_a_workload_are_left_out_of_the_plan_with_a_note():
    config, notes = resolve_run(RunChoices(workloads=["dp-mlp"], frameworks="torch,keras-torch",
                                           precision="fp32,bf16"))
    keras, bf16 = Cell("keras-torch", "fit", "fp32", "library"), Cell("torch", "eager", "bf16", "library")
    assert set(config.refused()) == {("dp-mlp", keras), ("dp-mlp", bf16), ("dp-mlp", replace(keras, precision="bf16"))}
    left_out = [n for n in notes if n.startswith("dp-mlp: left out")]
    assert len(left_out) == 1 and "keras-torch/fit/library" in left_out[0] and "no dp-sgd" in left_out[0] and \
        "torch/eager/bf16/library" in left_out[0] and "fp32 only" in left_out[0]
    plan = make_plan(config.workloads, config.cells(), 1, 1, refused=config.refused())
    assert {(s.workload, s.framework, s.precision) for s in plan} == {
        ("dp-mlp", "torch", "fp32"), ("seed-mlp", "torch", "fp32"), ("seed-mlp", "torch", "bf16"),
        ("seed-mlp", "keras-torch", "fp32"), ("seed-mlp", "keras-torch", "bf16")}  # the counterpart runs in bf16


def test_a_private_mode_on_a_non_private_workload_is_left_out_silently():
    config, notes = resolve_run(RunChoices(workloads=["dp-mlp"], frameworks="torch", modes="all"))
    assert ("seed-mlp", Cell("torch", "opacus", "fp32", "library")) in config.refused()
    assert not any("left out" in n for n in notes)


def test_parity_leaves_out_a_default_workload_no_cell_can_build_but_refuses_a_named_one():
    config, notes = resolve_parity(ParityChoices(frameworks="torch,keras-jax"))
    assert [str(c) for c in config.cells["dp-mlp"]] == ["torch/eager/library"]
    assert [str(c) for c in config.cells["seed-mlp"]] == ["torch/eager/library", "keras-jax/fit/library"]
    config, notes = resolve_parity(ParityChoices(frameworks="keras-jax"))
    assert "dp-mlp" not in config.cells and "seed-mlp" in config.cells
    assert any(n.startswith("dp-mlp is left out, no chosen cell can run it: keras-jax/fit/library") for n in notes)
    with pytest.raises(UserError, match="dp-mlp cannot run in any chosen cell: keras-jax/fit/library: Keras"):
        resolve_parity(ParityChoices(workloads=["dp-mlp"], frameworks="keras-jax"))


def test_peak_resolves_its_frameworks_with_numpy_first_on_the_cpu():
    config, notes = resolve_peak(PeakChoices(frameworks="jax, torch", threads=1))
    assert (config.frameworks, config.threads, config.device, notes) == (["numpy", "jax", "torch"], 1, "cpu", [])
    with pytest.raises(UserError, match="no peak measurement for keras-torch; choose from: numpy, torch"):
        resolve_peak(PeakChoices(frameworks="keras-torch"))


@pytest.mark.parametrize("config", [RunConfig(["seed-mlp"], ["numpy"]),
                                    DeployConfig(["seed-mlp"], ["numpy/reference"])])
def test_every_config_checks_its_threads(config):
    for threads, message in ((TOO_MANY, f"--threads {TOO_MANY} exceeds the {TOO_MANY - 1} CPUs"),
                             (0, "--threads 0: give at least 1")):
        with pytest.raises(UserError, match=message):
            replace(config, threads=threads).check()


@pytest.mark.parametrize("args,message", [
    (["parity", "seed-mlp", "--threads", TOO_MANY], f"--threads {TOO_MANY} exceeds"),
    (["peak", "--threads", TOO_MANY], f"--threads {TOO_MANY} exceeds"),
    (["deploy", "--frameworks", "numpy", "--threads", TOO_MANY, "--no-store"], f"--threads {TOO_MANY} exceeds"),
])
def test_every_command_that_runs_workers_refuses_too_many_threads(args, message, capsys):
    code, out, err = cli(capsys, *args)
    assert (code, out) == (2, "") and message in err and len(err.strip().splitlines()) == 1


def test_a_stored_session_resumed_on_a_smaller_machine_is_refused_in_one_line(tmp_path, capsys):
    results = ResultSet.read_json(DATA / "golden" / "session.json")
    results.config["threads"] = TOO_MANY
    with Store(tmp_path / "r.db", create=True) as store:
        session = store.save(results)
    code, out, err = cli(capsys, "run", "--resume", session, "--db", tmp_path / "r.db")
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert f"stored session {session}: --threads {TOO_MANY} exceeds the {TOO_MANY - 1} CPUs" in err
