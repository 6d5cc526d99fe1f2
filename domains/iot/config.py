"""Recommended hyperparameters for the IoT fleet scenario, in one place.

Measured on the synthetic fleet (README, `flsuite run iot-vibration-fleet`):

* A cross-device federation: 200 devices, 30% sampled per round
  (``fraction-train = 0.3``), and 10% of the sampled ones offline each round
  (``dropout-rate = 0.1``): the fleet's reality, not a favour to the method.
* ``local-epochs = 2``: devices are weak and hold 14-170 windows each; more local
  epochs on so little data pull a device's model towards its own operating point.
* 20 rounds: the federated model's ROC-AUC stops improving after 10-20 rounds and
  drifts down slightly afterwards as the autoencoder starts to reconstruct faults too.
* Adam at 0.001, batch 32: the autoencoder trains reliably with it from the first
  round; SGD needed several times more rounds.
* ``val-fraction = 0.2`` of each device's unlabelled recordings calibrates its
  threshold at the 99th percentile of normal scores (about 1% false alarms).
* Federated evaluation samples 30% of devices per round too; the final scores use
  every device's labelled windows.
"""

from __future__ import annotations

from dataclasses import dataclass

from domains.iot.adapters.features import SpectralFeatures
from flcore.config import parse_ints, setting

#: Windowing and spectral features, identical at every device of the fleet.
FEATURES = SpectralFeatures(window_s=0.25, overlap=0.5, bands=32, envelope_bins=40)

#: Size of the generated fleet when no --data is given.
DEFAULT_DEVICES = 200


@dataclass(frozen=True)
class IotParams:
    """Hyperparameters of the vibration anomaly detector (``--set key=value``)."""

    devices: int = setting(DEFAULT_DEVICES, "Devices in the generated fleet (used when no --data is given).", low=2)
    hidden_sizes: str = setting("128,16", "Autoencoder widths down to the bottleneck, comma-separated.")
    threshold_quantile: float = setting(
        0.99,
        "Quantile of a device's normal validation scores used as its anomaly threshold.",
        low=0.5,
        high=1.0,
    )

    def hidden(self) -> tuple[int, ...]:
        """``hidden_sizes`` parsed to a tuple of positive ints."""
        return parse_ints(self.hidden_sizes, "hidden-sizes", "128,16")


RECOMMENDED_RUN = {
    "num-server-rounds": 20,
    "local-epochs": 2,
    "optimizer": "adam",
    "learning-rate": 0.001,
    "weight-decay": 0.0,
    "batch-size": 32,
    "clip-norm": 5.0,
    "strategy": "fedavg",
    "fraction-train": 0.3,
    "fraction-evaluate": 0.3,
    "dropout-rate": 0.1,
    "val-fraction": 0.2,
}
