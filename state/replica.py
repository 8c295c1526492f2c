"""User records and co-visitation lists held in the API process, kept fresh by Redis's push.

A recommendation needs the user's record and the lists of their most recent items. Read from
Redis, that round trip was a third of the request's CPU and most of its latency under load
(the serving benchmark's users are random among 100k, so a cache of recently requested users
would mostly miss). Here a thread of each API process keeps its own copy instead:

- Redis tracks the two key prefixes for it (``CLIENT TRACKING ... BCAST PREFIX``): every write,
  expiry or deletion of such a key pushes the key's name to the thread's connection, whoever
  wrote it (the dataflow's sink, an erasure, a TTL). No writer sends anything more.
- The thread re-reads the pushed keys (``MGET``, in batches) and replaces or drops its copies,
  so an erased user's record leaves the process moments after it leaves Redis.
- It loads every existing key once at start (``SCAN``), between batches of pushed keys.

Why a copy is never staler than the push it waits for: tracking is on before the first read,
and one thread both reads keys and handles pushes, in order. A push that overtakes a read makes
the thread read that key again after it. When the tracking connection fails, pushes may have
been lost: every copy is dropped at once, and requests read Redis until the thread has
reconnected and loaded again.

Memory is bounded (``Settings.serving_replica_mb``). Past the bound, the copies written longest
ago are dropped; from then on a key that is not held may still exist, so :meth:`lookup` answers
:data:`UNKNOWN` for it and the caller reads Redis, and asks for the key (:meth:`want`) so that it
is held from then on. Until the first load is complete the same holds for every key not held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

import redis

from freshrec import metrics
from state.keys import Keys
from state.records import decode_neighbours, decode_user
from state.store import RedisStore, UserWithNeighbours

log = logging.getLogger(__name__)

UNKNOWN: Final = object()
"""What :meth:`UserStateReplica.user_with_neighbours` answers when only Redis can tell."""

ENTRY_OVERHEAD_BYTES: Final = 180
"""What a held copy costs beyond its key's and value's bytes: the two bytes objects' headers,
the dict slot and the ordered dict's link (tracemalloc, 100k entries: 171 B each)."""
READ_BATCH: Final = 1000
"""Keys per MGET: one round trip per thousand pushed keys."""
SCAN_COUNT: Final = 1000
WANTED_MAX: Final = 10_000
"""Requested keys queued for the thread at most (more are dropped: they are read again)."""
POLL_S: Final = 0.05
"""How long the thread waits for a push before looking at the wanted keys and its stop flag."""
RETRY_S: Final = 1.0
_INVALIDATE_CHANNEL: Final = "__redis__:invalidate"


class UserStateReplica:
    """The process's copies of user records and neighbour lists, by Redis key."""

    def __init__(self, store: RedisStore, max_bytes: int, retention_s: float = 0.0) -> None:
        self.store = store
        self.retention_s = retention_s
        """How long after its write a record expires (``Settings.user_retention_s``; 0: never).
        Redis deletes an expired key only when it is read or its expiry cycle samples it; the
        push comes then. Until then a copy past its time is treated as gone, as a read from
        Redis would be."""
        self.keys: Keys = store.keys
        self.max_bytes = max_bytes
        self._user_prefix = self.keys.user("").encode()
        self._neighbours_prefix = self.keys.neighbours("").encode()
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._reported_bytes = 0
        self._complete = False
        """True while every existing key is held: absence then means no such key."""
        self._wanted: set[bytes] = set()
        self._wanted_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        """Set while the push connection is up (copies are trustworthy)."""
        self.loaded = threading.Event()
        """Set once the start-up load of the current connection has finished."""
        self.load_s = 0.0
        """How long the last start-up load took (SCAN and MGET of every key)."""
        self.pushed_keys = 0
        self.reads = 0
        self.evictions = 0
        self.hits = 0
        self.misses = 0

    # --- requests ------------------------------------------------------------------------
    def user_with_neighbours(
        self, user_id: str, sources: int
    ) -> UserWithNeighbours | None | object:
        """What :meth:`RedisStore.get_user_with_neighbours` would read, from the copies.

        The user's record and their ``sources`` most recent items' lists; None for a user
        Redis does not hold; :data:`UNKNOWN` where the copies cannot tell (the caller reads
        Redis).
        """
        entries = self._entries
        key = self._user_prefix + user_id.encode()
        blob = entries.get(key)
        if blob is None:
            if self._complete:
                self.hits += 1
                return None
            self.misses += 1
            self.want((key,))
            return UNKNOWN
        user = decode_user(blob)
        # The sink sets the key's expiry when it writes, after ``written_at_s``.
        if self.retention_s and user.written_at_s + self.retention_s <= time.time():
            self.hits += 1
            return None
        recent = user.recent[:sources]
        neighbours = []
        for item_id in recent:
            list_key = self._neighbours_prefix + item_id.encode()
            listed = entries.get(list_key)
            if listed is None and not self._complete:
                self.misses += 1
                self.want((list_key,))
                return UNKNOWN
            neighbours.append(None if listed is None else decode_neighbours(listed))
        self.hits += 1
        return UserWithNeighbours(user, recent, neighbours)

    def want(self, keys: Iterable[bytes]) -> None:
        """Ask the thread to hold these keys (a request had to read them from Redis)."""
        with self._wanted_lock:
            if len(self._wanted) < WANTED_MAX:
                self._wanted.update(keys)

    @property
    def held_bytes(self) -> int:
        """What the copies take, counted as :data:`ENTRY_OVERHEAD_BYTES` plus key and value."""
        return self._bytes

    @property
    def held_keys(self) -> int:
        return len(self._entries)

    @property
    def complete(self) -> bool:
        """Every existing key is held (so a key not held does not exist)."""
        return self._complete

    # --- the thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="user-state-replica", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            connection = None
            try:
                connection = self._track()
                self.connected.set()
                self._load(connection)
                self.loaded.set()
                while not self._stop.is_set():
                    self._follow(connection, POLL_S)
            except redis.ResponseError as exc:
                # The server cannot track (older than Redis 6, or a proxy that refuses the
                # command): requests read Redis, as they did before the replica.
                log.warning("user state replica off: Redis refused tracking (%s)", exc)
                self._drop_all()
                return
            except (redis.RedisError, OSError) as exc:
                log.warning("user state replica: push connection lost (%s); retrying", exc)
            finally:
                self._drop_all()  # pushes may have been missed: nothing held is trustworthy
                self.connected.clear()
                self.loaded.clear()
                if connection is not None:
                    connection.disconnect()
            self._stop.wait(RETRY_S)

    def _track(self) -> redis.Connection:
        """A connection that receives the name of every changed key under both prefixes.

        RESP2 with the pushes redirected to the connection itself, which then subscribes to
        them: what every Redis since 6.0 does, with no RESP3 push handling in the client.
        """
        pool = self.store.client.connection_pool
        kwargs = {**pool.connection_kwargs, "protocol": 2, "socket_timeout": None}
        connection: redis.Connection = pool.connection_class(**kwargs)
        connection.send_command("CLIENT", "ID")
        client_id = connection.read_response()
        connection.send_command(
            "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST",
            "PREFIX", self._user_prefix, "PREFIX", self._neighbours_prefix,
        )  # fmt: skip
        connection.read_response()
        connection.send_command("SUBSCRIBE", _INVALIDATE_CHANNEL)
        connection.read_response()
        return connection

    def _load(self, connection: redis.Connection) -> None:
        """Read every existing key once, following pushes between batches."""
        self._complete = False
        evictions = self.evictions
        started = time.monotonic()
        for prefix in (self._user_prefix, self._neighbours_prefix):
            batch: list[bytes] = []
            for key in self.store.client.scan_iter(match=_glob(prefix) + b"*", count=SCAN_COUNT):
                batch.append(key)
                if len(batch) == READ_BATCH:
                    self._read(batch)
                    batch = []
                    self._follow(connection, 0)
                if self._stop.is_set():
                    return
            self._read(batch)
        self._follow(connection, 0)
        self._complete = self.evictions == evictions
        self.load_s = time.monotonic() - started

    def _follow(self, connection: redis.Connection, wait_s: float) -> None:
        """Read again the keys pushed so far, and the keys requests asked for."""
        changed: set[bytes] = set()
        if connection.can_read(timeout=wait_s):
            while True:
                message = connection.read_response()
                if message[0] == b"message":
                    keys = message[2]
                    if keys is None:  # the database was flushed
                        self._drop_all()
                    else:
                        changed.update(keys)
                if len(changed) >= READ_BATCH or not connection.can_read(timeout=0):
                    break
        self.pushed_keys += len(changed)
        if changed:
            metrics.USER_STATE_PUSHED_KEYS.inc(len(changed))
        with self._wanted_lock:
            if self._wanted:
                changed |= self._wanted
                self._wanted = set()
        if changed:
            self._read(list(changed))

    def _read(self, keys: list[bytes]) -> None:
        client = self.store.client
        for start in range(0, len(keys), READ_BATCH):
            chunk = keys[start : start + READ_BATCH]
            self.reads += 1
            for key, blob in zip(chunk, client.mget(chunk), strict=True):
                self._put(key, blob)
        self._report_bytes()

    def _put(self, key: bytes, blob: bytes | None) -> None:
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + len(old) + ENTRY_OVERHEAD_BYTES
        if blob is None:
            return
        entries[key] = blob  # the newest write goes last: eviction drops the oldest first
        self._bytes += len(key) + len(blob) + ENTRY_OVERHEAD_BYTES
        while self._bytes > self.max_bytes and entries:
            evicted, value = entries.popitem(last=False)
            self._bytes -= len(evicted) + len(value) + ENTRY_OVERHEAD_BYTES
            self.evictions += 1
            self._complete = False

    def _drop_all(self) -> None:
        self._complete = False
        self._entries = OrderedDict()
        self._bytes = 0
        self._report_bytes()

    def _report_bytes(self) -> None:
        # By difference: several replicas in one process (tests, the harness) add up.
        metrics.USER_STATE_COPY_BYTES.inc(self._bytes - self._reported_bytes)
        self._reported_bytes = self._bytes


def _glob(prefix: bytes) -> bytes:
    """``prefix`` as a literal in a SCAN pattern: glob characters escaped.

    The hash tag's braces are not special to SCAN; star, question mark, brackets and
    backslash are.
    """
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in prefix)
