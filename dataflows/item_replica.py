"""The worker's replica of the item factors: held natively for the user model, refreshed.

Item vectors have one owner, the item model, which writes them to Redis with a change log;
the user model needs them too (the user half of an ISGD step moves the user towards the item)
but cannot read its downstream step's state. So each worker process keeps one native
:class:`operators.ItemVectors`; at most every ``item_refresh_ms`` (the user model asks) this
feed adopts the vectors this process' own item models computed since the last refresh, and
reads from Redis only the changed items owned by other processes (none with one process): it
skips the change log's entries its own process' sink appended without decoding them.
See ``operators/src/item_vectors.rs`` for what that staleness means for reproducibility.
"""

from __future__ import annotations

import threading

from dataflows.retry import retry_while_unreachable
from operators import IsgdParams, ItemVectors
from state.store import RedisStore, sink_writer_id


class ItemReplicaFeed:
    """Pulls changed item factors from the store into one native replica."""

    def __init__(self, store: RedisStore, params: IsgdParams) -> None:
        self.store = store
        self.vectors = ItemVectors(params)
        self.seq = 0
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Adopt the items changed since the last refresh; return how many (waits out outages)."""
        with self._lock:  # worker threads of one process share the replica
            changed, max_seq = retry_while_unreachable(
                lambda: self.store.item_change_ids(self.seq, skip_writer=sink_writer_id())
            )
            remote = self.vectors.remote(changed)
            ids, matrix = retry_while_unreachable(lambda: self.store.item_vectors(remote))
            self.vectors.apply(ids, matrix)
            # This process' own changes last: they are at least as new as Redis' copy.
            local = self.vectors.apply_staged()
            self.seq = max_seq
            return len(ids) + local


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
