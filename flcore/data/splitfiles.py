"""A prepared site split written to and read from one ``.npz`` file, and the cache that keeps splits in memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flcore.data.site import SiteData, SiteSplit
from flcore.outputs import atomic_write


class SplitCache:
    """Prepared site splits kept between messages, least recently used evicted beyond ``max_bytes``.

    A simulation worker serves many virtual sites in turn (hundreds of devices); a
    SuperNode serves one. Both reuse the decoded data across rounds without letting
    a large fleet grow a worker's memory without bound.
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], tuple[SiteSplit, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[object, ...], make: Callable[[], SiteSplit]) -> SiteSplit:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        split = make()
        size = sum(int(p.x.nbytes + p.y.nbytes) for p in (split.train, split.test, split.val) if p is not None)
        self._items[key] = (split, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, old) = self._items.popitem(last=False)
            self._bytes -= old
        return split

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


#: The process's split cache, shared by every site this process serves.
SITE_CACHE = SplitCache()


def save_split(split: SiteSplit, path: Path) -> None:
    """Write a prepared site split (train and test arrays) as one ``.npz`` file."""
    val = split.val
    with atomic_write(path, "wb", permissions=0o600) as handle:  # a site's records: its owner reads them
        np.savez(
            handle,
            name=np.asarray(split.name),
            x_train=split.train.x,
            y_train=split.train.y,
            x_test=split.test.x,
            y_test=split.test.y,
            x_val=val.x if val is not None else np.zeros((0, *split.train.x.shape[1:]), dtype=split.train.x.dtype),
            y_val=val.y if val is not None else np.zeros(0, dtype=split.train.y.dtype),
        )


def load_split(path: Path) -> SiteSplit:
    """Inverse of :func:`save_split`."""
    with np.load(path) as z:
        name = str(z["name"])
        val = SiteData(name, z["x_val"], z["y_val"], str(path)) if len(z["y_val"]) else None
        return SiteSplit(
            name,
            SiteData(name, z["x_train"], z["y_train"], str(path)),
            SiteData(name, z["x_test"], z["y_test"], str(path)),
            val,
        )
