"""The native `Enricher` (operators/src/enrich.rs) against the rules module it caches.

`operators/enrich.py` stays the rules module (serving calls it directly), so it is the oracle:
for any context and any timestamp the native answer equals `context_from_request`'s, field by
field and in its segment key, whether the caches hit, miss or have just evicted the entry.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from zoneinfo import _common

import msgspec
import pycountry
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.events import EVENT_TYPES, Context, Event
from operators import Enricher
from operators.enrich import (
    SUBDIVISION_ZONE,
    _zone,
    context_from_request,
    enrich,
    local_time,
    normalise_country,
    normalise_region,
    segment_key,
    timezone_name,
)
from tests.operators.test_enrich import UA

EPOCH = datetime(1970, 1, 1)
MICROSECOND = timedelta(microseconds=1)
SEED = 20260717
#: Python's datetime range in seconds since 1970-01-01 (0001-01-01 to 9999-12-31T23:59:59).
FIRST_S, LAST_S = -62_135_596_800, 253_402_300_799

Answer = tuple[str, str | None, str | None, str, int, bool, int, str]


def split(ts: datetime) -> tuple[int, int]:
    """(UTC microseconds, offset in seconds) of a timestamp, as the event decoder gives them.

    Integer arithmetic on the wall clock, so it holds at the ends of the calendar too, where
    converting to UTC would overflow. A naive timestamp is UTC, as in `local_time`.
    """
    offset = ts.utcoffset() or timedelta(0)
    wall_us = (ts.replace(tzinfo=None) - EPOCH) // MICROSECOND
    return wall_us - offset // MICROSECOND, offset // timedelta(seconds=1)


def oracle(
    ua: str | None, device: str | None, country: str | None, region: str | None, ts: datetime
) -> Answer:
    ctx = context_from_request(ua, device, country, region, ts)
    return (*dataclasses.astuple(ctx), segment_key(ctx))


def native(
    enricher: Enricher,
    ua: str | None,
    device: str | None,
    country: str | None,
    region: str | None,
    ts: datetime,
) -> Answer:
    return enricher.enrich(ua, device, country, region, *split(ts))


def oracle_wall_us(country: str | None, region: str | None, ts: datetime) -> int:
    """`local_time`'s wall clock in microseconds since 1970-01-01, for the raw place."""
    code = normalise_country(country)
    local = local_time(ts, code, normalise_region(region, code))
    return (local.replace(tzinfo=None) - EPOCH) // MICROSECOND


# --- the zones a place can have, and their transitions ---------------------------------------


@functools.cache
def place_of_zone() -> dict[str, tuple[str, str | None]]:
    """Every zone `timezone_name` can answer, with one (country, region) that gets it."""
    places: dict[str, tuple[str, str | None]] = {}
    for code, zone in SUBDIVISION_ZONE.items():
        places.setdefault(zone, (code.partition("-")[0], code))
    for country in pycountry.countries:
        places.setdefault(timezone_name(country.alpha_2), (country.alpha_2, None))
    return places


@functools.cache
def transitions(zone: str) -> tuple[int, ...]:
    """UTC seconds of the zone's transitions: the TZif table, then some of its POSIX rule's
    (found by scanning days and bisecting seconds) far into the future."""
    if zone == "UTC":
        return ()
    path = resources.files("tzdata").joinpath("zoneinfo", *zone.split("/"))
    with path.open("rb") as f:
        _idx, table, _utcoff, _isdst, _abbr, tz_string = _common.load_data(f)
    # Some tables start with a "big bang" far before year 1.
    found = [t for t in table if FIRST_S + 2 * 86_400 <= t <= LAST_S - 2 * 86_400]
    if tz_string and b"," in tz_string:  # a rule with daylight saving time
        zi = _zone(zone)

        def offset(t: int) -> timedelta | None:
            return datetime.fromtimestamp(t, zi).utcoffset()

        for year in (2031, 2100, 2401, 5000, 9999):
            start = int((datetime(year, 1, 1) - EPOCH).total_seconds())
            days = [start + 86_400 * d for d in range(366 if year < 9999 else 364)]
            for a, b in zip(days, days[1:], strict=False):
                if offset(a) != offset(b):
                    while b - a > 1:
                        mid = (a + b) // 2
                        a, b = (mid, b) if offset(mid) == offset(a) else (a, mid)
                    found.append(b)
    return tuple(found)


# --- every transition of every zone, exactly ---------------------------------------------------


def test_local_time_equals_python_at_every_transition_of_every_reachable_zone() -> None:
    enricher = Enricher()
    checked = 0
    for zone, (country, region) in sorted(place_of_zone().items()):
        for t in transitions(zone):
            for s in (t - 1, t, t + 1):
                ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=s)
                got = enricher.local_time_us(country, region, s * 1_000_000, 0)
                assert got == oracle_wall_us(country, region, ts), (zone, ts)
                checked += 1
    assert len(place_of_zone()) > 300 and checked > 40_000
    assert enricher.stats()["zones"] == len(place_of_zone())


# --- random events ---------------------------------------------------------------------------

MORE_UA = [
    "Mozilla/5.0 (Linux; Android 12; BRAVIA 4K VH2 Build/STT1.211025.001.Z4) AppleWebKit/537.36"
    " (KHTML, like Gecko) Chrome/108.0.0.0 Safari/537.36",
    "Roku/DVP-12.0 (12.0.0.4182-88)",
    "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/87.0 "
    "Safari/537.36 WebAppManager",
    "Mozilla/5.0 (Nintendo Switch; WifiWebAuthApplet) AppleWebKit/606.4 (KHTML, like Gecko) "
    "NF/6.0.1.15.4 NintendoBrowser/5.1.0.20393",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/120.0.0.0 Safari/537.36 Edge/44.18363.8131",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 11; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Go-http-client/2.0",
    "PostmanRuntime/7.37.3",
    "Mozilla/5.0 (Linux; U; Android 4.0.3; ko-kr; LG-L160L Build/IML74K) AppleWebkit/534.30 "
    "(KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
    "Mozilla/5.0 (Mobile; rv:48.0; A405DL) Gecko/48.0 Firefox/48.0 KAIOS/2.5",
    "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en) Presto/2.5.25",
    "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
    "Mozilla/5.0 (X11; FreeBSD amd64; rv:124.0) Gecko/20100101 Firefox/124.0",
    "MyShopApp/5.2.1 (iPhone; iOS 17.4; Scale/3.00)",
    "okhttp/4.12.0",
    "",
    "   ",
    "-",
    "Mozilla/5.0",
    "x" * 2048,
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124",
]
user_agents = st.one_of(
    st.sampled_from(list(UA.values()) + MORE_UA),
    st.text(st.characters(codec="utf-8"), max_size=80),
)
devices = st.one_of(
    st.sampled_from(
        ["Mobile", "phone", "MOBILE_PHONE", "mobile-web", " Tablet ", "iPad", "desktop", "PC",
         "crawler", "Smart_TV", "console", "fridge", "unknown", "N/A", "", "  ", "null", "Ｍobile"]
    ),
    st.text(st.characters(codec="utf-8"), max_size=20),
)  # fmt: skip
countries = st.one_of(
    st.sampled_from(
        ["DE", "de", "De", " fr ", "US", "us", "UK", "uk", "GB", "AU", "BR", "ru", "CA", "ES", "KI",
         "BV", "AQ", "XK", "XX", "ZZ", "EU", "", "DEU", "D", "ＤＥ", "de\n", "ǅ"]
    ),
    st.sampled_from([c.alpha_2 for c in pycountry.countries]).map(
        lambda c: c.lower() if len(c) % 2 else c
    ),
    st.text(st.characters(codec="utf-8"), max_size=4),
)  # fmt: skip
regions = st.one_of(
    st.sampled_from(
        sorted(SUBDIVISION_ZONE)
        + ["CA", "ca", "California", "  new   york ", "us-ny", "bayern", "Baden-Württemberg",
           "baden-wurttemberg", "sao paulo", "São Paulo", "Cataluña", "comunidad de madrid",
           "Madrid", "england", "Bavaria", "île-de-france", "côte d'azur", "TF", "ES-TF", "NSW",
           "wa", "Nowhere", "", "   ", "x", "ＣＡ", "straße", "ǅemal"]
    ),
    st.text(st.characters(codec="utf-8"), max_size=30),
)  # fmt: skip

# Offsets as written in the ts string (minutes, sometimes seconds), up to just under a day.
offsets = st.one_of(
    st.integers(-24 * 60 + 1, 24 * 60 - 1).map(lambda m: m * 60),
    st.integers(-86_399, 86_399),
)
walls = st.one_of(
    st.datetimes(),
    st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2040, 1, 1)),
    st.datetimes(max_value=datetime(1, 1, 3)),  # the first days of the calendar
    st.datetimes(min_value=datetime(9999, 12, 29)),  # the last ones
)
fixed_offset_timestamps = st.builds(
    lambda wall, offset_s: wall.replace(tzinfo=timezone(timedelta(seconds=offset_s))),
    walls,
    offsets,
)


@st.composite
def near_transitions(draw: st.DrawFn) -> tuple[str, str | None, datetime]:
    """A place and a moment a few seconds to hours around one of its zone's transitions."""
    places = place_of_zone()
    zone = draw(st.sampled_from(sorted(z for z in places if transitions(z))))
    country, region = places[zone]
    t = draw(st.sampled_from(transitions(zone)))
    delta = draw(st.sampled_from([-7200, -3601, -3600, -1, 0, 1, 59, 1800, 3599, 3600, 86_400]))
    offset_s = draw(offsets | st.just(0))
    utc = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=t + delta)
    try:
        return country, region, utc.astimezone(timezone(timedelta(seconds=offset_s)))
    except OverflowError:
        return country, region, utc


@st.composite
def requests(draw: st.DrawFn) -> tuple[str | None, str | None, str | None, str | None, datetime]:
    ua = draw(st.none() | user_agents)
    device = draw(st.none() | devices)
    country: str | None
    if draw(st.booleans()):
        code, region, ts = draw(near_transitions())
        country = draw(st.sampled_from([code, code.lower(), f" {code} "]))
        if region is not None:
            region = draw(st.sampled_from([region, region.lower(), region.partition("-")[2]]))
    else:
        country = draw(st.none() | countries)
        region = draw(st.none() | regions)
        ts = draw(fixed_offset_timestamps | st.datetimes(timezones=st.timezones()))
    return ua, device, country, region, ts


# One enricher across examples, as in the flow: later examples hit what earlier ones cached.
SHARED = Enricher()


@settings(max_examples=400, deadline=None, print_blob=True)
@given(requests())
def test_native_context_equals_context_from_request(
    request: tuple[str | None, str | None, str | None, str | None, datetime],
) -> None:
    ua, device, country, region, ts = request
    expected = oracle(ua, device, country, region, ts)
    assert native(SHARED, ua, device, country, region, ts) == expected
    assert native(SHARED, ua, device, country, region, ts) == expected  # now from the caches
    assert SHARED.local_time_us(country, region, *split(ts)) == oracle_wall_us(country, region, ts)
    assert native(Enricher(1), ua, device, country, region, ts) == expected  # cold


events = st.builds(
    Event,
    event_id=st.just("e1"),
    user_id=st.just("u1"),
    item_id=st.just("i1"),
    type=st.sampled_from(EVENT_TYPES),
    ts=st.builds(  # the schema's timestamps carry offsets in minutes
        lambda wall, offset_min: wall.replace(tzinfo=timezone(timedelta(minutes=offset_min))),
        walls,
        st.integers(-24 * 60 + 1, 24 * 60 - 1),
    ),
    context=st.none()
    | st.builds(
        Context,
        user_agent=st.none() | user_agents,
        device=st.none() | devices,
        country=st.none() | st.sampled_from(["de", "US", "uk", "AU", "br", "KI", "XX", "zz"]),
        region=st.none() | regions,
    ),
)


@settings(max_examples=300, deadline=None, print_blob=True)
@given(events)
def test_native_context_of_a_decoded_event_equals_enrich(raw: Event) -> None:
    try:
        e = msgspec.json.decode(msgspec.json.encode(raw), type=Event)
    except msgspec.ValidationError:
        return  # the schema's decoder dead-letters it: never enriched
    c = e.context or Context()
    ctx = enrich(e)
    got = SHARED.enrich(c.user_agent, c.device, c.country, c.region, *split(e.ts))
    assert got == (*dataclasses.astuple(ctx), segment_key(ctx))


# --- golden values and the caches ------------------------------------------------------------


def test_golden_event() -> None:
    ts = datetime(2024, 12, 24, 17, 30, tzinfo=UTC)
    got = Enricher().enrich(UA["iphone_safari"], None, "de", "berlin", *split(ts))
    assert got == ("mobile", "DE", "DE-BE", "evening", 1, False, 18, "mobile|evening|DE")


def test_without_context_it_is_utc_and_unknown() -> None:
    ts = datetime(2024, 7, 14, 9, 15, tzinfo=timezone(timedelta(hours=2)))
    got = Enricher().enrich(None, None, None, None, *split(ts))
    assert got == ("unknown", None, None, "morning", 6, True, 7, "unknown|morning|--")


def test_end_of_the_calendar_keeps_its_own_offset() -> None:
    ts = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)  # Kiribati (+12 on Tarawa) is year 10000
    assert Enricher().enrich(None, None, "KI", None, *split(ts))[4:7] == (4, False, 23)
    assert native(Enricher(), None, None, "KI", None, ts) == oracle(None, None, "KI", None, ts)


def test_a_seen_context_is_answered_from_the_caches() -> None:
    enricher = Enricher()
    ts = datetime(2024, 7, 15, 12, tzinfo=UTC)
    first = native(enricher, UA["windows_chrome"], None, "US", "CA", ts)
    for hours in range(1, 100):
        later = ts + timedelta(hours=hours)
        got = native(enricher, UA["windows_chrome"], None, "US", "CA", later)
        assert got == oracle(UA["windows_chrome"], None, "US", "CA", later)
    assert first[:3] == ("desktop", "US", "US-CA")
    stats = enricher.stats()
    assert (stats["device_hits"], stats["device_misses"]) == (99, 1)
    assert (stats["place_hits"], stats["place_misses"]) == (99, 1)
    assert stats["zones"] == 2  # UTC and America/Los_Angeles


def test_eviction_keeps_the_caches_bounded_and_the_answers_right() -> None:
    rng = random.Random(SEED)
    enricher = Enricher(cache_size=16)
    agents = [*UA.values(), *MORE_UA]
    places = [(c, r) for c in ["DE", "us", "AU", "BR", "xx", None] for r in [None, "ca", "NSW"]]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(1500):
        ua = rng.choice(agents)
        device = rng.choice([None, "phone", "tv"])
        country, region = rng.choice(places)
        ts = start + timedelta(minutes=rng.randrange(60 * 24 * 366))
        expected = oracle(ua, device, country, region, ts)
        assert native(enricher, ua, device, country, region, ts) == expected, (SEED, i)
        stats = enricher.stats()
        assert stats["device_entries"] <= 16 and stats["place_entries"] <= 16, (SEED, i)
    # 48 user agents x 3 devices and 18 places do not fit in 16: evictions, and still hits.
    assert stats["device_misses"] > 200 and stats["device_hits"] > 100
    assert stats["place_misses"] > 100 and stats["place_hits"] > 100
    assert enricher.cache_size == 16


@pytest.mark.parametrize("cache_size", [0, -1, 2**32])
def test_cache_size_must_fit(cache_size: int) -> None:
    with pytest.raises(
        ValueError, match=rf"cache_size must be in \[1, 4294967295\], got {cache_size}"
    ):
        Enricher(cache_size)
