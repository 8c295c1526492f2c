"""The Redis store: the only code that reads or writes freshrec's Redis keys.

Writes are versioned and idempotent: a record is replaced only by a strictly newer version
(Lua scripts compare and set atomically), so output the dataflow re-emits after a resume
from a checkpoint, or a late duplicate, does no harm. Item factor writes also append the
item to a change log (a sorted set scored by a global sequence number) from which replicas
in the worker and in the API pull only what changed since their last refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis

from state.keys import Keys
from state.records import UserRecord, Vector, decode_user, encode_user, matrix_from_blobs

# KEYS = user keys; ARGV = version_1, blob_1, version_2, blob_2, ...
# Each stored record starts with its version as an 8-byte big-endian integer.
_WRITE_USERS_LUA: Final = """
local written = 0
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[2 * i - 1])
  local current = redis.call('GET', key)
  local current_version = -1
  if current then current_version = struct.unpack('>I8', current) end
  if version > current_version then
    redis.call('SET', key, ARGV[2 * i])
    written = written + 1
  end
end
return written
"""

# KEYS = factors hash, versions hash, change zset, seq counter, popularity zset
# ARGV = item_1, version_1, blob_1, popularity_1, item_2, ...
_WRITE_ITEMS_LUA: Final = """
local written = 0
for i = 1, #ARGV, 4 do
  local item = ARGV[i]
  local version = tonumber(ARGV[i + 1])
  local current = tonumber(redis.call('HGET', KEYS[2], item) or '-1')
  if version > current then
    redis.call('HSET', KEYS[1], item, ARGV[i + 2])
    redis.call('HSET', KEYS[2], item, version)
    redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), item)
    redis.call('ZADD', KEYS[5], ARGV[i + 3], item)
    written = written + 1
  end
end
return written
"""


@dataclass(frozen=True, slots=True)
class ItemWrite:
    """New state of one item, as produced by the dataflow's item step."""

    item_id: str
    version: int
    vector: bytes
    popularity_log2: float


@dataclass(frozen=True, slots=True)
class ItemChanges:
    """Item factors written since a sequence number."""

    item_ids: list[str]
    vectors: Vector
    max_seq: int


class RedisStore:
    """freshrec's view of one Redis namespace."""

    def __init__(self, client: redis.Redis, prefix: str, factors: int) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.factors = factors
        self._write_users = client.register_script(_WRITE_USERS_LUA)
        self._write_items = client.register_script(_WRITE_ITEMS_LUA)

    @classmethod
    def from_url(
        cls, url: str, prefix: str, factors: int, *, timeout_s: float | None = None
    ) -> RedisStore:
        """Connect (lazily) to the Redis at ``url``."""
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        return cls(client, prefix, factors)

    # --- users -------------------------------------------------------------------------
    def write_users(self, records: Sequence[tuple[str, UserRecord]]) -> int:
        """Store user records that are newer than what is stored; return how many were."""
        if not records:
            return 0
        keys = [self.keys.user(user_id) for user_id, _ in records]
        args: list[Any] = []
        for _, record in records:
            args.extend((record.version, encode_user(record)))
        return int(self._write_users(keys=keys, args=args))

    def get_user(self, user_id: str) -> UserRecord | None:
        """The user's record, or None if the dataflow has not seen them."""
        blob = self.client.get(self.keys.user(user_id))
        return None if blob is None else decode_user(blob)

    # --- items -------------------------------------------------------------------------
    def write_items(self, items: Sequence[ItemWrite]) -> int:
        """Store item states newer than what is stored; return how many were."""
        if not items:
            return 0
        args: list[Any] = []
        for item in items:
            args.extend((item.item_id, item.version, item.vector, repr(item.popularity_log2)))
        k = self.keys
        keys = [k.item_factors, k.item_versions, k.item_changes, k.item_change_seq, k.popularity]
        return int(self._write_items(keys=keys, args=args))

    def item_change_seq(self) -> int:
        """Sequence number of the last item factor write (0 when none)."""
        return int(self.client.get(self.keys.item_change_seq) or 0)

    def read_item_changes(self, since_seq: int) -> ItemChanges:
        """Item factors written after ``since_seq`` (all of them for ``since_seq=0``)."""
        changed = self.client.zrangebyscore(
            self.keys.item_changes, f"({since_seq}", "+inf", withscores=True
        )
        if not changed:
            return ItemChanges([], matrix_from_blobs([], self.factors), since_seq)
        item_ids = [member.decode() for member, _ in changed]
        blobs = self.client.hmget(self.keys.item_factors, item_ids)
        present = [(i, b) for i, b in zip(item_ids, blobs, strict=True) if b is not None]
        max_seq = int(max(score for _, score in changed))
        return ItemChanges(
            [i for i, _ in present],
            matrix_from_blobs([b for _, b in present], self.factors),
            max_seq,
        )

    def popular(self, count: int) -> list[tuple[str, float]]:
        """The ``count`` most popular items with their log2 decayed popularity."""
        rows = self.client.zrevrange(self.keys.popularity, 0, count - 1, withscores=True)
        return [(member.decode(), float(score)) for member, score in rows]

    # --- housekeeping ------------------------------------------------------------------
    def ping(self) -> bool:
        """True when Redis answers."""
        return bool(self.client.ping())

    def delete_namespace(self) -> int:
        """Delete every key of this namespace (tests and ``stack down --purge``)."""
        deleted = 0
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=self.keys.pattern(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(self.client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(self.client.unlink(*batch))
        return deleted
