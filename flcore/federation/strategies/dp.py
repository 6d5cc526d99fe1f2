"""Client-level central differential privacy: Flower's server-side fixed-clipping wrapper, accounted.

Partner of no client mod: the coordinator clips each site's update to
``dp-update-clip`` and adds Gaussian noise to the average (Geyer et al. 2017,
McMahan et al. 2018), and Flower's ``RdpAccountant`` composes each round. The
noise multiplier is the smallest that keeps all planned rounds within the run's
epsilon (:class:`flcore.learning.privacy.ClientDpPlan`).
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy

from flcore.config import RunConfig
from flcore.learning.privacy import ClientDpPlan, client_accountant


class ClientLevelDp(DifferentialPrivacyServerSideFixedClipping):
    """Flower's ``DifferentialPrivacyServerSideFixedClipping`` with the calibrated plan it runs under."""

    plan: ClientDpPlan

    @classmethod
    def wrap(cls, strategy: Strategy, cfg: RunConfig, population: int, per_round: int) -> ClientLevelDp:
        """Wrap ``strategy`` (plain FedAvg, equal weights) for ``cfg.dp-epsilon`` over the run's rounds."""
        plan = ClientDpPlan.calibrate(
            target_epsilon=cfg.dp_epsilon,
            delta=cfg.dp_delta,
            rounds=cfg.num_server_rounds,
            sampled_sites=per_round,
            population=population,
            clip=cfg.dp_update_clip,
        )
        wrapped = cls(
            strategy,
            noise_multiplier=plan.noise_multiplier,
            clipping_norm=plan.clipping_norm,
            num_sampled_clients=per_round,
            accountant=client_accountant(population, cfg.dp_delta, max_epsilon=cfg.dp_epsilon * (1 + 1e-6)),
        )
        wrapped.plan = plan
        return wrapped

    @property
    def client_privacy(self) -> ClientLevelDp:
        """Itself: the monitor asks it for the epsilon spent after each round."""
        return self

    def spent_epsilon(self) -> float:
        """Epsilon of the rounds released so far (0 before the first)."""
        spent = self.privacy_spent()
        return float(spent.epsilon) if spent is not None and spent.num_releases else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.plan.noise_multiplier,
            "update_clip": self.plan.clipping_norm,
            "sites_per_round": self.plan.sampled_sites,
            "population": self.plan.population,
            "planned_epsilon": self.plan.planned_epsilon(),
        }
