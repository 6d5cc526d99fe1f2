"""Simulated misbehaving sites: what a faulty or malicious participant sends instead of its update.

With ``attack`` set, ``attack-sites`` sites (drawn from the seed among the site
names, and recorded in results.json) train as usual and then replace their honest
update ``u = w_site - w_global`` every round by:

* ``scale``: ``attack-factor * u`` (an over-eager or boosted update);
* ``sign-flip``: ``-attack-factor * u`` (pushes the model away from the optimum);
* ``noise``: Gaussian noise of standard deviation ``attack-noise``, unrelated to the data;
* ``nan`` / ``inf``: non-finite values (a diverged or corrupt site).

For XGBoost the update is the trees a site adds, and the same operations act on
their leaf values. The attack is a ClientApp mod of the simulation only: a
deployed site never runs it. What the server does about it is the strategy's
business, except for non-finite updates, which :mod:`flcore.federation.strategies.screen`
always rejects.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from flcore import keys
from flcore.config import RunConfig, from_json
from flcore.learning.xgb import is_booster, perturb_leaves, tree_count

#: ConfigRecord key of train messages in an attack simulation: the attacking sites, comma-separated.
ATTACKERS = "attackers"


def choose_attackers(sites: list[str], k: int, seed: int) -> list[str]:
    """The ``k`` attacking sites of a run, drawn from the seed (the same sites for the same seed)."""
    return sorted(random.Random(f"attackers/{seed}").sample(sorted(sites), min(k, len(sites))))


def perturbation(cfg: RunConfig, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The function an attacking site applies to its update (float64 in, float64 out)."""
    kind = cfg.attack
    if kind == "scale":
        return lambda u: cfg.attack_factor * u
    if kind == "sign-flip":
        return lambda u: -cfg.attack_factor * u
    if kind == "noise":
        return lambda u: rng.normal(0.0, cfg.attack_noise, size=u.shape)
    if kind == "nan":
        return lambda u: np.full(u.shape, np.nan)
    if kind == "inf":
        return lambda u: np.where(u < 0, -np.inf, np.inf)
    raise ValueError(f"unknown attack {kind!r}")


def attack_arrays(sent: ArrayRecord, start: ArrayRecord, change: Callable[[np.ndarray], np.ndarray]) -> ArrayRecord:
    """``sent`` with ``change`` applied to its update against ``start``.

    Floating-point arrays: ``start + change(sent - start)``. A record of one ``uint8``
    array is an XGBoost booster: ``change`` acts on the leaf values of the trees the
    site added.
    Other arrays (counters) pass unchanged.
    """
    out: dict[str, Array] = {}
    for name, arr in sent.items():
        a = arr.numpy()  # type: ignore[union-attr]
        base = start[name].numpy() if name in start else None  # type: ignore[union-attr]
        if np.issubdtype(a.dtype, np.floating):
            ref = base.astype(np.float64) if base is not None and base.shape == a.shape else np.zeros(a.shape)
            with np.errstate(over="ignore", invalid="ignore"):
                new = (ref + change(a.astype(np.float64) - ref)).astype(a.dtype)
            out[name] = Array(new)
        elif is_booster(sent) and a.size:
            raw = a.tobytes()
            # Bagging sends only the new trees; cyclic sends the whole ensemble, the server's trees first.
            before = tree_count(base.tobytes()) if base is not None and base.size else 0
            first = before if tree_count(raw) > before else 0
            out[name] = Array(np.frombuffer(perturb_leaves(raw, first, change), dtype=np.uint8))
        else:
            out[name] = arr  # type: ignore[assignment]
    return ArrayRecord(out)


def attack_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Simulation ClientApp mod: an attacking site replaces its training reply's update.

    The site is attacking when its name is among the train config's ``attackers``;
    its noise is drawn from the seed, the round and its name.
    """
    if msg.metadata.message_type != MessageType.TRAIN or not msg.has_content():
        return call_next(msg, context)
    config = msg.content.config_records.get(keys.CONFIG)
    attackers = str(config.get(ATTACKERS, "")) if config is not None else ""
    start = msg.content.array_records.get(keys.ARRAYS)
    if not attackers or start is None:
        return call_next(msg, context)
    start = ArrayRecord(dict(start.items()))  # the ClientApp may change the record it received
    reply = call_next(msg, context)
    if reply.has_error() or keys.ARRAYS not in reply.content.array_records:
        return reply
    site = str(reply.content[keys.SITE][keys.SITE_NAME])  # type: ignore[index]
    if site not in attackers.split(","):
        return reply
    cfg = from_json(RunConfig, str(config[keys.RUN_JSON]))  # type: ignore[index]
    server_round = int(config.get(keys.SERVER_ROUND, 0))  # type: ignore[union-attr,arg-type]
    rng = np.random.default_rng(zlib.crc32(f"attack/{cfg.seed}/{server_round}/{site}".encode()))
    reply.content[keys.ARRAYS] = attack_arrays(
        reply.content[keys.ARRAYS],  # type: ignore[arg-type]
        start,
        perturbation(cfg, rng),
    )
    return reply


def describe(cfg: RunConfig, sites: list[str]) -> dict[str, object]:
    """What results.json records of a simulated attack."""
    out: dict[str, object] = {"kind": cfg.attack, "sites": sites}
    if cfg.attack in ("scale", "sign-flip"):
        out["factor"] = cfg.attack_factor
    if cfg.attack == "noise":
        out["noise_std"] = cfg.attack_noise
    return out
