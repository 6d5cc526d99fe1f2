"""The `iot-vibration-fleet` scenario: a fleet of rotating machines learns what healthy vibration looks like."""

from __future__ import annotations

from pathlib import Path

from domains.iot.adapters.vibration import VibrationAdapter, split_device
from domains.iot.config import DEFAULT_DEVICES, FEATURES, RECOMMENDED_RUN, IotParams
from domains.iot.governance import DEFAULT_POLICY
from domains.iot.models import SpectralAutoencoder
from domains.iot.synthetic import write_fleet
from flcore.data.site import FeatureStats
from flcore.exceptions import ConfigError
from flcore.learning.task import AnomalyDetectionTask
from flcore.scenario import Scenario


def make_data(
    out: Path, seed: int = 0, scale: float = 1.0, file_format: str | None = None, devices: int = DEFAULT_DEVICES
) -> list[Path]:
    """Write a synthetic fleet: one folder per device with ``device.json``, recordings and ``labels.csv``.

    ``scale`` multiplies the recordings each device holds; ``file_format`` is ``npy``
    (default), ``csv`` or ``parquet``.
    """
    if file_format not in (None, "npy", "csv", "parquet"):
        raise ConfigError(f"iot-vibration-fleet writes npy, csv or parquet recordings, not {file_format}.")
    if devices < 2:
        raise ConfigError(f"A fleet needs at least 2 devices; got --devices {devices}.")
    if not scale > 0:
        raise ConfigError(f"--scale must be positive; got {scale}.")
    return write_fleet(
        Path(out), n_devices=devices, seed=seed, file_format=file_format or "npy", recordings_scale=scale
    )


def make_task(params: IotParams) -> AnomalyDetectionTask:
    """The spectral autoencoder; anomaly ROC-AUC is primary, F1 at each device's calibrated threshold."""
    hidden = params.hidden()

    def build(stats: FeatureStats) -> SpectralAutoencoder:
        return SpectralAutoencoder(stats, hidden=hidden)

    return AnomalyDetectionTask(build=build, threshold_quantile=params.threshold_quantile)


SCENARIO = Scenario(
    name="iot-vibration-fleet",
    domain="iot",
    description="200 machines (bearing faults on a third) learn normal vibration; 30% sampled per round, dropouts.",
    site_noun="device",
    adapter=VibrationAdapter(FEATURES),
    make_data=make_data,
    make_task=make_task,
    params=IotParams(),
    run_defaults=RECOMMENDED_RUN,
    policy=DEFAULT_POLICY,
    splitter=split_device,
    generation_settings=("devices",),
    leave_out_unusable=True,
    repartition=False,
)
