"""What a domain's learning task must provide; binary classification and anomaly detection in torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from flwr.app import ArrayRecord
from torch import nn

from flcore import keys
from flcore.config import RunConfig
from flcore.data.site import FeatureStats, SiteData
from flcore.exceptions import ConfigError
from flcore.learning import metrics
from flcore.learning.training import (
    bce_loss,
    fit_binary,
    fit_reconstruction,
    lr_at,
    predict_proba,
    predict_scores,
    seed_cpu,
)

if TYPE_CHECKING:
    from flcore.learning.privacy import DpSgd


class Task(Protocol):
    """Model construction, local training and scoring for one domain.

    The same object serves the three evaluation arms (federated sites, pooled
    centralised training, each site alone), so they share model, loss and budget.
    """

    primary_metric: str
    #: What a score is: ``"probability"`` (of the positive label) or ``"anomaly"`` (distance from normal,
    #: e.g. a reconstruction error; higher is more anomalous, not a probability).
    score_kind: str
    #: ``"pooled"``: a model shared by all sites gets one operating point, chosen on the
    #: union of their validation data; ``"site"``: every site chooses its own, even for a
    #: shared model (anomaly detection, where each machine has its own normal level).
    threshold_scope: str

    def init_model(self, stats: FeatureStats, seed: int) -> nn.Module:
        """A fresh model whose preprocessing uses ``stats``."""
        ...

    def fit(
        self,
        model: nn.Module,
        data: SiteData,
        cfg: RunConfig,
        *,
        first_round: int,
        num_rounds: int,
        seed: int,
        proximal_mu: float = 0.0,
        dp: DpSgd | None = None,
        on_round: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        """Train for ``num_rounds * cfg.local_epochs`` epochs starting at ``first_round``.

        With ``dp``, training is sample-level DP-SGD and ``dp.steps`` advances.
        ``on_round(k)`` is called after the ``k``-th of the ``num_rounds`` rounds (to
        score the model as it trains); it must not change the training itself.
        """
        ...

    def predict(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        """Scores (higher means more likely positive)."""
        ...

    def choose_threshold(self, y_val: np.ndarray, scores_val: np.ndarray) -> float | None:
        """Operating point chosen on validation data, or ``None`` if the task has none."""
        ...

    def score(
        self, y: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray | None = None
    ) -> dict[str, float | None]:
        """Metrics of ``scores`` against ``y``; the primary metric among them.

        With a ``threshold`` (one value, or one per example), metrics at that
        operating point (sensitivity, specificity) are added.
        """
        ...

    # -- how the model travels ----------------------------------------------------------
    #: ``"torch"`` (weight arrays, averaged) or ``"xgboost"`` (tree ensembles, merged).
    model_family: str

    def model_arrays(self, model: Any) -> ArrayRecord:
        """The whole model as Flower arrays (the global model, a checkpoint)."""
        ...

    def load_model_arrays(self, model: Any, arrays: ArrayRecord) -> None:
        """Replace ``model``'s parameters with ``arrays``."""
        ...

    def update_arrays(self, model: Any, cfg: RunConfig) -> ArrayRecord:
        """What a site sends after training a round (for weights, the whole model)."""
        ...

    def baseline_rounds(self, cfg: RunConfig, num_sites: int) -> int:
        """Rounds the centralised and local-only arms train, for the same budget as the federation."""
        ...

    def check_config(self, cfg: RunConfig) -> None:
        """Raise :class:`~flcore.exceptions.ConfigError` for settings this model cannot run."""
        ...


class TorchExchange:
    """How a torch model travels: its state dict, averaged by the weight-space strategies."""

    model_family = "torch"

    def model_arrays(self, model: nn.Module) -> ArrayRecord:
        return ArrayRecord(model.state_dict())

    def load_model_arrays(self, model: nn.Module, arrays: ArrayRecord) -> None:
        model.load_state_dict(arrays.to_torch_state_dict())

    def update_arrays(self, model: nn.Module, cfg: RunConfig) -> ArrayRecord:
        return self.model_arrays(model)

    def baseline_rounds(self, cfg: RunConfig, num_sites: int) -> int:
        """``R`` rounds of ``E`` epochs: the epochs every site trains in the federation."""
        return cfg.num_server_rounds

    def check_config(self, cfg: RunConfig) -> None:
        from flcore.learning.xgb import TREE_STRATEGIES

        if cfg.strategy in TREE_STRATEGIES:
            raise ConfigError(
                f"strategy={cfg.strategy} merges XGBoost tree ensembles, but this model is a neural network. "
                "Use a weight-averaging strategy (see `flsuite strategies`), or model=xgboost where the "
                "scenario offers it."
            )


@dataclass
class BinaryClassificationTask(TorchExchange):
    """A torch binary classifier trained with weighted BCE and SGD.

    Parameters
    ----------
    build : callable
        ``build(stats) -> nn.Module`` returning a model with one logit output.
    pos_weight : float
        Positive-class weight in the loss.
    primary_metric : str
        Name of the metric a scenario is judged on.
    threshold_rule : str or None
        ``"youden"``: an operating point is chosen on validation data by Youden's J
        and sensitivity/specificity are reported at it; ``None``: threshold-free
        metrics only.
    augment : callable, optional
        ``augment(batch, generator) -> batch`` applied to training batches only.
    """

    build: Callable[[FeatureStats], nn.Module]
    pos_weight: float
    primary_metric: str = "pr_auc"
    threshold_rule: str | None = None
    augment: Callable[[Any, Any], Any] | None = None
    threshold_scope: str = "pooled"
    score_kind: str = "probability"

    def init_model(self, stats: FeatureStats, seed: int) -> nn.Module:
        return _seeded(self.build, stats, seed)

    def fit(
        self,
        model: nn.Module,
        data: SiteData,
        cfg: RunConfig,
        *,
        first_round: int,
        num_rounds: int,
        seed: int,
        proximal_mu: float = 0.0,
        dp: DpSgd | None = None,
        on_round: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        epochs = num_rounds * cfg.local_epochs
        loss = fit_binary(
            model,
            data.x,
            data.y,
            cfg,
            epochs=epochs,
            lr_for_epoch=_lr_schedule(cfg, first_round),
            pos_weight=self.pos_weight,
            seed=seed,
            proximal_mu=proximal_mu,
            augment=self.augment,
            dp=dp,
            on_epoch=_per_round(on_round, cfg.local_epochs),
        )
        return {"train-loss": loss}

    def predict(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        return predict_proba(model, x)

    def choose_threshold(self, y_val: np.ndarray, scores_val: np.ndarray) -> float | None:
        if self.threshold_rule is None:
            return None
        if self.threshold_rule != "youden":
            raise ValueError(f"unknown threshold rule {self.threshold_rule!r}")
        return metrics.youden_threshold(y_val, scores_val)

    def score(self, y: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray | None = None) -> dict[str, Any]:
        out: dict[str, Any] = metrics.binary_metrics(y, scores)
        out["loss"] = bce_loss(scores, y)
        if self.threshold_rule is not None:
            metrics.with_operating_point(out, y, scores, threshold)
        return out


@dataclass
class AnomalyDetectionTask(TorchExchange):
    """Unsupervised anomaly detection: a model of normal data whose error is the anomaly score.

    The model's forward pass returns one score per example (for an autoencoder, its
    reconstruction error); training minimises the mean score on training data,
    which are taken as normal (labels are never used for training). Each site
    calibrates its threshold on its own normal validation data, as the
    ``threshold_quantile`` of their scores, and decisions are scored against the
    labelled test data.

    Parameters
    ----------
    build : callable
        ``build(stats) -> nn.Module`` returning a model that maps a batch to scores.
    threshold_quantile : float
        Share of normal validation scores below the threshold (0.99: about 1% false alarms).
    primary_metric : str
        ``roc_auc``: ranking of fault windows above normal ones, threshold-free.
    """

    build: Callable[[FeatureStats], nn.Module]
    threshold_quantile: float = 0.99
    primary_metric: str = keys.ROC_AUC
    threshold_scope: str = "site"
    score_kind: str = "anomaly"

    def init_model(self, stats: FeatureStats, seed: int) -> nn.Module:
        return _seeded(self.build, stats, seed)

    def training_records(self, data: SiteData) -> int:
        """Records :meth:`fit` trains on: the normal ones (DP-SGD samples from these)."""
        return int((np.asarray(data.y) == 0).sum())

    def fit(
        self,
        model: nn.Module,
        data: SiteData,
        cfg: RunConfig,
        *,
        first_round: int,
        num_rounds: int,
        seed: int,
        proximal_mu: float = 0.0,
        dp: DpSgd | None = None,
        on_round: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        normal = data.x[np.asarray(data.y) == 0]  # training data are normal; a labelled fault never trains
        loss = fit_reconstruction(
            model,
            normal,
            cfg,
            epochs=num_rounds * cfg.local_epochs,
            lr_for_epoch=_lr_schedule(cfg, first_round),
            seed=seed,
            proximal_mu=proximal_mu,
            dp=dp,
            on_epoch=_per_round(on_round, cfg.local_epochs),
        )
        return {"train-loss": loss}

    def predict(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        return predict_scores(model, x)

    def choose_threshold(self, y_val: np.ndarray, scores_val: np.ndarray) -> float | None:
        return metrics.quantile_threshold(y_val, scores_val, self.threshold_quantile)

    def score(self, y: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray | None = None) -> dict[str, Any]:
        out: dict[str, Any] = metrics.binary_metrics(y, scores)
        normal = np.asarray(scores, dtype=float)[np.asarray(y) == 0]
        out["loss"] = float(normal.mean()) if normal.size else None  # mean score of normal test windows
        # The same keys every time: Flower's strategies require them from every site.
        at: dict[str, Any] = {keys.SENSITIVITY: None, keys.SPECIFICITY: None, keys.PRECISION: None, keys.F1: None}
        if threshold is not None and len(y):
            at.update(metrics.detection_metrics(y, scores, threshold))
        t = np.asarray(threshold, dtype=float) if threshold is not None else None
        at[keys.THRESHOLD] = float(t) if t is not None and t.ndim == 0 else None
        out.update(at)
        return out


def _seeded(build: Callable[[FeatureStats], nn.Module], stats: FeatureStats, seed: int) -> nn.Module:
    """``build(stats)`` with torch's generator seeded first: the same seed gives the same initial weights."""
    seed_cpu(seed)
    return build(stats)


def _per_round(on_round: Callable[[int], None] | None, local_epochs: int) -> Callable[[int], None] | None:
    """An epoch callback that calls ``on_round(k)`` when the ``k``-th round's last local epoch is done."""
    if on_round is None:
        return None
    return lambda epoch: on_round(epoch // local_epochs) if epoch % local_epochs == 0 else None


def _lr_schedule(cfg: RunConfig, first_round: int) -> Callable[[int], float]:
    """Learning rate of each 0-based local epoch of a call that starts at round ``first_round``."""
    return lambda epoch: lr_at(cfg, first_round + epoch // cfg.local_epochs)
