"""Atomic per-round checkpoints of a federation (model, strategy state, history), for resuming after a crash.

Flower has no checkpointing of its own. After every completed round the
coordinator writes one ``checkpoint.npz``: the global model, every array of the
strategy's own state (server-optimiser moments, momentum; wrappers included),
the round history, the run's id and its full configuration. The file is written
beside its final name, flushed to disk and renamed over it, so a crash at any
moment leaves either the previous round's checkpoint or this one, never a torn
file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from flcore.config import to_dict
from flcore.exceptions import CheckpointError
from flcore.governance.audit import digest_bytes
from flcore.outputs import atomic_write

CHECKPOINT_FILE = "checkpoint.npz"
#: Settings a resumed run may change: how long to wait, how few sites may answer, CPUs per client.
RESUME_EXEMPT = ("reply-timeout", "min-sites", "num-cpus-per-client")
FORMAT = 1

#: Attributes of Flower strategies (and of the suite's wrappers) that carry state from round to round.
#: FedOpt family (FedAdam, FedYogi, FedAdagrad): ``current_arrays``, ``m_t``, ``v_t``; FedAvgM:
#: ``current_arrays``, ``momentum_vector``; server-side DP wrappers: ``current_arrays``.
STATE_ATTRIBUTES = ("current_arrays", "m_t", "v_t", "momentum_vector")


@dataclass
class Checkpoint:
    """Everything needed to continue a federation after its last completed round."""

    run_id: str
    scenario: str
    config: dict[str, Any]
    params: dict[str, Any]
    round: int
    arrays: dict[str, np.ndarray]
    strategy_state: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    monitor: dict[str, Any] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def array_record(self) -> ArrayRecord:
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in self.arrays.items()})

    def check_fits(self, scenario: str, cfg: Any, params: Any) -> None:
        """Refuse resuming this checkpoint under another scenario or settings, or a run that cannot be resumed.

        Raises
        ------
        CheckpointError
            Naming the settings that differ, or why the run cannot be resumed.
        """
        now = {k: v for k, v in to_dict(cfg).items() if k not in RESUME_EXEMPT}
        then = {k: v for k, v in self.config.items() if k not in RESUME_EXEMPT}
        if self.scenario != scenario or then != now or self.params != to_dict(params):
            changed = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
            raise CheckpointError(
                f"The checkpoint of run {self.run_id} was written for {self.scenario} with other settings "
                f"({', '.join(changed) or 'domain parameters'} differ). Resume with the checkpoint's own settings."
            )
        if cfg.privacy == "client-dp":
            raise CheckpointError(
                "A privacy=client-dp run cannot be resumed: the coordinator's privacy accountant is not "
                "checkpointed. Start a new run (the sites' ledgers keep this run's reservation)."
            )


def find_checkpoint(path: Path | str) -> Path:
    """``path`` itself if it is a checkpoint file, else ``path/checkpoint.npz``; a clear error if absent."""
    path = Path(path)
    candidate = path if path.is_file() else path / CHECKPOINT_FILE
    if not candidate.is_file():
        raise CheckpointError(
            f"No checkpoint at {candidate}. --resume takes the output folder of the interrupted run "
            f"(the one holding {CHECKPOINT_FILE}, written after every completed round) or the file itself."
        )
    return candidate


def write_checkpoint(path: Path | str, ckpt: Checkpoint) -> str:
    """Write ``ckpt`` atomically to ``path``; returns the file's ``sha256:`` digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {f"model/{i}": np.ascontiguousarray(v) for i, v in enumerate(ckpt.arrays.values())}
    state_meta, state_arrays = _flatten_state(ckpt.strategy_state)
    arrays.update(state_arrays)
    meta = {
        "format": FORMAT,
        "run_id": ckpt.run_id,
        "scenario": ckpt.scenario,
        "config": ckpt.config,
        "params": ckpt.params,
        "round": ckpt.round,
        "model_keys": list(ckpt.arrays),
        "strategy_state": state_meta,
        "history": ckpt.history,
        "monitor": ckpt.monitor,
        "sites": ckpt.sites,
        "wall_time_s": ckpt.wall_time_s,
        "extra": ckpt.extra,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    with atomic_write(path, "wb", permissions=0o600) as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return file_digest(path)


def read_checkpoint(path: Path | str) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint`, or explain why it cannot be used."""
    path = find_checkpoint(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if not isinstance(meta, dict):
                raise ValueError("its metadata is not a JSON object")
            if meta.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path} has checkpoint format {meta.get('format')!r}; this version of flsuite reads format "
                    f"{FORMAT}. Resume with the flsuite version that wrote it."
                )
            return Checkpoint(
                run_id=str(meta["run_id"]),
                scenario=str(meta["scenario"]),
                config=dict(meta["config"]),
                params=dict(meta["params"]),
                round=int(meta["round"]),
                arrays={k: z[f"model/{i}"] for i, k in enumerate(meta["model_keys"])},
                strategy_state=_unflatten_state(meta["strategy_state"], z),
                history=list(meta["history"]),
                monitor=dict(meta["monitor"]),
                sites=list(meta["sites"]),
                wall_time_s=float(meta["wall_time_s"]),
                extra=dict(meta.get("extra", {})),
            )
    except CheckpointError:
        raise
    except Exception as err:  # any damage (truncated zip, bad JSON, missing or mistyped fields): the user sees it
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err}). It may have been copied "
            "incompletely; a checkpoint is only ever replaced whole, so use the file as the run left it."
        ) from None


def file_digest(path: Path | str) -> str:
    """``sha256:...`` of a file's bytes."""
    return digest_bytes(Path(path).read_bytes())


# --------------------------------------------------------------------------------------
# Strategy state
# --------------------------------------------------------------------------------------


def _chain(strategy: Any) -> list[Any]:
    """The strategy and every strategy it wraps (``.strategy``), outermost first."""
    out = []
    while strategy is not None and strategy not in out:
        out.append(strategy)
        strategy = getattr(strategy, "strategy", None)
    return out


def capture_strategy(strategy: Any) -> dict[str, Any]:
    """The round-to-round state of ``strategy`` and the strategies it wraps, as plain arrays.

    Keys are ``"<depth>.<attribute>"``; values are ``None``, a dict of arrays or a list of arrays.
    """
    state: dict[str, Any] = {}
    for depth, obj in enumerate(_chain(strategy)):
        for name in STATE_ATTRIBUTES:
            if name not in vars(obj):
                continue
            value = vars(obj)[name]
            key = f"{depth}.{name}"
            if value is None:
                state[key] = None
            elif isinstance(value, ArrayRecord):
                state[key] = {"kind": "arrayrecord", "arrays": {k: a.numpy() for k, a in value.items()}}  # type: ignore[union-attr]
            elif isinstance(value, dict):
                state[key] = {"kind": "dict", "arrays": {k: np.asarray(a) for k, a in value.items()}}
            elif isinstance(value, list | tuple):
                state[key] = {"kind": "list", "arrays": {str(i): np.asarray(a) for i, a in enumerate(value)}}
            else:
                raise TypeError(f"cannot checkpoint {type(obj).__name__}.{name} of type {type(value).__name__}")
    return state


def restore_strategy(strategy: Any, state: dict[str, Any]) -> None:
    """Put state captured by :func:`capture_strategy` back into an identically built strategy."""
    chain = _chain(strategy)
    for key, value in state.items():
        depth_text, name = key.split(".", 1)
        depth = int(depth_text)
        if depth >= len(chain) or name not in vars(chain[depth]):
            owner = type(chain[min(depth, len(chain) - 1)]).__name__
            raise CheckpointError(
                f"The checkpoint holds strategy state '{name}' that strategy {owner} does not have: it was "
                "written under another strategy. Resume with the checkpoint's own settings."
            )
        obj = chain[depth]
        if value is None:
            setattr(obj, name, None)
        elif value["kind"] == "arrayrecord":
            setattr(obj, name, ArrayRecord({k: Array(np.ascontiguousarray(a)) for k, a in value["arrays"].items()}))
        elif value["kind"] == "dict":
            setattr(obj, name, dict(value["arrays"]))
        else:
            setattr(obj, name, [value["arrays"][str(i)] for i in range(len(value["arrays"]))])


def _flatten_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if value is None:
            meta[key] = None
            continue
        names = list(value["arrays"])
        meta[key] = {"kind": value["kind"], "names": names}
        for i, name in enumerate(names):
            arrays[f"state/{key}/{i}"] = np.ascontiguousarray(value["arrays"][name])
    return meta, arrays


def _unflatten_state(meta: dict[str, Any], z: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if value is None:
            out[key] = None
            continue
        out[key] = {"kind": value["kind"], "arrays": {n: z[f"state/{key}/{i}"] for i, n in enumerate(value["names"])}}
    return out
