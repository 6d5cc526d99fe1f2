"""Recommended hyperparameters for the medical scenarios, in one place.

Imaging (``medical-three-hospitals``), measured on the synthetic hospitals (README):

* 20 rounds of ``local-epochs = 3``: the CNN finds lesions only after ~25-30 epochs of
  pooled-equivalent training and then improves quickly; 10 rounds stop too early.
  Hospitals are few and always online, but their data differ
  (scanner, case mix); three epochs per round keep client drift small.
* Adam, ``learning-rate = 0.001``, batch 16, gradient clipping at 5. With SGD the CNN
  needs several times more epochs before it starts finding lesions at all (measured).
* ``strategy = fedavg`` (sample-weighted): the hospitals' sizes differ by 3x, not
  by orders of magnitude, and every hospital has lesions to learn from.
* ``val-fraction = 0.2``: a fifth of each training split chooses the operating point
  (Youden's J) at which sensitivity and specificity are reported.
* Random flips and small shifts of training images: a lesion is a lesion wherever it
  sits, and small hospitals need the extra variety most.

Clinical (``medical-clinical``): a small MLP on standardised features, 20 rounds of 3
local epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

from flcore.config import parse_ints, setting

#: Side of the square images the CNN sees; the DICOM adapter resizes every image to it.
IMAGE_SIZE = 64


@dataclass(frozen=True)
class ImagingParams:
    """Hyperparameters of the lesion CNN (``--set key=value``)."""

    channels: str = setting("16,32,64,64", "Channels of the convolution blocks, comma-separated.")
    dropout: float = setting(0.2, "Dropout before the classifier.", low=0.0, high=1.0, high_open=True)
    pos_weight: float = setting(1.0, "Weight of lesion examples in the loss.", low=0.0, low_open=True)
    augment: bool = setting(True, "Random flips and shifts of training images.")

    def channel_tuple(self) -> tuple[int, ...]:
        """``channels`` parsed to a tuple of positive ints."""
        return parse_ints(self.channels, "channels", "16,32,64")


@dataclass(frozen=True)
class ClinicalParams:
    """Hyperparameters of the clinical-table MLP (``--set key=value``)."""

    schema: str = setting(
        "",
        "A schema for the hospitals' own tables: a file, or its JSON (--schema FILE passes that; see "
        "README). Empty: DATA/schema.toml when present, else the reference contract (numeric features, 'label').",
    )
    hidden_sizes: str = setting("16", "Hidden layer widths, comma-separated.")
    dropout: float = setting(0.0, "Dropout after each hidden layer.", low=0.0, high=1.0, high_open=True)
    pos_weight: float = setting(1.0, "Weight of positive examples in the loss.", low=0.0, low_open=True)

    def hidden(self) -> tuple[int, ...]:
        """``hidden_sizes`` parsed to a tuple of positive ints."""
        return parse_ints(self.hidden_sizes, "hidden-sizes", "16 or 32,16")


RECOMMENDED_IMAGING_RUN = {
    "num-server-rounds": 20,
    "local-epochs": 3,
    "optimizer": "adam",
    "learning-rate": 0.001,
    "weight-decay": 1e-4,
    "batch-size": 16,
    "clip-norm": 5.0,
    "strategy": "fedavg",
    "fraction-train": 1.0,
    "test-fraction": 0.3,
    "val-fraction": 0.2,
}

RECOMMENDED_CLINICAL_RUN = {
    "num-server-rounds": 20,
    "local-epochs": 3,
    "learning-rate": 0.05,
    "momentum": 0.9,
    "weight-decay": 1e-4,
    "batch-size": 32,
    "clip-norm": 5.0,
    "strategy": "fedavg",
    "fraction-train": 1.0,
    "test-fraction": 0.3,
    "val-fraction": 0.2,
}

#: Under ``privacy=dp`` (sample-level DP-SGD, epsilon <= 1 per run): each step's noise is
#: fixed by the number of steps, so the run takes fewer, larger ones: 10 rounds of one
#: epoch, expected batches of 64 (Poisson-sampled), a larger learning rate, per-record
#: clipping at 1. Measured on the Wisconsin hospitals (README): ROC-AUC 0.98 at
#: epsilon 1 against 0.99 without DP; with the non-DP schedule (60 epochs) the noise
#: needed for epsilon 1 drowns the signal (0.82).
DP_CLINICAL_RUN = {
    "num-server-rounds": 10,
    "local-epochs": 1,
    "batch-size": 64,
    "learning-rate": 0.2,
    "dp-max-grad-norm": 1.0,
}
