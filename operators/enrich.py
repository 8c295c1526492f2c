"""Context enrichment: an event's device class, its local time of day and its place.

The dataflow calls `enrich` on every event and counts popularity per `segment_key`; serving calls
`context_from_request` to pick the same segment for a visitor it knows nothing else about (cold
start). Device classes follow uap-core's rules (``ua-parser`` with its Rust resolver), local time
the IANA tables shipped in ``tzdata``, and countries and subdivisions ISO 3166 via ``pycountry``.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from importlib import resources
from typing import Final, Literal
from zoneinfo import ZoneInfo

import pycountry
import ua_parser

from freshrec.events import Event

DeviceClass = Literal["mobile", "tablet", "desktop", "bot", "other", "unknown"]
TimeOfDay = Literal["night", "morning", "afternoon", "evening"]

#: Distinct user agents whose class is remembered. Real traffic is a few thousand strings long
#: in the head; an entry is the string (at most 2 KiB by the event schema) and a short literal.
UA_CACHE_SIZE: Final = 8192


@dataclass(frozen=True, slots=True)
class EventContext:
    """The context an event or request happened in, normalised for segmenting.

    ``country`` is an ISO 3166-1 alpha-2 code or None; ``region`` an ISO 3166-2 code when it
    names a known subdivision of the country, else title-cased text, or None. Time fields are
    in the local time of the place (UTC when the place is unknown); ``weekday`` is 0 = Monday.
    """

    device_class: DeviceClass
    country: str | None
    region: str | None
    tod_bucket: TimeOfDay
    weekday: int
    is_weekend: bool
    local_hour: int


def enrich(event: Event) -> EventContext:
    """The context of one event, at the event's own time (``event.ts``)."""
    ctx = event.context
    if ctx is None:
        return context_from_request(None, None, None, None, event.ts)
    return context_from_request(ctx.user_agent, ctx.device, ctx.country, ctx.region, event.ts)


def context_from_request(
    user_agent: str | None,
    device: str | None,
    country: str | None,
    region: str | None,
    now: datetime,
) -> EventContext:
    """The context of a request without an event, by the same rules as `enrich`.

    ``now`` is passed in, never read from the clock; a naive ``now`` is taken as UTC.
    """
    country_code = normalise_country(country)
    region_name = normalise_region(region, country_code)
    local = local_time(now, country_code, region_name)
    weekday = local.weekday()
    return EventContext(
        device_class=device_class(user_agent, device),
        country=country_code,
        region=region_name,
        tod_bucket=time_of_day(local.hour),
        weekday=weekday,
        is_weekend=weekday >= 5,
        local_hour=local.hour,
    )


def segment_key(ctx: EventContext) -> str:
    """The context segment popularity is counted in: ``device|time of day|country``.

    ``--`` stands for an unknown country, e.g. ``mobile|evening|DE`` or ``desktop|night|--``.
    """
    return f"{ctx.device_class}|{ctx.tod_bucket}|{ctx.country or '--'}"


# --- device class --------------------------------------------------------------------------

# What shops and SDKs put in an explicit device field, after case folding and with `-`/`_`
# read as spaces. Values outside this vocabulary are not guessed at: the user agent decides.
_DEVICE_WORDS: Final[dict[DeviceClass, tuple[str, ...]]] = {
    "mobile": (
        "mobile", "phone", "smartphone", "smart phone", "mobile phone", "cell phone",
        "cellphone", "handset", "feature phone", "iphone", "mobile web", "mweb",
    ),
    "tablet": ("tablet", "tab", "ipad", "android tablet", "kindle"),
    "desktop": ("desktop", "computer", "pc", "laptop", "notebook", "web", "desktop web", "mac"),
    "bot": ("bot", "crawler", "spider", "robot", "scraper"),
    "other": (
        "other", "tv", "smart tv", "smarttv", "ctv", "connected tv", "console", "game console",
        "wearable", "watch", "smartwatch", "car", "kiosk", "embedded", "iot", "xr", "vr",
    ),
}  # fmt: skip
_DEVICE_ALIASES: Final[dict[str, DeviceClass]] = {
    word: cls for cls, words in _DEVICE_WORDS.items() for word in words
}
#: Explicit values that say nothing; the user agent decides.
_DEVICE_UNKNOWN: Final = frozenset({"", "unknown", "n/a", "na", "none", "null", "undefined"})

# uap-core families (not patterns): clients that are scripts, not people, but that uap-core
# does not file under its "Spider" device.
_AUTOMATION_FAMILIES: Final = frozenset(
    {
        "curl", "Wget", "Python Requests", "Python aiohttp", "Apache-HttpClient",
        "Go-http-client", "HeadlessChrome", "PostmanRuntime", "axios", "HTTPClient",
    }
)  # fmt: skip
_TABLET_FAMILIES: Final = frozenset({"iPad", "Generic Tablet", "Kindle"})
_PHONE_FAMILIES: Final = frozenset(
    {"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone"}
)
_MOBILE_OS: Final = frozenset(
    {
        "iOS", "Android", "Windows Phone", "Windows Mobile", "BlackBerry OS", "KaiOS",
        "Firefox OS", "Symbian OS", "Symbian^3", "Symbian^3 Anna", "Symbian^3 Belle",
        "Nokia Series 40", "Nokia Series 30 Plus", "Brew MP",
    }
)  # fmt: skip
_DESKTOP_OS: Final = frozenset(
    {
        "Windows", "Mac OS X", "Mac OS", "Chrome OS", "Linux", "Ubuntu", "Kubuntu", "Debian",
        "Fedora", "Red Hat", "Gentoo", "SUSE", "openSUSE", "Mint", "Arch Linux", "FreeBSD",
        "OpenBSD", "NetBSD", "Solaris",
    }
)  # fmt: skip


def device_class(user_agent: str | None, device: str | None = None) -> DeviceClass:
    """The device class of a client, from its explicit device field and its user agent.

    A recognised explicit ``device`` ("Mobile", "phone", "smartphone" → mobile, …) wins over
    the user agent, except that a user agent uap-core knows as a crawler stays "bot": a
    crawler rendering pages in a desktop viewport would otherwise count as a desktop shopper.
    "unknown" means neither says anything; "other" is a client that is none of the four
    (a TV, a console, an unrecognised explicit value with no user agent to decide).
    """
    from_ua = classify_user_agent(user_agent) if user_agent else "unknown"
    if from_ua == "bot":
        return "bot"
    explicit = normalise_device(device)
    if explicit is not None:
        return explicit
    if from_ua == "unknown" and device is not None and _fold(device) not in _DEVICE_UNKNOWN:
        return "other"
    return from_ua


def normalise_device(device: str | None) -> DeviceClass | None:
    """The class an explicit device field names, or None when it names none we know."""
    if device is None:
        return None
    return _DEVICE_ALIASES.get(_fold(device.replace("_", " ").replace("-", " ")))


@functools.lru_cache(maxsize=UA_CACHE_SIZE)
def classify_user_agent(user_agent: str) -> DeviceClass:
    """The device class of one user-agent string by uap-core's rules (cached per string).

    Android tablets are told from phones by the missing ``Mobile`` token, the convention
    Android browsers follow and uap-core's own generic tablet rule relies on. An iPad in
    its default "request desktop site" mode sends a macOS user agent and counts as desktop.
    """
    if not user_agent.strip():
        return "unknown"
    result = _ua_parser().parse(user_agent)
    device, os, agent = result.device, result.os, result.user_agent
    if device is not None and device.family == "Spider":
        return "bot"
    if agent is not None and agent.family in _AUTOMATION_FAMILIES:
        return "bot"
    if device is not None and (
        device.family in _TABLET_FAMILIES
        or device.brand == "Generic_Android_Tablet"
        or device.family.startswith("Kindle")
    ):
        return "tablet"
    if os is not None and os.family == "Android" and "Mobile" not in user_agent:
        return "tablet"
    if (os is not None and os.family in _MOBILE_OS) or (
        device is not None and device.family in _PHONE_FAMILIES
    ):
        return "mobile"
    if os is not None and os.family in _DESKTOP_OS:
        return "desktop"
    return "other"


@functools.cache
def _ua_parser() -> ua_parser.Parser:
    # Built on first use (~0.1 s) and without ua-parser's own result cache: the LRU on
    # `classify_user_agent` keeps the short class rather than the whole parse result.
    # The Rust resolver (ua-parser[regex]) compiles the patterns itself, hence lazy builtins;
    # the pure-Python fallback wants them compiled up front, as ua-parser itself does.
    resolver = ua_parser.BestAvailableResolver
    if resolver is ua_parser.BasicResolver:
        return ua_parser.Parser(resolver(ua_parser.load_builtins()))
    return ua_parser.Parser(resolver(ua_parser.load_lazy_builtins()))


# --- country and region --------------------------------------------------------------------

#: Codes ISO 3166 reserves for a country that has another alpha-2 code.
_COUNTRY_ALIASES: Final = {"UK": "GB"}


def normalise_country(country: str | None) -> str | None:
    """An ISO 3166-1 alpha-2 code, upper-cased, or None when it is not a current country."""
    if country is None:
        return None
    code = country.strip().upper()
    code = _COUNTRY_ALIASES.get(code, code)
    return code if code in _country_codes() else None


# Cached like user agents: a few thousand distinct regions repeat on every event, and folding
# accents is most of the ~1 µs an uncached call takes.
@functools.lru_cache(maxsize=4096)
def normalise_region(region: str | None, country: str | None) -> str | None:
    """The region's ISO 3166-2 code when it names a subdivision, else its title-cased text.

    Matched within ``country`` by code ("US-CA", "ca") or name ("California", "sao paulo",
    "Cataluña"), ignoring case and accents. Without a country only a full code matches.
    """
    if region is None:
        return None
    text = " ".join(region.split())
    if not text:
        return None
    key = _fold(text)
    if country is not None:
        code = _subdivision_index(country).get(key)
        if code is not None:
            return code
    elif text.upper() in _subdivision_parents():
        return text.upper()
    return text.title()


@functools.cache
def _country_codes() -> frozenset[str]:
    return frozenset(str(c.alpha_2) for c in pycountry.countries)


@dataclass(frozen=True, slots=True)
class _Subdivision:
    code: str
    name: str
    parent_code: str | None


@functools.cache
def _subdivisions() -> dict[str, list[_Subdivision]]:
    """ISO 3166-2 subdivisions by country code."""
    by_country: dict[str, list[_Subdivision]] = {}
    for sub in pycountry.subdivisions:
        parent: str | None = sub.parent_code
        entry = _Subdivision(str(sub.code), str(sub.name), parent)
        by_country.setdefault(str(sub.country_code), []).append(entry)
    return by_country


@functools.cache
def _subdivision_parents() -> dict[str, str | None]:
    """ISO 3166-2 code → the code of the subdivision it belongs to (ES-TF → ES-CN), if any."""
    return {sub.code: sub.parent_code for subs in _subdivisions().values() for sub in subs}


@functools.cache
def _subdivision_index(country: str) -> dict[str, str]:
    """Folded code, code suffix, name and name variants → ISO 3166-2 code, for one country."""
    subdivisions = _subdivisions().get(country, [])
    index: dict[str, str] = {}
    # Exact keys before derived ones, so a province named "Madrid" keeps "madrid" while the
    # community "Madrid, Comunidad de" is found by "Comunidad de Madrid".
    for sub in subdivisions:
        index[_fold(sub.code)] = sub.code
    for sub in subdivisions:
        index.setdefault(_fold(sub.code.partition("-")[2]), sub.code)
    for sub in subdivisions:
        index.setdefault(_fold(sub.name), sub.code)
    for sub in subdivisions:
        for variant in _name_variants(sub.name):
            index.setdefault(_fold(variant), sub.code)
    return index


def _name_variants(name: str) -> list[str]:
    # ISO writes "Catalunya [Cataluña]" and "Asturias, Principado de".
    variants = []
    if "[" in name:
        outside, _, inside = name.partition("[")
        variants += [outside.strip(), inside.rstrip("]").strip()]
        name = outside.strip()
    if ", " in name:
        head, _, tail = name.partition(", ")
        variants += [head, f"{tail} {head}"]
    return variants


def _fold(text: str) -> str:
    """Case- and accent-insensitive form of a name: "São  Paulo" → "sao paulo"."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


# --- local time ----------------------------------------------------------------------------

#: Time-of-day buckets by local hour: night [0, 6), morning [6, 12), afternoon [12, 18),
#: evening [18, 24).
_TOD_BY_HOUR: Final[tuple[TimeOfDay, ...]] = (
    ("night",) * 6 + ("morning",) * 6 + ("afternoon",) * 6 + ("evening",) * 6
)

# The zone of a country's largest population where zone.tab lists another one first (it
# orders zones geographically, e.g. Australia from Lord Howe Island, Canada from St John's).
_MAIN_ZONE: Final = {
    "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo",
    "CA": "America/Toronto",
    "PS": "Asia/Hebron",
    "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv",
    "UZ": "Asia/Tashkent",
}

# Subdivisions (ISO 3166-2) of the largest multi-zone markets whose zone is not the country's
# main one: the zone of most of the subdivision's people, after zone.tab's comments. A
# subdivision not listed takes its parent's zone (ES-TF → ES-CN), then the country's.
_ZONE_SUBDIVISIONS: Final[dict[str, str]] = {
    "America/Chicago": "US-AL US-AR US-IA US-IL US-KS US-LA US-MN US-MO US-MS US-ND US-NE "
    "US-OK US-SD US-TN US-TX US-WI",
    "America/Denver": "US-CO US-MT US-NM US-UT US-WY",
    "America/Boise": "US-ID",
    "America/Phoenix": "US-AZ",
    "America/Los_Angeles": "US-CA US-NV US-OR US-WA",
    "America/Anchorage": "US-AK",
    "Pacific/Honolulu": "US-HI",
    "America/Puerto_Rico": "US-PR",
    "America/St_Thomas": "US-VI",
    "Pacific/Guam": "US-GU",
    "Pacific/Saipan": "US-MP",
    "Pacific/Pago_Pago": "US-AS",
    "America/St_Johns": "CA-NL",
    "America/Halifax": "CA-NS CA-PE",
    "America/Moncton": "CA-NB",
    "America/Iqaluit": "CA-NU",
    "America/Winnipeg": "CA-MB",
    "America/Regina": "CA-SK",
    "America/Edmonton": "CA-AB CA-NT",
    "America/Vancouver": "CA-BC",
    "America/Whitehorse": "CA-YT",
    "Australia/Melbourne": "AU-VIC",
    "Australia/Brisbane": "AU-QLD",
    "Australia/Adelaide": "AU-SA",
    "Australia/Hobart": "AU-TAS",
    "Australia/Darwin": "AU-NT",
    "Australia/Perth": "AU-WA",
    "America/Rio_Branco": "BR-AC",
    "America/Maceio": "BR-AL BR-SE",
    "America/Manaus": "BR-AM",
    "America/Belem": "BR-AP BR-PA",
    "America/Bahia": "BR-BA",
    "America/Fortaleza": "BR-CE BR-MA BR-PB BR-PI BR-RN",
    "America/Campo_Grande": "BR-MS",
    "America/Cuiaba": "BR-MT",
    "America/Recife": "BR-PE",
    "America/Porto_Velho": "BR-RO",
    "America/Boa_Vista": "BR-RR",
    "America/Araguaina": "BR-TO",
    "America/Tijuana": "MX-BCN",
    "America/Mazatlan": "MX-BCS MX-NAY MX-SIN",
    "America/Merida": "MX-CAM MX-YUC",
    "America/Cancun": "MX-ROO",
    "America/Hermosillo": "MX-SON",
    "America/Chihuahua": "MX-CHH",
    "America/Monterrey": "MX-COA MX-DUR MX-NLE MX-TAM",
    "Europe/Kaliningrad": "RU-KGD",
    "Europe/Samara": "RU-SAM RU-UD",
    "Europe/Astrakhan": "RU-AST",
    "Europe/Saratov": "RU-SAR",
    "Europe/Ulyanovsk": "RU-ULY",
    "Asia/Yekaterinburg": "RU-BA RU-CHE RU-KGN RU-KHM RU-ORE RU-PER RU-SVE RU-TYU RU-YAN",
    "Asia/Omsk": "RU-OMS",
    "Asia/Novosibirsk": "RU-NVS",
    "Asia/Barnaul": "RU-AL RU-ALT",
    "Asia/Tomsk": "RU-TOM",
    "Asia/Novokuznetsk": "RU-KEM",
    "Asia/Krasnoyarsk": "RU-KK RU-KYA RU-TY",
    "Asia/Irkutsk": "RU-BU RU-IRK",
    "Asia/Chita": "RU-ZAB",
    "Asia/Yakutsk": "RU-AMU RU-SA",
    "Asia/Vladivostok": "RU-KHA RU-PRI RU-YEV",
    "Asia/Magadan": "RU-MAG",
    "Asia/Sakhalin": "RU-SAK",
    "Asia/Kamchatka": "RU-KAM",
    "Asia/Anadyr": "RU-CHU",
    "Atlantic/Canary": "ES-CN",
    "Atlantic/Azores": "PT-20",
    "Atlantic/Madeira": "PT-30",
}
SUBDIVISION_ZONE: Final[dict[str, str]] = {
    code: zone for zone, codes in _ZONE_SUBDIVISIONS.items() for code in codes.split()
}


def time_of_day(hour: int) -> TimeOfDay:
    """Night 0–6, morning 6–12, afternoon 12–18, evening 18–24 (local hours, end excluded)."""
    return _TOD_BY_HOUR[hour]


def timezone_name(country: str | None, region: str | None = None) -> str:
    """The IANA zone of a normalised place: the region's when known, else the country's.

    A country's zone is its most populous one (zone.tab's first, unless `_MAIN_ZONE` says
    otherwise); an unknown country, or one without people (Bouvet Island), is "UTC".
    """
    if country is None:
        return "UTC"
    code = region if region is not None and region.startswith(f"{country}-") else None
    while code is not None:
        if code in SUBDIVISION_ZONE:
            return SUBDIVISION_ZONE[code]
        code = _subdivision_parents().get(code)
    zones = country_zones().get(country)
    if not zones:
        return "UTC"
    return _MAIN_ZONE.get(country, zones[0])


def local_time(ts: datetime, country: str | None, region: str | None = None) -> datetime:
    """``ts`` as wall-clock time where it happened (a naive ``ts`` is taken as UTC).

    At the ends of the calendar (year 1, year 9999) where the local time does not exist as a
    `datetime`, ``ts`` is returned in its own offset rather than raising.
    """
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(_zone(timezone_name(country, region)))
    except OverflowError:
        return ts


@functools.cache
def country_zones() -> dict[str, tuple[str, ...]]:
    """ISO country code → its IANA zones, most populous first, from tzdata's zone.tab."""
    text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text("utf-8")
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            country, _coordinates, zone, *_comment = line.split("\t")
            zones.setdefault(country, []).append(zone)
    return {country: tuple(names) for country, names in zones.items()}


@functools.cache
def _zone(name: str) -> tzinfo:
    # Rules from the tzdata package rather than the OS, so a timestamp maps to the same local
    # time on every machine, pinned by uv.lock along with the zone table above.
    if name == "UTC":
        return UTC
    with resources.files("tzdata").joinpath("zoneinfo", *name.split("/")).open("rb") as f:
        return ZoneInfo.from_file(f, key=name)
