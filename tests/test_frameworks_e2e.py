"""End to end with the real frameworks, each in its own worker process (slow: imports all three)."""
import pytest

from isobench.backends import DEFAULT_FRAMEWORKS, get_backend, installed_frameworks
from isobench.results import ResultSet
from isobench.runner import RunConfig, run_benchmark
from isobench.runner.parity import run_parity
from isobench.workloads import get_workload

pytestmark = pytest.mark.slow
FRAMEWORKS = installed_frameworks()
needs_all = pytest.mark.skipif(len(FRAMEWORKS) < len(DEFAULT_FRAMEWORKS),
                               reason=f"needs torch, tensorflow and jax installed; have {FRAMEWORKS}")
CELLS = [(f, get_backend(f).modes[0]) for f in FRAMEWORKS]


@needs_all
def test_parity_seed_mlp_across_three_frameworks():
    report = run_parity("seed-mlp", CELLS, threads=1)
    assert report.passed, [(f.framework, f.status, f.error, [c for c in f.checks if not c.passed])
                           for f in report.frameworks]
    tol = get_workload("seed-mlp").parity
    assert [f.framework for f in report.frameworks] == ["torch", "tensorflow", "jax"]
    for f in report.frameworks:
        checks = {c.name: c for c in f.checks}
        assert checks["epoch mean loss, 10 epochs"].max_abs_diff <= tol.epoch_loss_atol == 1e-4
        assert checks["test accuracy"].max_abs_diff == 0
        assert len(f.epoch_losses) == 10
    cross = {c.name: c.max_abs_diff for c in report.cross}
    assert cross["epoch mean loss between frameworks"] <= 1e-4 and cross["test accuracy between frameworks"] == 0


@needs_all
def test_one_run_per_framework_has_plausible_metrics_and_identical_inputs(tmp_path):
    rs = run_benchmark(RunConfig(workloads=["seed-mlp"], frameworks=FRAMEWORKS, repeats=1, threads=1))
    assert [r.status for r in rs.runs] == ["ok"] * 3, [(r.spec.framework, r.error, r.stderr_tail) for r in rs.runs]
    lo, hi = get_workload("seed-mlp").accuracy_band
    for r in rs.runs:
        m = r.metrics
        assert lo <= m.test_accuracy <= hi
        assert m.epoch_losses[-1] < m.epoch_losses[0]
        assert 0 < m.step_time_median_s < m.train_time_s and m.first_step_s > 0 and m.import_s > 0
        assert 50 * 2**20 < m.rss_after_import_bytes <= m.train_peak_rss_bytes <= m.process_peak_rss_bytes
        assert r.environment["framework"]["version"]
        assert r.fingerprints["loaded_weights"] == r.fingerprints["init_weights"]
    for key in ("data", "orders", "init_weights", "loaded_weights"):
        assert len({r.fingerprints[key] for r in rs.runs}) == 1, key
    assert {r.metrics.test_accuracy for r in rs.runs} == {rs.runs[0].metrics.test_accuracy}
    rs.write_json(tmp_path / "r.json")
    back = ResultSet.read_json(tmp_path / "r.json")
    assert [r.to_dict() for r in back.runs] == [r.to_dict() for r in rs.runs]
