"""A trained model on disk: weights that never run code on load, and a manifest that checks every byte.

One folder per model::

    model.safetensors   torch weights (safetensors: tensors only; pickle would run code on load)
    model.json          or XGBoost's own JSON for a tree ensemble (cover statistics removed: xgb.without_cover)
    manifest.json       what the model is and how to use it, with the SHA-256 of every file

The manifest also holds ``digest``, the SHA-256 of its own canonical JSON (without that
key): a changed weight byte or manifest value is refused on load (whitespace in the
manifest is not content). The digest
catches corruption and careless edits; a deliberate forger could recompute it, which
is why a run records every model's digest in its hash-chained audit trail too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from flcore.exceptions import DataValidationError
from flcore.outputs import atomic_write

MANIFEST = "manifest.json"
#: The manifest's ``format``; a reader refuses any other.
FORMAT = "flsuite-model/1"
TORCH_WEIGHTS = "model.safetensors"
TREE_WEIGHTS = "model.json"


def model_files(family: str, model: Any) -> dict[str, bytes]:
    """A model's weight file(s), by name: safetensors for torch, XGBoost JSON for trees."""
    if family == "xgboost":
        from flcore.learning.xgb import booster_bytes, without_cover

        return {TREE_WEIGHTS: without_cover(booster_bytes(model.booster))}
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {TORCH_WEIGHTS: save(state)}


def load_weights(family: str, model: Any, files: dict[str, bytes], where: Path) -> None:
    """Put the weights of ``files`` (as :func:`read_model` returns them) into ``model``.

    Raises
    ------
    DataValidationError
        When the manifest lists no weight file for the family, or the weights do not fit the model it describes.
    """
    name = TREE_WEIGHTS if family == "xgboost" else TORCH_WEIGHTS
    if name not in files:
        raise DataValidationError(where / MANIFEST, f"the manifest lists no {name} for a {family} model.", _REEXPORT)
    if family == "xgboost":
        from flcore.learning.xgb import booster_from_bytes, booster_problem

        raw = files[TREE_WEIGHTS]
        problem = booster_problem(raw)
        if problem is not None:
            raise DataValidationError(where / TREE_WEIGHTS, f"not a usable tree ensemble: {problem}.", _REEXPORT)
        model.booster = booster_from_bytes(raw)
        model.loaded_trees = model.trees
        return
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        state = load(files[TORCH_WEIGHTS])
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as err:
        raise DataValidationError(
            where / TORCH_WEIGHTS, f"the weights do not fit the model the manifest describes ({err}).", _REEXPORT
        ) from None
    model.eval()


_REEXPORT = "Use the model folder as the run wrote it (models/<arm>/), or run again to export it anew."


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON, its ``digest`` key left out."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=_plain).encode())


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def write_model(folder: Path, files: dict[str, bytes], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the weight files, then the manifest (last: a folder without one is no model).

    Returns the manifest as written, with ``format``, ``files`` (name -> SHA-256) and ``digest``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        with atomic_write(folder / name, "wb") as handle:
            handle.write(data)
    out = {"format": FORMAT, **manifest, "files": {name: _sha256(data) for name, data in files.items()}}
    out = json.loads(json.dumps(out, default=_plain))  # plain JSON types only, as read back
    out["digest"] = manifest_digest(out)
    with atomic_write(folder / MANIFEST, "w") as handle:
        json.dump(out, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return out


def read_model(folder: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A model folder's manifest and weight files, every byte checked against the manifest.

    Raises
    ------
    DataValidationError
        When the folder holds no manifest, the manifest is not JSON, is of another
        format or does not match its digest, or a file is missing or differs from
        its SHA-256.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataValidationError(
            folder,
            f"no {MANIFEST}: this is not a model folder.",
            "Pass a model folder a run wrote (OUT/models/federated, OUT/models/centralised or "
            "OUT/models/local_only/<site>), or the run folder itself for its federated model.",
        )
    try:
        manifest = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataValidationError(path, f"the manifest is not valid JSON ({err}); it was altered.", _REEXPORT) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataValidationError(
            path, f"the manifest's format is {found!r}, not {FORMAT!r}.", "Export the model with this flsuite version."
        )
    if manifest.get("digest") != manifest_digest(manifest):
        raise DataValidationError(
            path,
            "the manifest does not match its digest: it was altered after the run wrote it.",
            _REEXPORT,
            field="digest",
        )
    files: dict[str, bytes] = {}
    for name, expected in dict(manifest.get("files", {})).items():
        if Path(name).name != name:
            raise DataValidationError(path, f"the manifest names a file outside the folder ({name!r}).", _REEXPORT)
        try:
            data = (folder / name).read_bytes()
        except OSError as err:
            raise DataValidationError(
                folder / name, f"the model file cannot be read ({err.strerror}).", _REEXPORT
            ) from None
        if _sha256(data) != expected:
            raise DataValidationError(
                folder / name,
                "the file's SHA-256 differs from the manifest's: it was altered or damaged after the run wrote it.",
                _REEXPORT,
            )
        files[name] = data
    return manifest, files
