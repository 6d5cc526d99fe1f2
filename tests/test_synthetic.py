"""The synthetic banks look like the real problem: imbalance, size skew, feature shift, shared fraud."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from domains.finance.adapters.transactions import TransactionAdapter
from domains.finance.scenario import make_data
from domains.finance.synthetic import FEATURE_COLUMNS, make_banks


def test_banks_differ_in_size_rate_and_features() -> None:
    banks = make_banks(seed=0)
    sizes = {k: len(v) for k, v in banks.items()}
    rates = {k: v["label"].mean() for k, v in banks.items()}
    assert len(banks) == 5
    assert max(sizes.values()) >= 10 * min(sizes.values())
    assert all(0.001 <= r <= 0.02 for r in rates.values())
    assert max(rates.values()) >= 5 * min(rates.values())
    # Feature shift: per-feature means of legitimate transactions differ between banks
    # far beyond sampling noise.
    means = np.stack([v.loc[v.label == 0, FEATURE_COLUMNS].to_numpy().mean(axis=0) for v in banks.values()])
    assert np.median(means.std(axis=0)) > 0.2


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = make_banks(seed=3)["bank_e"]
    b = make_banks(seed=3)["bank_e"]
    c = make_banks(seed=4)["bank_e"]
    assert a.equals(b)
    assert not a[FEATURE_COLUMNS].equals(c[FEATURE_COLUMNS])


def test_written_banks_pass_the_adapter(tmp_path: Path) -> None:
    files = make_data(tmp_path, seed=0, scale=0.05, file_format="csv")
    assert len(files) == 5
    for f in files:
        site = TransactionAdapter().read(f.parent)
        assert site.x.shape[1] == 128 and site.y.sum() >= 1
    assert not list(tmp_path.rglob("*.partial"))


def test_synthetic_data_is_generated_once_per_seed_and_settings(tmp_path: Path) -> None:
    import dataclasses

    from flcore import scenario
    from flcore.scenario import synthetic_data

    sc = scenario.get("iot-vibration-fleet")
    params = dataclasses.replace(sc.params, devices=3)
    said: list[str] = []
    root = synthetic_data(sc, 0, params, said.append)
    assert root.parent == tmp_path / "cache" and root.name.startswith("iot-vibration-fleet-seed0-")
    assert said == ["generating synthetic devices (seed 0) ..."] and len([p for p in root.iterdir() if p.is_dir()]) == 3
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert synthetic_data(sc, 0, params, said.append) == root  # reused, not written again
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamp
    assert said[-1] == f"synthetic devices (seed 0) generated earlier: {root}"
    assert synthetic_data(sc, 1, params) != root  # another seed
    assert synthetic_data(sc, 0, dataclasses.replace(params, devices=4)) != root  # another generation setting
    assert not list((tmp_path / "cache").glob(".partial-*"))  # no half-written folder left
