"""The privacy guarantee of a DP-SGD workload and its batch draws, computed in numpy in the parent process.

The guarantee (epsilon at delta) comes from Google's ``dp-accounting`` library, never from a formula written here:
each step is a sampled Gaussian mechanism of noise multiplier sigma, composed over every step of the run, and two of
the library's accountants bound the composition: RDP (Renyi DP, converted to (epsilon, delta) at the best of a set
of orders) and PLD (the privacy loss distribution, composed numerically on a grid of
:data:`PLD_DISCRETIZATION` nats, rounded pessimistically). Both are upper bounds for the same run; the guarantee's
``epsilon`` is the smaller (PLD for every built-in: RDP's conversion to (epsilon, delta) loses more), with both
beside it. Poisson sampling (each example in a step with probability q) is the analysis' own assumption;
shuffled fixed-size batches are accounted as sampling ``batch_size`` of ``n_train`` without replacement per
step, the usual approximation of a shuffle (RDP only: the library's PLD accountant has no such event), and the
guarantee says so.

The batches of a private run are drawn here, from the workload's seed, like every epoch's order, and handed to
every framework, so that parity holds step by step.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from .spec import Workload

RDP, PLD = "dp-accounting RDP", "dp-accounting PLD"  # the accountants (``Guarantee.accountant``: the tighter)
PLD_DISCRETIZATION = 1e-4  # nats: the PLD grid; 1e-5 moves dp-mlp's epsilon by 2e-6 and takes 10x longer (0.4 vs 4 s)
INSTALL_HINT = "pip install -c constraints.txt -e '.[privacy]'"
SAMPLING_STREAM = 0x5A3D  # the seed stream of Poisson batch draws (apart from the epoch orders' stream)
NOISE_STREAM = 0x9015     # the seed stream of DP-SGD's Gaussian noise


@dataclass(frozen=True)
class Guarantee:
    """(epsilon, delta)-differential privacy of one training run, as the accountants computed it."""
    epsilon: float            # the tighter of epsilon_rdp and epsilon_pld (inf when the noise multiplier is 0)
    delta: float
    noise_multiplier: float
    sampling: str             # "poisson" or "shuffle"
    sampling_rate: float      # q: expected fraction of the training split in one step
    steps: int
    accountant: str           # the accountant that gave ``epsilon`` (RDP or PLD)
    note: str = ""            # how the sampling was accounted, when not exactly as run
    clip: float | None = None  # the per-example L2 norm bound C (the noise's standard deviation is sigma x C)
    n_train: int | None = None  # examples in the training split (the neighbouring data sets' size)
    accountant_version: str = ""  # dp-accounting's version
    orders: tuple[float, ...] = ()  # the Renyi orders the RDP accountant minimised over
    optimal_order: float | None = None  # the order that gave epsilon_rdp
    epsilon_rdp: float | None = None  # the RDP accountant's epsilon
    epsilon_pld: float | None = None  # the PLD accountant's; None where it has no such event (shuffled batches)
    pld_discretization: float | None = None  # nats, the PLD grid (value_discretization_interval)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (epsilons None for infinity, ``orders`` a list): what a session records. A session recorded
        before PLD has only ``epsilon`` (RDP's) with ``accountant`` "dp-accounting RDP"."""
        d = asdict(self)
        d.update({k: None if d[k] is not None and math.isinf(d[k]) else d[k]  # JSON has no infinity
                  for k in ("epsilon", "epsilon_rdp", "epsilon_pld")})
        d["orders"] = list(self.orders)
        return d


def default_delta(n_train: int) -> float:
    """1 / n_train rounded down to a power of ten (1437 examples: 1e-4)."""
    return 10.0 ** math.floor(math.log10(1.0 / n_train))


def sampling_rate(workload: Workload, n_train: int) -> float:
    o = workload.optimizer
    return o.sampling_rate if o.sampling == "poisson" and o.sampling_rate else min(1.0, workload.batch_size / n_train)


def private_steps(workload: Workload, n_train: int) -> int:
    """Steps of a private run: the same number as the non-private run's (epochs x batches per epoch)."""
    return workload.epochs * workload.steps_per_epoch(n_train)


def _accountant():
    try:
        import dp_accounting
    except ImportError:
        raise UserError(f"the privacy guarantee needs Google's dp-accounting: {INSTALL_HINT}") from None
    return dp_accounting


def guarantee(workload: Workload, n_train: int) -> Guarantee:
    """Epsilon at delta for ``workload`` trained on ``n_train`` examples, the tighter of the RDP and PLD
    accountants' (both kept); a UserError when even that exceeds the workload's ``target_epsilon``."""
    o = workload.optimizer
    if not o.private:
        raise ValueError(f"{workload.name} is not a DP-SGD workload")
    q, steps = sampling_rate(workload, n_train), private_steps(workload, n_train)
    delta = o.delta or default_delta(n_train)
    args = (q, o.noise_multiplier, steps, delta, o.sampling, n_train, workload.batch_size)
    rdp, order = _rdp_epsilon(*args)
    pld = _pld_epsilon(*args)
    eps, accountant = (pld, PLD) if pld is not None and pld < rdp else (rdp, RDP)
    note = "" if o.sampling == "poisson" else \
        (f"shuffled batches accounted as sampling {workload.batch_size} of {n_train} without replacement per step "
         "(RDP only: dp-accounting's PLD accountant has no such event)")
    if o.target_epsilon is not None and eps > o.target_epsilon:
        raise UserError(f"{workload.name}: optimizer.target_epsilon {o.target_epsilon:g} is not met: {steps} steps "
                        f"at noise multiplier {o.noise_multiplier:g} and q = {q:.4g} spend epsilon {eps:.3g} "
                        f"({accountant.split()[-1]}, the tighter accountant; delta {delta:g}); raise the noise "
                        "multiplier or train fewer epochs")
    accounted = order is not None  # without noise nothing was accounted: epsilon is infinite
    return Guarantee(eps, delta, o.noise_multiplier, o.sampling, q, steps, accountant, note, o.clip, n_train,
                     accountant_version() if accounted else "",
                     tuple(float(x) for x in rdp_orders()) if accounted else (), order, rdp, pld,
                     PLD_DISCRETIZATION if pld is not None and accounted else None)


def accountant_version() -> str:
    """The installed dp-accounting's version (recorded with every guarantee)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("dp-accounting")
    except PackageNotFoundError:
        return ""


def rdp_orders() -> list[float]:
    """The Renyi orders the accountant minimises over: dp-accounting's own default set, passed explicitly so
    that what a session records is what was used."""
    return list(_accountant().rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS)


def _event(dp, q: float, noise_multiplier: float, steps: int, sampling: str, n_train: int | None,
           batch_size: int | None):
    """The run as one DpEvent (every step a sampled Gaussian mechanism) and its neighbouring relation."""
    step = dp.GaussianDpEvent(noise_multiplier)
    if sampling == "poisson":
        event, relation = dp.PoissonSampledDpEvent(q, step) if q < 1 else step, dp.NeighboringRelation.ADD_OR_REMOVE_ONE
    else:
        event, relation = dp.SampledWithoutReplacementDpEvent(n_train, batch_size, step), \
            dp.NeighboringRelation.REPLACE_ONE
    return dp.SelfComposedDpEvent(event, steps), relation


def _rdp_epsilon(q: float, noise_multiplier: float, steps: int, delta: float, sampling: str,
                 n_train: int | None, batch_size: int | None) -> tuple[float, float | None]:
    """(epsilon, the optimal Renyi order) from the RDP accountant; (inf, None) without noise."""
    if noise_multiplier == 0:
        return math.inf, None
    dp = _accountant()
    event, relation = _event(dp, q, noise_multiplier, steps, sampling, n_train, batch_size)
    accountant = dp.rdp.RdpAccountant(rdp_orders(), relation)
    accountant.compose(event)
    eps, order = accountant.get_epsilon_and_optimal_order(delta)
    return float(eps), float(order)


@functools.lru_cache(maxsize=64)
def _pld_epsilon(q: float, noise_multiplier: float, steps: int, delta: float, sampling: str,
                 n_train: int | None, batch_size: int | None) -> float | None:
    """Epsilon from the PLD accountant on a grid of :data:`PLD_DISCRETIZATION` (inf without noise; None where it
    does not support the event: sampling without replacement). Cached: 0.3-0.4 s for a built-in's few hundred
    steps, and a session computes it once per private workload."""
    if noise_multiplier == 0:
        return math.inf
    dp = _accountant()
    event, relation = _event(dp, q, noise_multiplier, steps, sampling, n_train, batch_size)
    accountant = dp.pld.PLDAccountant(relation, value_discretization_interval=PLD_DISCRETIZATION)
    if not accountant.supports(event):
        return None
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def poisson_batches(n_train: int, q: float, steps: int, seed: int) -> list[np.ndarray]:
    """Every step's batch under Poisson sampling: each example independently with probability ``q``, in index
    order (a batch may be empty, as the analysis requires)."""
    rng = np.random.default_rng([seed, SAMPLING_STREAM])
    return [np.flatnonzero(rng.random(n_train) < q).astype(np.int64) for _ in range(steps)]


def noise_rng(seed: int) -> np.random.Generator:
    """The generator of DP-SGD's noise: draw ``standard_normal`` per step over every trainable parameter in the
    canonical order of ``Workload.param_shapes()``, scaled by ``noise_multiplier * clip``."""
    return np.random.default_rng([seed, NOISE_STREAM])
