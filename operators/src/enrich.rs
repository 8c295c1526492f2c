//! Context enrichment on the per-event path: device class, place, local time and segment
//! (`device|time of day|country`) by the rules of `operators/enrich.py` (uap-core, ISO 3166),
//! which stay in Python: an `Enricher` caches their answers per distinct (user agent, device)
//! and (country, region) in bounded CLOCK caches (Corbató 1968), so a context seen before
//! touches no Python. Local time is native, from the TZif files of the `tzdata` package.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::errors::{Invalid, ensure};
use crate::intern::{self, Id};

/// Distinct (user agent, device) pairs, and distinct (country, region) pairs, remembered by
/// default (`operators.enrich.UA_CACHE_SIZE`).
pub const DEFAULT_CACHE_SIZE: usize = 8192;

// --- vocabulary ------------------------------------------------------------------------------

/// The class of the client an event came from (`operators.enrich.DeviceClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DeviceClass {
    Mobile = 0,
    Tablet = 1,
    Desktop = 2,
    Bot = 3,
    Other = 4,
    Unknown = 5,
}

impl DeviceClass {
    pub const ALL: [DeviceClass; 6] = [
        DeviceClass::Mobile,
        DeviceClass::Tablet,
        DeviceClass::Desktop,
        DeviceClass::Bot,
        DeviceClass::Other,
        DeviceClass::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DeviceClass::Mobile => "mobile",
            DeviceClass::Tablet => "tablet",
            DeviceClass::Desktop => "desktop",
            DeviceClass::Bot => "bot",
            DeviceClass::Other => "other",
            DeviceClass::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<DeviceClass> {
        DeviceClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Local time-of-day bucket: night [0, 6), morning [6, 12), afternoon [12, 18), evening [18, 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TimeOfDay {
    Night = 0,
    Morning = 1,
    Afternoon = 2,
    Evening = 3,
}

impl TimeOfDay {
    pub const ALL: [TimeOfDay; 4] =
        [TimeOfDay::Night, TimeOfDay::Morning, TimeOfDay::Afternoon, TimeOfDay::Evening];

    pub fn name(self) -> &'static str {
        match self {
            TimeOfDay::Night => "night",
            TimeOfDay::Morning => "morning",
            TimeOfDay::Afternoon => "afternoon",
            TimeOfDay::Evening => "evening",
        }
    }

    /// The bucket of a local hour (0..24).
    pub fn from_hour(hour: u8) -> TimeOfDay {
        TimeOfDay::ALL[usize::from(hour / 6)]
    }
}

/// An ISO 3166-1 alpha-2 code: two ASCII capital letters, kept inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code, if `code` is two ASCII capital letters.
    pub fn new(code: &str) -> Option<CountryCode> {
        match *code.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some(CountryCode([a, b])),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("two ASCII letters")
    }
}

/// The context of one event, normalised for segmenting (`operators.enrich.EventContext` plus
/// its `segment_key`). Time fields are in the local time of the place (UTC when unknown);
/// `weekday` is 0 = Monday. 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContext {
    /// ISO 3166-2 code when it names a subdivision of the country, else title-cased text.
    /// Shared with the cache (free text is unbounded, so it is not interned process-wide).
    pub region: Option<Arc<str>>,
    /// The interned segment key `device|tod|country` (`--` for an unknown country).
    pub segment: Id,
    pub country: Option<CountryCode>,
    pub device_class: DeviceClass,
    pub tod_bucket: TimeOfDay,
    pub weekday: u8,
    pub is_weekend: bool,
    pub local_hour: u8,
}

impl EventContext {
    /// The segment key as text, e.g. `mobile|evening|DE`.
    pub fn segment_key(&self) -> &'static str {
        intern::name(self.segment)
    }
}

/// The segment key of a device class, bucket and country, as `operators.enrich.segment_key`.
pub fn segment_key(device: DeviceClass, tod: TimeOfDay, country: Option<CountryCode>) -> String {
    let country = country.as_ref().map_or("--", CountryCode::as_str);
    format!("{}|{}|{}", device.name(), tod.name(), country)
}

// --- local time ------------------------------------------------------------------------------

const US_PER_S: i64 = 1_000_000;
const US_PER_HOUR: i64 = 3_600 * US_PER_S;
const US_PER_DAY: i64 = 86_400 * US_PER_S;
/// Python's `datetime` range (0001-01-01 to 9999-12-31T23:59:59.999999) in microseconds
/// since 1970-01-01: a local or UTC time outside it makes `astimezone` overflow.
pub const DATETIME_MIN_US: i64 = -62_135_596_800 * US_PER_S;
pub const DATETIME_MAX_US: i64 = 253_402_300_800 * US_PER_S - 1;
/// 400 Gregorian years, which repeat weekdays and leap days exactly, hence POSIX TZ rules.
const FOUR_CENTURIES_S: i64 = 146_097 * 86_400;
/// 9000-01-01T00:00:00Z. Later instants are looked up 400 years earlier: jiff's timestamps
/// end on 9999-12-30 (so any offset still gives a civil time), Python's a day later, and
/// by then every zone follows its POSIX rule, which is periodic in 400 years.
const SHIFT_ABOVE_S: i64 = 221_845_392_000;

/// One IANA zone, with the interval of the last offset it answered (events of a zone come
/// in time order, so the next one almost always falls in the same interval).
pub struct Zone {
    tz: TimeZone,
    start_s: i64,
    end_s: i64,
    offset_s: i32,
}

impl Zone {
    /// Coordinated Universal Time (what `operators.enrich` uses for "UTC" and unknown places).
    pub fn utc() -> Zone {
        Zone { tz: TimeZone::UTC, start_s: i64::MIN, end_s: i64::MAX, offset_s: 0 }
    }

    /// A zone from its TZif file (as the `tzdata` package ships it).
    pub fn from_tzif(name: &str, tzif: &[u8]) -> Result<Zone, Invalid> {
        let tz = TimeZone::tzif(name, tzif)
            .map_err(|e| Invalid(format!("time zone {name:?} is not valid TZif: {e}")))?;
        // An empty interval: the first lookup fills it.
        Ok(Zone { tz, start_s: 0, end_s: 0, offset_s: 0 })
    }

    /// The zone's UTC offset in seconds at `utc_s` (seconds since 1970-01-01T00:00:00Z).
    pub fn offset_at(&mut self, utc_s: i64) -> i32 {
        if self.start_s <= utc_s && utc_s < self.end_s {
            return self.offset_s;
        }
        let mut at_s = utc_s;
        while at_s > SHIFT_ABOVE_S {
            at_s -= FOUR_CENTURIES_S;
        }
        let at = Timestamp::from_second(at_s).unwrap_or(Timestamp::MIN);
        let offset_s = self.tz.to_offset(at).seconds();
        if at_s == utc_s && at > Timestamp::MIN {
            // The offset holds from the last transition at or before `utc_s` to the first
            // one after it (jiff's `preceding`/`following` are strict).
            let next_s = Timestamp::from_second(utc_s + 1).unwrap_or(at);
            self.start_s =
                self.tz.preceding(next_s).next().map_or(i64::MIN, |t| t.timestamp().as_second());
            self.end_s =
                self.tz.following(at).next().map_or(i64::MAX, |t| t.timestamp().as_second());
            self.offset_s = offset_s;
        }
        offset_s
    }

    /// The offset without the remembered interval (to check it against).
    pub fn offset_uncached(&self, utc_s: i64) -> i32 {
        let mut at_s = utc_s;
        while at_s > SHIFT_ABOVE_S {
            at_s -= FOUR_CENTURIES_S;
        }
        self.tz.to_offset(Timestamp::from_second(at_s).unwrap_or(Timestamp::MIN)).seconds()
    }
}

/// Wall-clock microseconds since 1970-01-01 (local) where an event at `ts_us` (UTC
/// microseconds) happened, its timestamp having been written with `utc_offset_s`.
///
/// As `operators.enrich.local_time`: where Python's `astimezone` overflows (the UTC or the
/// local time falls outside years 1..=9999), the event's own wall clock is the answer.
pub fn local_wall_us(ts_us: i64, utc_offset_s: i32, zone: &mut Zone) -> i64 {
    let own = ts_us.saturating_add(i64::from(utc_offset_s) * US_PER_S);
    if !(DATETIME_MIN_US..=DATETIME_MAX_US).contains(&ts_us) {
        return own;
    }
    let local = ts_us + i64::from(zone.offset_at(ts_us.div_euclid(US_PER_S))) * US_PER_S;
    if (DATETIME_MIN_US..=DATETIME_MAX_US).contains(&local) { local } else { own }
}

/// (weekday with 0 = Monday, hour) of a wall-clock time in microseconds since 1970-01-01.
pub fn weekday_and_hour(wall_us: i64) -> (u8, u8) {
    let day = wall_us.div_euclid(US_PER_DAY);
    // 1970-01-01 was a Thursday.
    let weekday = (day + 3).rem_euclid(7) as u8;
    let hour = (wall_us.rem_euclid(US_PER_DAY) / US_PER_HOUR) as u8;
    (weekday, hour)
}

// --- bounded caches --------------------------------------------------------------------------

/// A bounded map from a pair of optional strings to a value, evicting by CLOCK (Corbató 1968,
/// "second chance"): a hit only sets the entry's bit; a miss on a full cache sweeps a hand over the
/// entries, clearing set bits, and reuses the first entry whose bit was clear. So an entry
/// used again since the hand last passed survives, and a one-off key (a bot's unique user
/// agent) goes first. Lookups hash and compare the borrowed strings: no allocation on a hit.
pub struct PairCache<V> {
    index: HashTable<u32>,
    slots: Vec<Slot<V>>,
    capacity: usize,
    hand: usize,
    /// Per-process random: keys are client-controlled, so their hashes must not be guessable.
    seed: u64,
    hits: u64,
    misses: u64,
}

struct Slot<V> {
    hash: u64,
    first: Option<Box<str>>,
    second: Option<Box<str>>,
    referenced: bool,
    value: V,
}

impl<V> PairCache<V> {
    /// A cache of at most `capacity` (>= 1, < 2^32) entries.
    pub fn new(capacity: usize) -> PairCache<V> {
        assert!(capacity >= 1 && u32::try_from(capacity).is_ok(), "capacity {capacity}");
        PairCache {
            index: HashTable::new(),
            slots: Vec::new(),
            capacity,
            hand: 0,
            seed: std::hash::RandomState::new().hash_one(0x656e_7269_6368_u64),
            hits: 0,
            misses: 0,
        }
    }

    /// The hash of a key, for `get` and then `insert`.
    pub fn hash(&self, first: Option<&str>, second: Option<&str>) -> u64 {
        let part = |seed: u64, s: Option<&str>| match s {
            Some(s) => xxh3_64_with_seed(s.as_bytes(), seed),
            None => xxh3_64_with_seed(b"", !seed),
        };
        part(part(self.seed, first), second)
    }

    /// The value of a key (counted as a hit), if present.
    pub fn get(&mut self, hash: u64, first: Option<&str>, second: Option<&str>) -> Option<&V> {
        let slots = &self.slots;
        let i = *self.index.find(hash, |&i| {
            let slot = &slots[i as usize];
            slot.hash == hash && slot.first.as_deref() == first && slot.second.as_deref() == second
        })? as usize;
        self.hits += 1;
        let slot = &mut self.slots[i];
        slot.referenced = true;
        Some(&slot.value)
    }

    /// Remember the value of a key that `get` just missed (counted as a miss), evicting an
    /// entry when full.
    pub fn insert(&mut self, hash: u64, first: Option<&str>, second: Option<&str>, value: V) -> &V {
        self.misses += 1;
        let slot = Slot {
            hash,
            first: first.map(Box::from),
            second: second.map(Box::from),
            referenced: false,
            value,
        };
        let i = if self.slots.len() < self.capacity {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let i = self.victim();
            let old = self.slots[i].hash;
            if let Ok(entry) = self.index.find_entry(old, |&j| j as usize == i) {
                entry.remove();
            }
            self.slots[i] = slot;
            i
        };
        let slots = &self.slots;
        self.index.insert_unique(hash, i as u32, |&j| slots[j as usize].hash);
        &self.slots[i].value
    }

    /// The next entry the hand finds unreferenced (at most two sweeps).
    fn victim(&mut self) -> usize {
        loop {
            let i = self.hand;
            self.hand = if i + 1 == self.slots.len() { 0 } else { i + 1 };
            let slot = &mut self.slots[i];
            if !slot.referenced {
                return i;
            }
            slot.referenced = false;
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// (hits, misses) since the cache was made.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

// --- the enricher's core ---------------------------------------------------------------------

/// What the rules say of a place, before it is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceAnswer {
    pub country: Option<CountryCode>,
    pub region: Option<String>,
    /// IANA zone name ("UTC" for an unknown place).
    pub zone: String,
}

/// The rules a cache miss asks (in the product: `operators/enrich.py`).
pub trait Rules {
    type Error;
    /// `device_class(user_agent, device)`.
    fn device_class(
        &mut self,
        user_agent: Option<&str>,
        device: Option<&str>,
    ) -> Result<DeviceClass, Self::Error>;
    /// `normalise_country`, `normalise_region`, then `timezone_name` of the normalised place.
    fn place(
        &mut self,
        country: Option<&str>,
        region: Option<&str>,
    ) -> Result<PlaceAnswer, Self::Error>;
    /// The zone of an IANA name other than "UTC", from `tzdata`'s TZif file.
    fn zone(&mut self, name: &str) -> Result<Zone, Self::Error>;
}

#[derive(Clone)]
struct Place {
    region: Option<Arc<str>>,
    country: Option<CountryCode>,
    /// Row of `ContextCaches::countries`.
    country_row: u16,
    /// Index of `ContextCaches::zones`.
    zone: u16,
}

/// A country's 24 segment ids (6 device classes x 4 buckets), interned when first met.
struct CountryRow {
    segments: [Id; 24],
}

/// Bounded caches of the rules' answers, the zones met and the segment ids: all an
/// `Enricher` needs besides the rules themselves.
pub struct ContextCaches {
    devices: PairCache<DeviceClass>,
    places: PairCache<Place>,
    zones: Vec<Zone>,
    zone_ids: FxHashMap<Box<str>, u16>,
    /// Row 0 is the unknown country (`--`).
    countries: Vec<CountryRow>,
    country_rows: FxHashMap<CountryCode, u16>,
}

impl ContextCaches {
    pub fn new(cache_size: usize) -> ContextCaches {
        let mut zone_ids = FxHashMap::default();
        zone_ids.insert(Box::from("UTC"), 0);
        ContextCaches {
            devices: PairCache::new(cache_size),
            places: PairCache::new(cache_size),
            zones: vec![Zone::utc()],
            zone_ids,
            countries: vec![CountryRow { segments: segment_ids(None) }],
            country_rows: FxHashMap::default(),
        }
    }

    /// The context of one event; `rules` is asked only about contexts not in the caches.
    #[allow(clippy::too_many_arguments)]
    pub fn enrich_with<R: Rules>(
        &mut self,
        rules: &mut R,
        user_agent: Option<&str>,
        device: Option<&str>,
        country: Option<&str>,
        region: Option<&str>,
        ts_us: i64,
        utc_offset_s: i32,
    ) -> Result<EventContext, R::Error> {
        let device_class = self.device_class(rules, user_agent, device)?;
        let place = self.place(rules, country, region)?;
        let wall_us = local_wall_us(ts_us, utc_offset_s, &mut self.zones[usize::from(place.zone)]);
        let (weekday, local_hour) = weekday_and_hour(wall_us);
        let tod_bucket = TimeOfDay::from_hour(local_hour);
        let row = &self.countries[usize::from(place.country_row)];
        let segment = row.segments[device_class as usize * 4 + tod_bucket as usize];
        Ok(EventContext {
            region: place.region,
            segment,
            country: place.country,
            device_class,
            tod_bucket,
            weekday,
            is_weekend: weekday >= 5,
            local_hour,
        })
    }

    /// The local wall clock (microseconds since 1970-01-01) of an event at a place.
    pub fn local_wall_us_with<R: Rules>(
        &mut self,
        rules: &mut R,
        country: Option<&str>,
        region: Option<&str>,
        ts_us: i64,
        utc_offset_s: i32,
    ) -> Result<i64, R::Error> {
        let place = self.place(rules, country, region)?;
        Ok(local_wall_us(ts_us, utc_offset_s, &mut self.zones[usize::from(place.zone)]))
    }

    fn device_class<R: Rules>(
        &mut self,
        rules: &mut R,
        user_agent: Option<&str>,
        device: Option<&str>,
    ) -> Result<DeviceClass, R::Error> {
        let hash = self.devices.hash(user_agent, device);
        if let Some(&class) = self.devices.get(hash, user_agent, device) {
            return Ok(class);
        }
        let class = rules.device_class(user_agent, device)?;
        Ok(*self.devices.insert(hash, user_agent, device, class))
    }

    fn place<R: Rules>(
        &mut self,
        rules: &mut R,
        country: Option<&str>,
        region: Option<&str>,
    ) -> Result<Place, R::Error> {
        let hash = self.places.hash(country, region);
        if let Some(place) = self.places.get(hash, country, region) {
            return Ok(place.clone());
        }
        let answer = rules.place(country, region)?;
        let zone = match self.zone_ids.get(answer.zone.as_str()) {
            Some(&zone) => zone,
            None => {
                let loaded = rules.zone(&answer.zone)?;
                let zone = u16::try_from(self.zones.len()).expect("fewer than 2^16 IANA zones");
                self.zones.push(loaded);
                self.zone_ids.insert(answer.zone.as_str().into(), zone);
                zone
            }
        };
        let country_row = match answer.country {
            None => 0,
            Some(code) => *self.country_rows.entry(code).or_insert_with(|| {
                self.countries.push(CountryRow { segments: segment_ids(Some(code)) });
                u16::try_from(self.countries.len() - 1).expect("676 two-letter codes at most")
            }),
        };
        let place = Place {
            region: answer.region.map(Arc::from),
            country: answer.country,
            country_row,
            zone,
        };
        Ok(self.places.insert(hash, country, region, place).clone())
    }

    /// (device hits, misses, entries), (place hits, misses, entries) and zones loaded.
    pub fn stats(&self) -> [(&'static str, u64); 7] {
        let (device_hits, device_misses) = self.devices.counts();
        let (place_hits, place_misses) = self.places.counts();
        [
            ("device_hits", device_hits),
            ("device_misses", device_misses),
            ("device_entries", self.devices.len() as u64),
            ("place_hits", place_hits),
            ("place_misses", place_misses),
            ("place_entries", self.places.len() as u64),
            ("zones", self.zones.len() as u64),
        ]
    }
}

fn segment_ids(country: Option<CountryCode>) -> [Id; 24] {
    let mut ids = [0; 24];
    for device in DeviceClass::ALL {
        for tod in TimeOfDay::ALL {
            ids[device as usize * 4 + tod as usize] =
                intern::intern(&segment_key(device, tod, country));
        }
    }
    ids
}

// --- the rules in Python ---------------------------------------------------------------------

/// Handles on `operators.enrich`'s rule functions and on `tzdata`'s files, taken once.
struct PyRules {
    device_class: Py<PyAny>,
    normalise_country: Py<PyAny>,
    normalise_region: Py<PyAny>,
    timezone_name: Py<PyAny>,
    tzdata: Py<PyAny>,
}

impl PyRules {
    fn import(py: Python<'_>) -> PyResult<PyRules> {
        let rules = py.import("operators.enrich")?;
        let files = py.import("importlib.resources")?.getattr("files")?;
        Ok(PyRules {
            device_class: rules.getattr("device_class")?.unbind(),
            normalise_country: rules.getattr("normalise_country")?.unbind(),
            normalise_region: rules.getattr("normalise_region")?.unbind(),
            timezone_name: rules.getattr("timezone_name")?.unbind(),
            tzdata: files.call1(("tzdata",))?.unbind(),
        })
    }
}

struct BoundRules<'a, 'py> {
    py: Python<'py>,
    rules: &'a PyRules,
}

impl Rules for BoundRules<'_, '_> {
    type Error = PyErr;

    fn device_class(
        &mut self,
        user_agent: Option<&str>,
        device: Option<&str>,
    ) -> PyResult<DeviceClass> {
        let class = self.rules.device_class.bind(self.py).call1((user_agent, device))?;
        let name: &str = class.extract()?;
        DeviceClass::from_name(name).ok_or_else(|| {
            PyValueError::new_err(format!("device_class returned {name:?}, not a device class"))
        })
    }

    fn place(&mut self, country: Option<&str>, region: Option<&str>) -> PyResult<PlaceAnswer> {
        let py = self.py;
        let code: Option<String> =
            self.rules.normalise_country.bind(py).call1((country,))?.extract()?;
        let region: Option<String> =
            self.rules.normalise_region.bind(py).call1((region, code.as_deref()))?.extract()?;
        let zone: String = self
            .rules
            .timezone_name
            .bind(py)
            .call1((code.as_deref(), region.as_deref()))?
            .extract()?;
        let country = match code {
            None => None,
            Some(code) => Some(CountryCode::new(&code).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "normalise_country returned {code:?}, not an alpha-2 code"
                ))
            })?),
        };
        Ok(PlaceAnswer { country, region, zone })
    }

    fn zone(&mut self, name: &str) -> PyResult<Zone> {
        // `operators.enrich._zone`: tzdata's file, not the OS's, pinned by uv.lock.
        let mut parts = vec!["zoneinfo"];
        parts.extend(name.split('/'));
        let path = self
            .rules
            .tzdata
            .bind(self.py)
            .call_method1("joinpath", PyTuple::new(self.py, parts)?)?;
        let data = path.call_method0("read_bytes")?;
        Ok(Zone::from_tzif(name, data.cast::<PyBytes>()?.as_bytes())?)
    }
}

// --- the enricher ----------------------------------------------------------------------------

/// Per-process context enrichment: bounded caches in front of `operators/enrich.py`'s rules,
/// local time computed natively.
#[pyclass(module = "operators._native")]
pub struct Enricher {
    caches: ContextCaches,
    rules: PyRules,
}

impl Enricher {
    /// An enricher remembering `cache_size` (>= 1) user-agent/device pairs and as many places.
    pub fn new(py: Python<'_>, cache_size: usize) -> PyResult<Enricher> {
        check_cache_size(i64::try_from(cache_size).unwrap_or(i64::MAX))?;
        Ok(Enricher { caches: ContextCaches::new(cache_size), rules: PyRules::import(py)? })
    }

    /// The context of one event at `ts_us` (UTC microseconds), whose timestamp was written
    /// with `utc_offset_s`. A context seen before costs no Python call and no allocation.
    #[allow(clippy::too_many_arguments)]
    pub fn enrich(
        &mut self,
        py: Python<'_>,
        user_agent: Option<&str>,
        device: Option<&str>,
        country: Option<&str>,
        region: Option<&str>,
        ts_us: i64,
        utc_offset_s: i32,
    ) -> PyResult<EventContext> {
        let mut rules = BoundRules { py, rules: &self.rules };
        self.caches.enrich_with(
            &mut rules,
            user_agent,
            device,
            country,
            region,
            ts_us,
            utc_offset_s,
        )
    }
}

fn check_cache_size(cache_size: i64) -> Result<(), Invalid> {
    ensure((1..=i64::from(u32::MAX)).contains(&cache_size), || {
        format!("cache_size must be in [1, {}], got {cache_size}", u32::MAX)
    })
}

type ContextTuple<'a> =
    (&'static str, Option<&'a str>, Option<&'a str>, &'static str, u8, bool, u8, &'static str);

#[pymethods]
impl Enricher {
    #[new]
    #[pyo3(signature = (cache_size=DEFAULT_CACHE_SIZE as i64))]
    fn py_new(py: Python<'_>, cache_size: i64) -> PyResult<Enricher> {
        check_cache_size(cache_size)?;
        Enricher::new(py, cache_size as usize)
    }

    /// (device_class, country, region, tod_bucket, weekday, is_weekend, local_hour, segment)
    #[pyo3(name = "enrich")]
    #[allow(clippy::too_many_arguments)]
    fn py_enrich<'py>(
        &mut self,
        py: Python<'py>,
        user_agent: Option<&str>,
        device: Option<&str>,
        country: Option<&str>,
        region: Option<&str>,
        ts_us: i64,
        utc_offset_s: i32,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let ctx = self.enrich(py, user_agent, device, country, region, ts_us, utc_offset_s)?;
        let tuple: ContextTuple<'_> = (
            ctx.device_class.name(),
            ctx.country.as_ref().map(CountryCode::as_str),
            ctx.region.as_deref(),
            ctx.tod_bucket.name(),
            ctx.weekday,
            ctx.is_weekend,
            ctx.local_hour,
            ctx.segment_key(),
        );
        tuple.into_pyobject(py)
    }

    /// The local wall clock of an event at a place, in microseconds since 1970-01-01.
    fn local_time_us(
        &mut self,
        py: Python<'_>,
        country: Option<&str>,
        region: Option<&str>,
        ts_us: i64,
        utc_offset_s: i32,
    ) -> PyResult<i64> {
        let mut rules = BoundRules { py, rules: &self.rules };
        self.caches.local_wall_us_with(&mut rules, country, region, ts_us, utc_offset_s)
    }

    /// Cache hits, misses and entries per cache, and zones loaded.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = PyDict::new(py);
        for (name, count) in self.caches.stats() {
            stats.set_item(name, count)?;
        }
        Ok(stats)
    }

    #[getter]
    fn cache_size(&self) -> usize {
        self.caches.devices.capacity()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Enricher>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use super::*;

    const S: i64 = US_PER_S;

    /// `tzdata`'s zoneinfo folder in the project's venv (`uv sync` made it).
    fn tzdata_dir() -> PathBuf {
        let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
        let entries = std::fs::read_dir(&lib).expect("the venv is there: run `uv sync --frozen`");
        entries
            .map(|e| e.unwrap().path().join("site-packages/tzdata/zoneinfo"))
            .find(|dir| dir.is_dir())
            .expect("tzdata is installed in the venv")
    }

    fn zone(name: &str) -> Zone {
        let bytes = std::fs::read(tzdata_dir().join(name)).unwrap();
        Zone::from_tzif(name, &bytes).unwrap()
    }

    /// Seconds since the epoch of a UTC civil time, for readable test inputs.
    fn utc_s(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        // Days from civil (Hinnant): jiff's timestamps stop a day before Python's.
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + h * 3600 + mi * 60
    }

    /// (weekday, hour, minute) of the wall clock where `utc` happened, in `zone`.
    fn local(zone: &mut Zone, utc: i64, utc_offset_s: i32) -> (u8, u8, i64) {
        let wall = local_wall_us(utc * S, utc_offset_s, zone);
        let (weekday, hour) = weekday_and_hour(wall);
        (weekday, hour, wall.rem_euclid(US_PER_HOUR) / (60 * S))
    }

    #[test]
    fn vocabulary_round_trips() {
        for class in DeviceClass::ALL {
            assert_eq!(DeviceClass::from_name(class.name()), Some(class));
        }
        assert_eq!(DeviceClass::from_name("Mobile"), None);
        let buckets: Vec<_> = (0..24).map(|h| TimeOfDay::from_hour(h).name()).collect();
        assert_eq!(buckets[5..7], ["night", "morning"]);
        assert_eq!(buckets[17..19], ["afternoon", "evening"]);
        assert_eq!(CountryCode::new("DE").map(|c| c.as_str().to_owned()), Some("DE".into()));
        assert_eq!(CountryCode::new("de"), None);
        assert_eq!(CountryCode::new("DEU"), None);
        assert_eq!(CountryCode::new("É"), None);
        assert_eq!(
            segment_key(DeviceClass::Mobile, TimeOfDay::Evening, CountryCode::new("DE")),
            "mobile|evening|DE"
        );
        assert_eq!(segment_key(DeviceClass::Desktop, TimeOfDay::Night, None), "desktop|night|--");
        assert_eq!(std::mem::size_of::<EventContext>(), 32);
    }

    #[test]
    fn weekday_and_hour_of_wall_clocks() {
        assert_eq!(weekday_and_hour(0), (3, 0)); // 1970-01-01 was a Thursday
        assert_eq!(weekday_and_hour(-1), (2, 23));
        assert_eq!(weekday_and_hour(DATETIME_MIN_US), (0, 0)); // 0001-01-01, a Monday
        assert_eq!(weekday_and_hour(DATETIME_MAX_US), (4, 23)); // 9999-12-31, a Friday
    }

    #[test]
    fn local_time_across_daylight_saving_changes() {
        let mut berlin = zone("Europe/Berlin");
        // CET (+1) until 01:00 UTC on the last Sunday of March, CEST (+2) after.
        assert_eq!(local(&mut berlin, utc_s(2024, 3, 31, 0, 59), 0), (6, 1, 59));
        assert_eq!(local(&mut berlin, utc_s(2024, 3, 31, 1, 0), 0), (6, 3, 0));
        assert_eq!(local(&mut berlin, utc_s(2024, 10, 27, 0, 59), 0), (6, 2, 59));
        assert_eq!(local(&mut berlin, utc_s(2024, 10, 27, 1, 0), 0), (6, 2, 0));
        // Past the TZif table (slim files end in 1996 for Berlin): the POSIX rule.
        assert_eq!(local(&mut berlin, utc_s(2087, 3, 30, 1, 0), 0), (6, 3, 0));
        // Before the first transition: local mean time, +00:53:28.
        assert_eq!(local(&mut berlin, utc_s(1800, 1, 1, 0, 0), 0), (2, 0, 53));
        let mut new_york = zone("America/New_York");
        assert_eq!(local(&mut new_york, utc_s(2024, 3, 10, 6, 59), 0), (6, 1, 59));
        assert_eq!(local(&mut new_york, utc_s(2024, 3, 10, 7, 0), 0), (6, 3, 0));
        // The last day of the calendar, beyond jiff's own timestamps (looked up 400 years
        // earlier): 05:00 UTC is midnight in New York, a Friday.
        assert_eq!(local(&mut new_york, utc_s(9999, 12, 31, 5, 0), 0), (4, 0, 0));
        assert_eq!(local(&mut new_york, utc_s(9999, 7, 1, 4, 0), 0), (3, 0, 0)); // EDT
        let mut sydney = zone("Australia/Sydney");
        assert_eq!(local(&mut sydney, utc_s(2024, 1, 15, 0, 0), 0).1, 11);
        assert_eq!(local(&mut sydney, utc_s(2024, 7, 15, 0, 0), 0).1, 10);
    }

    #[test]
    fn where_python_would_overflow_the_event_keeps_its_own_wall_clock() {
        // Kiritimati (+14): 9999-12-31T10:00Z would be 10000-01-01 there.
        let mut kiritimati = zone("Pacific/Kiritimati");
        assert_eq!(local(&mut kiritimati, utc_s(9999, 12, 31, 9, 59), 0), (4, 23, 59));
        assert_eq!(local(&mut kiritimati, utc_s(9999, 12, 31, 10, 0), 0), (4, 10, 0));
        assert_eq!(local(&mut kiritimati, utc_s(9999, 12, 31, 10, 0), -3600), (4, 9, 0));
        // 0001-01-01T03:00+05:00 is in year 0 in UTC: Python cannot even convert it.
        let mut utc = Zone::utc();
        let own = utc_s(1, 1, 1, 3, 0) - 5 * 3600;
        assert_eq!(local(&mut utc, own, 5 * 3600), (0, 3, 0));
        // Honolulu (-10) on the first day: 0001-01-01T05:00Z would be year 0 there.
        let mut honolulu = zone("Pacific/Honolulu");
        assert_eq!(local(&mut honolulu, utc_s(1, 1, 1, 5, 0), 0), (0, 5, 0));
        // Any input gives an answer, even outside Python's range.
        assert_eq!(weekday_and_hour(local_wall_us(i64::MAX, 86_399, &mut utc)).1, 4);
    }

    /// The remembered interval never changes an answer: for every zone of tzdata, every
    /// transition (and a second either side), in time order and shuffled.
    #[test]
    fn cached_offsets_equal_direct_lookups_in_every_zone() {
        let mut files = vec![tzdata_dir()];
        let mut zones = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            if !bytes.starts_with(b"TZif") {
                continue;
            }
            zones += 1;
            let name = path.to_string_lossy().into_owned();
            let mut cached = Zone::from_tzif(&name, &bytes).unwrap();
            let start = Timestamp::from_second(utc_s(1800, 1, 1, 0, 0)).unwrap();
            let end = utc_s(2100, 1, 1, 0, 0);
            let mut instants: Vec<i64> = cached
                .tz
                .following(start)
                .map(|t| t.timestamp().as_second())
                .take_while(|&t| t < end)
                .flat_map(|t| [t - 1, t, t + 1])
                .collect();
            instants.push(start.as_second());
            let mut x = 0x9e37_79b9_7f4a_7c15_u64;
            for _ in 0..200 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let span = (DATETIME_MAX_US - DATETIME_MIN_US) / S;
                instants.push(DATETIME_MIN_US / S + (x >> 1) as i64 % span);
            }
            for pass in 0..2 {
                if pass == 1 {
                    instants.sort_unstable();
                }
                for &t in &instants {
                    assert_eq!(cached.offset_at(t), cached.offset_uncached(t), "{name} at {t}");
                }
            }
            // The 400-year shift: where jiff can look the far future up itself, same answer.
            for t in (utc_s(9000, 1, 1, 0, 0)..utc_s(9999, 12, 29, 0, 0)).step_by(7_919_993) {
                let direct = cached.tz.to_offset(Timestamp::from_second(t).unwrap()).seconds();
                assert_eq!(cached.offset_uncached(t), direct, "{name} at {t}");
            }
        }
        assert!(zones > 300, "{zones} zones");
    }

    #[test]
    fn cache_is_bounded_and_gives_a_second_chance() {
        let mut cache: PairCache<u32> = PairCache::new(3);
        let keys = ["a", "b", "c", "d", "e"];
        for (i, k) in keys[..3].iter().enumerate() {
            let h = cache.hash(Some(k), None);
            assert!(cache.get(h, Some(k), None).is_none());
            cache.insert(h, Some(k), None, i as u32);
        }
        // "a" is used again, so the hand passes it and evicts "b" for "d".
        let ha = cache.hash(Some("a"), None);
        assert_eq!(cache.get(ha, Some("a"), None), Some(&0));
        let hd = cache.hash(Some("d"), None);
        cache.insert(hd, Some("d"), None, 3);
        assert_eq!(cache.len(), 3);
        let hb = cache.hash(Some("b"), None);
        assert_eq!(cache.get(hb, Some("b"), None), None);
        assert_eq!(cache.get(ha, Some("a"), None), Some(&0));
        assert_eq!(cache.get(hd, Some("d"), None), Some(&3));
        // None and "" are different keys, and so are (x, None) and (None, x).
        let h1 = cache.hash(None, Some("a"));
        assert_eq!(cache.get(h1, None, Some("a")), None);
        let h2 = cache.hash(Some(""), None);
        cache.insert(h2, Some(""), None, 9);
        let h3 = cache.hash(None, None);
        assert_eq!(cache.get(h3, None, None), None);
        assert_eq!(cache.get(h2, Some(""), None), Some(&9));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.counts(), (4, 5));
        for i in 0..1000 {
            let k = format!("k{i}");
            let h = cache.hash(Some(&k), Some("x"));
            if cache.get(h, Some(&k), Some("x")).is_none() {
                cache.insert(h, Some(&k), Some("x"), i);
            }
            assert!(cache.len() <= 3 && cache.index.len() == cache.len());
        }
    }

    /// Rules that count how often they are asked.
    #[derive(Default)]
    struct CountingRules {
        asked: HashMap<&'static str, usize>,
    }

    impl Rules for CountingRules {
        type Error = Invalid;

        fn device_class(
            &mut self,
            ua: Option<&str>,
            device: Option<&str>,
        ) -> Result<DeviceClass, Invalid> {
            *self.asked.entry("device").or_default() += 1;
            Ok(match (ua, device) {
                (_, Some("tablet")) => DeviceClass::Tablet,
                (Some(ua), _) if ua.contains("iPhone") => DeviceClass::Mobile,
                (Some(_), _) => DeviceClass::Desktop,
                (None, _) => DeviceClass::Unknown,
            })
        }

        fn place(
            &mut self,
            country: Option<&str>,
            region: Option<&str>,
        ) -> Result<PlaceAnswer, Invalid> {
            *self.asked.entry("place").or_default() += 1;
            let country = country.and_then(|c| CountryCode::new(&c.to_ascii_uppercase()));
            let zone = match country.as_ref().map(CountryCode::as_str) {
                Some("DE") => "Europe/Berlin",
                Some("US") => "America/New_York",
                Some("GB") => "Europe/London",
                Some("AU") => "Australia/Sydney",
                Some("BR") => "America/Sao_Paulo",
                Some("JP") => "Asia/Tokyo",
                Some("IN") => "Asia/Kolkata",
                _ => "UTC",
            };
            Ok(PlaceAnswer { country, region: region.map(str::to_uppercase), zone: zone.into() })
        }

        fn zone(&mut self, name: &str) -> Result<Zone, Invalid> {
            *self.asked.entry("zone").or_default() += 1;
            Ok(zone(name))
        }
    }

    #[test]
    fn hits_ask_no_rules_and_answers_survive_eviction() {
        let mut caches = ContextCaches::new(2);
        let mut rules = CountingRules::default();
        let summer = utc_s(2024, 7, 13, 4, 0) * S; // a Saturday
        let enrich = |caches: &mut ContextCaches, rules: &mut CountingRules, ua, country| {
            caches.enrich_with(rules, Some(ua), None, Some(country), Some("by"), summer, 0).unwrap()
        };
        let de = enrich(&mut caches, &mut rules, "iPhone", "de");
        assert_eq!(
            (de.device_class, de.country.map(|c| c.0), de.region.as_deref()),
            (DeviceClass::Mobile, Some(*b"DE"), Some("BY"))
        );
        assert_eq!(
            (de.weekday, de.is_weekend, de.local_hour, de.tod_bucket),
            (5, true, 6, TimeOfDay::Morning)
        );
        assert_eq!(de.segment_key(), "mobile|morning|DE");
        assert_eq!(enrich(&mut caches, &mut rules, "iPhone", "de"), de);
        assert_eq!((rules.asked["device"], rules.asked["place"], rules.asked["zone"]), (1, 1, 1));
        // Three user agents and three places through caches of two: evictions, same answers.
        for round in 0..3 {
            for (ua, country) in [("iPhone", "de"), ("Windows", "us"), ("Mac", "xx")] {
                let ctx = enrich(&mut caches, &mut rules, ua, country);
                let hour = match country {
                    "de" => 6,
                    "us" => 0,
                    _ => 4,
                };
                assert_eq!(ctx.local_hour, hour, "{country} in round {round}");
                assert_eq!(ctx.device_class == DeviceClass::Mobile, ua == "iPhone");
                assert!(caches.devices.len() <= 2 && caches.places.len() <= 2);
            }
        }
        assert!(rules.asked["device"] > 3 && rules.asked["place"] > 3);
        assert_eq!(rules.asked["zone"], 2); // zones are kept, not evicted
        assert_eq!(caches.stats()[6], ("zones", 3));
    }

    /// Nanoseconds per event once the caches are warm: the Taobao head's shape (84,252
    /// events over nine days in time order, no context) and a mix with contexts (200 user
    /// agents x 4 device fields, 8 countries x 5 regions, offsets of four zones). Run:
    /// `cargo test --release enrich::tests::bench -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_warm_caches() {
        let n = 84_252usize;
        let start = utc_s(2017, 11, 25, 0, 0) * S;
        let step = 9 * US_PER_DAY / n as i64;
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let agents: Vec<String> = (0..200)
            .map(|i| match i % 4 {
                0 => format!("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{i} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
                1 => format!("Mozilla/5.0 (Linux; Android 14; Pixel {i}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36"),
                2 => format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.{i}.0 Safari/537.36"),
                _ => format!("Mozilla/5.0 (compatible; Googlebot/2.{i}; +http://www.google.com/bot.html)"),
            })
            .collect();
        let devices = [None, Some("mobile"), Some("Tablet"), None];
        let countries = ["de", "US", "gb", "AU", "br", "JP", "in", "xx"];
        let regions = [None, Some("CA"), Some("by"), Some("NSW"), Some("São Paulo")];
        let offsets = [0, 3600, -18_000, 28_800];
        type Row<'a> =
            (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>, i64, i32);
        let taobao: Vec<Row<'_>> =
            (0..n).map(|i| (None, None, None, None, start + i as i64 * step, 0)).collect();
        let mix: Vec<Row<'_>> = (0..n)
            .map(|i| {
                let r = next() as usize;
                (
                    Some(agents[r % agents.len()].as_str()),
                    devices[(r >> 8) % devices.len()],
                    Some(countries[(r >> 12) % countries.len()]),
                    regions[(r >> 16) % regions.len()],
                    start + i as i64 * step,
                    offsets[(r >> 20) % offsets.len()],
                )
            })
            .collect();
        for (name, rows) in [("taobao (no context)", &taobao), ("mix with contexts", &mix)] {
            let mut caches = ContextCaches::new(DEFAULT_CACHE_SIZE);
            let mut rules = CountingRules::default();
            let mut best = f64::INFINITY;
            let mut check = 0u64;
            for _ in 0..6 {
                let t0 = std::time::Instant::now();
                for &(ua, device, country, region, ts_us, offset_s) in rows.iter() {
                    let ctx = caches
                        .enrich_with(&mut rules, ua, device, country, region, ts_us, offset_s)
                        .unwrap();
                    check = check.wrapping_add(u64::from(ctx.segment) + u64::from(ctx.local_hour));
                }
                best = best.min(t0.elapsed().as_secs_f64() * 1e9 / rows.len() as f64);
            }
            let (hits, misses) = caches.devices.counts();
            println!("{name}: {best:.1} ns/event (device hits {hits}, misses {misses}; {check})");
        }
    }
}
