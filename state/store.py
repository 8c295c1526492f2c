"""The Redis store: the only code that reads or writes freshrec's Redis keys.

Writes are versioned and idempotent: a record is replaced only by a strictly newer version
(Lua scripts compare and set atomically), so output the dataflow re-emits after a resume
from a checkpoint, or a late duplicate, does no harm. Item factor writes also append the
item to a change log (a sorted set scored by a global sequence number) from which replicas
in the worker and in the API pull only what changed since their last refresh.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import redis
from redis.commands.core import Script

from operators import StateWrites, WindowCounts
from operators.model_validation import HeldOut
from state.keys import Keys
from state.records import (
    VERSION_HEADER_BYTES,
    CatalogueItem,
    NeighboursRecord,
    UserRecord,
    Vector,
    decode_catalogue_item,
    decode_neighbours,
    decode_user,
    encode_catalogue_item,
    encode_neighbours,
    encode_user,
    matrix_from_blobs,
)

# Both write scripts read every current version with one command and write with a few
# variadic ones (chunked: Lua's unpack takes at most a few thousand values), instead of a
# read and a write per record: a dataflow batch writes ~1,000 records, and Redis' cost is
# per command far more than per value.
_CHUNKED_LUA: Final = """
local function chunked(command, key, values, stride)
  local n = #values
  local step = 4000 - 4000 % stride
  for first = 1, n, step do
    local last = math.min(first + step - 1, n)
    if key then
      redis.call(command, key, unpack(values, first, last))
    else
      redis.call(command, unpack(values, first, last))
    end
  end
end
local function fetched(command, key, names)
  local out = {}
  for first = 1, #names, 4000 do
    local last = math.min(first + 3999, #names)
    local part
    if key then
      part = redis.call(command, key, unpack(names, first, last))
    else
      part = redis.call(command, unpack(names, first, last))
    end
    for i = 1, #part do out[first + i - 1] = part[i] end
  end
  return out
end
"""

# KEYS = record keys; ARGV = version_1, blob_1, version_2, blob_2, ...
# Each stored record starts with its version as an 8-byte big-endian integer. A key given
# twice keeps its newest version.
_VERSIONED_SET_LUA: Final = _CHUNKED_LUA + """
local current = fetched('MGET', nil, KEYS)
local newest = {}
local order = {}
local accepted = 0
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[2 * i - 1])
  local held = newest[key]
  local stored = -1
  if held then
    stored = held[1]
  elseif current[i] then
    stored = struct.unpack('>I8', current[i])
  end
  if version > stored then
    if not held then order[#order + 1] = key end
    newest[key] = {version, ARGV[2 * i]}
    accepted = accepted + 1
  end
end
local pairs = {}
for _, key in ipairs(order) do
  pairs[#pairs + 1] = key
  pairs[#pairs + 1] = newest[key][2]
end
chunked('MSET', nil, pairs, 2)
return accepted
"""

# KEYS = factors hash, versions hash, change zset, seq counter, popularity zset, trend zset,
#        categories hash
# ARGV, grouped by the command each range feeds (built by `item_write_args`, or natively by
# `operators.collect_writes`): n, then n ids, n versions, n (id, vector) pairs, n (id,
# version) pairs, n (popularity, id) pairs, then t and t (trend, id) pairs of trending items,
# u and u ids no longer trending, c and c (id, category) pairs of new categories.
# Every written item gets the next change sequence number (its place in the change log).
# Fast path (every item newer than what is stored, each once): whole ranges go to variadic
# commands with no per-item work in Lua. Otherwise (a replay, a repeated item), each item is
# checked and only the newest version of each is written.
_WRITE_ITEMS_LUA: Final = _CHUNKED_LUA + """
local function range_call(command, key, first, count, stride)
  local step = 4000 - 4000 % stride
  for a = first, first + count - 1, step do
    local b = math.min(a + step - 1, first + count - 1)
    redis.call(command, key, unpack(ARGV, a, b))
  end
end
local n = tonumber(ARGV[1])
if n == 0 then return 0 end
local ids_at, versions_at = 2, 2 + n
local factors_at = 2 + 2 * n
local vpairs_at = factors_at + 2 * n
local pop_at = vpairs_at + 2 * n
local t_at = pop_at + 2 * n
local t = tonumber(ARGV[t_at])
local u_at = t_at + 1 + 2 * t
local u = tonumber(ARGV[u_at])
local c_at = u_at + 1 + u
local c = tonumber(ARGV[c_at])
local ids = {}
for i = 1, n do ids[i] = ARGV[ids_at + i - 1] end
local current = fetched('HMGET', KEYS[2], ids)
local stored = {}
local fresh = true
for i = 1, n do
  local id = ids[i]
  local version = tonumber(ARGV[versions_at + i - 1])
  local have = stored[id] or tonumber(current[i] or '-1')
  if stored[id] or version <= have then fresh = false end
  if version > have then stored[id] = version else stored[id] = have end
end
local seq = tonumber(redis.call('GET', KEYS[4]) or '0')
if fresh then
  local changes = {}
  for i = 1, n do changes[2 * i - 1] = seq + i; changes[2 * i] = ids[i] end
  redis.call('SET', KEYS[4], seq + n)
  range_call('HSET', KEYS[1], factors_at, 2 * n, 2)
  range_call('HSET', KEYS[2], vpairs_at, 2 * n, 2)
  chunked('ZADD', KEYS[3], changes, 2)
  range_call('ZADD', KEYS[5], pop_at, 2 * n, 2)
  if t > 0 then range_call('ZADD', KEYS[6], t_at + 1, 2 * t, 2) end
  if u > 0 then range_call('ZREM', KEYS[6], u_at + 1, u, 1) end
  if c > 0 then range_call('HSET', KEYS[7], c_at + 1, 2 * c, 2) end
  return n
end
-- Slow path: the last occurrence of an item's newest version wins.
local best = {}
for i = 1, n do
  local id = ids[i]
  local version = tonumber(ARGV[versions_at + i - 1])
  local was = tonumber(current[i] or '-1')
  if version > was and (not best[id] or version > tonumber(ARGV[versions_at + best[id] - 1])) then
    best[id] = i
  end
end
local factors, versions, changes, popularity = {}, {}, {}, {}
local accepted = {}
for i = 1, n do
  local id = ids[i]
  if best[id] == i then
    accepted[id] = true
    seq = seq + 1
    factors[#factors + 1] = id; factors[#factors + 1] = ARGV[factors_at + 2 * i - 1]
    versions[#versions + 1] = id; versions[#versions + 1] = ARGV[versions_at + i - 1]
    changes[#changes + 1] = seq; changes[#changes + 1] = id
    popularity[#popularity + 1] = ARGV[pop_at + 2 * i - 2]
    popularity[#popularity + 1] = id
  end
end
if #factors == 0 then return 0 end
local trending, untrending, categories = {}, {}, {}
for j = 1, t do
  local id = ARGV[t_at + 2 * j]
  if accepted[id] then
    trending[#trending + 1] = ARGV[t_at + 2 * j - 1]; trending[#trending + 1] = id
  end
end
for j = 1, u do
  local id = ARGV[u_at + j]
  if accepted[id] then untrending[#untrending + 1] = id end
end
for j = 1, c do
  local id = ARGV[c_at + 2 * j - 1]
  if accepted[id] then
    categories[#categories + 1] = id; categories[#categories + 1] = ARGV[c_at + 2 * j]
  end
end
redis.call('SET', KEYS[4], seq)
chunked('HSET', KEYS[1], factors, 2)
chunked('HSET', KEYS[2], versions, 2)
chunked('ZADD', KEYS[3], changes, 2)
chunked('ZADD', KEYS[5], popularity, 2)
chunked('ZADD', KEYS[6], trending, 2)
chunked('ZREM', KEYS[6], untrending, 1)
chunked('HSET', KEYS[7], categories, 2)
return #factors / 2
"""


def item_write_args(items: Sequence[ItemWrite]) -> list[Any]:
    """The item-write script's arguments for Python-side item writes (tools and tests).

    Without the flow's memory of what was trending, every non-trending item is un-listed.
    """
    ids = [i.item_id for i in items]
    args: list[Any] = [len(items), *ids, *(i.version for i in items)]
    for i in items:
        args += (i.item_id, i.vector)
    for i in items:
        args += (i.item_id, i.version)
    for i in items:
        args += (repr(i.popularity_log2), i.item_id)
    trending = [(repr(i.trend_log2), i.item_id) for i in items if i.trend_log2 is not None]
    args += [len(trending), *(x for pair in trending for x in pair)]
    untrending = [i.item_id for i in items if i.trend_log2 is None]
    args += [len(untrending), *untrending]
    categories = [(i.item_id, i.category_id) for i in items if i.category_id]
    args += [len(categories), *(x for pair in categories for x in pair)]
    return args


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


class RedisStore:
    """freshrec's view of one Redis namespace."""

    def __init__(self, client: redis.Redis, prefix: str, factors: int) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.factors = factors
        self._versioned_set = client.register_script(_VERSIONED_SET_LUA)
        self._write_items = client.register_script(_WRITE_ITEMS_LUA)
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
    def write_users(self, records: Sequence[tuple[str, UserRecord]]) -> int:
        """Store user records that are newer than what is stored; return how many were."""
        if not records:
            return 0
        keys = [self.keys.user(user_id) for user_id, _ in records]
        args: list[Any] = []
        for _, record in records:
            args.extend((record.version, encode_user(record)))
        return int(self._versioned_set(keys=keys, args=args))

    def get_user(self, user_id: str) -> UserRecord | None:
        """The user's record, or None if the dataflow has not seen them."""
        blob = self.client.get(self.keys.user(user_id))
        return None if blob is None else decode_user(blob)

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
        if not states:
            return
        pipe = self.client.pipeline(transaction=False)
        self._park(pipe, states, ttl_s)
        pipe.execute()

    def _park(self, pipe: Any, states: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        # The index lets a worker ask Redis only for users it knows were parked; it is written
        # after the state, so an indexed user always has a state (until both expire).
        expires = time.time() + ttl_s
        for user_id, blob in states:
            pipe.set(self.keys.user_state(user_id), blob, ex=ttl_s)
        pipe.zadd(self.keys.parked_users, {user_id: expires for user_id, _ in states})

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
    def write_batch(self, writes: StateWrites, parked_ttl_s: int, feedback_keep: int) -> None:
        """Everything one dataflow batch writes (coalesced natively), in one pipeline.

        Items first: a user record never points at item factors serving cannot see yet. Each
        write is versioned or absolute (idempotent), so repeating the batch after a failure or
        a resume from a checkpoint does no harm.
        """
        pipe = self.client.pipeline(transaction=False)
        k = self.keys
        if writes.item_args:
            keys = [k.item_factors, k.item_versions, k.item_changes, k.item_change_seq,
                    k.popularity, k.trending, k.item_categories]  # fmt: skip
            self._write_items(keys=keys, args=writes.item_args, client=pipe)
        if writes.neighbour_ids:
            keys = [k.neighbours(item_id) for item_id in writes.neighbour_ids]
            self._versioned_set(keys=keys, args=writes.neighbour_args, client=pipe)
        if writes.segment_scores:
            by_segment: dict[str, dict[str, float]] = {}
            for segment, item_id, score in writes.segment_scores:
                by_segment.setdefault(segment, {})[item_id] = score
            for segment, scores in by_segment.items():
                key = k.segment_popularity(segment)
                pipe.zadd(key, scores)
                pipe.zremrangebyrank(key, 0, -(SEGMENT_POPULAR_MAX + 1))
        for model, segment, start_s, impressions, clicks, conversions in writes.feedback:
            counts = msgspec.msgpack.encode([impressions, clicks, conversions])
            pipe.hset(k.feedback(model, segment), repr(start_s), counts)
        if writes.user_ids:
            keys = [k.user(user_id) for user_id in writes.user_ids]
            self._versioned_set(keys=keys, args=writes.user_args, client=pipe)
        if writes.parked:
            self._park(pipe, writes.parked, parked_ttl_s)
        for key, vector, item_id in writes.holdouts:
            fields = {"key": key, "vector": vector, "item": item_id}
            pipe.xadd(k.holdout, fields, maxlen=20_000, approximate=True)
        for kind, scope, detail in writes.alarms:
            fields = {"kind": kind, "scope": scope, "detail": detail}
            pipe.xadd(k.alarms, fields, maxlen=10_000, approximate=True)
        pipe.execute()
        if writes.feedback:
            self._trim_feedback({(m, s) for m, s, *_ in writes.feedback}, feedback_keep)

    # --- items -------------------------------------------------------------------------
    def write_items(self, items: Sequence[ItemWrite]) -> int:
        """Store item states newer than what is stored; return how many were."""
        if not items:
            return 0
        args = item_write_args(items)
        k = self.keys
        keys = [
            k.item_factors,
            k.item_versions,
            k.item_changes,
            k.item_change_seq,
            k.popularity,
            k.trending,
            k.item_categories,
        ]
        return int(self._write_items(keys=keys, args=args))

    def write_neighbours(self, records: Sequence[tuple[str, NeighboursRecord]]) -> int:
        """Store co-visitation neighbour lists newer than what is stored."""
        if not records:
            return 0
        keys = [self.keys.neighbours(item_id) for item_id, _ in records]
        args: list[Any] = []
        for _, record in records:
            args.extend((record.version, encode_neighbours(record)))
        return int(self._versioned_set(keys=keys, args=args))

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
        self, samples: Sequence[tuple[str, bytes, str]], max_len: int = 20_000
    ) -> None:
        """Add test-then-train samples: (key, user vector before the event, item id)."""
        if not samples:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, vector, item_id in samples:
            pipe.xadd(
                self.keys.holdout,
                {"key": key, "vector": vector, "item": item_id},
                maxlen=max_len,
                approximate=True,
            )
        pipe.execute()

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

    def item_change_ids(self, since_seq: int) -> tuple[list[str], int]:
        """Ids of the items whose factors were written after ``since_seq``, and the newest seq."""
        changed = self.client.zrangebyscore(
            self.keys.item_changes, f"({since_seq}", "+inf", withscores=True
        )
        if not changed:
            return [], since_seq
        return [member.decode() for member, _ in changed], int(changed[-1][1])

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

    def catalogue_item(self, item_id: str) -> CatalogueItem | None:
        """One catalogue entry."""
        blob = self.client.hget(self.keys.catalogue, item_id)
        return None if blob is None else decode_catalogue_item(blob)

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
