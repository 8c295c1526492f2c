"""The Redis store: the only code that reads or writes freshrec's Redis keys.

Writes are versioned and idempotent: a user record, an item's state or a neighbour list is
replaced only by a strictly newer version, so output the dataflow re-emits after a resume from
a checkpoint, or a late duplicate, does no harm. A batch is written in two round trips: one
reads the stored versions (a hash per item kind; a user's is the header of their record), the
other writes what is newer with variadic commands. That is not atomic, and need not be: every
key has one writer, the dataflow's owner of that user or item (keys are routed to workers by
id). Item factor writes also append the batch's item ids to a change log (a stream whose entry
ids are a global sequence number) from which replicas in the worker and in the API pull only
what changed since their last refresh.

Users' keys expire: a record, a parked state and its index entry live ``retention_s``
(``Settings.user_retention_s``) after their last write. An erasure (:meth:`RedisStore.
erase_users`) deletes them at once, with the user's entries in the holdout and alarm streams
(found by the pseudonym they carry); the dataflow's erasure also goes first in its batch's
first round trip, before the versions of anything newer are read.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import hiredis
import msgspec
import numpy as np
import redis
from redis.commands.core import Script

from operators import RespBatch, StateWrites, WindowCounts, user_pseudonym
from operators.model_validation import HeldOut
from state.keys import Keys
from state.records import (
    VERSION_HEADER_BYTES,
    CatalogueItem,
    NeighboursRecord,
    Rule,
    UserRecord,
    Vector,
    decode_catalogue_item,
    decode_neighbours,
    decode_rule,
    decode_user,
    encode_catalogue_item,
    encode_neighbours,
    encode_rule,
    encode_user,
    matrix_from_blobs,
)

# KEYS = change stream, seq counter; ARGV = how many items, their ids (msgpack array), entries
# kept, the writer ('' when not the dataflow's sink).
# Appends one entry per batch, its id the batch's last sequence number, atomically: a replica
# that has read the log up to some number must never see a later write get a smaller one (two
# workers write items concurrently). One entry per batch, not one sorted-set member per item:
# ZADD of ~900 members into a large set cost ~3 ms of Redis per batch, one XADD ~0.1 ms.
_LOG_ITEM_CHANGES_LUA: Final = """
local count = tonumber(ARGV[1])
local last = redis.call('INCRBY', KEYS[2], count)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], last .. '-0',
  'first', last - count + 1, 'ids', ARGV[2], 'writer', ARGV[4])
return last
"""


def sink_writer_id() -> str:
    """The name under which this process' dataflow sink appends to the item change log.

    The worker's item replica has already adopted what its own item models computed (they
    stage their vectors in it), so it skips its own process' entries without decoding their
    ids: with one worker process that was every entry, ~5% of the worker's wall time in
    Python. Per process (the pid is part of it: a forked child is another writer), unique
    across hosts.
    """
    pid = os.getpid()
    if _sink_writer[0] != pid:
        _sink_writer[:] = [pid, f"{pid}-{os.urandom(8).hex()}"]
    return str(_sink_writer[1])


_sink_writer: list[Any] = [None, ""]

ITEM_CHANGE_LOG_ENTRIES: Final = 2048
"""Batches the item change log keeps. A replica further behind (or starting) reads every item
id instead (HKEYS): at ~100 ms per refresh, that takes minutes of absence."""

# KEYS = catalogue hash, change zset, seq counter; ARGV = item_1, blob_1, item_2, blob_2, ...
_PUT_CATALOGUE_LUA: Final = """
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[i])
end
return #ARGV / 2
"""

# The serving hot path in one round trip: the user's record and the co-visitation lists of
# their most recent items. KEYS[1] = user key; ARGV = neighbours-key prefix, how many recent
# items, position of ``recent`` in the msgpack record (1-based). Returns {} for an unknown
# user, else {record blob, neighbours blob or false, ...} in the order of ``recent``.
# Redis' cmsgpack rejects msgpack's bin type (the vector), so the fields before ``recent``
# (ints, floats, the vector) are skipped by hand and only ``recent`` is decoded.
# Builds the neighbour keys itself: one Redis (or one Cluster slot per namespace) only.
_USER_WITH_NEIGHBOURS_LUA: Final = """
local function skip(s, p)
  local t = string.byte(s, p)
  if t <= 0x7f or t >= 0xe0 or t == 0xc0 or t == 0xc2 or t == 0xc3 then return p + 1 end
  if t == 0xcc or t == 0xd0 then return p + 2 end
  if t == 0xcd or t == 0xd1 then return p + 3 end
  if t == 0xce or t == 0xd2 or t == 0xca then return p + 5 end
  if t == 0xcf or t == 0xd3 or t == 0xcb then return p + 9 end
  if t == 0xc4 then return p + 2 + string.byte(s, p + 1) end
  if t == 0xc5 then return p + 3 + struct.unpack('>I2', s, p + 1) end
  if t == 0xc6 then return p + 5 + struct.unpack('>I4', s, p + 1) end
  return error('freshrec: unexpected msgpack type ' .. t .. ' before recent')
end
local blob = redis.call('GET', KEYS[1])
if not blob then return {} end
local p = %d
local header = string.byte(blob, p)
if header == 0xdc then p = p + 3 elseif header == 0xdd then p = p + 5 else p = p + 1 end
for _ = 2, tonumber(ARGV[3]) do p = skip(blob, p) end
local _, recent = cmsgpack.unpack_one(blob, p - 1)
local out = {blob}
if type(recent) ~= 'table' then return out end
local n = math.min(#recent, tonumber(ARGV[2]))
for i = 1, n do
  out[i + 1] = redis.call('GET', ARGV[1] .. recent[i]) or false
end
return out
"""
#: Where ``recent`` sits in a user record's msgpack array (the script reads it by position).
_RECENT_POSITION: Final = UserRecord.__struct_fields__.index("recent") + 1

# KEYS = user record keys. The stored versions: each record's 8-byte version header ("" for a
# user without a record). A record carries its version, so nothing else holds user ids, and
# the version expires with the record.
_USER_VERSIONS_LUA: Final = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('GETRANGE', key, 0, 7) end
return out
"""

# KEYS = user record keys; ARGV = time to live in ms (0: none), then the records in order.
_SET_USERS_LUA: Final = """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if ttl > 0 then redis.call('SET', key, ARGV[i + 1], 'PX', ttl)
  else redis.call('SET', key, ARGV[i + 1]) end
end
return #KEYS
"""

# KEYS = holdout stream, alarm stream, then one user's sample index per sample. ARGV = the
# index's time to live (ms), the streams' lengths kept, then 5 values per sample: 'h' (holdout:
# key, vector, item, user pseudonym) or 'a' (a user's alarm: kind, scope, detail, pseudonym).
# Each entry's id goes into the user's index (a set keyed by their pseudonym), so an erasure
# deletes exactly their entries: scanning the holdout stream (20,000 entries) took ~50 ms of
# Redis, during which serving's reads (50 ms budget) would fail.
_APPEND_SAMPLES_LUA: Final = """
local ttl = ARGV[1]
for i = 3, #KEYS do
  local b = 3 + (i - 3) * 5
  local id
  if ARGV[b + 1] == 'h' then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'key', ARGV[b + 2],
      'vector', ARGV[b + 3], 'item', ARGV[b + 4], 'user', ARGV[b + 5])
  else
    id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'kind', ARGV[b + 2],
      'scope', ARGV[b + 3], 'detail', ARGV[b + 4], 'user', ARGV[b + 5])
  end
  redis.call('SADD', KEYS[i], ARGV[b + 1] .. ' ' .. id)
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS - 2
"""
HOLDOUT_ENTRIES: Final = 20_000
ALARM_ENTRIES: Final = 10_000

# KEYS = parked index, holdout stream, alarm stream, erasure ledger, then per user their
# record, parked state and sample index. ARGV = now (unix s), ledger entries kept, user count
# n, the n user ids, then erasure ids to record as done (none: an API-side deletion).
_ERASE_USERS_LUA: Final = """
local n = tonumber(ARGV[3])
local purged = 0
for i = 1, n do
  local base = 4 + (i - 1) * 3
  redis.call('DEL', KEYS[base + 1], KEYS[base + 2])
  redis.call('ZREM', KEYS[1], ARGV[3 + i])
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[base + 3])) do
    local stream = KEYS[3]
    if string.sub(member, 1, 1) == 'h' then stream = KEYS[2] end
    purged = purged + redis.call('XDEL', stream, string.sub(member, 3))
  end
  redis.call('DEL', KEYS[base + 3])
end
if #ARGV > 3 + n then
  for i = 4 + n, #ARGV do redis.call('ZADD', KEYS[4], ARGV[1], ARGV[i]) end
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[2]) + 1))
end
return purged
"""

ERASURE_LEDGER_ENTRIES: Final = 100_000
"""Completed erasures remembered (by erasure id, with no user id) for status requests."""


@dataclass(frozen=True, slots=True)
class UserWithNeighbours:
    """A user's record and the co-visitation lists of their most recent items."""

    user: UserRecord
    sources: list[str]
    """The most recent items whose lists were read, most recent first."""
    neighbours: list[NeighboursRecord | None]
    """Each source's list, or None where it has none."""


#: Context-segment popularity lists keep this many items (the tail is never served).
SEGMENT_POPULAR_MAX: Final = 2000


@dataclass(frozen=True, slots=True)
class ItemWrite:
    """New state of one item, as produced by the dataflow's item step."""

    item_id: str
    version: int
    vector: bytes
    popularity_log2: float
    trend_log2: float | None = None
    category_id: str | None = None


@dataclass(frozen=True, slots=True)
class SegmentPopularityWrite:
    """An item's decayed popularity within one context segment."""

    segment: str
    item_id: str
    popularity_log2: float


@dataclass(frozen=True, slots=True)
class FeedbackWrite:
    """Counts of one feedback window of a (model, segment)."""

    model: str
    segment: str
    window: WindowCounts


@dataclass(frozen=True, slots=True)
class ItemChanges:
    """Item factors written since a sequence number, with the items' event categories."""

    item_ids: list[str]
    vectors: Vector
    categories: list[str | None]
    max_seq: int


@dataclass(frozen=True, slots=True)
class CatalogueChanges:
    """Catalogue entries written since a sequence number."""

    items: list[CatalogueItem]
    max_seq: int


_decode_ids = msgspec.msgpack.Decoder(list[str]).decode


def _header_version(header: bytes) -> int:
    """A user record's version from its 8-byte header (-1: no record)."""
    return int.from_bytes(header, "big") if header else -1


class RedisStore:
    """freshrec's view of one Redis namespace."""

    def __init__(self, client: redis.Redis, prefix: str, factors: int) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.factors = factors
        self._put_catalogue = client.register_script(_PUT_CATALOGUE_LUA)
        self._hot = threading.local()
        self._user_with_neighbours = client.register_script(
            _USER_WITH_NEIGHBOURS_LUA % (VERSION_HEADER_BYTES + 1)
        )

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
    def write_users(self, records: Sequence[tuple[str, UserRecord]], ttl_s: int = 0) -> int:
        """Store user records newer than what is stored (the newest of each); how many.

        ``ttl_s``: the records expire that long after this write (0: never).
        """
        newest: dict[str, UserRecord] = {}
        for user_id, record in records:
            if user_id not in newest or record.version > newest[user_id].version:
                newest[user_id] = record
        if not newest:
            return 0
        (stored,) = self._execute([self._user_versions_command(list(newest))])
        fresh = [
            (u, r)
            for (u, r), header in zip(newest.items(), stored, strict=True)
            if r.version > _header_version(header)
        ]
        if fresh:
            records = [x for u, r in fresh for x in (self.keys.user(u), encode_user(r))]
            self._execute([self._set_users_command(records, ttl_s)])
        return len(fresh)

    def _user_versions_command(self, user_ids: Sequence[str]) -> tuple[Any, ...]:
        keys = [self.keys.user(u) for u in user_ids]
        return ("EVAL", _USER_VERSIONS_LUA, len(keys), *keys)

    @staticmethod
    def _set_users_command(records: Sequence[Any], ttl_s: int) -> tuple[Any, ...]:
        """SET of (key, record, key, record, ...), each expiring ``ttl_s`` from now (0: never)."""
        keys, blobs = records[0::2], records[1::2]
        return ("EVAL", _SET_USERS_LUA, len(keys), *keys, int(ttl_s * 1000), *blobs)

    def erase_users(
        self, users: Sequence[str], erasure_ids: Sequence[str] = (), now_s: float | None = None
    ) -> int:
        """Delete everything stored of these users; how many stream entries went with them.

        Their records, parked states and parked-index entries, and their samples in the
        holdout and alarm streams. ``erasure_ids`` (the dataflow's, after the tombstones) are
        recorded as done at ``now_s``; the API deletes without (the dataflow confirms later).
        """
        if not users:
            return 0
        (purged,) = self._execute([self._erase_command(users, erasure_ids, now_s)])
        return int(purged)

    def _erase_command(
        self, users: Sequence[str], erasure_ids: Sequence[str], now_s: float | None
    ) -> tuple[Any, ...]:
        k = self.keys
        keys = [k.parked_users, k.holdout, k.alarms, k.erasures]
        for user_id in users:
            samples = k.user_samples(user_pseudonym(user_id))
            keys += [k.user(user_id), k.user_state(user_id), samples]
        now = time.time() if now_s is None else now_s
        args = [repr(now), ERASURE_LEDGER_ENTRIES, len(users), *users, *erasure_ids]
        return ("EVAL", _ERASE_USERS_LUA, len(keys), *keys, *args)

    def _samples_command(
        self,
        holdouts: Sequence[tuple[str, bytes, str, str]],
        alarms: Sequence[tuple[str, str, str, str]],
        ttl_s: int,
    ) -> tuple[Any, ...]:
        """Append holdout samples and users' alarms, each indexed under its user's pseudonym."""
        k = self.keys
        keys: list[str] = [k.holdout, k.alarms]
        args: list[Any] = [int(ttl_s * 1000), HOLDOUT_ENTRIES, ALARM_ENTRIES]
        for key, vector, item_id, user in holdouts:
            keys.append(k.user_samples(user))
            args += ["h", key, vector, item_id, user]
        for kind, scope, detail, user in alarms:
            keys.append(k.user_samples(user))
            args += ["a", kind, scope, detail, user]
        return ("EVAL", _APPEND_SAMPLES_LUA, len(keys), *keys, *args)

    def erasure_done_at(self, erasure_id: str) -> float | None:
        """When the dataflow (last) completed this erasure, unix seconds; None: not yet."""
        score = self.client.zscore(self.keys.erasures, erasure_id)
        return None if score is None else float(score)

    def erasures_done(self) -> int:
        """Completed erasures remembered (the dashboard's count)."""
        return int(self.client.zcard(self.keys.erasures))

    def _log_changes_command(
        self, count: int, msgpack_ids: bytes, writer: str = ""
    ) -> tuple[Any, ...]:
        """The command appending ``count`` items (a msgpack array of ids) to the change log.

        ``writer``: :func:`sink_writer_id` for the dataflow's sink, else ''.

        EVAL with the script's text, not EVALSHA: Redis caches the compiled script by its
        digest either way, and a Redis that restarted (and lost its script cache) in the
        middle of a batch's commands cannot fail them with NOSCRIPT.
        """
        keys = (self.keys.item_changes, self.keys.item_change_seq)
        kept = ITEM_CHANGE_LOG_ENTRIES
        return ("EVAL", _LOG_ITEM_CHANGES_LUA, 2, *keys, count, msgpack_ids, kept, writer)

    def _stored_versions(self, key: str, ids: Sequence[str]) -> list[int]:
        if not ids:
            return []
        return [-1 if v is None else int(v) for v in self.client.hmget(key, ids)]

    def _execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one round trip, packed by hiredis; their replies, in order.

        redis-py's pipeline packs argument by argument in Python: most of a batch's cost at
        thousands of arguments per command.
        """
        if not commands:
            return []
        return self._round_trip([hiredis.pack_command(c) for c in commands], len(commands))

    def get_user(self, user_id: str) -> UserRecord | None:
        """The user's record, or None if the dataflow has not seen them."""
        blob = self.client.get(self.keys.user(user_id))
        return None if blob is None else decode_user(blob)

    def applied_counts(
        self, user_ids: Sequence[str], item_ids: Sequence[str]
    ) -> tuple[list[int], list[int]]:
        """Events applied to each user and interactions applied to each item; one round trip.

        A user's count is their record's ``events``, an item's its version; 0 when not stored.
        A replay waits on these until the dataflow has applied everything it sent (the quality
        benchmarks' test-then-train against the asynchronous pipeline).
        """
        commands: list[tuple[Any, ...]] = []
        if user_ids:
            commands.append(("MGET", *(self.keys.user(u) for u in user_ids)))
        if item_ids:
            commands.append(("HMGET", self.keys.item_versions, *item_ids))
        replies = iter(self._execute(commands))
        users = next(replies) if user_ids else []
        items = next(replies) if item_ids else []
        return (
            [0 if blob is None else decode_user(blob).events for blob in users],
            [0 if version is None else int(version) for version in items],
        )

    def get_user_with_neighbours(self, user_id: str, sources: int) -> UserWithNeighbours | None:
        """The user's record and the neighbour lists of their ``sources`` most recent items.

        One round trip (a script), where reading the record and then the lists took two:
        the recommendation endpoint's largest cost after scoring.
        """
        reply = self._evalsha_direct(
            self._user_with_neighbours,
            [self.keys.user(user_id)],
            [self.keys.neighbours(""), sources, _RECENT_POSITION],
        )
        if not reply:
            return None
        user = decode_user(reply[0])
        blobs = reply[1:]
        return UserWithNeighbours(
            user,
            user.recent[: len(blobs)],
            [None if b is None else decode_neighbours(b) for b in blobs],
        )

    def _evalsha_direct(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` on this thread's own connection, without the client's layers.

        redis-py wraps every command in retry and observability hooks, and every pool
        checkout in locks, counters and a readiness poll: ~70 µs per call, a tenth of a
        recommendation request. Here each thread keeps one connection of its own. A
        connection the server dropped (restart, idle kill) is reopened and the read tried
        once more; any other failure raises at once (serving falls back rather than waits)
        and drops the connection; a server that lost the script gets it loaded again.
        """
        connection = getattr(self._hot, "connection", None)
        if connection is None:
            pool = self.client.connection_pool
            connection = self._hot.connection = pool.connection_class(**pool.connection_kwargs)
        for attempt in (1, 2):
            try:
                connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                break  # the reply was read: the connection is sound
            except redis.exceptions.ConnectionError:
                connection.disconnect()
                if attempt == 2:
                    raise
            except BaseException:
                connection.disconnect()
                raise
        return script(keys=keys, args=args)  # loads the script, then runs it

    def park_user_states(self, states: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        """Store the full state of users evicted from worker memory (expires after ttl_s)."""
        self._execute(self._park_commands(states, ttl_s))

    def _park_commands(
        self, states: Sequence[tuple[str, bytes]], ttl_s: int
    ) -> list[tuple[Any, ...]]:
        # The index lets a worker ask Redis only for users it knows were parked; it is written
        # after the state, so an indexed user always has a state (until both expire). Its
        # expired entries (user ids) go as new ones come.
        if not states:
            return []
        now = time.time()
        commands: list[tuple[Any, ...]] = [
            ("SET", self.keys.user_state(user_id), blob, "EX", ttl_s) for user_id, blob in states
        ]
        index = [x for user_id, _ in states for x in (repr(now + ttl_s), user_id)]
        return [
            *commands,
            ("ZADD", self.keys.parked_users, *index),
            ("ZREMRANGEBYSCORE", self.keys.parked_users, "-inf", repr(now)),
        ]

    def parked_user_ids(self, batch: int = 10_000) -> Iterator[list[str]]:
        """Ids of users whose parked state has not expired, in batches (forgets expired ones)."""
        now = time.time()
        self.client.zremrangebyscore(self.keys.parked_users, "-inf", now)
        for start in itertools.count(0, batch):
            rows = self.client.zrange(self.keys.parked_users, start, start + batch - 1)
            if not rows:
                return
            yield [r.decode() for r in rows]

    def parked_user_state(self, user_id: str) -> bytes | None:
        """The parked state of a user, if they were evicted.

        Kept, not deleted, on restore: after a crash the worker may resume from a checkpoint
        taken before the restore and need it again.
        """
        blob = self.client.get(self.keys.user_state(user_id))
        return None if blob is None else bytes(blob)

    # --- the dataflow's batch of writes ---------------------------------------------------
    def write_batch(self, writes: StateWrites, retention_s: int, feedback_keep: int) -> None:
        """Everything one dataflow batch writes (coalesced natively), in two round trips.

        The batch's erasures first, before the versions of anything newer are read (a user
        who comes back after their tombstone starts over at version 1). Items next: a user
        record never points at item factors serving cannot see yet. User records and parked
        states expire ``retention_s`` after this write. The bulk arguments come encoded from
        the native side (``RespArgs``); this function names the commands and keys.
        """
        k = self.keys
        reads = RespBatch()
        if writes.erased:
            users_erased = [u for u, _ in writes.erased]
            reads.command(*self._erase_command(users_erased, writes.erasure_ids, None))
        user_keys = writes.user_record_keys(k.user(""))
        item_ids, neighbour_ids = writes.item_ids, writes.neighbour_ids
        if user_keys:
            reads.command("EVAL", _USER_VERSIONS_LUA, len(user_keys), user_keys)
        if item_ids:
            reads.command("HMGET", k.item_versions, item_ids)
        if neighbour_ids:
            reads.command("HMGET", k.neighbour_versions, neighbour_ids)
        replies = iter(self._execute_encoded(reads))
        if writes.erased:
            next(replies)
        users = next(replies) if user_keys else []
        items = next(replies) if item_ids else []
        neighbours = next(replies) if neighbour_ids else []
        plan = writes.plan(users, items, neighbours, k.user(""), k.neighbours(""))
        batch = RespBatch()
        if plan.changed_items:
            batch.command("HSET", k.item_factors, plan.item_factors)
            batch.command("HSET", k.item_versions, plan.item_versions)
            log = self._log_changes_command(
                plan.changed_items, plan.changed_item_ids, sink_writer_id()
            )
            batch.command(*log)
        for command, key, args in (
            ("ZADD", k.popularity, plan.popularity),
            ("ZREM", k.popularity, plan.unlisted),
            ("ZADD", k.trending, plan.trending),
            ("ZREM", k.trending, plan.untrending),
            ("HSET", k.item_categories, plan.categories),
        ):
            if args:
                batch.command(command, key, args)
        if plan.neighbour_records:
            batch.command("MSET", plan.neighbour_records)
            batch.command("HSET", k.neighbour_versions, plan.neighbour_versions)
        for segment, scores in writes.segment_scores:
            key = k.segment_popularity(segment)
            batch.command("ZADD", key, scores)
            batch.command("ZREMRANGEBYRANK", key, 0, -(SEGMENT_POPULAR_MAX + 1))
        for model, segment, start_s, impressions, clicks, conversions in writes.feedback:
            counts = msgspec.msgpack.encode([impressions, clicks, conversions])
            batch.command("HSET", k.feedback(model, segment), repr(start_s), counts)
        if plan.user_records:
            ttl_ms = int(retention_s * 1000)
            keys = plan.user_keys
            batch.command("EVAL", _SET_USERS_LUA, len(keys), keys, ttl_ms, plan.user_records)
        for command in self._park_commands(writes.parked, retention_s):
            batch.command(*command)
        user_alarms = [(*a[:3], a[3]) for a in writes.alarms if a[3] is not None]
        if writes.holdouts or user_alarms:
            batch.command(*self._samples_command(writes.holdouts, user_alarms, retention_s))
        for kind, scope, detail, user in writes.alarms:
            if user is None:
                alarm = ("kind", kind, "scope", scope, "detail", detail)
                batch.command("XADD", k.alarms, "MAXLEN", "~", ALARM_ENTRIES, "*", *alarm)
        self._execute_encoded(batch)
        if writes.feedback:
            self._trim_feedback({(m, s) for m, s, *_ in writes.feedback}, feedback_keep)

    def _execute_encoded(self, batch: RespBatch) -> list[Any]:
        """Send natively encoded commands in one round trip; their replies, in order."""
        if not batch:
            return []
        return self._round_trip([batch.encoded()], len(batch))

    def _round_trip(self, packed: list[bytes], replies_expected: int) -> list[Any]:
        """Send packed commands on one pooled connection; their replies, in order.

        The first error reply is raised after all replies are read, so the connection stays
        usable.
        """
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(packed)
            replies = [connection.read_response() for _ in range(replies_expected)]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    # --- items -------------------------------------------------------------------------
    def write_items(self, items: Sequence[ItemWrite]) -> int:
        """Store item states newer than what is stored (the newest of each); how many."""
        newest: dict[str, ItemWrite] = {}
        for item in items:
            if item.item_id not in newest or item.version > newest[item.item_id].version:
                newest[item.item_id] = item
        k = self.keys
        stored = self._stored_versions(k.item_versions, list(newest))
        fresh = [i for i, v in zip(newest.values(), stored, strict=True) if i.version > v]
        if not fresh:
            return 0
        popularity = [x for i in fresh for x in (repr(i.popularity_log2), i.item_id)]
        commands: list[tuple[Any, ...]] = [
            ("HSET", k.item_factors, *(x for i in fresh for x in (i.item_id, i.vector))),
            ("HSET", k.item_versions, *(x for i in fresh for x in (i.item_id, i.version))),
            self._log_changes_command(
                len(fresh), msgspec.msgpack.encode([i.item_id for i in fresh])
            ),
            ("ZADD", k.popularity, *popularity),
        ]
        trending = [
            x for i in fresh if i.trend_log2 is not None for x in (repr(i.trend_log2), i.item_id)
        ]
        if trending:
            commands.append(("ZADD", k.trending, *trending))
        # Without the flow's memory of what was trending, every item not trending is un-listed.
        untrending = [i.item_id for i in fresh if i.trend_log2 is None]
        if untrending:
            commands.append(("ZREM", k.trending, *untrending))
        categories = [x for i in fresh if i.category_id for x in (i.item_id, i.category_id)]
        if categories:
            commands.append(("HSET", k.item_categories, *categories))
        self._execute(commands)
        return len(fresh)

    def write_neighbours(self, records: Sequence[tuple[str, NeighboursRecord]]) -> int:
        """Store co-visitation neighbour lists newer than what is stored; how many."""
        newest: dict[str, NeighboursRecord] = {}
        for item_id, record in records:
            if item_id not in newest or record.version > newest[item_id].version:
                newest[item_id] = record
        k = self.keys
        stored = self._stored_versions(k.neighbour_versions, list(newest))
        fresh = [(i, r) for (i, r), v in zip(newest.items(), stored, strict=True) if r.version > v]
        if fresh:
            records = [x for i, r in fresh for x in (k.neighbours(i), encode_neighbours(r))]
            versions = [x for i, r in fresh for x in (i, r.version)]
            self._execute([("MSET", *records), ("HSET", k.neighbour_versions, *versions)])
        return len(fresh)

    def neighbours(self, item_id: str) -> NeighboursRecord | None:
        """The item's co-visited neighbours, if it has any."""
        blob = self.client.get(self.keys.neighbours(item_id))
        return None if blob is None else decode_neighbours(blob)

    def write_segment_popularity(self, writes: Sequence[SegmentPopularityWrite]) -> None:
        """Set items' popularity within their segments and trim each segment's list."""
        if not writes:
            return
        by_segment: dict[str, dict[str, float]] = {}
        for w in writes:
            by_segment.setdefault(w.segment, {})[w.item_id] = w.popularity_log2
        pipe = self.client.pipeline(transaction=False)
        for segment, scores in by_segment.items():
            key = self.keys.segment_popularity(segment)
            pipe.zadd(key, scores)
            pipe.zremrangebyrank(key, 0, -(SEGMENT_POPULAR_MAX + 1))
        pipe.execute()

    def write_feedback(self, writes: Sequence[FeedbackWrite], keep: int) -> None:
        """Set the counts of feedback windows and drop windows beyond the newest ``keep``."""
        if not writes:
            return
        pipe = self.client.pipeline(transaction=False)
        for w in writes:
            key = self.keys.feedback(w.model, w.segment)
            counts = [w.window.impressions, w.window.clicks, w.window.conversions]
            pipe.hset(key, repr(w.window.start_s), msgspec.msgpack.encode(counts))
        pipe.execute()
        self._trim_feedback({(w.model, w.segment) for w in writes}, keep)

    def _trim_feedback(self, pairs: set[tuple[str, str]], keep: int) -> None:
        for model, segment in pairs:
            key = self.keys.feedback(model, segment)
            fields = self.client.hkeys(key)
            if len(fields) > keep:
                old = sorted(fields, key=float)[: len(fields) - keep]
                self.client.hdel(key, *old)

    def feedback(self, model: str, segment: str) -> list[WindowCounts]:
        """Feedback windows of a (model, segment), oldest first."""
        raw = self.client.hgetall(self.keys.feedback(model, segment))
        out = []
        for start, blob in raw.items():
            impressions, clicks, conversions = msgspec.msgpack.decode(blob)
            out.append(WindowCounts(float(start), impressions, clicks, conversions))
        return sorted(out, key=lambda w: w.start_s)

    def feedback_keys(self) -> list[tuple[str, str]]:
        """Every (model, segment) with feedback."""
        prefix = self.keys.feedback("", "")[:-1]
        pairs = []
        for key in self.client.scan_iter(match=prefix + "*", count=1000):
            model, _, segment = key.decode().removeprefix(prefix).partition("|")
            pairs.append((model, segment))
        return sorted(pairs)

    # --- monitoring ----------------------------------------------------------------------
    def append_monitor(self, source: str, sample: dict[str, float], max_len: int = 7200) -> None:
        """Add one monitoring sample (numbers only) to a source's bounded stream."""
        fields = {k: repr(float(v)) for k, v in sample.items()}
        self.client.xadd(self.keys.monitor(source), fields, maxlen=max_len, approximate=True)

    def monitor_samples(
        self, source: str, since_ms: int, count: int = 2000
    ) -> list[dict[str, float]]:
        """Samples of a source newer than ``since_ms`` (stream ids are ms timestamps)."""
        rows = self.client.xrange(self.keys.monitor(source), min=f"({since_ms}", count=count)
        out = []
        for entry_id, fields in rows:
            sample = {k.decode(): float(v) for k, v in fields.items()}
            sample["id_ms"] = float(entry_id.decode().split("-")[0])
            out.append(sample)
        return out

    def append_holdout(
        self, samples: Sequence[tuple[str, bytes, str, str]], ttl_s: int = 86_400
    ) -> None:
        """Add test-then-train samples: (key, user vector before the event, item, pseudonym)."""
        if samples:
            self._execute([self._samples_command(samples, [], ttl_s)])

    def holdout_since(self, since_ms: int, count: int = 5000) -> list[HeldOut]:
        """Held-out samples recorded after ``since_ms`` (oldest first)."""
        rows = self.client.xrange(self.keys.holdout, min=f"({since_ms}", count=count)
        return [
            HeldOut(
                fields[b"key"].decode(),
                np.frombuffer(fields[b"vector"], np.float32).copy(),
                fields[b"item"].decode(),
            )
            for _, fields in rows
        ]

    def append_alarm(self, alarm: dict[str, str], max_len: int = 10_000) -> None:
        """Record a drift alarm or recalibration (visible on the dashboard)."""
        self.client.xadd(self.keys.alarms, alarm, maxlen=max_len, approximate=True)

    def alarms(self, count: int = 100) -> list[dict[str, str]]:
        """The newest alarms, newest first."""
        rows = self.client.xrevrange(self.keys.alarms, count=count)
        return [
            {"id": i.decode(), **{k.decode(): v.decode() for k, v in f.items()}} for i, f in rows
        ]

    def segment_popular(self, segment: str, count: int) -> list[tuple[str, float]]:
        """The most popular items within a context segment."""
        rows = self.client.zrevrange(
            self.keys.segment_popularity(segment), 0, count - 1, withscores=True
        )
        return [(member.decode(), float(score)) for member, score in rows]

    def trending(self, count: int) -> list[tuple[str, float]]:
        """Items drawing the most attention lately relative to their long-term level."""
        rows = self.client.zrevrange(self.keys.trending, 0, count - 1, withscores=True)
        return [(member.decode(), float(score)) for member, score in rows]

    def item_change_seq(self) -> int:
        """Sequence number of the last item factor write (0 when none)."""
        return int(self.client.get(self.keys.item_change_seq) or 0)

    def read_item_changes(self, since_seq: int) -> ItemChanges:
        """Item factors written after ``since_seq`` (all of them for ``since_seq=0``)."""
        item_ids, max_seq = self.item_change_ids(since_seq)
        if not item_ids:
            return ItemChanges([], matrix_from_blobs([], self.factors), [], since_seq)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.item_factors, item_ids)
        pipe.hmget(self.keys.item_categories, item_ids)
        blobs, categories = pipe.execute()
        present = [
            (i, b, c) for i, b, c in zip(item_ids, blobs, categories, strict=True) if b is not None
        ]
        return ItemChanges(
            [i for i, _, _ in present],
            matrix_from_blobs([b for _, b, _ in present], self.factors),
            [None if c is None else c.decode() for _, _, c in present],
            max_seq,
        )

    def item_change_ids(
        self, since_seq: int, skip_writer: str | None = None
    ) -> tuple[list[str], int]:
        """Ids of the items whose factors were written after ``since_seq``, and the newest seq.

        Each id once, in the order of its last change. When the log no longer reaches back to
        ``since_seq`` (trimmed), every stored item's id, sorted: a superset. Entries appended
        by ``skip_writer`` are left out (the worker's replica skips its own process' sink).
        """
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.get(k.item_change_seq)
        pipe.xrange(k.item_changes, f"({since_seq}-0", "+")
        seq, entries = pipe.execute()
        seq = int(seq or 0)
        if seq <= since_seq:
            return [], since_seq
        if entries and int(entries[0][1][b"first"]) <= since_seq + 1:
            skip = None if skip_writer is None else skip_writer.encode()
            changed = itertools.chain.from_iterable(
                _decode_ids(fields[b"ids"])
                for _, fields in entries
                if skip is None or fields.get(b"writer") != skip
            )
            # dict keeps first insertion: walk backwards so each id sits at its last change.
            newest_first = dict.fromkeys(reversed(list(changed)))
            return list(reversed(newest_first)), int(entries[-1][0].split(b"-")[0])
        pipe = self.client.pipeline(transaction=True)
        pipe.get(k.item_change_seq)
        pipe.hkeys(k.item_factors)
        seq, ids = pipe.execute()
        seq = int(seq or 0)
        if seq <= since_seq:
            return [], since_seq
        # Sorted: a hash's own order can change between two reads while Redis rehashes it, and
        # readers that build from the same store must see the same rows.
        return sorted(i.decode() for i in ids), seq

    def item_vectors(self, item_ids: Sequence[str]) -> tuple[list[str], bytes]:
        """The factors of those items that have them: (ids, float32 vectors row after row)."""
        if not item_ids:
            return [], b""
        blobs = self.client.hmget(self.keys.item_factors, item_ids)
        present = [(i, b) for i, b in zip(item_ids, blobs, strict=True) if b is not None]
        return [i for i, _ in present], b"".join(b for _, b in present)

    # --- catalogue -----------------------------------------------------------------------
    def put_catalogue(self, items: Sequence[CatalogueItem]) -> int:
        """Create or replace catalogue entries; return how many were written."""
        if not items:
            return 0
        args: list[Any] = []
        for item in items:
            args.extend((item.item_id, encode_catalogue_item(item)))
        k = self.keys
        keys = [k.catalogue, k.catalogue_changes, k.catalogue_seq]
        return int(self._put_catalogue(keys=keys, args=args))

    def read_catalogue_changes(self, since_seq: int) -> CatalogueChanges:
        """Catalogue entries written after ``since_seq``."""
        changed = self.client.zrangebyscore(
            self.keys.catalogue_changes, f"({since_seq}", "+inf", withscores=True
        )
        if not changed:
            return CatalogueChanges([], since_seq)
        item_ids = [member.decode() for member, _ in changed]
        blobs = self.client.hmget(self.keys.catalogue, item_ids)
        items = [decode_catalogue_item(b) for b in blobs if b is not None]
        return CatalogueChanges(items, int(max(score for _, score in changed)))

    def catalogue_page(self, offset: int, limit: int) -> list[CatalogueItem]:
        """Catalogue entries in the order they were last written, ``limit`` from ``offset``."""
        members = self.client.zrange(self.keys.catalogue_changes, offset, offset + limit - 1)
        if not members:
            return []
        blobs = self.client.hmget(self.keys.catalogue, members)
        return [decode_catalogue_item(b) for b in blobs if b is not None]

    def catalogue_item(self, item_id: str) -> CatalogueItem | None:
        """One catalogue entry."""
        blob = self.client.hget(self.keys.catalogue, item_id)
        return None if blob is None else decode_catalogue_item(blob)

    # --- merchandising rules ---------------------------------------------------------------
    def put_rule(self, rule_id: str, rule: Rule) -> None:
        """Create or replace a rule and bump the rules' version (one transaction)."""
        k = self.keys
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(k.rules, rule_id, encode_rule(rule))
            pipe.incr(k.rules_version)
            pipe.execute()

    def delete_rule(self, rule_id: str) -> bool:
        """Delete a rule; False if there was none."""
        k = self.keys
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(k.rules, rule_id)
            pipe.incr(k.rules_version)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def rule(self, rule_id: str) -> Rule | None:
        """One rule."""
        blob = self.client.hget(self.keys.rules, rule_id)
        return None if blob is None else decode_rule(blob)

    def rules(self) -> tuple[int, list[tuple[str, Rule]]]:
        """The rules' version and every rule (by id), read together."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.rules_version)
            pipe.hgetall(self.keys.rules)
            version, stored = pipe.execute()
        rules = sorted((i.decode(), decode_rule(b)) for i, b in stored.items())
        return int(version or 0), rules

    def rules_version(self) -> int:
        """Bumped by every rule write (0: never written)."""
        return int(self.client.get(self.keys.rules_version) or 0)

    def rule_count(self) -> int:
        """How many rules are stored."""
        return int(self.client.hlen(self.keys.rules))

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
