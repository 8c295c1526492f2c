"""The worker's replica of the item factors: pulled from Redis, held natively for the user model.

Item vectors have one owner, the item model, which writes them to Redis with a change log;
the user model needs them too (the user half of an ISGD step moves the user towards the item)
but cannot read its downstream step's state. So each worker process keeps one native
:class:`operators.ItemVectors` and this feed pulls only the items whose factors changed since
its last pull, at most every ``item_refresh_ms`` (the user model asks for it; see
``operators/src/item_vectors.rs`` for what that staleness means for reproducibility).
"""

from __future__ import annotations

import threading

from dataflows.retry import retry_while_unreachable
from operators import IsgdParams, ItemVectors
from state.store import RedisStore


class ItemReplicaFeed:
    """Pulls changed item factors from the store into one native replica."""

    def __init__(self, store: RedisStore, params: IsgdParams) -> None:
        self.store = store
        self.vectors = ItemVectors(params)
        self.seq = 0
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Pull the items changed since the last pull; return how many (waits out outages)."""
        with self._lock:  # worker threads of one process share the replica
            changes = retry_while_unreachable(lambda: self.store.read_item_changes(self.seq))
            self.vectors.apply(changes.item_ids, changes.vectors.tobytes())
            self.seq = changes.max_seq
            return len(changes.item_ids)


_feeds: dict[tuple[str, str, int], ItemReplicaFeed] = {}
_feeds_lock = threading.Lock()


def shared_replica(redis_url: str, prefix: str, params: IsgdParams) -> ItemReplicaFeed:
    """The one replica of this process for a namespace (worker threads share it)."""
    key = (redis_url, prefix, params.factors)
    with _feeds_lock:
        feed = _feeds.get(key)
        if feed is None:
            store = RedisStore.from_url(redis_url, prefix, params.factors)
            feed = _feeds[key] = ItemReplicaFeed(store, params)
        return feed
