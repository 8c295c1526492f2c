//! Feedback on served recommendations: impressions, clicks and conversions per time window.
//!
//! Events that carry a `recommendation_id` are counted per (model version, context segment) in
//! tumbling windows of *event* time, keeping the last `keep` windows: CTR (clicks per
//! impression) and conversion (purchases or add-to-carts per click) per window are what the
//! monitoring and the drift detectors read.
//!
//! Snapshot of the Python class: `b"FBW"`, version 1, then the windows oldest first (count,
//! then per window start_s f64, impressions, clicks, conversions varints); the config
//! (window_s, keep) is not part of it.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFrozenSet};

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure, py_float};
use crate::events::EventType;

/// Counts of one window; immutable.
#[pyclass(module = "operators._native", frozen, eq, get_all, from_py_object)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowCounts {
    pub start_s: f64,
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
}

impl WindowCounts {
    pub fn new(start_s: f64) -> Self {
        WindowCounts { start_s, impressions: 0, clicks: 0, conversions: 0 }
    }

    /// Clicks per impression (None without impressions).
    pub fn ctr(&self) -> Option<f64> {
        (self.impressions > 0).then(|| self.clicks as f64 / self.impressions as f64)
    }

    /// Conversions per click (None without clicks).
    pub fn conversion_rate(&self) -> Option<f64> {
        (self.clicks > 0).then(|| self.conversions as f64 / self.clicks as f64)
    }
}

#[pymethods]
impl WindowCounts {
    #[new]
    #[pyo3(signature = (start_s, impressions=0, clicks=0, conversions=0))]
    fn py_new(start_s: f64, impressions: u64, clicks: u64, conversions: u64) -> Self {
        WindowCounts { start_s, impressions, clicks, conversions }
    }

    /// Clicks per impression (None without impressions).
    #[getter(ctr)]
    fn py_ctr(&self) -> Option<f64> {
        self.ctr()
    }

    /// Conversions per click (None without clicks).
    #[getter(conversion_rate)]
    fn py_conversion_rate(&self) -> Option<f64> {
        self.conversion_rate()
    }

    fn __hash__(&self) -> u64 {
        // Equal values hash equal: -0.0 == 0.0, so hash the start's value, not its sign.
        let start = if self.start_s == 0.0 { 0.0f64 } else { self.start_s };
        let mut h = start.to_bits() ^ 0x9e37_79b9_7f4a_7c15;
        for v in [self.impressions, self.clicks, self.conversions] {
            h = (h.rotate_left(23) ^ v).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> (Bound<'py, pyo3::types::PyType>, (f64, u64, u64, u64)) {
        let w = slf.get();
        (slf.get_type(), (w.start_s, w.impressions, w.clicks, w.conversions))
    }

    fn __repr__(&self) -> String {
        format!(
            "WindowCounts(start_s={}, impressions={}, clicks={}, conversions={})",
            py_float(self.start_s),
            self.impressions,
            self.clicks,
            self.conversions
        )
    }
}

/// The model version a recommendation id was served by (`<model>.<uuid>`), or "unknown".
pub fn model_of(recommendation_id: &str) -> &str {
    match recommendation_id.rsplit_once('.') {
        Some((model, _)) if !model.is_empty() => model,
        _ => "unknown",
    }
}

/// Python's `ts % window` for floats: the remainder takes the divisor's sign.
fn py_mod(ts: f64, window: f64) -> f64 {
    let m = ts % window;
    if m != 0.0 {
        if (window < 0.0) != (m < 0.0) { m + window } else { m }
    } else {
        0.0f64.copysign(window)
    }
}

/// Validated hyperparameters of [`FeedbackWindows`].
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackWindowsConfig {
    /// Window length, seconds of event time.
    pub window_s: f64,
    /// Windows kept (the newest).
    pub keep: usize,
}

impl Default for FeedbackWindowsConfig {
    fn default() -> Self {
        FeedbackWindowsConfig { window_s: 300.0, keep: 288 }
    }
}

impl FeedbackWindowsConfig {
    pub fn new(window_s: f64, keep: i64) -> Result<Self, Invalid> {
        // Python's `window_s <= 0` let NaN through; so does this.
        ensure(window_s > 0.0 || window_s.is_nan(), || {
            format!("window_s must be > 0, got {}", py_float(window_s))
        })?;
        ensure(keep >= 1, || format!("keep must be >= 1, got {keep}"))?;
        Ok(FeedbackWindowsConfig { window_s, keep: usize::try_from(keep).unwrap_or(usize::MAX) })
    }
}

/// Tumbling-window feedback counters of one (model, segment), oldest window first; the config
/// is passed in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeedbackWindows {
    windows: Vec<WindowCounts>,
}

impl FeedbackWindows {
    pub fn new() -> Self {
        FeedbackWindows::default()
    }

    /// The windows kept, oldest first.
    pub fn windows(&self) -> &[WindowCounts] {
        &self.windows
    }

    /// Count one event; its window's counts, or None if the event is not feedback (anything
    /// but an impression, a click, a purchase or an add-to-cart). A non-finite time is refused.
    pub fn add(
        &mut self,
        cfg: &FeedbackWindowsConfig,
        event_type: EventType,
        ts_s: f64,
    ) -> Result<Option<WindowCounts>, Invalid> {
        let bump: fn(&mut WindowCounts) = match event_type {
            EventType::RecImpression => |w| w.impressions += 1,
            EventType::RecClick => |w| w.clicks += 1,
            EventType::Purchase | EventType::AddToCart => |w| w.conversions += 1,
            _ => return Ok(None),
        };
        ensure(ts_s.is_finite(), || {
            format!("FeedbackWindows.add needs a finite ts_s, got {}", py_float(ts_s))
        })?;
        let start = ts_s - py_mod(ts_s, cfg.window_s);
        // Sorted by start (equal starts, -0.0 and 0.0 included, are one window, as dict keys).
        let at = self.windows.partition_point(|w| w.start_s < start);
        if at == self.windows.len() || self.windows[at].start_s != start {
            self.windows.insert(at, WindowCounts::new(start));
        }
        let window = &mut self.windows[at];
        window.start_s = start;
        bump(window);
        let counts = *window;
        if self.windows.len() > cfg.keep {
            let excess = self.windows.len() - cfg.keep;
            self.windows.drain(..excess);
        }
        Ok(Some(counts))
    }

    /// Count then the windows oldest first.
    pub fn write(&self, w: &mut Writer) {
        w.len(self.windows.len());
        for c in &self.windows {
            w.f64(c.start_s);
            w.varint(c.impressions);
            w.varint(c.clicks);
            w.varint(c.conversions);
        }
    }

    /// Read windows written by [`Self::write`]; refuses unsorted or non-finite starts.
    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let n = r.len()?;
        let mut windows: Vec<WindowCounts> = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let c = WindowCounts {
                start_s: r.f64()?,
                impressions: r.varint()?,
                clicks: r.varint()?,
                conversions: r.varint()?,
            };
            let sorted = windows.last().is_none_or(|last| last.start_s < c.start_s);
            ensure(c.start_s.is_finite() && sorted, || {
                "FeedbackWindows snapshot is malformed".into()
            })?;
            windows.push(c);
        }
        Ok(FeedbackWindows { windows })
    }
}

const TAG: &[u8; 3] = b"FBW";
const VERSION: u8 = 1;

/// The Python class `FeedbackWindows`: the counters with their config.
#[pyclass(module = "operators._native", name = "FeedbackWindows", skip_from_py_object)]
#[derive(Debug, Clone)]
pub struct PyFeedbackWindows {
    pub config: FeedbackWindowsConfig,
    pub state: FeedbackWindows,
}

#[pymethods]
impl PyFeedbackWindows {
    #[new]
    #[pyo3(signature = (window_s=300.0, keep=288))]
    fn py_new(window_s: f64, keep: i64) -> PyResult<Self> {
        let config = FeedbackWindowsConfig::new(window_s, keep)?;
        Ok(PyFeedbackWindows { config, state: FeedbackWindows::new() })
    }

    #[getter]
    fn window_s(&self) -> f64 {
        self.config.window_s
    }

    #[getter]
    fn keep(&self) -> usize {
        self.config.keep
    }

    /// The windows kept, oldest first (a copy).
    #[getter]
    fn windows(&self) -> Vec<WindowCounts> {
        self.state.windows.clone()
    }

    /// Count one feedback event; return its window's counts (None if not feedback).
    fn add(&mut self, event_type: &str, ts_s: f64) -> PyResult<Option<WindowCounts>> {
        match EventType::from_name(event_type) {
            None => Ok(None),
            Some(t) => Ok(self.state.add(&self.config, t, ts_s)?),
        }
    }

    /// The windows as versioned bytes (the config is not part of them).
    fn to_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut w = Writer::with_header(TAG, VERSION);
        self.state.write(&mut w);
        PyBytes::new(py, &w.finish())
    }

    /// Rebuild from `to_state`'s bytes under the given config.
    #[staticmethod]
    #[pyo3(signature = (data, window_s=300.0, keep=288))]
    fn from_state(data: &[u8], window_s: f64, keep: i64) -> PyResult<Self> {
        let config = FeedbackWindowsConfig::new(window_s, keep)?;
        let mut r = Reader::with_header(data, TAG, VERSION, "FeedbackWindows")?;
        let state = FeedbackWindows::read(&mut r)?;
        r.end()?;
        Ok(PyFeedbackWindows { config, state })
    }

    fn __repr__(&self) -> String {
        format!(
            "FeedbackWindows(window_s={}, keep={}, windows={})",
            py_float(self.config.window_s),
            self.config.keep,
            self.state.windows.len()
        )
    }
}

#[pyfunction(name = "model_of")]
fn py_model_of(recommendation_id: &str) -> &str {
    model_of(recommendation_id)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WindowCounts>()?;
    m.add_class::<PyFeedbackWindows>()?;
    m.add_function(wrap_pyfunction!(py_model_of, m)?)?;
    m.add("IMPRESSION", EventType::RecImpression.name())?;
    m.add("CLICK", EventType::RecClick.name())?;
    let conversions = [EventType::Purchase.name(), EventType::AddToCart.name()];
    m.add("CONVERSION_TYPES", PyFrozenSet::new(m.py(), conversions)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_bounded_oldest_first() {
        let cfg = FeedbackWindowsConfig::new(60.0, 3).unwrap();
        let mut fw = FeedbackWindows::new();
        for minute in 0..10 {
            fw.add(&cfg, EventType::RecImpression, f64::from(minute) * 60.0 + 1.5).unwrap();
        }
        let starts: Vec<f64> = fw.windows().iter().map(|w| w.start_s).collect();
        assert_eq!(starts, vec![420.0, 480.0, 540.0]);
        assert_eq!(fw.add(&cfg, EventType::View, 0.0).unwrap(), None);
        // An old event opens a window that is dropped at once, but its counts are returned.
        let old = fw.add(&cfg, EventType::RecClick, 5.0).unwrap().unwrap();
        assert_eq!((old.start_s, old.clicks), (0.0, 1));
        assert_eq!(fw.windows().len(), 3);
        assert!(fw.add(&cfg, EventType::RecClick, f64::NAN).is_err());
    }

    #[test]
    fn rates_and_models() {
        let cfg = FeedbackWindowsConfig::default();
        let mut fw = FeedbackWindows::new();
        for t in [
            EventType::RecImpression,
            EventType::RecImpression,
            EventType::RecClick,
            EventType::Purchase,
        ] {
            fw.add(&cfg, t, 10.0).unwrap();
        }
        let w = fw.windows()[0];
        assert_eq!((w.ctr(), w.conversion_rate()), (Some(0.5), Some(1.0)));
        assert_eq!(WindowCounts::new(0.0).ctr(), None);
        assert_eq!(model_of("v12.9f3a"), "v12");
        assert_eq!(model_of("isgd.a.b"), "isgd.a");
        assert_eq!(model_of("nodot"), "unknown");
        assert_eq!(model_of(".x"), "unknown");
    }

    #[test]
    fn negative_times_use_pythons_modulo() {
        assert_eq!(py_mod(-5.0, 60.0), 55.0);
        assert_eq!(-5.0 - py_mod(-5.0, 60.0), -60.0);
        assert_eq!(py_mod(120.0, 60.0), 0.0);
    }

    #[test]
    fn bad_config_and_snapshot() {
        assert_eq!(
            FeedbackWindowsConfig::new(0.0, 3).unwrap_err().0,
            "window_s must be > 0, got 0.0"
        );
        assert_eq!(FeedbackWindowsConfig::new(1.0, 0).unwrap_err().0, "keep must be >= 1, got 0");
        let cfg = FeedbackWindowsConfig::default();
        let mut fw = FeedbackWindows::new();
        fw.add(&cfg, EventType::RecImpression, 1000.0).unwrap();
        fw.add(&cfg, EventType::AddToCart, 10.0).unwrap();
        let mut w = Writer::with_header(TAG, VERSION);
        fw.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::with_header(&bytes, TAG, VERSION, "FeedbackWindows").unwrap();
        assert_eq!(FeedbackWindows::read(&mut r).unwrap(), fw);
    }
}
