"""benchmarks/overhead.py hard-codes seed-mlp in its minimal loops: these tests keep it honest (no timings here)."""
import dataclasses

import numpy as np
import pytest

from isobench.runner.inputs import write_inputs
from isobench.workloads import get_workload


@pytest.fixture(scope="module")
def overhead(benchmark_script):
    return benchmark_script("overhead")


def test_minimal_loops_match_the_workload_definition(overhead, tmp_path):
    workload = get_workload(overhead.WORKLOAD)
    overhead.check_workload(workload, write_inputs(workload, tmp_path / "inputs.npz"))  # raises if it moved


def test_a_changed_workload_is_refused(overhead, tmp_path):
    workload = get_workload(overhead.WORKLOAD)
    inputs = write_inputs(workload, tmp_path / "inputs.npz")
    with pytest.raises(SystemExit, match="batch_size"):
        overhead.check_workload(dataclasses.replace(workload, batch_size=64), inputs)


def test_the_verdict_needs_the_whole_interval(overhead):
    assert overhead.verdict(1.1) == "not shown"  # e.g. a point of 1.02 whose interval reaches past 1.05
    assert overhead.verdict(1.05) == "within 5%"
    assert overhead.verdict(1.02) == "within 5%"


@pytest.mark.slow
def test_interleaved_rounds_do_identical_work(overhead, tmp_path):
    """One interleaved process (PyTorch): the minimal loop and isobench's worker function train the same
    model on the same data in the same order, so their epoch losses agree bit for bit."""
    pytest.importorskip("torch")
    workload = get_workload(overhead.WORKLOAD)
    inputs = write_inputs(workload, tmp_path / "inputs.npz")
    rows = overhead.run_interleaved("torch", tmp_path, inputs, 1, rounds=2, seed=0, timeout=300)
    assert len(rows) == 2
    for row in rows:
        minimal, isobench = row["minimal"], row["isobench"]
        assert len(minimal["epoch_losses"]) == len(isobench["epoch_losses"]) == workload.epochs
        np.testing.assert_array_equal(minimal["epoch_losses"], isobench["epoch_losses"])
        for run in (minimal, isobench):
            assert 0 < run["first_step_s"] < run["train_time_s"]
