//! The interaction event as the native core sees it (schema: `freshrec/events.py`), and the
//! dataflow's decoder of the events topic's messages: [`decode_fast`], a strict reader of the
//! event object, answers only when certain that `freshrec.events.decode_event` gives exactly
//! that event; anything else goes to the schema itself (`decode_message_fields`), which gives
//! the event, a tombstone ([`DecodedErase`], `"type": "erase"`: rare, never on the fast path)
//! or the dead-letter reason. One schema, and a native path that is only ever narrower.

use std::borrow::Cow;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::errors::{Invalid, py_float};

/// The event types of the schema, in the order of `freshrec.events.EVENT_TYPES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventType {
    View = 0,
    AddToCart = 1,
    Purchase = 2,
    Favourite = 3,
    RecImpression = 4,
    RecClick = 5,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::View,
        EventType::AddToCart,
        EventType::Purchase,
        EventType::Favourite,
        EventType::RecImpression,
        EventType::RecClick,
    ];

    /// The schema's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
            EventType::Favourite => "favourite",
            EventType::RecImpression => "rec_impression",
            EventType::RecClick => "rec_click",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        Some(match name {
            "view" => EventType::View,
            "add_to_cart" => EventType::AddToCart,
            "purchase" => EventType::Purchase,
            "favourite" => EventType::Favourite,
            "rec_impression" => EventType::RecImpression,
            "rec_click" => EventType::RecClick,
            _ => return None,
        })
    }

    pub fn from_index(index: u8) -> Option<EventType> {
        EventType::ALL.get(index as usize).copied()
    }

    /// Events that express interest in an item and so train the model and fill the user's
    /// window (`freshrec.events.INTERACTION_TYPES`): all but the impression.
    pub fn is_interaction(self) -> bool {
        self != EventType::RecImpression
    }
}

// --- the decoded event ------------------------------------------------------------------------

/// Where and how the event happened (`freshrec.events.Context`); every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub user_agent: Option<String>,
    pub device: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub page: Option<String>,
    pub referrer: Option<String>,
}

/// What the shop knows of a user up front (`freshrec.events.Profile`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub age: Option<i64>,
    pub gender: Option<String>,
    pub occupation: Option<String>,
    pub postal_code: Option<String>,
    pub segment: Option<String>,
}

/// A valid event (`freshrec.events.Event`), its time as the instant and the offset written.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    pub event_id: String,
    pub user_id: String,
    pub item_id: String,
    pub event_type: EventType,
    /// Unix microseconds, UTC.
    pub ts_us: i64,
    /// Unix seconds: `event.ts.timestamp()` in Python, bit for bit.
    pub ts_s: f64,
    /// The UTC offset written in the `ts` string, in seconds (`Z` and `-00:00` are 0).
    pub utc_offset_s: i32,
    pub session_id: Option<String>,
    pub category_id: Option<String>,
    pub recommendation_id: Option<String>,
    pub context: Option<Context>,
    pub profile: Option<Profile>,
}

/// A tombstone (`freshrec.events.Erase`): forget the user as of here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedErase {
    pub user_id: String,
    /// Names the request (its completion is recorded under it).
    pub erasure_id: String,
    /// When it was requested, unix microseconds.
    pub ts_us: i64,
}

/// A valid message of the events topic.
// Not boxed, as `Fast`: moved once per event into the caller's state.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Event(DecodedEvent),
    Erase(DecodedErase),
}

impl Message {
    /// The user the message is about (the key it must be produced under).
    pub fn user_id(&self) -> &str {
        match self {
            Message::Event(event) => &event.user_id,
            Message::Erase(erase) => &erase.user_id,
        }
    }
}

/// The fast path's answer: certainly this valid event, or "ask the schema".
// Not boxed: it is returned once per event and moved straight into the caller's state.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Fast {
    Valid(DecodedEvent),
    NotSure,
}

// --- time as Python's datetime holds it ------------------------------------------------------

/// `datetime(1, 1, 1, tzinfo=UTC)` and `datetime.max` (as UTC) in unix microseconds.
pub const DATETIME_MIN_US: i64 = -62_135_596_800_000_000;
pub const DATETIME_MAX_US: i64 = 253_402_300_799_999_999;

/// Years the fast path decodes. Within them every instant is below 2^53 microseconds from the
/// epoch, so `ts_us as f64 / 1e6` is a single correctly rounded division: exactly what
/// Python's `timestamp()` computes (the exact integer microseconds over 10**6). Other years
/// (valid from 0001 to 9999) go to the judge.
const FAST_YEARS: std::ops::RangeInclusive<i64> = 1700..=2200;

/// `timedelta(seconds=x)`, and `datetime.fromtimestamp(x, UTC)`, in whole microseconds:
/// CPython keeps the integral seconds exactly and rounds the fraction's microseconds
/// (`fract * 1e6` in double precision) half to even (`accum`/`delta_new` in
/// `_datetimemodule.c`, `_PyTime_DoubleToDenominator`; checked against Python by the tests).
/// `None` beyond ±1e12 s (and for NaN/inf), where Python may raise instead.
pub fn seconds_to_us(x: f64) -> Option<i64> {
    if x.is_nan() || x.abs() >= 1e12 {
        return None;
    }
    Some(x.trunc() as i64 * 1_000_000 + (x.fract() * 1e6).round_ties_even() as i64)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The ASCII digits `s` is made of, as a number; `None` if anything else is there.
fn digits(s: &[u8]) -> Option<i64> {
    s.iter().try_fold(0i64, |n, &b| b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0')))
}

/// `(ts_us, utc_offset_s)` of `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,6}](Z|z|±HH:MM)`: the forms
/// msgspec reads exactly so (checked by experiment with msgspec 0.22: it also takes `±HHMM`
/// and more than 6 fractional digits, rounded, which are left to the judge). Invalid dates
/// and times (Feb 30, 24:00, leap second 60, offset hours > 23) are refused by msgspec too.
fn parse_ts(s: &[u8]) -> Option<(i64, i32)> {
    let at = |i: usize| s.get(i).copied();
    let (b'-', b'-', b'T' | b't' | b' ', b':', b':') = (at(4)?, at(7)?, at(10)?, at(13)?, at(16)?)
    else {
        return None;
    };
    let year = digits(&s[0..4])?;
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    let hour = digits(&s[11..13])?;
    let minute = digits(&s[14..16])?;
    let second = digits(s.get(17..19)?)?;
    let mut rest = &s[19..];
    let mut micros = 0;
    if let [b'.', fraction @ ..] = rest {
        let n = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 6 {
            return None;
        }
        micros = digits(&fraction[..n])? * 10i64.pow(6 - n as u32);
        rest = &fraction[n..];
    }
    let offset_s = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None, // no zone (msgspec: naive, refused by tz=True), or another form
    };
    if !FAST_YEARS.contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let local_s = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(((local_s - offset_s) * 1_000_000 + micros, offset_s as i32))
}

// --- the text rules --------------------------------------------------------------------------

/// The string types of the schema (`Id`, `ShortText`, `LongText`, `CountryCode`).
#[derive(Debug, Clone, Copy)]
enum Text {
    Id,
    Short,
    Long,
    Country,
}

impl Text {
    fn accepts(self, s: &str) -> bool {
        match self {
            Text::Id => printable_within(s, 128),
            Text::Short => printable_within(s, 256),
            Text::Long => printable_within(s, 2048),
            // `^[A-Za-z]{2}$(?!\n)`: Python's `re` ranges without IGNORECASE are ASCII only.
            Text::Country => s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()),
        }
    }
}

/// `_ID_PATTERN` with a `max_length`: 1 to `max_chars` code points (Python's `len`), none of
/// them C0, DEL or C1. The pattern's `+` makes every text field non-empty, not only the ids
/// that also say `min_length=1`; `$(?!\n)` adds nothing once `\n` (C0) is refused.
fn printable_within(s: &str, max_chars: usize) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > 4 * max_chars {
        return false;
    }
    let mut chars = 0;
    for (i, &b) in bytes.iter().enumerate() {
        // U+0080..=U+009F (C1) is C2 80..=C2 9F in UTF-8; `s` is valid UTF-8, so a C2 is
        // always followed by its continuation byte.
        if b < 0x20 || b == 0x7f || (b == 0xc2 && bytes[i + 1] < 0xa0) {
            return false;
        }
        chars += usize::from(b & 0xc0 != 0x80); // count lead bytes: one per code point
    }
    chars <= max_chars
}

// --- the reader ------------------------------------------------------------------------------

// Hand-written rather than serde_json or simd-json: the fast path must accept a *subset* of
// what msgspec accepts, with msgspec's values, and that is easiest to be sure of in a reader
// that knows only the event object and refuses everything it was not written for (a general
// parser configured to agree would need auditing of its every leniency: duplicate keys, lone
// surrogates, number forms). Every `None` below means NotSure, never "invalid".
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next byte after JSON whitespace (space, tab, LF, CR: msgspec refuses others).
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn null(&mut self) -> bool {
        let found = self.peek() == Some(b'n') && self.bytes[self.pos..].starts_with(b"null");
        if found {
            self.pos += 4;
        }
        found
    }

    /// Nothing but whitespace left (msgspec: "trailing characters" otherwise).
    fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// An object, each member handed to `member` with its raw key (after the colon).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A key's raw bytes. Escaped keys are valid JSON (msgspec unescapes them) but no encoder
    /// writes them: NotSure.
    fn key(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let bytes = self.bytes;
        let rest = &bytes[self.pos..];
        let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
        if rest[end] != b'"' {
            return None;
        }
        self.pos += end + 1;
        self.expect(b':')?;
        Some(&rest[..end])
    }

    /// A string value, borrowed from the payload unless it has escapes: strict UTF-8 (as
    /// msgspec: no surrogates, overlongs or > U+10FFFF), no raw control characters (invalid
    /// JSON to msgspec).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let bytes = self.bytes;
        let rest = &bytes[self.pos..];
        let end = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        match rest[end] {
            b'"' => {
                let text = std::str::from_utf8(&rest[..end]).ok()?;
                self.pos += end + 1;
                Some(Cow::Borrowed(text))
            }
            b'\\' => self.escaped_string().map(Cow::Owned),
            _ => None,
        }
    }

    /// The rest of a string that has escapes: `\" \\ \/` and `\uXXXX` (surrogate pairs
    /// joined; a lone surrogate is invalid to msgspec). `\b \f \n \r \t` decode to control
    /// characters, which no field accepts: NotSure.
    fn escaped_string(&mut self) -> Option<String> {
        let bytes = self.bytes;
        let mut out = Vec::with_capacity(64);
        let mut i = self.pos;
        loop {
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    let escape = *bytes.get(i + 1)?;
                    i += 2;
                    match escape {
                        b'"' | b'\\' | b'/' => out.push(escape),
                        b'u' => {
                            let unit = hex4(bytes.get(i..i + 4)?)?;
                            i += 4;
                            let code = match unit {
                                0xd800..=0xdbff => {
                                    if bytes.get(i..i + 2)? != b"\\u" {
                                        return None;
                                    }
                                    let low = hex4(bytes.get(i + 2..i + 6)?)?;
                                    if !(0xdc00..=0xdfff).contains(&low) {
                                        return None;
                                    }
                                    i += 6;
                                    0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                                }
                                0xdc00..=0xdfff => return None,
                                _ => unit,
                            };
                            let mut utf8 = [0; 4];
                            out.extend_from_slice(
                                char::from_u32(code)?.encode_utf8(&mut utf8).as_bytes(),
                            );
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        self.pos = i + 1;
        // Escapes add whole characters only, so the raw runs are valid iff the whole is.
        String::from_utf8(out).ok()
    }

    /// A string of the schema's type `text`, or NotSure.
    fn text(&mut self, text: Text) -> Option<String> {
        let value = self.string()?;
        text.accepts(&value).then(|| value.into_owned())
    }

    /// `text | None`.
    fn optional_text(&mut self, text: Text) -> Option<Option<String>> {
        if self.null() { Some(None) } else { self.text(text).map(Some) }
    }

    /// `Annotated[int, Meta(ge=0, le=130)] | None`: a JSON integer literal; `-0`, floats
    /// (`35.0`, `1e1`: msgspec refuses them for an int), booleans and strings are NotSure.
    fn age(&mut self) -> Option<Option<i64>> {
        if self.null() {
            return Some(None);
        }
        let rest = &self.bytes[self.pos..];
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 3 || (n > 1 && rest[0] == b'0') {
            return None; // none, too many, or a leading zero (invalid JSON)
        }
        if matches!(rest.get(n), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let age = digits(&rest[..n])?;
        self.pos += n;
        (age <= 130).then_some(Some(age))
    }

    fn context(&mut self) -> Option<Context> {
        let mut context = Context::default();
        let mut seen = 0u16;
        self.object(|r, key| {
            let (bit, slot, text) = match key {
                b"user_agent" => (0, &mut context.user_agent, Text::Long),
                b"device" => (1, &mut context.device, Text::Short),
                b"country" => (2, &mut context.country, Text::Country),
                b"region" => (3, &mut context.region, Text::Short),
                b"city" => (4, &mut context.city, Text::Short),
                b"page" => (5, &mut context.page, Text::Long),
                b"referrer" => (6, &mut context.referrer, Text::Long),
                _ => return None, // forbid_unknown_fields
            };
            once(&mut seen, bit)?;
            *slot = r.optional_text(text)?;
            Some(())
        })?;
        Some(context)
    }

    fn profile(&mut self) -> Option<Profile> {
        let mut profile = Profile::default();
        let mut seen = 0u16;
        self.object(|r, key| {
            let (bit, slot) = match key {
                b"age" => {
                    once(&mut seen, 0)?;
                    profile.age = r.age()?;
                    return Some(());
                }
                b"gender" => (1, &mut profile.gender),
                b"occupation" => (2, &mut profile.occupation),
                b"postal_code" => (3, &mut profile.postal_code),
                b"segment" => (4, &mut profile.segment),
                _ => return None,
            };
            once(&mut seen, bit)?;
            *slot = r.optional_text(Text::Short)?;
            Some(())
        })?;
        Some(profile)
    }
}

fn hex4(hex: &[u8]) -> Option<u32> {
    hex.iter().try_fold(0, |n, &b| Some(n * 16 + (b as char).to_digit(16)?))
}

/// Marks field `bit` seen; NotSure on its second appearance. msgspec keeps the last value of
/// a duplicated key (validating each as it comes) and the ingest API's dict keeps only the
/// last: the judge sorts that out.
fn once(seen: &mut u16, bit: u32) -> Option<()> {
    let mask = 1 << bit;
    (*seen & mask == 0).then(|| *seen |= mask)
}

// --- the fast path ---------------------------------------------------------------------------

/// The event in `payload` if it is certainly valid and decoded exactly as
/// `freshrec.events.decode_event(payload, now=<now_us>, max_future_skew_s=...)` decodes it;
/// `NotSure` otherwise (invalid, or valid but unusual). Never `Valid` for a payload the
/// schema rejects.
pub fn decode_fast(payload: &[u8], now_us: i64, max_future_skew_s: f64) -> Fast {
    match fast(payload, now_us, max_future_skew_s) {
        Some(event) => Fast::Valid(event),
        None => Fast::NotSure,
    }
}

fn fast(payload: &[u8], now_us: i64, max_future_skew_s: f64) -> Option<DecodedEvent> {
    // Python needs `now` as a datetime and the skew as a timedelta; where either cannot be
    // (or may raise), the judge shows what Python does.
    if !(DATETIME_MIN_US..=DATETIME_MAX_US).contains(&now_us) {
        return None;
    }
    let max_skew_us = seconds_to_us(max_future_skew_s)?;
    let mut reader = Reader { bytes: payload, pos: 0 };
    let (mut event_id, mut user_id, mut item_id, mut event_type, mut ts) =
        (None, None, None, None, None);
    let (mut session_id, mut category_id, mut recommendation_id) = (None, None, None);
    let (mut context, mut profile) = (None, None);
    let mut seen = 0u16;
    reader.object(|r, key| {
        let bit = match key {
            b"event_id" => 0,
            b"user_id" => 1,
            b"item_id" => 2,
            b"type" => 3,
            b"ts" => 4,
            b"session_id" => 5,
            b"category_id" => 6,
            b"context" => 7,
            b"profile" => 8,
            b"recommendation_id" => 9,
            _ => return None, // forbid_unknown_fields
        };
        once(&mut seen, bit)?;
        match bit {
            // Required fields: null is "Expected `str`, got `null`".
            0 => event_id = Some(r.text(Text::Id)?),
            1 => user_id = Some(r.text(Text::Id)?),
            2 => item_id = Some(r.text(Text::Id)?),
            3 => event_type = Some(EventType::from_name(&r.string()?)?),
            4 => ts = Some(parse_ts(r.string()?.as_bytes())?),
            5 => session_id = r.optional_text(Text::Id)?,
            6 => category_id = r.optional_text(Text::Id)?,
            7 => context = if r.null() { None } else { Some(r.context()?) },
            8 => profile = if r.null() { None } else { Some(r.profile()?) },
            _ => recommendation_id = r.optional_text(Text::Id)?,
        }
        Some(())
    })?;
    reader.end()?;
    let (event_type, (ts_us, utc_offset_s)) = (event_type?, ts?);
    // `_check_semantics`: feedback names what was served, and the future-skew limit
    // (`event.ts - now > timedelta(seconds=max_future_skew_s)`, in exact microseconds).
    if matches!(event_type, EventType::RecImpression | EventType::RecClick)
        && recommendation_id.is_none()
    {
        return None;
    }
    if ts_us - now_us > max_skew_us {
        return None;
    }
    Some(DecodedEvent {
        event_id: event_id?,
        user_id: user_id?,
        item_id: item_id?,
        event_type,
        ts_us,
        ts_s: ts_us as f64 / 1e6,
        utc_offset_s,
        session_id,
        category_id,
        recommendation_id,
        context,
        profile,
    })
}

// --- the product entry point: fast path, else the judge ---------------------------------------

/// `freshrec.events.decode_message_fields`, imported once.
static JUDGE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The dataflow's decoder: the event or tombstone, or `Err(reason)` with the dead-letter
/// reason, byte for byte what `decode_message` + `errors_as_reason` give. `now_us` is the
/// server time in unix microseconds. A `PyErr` only where Python's `decode_message` raises too
/// (a `now_us` outside `datetime`'s range, a skew `timedelta` cannot hold).
pub fn decode(
    py: Python<'_>,
    payload: &[u8],
    now_us: i64,
    max_future_skew_s: f64,
) -> PyResult<Result<Message, String>> {
    match decode_fast(payload, now_us, max_future_skew_s) {
        Fast::Valid(event) => Ok(Ok(Message::Event(event))),
        Fast::NotSure => judge(py, payload, now_us, max_future_skew_s),
    }
}

type ContextFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);
type ProfileFields = (Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>);

/// The Python schema's verdict (the rare path: invalid or unusually written events, and
/// tombstones).
#[cold]
fn judge(
    py: Python<'_>,
    payload: &[u8],
    now_us: i64,
    max_future_skew_s: f64,
) -> PyResult<Result<Message, String>> {
    let judge = JUDGE.import(py, "freshrec.events", "decode_message_fields")?;
    let verdict = judge.call1((PyBytes::new(py, payload), now_us, max_future_skew_s))?;
    if let Ok(reason) = verdict.cast::<PyString>() {
        return Ok(Err(reason.to_str()?.to_owned()));
    }
    if verdict.len()? == 3 {
        let (user_id, erasure_id, ts_us): (String, String, i64) = verdict.extract()?;
        return Ok(Ok(Message::Erase(DecodedErase { user_id, erasure_id, ts_us })));
    }
    #[allow(clippy::type_complexity)]
    let (
        event_id,
        user_id,
        item_id,
        type_name,
        ts_us,
        ts_s,
        utc_offset_s,
        session_id,
        category_id,
        context,
        profile,
        recommendation_id,
    ): (
        String,
        String,
        String,
        String,
        i64,
        f64,
        i32,
        Option<String>,
        Option<String>,
        Option<ContextFields>,
        Option<ProfileFields>,
        Option<String>,
    ) = verdict.extract()?;
    let event_type = EventType::from_name(&type_name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown event type {type_name:?}")))?;
    Ok(Ok(Message::Event(DecodedEvent {
        event_id,
        user_id,
        item_id,
        event_type,
        ts_us,
        ts_s,
        utc_offset_s,
        session_id,
        category_id,
        recommendation_id,
        context: context.map(|(user_agent, device, country, region, city, page, referrer)| {
            Context { user_agent, device, country, region, city, page, referrer }
        }),
        profile: profile.map(|(age, gender, occupation, postal_code, segment)| Profile {
            age,
            gender,
            occupation,
            postal_code,
            segment,
        }),
    })))
}

// --- Python API (tests and benchmarks) -------------------------------------------------------

/// `datetime.fromtimestamp(now_s, UTC)` in unix microseconds (same rounding), or ValueError.
fn now_us_of(now_s: f64) -> Result<i64, Invalid> {
    seconds_to_us(now_s)
        .filter(|us| (DATETIME_MIN_US..=DATETIME_MAX_US).contains(us))
        .ok_or_else(|| Invalid(format!("now_s out of datetime's range: {}", py_float(now_s))))
}

impl DecodedEvent {
    /// The fields as `msgspec.structs.asdict(event)` has them, `ts` as `ts_us`, `ts_s` and
    /// `utc_offset_s`, context and profile as dicts.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("event_id", &self.event_id)?;
        d.set_item("user_id", &self.user_id)?;
        d.set_item("item_id", &self.item_id)?;
        d.set_item("type", self.event_type.name())?;
        d.set_item("ts_us", self.ts_us)?;
        d.set_item("ts_s", self.ts_s)?;
        d.set_item("utc_offset_s", self.utc_offset_s)?;
        d.set_item("session_id", &self.session_id)?;
        d.set_item("category_id", &self.category_id)?;
        let context = match &self.context {
            None => None,
            Some(c) => {
                let cd = PyDict::new(py);
                cd.set_item("user_agent", &c.user_agent)?;
                cd.set_item("device", &c.device)?;
                cd.set_item("country", &c.country)?;
                cd.set_item("region", &c.region)?;
                cd.set_item("city", &c.city)?;
                cd.set_item("page", &c.page)?;
                cd.set_item("referrer", &c.referrer)?;
                Some(cd)
            }
        };
        d.set_item("context", context)?;
        let profile = match &self.profile {
            None => None,
            Some(p) => {
                let pd = PyDict::new(py);
                pd.set_item("age", p.age)?;
                pd.set_item("gender", &p.gender)?;
                pd.set_item("occupation", &p.occupation)?;
                pd.set_item("postal_code", &p.postal_code)?;
                pd.set_item("segment", &p.segment)?;
                Some(pd)
            }
        };
        d.set_item("profile", profile)?;
        d.set_item("recommendation_id", &self.recommendation_id)?;
        Ok(d)
    }
}

/// The fast path alone: the event's fields if it is certain, else None.
#[pyfunction(name = "decode_event_fast")]
fn py_decode_event_fast<'py>(
    py: Python<'py>,
    payload: &[u8],
    now_s: f64,
    max_future_skew_s: f64,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    match decode_fast(payload, now_us_of(now_s)?, max_future_skew_s) {
        Fast::Valid(event) => Ok(Some(event.to_dict(py)?)),
        Fast::NotSure => Ok(None),
    }
}

impl DecodedErase {
    /// `{"type": "erase", "user_id", "erasure_id", "ts_us"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("type", "erase")?;
        d.set_item("user_id", &self.user_id)?;
        d.set_item("erasure_id", &self.erasure_id)?;
        d.set_item("ts_us", self.ts_us)?;
        Ok(d)
    }
}

/// The worker's decoder: the event's or tombstone's fields, or the dead-letter reason.
#[pyfunction(name = "decode_message")]
fn py_decode_message<'py>(
    py: Python<'py>,
    payload: &[u8],
    now_s: f64,
    max_future_skew_s: f64,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match decode(py, payload, now_us_of(now_s)?, max_future_skew_s)? {
        Ok(Message::Event(event)) => event.to_dict(py)?.into_any(),
        Ok(Message::Erase(erase)) => erase.to_dict(py)?.into_any(),
        Err(reason) => PyString::new(py, &reason).into_any(),
    })
}

/// Why a tombstone is refused where only events may enter (the bulk import).
pub const NOT_AN_EVENT: &str =
    "$.type: `erase` is a control message (DELETE /v1/users/{id}), not an event";

/// The worker's verdict on each of a batch of payloads where only events may enter: None for
/// a valid event, else its dead-letter reason (what `decode_message` gives, without building
/// the fields), or `NOT_AN_EVENT` for a tombstone. A payload is bytes, or a Kafka message
/// whose `value` is (None reads as empty). One call per batch: `freshrec import` judges a
/// chunk with it before producing.
#[pyfunction]
#[pyo3(name = "invalid_reasons", signature = (payloads, now_s, max_future_skew_s))]
fn py_invalid_reasons<'py>(
    payloads: &Bound<'py, PyList>,
    now_s: f64,
    max_future_skew_s: f64,
) -> PyResult<Bound<'py, PyList>> {
    let py = payloads.py();
    let now_us = now_us_of(now_s)?;
    let value_name = pyo3::intern!(py, "value");
    let out = PyList::empty(py);
    for item in payloads.iter() {
        let value = match item.cast::<PyBytes>() {
            Ok(bytes) => bytes.clone().into_any(),
            Err(_) => item.getattr(value_name)?,
        };
        let payload: &[u8] =
            if value.is_none() { b"" } else { value.cast::<PyBytes>()?.as_bytes() };
        match decode(py, payload, now_us, max_future_skew_s)? {
            Ok(Message::Event(_)) => out.append(py.None())?,
            Ok(Message::Erase(_)) => out.append(PyString::new(py, NOT_AN_EVENT))?,
            Err(reason) => out.append(PyString::new(py, &reason))?,
        }
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_decode_event_fast, m)?)?;
    m.add_function(wrap_pyfunction!(py_decode_message, m)?)?;
    m.add_function(wrap_pyfunction!(py_invalid_reasons, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_schema_order() {
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert_eq!(EventType::from_name(t.name()), Some(*t));
            assert_eq!(EventType::from_index(i as u8), Some(*t));
        }
        assert_eq!(EventType::from_name("click"), None);
        assert!(!EventType::RecImpression.is_interaction());
        assert!(EventType::RecClick.is_interaction());
    }

    // 2024-06-01T12:00:00Z, the `NOW` of tests/test_events.py.
    const NOW_US: i64 = 1_717_243_200_000_000;
    const SKEW_S: f64 = 3600.0;
    /// What `encode_event` writes for a Taobao event.
    const CANONICAL: &str = concat!(
        r#"{"event_id":"taobao-1","user_id":"taobao-u1","item_id":"taobao-i1","type":"purchase","#,
        r#""ts":"2017-11-25T00:00:00Z","category_id":"taobao-c1"}"#
    );

    fn fast(payload: &str) -> Fast {
        decode_fast(payload.as_bytes(), NOW_US, SKEW_S)
    }

    fn valid(payload: &str) -> DecodedEvent {
        match fast(payload) {
            Fast::Valid(event) => event,
            Fast::NotSure => panic!("expected Valid for {payload}"),
        }
    }

    #[track_caller]
    fn assert_not_sure(payload: &str) {
        assert_eq!(fast(payload), Fast::NotSure, "{payload}");
    }

    /// A minimal valid event with `field` set to the raw JSON `value` (added, or replaced).
    fn with(field: &str, value: &str) -> String {
        let mut fields = vec![
            ("event_id", r#""e-1""#.to_string()),
            ("user_id", r#""u-1""#.to_string()),
            ("item_id", r#""i-1""#.to_string()),
            ("type", r#""view""#.to_string()),
            ("ts", r#""2024-06-01T11:59:00Z""#.to_string()),
        ];
        match fields.iter_mut().find(|(name, _)| *name == field) {
            Some(slot) => slot.1 = value.to_string(),
            None => fields.push((field, value.to_string())),
        }
        let members: Vec<String> = fields.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
        format!("{{{}}}", members.join(","))
    }

    #[test]
    fn canonical_event_is_decoded() {
        let event = valid(CANONICAL);
        assert_eq!(
            event,
            DecodedEvent {
                event_id: "taobao-1".into(),
                user_id: "taobao-u1".into(),
                item_id: "taobao-i1".into(),
                event_type: EventType::Purchase,
                ts_us: 1_511_568_000_000_000,
                ts_s: 1_511_568_000.0,
                utc_offset_s: 0,
                session_id: None,
                category_id: Some("taobao-c1".into()),
                recommendation_id: None,
                context: None,
                profile: None,
            }
        );
    }

    #[test]
    fn full_event_in_another_order_with_whitespace_is_decoded() {
        let payload = r#"
        { "profile" : {"segment":"a", "age": 130, "gender":null},
          "context": {"country":"de", "city":"M\u00fcnchen", "page":"/p?x=\u00fc\/1",
                      "user_agent": "Mozilla/5.0 (X11)", "device": "mobile",
                      "region": "Bayern", "referrer": null},
          "recommendation_id":"rec-9", "ts" : "2024-06-01T11:59:00.123456+02:00",
          "type":"rec_click", "item_id":"i\ud83d\ude00", "user_id":"u",
          "event_id":"e", "session_id":null, "category_id":"c"
        }
        "#;
        let event = valid(payload);
        assert_eq!(event.event_type, EventType::RecClick);
        assert_eq!(event.item_id, "i😀");
        assert_eq!((event.ts_us, event.ts_s), (1_717_235_940_123_456, 1_717_235_940.123456));
        assert_eq!(event.utc_offset_s, 7200);
        assert_eq!(event.session_id, None);
        assert_eq!(event.recommendation_id.as_deref(), Some("rec-9"));
        let context = event.context.unwrap();
        assert_eq!(context.city.as_deref(), Some("München"));
        assert_eq!(context.page.as_deref(), Some("/p?x=ü/1"));
        assert_eq!(context.referrer, None);
        assert_eq!(
            event.profile,
            Some(Profile { age: Some(130), segment: Some("a".into()), ..Profile::default() })
        );
    }

    #[test]
    fn empty_and_null_nested_objects() {
        assert_eq!(valid(&with("context", "{}")).context, Some(Context::default()));
        assert_eq!(valid(&with("profile", "{ }")).profile, Some(Profile::default()));
        assert_eq!(valid(&with("context", "null")).context, None);
        assert_eq!(valid(&with("profile", "null")).profile, None);
    }

    #[test]
    fn ids_are_1_to_128_printable_code_points() {
        for id in
            ["a", &"x".repeat(128), &"ü".repeat(128), &"😀".repeat(128), "with space", "\u{a0}"]
        {
            assert_eq!(valid(&with("user_id", &format!("\"{id}\""))).user_id, id);
        }
        for id in [String::new(), "x".repeat(129), "ü".repeat(129)] {
            assert_not_sure(&with("user_id", &format!("\"{id}\"")));
            assert_not_sure(&with("session_id", &format!("\"{id}\"")));
        }
        // C0, DEL and C1, raw or escaped, and the escapes that decode to controls.
        for bad in
            ["a\u{7f}", "a\u{85}", "a\u{9f}", r"a\u0000", r"a\u001f", r"a\u0085", r"a\n", r"a\t"]
        {
            assert_not_sure(&with("item_id", &format!("\"{bad}\"")));
        }
        assert_not_sure(&with("item_id", "\"a\x01\"")); // raw control: invalid JSON
        assert_not_sure(&with("user_id", "null")); // required
        assert_not_sure(&with("user_id", "1"));
    }

    #[test]
    fn text_lengths_follow_their_type() {
        let short = |n: usize| format!(r#"{{"device":"{}"}}"#, "d".repeat(n));
        let long = |n: usize| format!(r#"{{"user_agent":"{}"}}"#, "é".repeat(n));
        assert!(matches!(fast(&with("context", &short(256))), Fast::Valid(_)));
        assert_not_sure(&with("context", &short(257)));
        assert_not_sure(&with("context", &short(0))); // the pattern's `+`
        assert!(matches!(fast(&with("context", &long(2048))), Fast::Valid(_)));
        assert_not_sure(&with("context", &long(2049)));
        assert!(matches!(
            fast(&with("profile", &format!(r#"{{"segment":"{}"}}"#, "s".repeat(256)))),
            Fast::Valid(_)
        ));
        assert_not_sure(&with("profile", &format!(r#"{{"segment":"{}"}}"#, "s".repeat(257))));
    }

    #[test]
    fn country_is_two_ascii_letters() {
        for ok in ["DE", "de", "zZ"] {
            let event = valid(&with("context", &format!(r#"{{"country":"{ok}"}}"#)));
            assert_eq!(event.context.unwrap().country.as_deref(), Some(ok));
        }
        for bad in ["DEU", "D", "", "D1", "Ä", "Äb", r"de\n", "de "] {
            assert_not_sure(&with("context", &format!(r#"{{"country":"{bad}"}}"#)));
        }
    }

    #[test]
    fn age_is_an_int_from_0_to_130() {
        for (raw, age) in [("0", 0), ("35", 35), ("130", 130), ("null", -1)] {
            let profile = valid(&with("profile", &format!(r#"{{"age":{raw}}}"#))).profile.unwrap();
            assert_eq!(profile.age, (age >= 0).then_some(age));
        }
        for bad in [
            "131",
            "-1",
            "-0",
            "35.0",
            "1e1",
            "1E1",
            "035",
            "true",
            "\"35\"",
            "1000",
            "18446744073709551616",
        ] {
            assert_not_sure(&with("profile", &format!(r#"{{"age":{bad}}}"#)));
        }
    }

    #[test]
    fn type_is_one_of_the_literals() {
        for t in EventType::ALL {
            let payload = with("type", &format!("\"{}\"", t.name()));
            let payload = if t.name().starts_with("rec_") {
                payload.replacen('{', r#"{"recommendation_id":"r","#, 1)
            } else {
                payload
            };
            assert_eq!(valid(&payload).event_type, t);
        }
        assert_eq!(valid(&with("type", r#""vi\u0065w""#)).event_type, EventType::View);
        for bad in [r#""click""#, r#""VIEW""#, r#""""#, r#""view ""#, "null", "1"] {
            assert_not_sure(&with("type", bad));
        }
    }

    #[test]
    fn tombstones_are_left_to_the_judge() {
        // Rare and produced by the API only: the schema decides (`decode_message_fields`).
        assert_not_sure(concat!(
            r#"{"type":"erase","user_id":"u-1","erasure_id":"x","#,
            r#""ts":"2024-06-01T11:59:00Z"}"#
        ));
        assert_not_sure(&with("type", r#""erase""#));
    }

    #[test]
    fn unknown_duplicate_and_missing_fields_are_not_sure() {
        assert_not_sure(&with("recomendation_id", r#""r""#));
        assert_not_sure(&with("context", r#"{"os":"ios"}"#));
        assert_not_sure(&with("profile", r#"{"name":"x"}"#));
        assert_not_sure(&CANONICAL.replace(r#""category_id""#, r#""event_id""#));
        assert_not_sure(&with("context", r#"{"device":"a","device":"b"}"#));
        for name in ["event_id", "user_id", "item_id", "type", "ts"] {
            assert_not_sure(&CANONICAL.replace(&format!("\"{name}\""), "\"category_id\""));
        }
        assert_not_sure(&CANONICAL.replace(r#""type""#, r#""typ\u0065""#)); // escaped key
    }

    #[test]
    fn json_syntax_is_strict() {
        for bad in [
            format!("\u{feff}{CANONICAL}"), // a BOM
            format!("{CANONICAL}x"),
            format!("{CANONICAL}{CANONICAL}"),
            format!("{CANONICAL}\x0c"), // form feed is no JSON whitespace
            CANONICAL.replace(r#""}"#, r#"",}"#),
            CANONICAL.replace(':', " = "),
            CANONICAL.replace('"', "'"),
            CANONICAL[..CANONICAL.len() - 1].to_string(),
            format!("[{CANONICAL}]"),
            "{}".to_string(),
            String::new(),
        ] {
            assert_not_sure(&bad);
        }
        assert!(matches!(fast(&format!(" \t\r\n{CANONICAL}\n ")), Fast::Valid(_)));
    }

    #[test]
    fn strings_must_be_strict_utf8_without_lone_surrogates() {
        let bytes = |middle: &[u8]| {
            let mut payload =
                br#"{"event_id":"e","user_id":"u","type":"view","ts":"2024-06-01T11:59:00Z","#
                    .to_vec();
            payload.extend_from_slice(br#""item_id":"a"#);
            payload.extend_from_slice(middle);
            payload.extend_from_slice(br#""}"#);
            decode_fast(&payload, NOW_US, SKEW_S)
        };
        assert!(matches!(bytes("é".as_bytes()), Fast::Valid(_)));
        assert!(matches!(bytes(b"\xef\xbf\xbf"), Fast::Valid(_))); // U+FFFF: msgspec keeps it
        for bad in [
            &b"\xed\xa0\x80"[..], // an encoded surrogate
            b"\xc0\xaf",          // overlong
            b"\xf4\x90\x80\x80",  // beyond U+10FFFF
            b"\xff",
            b"\xe2\x82",
            br"\ud800",
            br"\udc00",
            br"\ud83d\u0041",
            br"\ud83dx",
            br"\x",
            br"\u12",
        ] {
            assert_eq!(bytes(bad), Fast::NotSure, "{bad:?}");
        }
    }

    #[test]
    fn timestamps_in_the_common_rfc3339_forms() {
        for (ts, ts_us, offset) in [
            ("2024-06-01T11:59:00Z", 1_717_243_140_000_000, 0),
            ("2024-06-01t11:59:00z", 1_717_243_140_000_000, 0),
            ("2024-06-01 11:59:00+00:00", 1_717_243_140_000_000, 0),
            ("2024-06-01T11:59:00-00:00", 1_717_243_140_000_000, 0),
            ("2024-06-01T11:59:00.1Z", 1_717_243_140_100_000, 0),
            ("2024-06-01T11:59:00.000001Z", 1_717_243_140_000_001, 0),
            ("2024-06-01T13:29:00.5+01:30", 1_717_243_140_500_000, 5400),
            ("2024-05-31T12:00:00-23:59", 1_717_243_140_000_000, -86340),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000_000, 0),
            ("1969-12-31T23:59:59.999999Z", -1, 0),
            ("1700-01-01T00:00:00Z", -8_520_336_000_000_000, 0),
        ] {
            let event = valid(&with("ts", &format!("\"{ts}\"")));
            assert_eq!((event.ts_us, event.utc_offset_s), (ts_us, offset), "{ts}");
            assert_eq!(event.ts_s, ts_us as f64 / 1e6);
        }
        // Escapes are decoded before the timestamp is read, as msgspec does.
        assert_eq!(
            valid(&with("ts", r#""2024-06-01T11:59:00\u005a""#)).ts_us,
            1_717_243_140_000_000
        );
        // 2200 is decoded too, but lies beyond the skew; with a far `now` it is valid.
        let late = with("ts", r#""2200-12-31T23:59:59.999999-23:59""#);
        let Fast::Valid(event) = decode_fast(late.as_bytes(), DATETIME_MAX_US, SKEW_S) else {
            panic!("2200 is in the fast range")
        };
        assert_eq!((event.ts_us, event.ts_s), (7_289_740_739_999_999, 7_289_740_739.999999));
    }

    #[test]
    fn other_timestamps_are_not_sure() {
        for ts in [
            "2024-06-01T11:59:00",          // naive
            "2024-06-01T11:59:00.1234567Z", // msgspec rounds 7+ digits
            "2024-06-01T11:59:00+0100",     // msgspec takes it; not common
            "2024-06-01T11:59:00+01",
            "2024-06-01T11:59Z",
            "2024-06-01T11:59:00.Z",
            "2024-06-01T11:59:00,1Z",
            "2024-06-01T11:59:00 Z",
            "2024-06-01T24:00:00Z",
            "2024-06-01T23:60:00Z",
            "2016-12-31T23:59:60Z", // a leap second
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-06-00T00:00:00Z",
            "2024-06-01T11:59:00+24:00",
            "2024-06-01T11:59:00+01:60",
            "1699-12-31T23:59:59Z", // outside the fast years
            "2201-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "+2024-06-01T11:59:00Z",
            "2024-6-01T11:59:00Z",
            "yesterday",
            "",
        ] {
            assert_not_sure(&with("ts", &format!("\"{ts}\"")));
        }
        assert_not_sure(&with("ts", "1717243140"));
        assert_not_sure(&with("ts", "null"));
    }

    #[test]
    fn future_skew_limit_is_inclusive_to_the_microsecond() {
        let at = |ts: &str, skew_s: f64| {
            decode_fast(with("ts", &format!("\"{ts}\"")).as_bytes(), NOW_US, skew_s)
        };
        assert!(matches!(at("2024-06-01T13:00:00Z", 3600.0), Fast::Valid(_)));
        assert_eq!(at("2024-06-01T13:00:00.000001Z", 3600.0), Fast::NotSure);
        assert!(matches!(at("2024-06-01T12:00:10Z", 10.0), Fast::Valid(_)));
        assert_eq!(at("2024-06-01T12:00:10Z", 9.0), Fast::NotSure);
        // 2.5 µs rounds to 2 (half to even)
        assert!(matches!(at("2024-06-01T12:00:00.000002Z", 2.5e-6), Fast::Valid(_)));
        assert_eq!(at("2024-06-01T12:00:00.000003Z", 2.5e-6), Fast::NotSure);
        assert!(matches!(at("2024-06-01T11:00:00Z", -3600.0), Fast::Valid(_)));
        assert_eq!(at("2024-06-01T11:00:00.000001Z", -3600.0), Fast::NotSure);
        // Where Python's timedelta or datetime may raise, the judge answers.
        for skew in [f64::NAN, f64::INFINITY, 1e12, -1e13] {
            assert_eq!(at("2024-06-01T11:00:00Z", skew), Fast::NotSure);
        }
        assert_eq!(decode_fast(CANONICAL.as_bytes(), DATETIME_MAX_US + 1, SKEW_S), Fast::NotSure);
    }

    #[test]
    fn feedback_needs_a_recommendation_id() {
        for t in ["rec_impression", "rec_click"] {
            let payload = with("type", &format!("\"{t}\""));
            assert_not_sure(&payload);
            assert_not_sure(&payload.replacen('{', r#"{"recommendation_id":null,"#, 1));
            assert!(matches!(
                fast(&payload.replacen('{', r#"{"recommendation_id":"r","#, 1)),
                Fast::Valid(_)
            ));
        }
    }

    #[test]
    fn seconds_round_as_pythons_timedelta() {
        // timedelta(seconds=x) // timedelta(microseconds=1), from Python 3.11.
        for (x, us) in [
            (3600.0, 3_600_000_000),
            (5e-7, 0),
            (1.5e-6, 2),
            (2.5e-6, 2),
            (-5e-7, 0),
            (-1.5e-6, -2),
            (1_700_000_000.000_000_5, 1_700_000_000_000_000),
            (-62_135_596_800.0, DATETIME_MIN_US),
        ] {
            assert_eq!(seconds_to_us(x), Some(us), "{x}");
        }
        assert_eq!(seconds_to_us(f64::NAN), None);
        assert_eq!(seconds_to_us(1e12), None);
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1700, 1, 1), -98_615);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }
}
