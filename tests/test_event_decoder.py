"""The worker's native decoder (``operators.decode_message``) against the one schema.

For every payload the native decoder must give what ``freshrec.events.decode_message`` gives:
the same verdict, the same field values (``ts`` as the same instant and offset, ``ts_s`` bit for
bit ``event.ts.timestamp()``) and, for an invalid payload, the same dead-letter reason; its fast
path may only ever answer for payloads the schema accepts. The ingest API's validation (what
``serving.ingest.ingest`` runs on a body) must agree with it too: one schema, two doors — except
for tombstones (``"type": "erase"``), which the worker reads and the ingest API refuses. The
corpus: hypothesis-built events and tombstones rendered many ways and mutated, plus the hostile
stream of ``benchmarks/fuzz_stream.py``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import operators
from benchmarks.fuzz_stream import HostileStream
from freshrec.events import (
    ERASE_TYPE,
    EVENT_TYPES,
    Erase,
    Event,
    decode_event,
    decode_message,
    encode_erase,
    encode_event,
    errors_as_reason,
    validate_event,
)
from freshrec.replay import iter_dataset_events

NOW: Final = datetime(2024, 6, 1, 12, tzinfo=UTC)
NOW_S: Final = NOW.timestamp()
SKEW_S: Final = 3600.0
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US: Final = timedelta(microseconds=1)
#: Local years the fast path decodes itself (`FAST_YEARS` in operators/src/events.rs).
FAST_YEARS: Final = range(1700, 2201)
FUZZ_SEED: Final = 20261203
FUZZ_MESSAGES: Final = 20_000

Verdict = dict[str, Any] | str


def event_fields(event: Event) -> dict[str, Any]:
    """The native decoder's shape of an event: ``msgspec.structs.asdict`` with ``ts`` as
    ``ts_us``, ``ts_s`` and ``utc_offset_s``, context and profile as dicts."""
    offset = event.ts.utcoffset()
    assert offset is not None
    asdict = msgspec.structs.asdict
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "type": event.type,
        "ts_us": (event.ts - EPOCH) // ONE_US,
        "ts_s": event.ts.timestamp(),
        "utc_offset_s": offset // timedelta(seconds=1),
        "session_id": event.session_id,
        "category_id": event.category_id,
        "context": None if event.context is None else asdict(event.context),
        "profile": None if event.profile is None else asdict(event.profile),
        "recommendation_id": event.recommendation_id,
    }


def erase_fields(erase: Erase) -> dict[str, Any]:
    """The native decoder's shape of a tombstone."""
    return {
        "type": ERASE_TYPE,
        "user_id": erase.user_id,
        "erasure_id": erase.erasure_id,
        "ts_us": (erase.ts - EPOCH) // ONE_US,
    }


def schema_verdict(
    payload: bytes, now: datetime = NOW, max_future_skew_s: float = SKEW_S
) -> Verdict:
    result = decode_message(payload, now=now, max_future_skew_s=max_future_skew_s)
    if isinstance(result, Event):
        return event_fields(result)
    return erase_fields(result) if isinstance(result, Erase) else errors_as_reason(result)


def is_tombstone(verdict: Verdict | None) -> bool:
    return isinstance(verdict, dict) and verdict["type"] == ERASE_TYPE


def assert_same(native: Verdict | None, expected: Verdict, payload: bytes) -> None:
    assert native == expected, payload[:500]
    if isinstance(expected, dict) and not is_tombstone(expected):
        assert isinstance(native, dict)
        assert list(native) == list(expected)  # the same shape, in Event's field order
        assert native["ts_s"].hex() == expected["ts_s"].hex()  # bit for bit (0.0 vs -0.0 too)


def assert_worker_agrees(
    payload: bytes, now_s: float = NOW_S, max_future_skew_s: float = SKEW_S
) -> tuple[Verdict, dict[str, Any] | None]:
    """(a): the native decoder and its fast path against ``freshrec.events.decode_event``."""
    expected = schema_verdict(payload, datetime.fromtimestamp(now_s, UTC), max_future_skew_s)
    native = operators.decode_message(payload, now_s, max_future_skew_s)
    assert_same(native, expected, payload)
    fast = operators.decode_event_fast(payload, now_s, max_future_skew_s)
    if fast is not None:  # never Valid for a payload the schema rejects, never other values
        assert_same(fast, expected, payload)
    return native, fast


NOT_JSON: Final = "<400: body is not JSON>"
BATCH: Final = "<a batch: each element judged at $[i]>"


def ingest_verdict(payload: bytes) -> Verdict:
    """What the ingest API makes of ``payload`` as a request body (``serving.ingest.ingest``:
    ``msgspec.json.decode`` of the body, then ``validate_event`` of the one object at ``$``;
    a rejected event's dead letter carries ``errors_as_reason``)."""
    try:
        raw = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return NOT_JSON
    if isinstance(raw, list):
        return BATCH
    checked = validate_event(raw, now=NOW, max_future_skew_s=SKEW_S, path="$")
    return event_fields(checked) if isinstance(checked, Event) else errors_as_reason(checked)


def typed_erase(payload: bytes) -> bool:
    """An object whose ``type`` is ``"erase"``: the worker judges it as a tombstone."""
    try:
        raw = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return False
    return isinstance(raw, dict) and raw.get("type") == ERASE_TYPE


def assert_ingest_agrees(payload: bytes) -> None:
    """(b): accepted by the ingest API iff accepted by the worker, for the same reasons; a
    tombstone, valid or not, is refused by the ingest API (only DELETE /v1/users/{id} makes
    one)."""
    worker = operators.decode_message(payload, NOW_S, SKEW_S)
    api = ingest_verdict(payload)
    if api == NOT_JSON:  # 400 at the API, a dead letter at the worker
        assert isinstance(worker, str)
        assert worker.startswith(("$: Invalid JSON: ", "$: JSON nested too deeply")), worker
    elif api == BATCH:  # the API reads an array as a batch; to the worker it is no event
        assert worker == "$: Expected `object`, got `list`"
    elif typed_erase(payload):
        assert isinstance(api, str) and "$.type: " in api, api
    else:
        assert not is_tombstone(worker), payload
        assert_same(worker, api, payload)


# --- the corpus: events, rendered many ways, mutated -----------------------------------------

# Printable text as the schema defines it: no C0/C1 controls (category Cc), no lone surrogates.
printable = st.characters(exclude_categories=("Cc", "Cs"))


def texts(max_size: int) -> st.SearchStrategy[str]:
    # Lengths at the limit, in characters of 1 to 4 UTF-8 bytes, as well as anything shorter.
    at_limit = st.builds(
        lambda ch, n: ch * n, st.sampled_from(["x", "é", "中", "😀"]), st.just(max_size)
    )
    return st.text(printable, min_size=1, max_size=min(max_size, 40)) | at_limit


ids = texts(128)
short_texts = texts(256)
long_texts = texts(2048)
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


def datetimes(low: datetime, high: datetime) -> st.SearchStrategy[datetime]:
    return st.datetimes(min_value=low, max_value=high, timezones=st.just(UTC) | offsets)


timestamps = st.one_of(
    datetimes(datetime(2017, 1, 1), datetime(2024, 5, 31)),  # the ordinary past
    datetimes(datetime(1700, 1, 1), datetime(2024, 5, 31)),  # the fast path's years: past
    datetimes(datetime(1700, 1, 1), datetime(2200, 12, 31)),  # and future
    datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)),  # all of datetime's
    # at the future-skew limit, to the microsecond
    st.integers(-3, 3).map(lambda us: NOW + timedelta(seconds=SKEW_S, microseconds=us)),
)
contexts = st.fixed_dictionaries(
    {},
    optional={
        "user_agent": long_texts,
        "device": short_texts,
        "country": st.from_regex(r"\A[A-Za-z]{2}\Z"),
        "region": short_texts,
        "city": short_texts,
        "page": long_texts,
        "referrer": long_texts,
    },
)
profiles = st.fixed_dictionaries(
    {},
    optional={
        "age": st.integers(0, 130),
        "gender": short_texts,
        "occupation": short_texts,
        "postal_code": short_texts,
        "segment": short_texts,
    },
)


@st.composite
def valid_fields(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event's JSON fields (the skew aside), as ``msgspec.to_builtins`` gives them."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    fields: dict[str, Any] = {
        "event_id": draw(ids),
        "user_id": draw(ids),
        "item_id": draw(ids),
        "type": event_type,
        "ts": msgspec.to_builtins(draw(timestamps)),
    }
    optional = {"session_id": ids, "category_id": ids, "context": contexts, "profile": profiles}
    if event_type in ("rec_impression", "rec_click") or draw(st.booleans()):
        fields["recommendation_id"] = draw(ids)
    for name, values in optional.items():
        if draw(st.booleans()):
            fields[name] = draw(values)
    return fields


class Raw(bytes):
    """A token written as it is: what no encoder writes (``-0``, ``1e1``, ``\\ud800``, bad UTF-8)."""


class Obj(list[tuple[Any, Any]]):
    """A JSON object as its members in order; a key may repeat."""


def as_obj(value: Any) -> Any:
    if isinstance(value, dict):
        return Obj((k, as_obj(v)) for k, v in value.items())
    return value


FIELD_NAMES: Final = tuple(f.name for f in msgspec.structs.fields(Event))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6), children, max_size=3).map(as_obj)
    ),
    max_leaves=6,
)
control_chars = st.sampled_from(["\x00", "\n", "\r", "\t", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"])
lone_surrogates = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
age_values = st.one_of(
    st.integers(-2, 135),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.sampled_from([35.0, 1.5, True, False, "35", [], {}]),
    st.sampled_from([Raw(b"-0"), Raw(b"1e1"), Raw(b"35.0"), Raw(b"035"), Raw(b"1E2"), Raw(b"-1")]),
)
country_values = st.sampled_from(
    ["DE", "de", "DEU", "D", "", "D1", "Ä", "ÄB", "de\n", "\nde", " de"]
)
type_values = st.sampled_from([*EVENT_TYPES, "click", "VIEW", "", "view ", " view", "Rec_click"])


def mostly(valid: st.SearchStrategy[Any], edge: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` 15 times in 16, else ``edge``: about half of the timestamps are all valid."""
    return st.integers(0, 15).flatmap(lambda n: edge if n == 0 else valid)


@st.composite
def ts_strings(draw: st.DrawFn) -> str:
    """Timestamps in every form: RFC 3339 and its variants, each part mostly valid."""
    year = draw(st.sampled_from([1, 1699, 1700, 1969, 1970, 2017, 2024, 2200, 2201, 9999]))
    year_text = draw(
        mostly(st.just(f"{year:04d}"), st.sampled_from(["0000", "10000", "+2024", "24"]))
    )
    month = draw(mostly(st.integers(1, 12), st.sampled_from([0, 13])))
    day = draw(mostly(st.integers(1, 28), st.sampled_from([0, 29, 30, 31, 32])))
    hour = draw(mostly(st.integers(0, 23), st.just(24)))
    minute = draw(mostly(st.integers(0, 59), st.just(60)))
    second = draw(mostly(st.integers(0, 59), st.sampled_from([60, 61])))
    time = draw(
        mostly(
            st.just(f"{hour:02d}:{minute:02d}:{second:02d}"),
            st.sampled_from([f"{hour:02d}:{minute:02d}", f"{hour}:{minute:02d}:{second:02d}"]),
        )
    )
    separator = draw(mostly(st.sampled_from("Tt "), st.sampled_from(["_", "  ", ""])))
    fraction = draw(
        mostly(
            st.just("") | st.text("0123456789", min_size=1, max_size=6).map(lambda d: "." + d),
            st.sampled_from([".", ",5"])
            | st.text("0123456789", min_size=7, max_size=12).map(lambda d: "." + d),
        )
    )
    sign = draw(st.sampled_from("+-"))
    zone_hour = draw(mostly(st.integers(0, 23), st.sampled_from([24, 25, 99])))
    zone_minute = draw(mostly(st.integers(0, 59), st.just(60)))
    zone = draw(
        mostly(
            st.sampled_from(["Z", "z", f"{sign}{zone_hour:02d}:{zone_minute:02d}"]),
            st.sampled_from(
                ["", " Z", f"{sign}{zone_hour:02d}{zone_minute:02d}", f"{sign}{zone_hour:02d}"]
            ),
        )
    )
    return f"{year_text}-{month:02d}-{day:02d}{separator}{time}{fraction}{zone}"


#: Where each text field lives (None: top level) and its length limit in code points.
TEXT_FIELDS: Final = {
    **{name: (None, 128) for name in ("event_id", "user_id", "item_id", "session_id")},
    **{name: (None, 128) for name in ("category_id", "recommendation_id")},
    **{name: ("context", 256) for name in ("device", "region", "city")},
    **{name: ("context", 2048) for name in ("user_agent", "page", "referrer")},
    **{name: ("profile", 256) for name in ("gender", "occupation", "postal_code", "segment")},
}


def nested(obj: Obj, holder: str | None) -> Obj:
    """The object itself, or its nested object ``holder`` (made an empty one if it is not)."""
    if holder is None:
        return obj
    place = next((v for k, v in obj if k == holder and isinstance(v, Obj)), None)
    if place is None:
        place = Obj()
        obj[:] = [(k, v) for k, v in obj if k != holder] + [(holder, place)]
    return place


def put(obj: Obj, holder: str | None, name: str, value: Any) -> None:
    place = nested(obj, holder)
    place[:] = [(k, v) for k, v in place if k != name] + [(name, value)]


MUTATIONS: Final = (
    *("length", "length", "length", "control", "control", "surrogate", "empty"),
    *("ts", "ts", "age", "country", "type", "null", "drop", "unknown", "duplicate"),
    *("wrong_type", "not_an_object"),
)


@st.composite
def mutated(draw: st.DrawFn, obj: Obj) -> Obj:
    """One change that may (or may not) make the event invalid, mostly at a rule's edge."""
    kind = draw(st.sampled_from(MUTATIONS))
    name = draw(st.sampled_from(list(TEXT_FIELDS)))
    holder, limit = TEXT_FIELDS[name]
    current = dict(nested(obj, holder)).get(name)
    text = current if isinstance(current, str) else "x"
    at = draw(st.integers(0, len(text)))
    target = draw(st.sampled_from([obj, *(v for _, v in obj if isinstance(v, Obj))]))
    if kind == "length":
        char = draw(st.sampled_from(["x", "é", "中", "😀"]))
        put(obj, holder, name, char * (limit + draw(st.sampled_from([-1, 0, 0, 1, 1, 2]))))
    elif kind in ("control", "surrogate"):
        char = draw(control_chars if kind == "control" else lone_surrogates)
        put(obj, holder, name, text[:at] + char + text[at:])
    elif kind == "empty":
        put(obj, holder, name, "")
    elif kind == "ts":
        value = draw(ts_strings() | st.sampled_from([1511568000, "1511568000", None]))
        put(obj, None, "ts", value)
    elif kind == "age":
        put(obj, "profile", "age", draw(age_values))
    elif kind == "country":
        put(obj, "context", "country", draw(country_values))
    elif kind == "type":
        put(obj, None, "type", draw(type_values))
    elif kind == "null":
        put(obj, None, draw(st.sampled_from(FIELD_NAMES)), None)
    elif kind == "drop" and target:
        del target[draw(st.integers(0, len(target) - 1))]
    elif kind == "unknown":
        unknown = st.sampled_from(["extra", "Event_ID", "", "user_id ", "\u200f", "ts\u0000"])
        key = draw(unknown | st.text(max_size=8))
        target.insert(draw(st.integers(0, len(target))), (key, draw(json_values)))
    elif kind == "duplicate" and target:
        key, value = target[draw(st.integers(0, len(target) - 1))]
        again = draw(st.sampled_from([value, "", "x" * 129, "dup", None]))
        target.insert(draw(st.integers(0, len(target))), (key, again))
    elif kind == "wrong_type" and target:
        i = draw(st.integers(0, len(target) - 1))
        target[i] = (target[i][0], draw(json_values))
    elif kind == "not_an_object":
        value = draw(st.sampled_from(["x", 1, [], True, Obj([("a", 1)])]))
        put(obj, None, draw(st.sampled_from(["context", "profile"])), value)
    return obj


SHORT_ESCAPES: Final = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def u_escape(code: int, upper: bool) -> str:
    if code > 0xFFFF:  # a surrogate pair, as json.dumps(ensure_ascii=True) writes it
        code -= 0x10000
        return u_escape(0xD800 + (code >> 10), upper) + u_escape(0xDC00 + (code & 0x3FF), upper)
    text = f"\\u{code:04x}"
    return text.upper().replace("\\U", "\\u") if upper else text


class Writer:
    """JSON text of a value, with the choices an encoder may make drawn from ``rng``: key order
    is the object's, whitespace, escapes (none, ``ensure_ascii``, random ``\\uXXXX``/``\\/``),
    and control characters raw (invalid JSON) or escaped."""

    def __init__(self, rng: random.Random, escape_keys: bool) -> None:
        self.rng = rng
        self.escapes = rng.choice(["minimal", "minimal", "ascii", "random"])
        self.upper = rng.random() < 0.3
        self.spacing = rng.choice(["compact", "compact", "spaced", "random"])
        self.raw_controls = rng.random() < 0.1
        self.escape_keys = escape_keys

    def ws(self) -> str:
        if self.spacing == "compact":
            return ""
        if self.spacing == "spaced":
            return " "
        return self.rng.choice(["", "", " ", "\n", "\t", "\r\n  ", "  "])

    def string(self, text: str, key: bool = False) -> bytes:
        out = ['"']
        escapes = self.escapes if not key or self.escape_keys else "minimal"
        for ch in text:
            code = ord(ch)
            if ch in '"\\':
                out.append("\\" + ch)
            elif code < 0x20:
                out.append(
                    ch if self.raw_controls else SHORT_ESCAPES.get(ch, u_escape(code, self.upper))
                )
            elif (escapes == "ascii" and code > 0x7E) or (
                escapes == "random" and self.rng.random() < 0.3
            ):
                out.append(
                    "\\/" if ch == "/" and self.rng.random() < 0.5 else u_escape(code, self.upper)
                )
            elif 0xD800 <= code <= 0xDFFF and self.rng.random() < 0.5:
                out.append(u_escape(code, self.upper))  # a lone surrogate, escaped
            else:
                out.append(ch)  # (a lone surrogate raw: encoded below, invalid UTF-8)
        out.append('"')
        return "".join(out).encode("utf-8", "surrogatepass")

    def value(self, value: Any) -> bytes:
        if isinstance(value, Raw):
            return bytes(value)
        if value is None:
            return b"null"
        if isinstance(value, bool):
            return b"true" if value else b"false"
        if isinstance(value, int | float):
            return json.dumps(value).encode()
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, Obj):
            members = [
                self.ws().encode()
                + self.string(k, key=True)
                + f"{self.ws()}:{self.ws()}".encode()
                + self.value(v)
                for k, v in value
            ]
            return b"{" + b",".join(members) + self.ws().encode() + b"}"
        return b"[" + b",".join(self.value(v) for v in value) + b"]"

    def document(self, value: Any) -> bytes:
        return self.ws().encode() + self.value(value) + self.ws().encode()


def byte_mutation(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    kind = rng.randrange(6)
    if kind == 0 and data:
        return bytes(data[: rng.randrange(len(data))])  # truncated
    if kind == 1:
        return b"\xef\xbb\xbf" + payload  # a BOM
    if kind == 2:
        return payload + rng.choice([b"x", b"}", b",", b"\x00", b"\x0c", payload])
    if kind == 3:
        return b"[" + payload + b"]"
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(data) + 1)
        if kind == 4 and pos < len(data):
            data[pos] = rng.randrange(256)
        elif kind == 5 and pos < len(data):
            del data[pos]
        else:
            data.insert(pos, rng.randrange(256))
    return bytes(data)


@st.composite
def corpus(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A payload, and whether it is a plain rendering of a valid event (the fast path's case)."""
    fields = draw(valid_fields())
    obj = as_obj(fields)
    changes = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 1, 1, 2, 3]))
    for _ in range(changes):
        obj = draw(mutated(obj))
    for name in ("session_id", "category_id", "context", "profile", "recommendation_id"):
        if name not in fields and draw(st.integers(0, 3)) == 0:
            obj.append((name, None))  # an explicit null instead of an absent field
    for _, nested in obj:
        if isinstance(nested, Obj):
            nested[:] = draw(st.permutations(nested))
    obj = Obj(draw(st.permutations(obj)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    escape_keys = draw(st.integers(0, 9)) == 0
    payload = Writer(rng, escape_keys).document(obj)
    mangled = draw(st.integers(0, 7)) == 0
    if mangled:
        payload = byte_mutation(rng, payload)
    plain = not (changes or escape_keys or mangled) and int(fields["ts"][:4]) in FAST_YEARS
    return payload, plain


@st.composite
def tombstones(draw: st.DrawFn) -> bytes:
    """A tombstone, rendered many ways, often mutated (into an invalid one, or an event's shape)."""
    fields: dict[str, Any] = {
        "type": ERASE_TYPE,
        "user_id": draw(ids),
        "erasure_id": draw(ids),
        "ts": msgspec.to_builtins(draw(timestamps)),
    }
    obj = as_obj(fields)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        obj = draw(mutated(obj))
    obj = Obj(draw(st.permutations(obj)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    payload = Writer(rng, escape_keys=draw(st.integers(0, 9)) == 0).document(obj)
    if draw(st.integers(0, 7)) == 0:
        payload = byte_mutation(rng, payload)
    return payload


# --- (a) the worker's decoder is the schema ----------------------------------------------------

CORPUS_SETTINGS: Final = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@given(corpus())
@CORPUS_SETTINGS
def test_native_decoder_agrees_with_the_schema(case: tuple[bytes, bool]) -> None:
    payload, plain = case
    native, fast = assert_worker_agrees(payload)
    if isinstance(native, dict):
        event("valid, fast path" if fast is not None else "valid, judged")
    else:
        event("invalid JSON" if native.startswith(("$: Invalid JSON", "$: JSON")) else "invalid")
    if plain and isinstance(native, dict):
        # A valid event written plainly (any key order, whitespace, escapes, nulls) in the fast
        # path's years is the common case: the judge must not be needed for it.
        assert fast is not None, payload


@given(tombstones())
@CORPUS_SETTINGS
def test_native_decoder_agrees_with_the_schema_on_tombstones(payload: bytes) -> None:
    native, fast = assert_worker_agrees(payload)
    assert not is_tombstone(fast), "tombstones are the judge's, never the fast path's"
    event(
        "tombstone"
        if is_tombstone(native)
        else "event"
        if isinstance(native, dict)
        else "invalid tombstone"
        if typed_erase(payload)
        else "invalid"
    )


def test_a_tombstone_is_the_workers_and_refused_at_ingest() -> None:
    erase = Erase(type="erase", user_id="u-42", erasure_id="er-1", ts=NOW)
    payload = encode_erase(erase)
    assert operators.decode_message(payload, NOW_S, SKEW_S) == erase_fields(erase)
    assert operators.decode_event_fast(payload, NOW_S, SKEW_S) is None
    assert isinstance(decode_event(payload, now=NOW), list)  # not an event
    assert "$.type: Invalid enum value 'erase'" in str(ingest_verdict(payload))
    # Far in the future is no reason to drop an erasure (no skew limit for tombstones).
    late = encode_erase(msgspec.structs.replace(erase, ts=NOW + timedelta(days=3650)))
    assert is_tombstone(operators.decode_message(late, NOW_S, SKEW_S))
    # The bulk import's judge takes events only.
    (reason,) = operators.invalid_reasons([payload], NOW_S, SKEW_S)
    assert reason is not None and reason.startswith("$.type: `erase` is a control message")


@given(ts_strings())
@settings(max_examples=500)
def test_every_timestamp_form_is_read_as_the_schema_reads_it(ts: str) -> None:
    payload = json.dumps(
        {"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": ts}
    ).encode()
    # `now` at the end of datetime: no timestamp is in the future
    native, fast = assert_worker_agrees(payload, now_s=253_402_300_799.0)
    event("fast path" if fast else "valid, judged" if isinstance(native, dict) else "invalid")


@given(
    st.floats(min_value=-2e9, max_value=4e9, allow_nan=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
    | st.sampled_from([0.0, 2.5e-6, 3600.0]),
    st.integers(-3, 3),
)
@settings(max_examples=300)
def test_now_and_skew_round_to_microseconds_as_python_does(
    now_s: float, skew_s: float, delta_us: int
) -> None:
    # The event lies at the skew limit to the microsecond, as Python rounds both `now`
    # (datetime.fromtimestamp) and the skew (timedelta(seconds=...)).
    limit = datetime.fromtimestamp(now_s, UTC) + timedelta(seconds=skew_s)
    ts = limit + timedelta(microseconds=delta_us)
    payload = encode_event(Event(event_id="e", user_id="u", item_id="i", type="view", ts=ts))
    native, fast = assert_worker_agrees(payload, now_s, skew_s)
    if FAST_YEARS.start <= ts.year < FAST_YEARS.stop:
        assert (fast is not None) == isinstance(native, dict)


@pytest.mark.parametrize("skew_s", [float("inf"), float("nan"), 1e15])
def test_a_skew_python_cannot_hold_raises_as_in_python(skew_s: float) -> None:
    payload = encode_event(Event(event_id="e", user_id="u", item_id="i", type="view", ts=NOW))
    with pytest.raises((OverflowError, ValueError)) as python:
        decode_event(payload, now=NOW, max_future_skew_s=skew_s)
    with pytest.raises(python.type):
        operators.decode_message(payload, NOW_S, skew_s)
    assert operators.decode_event_fast(payload, NOW_S, skew_s) is None


@pytest.fixture(scope="module")
def hostile_stream() -> list[bytes]:
    """The messages of ``benchmarks/fuzz_stream.py``'s generator, valid and hostile."""
    base = list(iter_dataset_events("taobao", limit=5000))
    stream = HostileStream(base, FUZZ_SEED, now=NOW, dedup_horizon_s=86_400, huge_every=1000)
    messages = []
    for n, msg in enumerate(stream, start=1):
        messages.append(msg.value)
        if n == FUZZ_MESSAGES:
            return messages
    raise AssertionError("the stream is endless")


def test_native_decoder_agrees_on_the_hostile_stream(hostile_stream: list[bytes]) -> None:
    print(f"fuzz_stream seed {FUZZ_SEED}, {len(hostile_stream):,} messages")
    paths: Counter[str] = Counter()
    for payload in hostile_stream:
        native, fast = assert_worker_agrees(payload)
        paths[
            "fast"
            if fast is not None
            else "judge: valid"
            if isinstance(native, dict)
            else "judge: invalid"
        ] += 1
    print(dict(paths))
    assert paths["fast"] > paths["judge: valid"] > 0 and paths["judge: invalid"] > 0


def test_batch_verdicts_are_the_decoders_on_the_hostile_stream(hostile_stream: list[bytes]) -> None:
    """``invalid_reasons`` (one call per batch, ``freshrec import``) judges as the decoder."""
    chunk = hostile_stream[:20_000]
    verdicts = operators.invalid_reasons(chunk, NOW_S, SKEW_S)
    expected = [
        None if isinstance(decoded, dict) else decoded
        for decoded in (operators.decode_message(p, NOW_S, SKEW_S) for p in chunk)
    ]
    assert verdicts == expected
    assert None in verdicts and any(v is not None for v in verdicts)

    class Message:
        def __init__(self, value: bytes | None) -> None:
            self.value = value

    from_messages = operators.invalid_reasons([Message(p) for p in chunk[:500]], NOW_S, SKEW_S)
    assert from_messages == verdicts[:500]
    assert operators.invalid_reasons([Message(None)], NOW_S, SKEW_S) == [
        operators.decode_message(b"", NOW_S, SKEW_S)
    ]


# --- (b) one schema: the ingest API agrees with the worker ------------------------------------


@given(corpus())
@CORPUS_SETTINGS
def test_ingest_validation_agrees_with_the_worker(case: tuple[bytes, bool]) -> None:
    assert_ingest_agrees(case[0])


def test_ingest_validation_agrees_on_the_hostile_stream(hostile_stream: list[bytes]) -> None:
    for payload in hostile_stream:
        assert_ingest_agrees(payload)


@given(tombstones())
@CORPUS_SETTINGS
def test_ingest_refuses_tombstones_and_agrees_on_what_they_became(payload: bytes) -> None:
    assert_ingest_agrees(payload)


# --- (c) the fast path is the common path --------------------------------------------------------


def test_fast_path_takes_every_real_event() -> None:
    events = list(iter_dataset_events("taobao", limit=2000))
    assert len(events) == 2000
    for real in events:
        payload = encode_event(real)
        fast = operators.decode_event_fast(payload, NOW_S, SKEW_S)
        assert fast is not None, payload
        assert_same(fast, event_fields(real), payload)
        # and the same event with its keys reversed, spaced and with explicit nulls
        fields = msgspec.to_builtins(real)
        fields.setdefault("context", None)
        reordered = json.dumps(dict(reversed(fields.items())), indent=1).encode()
        assert_same(
            operators.decode_event_fast(reordered, NOW_S, SKEW_S), event_fields(real), reordered
        )
