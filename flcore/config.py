"""Typed run configuration: kebab-case settings parsed once, validated with clear errors.

A run is configured by two frozen dataclasses: :class:`RunConfig` (what every
domain shares: rounds, strategy, optimiser, partitioning) and a domain's own
hyperparameter dataclass. Each field carries metadata (help, bounds, choices);
:func:`apply_settings` turns ``key=value`` strings from the CLI, from
``[tool.flwr.app.config]`` or from a scenario file into a new validated instance.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

from flcore.exceptions import ConfigError

T = TypeVar("T")

#: Simulated misbehaviour of attacking sites (see :mod:`flcore.federation.mods.attack`).
ATTACKS = ("none", "scale", "sign-flip", "noise", "nan", "inf")
#: What ``flsuite robustness`` compares by default: strategies, and the attacks each faces.
ROBUSTNESS_STRATEGIES = ("fedavg", "fedtrimmedavg", "fedmedian", "krum", "multikrum")
ROBUSTNESS_ATTACKS = ("scale", "sign-flip", "noise", "nan")


def setting(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare a dataclass field as a user-facing setting with bounds or choices."""
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": choices,
    }
    return field(default=default, metadata=meta)


def parse_ints(text: str, key: str, example: str) -> tuple[int, ...]:
    """A comma-separated list of positive ints (layer widths, channels) from a str setting.

    Raises
    ------
    ConfigError
        Naming the setting, an example of a valid value and what was given.
    """
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(
            f"The '{key}' setting must be comma-separated positive ints such as {example}. Got {text!r} instead."
        )
    return values


def key_of(field_name: str) -> str:
    """The kebab-case key of a snake_case field (``local_epochs`` -> ``local-epochs``)."""
    return field_name.replace("_", "-")


def _range_text(meta: Mapping[str, Any], kind: str) -> str:
    low, high = meta.get("low"), meta.get("high")
    left = "(" if meta.get("low_open") else "["
    right = ")" if meta.get("high_open") or high is None else "]"
    lo = "-inf" if low is None else (str(int(low)) if kind == "int" else str(low))
    hi = "inf" if high is None else (str(int(high)) if kind == "int" else str(high))
    if low is None:
        left = "("
    return f"{left}{lo}, {hi}{right}"


def _coerce(owner: str, key: str, value: Any, typ: Any, meta: Mapping[str, Any]) -> Any:
    """Parse ``value`` (str or native) to ``typ`` and check the field's bounds."""
    kind = {int: "int", float: "float", bool: "bool", str: "str"}.get(typ)
    if kind is None:
        raise TypeError(f"unsupported setting type {typ!r} for {key}")
    try:
        if kind == "bool":
            if isinstance(value, bool):
                parsed: Any = value
            elif str(value).lower() in ("1", "true", "yes", "on"):
                parsed = True
            elif str(value).lower() in ("0", "false", "no", "off"):
                parsed = False
            else:
                raise ValueError(value)
        elif kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            parsed = int(str(value), 10) if isinstance(value, str) else int(value)
        elif kind == "float":
            parsed = float(value)
            if not math.isfinite(parsed):
                raise ValueError(value)
        else:
            parsed = str(value)
    except (TypeError, ValueError):
        expected = {
            "int": "an int",
            "float": "a finite float",
            "bool": "a bool (true/false)",
            "str": "a string",
        }[kind]
        raise ConfigError(
            f"The '{key}' setting of {owner} must be {expected}. Got {value!r} instead. Pass it as --set {key}=VALUE."
        ) from None

    choices = meta.get("choices")
    if choices is not None and parsed not in choices:
        raise ConfigError(
            f"The '{key}' setting of {owner} must be one of {', '.join(choices)}. Got {parsed!r} instead."
        )
    if kind in ("int", "float"):
        low, high = meta.get("low"), meta.get("high")
        bad = (low is not None and (parsed < low or (meta.get("low_open") and parsed == low))) or (
            high is not None and (parsed > high or (meta.get("high_open") and parsed == high))
        )
        if bad:
            raise ConfigError(
                f"The '{key}' setting of {owner} must be {'an int' if kind == 'int' else 'a float'} "
                f"in the range {_range_text(meta, kind)}. Got {parsed!r} instead."
            )
    return parsed


def settings_of(obj_or_cls: Any) -> dict[str, dataclasses.Field[Any]]:
    """Map kebab-case key to dataclass field for every setting of a config class."""
    return {key_of(f.name): f for f in dataclasses.fields(obj_or_cls)}


def apply_settings(obj: T, values: Mapping[str, Any], owner: str | None = None) -> T:
    """Return a copy of the config dataclass ``obj`` with ``values`` applied.

    Parameters
    ----------
    obj : dataclass instance
        The current configuration.
    values : mapping of str to Any
        Kebab-case keys to new values (strings are parsed to the field's type).
    owner : str, optional
        Name used in error messages; defaults to the class name.

    Raises
    ------
    ConfigError
        For an unknown key or a value of the wrong type or out of range.
    """
    owner = owner or type(obj).__name__
    fields = settings_of(obj)
    hints = get_type_hints(type(obj))
    changes = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"Unknown setting '{key}' for {owner}. Valid settings: {', '.join(sorted(fields))}.")
        f = fields[key]
        changes[f.name] = _coerce(owner, key, value, hints[f.name], f.metadata)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def validate(obj: T, owner: str | None = None) -> T:
    """Check every field of ``obj`` against its declared type and bounds."""
    return apply_settings(obj, {key_of(f.name): getattr(obj, f.name) for f in dataclasses.fields(obj)}, owner)  # type: ignore[arg-type]


def to_dict(obj: Any) -> dict[str, Any]:
    """Kebab-case dict of a config dataclass (what results.json records)."""
    return {key_of(f.name): getattr(obj, f.name) for f in dataclasses.fields(obj)}


def to_json(obj: Any) -> str:
    """JSON of :func:`to_dict`, for carrying a config inside a Flower ConfigRecord."""
    return json.dumps(to_dict(obj), sort_keys=True)


def from_json(cls: type[T], text: str) -> T:
    """Inverse of :func:`to_json`."""
    return apply_settings(cls(), json.loads(text))


@dataclass(frozen=True)
class RunConfig:
    """Settings every scenario shares. Domains override the defaults they recommend."""

    num_server_rounds: int = setting(20, "Federated rounds.", low=1)
    strategy: str = setting("fedavg", "Aggregation strategy (see `flsuite strategies`).")
    local_epochs: int = setting(5, "Local epochs per round (and the epoch budget per round for the baselines).", low=1)
    learning_rate: float = setting(0.05, "Client learning rate (SGD).", low=0.0, low_open=True)
    lr_decay: float = setting(
        1.0, "Learning-rate factor applied every lr-decay-rounds rounds.", low=0.0, high=1.0, low_open=True
    )
    lr_decay_rounds: int = setting(20, "Rounds between learning-rate decays.", low=1)
    optimizer: str = setting(
        "sgd",
        "Client optimiser: sgd (with momentum) or adam (state reset every round, as each round starts afresh).",
        choices=("sgd", "adam"),
    )
    momentum: float = setting(0.9, "SGD momentum.", low=0.0, high=1.0, high_open=True)
    weight_decay: float = setting(1e-5, "L2 weight decay.", low=0.0)
    batch_size: int = setting(256, "Mini-batch size.", low=1)
    clip_norm: float = setting(5.0, "Gradient-norm clipping (0 disables).", low=0.0)
    fraction_train: float = setting(
        1.0, "Share of sites sampled for training each round.", low=0.0, high=1.0, low_open=True
    )
    fraction_evaluate: float = setting(
        1.0, "Share of sites sampled for federated evaluation each round.", low=0.0, high=1.0
    )
    min_sites: int = setting(
        2,
        "Minimum sites per round: a round starts only with this many connected and is aggregated only if this "
        "many answer; otherwise the run stops, resumable from the last completed round.",
        low=1,
    )
    reply_timeout: float = setting(
        300.0,
        "Seconds to wait for the sites' replies in each round; a site that has not answered by then is "
        "recorded as dropped for that round.",
        low=0.0,
        low_open=True,
    )
    dropout_rate: float = setting(
        0.0,
        "Simulation: share of sampled sites that fail to answer in a round (devices offline); "
        "rounds go on with the others.",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    update_compression: str = setting(
        "none",
        "Codec of model updates sent by sites: none (float32), float16 or int8 (block-wise 8-bit).",
        choices=("none", "float16", "int8"),
    )
    compress_broadcast: bool = setting(
        True, "With update-compression, also send the global model to sites in that codec."
    )
    privacy: str = setting(
        "none",
        "Differential privacy: none; dp (sample-level DP-SGD at every site, Opacus); client-dp "
        "(client-level central DP, Flower's server-side clipping wrapper).",
        choices=("none", "dp", "client-dp"),
    )
    dp_epsilon: float = setting(
        0.0, "Epsilon the run may spend (0: the policy's max_epsilon_per_run, else 1).", low=0.0
    )
    dp_delta: float = setting(0.0, "Delta of the guarantee (0: the policy's delta).", low=0.0, high=1.0, high_open=True)
    dp_max_grad_norm: float = setting(1.0, "privacy=dp: per-record gradient clipping norm.", low=0.0, low_open=True)
    dp_update_clip: float = setting(
        1.0, "privacy=client-dp: clipping norm of each site's update.", low=0.0, low_open=True
    )
    secure_aggregation: str = setting(
        "none",
        "none, or secagg+ (Flower's SecAgg+: the coordinator sees only the sum of the sites' updates).",
        choices=("none", "secagg+"),
    )
    size_weight_beta: float = setting(
        0.0,
        "fedavg-sizeweighted: site weight is n_k^(1+beta); 0 is FedAvg, -1 weighs sites equally.",
        low=-1.0,
        high=1.0,
    )
    proximal_mu: float = setting(0.01, "fedprox: proximal term weight.", low=0.0)
    server_learning_rate: float = setting(0.01, "fedadam/fedyogi: server learning rate (eta).", low=0.0, low_open=True)
    trim_beta: float = setting(0.2, "fedtrimmedavg: share trimmed at each end.", low=0.0, high=0.5, high_open=True)
    krum_malicious: int = setting(1, "krum/multikrum: number of malicious sites tolerated.", low=0)
    krum_select: int = setting(
        0, "multikrum: updates averaged after selection (0: sites per round minus krum-malicious).", low=0
    )
    attack: str = setting(
        "none",
        "Simulation: what attack-sites attacking sites send every round instead of their honest update: "
        "none; scale (attack-factor x update); sign-flip (-attack-factor x update); noise (Gaussian noise of "
        "standard deviation attack-noise instead of the update); nan or inf (non-finite values, which the "
        "server always rejects).",
        choices=ATTACKS,
    )
    attack_sites: int = setting(
        1, "Simulation: how many sites attack (chosen from the seed) when attack is set.", low=1
    )
    attack_factor: float = setting(
        10.0, "attack=scale|sign-flip: factor applied to the update.", low=0.0, low_open=True
    )
    attack_noise: float = setting(
        1.0, "attack=noise: standard deviation of the noise sent instead of the update.", low=0.0, low_open=True
    )
    test_fraction: float = setting(
        0.3, "Share of each site's data held out for testing.", low=0.0, high=1.0, low_open=True, high_open=True
    )
    val_fraction: float = setting(
        0.0,
        "Share of each site's training split held out as validation data (thresholds are chosen there).",
        low=0.0,
        high=0.5,
        high_open=True,
    )
    data_mode: str = setting(
        "strict",
        "strict: a bad record or file stops the run; lenient: it is skipped and counted.",
        choices=("strict", "lenient"),
    )
    partition: str = setting(
        "natural",
        "How sites are formed: natural (one folder per site), dirichlet (label skew) or quantity (size skew).",
        choices=("natural", "dirichlet", "quantity"),
    )
    partition_alpha: float = setting(
        0.5, "Concentration of the dirichlet/quantity partitioner (smaller is more skewed).", low=0.0, low_open=True
    )
    num_sites: int = setting(0, "Sites for the dirichlet/quantity partitioner (0: as many as natural sites).", low=0)
    seed: int = setting(0, "Seed of splits, initialisation, sampling and shuffling.", low=0)
    num_cpus_per_client: float = setting(1.0, "CPUs reserved per virtual client in simulation.", low=0.0, low_open=True)


def check_attack(cfg: RunConfig, num_sites: int | None = None) -> None:
    """Refuse an attack simulation the suite cannot run faithfully.

    Raises
    ------
    ConfigError
        With secure aggregation or an update codec (the simulated attack acts on
        plain updates), or with more attacking sites than sites.
    """
    if cfg.attack == "none":
        return
    for key, value in (("secure-aggregation", cfg.secure_aggregation), ("update-compression", cfg.update_compression)):
        if value != "none":
            raise ConfigError(
                f"attack={cfg.attack} with {key}={value}: the simulated attack replaces a site's plain update, "
                f"which {key} hides or encodes. Set {key}=none for the attack simulation."
            )
    if num_sites is not None and cfg.attack_sites > num_sites:
        raise ConfigError(
            f"attack-sites={cfg.attack_sites}, but the federation has {num_sites} sites. "
            f"Set attack-sites between 1 and {num_sites}."
        )


def refuse_attack_outside_simulation(cfg: RunConfig) -> None:
    """A deployed federation's sites never run the simulated attack: refuse a plan that asks for one."""
    if cfg.attack != "none":
        raise ConfigError(
            f"attack={cfg.attack} is a simulation setting (flsuite run, flsuite robustness): deployed sites never "
            "run the simulated attack. Remove it for a deployment; the server rejects non-finite updates anyway."
        )
