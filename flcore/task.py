"""What a domain's learning task must provide, and the binary-classification task in torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from torch import nn

from flcore import keys, metrics
from flcore.config import RunConfig
from flcore.data import FeatureStats, SiteData
from flcore.training import bce_loss, fit_binary, lr_at, predict_proba


class Task(Protocol):
    """Model construction, local training and scoring for one domain.

    The same object serves the three evaluation arms (federated sites, pooled
    centralised training, each site alone), so they share model, loss and budget.
    """

    primary_metric: str

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
    ) -> dict[str, float]:
        """Train for ``num_rounds * cfg.local_epochs`` epochs starting at ``first_round``."""
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


@dataclass
class BinaryClassificationTask:
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

    def init_model(self, stats: FeatureStats, seed: int) -> nn.Module:
        import torch

        torch.manual_seed(seed)
        return self.build(stats)

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
    ) -> dict[str, float]:
        epochs = num_rounds * cfg.local_epochs
        loss = fit_binary(
            model,
            data.x,
            data.y,
            cfg,
            epochs=epochs,
            lr_for_epoch=lambda e: lr_at(cfg, first_round + e // cfg.local_epochs),
            pos_weight=self.pos_weight,
            seed=seed,
            proximal_mu=proximal_mu,
            augment=self.augment,
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
            # Always the same keys (None when no operating point could be chosen),
            # because Flower's strategies require identical metric keys from every site.
            if threshold is None:
                out.update({keys.SENSITIVITY: None, keys.SPECIFICITY: None, keys.THRESHOLD: None})
            else:
                out.update(metrics.operating_point(y, scores, threshold))
                t = np.asarray(threshold, dtype=float)
                out[keys.THRESHOLD] = float(t) if t.ndim == 0 else None
        return out
