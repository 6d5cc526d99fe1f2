"""The federation's registered sites, read from the SuperLink's own database.

A deployed coordinator registers each site's public key with ``flwr supernode register
KEY --name SITE``. Flower keeps that registration (node id, public key, name) in the
SuperLink's database, where it survives restarts, and admits a SuperNode only when the
key it signs with is registered. So the node id a reply comes from names its site: the
ServerApp takes site names from here, not from what a site says about itself.

Flower 1.41 offers no call that returns the names (``flwr supernode list`` omits them),
so this reads the ``node`` table read-only (SQLite ``mode=ro``); ``tests/test_coordinator_units.py``
checks that table's columns against the installed Flower.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flcore.exceptions import DeploymentError

_UINT64 = 1 << 64


def _nodes(database: Path, where: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of the SuperLink's ``node`` table (read-only) that are registered and match ``where``."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
            sql = f"SELECT node_id, name, status, online_until FROM node WHERE status != 'unregistered' AND {where}"
            return list(db.execute(sql, params).fetchall())
    except sqlite3.Error as err:
        raise DeploymentError(
            f"Cannot read the registered sites from the SuperLink's database {database}: {err}. "
            "The coordinator service (`flsuite coordinator start`) writes it; check the path and its permissions."
        ) from err


def registered_sites(database: Path) -> dict[int, str]:
    """Node id -> site name of every SuperNode registered with a name and not unregistered."""
    # Flower stores the unsigned 64-bit node id as a signed SQLite integer.
    return {int(str(node_id)) % _UINT64: str(name) for node_id, name, _, _ in _nodes(database, "name != ''")}


def key_session(database: Path, public_key: bytes) -> tuple[str, float] | None:
    """Status (``registered``, ``online``, ``offline``) and session expiry (Unix time) of a key; None: unknown."""
    rows = _nodes(database, "public_key = ?", (public_key,))
    return (str(rows[0][2]), float(str(rows[0][3] or 0))) if rows else None
