"""benchmarks/rounding.py: the perturbation, the comparison it prints, and one small run (no timings here)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from isobench.workloads import get_workload

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rounding.py"


@pytest.fixture(scope="module")
def rounding(benchmark_script):
    return benchmark_script("rounding")


PARAMS = {"dense/kernel": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8),
          "dense/bias": np.zeros(8, np.float32), "steps": np.arange(3)}


def test_perturbation_is_rounding_sized_seeded_and_leaves_the_neutral_weights_alone(rounding):
    assert all(rounding.perturb(PARAMS, 0.0, 1)[k] is v for k, v in PARAMS.items())
    a, b, c = (rounding.perturb(PARAMS, 1e-7, s) for s in (1, 1, 2))
    k = a["dense/kernel"]
    assert k.dtype == np.float32 and np.array_equal(k, b["dense/kernel"])  # the same copy for every framework
    assert not np.array_equal(k, PARAMS["dense/kernel"]) and not np.array_equal(k, c["dense/kernel"])
    rel = np.abs(k - PARAMS["dense/kernel"]) / np.abs(PARAMS["dense/kernel"])
    assert rel.max() < 1e-6  # a few float32 steps at most
    assert np.array_equal(a["dense/bias"], PARAMS["dense/bias"]) and a["steps"] is PARAMS["steps"]  # 0 stays 0


def rows(*accuracies):
    return [{"copy": i, "epoch_losses": [2.0, 1.0], "test_loss": 0.5, "test_accuracy": a}
            for i, a in enumerate(accuracies)]


def test_a_gap_inside_the_rounding_range_is_not_a_framework_difference(rounding):
    results = {"torch": rows(0.961, 0.942, 0.958), "jax": rows(0.944, 0.953, 0.944)}
    c = rounding.compare(results, "accuracy")
    assert c["gap"] == pytest.approx(0.017) and c["within"] == pytest.approx(0.019) and not c["beyond_rounding"]
    lines = rounding.report(results, get_workload("lenet5"), 1e-7, 1)
    assert lines[-1] == ("The frameworks' gap on the neutral weights (1.70 pp) is within the range that "
                         "rounding-size changes of the weights make inside one framework (up to 1.90 pp): "
                         "it is not evidence of a framework difference.")
    assert "PyTorch     copy 2     2.000000   1.000000  95.80%" in lines


def test_a_gap_beyond_the_rounding_range_is_said_to_be(rounding):
    results = {"torch": rows(0.96, 0.961, 0.959), "tensorflow": rows(0.90, 0.90, 0.901)}
    assert rounding.compare(results, "accuracy")["beyond_rounding"]
    assert rounding.report(results, get_workload("lenet5"), 1e-7, 1)[-1].startswith(
        "The frameworks' gap on the neutral weights (6.00 pp) is larger than the largest range")


@pytest.mark.slow
def test_one_small_run_trains_the_neutral_and_a_perturbed_copy():
    proc = subprocess.run([sys.executable, str(SCRIPT), "seed-mlp", "--frameworks", "torch", "--copies", "1",
                           "--epochs", "1", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows_ = [line.split() for line in proc.stdout.splitlines() if line.startswith("PyTorch ")]
    assert [r[1:3] for r in rows_] == [["neutral", "2.254964"], ["copy", "1"]]
    assert float(rows_[1][3]) == pytest.approx(2.254964, abs=1e-5)  # one float32 step moves the loss little


def test_dropout_is_named_as_a_cause_beside_rounding(rounding):
    results = {"torch": rows(0.958, 0.958), "jax": rows(0.944, 0.944)}  # vit-digits: equal under rounding
    lines = rounding.report(results, get_workload("vit-digits"), 1e-7, 1)
    assert lines[-2].startswith("vit-digits uses dropout: each framework draws its masks from its own generator")
    assert lines[-1].startswith("The frameworks' gap on the neutral weights (1.40 pp) is larger than")
    assert not any("uses dropout" in line for line in rounding.report(results, get_workload("lenet5"), 1e-7, 1))
