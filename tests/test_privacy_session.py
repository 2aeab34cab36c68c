"""The privacy guarantee of a session (computed once in the parent by the accountant library, carried in the
JSON, the database and every report) and the cost-of-privacy table of a DP-SGD workload beside its counterpart."""
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from isobench.cli import main
from isobench.config import RunChoices, RunConfig, resolve_run
from isobench.report import model, words
from isobench.report.html import render_html
from isobench.report.markdown import render_markdown
from isobench.report.sessions import render_results
from isobench.results import PrivacyRecord, ResultSet, RunRecord
from isobench.runner.session import plan_session
from isobench.store import Store
from isobench.store.export import tidy_rows
from test_report import runs  # known seed-mlp runs: 3 frameworks x 5 repeats

HEADER = ("DP-SGD: epsilon 2.04 at delta 1e-4 (PLD, dp-accounting 0.6.0; RDP: 2.33), clip 1.0, noise 1.1, q 0.0223, "
          "450 steps")


def test_the_sessions_epsilons_are_the_accountants_for_the_workloads_q_sigma_steps_and_delta():
    """RDP and PLD from dp-accounting called here (about 0.7 s for the two PLD compositions on a 1e-4 grid)."""
    dp = pytest.importorskip("dp_accounting")
    session = plan_session(RunConfig(workloads=["dp-mlp", "dp-lenet5", "seed-mlp"], frameworks=["numpy"], repeats=1))
    g = session.results.privacy
    assert set(g) == {"dp-mlp", "dp-lenet5"}  # seed-mlp is not private: nothing recorded
    assert g["dp-mlp"].counterpart == "seed-mlp" and g["dp-lenet5"].counterpart is None  # lenet5 not run
    for name, epochs in (("dp-mlp", 10), ("dp-lenet5", 6)):
        r = g[name]
        q, steps = 32 / r.n_train, epochs * -(-r.n_train // 32)  # digits: 1438 training examples
        assert (r.sampling_rate, r.steps, r.delta, r.noise_multiplier, r.clip) == \
            (pytest.approx(q), steps, pytest.approx(1e-4), 1.1, 1.0)
        run = dp.SelfComposedDpEvent(dp.PoissonSampledDpEvent(q, dp.GaussianDpEvent(1.1)), steps)
        rdp = dp.rdp.RdpAccountant(r.orders)
        pld = dp.pld.PLDAccountant(dp.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4)
        rdp.compose(run), pld.compose(run)
        assert r.epsilon_rdp == pytest.approx(rdp.get_epsilon(1e-4), rel=1e-12)
        assert r.epsilon_pld == pytest.approx(pld.get_epsilon(1e-4), rel=1e-12) and r.pld_discretization == 1e-4
        assert r.epsilon == r.epsilon_pld < r.epsilon_rdp and r.accountant == "dp-accounting PLD"
        assert r.orders == list(dp.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS) and r.accountant_version
    assert (g["dp-mlp"].epsilon_pld, g["dp-mlp"].epsilon_rdp) == (pytest.approx(2.040, abs=1e-3),
                                                                  pytest.approx(2.333, abs=1e-3))
    assert (g["dp-lenet5"].epsilon_pld, g["dp-lenet5"].epsilon_rdp) == (pytest.approx(1.577, abs=1e-3),
                                                                        pytest.approx(1.843, abs=1e-3))


def test_a_session_recorded_before_pld_still_shows_its_rdp_epsilon():
    old = {"epsilon": 2.3329615964289685, "delta": 1e-4, "noise_multiplier": 1.1, "sampling": "poisson",
           "sampling_rate": 0.0222531, "steps": 450, "accountant": "dp-accounting RDP", "note": "", "clip": 1.0,
           "n_train": 1438, "accountant_version": "0.6.0", "orders": [1.25], "optimal_order": 6.0,
           "counterpart": "seed-mlp"}
    record = PrivacyRecord.from_dict(old)
    assert record.epsilon_rdp is None and json.dumps(record.to_dict()) == json.dumps(old)  # written back as stored
    assert words.guarantee(record) == \
        "DP-SGD: epsilon 2.33 at delta 1e-4 (RDP, dp-accounting 0.6.0), clip 1.0, noise 1.1, q 0.0223, 450 steps"


def test_run_adds_the_counterpart_unless_told_not_to():
    config, notes = resolve_run(RunChoices(workloads=["dp-mlp"], frameworks="numpy"))
    assert config.workloads == ["dp-mlp", "seed-mlp"] and any("counterpart seed-mlp" in n for n in notes)
    config, notes = resolve_run(RunChoices(workloads=["dp-mlp"], frameworks="numpy", no_counterpart=True))
    assert config.workloads == ["dp-mlp"] and not any("counterpart" in n for n in notes)
    config, _ = resolve_run(RunChoices(workloads=["seed-mlp", "dp-mlp"], frameworks="numpy"))
    assert config.workloads == ["seed-mlp", "dp-mlp"]  # already there: not twice


def private_session() -> ResultSet:
    """seed-mlp (tests.test_report's known runs) and dp-mlp: 3x its steady step and training times, 1.25x its
    training peak RSS, 5 pp less accuracy."""
    public = runs()
    private = [RunRecord(replace(r.spec, workload="dp-mlp"), r.status, metrics=replace(
        r.metrics, step_time_median_s=3 * r.metrics.step_time_median_s, train_time_s=3 * r.metrics.train_time_s,
        train_peak_rss_bytes=int(1.25 * r.metrics.train_peak_rss_bytes),
        test_accuracy=r.metrics.test_accuracy - 0.05)) for r in public]
    session = plan_session(RunConfig(workloads=["dp-mlp", "seed-mlp"], frameworks=["numpy"], repeats=1))
    return ResultSet(config={}, environment={}, runs=private + public, privacy=session.results.privacy)


COST = """\
Cost of privacy: dp-mlp (DP-SGD) against seed-mlp (its non-private counterpart, same session), per framework:
median of dp-mlp vs median of seed-mlp over ok processes, then dp-mlp / seed-mlp [95% CI, bootstrap over
processes]; test accuracy: the difference in pp. seed-mlp keeps its own optimizer settings: the private
recipe against the usual non-private one, not clipping and noise alone.
                   PyTorch (eager)                        TensorFlow (graph)                     JAX (jit)
                   n=5 vs n=5                             n=5 vs n=5                             n=5 vs n=5
steady step time   6.93 vs 2.31 ms     3.00x [2.91-3.09]  13.0 vs 4.32 ms     3.00x [2.91-3.09]  6.99 vs 2.33 ms   3.00x [2.91-3.09]
training time      6.93 vs 2.31 s      3.00x [2.91-3.09]  13.0 vs 4.32 s      3.00x [2.91-3.09]  7.05 vs 2.35 s    3.00x [2.91-3.09]
training peak RSS  0.378 vs 0.303 GiB  1.25x [1.21-1.29]  0.745 vs 0.596 GiB  1.25x [1.21-1.29]  1.34 vs 1.07 GiB  1.25x [1.21-1.29]
test accuracy      82.7 vs 87.7%    -5.0 pp [-5.0, -5.0]  82.7 vs 87.7%    -5.0 pp [-5.0, -5.0]  83.0 vs 88.0%  -5.0 pp [-5.3, -4.7]"""


def test_a_session_with_dp_mlp_and_seed_mlp_renders_the_cost_of_privacy_from_known_data(tmp_path):
    pytest.importorskip("dp_accounting")
    results = private_session()
    text = render_results(results)
    assert text.startswith(HEADER + "\ndp-mlp: one value per worker process") and COST in text
    assert text.count("DP-SGD: epsilon") == 1  # seed-mlp's block has no guarantee
    md = render_markdown(results)
    assert "#### Cost of privacy: dp-mlp against seed-mlp" in md and HEADER in md
    assert r"| steady step time | 6.93 vs 2.31 ms · 3.00x \[2.91-3.09\] |" in md
    html = render_html(results)
    assert HEADER in html and "Cost of privacy" in html and "<td class=num>6.93 vs 2.31 ms<span class=vs>3.00x [2.91-3.09]</span>" in html


def test_a_private_session_without_its_counterpart_shows_the_guarantee_and_no_cost():
    pytest.importorskip("dp_accounting")
    results = private_session()
    results = replace(results, runs=[r for r in results.runs if r.spec.workload == "dp-mlp"])
    text = render_results(results)
    assert text.startswith(HEADER) and "Cost of privacy" not in text
    assert "Cost of privacy" not in render_markdown(results) and "Cost of privacy" not in render_html(results)
    public = replace(results, runs=runs(), privacy={})
    assert "DP-SGD" not in render_results(public) and "DP-SGD" not in render_markdown(public)
    assert model.privacy(public, "seed-mlp") is None


def test_the_guarantee_round_trips_through_json_the_database_show_and_export(tmp_path, capsys):
    pytest.importorskip("dp_accounting")
    results = private_session()
    results.write_json(tmp_path / "s.json")
    assert ResultSet.read_json(tmp_path / "s.json").privacy == results.privacy
    old = json.loads((tmp_path / "s.json").read_text())
    del old["privacy"]
    old["schema_version"] = 3
    assert ResultSet.from_dict(old).privacy == {}  # an older file reads with it empty
    db = tmp_path / "x.db"
    with Store(db, create=True) as store:
        sid = store.save(results)
        assert store.load(sid).privacy == results.privacy
    assert main(["show", "--db", str(db)]) == 0
    assert HEADER in capsys.readouterr().out
    assert main(["export", "--db", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["privacy"]["dp-mlp"]["epsilon"] == results.privacy["dp-mlp"].epsilon
    assert main(["export", "--db", str(db), "--format", "csv"]) == 0
    head, first = capsys.readouterr().out.splitlines()[:2]
    rows = tidy_rows(results)
    assert "epsilon" in head.split(",") and {r["epsilon"] for r in rows if r["workload"] == "dp-mlp"} == \
        {results.privacy["dp-mlp"].epsilon} and {r["epsilon"] for r in rows if r["workload"] == "seed-mlp"} == {None}


@pytest.mark.slow
def test_isobench_run_dp_mlp_runs_its_counterpart_and_prints_the_guarantee_and_the_cost(tmp_path):
    """The float64 reference in real workers (about 20 s): the header, the cost table and the stored guarantee."""
    pytest.importorskip("dp_accounting")
    db, out = tmp_path / "x.db", tmp_path / "run.json"
    p = subprocess.run([sys.executable, "-m", "isobench", "run", "dp-mlp", "--frameworks", "numpy", "--repeats", "1",
                        "--no-peak", "--no-parity", "--warmup", "0", "--db", str(db), "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "dp-mlp runs with its non-private counterpart seed-mlp" in p.stderr
    assert HEADER in p.stdout and "Cost of privacy: dp-mlp (DP-SGD) against seed-mlp" in p.stdout
    results = ResultSet.read_json(out)
    assert {r.spec.workload for r in results.runs if r.ok} == {"dp-mlp", "seed-mlp"}
    with Store(db) as store:
        assert store.load(None).privacy == results.privacy and results.privacy["dp-mlp"].counterpart == "seed-mlp"
