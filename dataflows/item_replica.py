"""A worker-local, read-only replica of the item factors for the user step.

Item vectors have one owner: the item-keyed step, which applies every item update in order
and writes the result to Redis. The user-keyed step needs item vectors too (the user half of
an ISGD step moves the user towards the item), but a Bytewax flow is a DAG, so the owner's
state cannot flow back upstream. Each worker process therefore keeps this replica, pulling
only the items whose factors changed (from the store's change log) at most every
``item_refresh_ms``. An item the replica has not seen yet starts from the same seeded vector
the owner starts from (``initial_vector``), so a new item needs no round trip.

Consequence, stated plainly: user vectors depend on how stale the replica was when the
user's event was processed (bounded by ``item_refresh_ms`` plus the item step's lag), so
they are not bit-for-bit reproducible across runs; item vectors, update counts, windows and
everything else are.
"""

from __future__ import annotations

import threading
import time

from operators.isgd import IsgdParams, Vector, initial_vector
from state.store import RedisStore


class ItemReplica:
    """Item vectors as last pulled from Redis, refreshed incrementally."""

    def __init__(self, store: RedisStore, params: IsgdParams, refresh_interval_s: float) -> None:
        self.store = store
        self.params = params
        self.refresh_interval_s = refresh_interval_s
        self.vectors: dict[str, Vector] = {}
        self.ids: list[str] = []
        """Every item id the replica holds, for sampling (append-only)."""
        self.seq = 0
        self._next_refresh = 0.0

    def get(self, item_id: str) -> Vector:
        """The item's vector as last seen (a copy is not needed: callers only read)."""
        vec = self.vectors.get(item_id)
        if vec is None:
            vec = self.vectors[item_id] = initial_vector(item_id, "item", self.params)
            self.ids.append(item_id)
        return vec

    def maybe_refresh(self) -> int:
        """Pull changed items if the refresh interval has passed; return how many."""
        now = time.monotonic()
        if now < self._next_refresh:
            return 0
        self._next_refresh = now + self.refresh_interval_s
        changes = self.store.read_item_changes(self.seq)
        for row, item_id in enumerate(changes.item_ids):
            if item_id not in self.vectors:
                self.ids.append(item_id)
            self.vectors[item_id] = changes.vectors[row]
        self.seq = changes.max_seq
        return len(changes.item_ids)


_replicas: dict[tuple[str, str, int], ItemReplica] = {}
_replicas_lock = threading.Lock()


def shared_replica(
    redis_url: str, prefix: str, params: IsgdParams, refresh_interval_s: float
) -> ItemReplica:
    """The one replica of this process for a namespace (worker threads share it)."""
    key = (redis_url, prefix, params.factors)
    with _replicas_lock:
        replica = _replicas.get(key)
        if replica is None:
            store = RedisStore.from_url(redis_url, prefix, params.factors)
            replica = _replicas[key] = ItemReplica(store, params, refresh_interval_s)
        return replica
