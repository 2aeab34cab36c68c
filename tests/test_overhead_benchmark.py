"""benchmarks/overhead.py hard-codes seed-mlp in its minimal loops: these tests keep it honest (no timings here)."""
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from isobench.runner.inputs import write_inputs
from isobench.workloads import get_workload

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "overhead.py"


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("overhead_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minimal_loops_match_the_workload_definition(overhead, tmp_path):
    workload = get_workload(overhead.WORKLOAD)
    overhead.check_workload(workload, write_inputs(workload, tmp_path / "inputs.npz"))  # raises if it moved


def test_a_changed_workload_is_refused(overhead, tmp_path):
    workload = get_workload(overhead.WORKLOAD)
    inputs = write_inputs(workload, tmp_path / "inputs.npz")
    with pytest.raises(SystemExit, match="batch_size"):
        overhead.check_workload(dataclasses.replace(workload, batch_size=64), inputs)


def test_paired_ratio_is_the_median_over_pairs_and_the_verdict_needs_the_whole_interval(overhead):
    ratio, low, high = overhead.paired_ratio_ci([1.1, 2.2, 3.3, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert ratio == pytest.approx(1.1)  # pairs 1.1, 1.1, 1.1, 1.0, 1.0
    assert low == pytest.approx(1.0) and high == pytest.approx(1.1)
    assert overhead.verdict(high) == "not shown"  # the point is 1.1, and the interval reaches past 1.05
    ratio, low, high = overhead.paired_ratio_ci([1.01, 2.04, 3.0, 4.08], [1.0, 2.0, 3.0, 4.0])
    assert ratio == pytest.approx(1.015) and high <= 1.02 + 1e-12
    assert overhead.verdict(high) == "within 5%"


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
