from datetime import UTC, datetime, timedelta, timezone
from typing import get_args

import msgspec
import pycountry
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.events import EVENT_TYPES, Context, Event
from operators import enrich as enrich_module
from operators.enrich import (
    SUBDIVISION_ZONE,
    DeviceClass,
    EventContext,
    TimeOfDay,
    classify_user_agent,
    context_from_request,
    country_zones,
    device_class,
    enrich,
    local_time,
    normalise_country,
    normalise_region,
    segment_key,
    time_of_day,
    timezone_name,
)

# Real user agents, as sent by current browsers and crawlers.
UA = {
    "iphone_safari": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
    ),
    "android_chrome_phone": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36"
    ),
    "android_chrome_phone_reduced": (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36"
    ),
    "samsung_internet_phone": (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"
    ),
    "firefox_android_phone": (
        "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0"
    ),
    "ipad_safari": (
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.6 Mobile/15E148 Safari/604.1"
    ),
    "android_chrome_tablet": (
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    "samsung_internet_tablet": (
        "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/23.0 Chrome/115.0.0.0 Safari/537.36"
    ),
    "kindle_fire_silk": (
        "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Silk/124.3.1 like Chrome/124.0.6367.219 Safari/537.36"
    ),
    "windows_chrome": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    "windows_edge": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0"
    ),
    "macos_safari": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4.1 Safari/605.1.15"
    ),
    "linux_firefox": (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
    ),
    "chromeos_chrome": (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "googlebot_smartphone": (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.6367.201 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    ),
    "bingbot": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl": "curl/8.5.0",
    "wget": "Wget/1.21.4",
    "python_requests": "python-requests/2.31.0",
    "headless_chrome": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/124.0.0.0 Safari/537.36"
    ),
    "samsung_smart_tv": (
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36"
    ),
    "playstation_5": (
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.0 Safari/605.1.15"
    ),
}

GOLDEN_DEVICE_CLASS: dict[str, DeviceClass] = {
    "iphone_safari": "mobile",
    "android_chrome_phone": "mobile",
    "android_chrome_phone_reduced": "mobile",
    "samsung_internet_phone": "mobile",
    "firefox_android_phone": "mobile",
    "ipad_safari": "tablet",
    "android_chrome_tablet": "tablet",
    "samsung_internet_tablet": "tablet",
    "kindle_fire_silk": "tablet",
    "windows_chrome": "desktop",
    "windows_edge": "desktop",
    "macos_safari": "desktop",
    "linux_firefox": "desktop",
    "chromeos_chrome": "desktop",
    "googlebot": "bot",
    "googlebot_smartphone": "bot",
    "bingbot": "bot",
    "curl": "bot",
    "wget": "bot",
    "python_requests": "bot",
    "headless_chrome": "bot",
    "samsung_smart_tv": "other",
    "playstation_5": "other",
}

DEVICE_CLASSES = set(get_args(DeviceClass))
TOD_BUCKETS = set(get_args(TimeOfDay))


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


# --- device class: golden values ----------------------------------------------------------


@pytest.mark.parametrize("name", list(GOLDEN_DEVICE_CLASS))
def test_device_class_of_real_user_agents(name: str) -> None:
    assert classify_user_agent(UA[name]) == GOLDEN_DEVICE_CLASS[name]
    assert device_class(UA[name], None) == GOLDEN_DEVICE_CLASS[name]


def test_every_golden_user_agent_has_an_expected_class() -> None:
    assert set(UA) == set(GOLDEN_DEVICE_CLASS)
    assert set(GOLDEN_DEVICE_CLASS.values()) == DEVICE_CLASSES - {"unknown"}


@pytest.mark.parametrize("ua", ["", "   ", "\t"])
def test_blank_user_agent_is_unknown(ua: str) -> None:
    assert classify_user_agent(ua) == "unknown"
    assert device_class(ua, None) == "unknown"


@pytest.mark.parametrize("ua", ["x", "python-httpx/0.27.0", "my-shop-app/3.2 (build 77)"])
def test_unrecognised_user_agent_is_other(ua: str) -> None:
    assert classify_user_agent(ua) == "other"


def test_user_agent_class_is_cached_per_string() -> None:
    classify_user_agent.cache_clear()
    classify_user_agent(UA["iphone_safari"])
    classify_user_agent(UA["iphone_safari"])
    info = classify_user_agent.cache_info()
    assert (info.hits, info.misses) == (1, 1)


# --- device class: explicit device field --------------------------------------------------


@pytest.mark.parametrize(
    ("device", "ua", "expected"),
    [
        ("Mobile", UA["windows_chrome"], "mobile"),
        ("phone", None, "mobile"),
        ("Smartphone", UA["ipad_safari"], "mobile"),
        ("mobile-web", None, "mobile"),
        ("MOBILE_PHONE", None, "mobile"),
        ("  Tablet ", UA["iphone_safari"], "tablet"),
        ("iPad", None, "tablet"),
        ("desktop", UA["android_chrome_phone"], "desktop"),
        ("PC", None, "desktop"),
        ("laptop", None, "desktop"),
        ("crawler", UA["macos_safari"], "bot"),
        ("Smart_TV", None, "other"),
        ("console", UA["windows_chrome"], "other"),
    ],
)
def test_explicit_device_is_normalised_and_preferred(
    device: str, ua: str | None, expected: DeviceClass
) -> None:
    assert device_class(ua, device) == expected


def test_a_crawler_user_agent_stays_a_bot_whatever_the_device_field_says() -> None:
    assert device_class(UA["googlebot"], "desktop") == "bot"
    assert device_class(UA["googlebot_smartphone"], "mobile") == "bot"


@pytest.mark.parametrize(
    ("device", "ua", "expected"),
    [
        ("fridge", UA["iphone_safari"], "mobile"),  # unrecognised: the user agent decides
        ("fridge", None, "other"),  # unrecognised and nothing else to go on
        ("unknown", UA["windows_chrome"], "desktop"),
        ("unknown", None, "unknown"),
        ("N/A", None, "unknown"),
        (None, None, "unknown"),
    ],
)
def test_unrecognised_explicit_device(device: str | None, ua: str | None, expected: str) -> None:
    assert device_class(ua, device) == expected


# --- country and region -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DE", "DE"),
        ("de", "DE"),
        (" fr ", "FR"),
        ("Us", "US"),
        ("UK", "GB"),  # reserved by ISO 3166 for the United Kingdom
        ("XK", None),  # Kosovo: user-assigned, not ISO 3166-1
        ("XX", None),
        ("EU", None),
        ("", None),
        ("DEU", None),
        (None, None),
    ],
)
def test_country_is_normalised_to_iso_alpha_2(raw: str | None, expected: str | None) -> None:
    assert normalise_country(raw) == expected


@pytest.mark.parametrize(
    ("region", "country", "expected"),
    [
        ("CA", "US", "US-CA"),
        ("ca", "US", "US-CA"),
        ("California", "US", "US-CA"),
        ("  new   york ", "US", "US-NY"),
        ("us-ny", "US", "US-NY"),
        ("bayern", "DE", "DE-BY"),
        ("Baden-Württemberg", "DE", "DE-BW"),
        ("baden-wurttemberg", "DE", "DE-BW"),
        ("sao paulo", "BR", "BR-SP"),
        ("Cataluña", "ES", "ES-CT"),  # ISO: "Catalunya [Cataluña]"
        ("comunidad de madrid", "ES", "ES-MD"),  # ISO: "Madrid, Comunidad de"
        ("Madrid", "ES", "ES-M"),  # the province's exact name wins over the community's variant
        ("england", "GB", "GB-ENG"),
        ("Bavaria", "DE", "Bavaria"),  # English exonym: not an ISO name, kept as text
        ("île-de-france", "FR", "FR-IDF"),
        ("côte d'azur", "FR", "Côte D'Azur"),  # no subdivision: title-cased text
        ("US-CA", None, "US-CA"),  # a full code is recognised without a country
        ("california", None, "California"),
        ("US-CA", "DE", "Us-Ca"),  # not a subdivision of the given country
        ("   ", "US", None),
        (None, "US", None),
    ],
)
def test_region_is_canonicalised(region: str | None, country: str | None, expected: str) -> None:
    assert normalise_region(region, country) == expected


# --- local time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "bucket"),
    [(0, "night"), (5, "night"), (6, "morning"), (11, "morning"), (12, "afternoon")]
    + [(17, "afternoon"), (18, "evening"), (23, "evening")],
)
def test_time_of_day_buckets(hour: int, bucket: str) -> None:
    assert time_of_day(hour) == bucket


def test_every_hour_has_a_bucket() -> None:
    buckets = [time_of_day(h) for h in range(24)]
    assert [buckets.count(b) for b in ("night", "morning", "afternoon", "evening")] == [6] * 4


@pytest.mark.parametrize(
    ("ts", "country", "region", "local"),
    [
        # Germany: CET (+1) in winter, CEST (+2) in summer, switching at 01:00 UTC.
        ("2024-01-15T12:00:00+00:00", "DE", None, "2024-01-15T13:00:00+01:00"),
        ("2024-07-15T12:00:00+00:00", "DE", None, "2024-07-15T14:00:00+02:00"),
        ("2024-03-31T00:59:00+00:00", "DE", None, "2024-03-31T01:59:00+01:00"),
        ("2024-03-31T01:00:00+00:00", "DE", None, "2024-03-31T03:00:00+02:00"),
        ("2024-10-27T00:59:00+00:00", "DE", None, "2024-10-27T02:59:00+02:00"),
        ("2024-10-27T01:00:00+00:00", "DE", None, "2024-10-27T02:00:00+01:00"),
        # The US: the region picks the zone; without one, the most populous (Eastern).
        ("2024-01-13T04:00:00+00:00", "US", "US-NY", "2024-01-12T23:00:00-05:00"),
        ("2024-01-13T04:00:00+00:00", "US", "US-CA", "2024-01-12T20:00:00-08:00"),
        ("2024-07-13T04:00:00+00:00", "US", "US-NY", "2024-07-13T00:00:00-04:00"),
        ("2024-07-13T04:00:00+00:00", "US", "US-CA", "2024-07-12T21:00:00-07:00"),
        ("2024-07-13T04:00:00+00:00", "US", None, "2024-07-13T00:00:00-04:00"),
        ("2024-07-13T04:00:00+00:00", "US", "US-AZ", "2024-07-12T21:00:00-07:00"),  # no DST
        ("2024-03-10T06:59:00+00:00", "US", "US-NY", "2024-03-10T01:59:00-05:00"),
        ("2024-03-10T07:00:00+00:00", "US", "US-NY", "2024-03-10T03:00:00-04:00"),
        # Southern hemisphere: Sydney is on daylight time in January.
        ("2024-01-15T00:00:00+00:00", "AU", None, "2024-01-15T11:00:00+11:00"),
        ("2024-07-15T00:00:00+00:00", "AU", None, "2024-07-15T10:00:00+10:00"),
        ("2024-01-15T00:00:00+00:00", "AU", "AU-WA", "2024-01-15T08:00:00+08:00"),
        # A province takes its community's zone (Santa Cruz de Tenerife → Canarias).
        ("2024-07-15T12:00:00+00:00", "ES", "ES-TF", "2024-07-15T13:00:00+01:00"),
        ("2024-07-15T12:00:00+00:00", "ES", "ES-MD", "2024-07-15T14:00:00+02:00"),
        # Unknown place: UTC; a region text that is no subdivision: the country's zone.
        ("2024-07-15T12:00:00+02:00", None, None, "2024-07-15T10:00:00+00:00"),
        ("2024-07-15T12:00:00+00:00", "DE", "Bavaria", "2024-07-15T14:00:00+02:00"),
    ],
)
def test_local_time(ts: str, country: str | None, region: str | None, local: str) -> None:
    got = local_time(at(ts), country, region)
    assert got.isoformat() == local


def test_local_time_of_naive_timestamp_is_taken_as_utc() -> None:
    assert local_time(datetime(2024, 7, 15, 12), "DE").isoformat() == "2024-07-15T14:00:00+02:00"


def test_local_time_at_the_end_of_the_calendar_keeps_its_own_offset() -> None:
    ts = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)  # Kiribati (+14) would be year 10000
    assert local_time(ts, "KI", None) == ts


@pytest.mark.parametrize(
    ("country", "region", "zone"),
    [
        ("DE", None, "Europe/Berlin"),
        ("US", None, "America/New_York"),
        ("US", "US-CA", "America/Los_Angeles"),
        ("US", "US-TX", "America/Chicago"),
        ("CA", None, "America/Toronto"),
        ("CA", "CA-BC", "America/Vancouver"),
        ("AU", None, "Australia/Sydney"),
        ("BR", None, "America/Sao_Paulo"),
        ("RU", None, "Europe/Moscow"),
        ("RU", "RU-NVS", "Asia/Novosibirsk"),
        ("UA", None, "Europe/Kyiv"),
        ("MX", "MX-CMX", "America/Mexico_City"),
        ("ES", "ES-CN", "Atlantic/Canary"),
        ("US", "CA-BC", "America/New_York"),  # a region of another country is ignored
        ("BV", None, "UTC"),  # Bouvet Island: no zone, no people
        (None, "US-CA", "UTC"),
    ],
)
def test_timezone_name(country: str | None, region: str | None, zone: str) -> None:
    assert timezone_name(country, region) == zone


def test_subdivision_table_names_real_subdivisions_and_zones() -> None:
    codes = {sub.code for sub in pycountry.subdivisions}
    assert set(SUBDIVISION_ZONE) <= codes
    noon = at("2024-07-15T12:00:00+00:00")
    for code, zone in SUBDIVISION_ZONE.items():
        country = code.partition("-")[0]
        assert timezone_name(country, code) == zone
        assert local_time(noon, country, code).utcoffset() is not None


def test_main_zones_are_zones_of_their_country() -> None:
    zones = country_zones()
    for country, zone in enrich_module._MAIN_ZONE.items():
        assert zone in zones[country]


def test_every_country_has_a_loadable_zone() -> None:
    noon = at("2024-07-15T12:00:00+00:00")
    for country in pycountry.countries:
        code = normalise_country(country.alpha_2)
        assert code == country.alpha_2
        assert local_time(noon, code).utcoffset() is not None


# --- the whole context --------------------------------------------------------------------


def event(ts: str, context: Context | None = None) -> Event:
    return Event(event_id="e1", user_id="u1", item_id="i1", type="view", ts=at(ts), context=context)


def test_enrich_golden_event() -> None:
    ctx = enrich(
        event(
            "2024-12-24T17:30:00+00:00",
            Context(user_agent=UA["iphone_safari"], country="de", region="berlin"),
        )
    )
    assert ctx == EventContext(
        device_class="mobile",
        country="DE",
        region="DE-BE",
        tod_bucket="evening",
        weekday=1,
        is_weekend=False,
        local_hour=18,
    )
    assert segment_key(ctx) == "mobile|evening|DE"


def test_enrich_across_a_day_boundary_in_california() -> None:
    # Saturday 04:00 UTC is still Friday evening in Los Angeles, already Saturday in Berlin.
    ts = "2024-01-13T04:00:00+00:00"
    la = enrich(event(ts, Context(user_agent=UA["windows_chrome"], country="US", region="CA")))
    berlin = enrich(event(ts, Context(user_agent=UA["windows_chrome"], country="DE")))
    assert (la.weekday, la.is_weekend, la.local_hour, la.tod_bucket) == (4, False, 20, "evening")
    assert (berlin.weekday, berlin.is_weekend, berlin.local_hour) == (5, True, 5)
    assert segment_key(la) == "desktop|evening|US"
    assert segment_key(berlin) == "desktop|night|DE"


def test_enrich_without_context_is_utc_and_unknown() -> None:
    ctx = enrich(event("2024-07-14T09:15:00+02:00"))
    assert ctx == EventContext("unknown", None, None, "morning", 6, True, 7)
    assert segment_key(ctx) == "unknown|morning|--"


def test_unknown_country_is_utc() -> None:
    ctx = context_from_request(UA["googlebot"], None, "XX", "Nowhere", at("2024-07-15T23:30:00Z"))
    assert ctx == EventContext("bot", None, "Nowhere", "evening", 0, False, 23)


def test_context_from_request_matches_enrich() -> None:
    now = at("2024-07-15T12:00:00+00:00")
    ctx = Context(user_agent=UA["ipad_safari"], device="Tablet", country="br", region="SP")
    assert enrich(event("2024-07-15T12:00:00+00:00", ctx)) == context_from_request(
        UA["ipad_safari"], "Tablet", "br", "SP", now
    )
    assert context_from_request(None, None, "BR", "SP", now).local_hour == 9


# --- properties ---------------------------------------------------------------------------

printable = st.characters(exclude_categories=("Cc", "Cs"))
ids = st.text(printable, min_size=1, max_size=20)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()),
    st.datetimes(timezones=offsets),
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
)
user_agents = st.one_of(
    st.sampled_from(list(UA.values())), st.text(printable, min_size=1, max_size=300)
)
devices = st.one_of(
    st.sampled_from(["Mobile", "phone", "smartphone", "TABLET", "desktop", "bot", "tv", "?"]),
    st.text(printable, min_size=1, max_size=40),
)
countries = st.one_of(
    st.sampled_from(["DE", "us", "Us", "AU", "BR", "ru", "KI", "BV", "UK", "XX", "ZZ"]),
    st.text(st.characters(min_codepoint=ord("A"), max_codepoint=ord("z")).filter(str.isalpha),
            min_size=2, max_size=2),
)  # fmt: skip
regions = st.one_of(
    st.sampled_from(sorted(SUBDIVISION_ZONE) + ["CA", "new york", "Bayern", "São Paulo", "x"]),
    st.text(printable, min_size=1, max_size=60),
)
contexts = st.builds(
    Context,
    user_agent=st.none() | user_agents,
    device=st.none() | devices,
    country=st.none() | countries,
    region=st.none() | regions,
    city=st.none() | st.text(printable, min_size=1, max_size=20),
)
events = st.builds(
    Event,
    event_id=ids,
    user_id=ids,
    item_id=ids,
    type=st.sampled_from(EVENT_TYPES),
    ts=timestamps,
    context=st.none() | contexts,
)


def valid(e: Event) -> Event:
    """The event as the topic carries it: encoded and decoded against the schema."""
    return msgspec.json.decode(msgspec.json.encode(e), type=Event)


@settings(max_examples=400, deadline=None, print_blob=True)
@given(events)
def test_enrich_never_raises_and_stays_in_its_vocabulary(raw: Event) -> None:
    e = valid(raw)
    ctx = enrich(e)
    assert ctx.device_class in DEVICE_CLASSES
    assert ctx.tod_bucket in TOD_BUCKETS
    assert 0 <= ctx.local_hour < 24 and ctx.tod_bucket == time_of_day(ctx.local_hour)
    assert 0 <= ctx.weekday < 7 and ctx.is_weekend == (ctx.weekday >= 5)
    assert ctx.country is None or pycountry.countries.get(alpha_2=ctx.country) is not None
    assert ctx.region is None or ctx.region.strip() == ctx.region != ""
    c = e.context
    if c is not None and c.country is not None:
        assert ctx.country == normalise_country(c.country.swapcase())  # case never matters


@settings(max_examples=200, deadline=None, print_blob=True)
@given(events)
def test_segment_key_is_stable(raw: Event) -> None:
    e = valid(raw)
    key = segment_key(enrich(e))
    classify_user_agent.cache_clear()  # the cache changes speed, never the answer
    normalise_region.cache_clear()
    assert segment_key(enrich(e)) == key
    assert segment_key(enrich(valid(e))) == key
    device, tod, country = key.split("|")
    assert device in DEVICE_CLASSES and tod in TOD_BUCKETS
    assert country == "--" or (len(country) == 2 and country.isupper())
    c = e.context or Context()
    same = context_from_request(c.user_agent, c.device, c.country, c.region, e.ts)
    assert segment_key(same) == key
