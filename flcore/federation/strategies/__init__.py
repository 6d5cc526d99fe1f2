"""Registry of aggregation strategies by name, each built on Flower's own strategy classes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import (
    FedAdam,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedXgbBagging,
    FedXgbCyclic,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)
from flwr.serverapp.strategy import (
    FedAvg as FlowerFedAvg,
)

from flcore import keys
from flcore.config import RunConfig
from flcore.exceptions import ConfigError, UnknownNameError
from flcore.federation.strategies.averaging import FedAvg, with_fast_average
from flcore.federation.strategies.compressed import CompressedUpdates
from flcore.federation.strategies.dp import ClientLevelDp
from flcore.federation.strategies.screen import RejectFn, ScreenedUpdates
from flcore.federation.strategies.sizeweighted import FedAvgSizeWeighted
from flcore.federation.strategies.xgbhist import FedXgbHist


@dataclass(frozen=True)
class StrategySpec:
    """How to build one registered strategy from the run configuration."""

    name: str
    summary: str
    paper: str
    #: ``build(cfg, flower_kwargs, sites_per_round)``.
    build: Callable[[RunConfig, dict[str, Any], int], Strategy]
    min_sites: Callable[[RunConfig], int] = lambda cfg: 1
    #: Sites that train in a round at most, whatever ``fraction-train`` says (one for fedxgb-cyclic).
    max_per_round: int | None = None
    #: Why the strategy needs :attr:`min_sites`, and what to use with fewer (told when it refuses a federation).
    why_min: str = ""

    def per_round(self, cfg: RunConfig, num_sites: int) -> int:
        """Sites sampled for training in a round: ``fraction-train`` of them, at most :attr:`max_per_round`."""
        return min(max(1, int(num_sites * cfg.fraction_train)), self.max_per_round or num_sites)


def _krum_min_sites(cfg: RunConfig) -> int:
    # Krum needs n > 2f + 2 replies to pick a candidate surrounded by honest ones.
    return 2 * cfg.krum_malicious + 3


REGISTRY: dict[str, StrategySpec] = {
    s.name: s
    for s in (
        StrategySpec(
            "fedavg",
            "Sample-weighted average of site models.",
            "McMahan et al., AISTATS 2017",
            # Flower's DP accountant insists on its own FedAvg.aggregate_train (equal weights it can account for).
            lambda cfg, kw, k: (FlowerFedAvg if cfg.privacy == "client-dp" else FedAvg)(**kw),
        ),
        StrategySpec(
            "fedavg-sizeweighted",
            "FedAvg with site weight n^(1+beta) (size-weight-beta; 0 is FedAvg, -1 equal weights).",
            "generalises McMahan et al. 2017",
            lambda cfg, kw, k: FedAvgSizeWeighted(beta=cfg.size_weight_beta, **kw),
        ),
        StrategySpec(
            "fedprox",
            "FedAvg plus a proximal term at the sites against client drift (proximal-mu).",
            "Li et al., MLSys 2020",
            lambda cfg, kw, k: with_fast_average(FedProx)(proximal_mu=cfg.proximal_mu, **kw),
        ),
        StrategySpec(
            "fedadam",
            "Server-side Adam on the averaged update (server-learning-rate).",
            "Reddi et al., ICLR 2021",
            lambda cfg, kw, k: with_fast_average(FedAdam)(eta=cfg.server_learning_rate, eta_l=cfg.learning_rate, **kw),
        ),
        StrategySpec(
            "fedyogi",
            "Server-side Yogi on the averaged update (server-learning-rate).",
            "Reddi et al., ICLR 2021",
            lambda cfg, kw, k: with_fast_average(FedYogi)(eta=cfg.server_learning_rate, eta_l=cfg.learning_rate, **kw),
        ),
        StrategySpec(
            "fedtrimmedavg",
            "Coordinate-wise trimmed mean, robust to outlying updates (trim-beta).",
            "Yin et al., ICML 2018",
            lambda cfg, kw, k: FedTrimmedAvg(beta=cfg.trim_beta, **kw),
            min_sites=lambda cfg: 3,
        ),
        StrategySpec(
            "fedmedian",
            "Coordinate-wise median, robust to outlying updates.",
            "Yin et al., ICML 2018",
            lambda cfg, kw, k: FedMedian(**kw),
            min_sites=lambda cfg: 3,
        ),
        StrategySpec(
            "krum",
            "Picks the update closest to its neighbours, tolerating krum-malicious bad sites.",
            "Blanchard et al., NeurIPS 2017",
            lambda cfg, kw, k: Krum(num_malicious_nodes=cfg.krum_malicious, **kw),
            min_sites=_krum_min_sites,
        ),
        StrategySpec(
            "multikrum",
            "Averages the krum-select updates closest to their neighbours (default: all but krum-malicious).",
            "Blanchard et al., NeurIPS 2017",
            lambda cfg, kw, k: MultiKrum(
                num_malicious_nodes=cfg.krum_malicious,
                num_nodes_to_select=cfg.krum_select or max(1, k - cfg.krum_malicious),
                **kw,
            ),
            min_sites=_krum_min_sites,
        ),
        StrategySpec(
            "fedxgb-hist",
            "XGBoost: all sites grow every tree together from summed histograms, local-epochs trees a round "
            "(model=xgboost; at least 3 sites).",
            "Chen & Guestrin, KDD 2016 (distributed hist); NVIDIA FLARE's histogram-based XGBoost",
            lambda cfg, kw, k: FedXgbHist(**kw),
            min_sites=lambda cfg: 3,
            why_min="With two sites, each could subtract its own histograms from the sums and read the other's; "
            "two sites can train trees with --strategy fedxgb-bagging --set local-epochs=1.",
        ),
        StrategySpec(
            "fedxgb-bagging",
            "XGBoost: every site adds one tree per round to the shared ensemble (model=xgboost).",
            "Ma et al., 2023 (Flower FedXgbBagging)",
            lambda cfg, kw, k: FedXgbBagging(**kw),
        ),
        StrategySpec(
            "fedxgb-cyclic",
            "XGBoost: the sites take turns boosting the whole ensemble, one per round (model=xgboost).",
            "Flower FedXgbCyclic",
            lambda cfg, kw, k: FedXgbCyclic(
                **{key: v for key, v in kw.items() if key not in ("min_train_nodes", "min_evaluate_nodes")}
            ),
            max_per_round=1,
        ),
    )
}


def get_spec(name: str) -> StrategySpec:
    """Look a strategy up by name, with the list of valid names on failure."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownNameError(
            f"Unknown strategy '{name}'. Registered strategies: {', '.join(sorted(REGISTRY))}."
        ) from None


def min_sites_per_round(cfg: RunConfig, num_sites: int) -> int:
    """Sites a round needs (connected to start, answering to be aggregated): min-sites, at least the strategy's own.

    Never more than the strategy trains in a round (one, for fedxgb-cyclic).
    """
    spec = get_spec(cfg.strategy)
    return min(max(cfg.min_sites, spec.min_sites(cfg), 1), num_sites, spec.max_per_round or num_sites)


def min_evaluate_per_round(cfg: RunConfig, num_sites: int) -> int:
    """Sites that must be connected for a round's federated evaluation."""
    return min(min_sites_per_round(cfg, num_sites), max(1, int(num_sites * cfg.fraction_evaluate)))


def build_strategy(cfg: RunConfig, num_sites: int, on_reject: RejectFn | None = None, **flower_kwargs: Any) -> Strategy:
    """Build the strategy ``cfg.strategy`` for a federation of ``num_sites`` sites.

    Parameters
    ----------
    cfg : RunConfig
        The run configuration (strategy name and its parameters).
    num_sites : int
        Sites expected to take part; sampling minima are derived from it.
    on_reject : callable, optional
        ``on_reject(server_round, site, reason)`` for each update the screen drops, or the
        compression wrapper cannot decode.
    **flower_kwargs
        Extra keyword arguments for the Flower strategy (metric aggregation functions).

    Raises
    ------
    UnknownNameError
        If the strategy is not registered.
    ConfigError
        If the federation is too small for the strategy.

    Every strategy is wrapped in :class:`ScreenedUpdates`, which drops non-finite
    updates before aggregation (and holds the round's quorum of usable updates when
    :func:`flcore.federation.rounds.run_rounds` runs it). With ``privacy=client-dp`` the FedAvg
    strategy (equal site weights) is wrapped in Flower's
    ``DifferentialPrivacyServerSideFixedClipping`` with its RDP accountant
    (:class:`ClientLevelDp`). With ``update-compression`` other than ``none`` the
    screen is wrapped in :class:`flcore.federation.strategies.compressed.CompressedUpdates` (its partner,
    ``compression_mod``, is in every ClientApp), which reports the updates it cannot
    decode to the screen.
    """
    spec = get_spec(cfg.strategy)
    per_round = spec.per_round(cfg, num_sites)
    needed = max(spec.min_sites(cfg), 1)
    if per_round < needed:
        raise ConfigError(
            f"Strategy '{cfg.strategy}' needs at least {needed} sites per round, but "
            f"fraction-train={cfg.fraction_train} of {num_sites} sites samples {per_round}. "
            "Raise fraction-train, add sites or choose another strategy." + (f" {spec.why_min}" if spec.why_min else "")
        )
    min_nodes = min_sites_per_round(cfg, num_sites)
    kwargs: dict[str, Any] = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": min_nodes,
        "min_evaluate_nodes": min_evaluate_per_round(cfg, num_sites),
        # The ServerApp waits for every site before round 1; later rounds go on without a site that dropped out.
        "min_available_nodes": min_nodes,
        **flower_kwargs,
    }
    if cfg.privacy == "client-dp":
        if cfg.strategy != "fedavg":
            raise ConfigError(
                f"privacy=client-dp needs strategy=fedavg, not {cfg.strategy}: Flower accounts client-level DP "
                "only for plain FedAvg with equal site weights. Use --strategy fedavg, or privacy=dp."
            )
        kwargs["weighted_by_key"] = keys.UNIT_WEIGHT
    try:
        strategy = spec.build(cfg, kwargs, per_round)
    except ValueError as err:  # Flower's own parameter checks
        raise ConfigError(f"Strategy '{cfg.strategy}': {err}") from None
    if cfg.privacy == "client-dp":
        # Flower samples max(fraction x sites, min_train_nodes) sites per round.
        strategy = ClientLevelDp.wrap(strategy, cfg, num_sites, max(per_round, min_nodes))
    screen = ScreenedUpdates(strategy, on_reject)
    if cfg.update_compression == "none":
        return screen
    # Undecodable updates go through the screen's record: on_reject sees them, and a lost quorum names them.
    return CompressedUpdates(
        screen, cfg.update_compression, compress_broadcast=cfg.compress_broadcast, on_reject=screen.reject
    )
