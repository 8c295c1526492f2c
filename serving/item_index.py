"""The API's in-memory item matrix and popular list, refreshed from Redis in the background.

A daemon thread pulls only the items whose factors changed (the store's change log) every
``item_refresh_ms`` and swaps in new arrays when the matrix grows, so a request always sees a
consistent (ids, matrix) pair without taking a lock. The popular list refreshed alongside it
doubles as the last good answer when Redis is unreachable.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from state.records import Vector
from state.store import RedisStore

log = logging.getLogger(__name__)

POPULAR_LIST_SIZE = 1000


@dataclass(frozen=True, slots=True)
class ItemMatrix:
    """An immutable-by-convention view: ids, their rows and the matrix (rows >= len(ids))."""

    item_ids: tuple[str, ...]
    rows: dict[str, int]
    matrix: Vector
    seq: int

    @property
    def size(self) -> int:
        """Number of items with factors."""
        return len(self.item_ids)

    def vectors(self) -> Vector:
        """The filled part of the matrix."""
        return self.matrix[: self.size]


class ItemIndex:
    """Item factors and popular items as of the last refresh."""

    def __init__(self, store: RedisStore, refresh_interval_s: float) -> None:
        self.store = store
        self.refresh_interval_s = refresh_interval_s
        self.current = ItemMatrix((), {}, np.zeros((0, store.factors), np.float32), 0)
        self.popular: list[tuple[str, float]] = []
        self.redis_ok = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._popular_every = max(1, int(1.0 / refresh_interval_s))

    def refresh(self) -> int:
        """Pull changed item factors; return how many changed."""
        cur = self.current
        changes = self.store.read_item_changes(cur.seq)
        if not changes.item_ids:
            return 0
        new_ids = [i for i in changes.item_ids if i not in cur.rows]
        matrix = cur.matrix
        rows = cur.rows
        ids = cur.item_ids
        if new_ids:
            needed = cur.size + len(new_ids)
            if needed > matrix.shape[0]:
                capacity = max(needed, 2 * matrix.shape[0], 1024)
                grown = np.zeros((capacity, self.store.factors), np.float32)
                grown[: cur.size] = matrix[: cur.size]
                matrix = grown
            rows = dict(rows)
            for offset, item_id in enumerate(new_ids):
                rows[item_id] = cur.size + offset
            ids = ids + tuple(new_ids)
        # Rows of existing items are overwritten in place: a request racing with this
        # sees either the old or the new vector of an item, both valid.
        target = np.fromiter((rows[i] for i in changes.item_ids), np.intp, len(changes.item_ids))
        matrix[target] = changes.vectors
        self.current = ItemMatrix(ids, rows, matrix, changes.max_seq)
        return len(changes.item_ids)

    def refresh_popular(self) -> None:
        """Reload the popular list (kept as the fallback when Redis goes away)."""
        popular = self.store.popular(POPULAR_LIST_SIZE)
        if popular:
            self.popular = popular

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self.refresh()
                if tick % self._popular_every == 0 or not self.popular:
                    self.refresh_popular()
                self.redis_ok = True
            except Exception:  # any Redis/network failure: keep serving what we have
                if self.redis_ok:
                    log.warning("item index refresh failed; serving the last good state")
                self.redis_ok = False
            tick += 1
            self._stop.wait(self.refresh_interval_s)

    def start(self) -> None:
        """Load once and keep refreshing in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="item-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the refresh thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
