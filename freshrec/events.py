"""The messages of the events topic: interaction events, and the tombstones that erase a user.

An event is validated field by field so a client gets every problem of a bad event at once
(``$.user_id: Expected `str` of length <= 128``), not only the first. The same validator runs
in the ingest API and in the dataflow's decoder, so anything that reaches Kafka by another
path (a replay, a misbehaving producer) is held to the same rules and dead-lettered if not.

The topic also carries one control message, :class:`Erase` (``"type": "erase"``): produced
only by ``DELETE /v1/users/{id}`` (and the merge of an anonymous id), keyed by the user like
their events, so it lands in the user's partition after everything they did before it. The
worker's decoder (:func:`decode_message`) accepts it; the ingest API and the bulk import, which
judge events only, refuse it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec

EventType = Literal["view", "add_to_cart", "purchase", "favourite", "rec_impression", "rec_click"]
EVENT_TYPES: Final[tuple[str, ...]] = (
    "view",
    "add_to_cart",
    "purchase",
    "favourite",
    "rec_impression",
    "rec_click",
)
#: Events that express interest in an item and so train the model and fill the user's window.
INTERACTION_TYPES: Final[frozenset[str]] = frozenset(
    {"view", "add_to_cart", "purchase", "favourite", "rec_click"}
)

# Printable, no control characters (C0, DEL, C1): ids end up in Redis keys, Kafka keys and
# logs, where a newline or NUL is an injection vector rather than an identifier.
# `$(?!\n)`, not plain `$` (which also matches before a final newline) nor `\Z` (which
# JSON Schema / ECMAScript regexes, hence the OpenAPI docs, do not know).
_ID_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]+$(?!\n)"
_COUNTRY_PATTERN: Final = r"^[A-Za-z]{2}$(?!\n)"
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_ID_PATTERN)]
ShortText = Annotated[str, msgspec.Meta(max_length=256, pattern=_ID_PATTERN)]
LongText = Annotated[str, msgspec.Meta(max_length=2048, pattern=_ID_PATTERN)]
CountryCode = Annotated[str, msgspec.Meta(pattern=_COUNTRY_PATTERN)]


class Context(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Where and how the event happened; every field optional."""

    user_agent: LongText | None = None
    device: ShortText | None = None
    country: CountryCode | None = None
    region: ShortText | None = None
    city: ShortText | None = None
    page: LongText | None = None
    referrer: LongText | None = None


class Profile(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """What the shop knows of a user up front; used for cold start."""

    age: Annotated[int, msgspec.Meta(ge=0, le=130)] | None = None
    gender: ShortText | None = None
    occupation: ShortText | None = None
    postal_code: ShortText | None = None
    segment: ShortText | None = None


class Event(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """One interaction of a user with an item."""

    event_id: Id
    user_id: Id
    item_id: Id
    type: EventType
    ts: Annotated[datetime, msgspec.Meta(tz=True)]
    session_id: Id | None = None
    category_id: Id | None = None
    context: Context | None = None
    profile: Profile | None = None
    recommendation_id: Id | None = None

    @property
    def ts_s(self) -> float:
        """Event time as unix seconds."""
        return self.ts.timestamp()


ERASE_TYPE: Final = "erase"


class Erase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tombstone: forget the user as of here (their events before it; later ones start anew).

    ``erasure_id`` names the request, so its completion can be looked up
    (``GET /v1/erasures/{erasure_id}``); ``ts`` is when it was requested. Unlike an event's,
    ``ts`` is not held to the future-skew limit: an erasure is never dead-lettered for a clock.
    """

    type: Literal["erase"]
    user_id: Id
    erasure_id: Id
    ts: Annotated[datetime, msgspec.Meta(tz=True)]


class FieldError(msgspec.Struct, frozen=True):
    """One reason an event was rejected: a JSON path and a message."""

    path: str
    message: str


_PATTERN_MESSAGES: Final = {
    _ID_PATTERN.replace("\\", "\\\\"): "Expected printable text without control characters",
    _COUNTRY_PATTERN.replace(
        "\\", "\\\\"
    ): "Expected an ISO 3166-1 alpha-2 country code, e.g. `DE`",
}
_FIELD_TYPES: Final = {f.name: f.type for f in msgspec.structs.fields(Event)}
_REQUIRED: Final = tuple(f.name for f in msgspec.structs.fields(Event) if f.required)
_ERASE_FIELD_TYPES: Final = {f.name: f.type for f in msgspec.structs.fields(Erase)}
_ERASE_REQUIRED: Final = tuple(f.name for f in msgspec.structs.fields(Erase) if f.required)
_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Event)
_erase_decoder: Final = msgspec.json.Decoder(Erase)


def _field_error(name: str, exc: msgspec.ValidationError) -> FieldError:
    # msgspec reports "... - at `$`" relative to the converted value; re-anchor at the field.
    message = str(exc)
    path = f"$.{name}"
    if " - at `$" in message:
        message, _, rest = message.rpartition(" - at `$")
        path = f"$.{name}{rest.rstrip('`')}"
    if message.startswith("Object contains unknown field `"):
        unknown = message.split("`")[1]
        message = "Object contains unknown field"
        path = f"{path}.{unknown}"
    if "matching regex" in message:
        message = _PATTERN_MESSAGES.get(message.partition("regex ")[2].strip("'"), message)
    return FieldError(path, message)


def validate_event(
    raw: Any, *, now: datetime, max_future_skew_s: float, path: str = "$"
) -> Event | list[FieldError]:
    """Return the event, or every reason it is invalid (one per offending field)."""
    if not isinstance(raw, dict):
        return [FieldError(path, f"Expected `object`, got `{type(raw).__name__}`")]
    try:  # fast path: a valid event converts in one call
        event = msgspec.convert(raw, Event)
    except msgspec.ValidationError:
        pass
    else:
        return _check_semantics(event, now=now, max_future_skew_s=max_future_skew_s, path=path)
    return _field_errors(raw, _REQUIRED, _FIELD_TYPES, path) or [FieldError(path, "Invalid event")]


def validate_erase(raw: Any, *, path: str = "$") -> Erase | list[FieldError]:
    """Return the tombstone, or every reason it is invalid (one per offending field)."""
    if not isinstance(raw, dict):
        return [FieldError(path, f"Expected `object`, got `{type(raw).__name__}`")]
    try:
        return msgspec.convert(raw, Erase)
    except msgspec.ValidationError:
        pass
    errors = _field_errors(raw, _ERASE_REQUIRED, _ERASE_FIELD_TYPES, path)
    return errors or [FieldError(path, "Invalid erase message")]


def _field_errors(
    raw: dict[Any, Any], required: tuple[str, ...], types: dict[str, Any], path: str
) -> list[FieldError]:
    """Every reason the object is not of the struct whose fields are ``types``."""
    errors: list[FieldError] = []
    for name in required:
        if name not in raw:
            errors.append(FieldError(f"{path}.{name}", "Object missing required field"))
    for name, value in raw.items():
        if name not in types:
            errors.append(FieldError(f"{path}.{name}", "Object contains unknown field"))
            continue
        try:
            # strict: JSON already gave each value its type; "ts": 1700000000 is not RFC 3339.
            msgspec.convert(value, types[name])
        except msgspec.ValidationError as exc:
            err = _field_error(name, exc)
            errors.append(FieldError(path + err.path[1:], err.message))
    # Empty when field by field found nothing although the whole did not convert.
    return errors


def _check_semantics(
    event: Event, *, now: datetime, max_future_skew_s: float, path: str
) -> Event | list[FieldError]:
    errors: list[FieldError] = []
    if event.ts - now > timedelta(seconds=max_future_skew_s):
        errors.append(
            FieldError(
                f"{path}.ts",
                f"Timestamp is more than {max_future_skew_s:g} s in the future "
                f"(server time {now.isoformat()})",
            )
        )
    if event.type in ("rec_impression", "rec_click") and event.recommendation_id is None:
        errors.append(
            FieldError(
                f"{path}.recommendation_id",
                f"Required for `{event.type}` events (links feedback to what was served)",
            )
        )
    return errors or event


def encode_event(event: Event) -> bytes:
    """Canonical JSON of an event: what goes onto the events topic."""
    return _encoder.encode(event)


def encode_erase(erase: Erase) -> bytes:
    """Canonical JSON of a tombstone (produced keyed by its user, like their events)."""
    return _encoder.encode(erase)


def decode_event(
    payload: bytes, *, now: datetime | None = None, max_future_skew_s: float = 3600
) -> Event | list[FieldError]:
    """Decode one event from the topic, or the reasons it cannot be used."""
    now = datetime.now(UTC) if now is None else now
    try:
        # Fast path: canonical, valid JSON straight into the Struct.
        event = _decoder.decode(payload)
    # msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8 inside a string.
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        try:
            raw = msgspec.json.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as inner:
            return [FieldError("$", f"Invalid JSON: {_json_error(inner)}")]
        except RecursionError:  # ~1,000 nested brackets: refuse, never crash the worker
            return [FieldError("$", "JSON nested too deeply")]
        return validate_event(raw, now=now, max_future_skew_s=max_future_skew_s)
    return _check_semantics(event, now=now, max_future_skew_s=max_future_skew_s, path="$")


def decode_message(
    payload: bytes, *, now: datetime | None = None, max_future_skew_s: float = 3600
) -> Event | Erase | list[FieldError]:
    """Decode one message of the events topic: an event, a tombstone, or why it is neither.

    An object whose ``type`` is ``"erase"`` is judged as a tombstone; anything else as an
    event, with :func:`decode_event`'s reasons.
    """
    result = decode_event(payload, now=now, max_future_skew_s=max_future_skew_s)
    if isinstance(result, Event):
        return result
    unreadable = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
    try:  # the rare path: an invalid event, or a tombstone
        return _erase_decoder.decode(payload)
    except unreadable:
        pass
    try:
        raw = msgspec.json.decode(payload)
    except unreadable:
        return result
    if isinstance(raw, dict) and raw.get("type") == ERASE_TYPE:
        return validate_erase(raw)
    return result


#: An event as flat values, cheap to convert natively: ``(event_id, user_id, item_id, type,
#: ts_us, ts_s, utc_offset_s, session_id, category_id, context, profile, recommendation_id)``;
#: context and profile are tuples in their fields' order (``msgspec.structs.astuple``).
EventFields = tuple[
    str,
    str,
    str,
    str,
    int,
    float,
    int,
    str | None,
    str | None,
    tuple[str | None, ...] | None,
    tuple[int | str | None, ...] | None,
    str | None,
]
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_ONE_S: Final = timedelta(seconds=1)


#: A tombstone as flat values: ``(user_id, erasure_id, ts_us)``.
EraseFields = tuple[str, str, int]


def decode_message_fields(
    payload: bytes, now_us: int, max_future_skew_s: float
) -> EventFields | EraseFields | str:
    """:func:`decode_message` as the judge of the native decoder (``operators/src/events.rs``).

    Called for every payload its fast path is not sure of; ``now_us`` is the server time in
    unix microseconds. Returns the event as :data:`EventFields` (``ts`` as exact unix
    microseconds, ``ts.timestamp()`` and the offset written in the string, in seconds), a
    tombstone as :data:`EraseFields`, or the dead-letter reason (:func:`errors_as_reason`).
    """
    now = _EPOCH + timedelta(microseconds=now_us)
    result = decode_message(payload, now=now, max_future_skew_s=max_future_skew_s)
    if isinstance(result, list):
        return errors_as_reason(result)
    if isinstance(result, Erase):
        return (result.user_id, result.erasure_id, (result.ts - _EPOCH) // _ONE_US)
    ts = result.ts
    offset = ts.utcoffset()
    assert offset is not None  # msgspec.Meta(tz=True): every accepted ts carries a time zone
    return (
        result.event_id,
        result.user_id,
        result.item_id,
        result.type,
        (ts - _EPOCH) // _ONE_US,
        ts.timestamp(),
        offset // _ONE_S,
        result.session_id,
        result.category_id,
        None if result.context is None else msgspec.structs.astuple(result.context),
        None if result.profile is None else msgspec.structs.astuple(result.profile),
        result.recommendation_id,
    )


def _json_error(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 in a string ({exc.reason})"
    return str(exc)


def errors_as_reason(errors: list[FieldError]) -> str:
    """One line listing every error, for dead-letter records and logs."""
    return "; ".join(f"{e.path}: {e.message}" for e in errors)


#: Largest payload (and key) copied into a dead letter. Producers refuse records over
#: ``message.max.bytes`` (1,000,000 by default) and a bigger one would stop the writer, so a
#: larger message is dead-lettered cut to this size, with its full size in a header.
DEAD_LETTER_MAX_PAYLOAD_BYTES: Final = 990_000
DEAD_LETTER_MAX_KEY_BYTES: Final = 1024


def bounded_dead_letter(
    payload: bytes, key: bytes | None
) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """Payload and key cut to what a dead letter can carry, and headers saying what was cut."""
    headers: list[tuple[str, bytes]] = []
    if len(payload) > DEAD_LETTER_MAX_PAYLOAD_BYTES:
        headers.append(("payload_truncated_from", str(len(payload)).encode()))
        payload = payload[:DEAD_LETTER_MAX_PAYLOAD_BYTES]
    if key is not None and len(key) > DEAD_LETTER_MAX_KEY_BYTES:
        headers.append(("key_truncated_from", str(len(key)).encode()))
        key = key[:DEAD_LETTER_MAX_KEY_BYTES]
    return payload, key, headers
