"""Operating points chosen on validation data, and validation splits that never overlap training or test."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.data.site import SiteData, split_site
from flcore.learning.metrics import operating_point, youden_threshold


def test_youden_threshold_by_hand() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.9])
    # Thresholds 0.7: sens 2/3, spec 1 (J=0.667); 0.35: sens 1, spec 1/3 (J=0.333); 0.6: sens 2/3, spec 2/3.
    assert youden_threshold(y, s) == pytest.approx(0.7)


def test_no_threshold_from_one_class() -> None:
    assert youden_threshold(np.zeros(4), np.linspace(0, 1, 4)) is None


def test_operating_point_by_hand_and_per_example_thresholds() -> None:
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.4, 0.5, 0.1])
    assert operating_point(y, s, 0.45) == {"sensitivity": 0.5, "specificity": 0.5}
    assert operating_point(y, s, np.array([0.5, 0.3, 0.6, 0.05])) == {"sensitivity": 1.0, "specificity": 0.5}


def test_validation_split_is_disjoint_and_stratified() -> None:
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = (np.arange(100) % 4 == 0).astype(np.int64)
    split = split_site(SiteData("s", x, y), 0.3, seed=0, val_fraction=0.2)
    assert split.val is not None
    ids = [set(part.x[:, 0].tolist()) for part in (split.train, split.val, split.test)]
    assert sum(len(i) for i in ids) == 100 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert split.val.y.sum() >= 1 and split.test.y.sum() >= 1
