"""Torch building blocks shared by domains: standardisation layer, training loop, scoring."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from flcore.config import RunConfig
from flcore.data.site import FeatureStats

if TYPE_CHECKING:
    from flcore.learning.privacy import DpSgd


class Standardize(nn.Module):
    """Fixed (non-trainable) standardisation ``(x - mean) / std``, clamped to +-clip.

    The statistics are buffers, so they travel with the model's state dict: a
    federation computes them once from the sites' pooled sums and every site then
    preprocesses identically, in training and in deployment.
    """

    def __init__(self, stats: FeatureStats, clip: float = 8.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(stats.mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(stats.std, dtype=torch.float32))
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        return torch.clamp((x - mean) / std, -self.clip, self.clip)


def seed_cpu(seed: int) -> None:
    """``torch.manual_seed`` for the CPU generator, which every model here trains on.

    ``torch.manual_seed`` also queues the seed for CUDA, XPU and MTIA, each time
    formatting a stack trace for a lazy call: about 1.5 ms per call, twice per message
    a device answers. The CPU stream, and so every result, is the same.
    """
    torch.default_generator.manual_seed(seed)


def lr_at(cfg: RunConfig, round_index: int) -> float:
    """Learning rate for 0-based round ``round_index``: step decay every lr-decay-rounds."""
    return cfg.learning_rate * cfg.lr_decay ** (round_index // cfg.lr_decay_rounds)


def fit_binary(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: RunConfig,
    *,
    epochs: int,
    lr_for_epoch: Callable[[int], float],
    pos_weight: float,
    seed: int,
    proximal_mu: float = 0.0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    dp: DpSgd | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> float:
    """Train ``model`` (logit output) with SGD on weighted binary cross-entropy.

    Parameters
    ----------
    model : torch.nn.Module
        Returns one logit per example.
    x, y : numpy.ndarray
        Features and 0/1 labels.
    cfg : RunConfig
        Batch size, momentum, weight decay and gradient clipping.
    epochs : int
        Passes over the data.
    lr_for_epoch : callable
        Learning rate of each 0-based epoch.
    pos_weight : float
        Weight of the positive class in the loss (class-imbalance handling).
    seed : int
        Seed of the shuffling (and dropout).
    proximal_mu : float
        FedProx term (mu/2)*||w - w_start||^2 against the weights at entry.
    augment : callable, optional
        ``augment(batch, generator)`` returns an augmented copy of a training batch
        (for images: flips, shifts); seeded by ``generator``.
    dp : DpSgd, optional
        Sample-level DP-SGD: Poisson-sampled batches, per-record clipping and noise
        (replaces ``cfg.clip-norm`` clipping); its step count is advanced.
    on_epoch : callable, optional
        Called with the number of epochs done after each epoch (to score the model
        as it trains); training resumes in train mode, with the same random state.

    Returns
    -------
    float
        Mean training loss of the last epoch.
    """
    if len(y) == 0:
        raise ValueError("cannot train on an empty site")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(pos_weight)))

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        batch = xt[idx] if augment is None else augment(xt[idx], gen)
        return loss_fn(model(batch), yt[idx])

    return _train_loop(model, len(yt), cfg, epochs, lr_for_epoch, seed, proximal_mu, batch_loss, dp, on_epoch)


def fit_reconstruction(
    model: nn.Module,
    x: np.ndarray,
    cfg: RunConfig,
    *,
    epochs: int,
    lr_for_epoch: Callable[[int], float],
    seed: int,
    proximal_mu: float = 0.0,
    dp: DpSgd | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> float:
    """Train an anomaly model whose forward pass returns one reconstruction error per example.

    The loss is the mean of ``model(batch)``; labels are not used (the training data
    are taken as normal). Optimiser, clipping and the FedProx term as in
    :func:`fit_binary`, as is ``on_epoch``.

    Returns
    -------
    float
        Mean training loss of the last epoch.
    """
    if len(x) == 0:
        raise ValueError("cannot train on an empty site")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return model(xt[idx]).mean()

    return _train_loop(model, len(xt), cfg, epochs, lr_for_epoch, seed, proximal_mu, batch_loss, dp, on_epoch)


def _train_loop(
    model: nn.Module,
    n: int,
    cfg: RunConfig,
    epochs: int,
    lr_for_epoch: Callable[[int], float],
    seed: int,
    proximal_mu: float,
    batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    dp: DpSgd | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> float:
    """Mini-batch epochs over ``n`` examples minimising ``batch_loss(indices, generator)``.

    Without ``dp``: shuffled batches of ``cfg.batch_size``, gradient-norm clipping at
    ``cfg.clip-norm``. With ``dp``: each step draws a Poisson sample of the records
    (rate ``dp.sample_rate``), and Opacus clips every record's gradient and adds noise
    before the step; an epoch is ``1 / rate`` steps.
    """
    seed_cpu(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr_for_epoch(0), weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr_for_epoch(0), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    last = float("nan")
    # DP noise and Poisson samples come from a secret seed: the run's seed is known to the coordinator,
    # which could otherwise regenerate the noise and subtract it from the update.
    private = torch.Generator().manual_seed(secrets.randbits(63)) if dp is not None else gen
    context: Any = dp.attach(model, opt, n, private) if dp is not None else nullcontext()
    with context as dp_opt:
        for epoch in range(epochs):
            model.train()  # again after each on_epoch, which may have scored the model in eval mode
            for group in opt.param_groups:
                group["lr"] = lr_for_epoch(epoch)
            total, count = 0.0, 0
            for idx in _batches(n, cfg.batch_size, private, dp):
                (dp_opt or opt).zero_grad(set_to_none=True)
                loss = batch_loss(idx, gen)  # an empty Poisson batch still takes a (noise-only) step
                if proximal_mu > 0 and dp_opt is None:
                    prox = sum(((p - s) ** 2).sum() for p, s in zip(params, start, strict=True))
                    loss = loss + 0.5 * proximal_mu * prox
                loss.backward()
                if dp is not None:
                    dp.steps += 1
                    if not dp_opt.pre_step():  # clips each record's gradient and adds the noise
                        continue
                    if proximal_mu > 0:  # data-independent, so it may join after privatisation
                        with torch.no_grad():
                            for p, s in zip(params, start, strict=True):
                                p.grad = p.grad + proximal_mu * (p - s) if p.grad is not None else proximal_mu * (p - s)
                elif cfg.clip_norm > 0:
                    nn.utils.clip_grad_norm_(params, cfg.clip_norm)
                opt.step()
                if len(idx):
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
            last = total / count if count else float("nan")
            if on_epoch is not None:
                on_epoch(epoch + 1)
    return last


def _batches(n: int, batch_size: int, gen: torch.Generator, dp: DpSgd | None) -> list[torch.Tensor]:
    """One epoch's mini-batches: a shuffled partition, or Poisson samples under DP-SGD."""
    if dp is None:
        order = torch.randperm(n, generator=gen)
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    from flcore.learning.privacy import steps_per_epoch

    return [
        torch.nonzero(torch.rand(n, generator=gen) < dp.sample_rate).squeeze(1)
        for _ in range(steps_per_epoch(dp.sample_rate))
    ]


@torch.no_grad()
def predict_scores(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """The model's raw outputs (e.g. anomaly scores), in batches, in eval mode."""
    model.eval()
    out = []
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for i in range(0, len(xt), batch_size):
        out.append(model(xt[i : i + batch_size]).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Sigmoid of the model's logits, in batches, in eval mode."""
    model.eval()
    out = []
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for i in range(0, len(xt), batch_size):
        out.append(torch.sigmoid(model(xt[i : i + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def bce_loss(scores: np.ndarray, y: np.ndarray) -> float:
    """Unweighted binary cross-entropy of probabilities ``scores`` against labels."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    yy = np.asarray(y, dtype=np.float64)
    return float(-np.mean(yy * np.log(p) + (1 - yy) * np.log(1 - p))) if len(yy) else float("nan")
