"""Fuzzing the stream: hostile messages straight onto the events topic, mixed with valid events.

Valid events are the real Taobao log, re-keyed per pass (synthetic users and event ids) to
reach the volume; around them the generator writes random bytes, truncated JSON, wrong types,
missing and unknown fields, huge fields (up to ~1 MB), unicode edge cases (lone surrogates
escaped in JSON, invalid UTF-8, NUL and control characters, RTL marks, emoji, combining
characters, line separators), overlong ids, far-past (valid: replays are historical) and
far-future timestamps, deep nesting, duplicates of valid events, and byte-level mutations
whose validity nobody knows in advance.

``freshrec.events.decode_event`` on the produced bytes is the oracle of valid / invalid; the
generator's intended class must agree with it wherever the intent is unambiguous. Expected
per-user counts come from replaying the oracle-valid events, in partition order, through the
dedup operator (native ``operators.EventDedup``) with the worker's settings. The worker runs as
a real process (``python -m bytewax.run``) on its own embedded stack. Then: the worker is
alive; every user's ``events`` and ``duplicates`` equal the expected; every user record
expected exists and no other; the dead-letter topic holds exactly the invalid payloads (as a
multiset), each with a non-empty ``reason`` header.

    python benchmarks/fuzz_stream.py [--messages 1000000] [--seed 8] [--json OUT]

``tests/integration/test_fuzz_stream.py`` runs the same harness on 30,000 messages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from freshrec import processes  # noqa: E402
from freshrec.events import (  # noqa: E402
    Event,
    bounded_dead_letter,
    decode_event,
    encode_event,
)
from freshrec.replay import iter_dataset_events  # noqa: E402
from freshrec.settings import Settings, load_settings  # noqa: E402
from freshrec.stack import LocalStack, create_topics  # noqa: E402
from operators import EventDedup  # noqa: E402
from state.records import decode_user  # noqa: E402
from state.store import RedisStore  # noqa: E402

#: Largest message produced: over librdkafka's default ``message.max.bytes`` (1,000,000),
#: as a producer with a raised limit may send; its dead letter is cut to
#: ``DEAD_LETTER_MAX_PAYLOAD_BYTES``.
HUGE_MAX_BYTES = 1_500_000
REQUIRED = ("event_id", "user_id", "item_id", "type", "ts")
ID_FIELDS = ("event_id", "user_id", "item_id", "session_id", "category_id")
# Unicode that is valid in an id (printable, no C0/C1 control characters).
UNICODE_EDGES = (
    "\u200f",  # right-to-left mark
    "\u202e",  # right-to-left override
    "\u200d",  # zero-width joiner
    "\ufeff",  # BOM as a character
    "\u2028",  # line separator (not a control character)
    "e\u0301\u0301\u0301",  # stacked combining accents
    "👩\u200d👩\u200d👧",  # emoji ZWJ sequence
    "😀",  # non-BMP: a surrogate pair when escaped
    "𝔘𝔫𝔦",
    "שלום",
    "مرحبا",
    "中文",
    "\U0010fffd",  # last plane, private use
    "\u00a0",  # no-break space
    "'\";--",  # quotes, SQL-ish
    "{}*?[]:\\",  # Redis glob and key separators
)
# Characters that make an id invalid.
CONTROL_CHARS = ("\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\x9f", "\x01")


@dataclass(frozen=True, slots=True)
class Fuzzed:
    """One generated message and what the generator meant it to be."""

    kind: str
    intent: str | None
    """"valid", "duplicate", "invalid", or None when only the oracle can tell."""
    key: bytes | None
    value: bytes


class HostileStream:
    """Endless mix of valid Taobao events and hostile messages, reproducible from ``seed``."""

    def __init__(
        self,
        base: list[Event],
        seed: int,
        *,
        now: datetime,
        dedup_horizon_s: float,
        huge_max_bytes: int = HUGE_MAX_BYTES,
        huge_every: int = 4000,
    ) -> None:
        self.base = base
        self.rng = random.Random(seed)
        self.now = now
        self.horizon_s = dedup_horizon_s
        self.huge_max = huge_max_bytes
        self.huge_every = huge_every
        self.cursor = 0
        self.round = 0
        self.tag = f"fz{seed}"
        self.recent: deque[tuple[str, float, bytes]] = deque(maxlen=500)
        self.newest_ts: dict[str, float] = {}
        self.serial = 0
        self.huge_made = 0
        valid: list[tuple[int, Callable[[], Fuzzed | None]]] = [
            (45, self.valid),
            (6, self.duplicate),
            (4, self.valid_unicode),
            (2, self.valid_far_past),
            (3, self.valid_reformatted),
            (2, self.valid_feedback),
            (2, self.valid_context),
        ]
        invalid: list[tuple[int, Callable[[], Fuzzed | None]]] = [
            (3, self.random_bytes),
            (3, self.truncated_json),
            (4, self.wrong_types),
            (2, self.missing_field),
            (2, self.unknown_field),
            (2, self.control_chars),
            (2, self.lone_surrogate),
            (2, self.invalid_utf8),
            (2, self.overlong_id),
            (2, self.far_future),
            (2, self.bad_timestamp),
            (2, self.deep_nesting),
            (2, self.not_an_event_object),
            (1, self.feedback_without_recommendation),
            (2, self.bad_json_syntax),
            (1, self.empty_id),
        ]
        ambiguous: list[tuple[int, Callable[[], Fuzzed | None]]] = [
            (4, self.mutated),
            (1, self.duplicate_keys),
        ]
        table = valid + invalid + ambiguous
        self.makers = [make for _, make in table]
        self.weights = [w for w, _ in table]

    # --- the stream ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Fuzzed]:
        while True:
            self.serial += 1
            if self.huge_every and self.serial % self.huge_every == 0:
                yield self.huge_field()
                continue
            made = self.rng.choices(self.makers, self.weights)[0]()
            if made is not None:
                yield made

    def next_event(self) -> Event:
        """The next real event, re-keyed for this pass over the log."""
        if self.cursor == len(self.base):
            self.cursor = 0
            self.round += 1
        event = self.base[self.cursor]
        self.cursor += 1
        return msgspec.structs.replace(
            event,
            event_id=f"{self.tag}-{self.round}-{event.event_id}",
            user_id=f"{event.user_id}~{self.round}",
        )

    def fields(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.next_event())  # type: ignore[no-any-return]

    def _valid(self, kind: str, event: Event, value: bytes | None = None) -> Fuzzed:
        value = encode_event(event) if value is None else value
        ts_s = event.ts_s
        if ts_s > self.newest_ts.get(event.user_id, float("-inf")) - self.horizon_s / 2:
            self.recent.append((event.user_id, ts_s, value))
        self.newest_ts[event.user_id] = max(self.newest_ts.get(event.user_id, ts_s), ts_s)
        return Fuzzed(kind, "valid", event.user_id.encode(), value)

    def _invalid(self, kind: str, value: bytes, key: bytes | None = None) -> Fuzzed:
        if key is None and self.rng.random() < 0.5:
            key = self.rng.choice([b"", b"bad", self.rng.randbytes(8)])
        return Fuzzed(kind, "invalid", key, value)

    def _json(self, fields: dict[str, Any]) -> bytes:
        return msgspec.json.encode(fields)

    # --- valid --------------------------------------------------------------------------
    def valid(self) -> Fuzzed:
        return self._valid("valid", self.next_event())

    def duplicate(self) -> Fuzzed | None:
        """A repeat of a recent valid event (an SDK retry), still within the dedup horizon."""
        if not self.recent:
            return None
        user_id, ts_s, value = self.recent[self.rng.randrange(len(self.recent))]
        if self.newest_ts[user_id] - ts_s >= self.horizon_s / 2:
            return None  # forgotten by design (beyond the horizon): not a clear duplicate
        return Fuzzed("duplicate", "duplicate", user_id.encode(), value)

    def valid_unicode(self) -> Fuzzed:
        event = self.next_event()
        edge = self.rng.choice(UNICODE_EDGES)
        where = self.rng.choice(("user_id", "item_id", "event_id", "category_id", "max"))
        if where == "max":  # exactly 128 code points, many of them outside the BMP
            event = msgspec.structs.replace(event, event_id=(event.event_id + edge * 128)[:128])
        else:
            event = msgspec.structs.replace(
                event, **{where: f"{edge}{getattr(event, where) or 'c'}{edge}"}
            )
        if self.rng.random() < 0.5:  # \\u escapes, non-BMP as escaped surrogate pairs
            value = json.dumps(msgspec.to_builtins(event), ensure_ascii=True).encode()
            return self._valid("valid_unicode", event, value)
        return self._valid("valid_unicode", event)

    def valid_far_past(self) -> Fuzzed:
        moment = self.rng.choice(
            (
                "1970-01-01T00:00:00Z",
                "1970-01-01T00:00:00.000001+14:00",
                "0001-01-01T00:00:00+00:00",
                "0001-01-01T00:00:00+05:00",  # year 0 in UTC
                "1900-02-28T23:59:59-12:00",
            )
        )
        event = msgspec.structs.replace(
            self.next_event(), ts=msgspec.json.decode(f'"{moment}"'.encode(), type=datetime)
        )
        # Never duplicated: an id older than the user's horizon is forgotten by design.
        value = encode_event(event)
        self.newest_ts.setdefault(event.user_id, event.ts_s)
        return Fuzzed("valid_far_past", "valid", event.user_id.encode(), value)

    def valid_reformatted(self) -> Fuzzed:
        """Same rules, other bytes: key order, whitespace, escapes, explicit nulls."""
        event = self.next_event()
        fields = msgspec.to_builtins(event)
        items = list(fields.items())
        self.rng.shuffle(items)
        fields = dict(items)
        fields.setdefault("context", None)
        fields.setdefault("recommendation_id", None)
        value = json.dumps(fields, indent=self.rng.choice((None, 0, 4)), ensure_ascii=True)
        if self.rng.random() < 0.5:
            value = f" \t\r\n{value}\n\n "
        return self._valid("valid_reformatted", event, value.encode())

    def valid_feedback(self) -> Fuzzed:
        rec_id = self.rng.choice(("isgd.1b2c", ".", "a.b.c", "popular.", "x", "😀.🙃", "m" * 128))
        kind = self.rng.choice(("rec_impression", "rec_click"))
        event = msgspec.structs.replace(self.next_event(), type=kind, recommendation_id=rec_id)
        return self._valid("valid_feedback", event)

    def valid_context(self) -> Fuzzed:
        fields = self.fields()
        fields["context"] = {
            "device": self.rng.choice(("mobile", "tv", "😀", "d" * 256)),
            "country": self.rng.choice(("DE", "de", "ZZ", "BV", "XK")),
            "region": self.rng.choice(("DE-BY", "US-CA-XX", "∅")),
            "user_agent": self.rng.choice(("Mozilla/5.0 (iPhone)", "u" * 2048, "curl/8")),
            "page": "/p?q=" + "é" * 500,
        }
        fields["profile"] = {"age": self.rng.choice((0, 130, 35)), "segment": "שלום"}
        event = msgspec.convert(fields, Event)
        return self._valid("valid_context", event)

    # --- invalid ------------------------------------------------------------------------
    def random_bytes(self) -> Fuzzed:
        value = self.rng.randbytes(self.rng.randint(1, 300))
        if value[:1] in (b"{", b"[", b'"') or value.strip() == b"":
            value = b"\xff" + value
        return self._invalid("random_bytes", value)

    def truncated_json(self) -> Fuzzed:
        value = encode_event(self.next_event())
        return self._invalid("truncated_json", value[: self.rng.randrange(1, len(value) - 1)])

    def wrong_types(self) -> Fuzzed:
        fields = self.fields()
        name = self.rng.choice((*REQUIRED, "session_id", "category_id", "context", "profile"))
        wrong: list[Any] = [123, -1.5, True, [], {}, ["x"], {"a": 1}, 1e308]
        if name in REQUIRED:
            wrong.append(None)
        if name == "ts":
            wrong += [1511568000, "1511568000"]
        if name == "context":
            wrong = ["mobile", 1, [], {"country": "DEU"}, {"device": 5}]
        if name == "profile":
            wrong = [{"age": 131}, {"age": -1}, {"age": 1.5}, {"age": "12"}, "p"]
        fields[name] = self.rng.choice(wrong)
        return self._invalid("wrong_types", self._json(fields))

    def missing_field(self) -> Fuzzed:
        fields = self.fields()
        for name in self.rng.sample(REQUIRED, self.rng.randint(1, len(REQUIRED))):
            del fields[name]
        return self._invalid("missing_field", self._json(fields))

    def unknown_field(self) -> Fuzzed:
        fields = self.fields()
        if self.rng.random() < 0.5:
            fields[self.rng.choice(("extra", "Event_ID", "", "\u200f", "user_id "))] = 1
        else:
            fields["context"] = {"device": "mobile", "os": "ios"}
        return self._invalid("unknown_field", self._json(fields))

    def huge_field(self) -> Fuzzed:
        fields = self.fields()
        self.huge_made += 1
        size = int(2 ** self.rng.uniform(10, 20.6))  # 1 KiB .. ~1.5 MB
        if self.huge_made % 5 == 1:
            size = self.huge_max  # every fifth over the default producer limit
        char = self.rng.choice(("a", "é", "中", "😀"))
        body = char * max(2049, size // len(char.encode()))  # over every length limit
        name = self.rng.choice(("event_id", "user_id", "item_id", "ua", "extra", "array"))
        if name == "ua":
            fields["context"] = {"user_agent": body}
        elif name == "array":
            fields["category_id"] = [body[:100]] * max(1, size // 104)
        else:
            fields[name] = body
        value = self._json(fields)
        if len(value) > self.huge_max:
            value = value[: self.huge_max]  # still huge, now also truncated
        return self._invalid("huge_field", value)

    def control_chars(self) -> Fuzzed:
        fields = self.fields()
        name = self.rng.choice(ID_FIELDS)
        char = self.rng.choice(CONTROL_CHARS)
        fields[name] = f"{fields.get(name) or 'x'}{char}" if char == "\n" else f"a{char}b"
        value = self._json(fields)
        if self.rng.random() < 0.3:  # the raw byte, unescaped, inside the string
            value = value.replace(b"a\\u0000b", b"a\x00b").replace(b"a\\u0001b", b"a\x01b")
        return self._invalid("control_chars", value)

    def lone_surrogate(self) -> Fuzzed:
        fields = self.fields()
        name = self.rng.choice(REQUIRED[:3])
        marker = "SURROGATE-HERE"
        fields[name] = marker
        escape = self.rng.choice(
            (b"\\ud800", b"\\udfff", b"x\\udc00", b"\\ud83d\\u0041", b"\\ud83d")
        )
        return self._invalid("lone_surrogate", self._json(fields).replace(marker.encode(), escape))

    def invalid_utf8(self) -> Fuzzed:
        fields = self.fields()
        marker = "UTF8-HERE"
        fields[self.rng.choice(REQUIRED[:3])] = marker
        bad = self.rng.choice(
            (b"\xed\xa0\x80", b"\xc0\xaf", b"\xff", b"\xe2\x82", b"\xf8\x88\x80\x80\x80")
        )
        return self._invalid(
            "invalid_utf8", self._json(fields).replace(marker.encode(), b"a" + bad)
        )

    def overlong_id(self) -> Fuzzed:
        fields = self.fields()
        fields[self.rng.choice(ID_FIELDS)] = "i" * self.rng.choice((129, 130, 1000, 10_000))
        return self._invalid("overlong_id", self._json(fields))

    def far_future(self) -> Fuzzed:
        fields = self.fields()
        fields["ts"] = self.rng.choice(
            (
                "2999-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999+00:00",
                "9999-12-31T23:59:59-05:00",
                (self.now + timedelta(hours=3)).isoformat(),
            )
        )
        return self._invalid("far_future", self._json(fields))

    def bad_timestamp(self) -> Fuzzed:
        fields = self.fields()
        fields["ts"] = self.rng.choice(
            (
                "2017-11-25T00:00:00",  # no offset
                "2017-13-40T00:00:00Z",
                "yesterday",
                "",
                "0000-01-01T00:00:00Z",
                "10000-01-01T00:00:00Z",
                "2017-11-25T00:00:00+25:00",
                "2016-12-31T23:59:60Z",  # a real leap second, which `datetime` cannot hold
            )
        )
        return self._invalid("bad_timestamp", self._json(fields))

    def deep_nesting(self) -> Fuzzed:
        depth = self.rng.choice((10, 100, 1000, 1000, 1000, 1000, 5000))
        shape = self.rng.choice(("array", "object", "in_context"))
        if self.rng.random() < 0.005:  # rare: 200 KB of brackets
            depth, shape = 100_000, "array"
        if shape == "array":
            value = b"[" * depth + b"]" * depth
        elif shape == "object":
            value = b'{"a":' * depth + b"1" + b"}" * depth
        else:
            inner = '{"a":' * depth + "1" + "}" * depth
            fields = self.fields()
            value = self._json({**fields, "context": "X"}).replace(b'"X"', inner.encode())
        return self._invalid("deep_nesting", value)

    def not_an_event_object(self) -> Fuzzed:
        event_json = encode_event(self.next_event())
        value = self.rng.choice(
            (b"null", b"[]", b"{}", b"true", b"42", b'"event"', b"[" + event_json + b"]", b" ")
        )
        return self._invalid("not_an_event_object", value)

    def feedback_without_recommendation(self) -> Fuzzed:
        fields = self.fields()
        fields["type"] = self.rng.choice(("rec_impression", "rec_click"))
        return self._invalid("feedback_without_recommendation", self._json(fields))

    def bad_json_syntax(self) -> Fuzzed:
        value = encode_event(self.next_event())
        value = self.rng.choice(
            (
                value[:-1] + b',"x":NaN}',
                value[:-1] + b',"x":Infinity}',
                value[:-1] + b",}",
                value.replace(b'"', b"'"),
                b"\xef\xbb\xbf" + value,  # UTF-8 BOM
                value + value,
                value + b"}",
                b"/* c */" + value,
            )
        )
        return self._invalid("bad_json_syntax", value)

    def empty_id(self) -> Fuzzed:
        fields = self.fields()
        fields[self.rng.choice(REQUIRED[:3])] = ""
        return self._invalid("empty_id", self._json(fields))

    # --- only the oracle knows ----------------------------------------------------------
    def mutated(self) -> Fuzzed:
        event = self.next_event()
        # An id at least 4 edits away from every other, so that <= 3 byte edits cannot turn it
        # into a real event's id (a coincidental duplicate nobody intended).
        event = msgspec.structs.replace(event, event_id=event.event_id.replace("-", "-mut-", 1))
        value = bytearray(encode_event(event))
        for _ in range(self.rng.randint(1, 3)):
            pos = self.rng.randrange(len(value))
            op = self.rng.randrange(3)
            if op == 0:
                value[pos] = self.rng.randrange(256)
            elif op == 1:
                del value[pos]
            else:
                value.insert(pos, self.rng.randrange(256))
        return Fuzzed("mutated", None, self.rng.choice((None, b"m")), bytes(value))

    def duplicate_keys(self) -> Fuzzed:
        event = self.next_event()
        value = encode_event(event)[:-1] + f',"event_id":"{event.event_id}-2"}}'.encode()
        return Fuzzed("duplicate_keys", None, event.user_id.encode(), value)


# --- accounting --------------------------------------------------------------------------


def payload_digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=12).digest()


@dataclass
class Expected:
    """What the worker must end up with, from the oracle and the dedup operator."""

    horizon_s: float
    max_ids: int
    sent: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)
    oracle: Counter[str] = field(default_factory=Counter)
    """``<kind>:<valid|invalid>`` as the oracle judged."""
    mismatches: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    invalid_payloads: Counter[bytes] = field(default_factory=Counter)
    dedup: dict[str, EventDedup] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def account(self, msg: Fuzzed, now: datetime, max_future_skew_s: float) -> bytes | None:
        """Judge one message; return the Kafka key to produce it with."""
        self.sent[msg.kind] += 1
        self.intents[msg.intent or "oracle decides"] += 1
        result = decode_event(msg.value, now=now, max_future_skew_s=max_future_skew_s)
        if not isinstance(result, Event):
            self.oracle[f"{msg.kind}:invalid"] += 1
            if msg.intent not in (None, "invalid"):
                self._mismatch(msg, f"oracle: invalid ({result[0].message[:120]})")
            self.invalid += 1
            self.invalid_payloads[payload_digest(bounded_dead_letter(msg.value, None)[0])] += 1
            return msg.key
        self.oracle[f"{msg.kind}:valid"] += 1
        if msg.intent == "invalid":
            self._mismatch(msg, "oracle: valid")
        dedup = self.dedup.get(result.user_id)
        if dedup is None:
            dedup = self.dedup[result.user_id] = EventDedup(self.horizon_s, self.max_ids)
        if dedup.is_duplicate(result.event_id, result.ts_s):
            self.duplicates[result.user_id] += 1
            if msg.intent == "valid":
                self._mismatch(msg, "dedup: a duplicate")
        else:
            self.events[result.user_id] += 1
            if msg.intent == "duplicate":
                self._mismatch(msg, "dedup: not a duplicate")
        # Every event of a user on one partition, in order (as the ingest API keys them).
        return result.user_id.encode()

    def _mismatch(self, msg: Fuzzed, why: str) -> None:
        self.mismatches[msg.kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{msg.kind} ({msg.intent}) {why}: {msg.value[:200]!r}")

    @property
    def valid(self) -> int:
        return sum(self.events.values())


# --- the run -----------------------------------------------------------------------------


@dataclass
class DeadLetterReader:
    """Counts the dead-letter topic as it fills: payload digests and reason headers."""

    bootstrap: str
    topic: str
    payloads: Counter[bytes] = field(default_factory=Counter)
    count: int = 0
    without_reason: int = 0
    consumer: Consumer | None = None

    def __post_init__(self) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"fuzz-dlq-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "queued.min.messages": 100_000,
            }
        )
        self.consumer.assign([TopicPartition(self.topic, 0, 0)])

    def drain(self, seconds: float) -> None:
        assert self.consumer is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = self.consumer.consume(10_000, 0.05)
            for msg in batch:
                if msg.error() is not None:
                    continue
                self.count += 1
                self.payloads[payload_digest(msg.value() or b"")] += 1
                reason = dict(msg.headers() or []).get("reason")
                if not reason or not reason.strip():
                    self.without_reason += 1
            if not batch:
                return

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


def produce_all(producer: Producer, topic: str, key: bytes | None, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            return
        except BufferError:
            producer.poll(0.05)


def read_users(store: RedisStore, users: list[str]) -> dict[str, tuple[int, int] | None]:
    """(events, duplicates) of each user's record, pipelined."""
    out: dict[str, tuple[int, int] | None] = {}
    for start in range(0, len(users), 2000):
        chunk = users[start : start + 2000]
        pipe = store.client.pipeline(transaction=False)
        for user_id in chunk:
            pipe.get(store.keys.user(user_id))
        for user_id, blob in zip(chunk, pipe.execute(), strict=True):
            if blob is None:
                out[user_id] = None
            else:
                record = decode_user(blob)
                out[user_id] = (record.events, record.duplicates)
    return out


def count_user_records(store: RedisStore) -> int:
    prefix = store.keys.user("")
    return sum(1 for _ in store.client.scan_iter(match=prefix + "*", count=5000))


def run_fuzz(
    settings: Settings,
    log_dir: Path,
    messages: int,
    seed: int,
    *,
    base_limit: int | None = None,
    timeout_s: float | None = None,
    huge_every: int = 4000,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Produce ``messages`` fuzzed messages with a live worker; verify; return the report."""
    base = list(iter_dataset_events("taobao", limit=base_limit))
    now = datetime.now(UTC)
    stream = HostileStream(
        base, seed, now=now, dedup_horizon_s=settings.dedup_horizon_s, huge_every=huge_every
    )
    expected = Expected(settings.dedup_horizon_s, settings.dedup_max_ids)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 200_000,
            "message.max.bytes": 2_000_000,  # lets the huge messages through
        }
    )
    timeout_s = timeout_s if timeout_s is not None else 120 + messages / 1000
    worker = processes.spawn(processes.worker_argv(), settings, log_dir / "worker.log")
    dlq = DeadLetterReader(settings.kafka_bootstrap, settings.dlq_topic)
    started = time.monotonic()
    try:
        for n, msg in enumerate(stream, start=1):
            key = expected.account(msg, now, settings.max_future_skew_s)
            produce_all(producer, settings.events_topic, key, msg.value)
            if n % 100_000 == 0:
                producer.poll(0)
                progress(f"  produced {n:,} ({time.monotonic() - started:.0f} s)")
            if n == messages:
                break
        assert producer.flush(120) == 0, "events not delivered to the broker"
        produced_s = time.monotonic() - started
        progress(f"  all {messages:,} produced in {produced_s:.1f} s; waiting for the worker")

        users = sorted(expected.dedup)
        pending = list(users)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and worker.poll() is None:
            dlq.drain(1.0)
            seen = read_users(store, pending)
            pending = [
                u
                for u in pending
                if seen[u] is None
                or seen[u][0] < expected.events[u]  # type: ignore[index]
                or seen[u][1] < expected.duplicates[u]  # type: ignore[index]
            ]
            if not pending and dlq.count >= expected.invalid:
                break
            time.sleep(0.5)
        done_s = time.monotonic() - started
        time.sleep(2.0)  # anything applied twice or dead-lettered twice shows up now
        dlq.drain(2.0)
        worker_alive = worker.poll() is None
        final = read_users(store, users)
        user_mismatches = [
            u for u in users if final[u] != (expected.events[u], expected.duplicates[u])
        ]
        records = count_user_records(store)
    finally:
        dlq.close()
        processes.stop(worker)
    applied = sum(v[0] for v in final.values() if v is not None)
    dropped = sum(v[1] for v in final.values() if v is not None)
    missing_letters = expected.invalid_payloads - dlq.payloads
    extra_letters = dlq.payloads - expected.invalid_payloads
    failures = (
        sum(expected.mismatches.values())
        + len(user_mismatches)
        + abs(records - len(users))
        + abs(dlq.count - expected.invalid)
        + sum(missing_letters.values())
        + sum(extra_letters.values())
        + dlq.without_reason
        + (0 if worker_alive else 1)
    )
    return {
        "messages": messages,
        "seed": seed,
        "base_events": len(base),
        "passes_over_log": stream.round + 1,
        "sent_by_class": dict(sorted(expected.sent.items())),
        "oracle_by_class": dict(sorted(expected.oracle.items())),
        "expected_valid_distinct": expected.valid,
        "expected_duplicates": sum(expected.duplicates.values()),
        "expected_invalid": expected.invalid,
        "intended": dict(sorted(expected.intents.items())),
        "users": len(users),
        "user_records": records,
        "valid_applied": applied,
        "duplicates_dropped": dropped,
        "dead_letters": dlq.count,
        "dead_letters_without_reason": dlq.without_reason,
        "dead_letters_missing": sum(missing_letters.values()),
        "dead_letters_unexpected": sum(extra_letters.values()),
        "intent_mismatches": dict(expected.mismatches),
        "mismatch_examples": expected.examples,
        "user_mismatches": len(user_mismatches),
        "user_mismatch_examples": [
            f"{u!r}: got {final[u]}, expected {(expected.events[u], expected.duplicates[u])}"
            for u in user_mismatches[:10]
        ],
        "worker_alive": worker_alive,
        "produce_s": round(produced_s, 1),
        "elapsed_s": round(done_s, 1),
        "messages_per_s": round(messages / done_s),
        "failures": failures,
    }


def print_report(report: dict[str, Any]) -> None:
    print(f"fuzz_stream: {report['messages']:,} messages, seed {report['seed']}")
    print(
        f"valid events from {report['base_events']:,} Taobao rows, "
        f"{report['passes_over_log']} re-keyed passes"
    )
    print("messages sent by class (oracle: valid / invalid):")
    oracle = report["oracle_by_class"]
    for kind, n in report["sent_by_class"].items():
        v, i = oracle.get(f"{kind}:valid", 0), oracle.get(f"{kind}:invalid", 0)
        print(f"  {kind:<32} {n:>9,}   {v:>9,} / {i:>9,}")
    print(
        f"valid applied        {report['valid_applied']:>10,}  "
        f"(expected {report['expected_valid_distinct']:,} distinct valid events)"
    )
    print(
        f"duplicates dropped   {report['duplicates_dropped']:>10,}  "
        f"(expected {report['expected_duplicates']:,})"
    )
    print(
        f"dead letters         {report['dead_letters']:>10,}  "
        f"(expected {report['expected_invalid']:,} invalid; missing "
        f"{report['dead_letters_missing']}, unexpected {report['dead_letters_unexpected']}, "
        f"without reason {report['dead_letters_without_reason']})"
    )
    print(
        f"users                {report['users']:>10,}  "
        f"(records in Redis {report['user_records']:,}, mismatched {report['user_mismatches']})"
    )
    print(
        f"intent mismatches    {sum(report['intent_mismatches'].values()):>10}  {report['intent_mismatches'] or ''}"
    )
    for line in report["mismatch_examples"] + report["user_mismatch_examples"]:
        print(f"  {line}")
    print(f"worker alive         {report['worker_alive']}")
    print(
        f"elapsed              {report['elapsed_s']:>10} s  "
        f"({report['messages_per_s']:,} messages/s end to end; produced in {report['produce_s']} s)"
    )
    print(f"failures             {report['failures']:>10}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-stream-") as tmp:
        run_dir = Path(tmp)
        environ = {k: v for k, v in os.environ.items() if k != "FRESHREC_REDIS_URL"}
        stack = LocalStack(
            load_settings(
                environ={},
                run_dir=str(run_dir),
                kafka_bootstrap="127.0.0.1:0",
                redis_url="redis://127.0.0.1:0/0",
            )
        )
        info = stack.start(environ=environ)
        try:
            settings = load_settings(
                environ={},
                run_dir=str(run_dir),
                kafka_bootstrap=info.kafka_bootstrap,
                redis_url=info.redis_url,
                events_topic="fuzz-events",
                dlq_topic="fuzz-events-dlq",
                redis_prefix="fuzz",
            )
            create_topics(
                settings.kafka_bootstrap,
                {settings.events_topic: settings.events_partitions, settings.dlq_topic: 1},
            )
            report = run_fuzz(settings, run_dir, args.messages, args.seed)
        finally:
            stack.stop()
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["failures"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
