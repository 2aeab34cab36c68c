"""DP-SGD in the neutral spec: TOML fields validated with one-line errors naming the field, the guarantee from the
accountant library, and the Poisson batch draws."""
import math
import subprocess
import sys

import numpy as np
import pytest

from isobench.errors import UserError
from isobench.workloads import get_workload
from isobench.workloads.privacy import default_delta, guarantee, poisson_batches, private_steps, sampling_rate
from isobench.workloads.serialize import workload_from_dict, workload_to_dict
from isobench.workloads.spec import OptimizerSpec
from dataclasses import replace

DP = {"kind": "dp-sgd", "base": "sgd", "learning_rate": 0.05, "momentum": 0.9, "clip": 1.0, "noise_multiplier": 1.1}


def mlp(**optimizer) -> dict:
    raw = workload_to_dict(get_workload("seed-mlp"))
    raw["optimizer"] = {**DP, **optimizer}
    return raw


def test_a_dp_sgd_workload_round_trips_through_its_dict():
    w = workload_from_dict(mlp(sampling="shuffle"))
    assert w.optimizer.private and w.optimizer.clip == 1.0 and w.optimizer.sampling == "shuffle"
    assert workload_from_dict(workload_to_dict(w)) == w


@pytest.mark.parametrize("fields, error", [
    ({"clip": -1.0}, "optimizer.clip: dp-sgd needs a per-example norm bound above 0, got -1.0"),
    ({"clip": None}, "optimizer.clip: dp-sgd needs a per-example norm bound above 0, got None"),
    ({"noise_multiplier": -0.5}, "optimizer.noise_multiplier: must be 0 or more, got -0.5"),
    ({"noise_multiplier": 0.0, "target_epsilon": 8.0},
     "optimizer.noise_multiplier: 0 adds no noise, so no epsilon is guaranteed, but optimizer.target_epsilon asks "
     "for 8; give a noise multiplier above 0"),
    ({"sampling_rate": 1.5}, "optimizer.sampling_rate: a probability per step in (0, 1], got 1.5"),
    ({"sampling_rate": 0.0}, "optimizer.sampling_rate: a probability per step in (0, 1], got 0.0"),
    ({"sampling": "uniform"}, "optimizer.sampling: 'uniform' is not one of: poisson, shuffle"),
    ({"base": "rmsprop"}, "optimizer.base: 'rmsprop' is not one of: sgd, adam"),
    ({"delta": 2.0}, "optimizer.delta: must be in (0, 1), got 2.0"),
    ({"clip_norm": 1.0}, "optimizer.clip_norm: dp-sgd clips every example's gradient to optimizer.clip"),
])
def test_bad_dp_fields_are_one_line_errors_naming_the_field(fields, error):
    raw = mlp(**fields)
    raw["optimizer"] = {k: v for k, v in raw["optimizer"].items() if v is not None}
    with pytest.raises(UserError) as e:
        workload_from_dict(raw, "dp.toml")
    assert str(e.value).startswith(f"dp.toml: {error}") and "\n" not in str(e.value)


def test_dp_fields_need_the_dp_optimizer():
    raw = workload_to_dict(get_workload("seed-mlp"))
    raw["optimizer"]["clip"] = 1.0
    with pytest.raises(UserError, match=r'optimizer.clip: applies only with optimizer.kind = "dp-sgd"'):
        workload_from_dict(raw)


def test_a_bad_toml_field_exits_2_with_one_line(tmp_path):
    path = tmp_path / "dp.toml"
    path.write_text('name = "dp"\ninput_shape = [64]\nnum_classes = 10\n[optimizer]\nkind = "dp-sgd"\nclip = -1.0\n'
                    '[[layers]]\nkind = "dense"\nunits = 10\n')
    p = subprocess.run([sys.executable, "-m", "isobench", "run", str(path), "--no-store"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "optimizer.clip" in p.stderr and "Traceback" not in p.stderr


def test_default_delta_is_one_over_n_rounded_down_to_a_power_of_ten():
    assert default_delta(1437) == pytest.approx(1e-4) and default_delta(100) == pytest.approx(1e-2)
    assert default_delta(60_000) == pytest.approx(1e-5)


def test_epsilon_is_the_tighter_accountants_for_known_q_sigma_and_steps():
    dp = pytest.importorskip("dp_accounting")
    w = replace(get_workload("seed-mlp"), optimizer=OptimizerSpec(**DP))
    g = guarantee(w, 1438)
    q, steps = 32 / 1438, private_steps(w, 1438)
    assert (g.sampling_rate, g.steps, g.delta) == (pytest.approx(q), 10 * 45, pytest.approx(1e-4))
    accountant = dp.rdp.RdpAccountant()
    accountant.compose(dp.SelfComposedDpEvent(dp.PoissonSampledDpEvent(q, dp.GaussianDpEvent(1.1)), steps))
    assert g.epsilon_rdp == pytest.approx(accountant.get_epsilon(1e-4), rel=1e-12)
    assert g.epsilon == g.epsilon_pld < g.epsilon_rdp and g.accountant == "dp-accounting PLD"  # PLD is tighter
    assert 0.5 < g.epsilon < 5  # the known scale of this (q, sigma, steps): a sanity bound, not the check
    more_noise = guarantee(replace(w, optimizer=replace(w.optimizer, noise_multiplier=2.0)), 1438)
    assert more_noise.epsilon < g.epsilon


def test_no_noise_is_infinite_epsilon_and_a_target_is_checked_against_the_tighter_accountant():
    pytest.importorskip("dp_accounting")
    w = replace(get_workload("seed-mlp"), optimizer=OptimizerSpec(**{**DP, "noise_multiplier": 0.0}))
    g = guarantee(w, 1438)
    assert math.isinf(g.epsilon) and g.to_dict()["epsilon"] is g.to_dict()["epsilon_pld"] is None
    within_pld_only = replace(w, optimizer=OptimizerSpec(**{**DP, "target_epsilon": 2.2}))  # PLD 2.04, RDP 2.33
    g = guarantee(within_pld_only, 1438)
    assert g.epsilon < 2.2 < g.epsilon_rdp and g.accountant == "dp-accounting PLD"
    tight = replace(w, optimizer=OptimizerSpec(**{**DP, "target_epsilon": 2.0}))  # above both
    with pytest.raises(UserError, match=r"optimizer.target_epsilon 2 is not met: .* epsilon 2.04 \(PLD, the "
                                        r"tighter accountant; delta 0.0001\)"):
        guarantee(tight, 1438)


def test_shuffled_batches_are_accounted_by_rdp_alone():
    pytest.importorskip("dp_accounting")
    g = guarantee(replace(get_workload("seed-mlp"), optimizer=OptimizerSpec(**{**DP, "sampling": "shuffle"})), 1438)
    assert g.epsilon == g.epsilon_rdp and g.epsilon_pld is None and g.accountant == "dp-accounting RDP"
    assert "RDP only" in g.note and g.pld_discretization is None


def test_poisson_batches_are_seeded_independent_draws_with_rate_q():
    a, b = poisson_batches(1000, 0.05, 200, seed=0), poisson_batches(1000, 0.05, 200, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, poisson_batches(1000, 0.05, 200, seed=1)))
    sizes = np.array([len(x) for x in a])
    assert abs(sizes.mean() - 50) < 3 and sizes.std() > 3  # Binomial(1000, 0.05): mean 50, sd 6.9
    assert all(np.all(np.diff(x) > 0) for x in a)  # each example at most once per step


def test_sampling_rate_defaults_to_batch_over_n():
    w = replace(get_workload("seed-mlp"), optimizer=OptimizerSpec(**DP))
    assert sampling_rate(w, 1437) == pytest.approx(32 / 1437)
    assert sampling_rate(replace(w, optimizer=replace(w.optimizer, sampling_rate=0.1)), 1437) == 0.1
