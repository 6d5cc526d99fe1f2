"""Simulated dropout: a client mod that makes a sampled site fail to answer, reproducibly."""

from __future__ import annotations

import hashlib
import json

from flwr.app import Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from flcore import keys


def dropout_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Simulation only: a sampled site fails to answer with probability ``dropout-rate``.

    Devices in a fleet go offline (power, network, maintenance). The draw depends on
    the seed, the round and the virtual node, so a run is reproducible and a device
    that is offline for training is offline for that round's evaluation too. The
    reply is an error, as Flower delivers for a node that cannot be reached, and the
    strategy aggregates the replies it has.
    """
    if msg.metadata.message_type not in (MessageType.TRAIN, MessageType.EVALUATE):
        return call_next(msg, context)
    config = msg.content.config_records.get(keys.CONFIG)
    if config is None or keys.RUN_JSON not in config:
        return call_next(msg, context)
    run = json.loads(str(config[keys.RUN_JSON]))
    rate = float(run.get("dropout-rate", 0.0))
    server_round = int(config.get(keys.SERVER_ROUND, 0))  # type: ignore[arg-type]
    node = context.node_config.get("partition-id", context.node_id)
    if rate > 0 and dropout_draw(int(run.get("seed", 0)), server_round, str(node)) < rate:
        reason = f"simulated dropout: node {node} offline in round {server_round} (dropout-rate={rate})"
        return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason=reason), reply_to=msg)
    return call_next(msg, context)


def dropout_draw(seed: int, server_round: int, node: str) -> float:
    """A uniform number in [0, 1) fixed by seed, round and node, independent across rounds and nodes.

    A cryptographic hash, not CRC32: CRC is linear, so the sets of nodes it drops in
    different rounds would overlap far more (or less) than independent draws do.
    """
    digest = hashlib.blake2b(f"dropout/{seed}/{server_round}/{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
