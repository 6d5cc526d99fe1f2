"""Settings: parsing, bounds and unknown keys give scikit-learn-style messages."""

from __future__ import annotations

import pytest

from flcore import scenario
from flcore.config import RunConfig, apply_settings, from_json, to_json
from flcore.exceptions import ConfigError


def test_values_are_parsed_to_the_declared_type() -> None:
    cfg = apply_settings(RunConfig(), {"local-epochs": "3", "learning-rate": "0.1", "strategy": "fedprox"})
    assert cfg.local_epochs == 3 and cfg.learning_rate == 0.1 and cfg.strategy == "fedprox"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "local-epochs",
            "-1",
            r"The 'local-epochs' setting of RunConfig must be an int in the range \[1, inf\). Got -1 instead.",
        ),
        ("local-epochs", "2.5", r"The 'local-epochs' setting of RunConfig must be an int. Got '2.5' instead."),
        ("learning-rate", "0", r"must be a float in the range \(0.0, inf\). Got 0.0 instead."),
        ("fraction-train", "1.5", r"must be a float in the range \(0.0, 1.0\]. Got 1.5 instead."),
        ("learning-rate", "nan", r"must be a finite float"),
        ("partition", "iid", r"must be one of natural, dirichlet, quantity. Got 'iid' instead."),
    ],
)
def test_bad_values_are_refused_with_the_rule(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_settings(RunConfig(), {key: value})


def test_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"Unknown setting 'local-epoch' for RunConfig. Valid settings: .*local-epochs"
    ):
        apply_settings(RunConfig(), {"local-epoch": "3"})


def test_json_round_trip() -> None:
    cfg = apply_settings(RunConfig(), {"seed": 4, "strategy": "krum"})
    assert from_json(RunConfig, to_json(cfg)) == cfg


def test_scenario_routes_keys_to_run_config_and_domain_params() -> None:
    sc = scenario.get("finance-five-banks")
    cfg, params = sc.configure({"local-epochs": "2", "pos-weight": "3", "hidden-sizes": "16"})
    assert cfg.local_epochs == 2 and params.pos_weight == 3.0 and params.hidden() == (16,)
    # Recommended defaults of the domain apply where nothing is set.
    assert cfg.strategy == "fedavg-sizeweighted" and cfg.size_weight_beta == -1.0
    with pytest.raises(ConfigError, match=r"Unknown setting 'epochs' for scenario finance-five-banks"):
        sc.configure({"epochs": "2"})


def test_bad_hidden_sizes() -> None:
    sc = scenario.get("finance-five-banks")
    # configure builds the task, so a bad width fails there, before any data are read
    with pytest.raises(ConfigError, match=r"'hidden-sizes' setting must be comma-separated positive ints"):
        sc.configure({"hidden-sizes": "64,x"})


def test_unknown_scenario_lists_available() -> None:
    with pytest.raises(Exception, match=r"Unknown scenario 'nope'. Available scenarios: .*finance-five-banks"):
        scenario.get("nope")
