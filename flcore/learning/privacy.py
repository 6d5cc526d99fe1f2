"""Differential privacy: sample-level DP-SGD at each site (Opacus) and client-level central DP (Flower).

Two guarantees, for two units of privacy:

* ``privacy=dp``: **sample-level** DP-SGD. Every site clips each record's gradient
  and adds Gaussian noise to every step, with Poisson sampling of mini-batches,
  through Opacus's ``GradSampleModule`` and ``DPOptimizer``; Opacus's RDP accountant
  turns the steps into (epsilon, delta) for any one record (a patient, a customer).
  A site calibrates its own noise from the run plan, so the coordinator cannot
  lower it. Sites hold disjoint records, so the run's epsilon is the largest of
  the sites' epsilons (parallel composition).
* ``privacy=client-dp``: **client-level** central DP with Flower's
  ``DifferentialPrivacyServerSideFixedClipping`` and its ``RdpAccountant``: each
  site's whole update is clipped and the aggregate noised, protecting a whole site.
  It needs many sites per round to be useful (a fleet, not three hospitals).

Opacus and dp-accounting come with the ``flwr[dp]`` and ``opacus`` dependencies.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flcore.exceptions import ConfigError

#: Accounting method reported in results.json.
SAMPLE_ACCOUNTANT = "opacus RDP accountant, Poisson-sampled DP-SGD"
CLIENT_ACCOUNTANT = "flwr RdpAccountant (dp-accounting), no sampling amplification"


def steps_per_epoch(sample_rate: float) -> int:
    """Poisson-sampled steps that make up one expected pass over the data."""
    return max(1, math.ceil(1.0 / sample_rate))


def sample_rate_for(n: int, batch_size: int) -> float:
    """Poisson sampling rate giving expected batches of ``batch_size`` records out of ``n``."""
    if n <= 0:
        raise ValueError("cannot sample from an empty site")
    return min(1.0, batch_size / n)


def _accountant(history: list[tuple[float, float, int]]) -> Any:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = list(history)
    return acc


def sample_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Poisson-sampled Gaussian steps (Opacus RDP accountant).

    When the best Renyi order is the largest Opacus tries, it warns that a wider
    range might give a tighter bound; the bound it returns is valid either way
    (never below the true epsilon), so the warning is silenced.
    """
    if steps <= 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(_accountant([(noise_multiplier, sample_rate, steps)]).get_epsilon(delta))


@dataclass
class DpSgd:
    """Sample-level DP-SGD of one site for one run.

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation over the clipping norm (sigma).
    max_grad_norm : float
        Per-record gradient clipping norm.
    sample_rate : float
        Poisson sampling rate of a record into a mini-batch.
    delta : float
        Target delta.
    planned_steps : int
        Steps the plan allows (the calibration assumed them all).
    steps : int
        Steps taken so far in this run (noise was added at every one).
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    delta: float
    planned_steps: int
    steps: int = 0

    @classmethod
    def calibrate(
        cls,
        n: int,
        *,
        batch_size: int,
        epochs: int,
        target_epsilon: float,
        delta: float,
        max_grad_norm: float,
    ) -> DpSgd:
        """The smallest noise that keeps ``epochs`` passes over ``n`` records within ``target_epsilon``.

        ``epochs`` is the whole run's budget for this site (rounds x local epochs,
        assuming the site is sampled in every round, so that fewer rounds only
        spend less).
        """
        from opacus.accountants.utils import get_noise_multiplier

        q = sample_rate_for(n, batch_size)
        planned = epochs * steps_per_epoch(q)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = get_noise_multiplier(
                target_epsilon=target_epsilon, target_delta=delta, sample_rate=q, steps=planned, accountant="rdp"
            )
        dp = cls(float(sigma), max_grad_norm, q, delta, planned)
        # get_noise_multiplier stops within a tolerance; never report more than the target.
        while dp.planned_epsilon() > target_epsilon:
            dp.noise_multiplier *= 1.01
        return dp

    def epsilon(self) -> float:
        """Epsilon spent so far (at ``delta``)."""
        return sample_epsilon(self.noise_multiplier, self.sample_rate, self.steps, self.delta)

    def planned_epsilon(self) -> float:
        """Epsilon after every planned step."""
        return sample_epsilon(self.noise_multiplier, self.sample_rate, self.planned_steps, self.delta)

    def to_json(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "delta": self.delta,
            "planned_steps": self.planned_steps,
            "steps": self.steps,
            "epsilon": self.epsilon(),
        }

    @contextmanager
    def attach(self, model: Any, optimizer: Any, n: int, generator: Any = None) -> Iterator[Any]:
        """Wrap ``optimizer`` in Opacus's ``DPOptimizer`` over ``model`` for one training call.

        Yields the ``DPOptimizer``. Per step the caller runs ``zero_grad()``, the
        forward and backward pass, then ``pre_step()``, which clips each record's
        gradient, adds the noise and leaves the private gradient in ``p.grad`` (so
        that data-independent terms, such as FedProx's proximal gradient, may be
        added), then ``optimizer.step()``; and counts the step in ``steps``. The
        noise comes from ``generator``, which must be secretly seeded: whoever can
        reproduce the noise can remove it. The
        per-sample hooks are removed afterwards; the model keeps its parameters and
        state-dict keys.
        """
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        gsm = GradSampleModule(model, loss_reduction="mean")
        dp_opt = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=max(1, round(self.sample_rate * n)),
            loss_reduction="mean",
            generator=generator,
        )
        try:
            with warnings.catch_warnings():
                # Opacus's per-sample hooks fire on module outputs because inputs need no gradient: expected.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                yield dp_opt
        finally:
            dp_opt.zero_grad(set_to_none=True)
            gsm._close()


@dataclass
class ClientDpPlan:
    """Client-level central DP for one run (Flower's server-side fixed clipping)."""

    noise_multiplier: float
    clipping_norm: float
    sampled_sites: int
    population: int
    rounds: int
    delta: float

    @classmethod
    def calibrate(
        cls, *, target_epsilon: float, delta: float, rounds: int, sampled_sites: int, population: int, clip: float
    ) -> ClientDpPlan:
        """The smallest noise multiplier (to 1%) whose ``rounds`` releases stay within ``target_epsilon``."""
        lo, hi = 0.05, 1.0
        while client_epsilon(hi, rounds, sampled_sites, population, delta) > target_epsilon:
            hi *= 2
            if hi > 1e5:
                raise ConfigError(f"no noise multiplier reaches epsilon {target_epsilon} in {rounds} rounds.")
        while hi / lo > 1.01:
            mid = math.sqrt(lo * hi)
            if client_epsilon(mid, rounds, sampled_sites, population, delta) > target_epsilon:
                lo = mid
            else:
                hi = mid
        return cls(hi, clip, sampled_sites, population, rounds, delta)

    def planned_epsilon(self) -> float:
        return client_epsilon(self.noise_multiplier, self.rounds, self.sampled_sites, self.population, self.delta)


def client_accountant(population: int, delta: float, max_epsilon: float | None = None) -> Any:
    """Flower's RDP accountant for client-level releases without sampling amplification."""
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    return RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=population,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=max_epsilon,
        )
    )


def client_epsilon(noise_multiplier: float, rounds: int, sampled: int, population: int, delta: float) -> float:
    """Epsilon of ``rounds`` client-level Gaussian releases (Flower's RDP accountant)."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    acc = client_accountant(population, delta)
    acc.compose(GaussianPrivacyEvent(noise_multiplier, sampled, population), count=rounds)
    return float(acc.get_epsilon(delta))
