"""The event schema: what is accepted, what is rejected and at which JSON path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freshrec.events import (
    EVENT_TYPES,
    Context,
    Erase,
    Event,
    FieldError,
    Profile,
    decode_event,
    decode_message,
    encode_erase,
    encode_event,
    errors_as_reason,
    validate_erase,
    validate_event,
)

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
SKEW_S = 3600.0


def valid_raw(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "event_id": "e-1",
        "user_id": "u-1",
        "item_id": "i-1",
        "type": "view",
        "ts": "2024-06-01T11:59:00Z",
    }
    raw.update(changes)
    return raw


def without(raw: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in names}


def decode(raw: Any) -> Event | list[FieldError]:
    return decode_event(msgspec.json.encode(raw), now=NOW, max_future_skew_s=SKEW_S)


def validate(raw: Any, path: str = "$") -> Event | list[FieldError]:
    return validate_event(raw, now=NOW, max_future_skew_s=SKEW_S, path=path)


def paths(result: Event | list[FieldError]) -> list[str]:
    assert isinstance(result, list), f"expected errors, got {result!r}"
    assert result, "an invalid event must come with at least one reason"
    return [e.path for e in result]


# Both entry points (bytes from the topic, parsed JSON from the API) must agree.
CHECKERS = pytest.mark.parametrize("check", [decode, validate], ids=["decode", "validate"])


# --- valid events ----------------------------------------------------------------------------


@CHECKERS
def test_minimal_event_is_accepted(check) -> None:
    event = check(valid_raw())
    assert event == Event(
        event_id="e-1",
        user_id="u-1",
        item_id="i-1",
        type="view",
        ts=datetime(2024, 6, 1, 11, 59, tzinfo=UTC),
    )
    assert event.ts_s == datetime(2024, 6, 1, 11, 59, tzinfo=UTC).timestamp()


@CHECKERS
def test_full_event_is_accepted(check) -> None:
    raw = valid_raw(
        type="rec_click",
        recommendation_id="rec-9",
        session_id="s-1",
        category_id="c-1",
        ts="2024-06-01T13:30:00+02:00",
        context={
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "device": "mobile",
            "country": "de",
            "region": "Bayern",
            "city": "München",
            "page": "/p/1?x=ü",
            "referrer": "https://example.com/",
        },
        profile={"age": 130, "gender": "f", "occupation": "x", "postal_code": "8", "segment": "a"},
    )
    event = check(raw)
    assert isinstance(event, Event)
    assert event.recommendation_id == "rec-9"
    assert event.context == Context(
        user_agent="Mozilla/5.0 (X11; Linux x86_64)",
        device="mobile",
        country="de",
        region="Bayern",
        city="München",
        page="/p/1?x=ü",
        referrer="https://example.com/",
    )
    assert event.profile == Profile(
        age=130, gender="f", occupation="x", postal_code="8", segment="a"
    )
    assert event.ts == datetime(2024, 6, 1, 11, 30, tzinfo=UTC)


@CHECKERS
@pytest.mark.parametrize(
    "user_id",
    ["a", "x" * 128, "ü" * 128, "用户:42", "a:b*c?[d]", "with space", "emoji-🙂", "ZWJ\u200d"],
)
def test_printable_ids_up_to_128_characters_are_accepted(check, user_id: str) -> None:
    event = check(valid_raw(user_id=user_id))
    assert isinstance(event, Event) and event.user_id == user_id


@CHECKERS
def test_timestamp_exactly_at_the_skew_limit_is_accepted(check) -> None:
    at_limit = (NOW + timedelta(seconds=SKEW_S)).isoformat()
    assert isinstance(check(valid_raw(ts=at_limit)), Event)


@CHECKERS
def test_old_timestamps_are_accepted(check) -> None:
    assert isinstance(check(valid_raw(ts="1970-01-01T00:00:00Z")), Event)


# --- one rule at a time ----------------------------------------------------------------------


@CHECKERS
@pytest.mark.parametrize("event_type", ["click", "VIEW", "", "purchase "])
def test_unknown_type_is_rejected(check, event_type: str) -> None:
    result = check(valid_raw(type=event_type))
    assert paths(result) == ["$.type"]
    assert "Invalid enum value" in result[0].message


@CHECKERS
@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id", "type", "ts"])
def test_missing_required_field_is_rejected(check, name: str) -> None:
    result = check(without(valid_raw(), name))
    assert result == [FieldError(f"$.{name}", "Object missing required field")]


@CHECKERS
@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id"])
def test_null_id_is_rejected(check, name: str) -> None:
    result = check(valid_raw(**{name: None}))
    assert paths(result) == [f"$.{name}"]


@CHECKERS
@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id", "session_id", "category_id"])
def test_id_longer_than_128_characters_is_rejected(check, name: str) -> None:
    result = check(valid_raw(**{name: "x" * 129}))
    assert result == [FieldError(f"$.{name}", "Expected `str` of length <= 128")]


@CHECKERS
@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id"])
def test_empty_id_is_rejected(check, name: str) -> None:
    assert paths(check(valid_raw(**{name: ""}))) == [f"$.{name}"]


@CHECKERS
@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id", "recommendation_id"])
@pytest.mark.parametrize(
    "bad", ["\n", "\r", "\x00", "\x1f", "\x7f", "\x85", "\x9f", "\t"], ids=repr
)
def test_control_characters_in_ids_are_rejected(check, name: str, bad: str) -> None:
    result = check(valid_raw(**{name: f"id{bad}x"}))
    assert result == [FieldError(f"$.{name}", "Expected printable text without control characters")]


# Regression (found by these tests, fixed): the patterns at freshrec/events.py:32 (`_ID_PATTERN`) and :36 (`CountryCode`)
# end in `$`, which in Python's `re` (used by msgspec) also matches *before a final newline*:
# "alice\n" passes as a user id (into Redis keys, Kafka keys and logs) and "de\n" as a country.
# `\Z` (or no anchor with `fullmatch` semantics) is what the rule means.
@CHECKERS
@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"user_id": "alice\n"}, "$.user_id"),
        ({"context": {"country": "de\n"}}, "$.context.country"),
    ],
    ids=["user_id", "country"],
)
def test_trailing_newline_is_rejected(check, changes: dict[str, Any], path: str) -> None:
    assert paths(check(valid_raw(**changes))) == [path]


@CHECKERS
@pytest.mark.parametrize("ts", ["2024-06-01T11:59:00", "2024-06-01T11:59:00.123456"])
def test_naive_timestamp_is_rejected(check, ts: str) -> None:
    result = check(valid_raw(ts=ts))
    assert result == [FieldError("$.ts", "Expected `datetime` with a timezone component")]


@CHECKERS
@pytest.mark.parametrize("ts", ["yesterday", "2024-13-01T00:00:00Z", ""])
def test_unparseable_timestamp_is_rejected(check, ts: str) -> None:
    assert paths(check(valid_raw(ts=ts))) == ["$.ts"]


@CHECKERS
def test_timestamp_beyond_the_future_skew_is_rejected(check) -> None:
    too_late = NOW + timedelta(seconds=SKEW_S + 1)
    result = check(valid_raw(ts=too_late.isoformat()))
    assert paths(result) == ["$.ts"]
    assert "more than 3600 s in the future" in result[0].message


def test_future_skew_is_configurable() -> None:
    payload = encode_event(
        Event(event_id="e", user_id="u", item_id="i", type="view", ts=NOW + timedelta(seconds=10))
    )
    assert isinstance(decode_event(payload, now=NOW, max_future_skew_s=10), Event)
    assert paths(decode_event(payload, now=NOW, max_future_skew_s=9)) == ["$.ts"]


@CHECKERS
@pytest.mark.parametrize("event_type", ["rec_click", "rec_impression"])
def test_recommendation_feedback_without_recommendation_id_is_rejected(
    check, event_type: str
) -> None:
    result = check(valid_raw(type=event_type))
    assert paths(result) == ["$.recommendation_id"]
    assert f"`{event_type}`" in result[0].message
    assert isinstance(check(valid_raw(type=event_type, recommendation_id="r-1")), Event)


@CHECKERS
@pytest.mark.parametrize("country", ["DEU", "D", "", "D1", "1D", "Ä", "\nde"])
def test_bad_country_code_is_rejected(check, country: str) -> None:
    result = check(valid_raw(context={"country": country}))
    assert paths(result) == ["$.context.country"]


@CHECKERS
def test_country_error_message_says_what_is_expected(check) -> None:
    result = check(valid_raw(context={"country": "DEU"}))
    assert result == [
        FieldError("$.context.country", "Expected an ISO 3166-1 alpha-2 country code, e.g. `DE`")
    ]


@CHECKERS
@pytest.mark.parametrize(
    ("profile", "path"),
    [
        ({"age": -1}, "$.profile.age"),
        ({"age": 131}, "$.profile.age"),
        ({"gender": 5}, "$.profile.gender"),
    ],
)
def test_bad_profile_is_rejected_at_the_nested_path(check, profile, path: str) -> None:
    assert paths(check(valid_raw(profile=profile))) == [path]


@CHECKERS
@pytest.mark.parametrize("raw", [[], "event", 42, None, True])
def test_non_object_is_rejected_at_the_root(check, raw: Any) -> None:
    assert paths(check(raw)) == ["$"]


# Regression (found by these tests, fixed): `Event`, `Context` and `Profile` do not set `forbid_unknown_fields=True`, so
# msgspec silently drops unknown fields on both fast paths (freshrec/events.py:61 `_decoder`,
# and `msgspec.convert` in `validate_event`); the "Object contains unknown field" branch is only
# reached when some *other* field is also invalid, and never for nested objects.
@CHECKERS
@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (valid_raw(recomendation_id="r-1"), "$.recomendation_id"),
        (valid_raw(context={"bogus": "x"}), "$.context.bogus"),
    ],
    ids=["top-level", "in-context"],
)
def test_unknown_field_is_rejected(check, raw: dict[str, Any], path: str) -> None:
    assert paths(check(raw)) == [path]


@CHECKERS
def test_unknown_field_is_reported_next_to_other_errors(check) -> None:
    result = check(valid_raw(bogus=1, user_id=""))
    assert sorted(paths(result)) == ["$.bogus", "$.user_id"]
    assert FieldError("$.bogus", "Object contains unknown field") in result


# --- several errors, batch paths ---------------------------------------------------------------


@CHECKERS
def test_every_bad_field_is_reported_at_once(check) -> None:
    raw = without(
        valid_raw(
            user_id="x" * 200,
            item_id="a\nb",
            type="click",
            ts="2024-06-01T11:59:00",
            context={"country": "DEU"},
        ),
        "event_id",
    )
    result = check(raw)
    assert sorted(paths(result)) == sorted(
        ["$.event_id", "$.user_id", "$.item_id", "$.type", "$.ts", "$.context.country"]
    )


@CHECKERS
def test_both_semantic_errors_are_reported_at_once(check) -> None:
    future = (NOW + timedelta(days=1)).isoformat()
    result = check(valid_raw(type="rec_click", ts=future))
    assert sorted(paths(result)) == ["$.recommendation_id", "$.ts"]


def test_batch_paths_carry_the_index() -> None:
    batch = [valid_raw(), valid_raw(), valid_raw(), valid_raw(user_id="u\nx")]
    results = [validate(raw, path=f"$[{i}]") for i, raw in enumerate(batch)]
    assert all(isinstance(r, Event) for r in results[:3])
    assert results[3] == [
        FieldError("$[3].user_id", "Expected printable text without control characters")
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (without(valid_raw(), "item_id"), ["$[7].item_id"]),
        (valid_raw(context={"country": "XYZ"}), ["$[7].context.country"]),
        (valid_raw(type="rec_click"), ["$[7].recommendation_id"]),
        (valid_raw(ts="2030-01-01T00:00:00Z"), ["$[7].ts"]),
        ("not an object", ["$[7]"]),
    ],
)
def test_batch_paths_for_every_kind_of_error(raw: Any, expected: list[str]) -> None:
    assert paths(validate(raw, path="$[7]")) == expected


def test_errors_as_reason_lists_every_error() -> None:
    reason = errors_as_reason([FieldError("$.a", "bad"), FieldError("$.b", "worse")])
    assert reason == "$.a: bad; $.b: worse"


def test_invalid_json_is_an_error_at_the_root() -> None:
    result = decode_event(b'{"event_id": ', now=NOW)
    assert paths(result) == ["$"]
    assert result[0].message.startswith("Invalid JSON")


# Regression (found by these tests, fixed): freshrec/events.py:176 catches only `msgspec.DecodeError`, but msgspec raises
# `RecursionError` for JSON nested deeper than ~1000 levels (found by hand; `binary()` never
# builds it). A 1 KB message of `[` on the events topic raises out of `decode_event`, through
# `kafka_io.decode_message`, and crashes the worker -- again after every restart (poison pill).
@pytest.mark.parametrize(
    "payload",
    [b"[" * 1000, b'{"context": ' + b'{"a": ' * 1000],
    ids=["arrays", "objects"],
)
def test_deeply_nested_json_is_rejected_not_raised(payload: bytes) -> None:
    result = decode_event(payload, now=NOW)
    assert paths(result) == ["$"]


# --- properties --------------------------------------------------------------------------------

# Printable text as the schema defines it: no C0/C1 controls (category Cc), no lone surrogates.
printable = st.characters(exclude_categories=("Cc", "Cs"))
ids = st.text(printable, min_size=1, max_size=128)
short_texts = st.text(printable, min_size=1, max_size=256)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 31), timezones=offsets
)
contexts = st.builds(
    Context,
    user_agent=st.none() | st.text(printable, min_size=1, max_size=2048),
    device=st.none() | short_texts,
    country=st.none() | st.from_regex(r"\A[A-Za-z]{2}\Z"),
    region=st.none() | short_texts,
    city=st.none() | short_texts,
    page=st.none() | st.text(printable, min_size=1, max_size=300),
    referrer=st.none() | st.text(printable, min_size=1, max_size=300),
)
profiles = st.builds(
    Profile,
    age=st.none() | st.integers(0, 130),
    gender=st.none() | short_texts,
    occupation=st.none() | short_texts,
    postal_code=st.none() | short_texts,
    segment=st.none() | short_texts,
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    needs_rec = event_type in ("rec_click", "rec_impression")
    return Event(
        event_id=draw(ids),
        user_id=draw(ids),
        item_id=draw(ids),
        type=event_type,
        ts=draw(timestamps),
        session_id=draw(st.none() | ids),
        category_id=draw(st.none() | ids),
        context=draw(st.none() | contexts),
        profile=draw(st.none() | profiles),
        recommendation_id=draw(ids) if needs_rec else draw(st.none() | ids),
    )


FAR_NOW = datetime(2101, 1, 1, tzinfo=UTC)


@given(events())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_decode_inverts_encode(event: Event) -> None:
    payload = encode_event(event)
    decoded = decode_event(payload, now=FAR_NOW)
    assert decoded == event
    assert encode_event(decoded) == payload
    # The API's path (parsed JSON) accepts it too.
    assert validate_event(msgspec.json.decode(payload), now=FAR_NOW, max_future_skew_s=0) == event


def assert_event_or_reasons(result: object) -> None:
    if isinstance(result, Event):
        # Whatever is accepted is canonical and stays accepted.
        assert decode_event(encode_event(result), now=NOW, max_future_skew_s=SKEW_S) == result
        return
    assert isinstance(result, list) and result
    for error in result:
        assert isinstance(error, FieldError)
        assert error.path.startswith("$") and error.message


@given(st.binary(max_size=512))
def test_decode_never_raises_on_arbitrary_bytes(payload: bytes) -> None:
    assert_event_or_reasons(decode_event(payload, now=NOW, max_future_skew_s=SKEW_S))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from([f.name for f in msgspec.structs.fields(Event)])


@given(
    st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=6),
    st.booleans(),
)
def test_decode_never_raises_on_arbitrary_json_objects(
    changes: dict[str, Any], start_valid: bool
) -> None:
    raw = {**valid_raw(), **changes} if start_valid else changes
    assert_event_or_reasons(decode(raw))
    assert_event_or_reasons(validate(raw))


# --- the tombstone: a message of the topic, not an event ----------------------------------


def erase_raw(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "erase",
        "user_id": "u-1",
        "erasure_id": "er-1",
        "ts": "2024-06-01T11:59:00Z",
    }
    raw.update(changes)
    return raw


def test_a_tombstone_round_trips_and_is_no_event() -> None:
    erase = Erase(type="erase", user_id="u-1", erasure_id="er-1", ts=NOW)
    payload = encode_erase(erase)
    assert decode_message(payload, now=NOW) == erase
    assert paths(decode_event(payload, now=NOW)) == [
        "$.event_id",
        "$.item_id",
        "$.type",
        "$.erasure_id",
    ]
    # Events decode as before.
    event = Event(event_id="e", user_id="u", item_id="i", type="view", ts=NOW)
    assert decode_message(encode_event(event), now=NOW) == event


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"erasure_id": None}, [FieldError("$.erasure_id", "Expected `str`, got `null`")]),
        (
            {"user_id": "a\nb"},
            [FieldError("$.user_id", "Expected printable text without control characters")],
        ),
        (
            {"ts": "2024-06-01T11:59:00"},
            [FieldError("$.ts", "Expected `datetime` with a timezone component")],
        ),
        ({"item_id": "i"}, [FieldError("$.item_id", "Object contains unknown field")]),
    ],
)
def test_a_bad_tombstone_says_what_is_wrong(
    changes: dict[str, Any], expected: list[FieldError]
) -> None:
    result = decode_message(msgspec.json.encode(erase_raw(**changes)), now=NOW)
    assert result == expected
    assert validate_erase(erase_raw(**changes)) == expected


def test_only_an_object_typed_erase_is_judged_as_a_tombstone() -> None:
    missing = decode_message(msgspec.json.encode({"user_id": "u"}), now=NOW)
    assert "$.event_id" in paths(missing)  # an event's reasons
    tombstone = decode_message(msgspec.json.encode(without(erase_raw(), "ts")), now=NOW)
    assert tombstone == [FieldError("$.ts", "Object missing required field")]
    # A tombstone far in the future is still one (an erasure is never dropped for a clock).
    late = decode_message(msgspec.json.encode(erase_raw(ts="2999-01-01T00:00:00Z")), now=NOW)
    assert isinstance(late, Erase)
