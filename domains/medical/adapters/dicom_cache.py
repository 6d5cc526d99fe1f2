"""Cache of a hospital's decoded DICOM images, keyed by its files and the decoding settings.

Entries live in ``$FLSUITE_CACHE/dicom`` (default ``~/.cache/flsuite/dicom``); the key
covers every file's size, modification time and inode, so a changed file is decoded
again, and at most :data:`MAX_CACHE_ENTRIES` entries are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from flcore import outputs
from flcore.data.site import SiteData
from flcore.governance.rules import Finding
from flcore.outputs import atomic_write

CACHE_VERSION = 3  # bump when decoding changes, so old caches are not reused
MAX_CACHE_ENTRIES = 32  # one entry per hospital folder and decoding setting


def cache_root() -> Path:
    """Where decoded arrays are cached: ``$FLSUITE_CACHE/dicom`` or ``~/.cache/flsuite/dicom``."""
    return outputs.cache_root() / "dicom"


def cache_key(site_dir: Path, settings: Mapping[str, object]) -> str:
    """The entry name of a hospital folder read with ``settings`` (every file's size, times and inode)."""
    entries = []
    for root, dirs, files in os.walk(site_dir):
        dirs.sort()
        for name in sorted(files):
            try:
                st = (Path(root) / name).lstat()
            except OSError:
                continue
            rel = os.path.relpath(Path(root) / name, site_dir)
            entries.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    blob = json.dumps({"version": CACHE_VERSION, "site": str(site_dir.resolve()), **settings, "files": entries})
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def save_site(site: SiteData, path: Path) -> None:
    """Write a decoded site to the cache entry ``path``, then drop the oldest entries."""
    # Decoded patient images: readable by their owner only.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = dict(site.info)
    info["identifier_findings"] = [asdict(f) for f in site.info["identifier_findings"]]  # type: ignore[attr-defined]
    with atomic_write(path, "wb", permissions=0o600) as handle:
        np.savez(handle, x=site.x, y=site.y, info=np.asarray(json.dumps(info)))
    # Bounded: keep the most recently written entries only (synthetic runs make new ones each time).
    entries = sorted(path.parent.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in entries[MAX_CACHE_ENTRIES:]:
        old.unlink(missing_ok=True)


def load_site(site_dir: Path, path: Path) -> SiteData:
    """The site cached in ``path``, marked ``info["cached"]``; its ``ids`` are the files it lists, as decoded."""
    with np.load(path) as z:
        info = json.loads(str(z["info"]))
        info["identifier_findings"] = [Finding(**f) for f in info["identifier_findings"]]
        info["cached"] = True
        ids = np.asarray(info["files"], dtype=object)  # ValueError below if they do not match: rebuilt
        return SiteData(site_dir.name, z["x"], z["y"], str(site_dir), info, ids)
