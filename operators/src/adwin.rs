//! ADWIN change detection on one scalar stream (a hit rate, a loss, a latency).
//!
//! Bifet and Gavaldà (2007), "Learning from Time-Changing Data with Adaptive Windowing", SDM
//! 2007: keep the longest recent window in which no split into an older and a newer part shows
//! different means, stored as an exponential histogram (ADWIN2); shrinking it is the alarm.
//! Same hyperparameters, float operation order and detection indices as `river.drift.ADWIN`
//! 0.26 (see `operators/_native.pyi` for its two departures from the paper, which we share).
//!
//! Snapshot of the Python class: `b"ADW"`, version 1, then the config (delta f64, clock,
//! max_buckets, min_window_length, grace_period varints), then the state: the number of
//! histogram rows, per row its bucket count and per bucket (sum, sum of squared deviations)
//! as f64 pairs, oldest first; width varint, total and sum_squares f64, tick varint,
//! drift_detected u8.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure, py_float};
use crate::page_hinkley::{IntArg, IntParam, int_at_least, py_max};

const TWO_THIRDS: f64 = 2.0 / 3.0;

/// Hyperparameters as given, checked by [`AdwinConfig::from_args`] in Python's order.
#[derive(Debug, Clone)]
pub struct AdwinArgs {
    pub delta: f64,
    pub clock: IntArg,
    pub max_buckets: IntArg,
    pub min_window_length: IntArg,
    pub grace_period: IntArg,
}

impl Default for AdwinArgs {
    fn default() -> Self {
        AdwinArgs {
            delta: 0.002,
            clock: Ok(32),
            max_buckets: Ok(5),
            min_window_length: Ok(5),
            grace_period: Ok(10),
        }
    }
}

/// Validated hyperparameters of ADWIN.
#[derive(Debug, Clone, PartialEq)]
pub struct AdwinConfig {
    /// Confidence of the test: smaller means fewer false alarms and later detections.
    pub delta: f64,
    /// Try the splits every `clock` updates.
    pub clock: u64,
    /// Buckets kept per size before the two oldest are merged.
    pub max_buckets: u64,
    /// Shortest older or newer part a split may have.
    pub min_window_length: u64,
    /// No split is tried until the window holds more than this many values.
    pub grace_period: u64,
}

impl Default for AdwinConfig {
    fn default() -> Self {
        AdwinConfig::from_args(AdwinArgs::default()).expect("defaults are valid")
    }
}

impl AdwinConfig {
    pub fn new(
        delta: f64,
        clock: i64,
        max_buckets: i64,
        min_window_length: i64,
        grace_period: i64,
    ) -> Result<Self, Invalid> {
        AdwinConfig::from_args(AdwinArgs {
            delta,
            clock: Ok(clock),
            max_buckets: Ok(max_buckets),
            min_window_length: Ok(min_window_length),
            grace_period: Ok(grace_period),
        })
    }

    /// Check the arguments in the Python operator's order, with its messages.
    pub fn from_args(args: AdwinArgs) -> Result<Self, Invalid> {
        let delta = args.delta;
        ensure(0.0 < delta && delta < 1.0, || {
            format!("delta must be in (0, 1), got {}", py_float(delta))
        })?;
        let clock = int_at_least("clock", &args.clock, 1)?;
        let max_buckets = int_at_least("max_buckets", &args.max_buckets, 1)?;
        let min_window_length = int_at_least("min_window_length", &args.min_window_length, 1)?;
        let grace_period = int_at_least("grace_period", &args.grace_period, 0)?;
        Ok(AdwinConfig {
            delta,
            clock: clock as u64,
            max_buckets: max_buckets as u64,
            min_window_length: min_window_length as u64,
            grace_period: grace_period as u64,
        })
    }

    pub fn write(&self, w: &mut Writer) {
        w.f64(self.delta);
        w.varint(self.clock);
        w.varint(self.max_buckets);
        w.varint(self.min_window_length);
        w.varint(self.grace_period);
    }

    /// Read a config written by [`Self::write`], validated again.
    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let delta = r.f64()?;
        let mut int = || -> Result<IntArg, Invalid> {
            Ok(Ok(i64::try_from(r.varint()?).unwrap_or(i64::MAX)))
        };
        AdwinConfig::from_args(AdwinArgs {
            delta,
            clock: int()?,
            max_buckets: int()?,
            min_window_length: int()?,
            grace_period: int()?,
        })
    }
}

/// One bucket of the exponential histogram: the sum of its 2^row values and their sum of
/// squared deviations from their mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub total: f64,
    pub squares: f64,
}

/// The window of one ADWIN detector; its hyperparameters are passed in.
#[derive(Debug, Clone, PartialEq)]
pub struct AdwinState {
    /// Row i holds buckets of 2^i values, oldest first; row 0 always exists.
    rows: Vec<Vec<Bucket>>,
    width: u64,
    total: f64,
    sum_squares: f64,
    tick: u64,
    drift_detected: bool,
}

impl Default for AdwinState {
    fn default() -> Self {
        AdwinState::new()
    }
}

impl AdwinState {
    /// An empty window (what an alarm resets to).
    pub fn new() -> Self {
        AdwinState {
            rows: vec![Vec::new()],
            width: 0,
            total: 0.0,
            sum_squares: 0.0,
            tick: 0,
            drift_detected: false,
        }
    }

    /// Whether the last update shrank the window.
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// Number of values in the window.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// Sum of the values in the window.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// Sum of squared deviations from the window's mean (river's `variance`).
    pub fn sum_squares(&self) -> f64 {
        self.sum_squares
    }

    /// Mean of the values in the window (0 when it is empty).
    pub fn estimation(&self) -> f64 {
        if self.width > 0 { self.total / self.width as f64 } else { 0.0 }
    }

    /// Population variance of the values in the window (0 when it is empty).
    pub fn variance(&self) -> f64 {
        // max: after cuts, rounding can leave the running sum of squares a hair below zero.
        if self.width > 0 { py_max(self.sum_squares, 0.0) / self.width as f64 } else { 0.0 }
    }

    /// The histogram rows (row i: buckets of 2^i values, oldest first).
    pub fn rows(&self) -> &[Vec<Bucket>] {
        &self.rows
    }

    /// Add one value, shrink the window if it holds a change, and return whether it did.
    /// Non-finite values are refused (they would poison the window) and leave it untouched.
    pub fn update(&mut self, cfg: &AdwinConfig, x: f64) -> Result<bool, Invalid> {
        if !x.is_finite() {
            return Err(Invalid(format!("ADWIN.update needs a finite value, got {}", py_float(x))));
        }
        if self.drift_detected {
            *self = AdwinState::new();
        }
        self.insert(cfg, x);
        self.tick += 1;
        if self.tick % cfg.clock == 0 && self.width > cfg.grace_period {
            while self.cut_oldest_if_changed(cfg) {
                self.drift_detected = true;
            }
        }
        Ok(self.drift_detected)
    }

    fn insert(&mut self, cfg: &AdwinConfig, x: f64) {
        // Same operation order as river, so every float matches bit for bit.
        self.rows[0].push(Bucket { total: x, squares: 0.0 });
        self.width += 1;
        if self.width > 1 {
            let before = (self.width - 1) as f64;
            let deviation = x - self.total / before;
            self.sum_squares += before * deviation * deviation / self.width as f64;
        }
        self.total += x;

        let mut row = 0;
        while self.rows[row].len() as u64 > cfg.max_buckets {
            // Merge the two oldest buckets of this row into one of the next row (Chan et al.).
            let size = (1u64 << row) as f64;
            let (b0, b1) = (self.rows[row][0], self.rows[row][1]);
            let (mean_0, mean_1) = (b0.total / size, b1.total / size);
            let merged = Bucket {
                total: b0.total + b1.total,
                squares: b0.squares
                    + b1.squares
                    + size * 0.5 * (mean_0 - mean_1) * (mean_0 - mean_1),
            };
            self.rows[row].drain(..2);
            if row + 1 == self.rows.len() {
                self.rows.push(Vec::new());
            }
            self.rows[row + 1].push(merged);
            row += 1;
        }
    }

    /// Drop the oldest bucket and return true if some split of the window differs.
    fn cut_oldest_if_changed(&mut self, cfg: &AdwinConfig) -> bool {
        let width = self.width;
        let min_length = cfg.min_window_length;
        if width < min_length.saturating_mul(2) {
            return false; // no split leaves both sides long enough (and ln(ln(1)) is undefined)
        }
        let delta_prime = (2.0 * (width as f64).ln() / cfg.delta).ln();
        let window_variance = self.sum_squares / width as f64;
        let (mut older_n, mut newer_n) = (0u64, width);
        let (mut older_sum, mut newer_sum) = (0.0f64, self.total);
        // Splits go from the oldest bucket to the newest; the last one leaves W1 empty.
        for row in (0..self.rows.len()).rev() {
            let size = 1u64 << row;
            for bucket in &self.rows[row] {
                older_n += size;
                newer_n -= size;
                older_sum += bucket.total;
                newer_sum -= bucket.total;
                if newer_n < min_length {
                    return false;
                }
                if older_n < min_length {
                    continue;
                }
                let mean_gap = older_sum / older_n as f64 - newer_sum / newer_n as f64;
                let m_recip = 1.0 / ((older_n - min_length) as f64 + 1.0)
                    + 1.0 / ((newer_n - min_length) as f64 + 1.0);
                let spread_term = 2.0 * m_recip * window_variance * delta_prime;
                if spread_term < 0.0 {
                    // Rounding can leave the window's sum of squares a hair below zero; river's
                    // sqrt then yields NaN, which never exceeds the gap: no cut at this split.
                    continue;
                }
                let epsilon = spread_term.sqrt() + TWO_THIRDS * delta_prime * m_recip;
                if mean_gap.abs() > epsilon {
                    self.delete_oldest();
                    return true;
                }
            }
        }
        false
    }

    fn delete_oldest(&mut self) {
        let last = self.rows.len() - 1;
        let size = 1u64 << last;
        let bucket = self.rows[last].remove(0);
        let bucket_mean = bucket.total / size as f64;
        self.width -= size;
        self.total -= bucket.total;
        let window_mean = self.total / self.width as f64;
        let gap = bucket_mean - window_mean;
        self.sum_squares -=
            bucket.squares + (size * self.width) as f64 * gap * gap / (size + self.width) as f64;
        // Row 0 stays even when empty: it is where the next value goes.
        while self.rows.len() > 1 && self.rows.last().is_some_and(Vec::is_empty) {
            self.rows.pop();
        }
    }

    pub fn write(&self, w: &mut Writer) {
        w.len(self.rows.len());
        for row in &self.rows {
            w.len(row.len());
            for bucket in row {
                w.f64(bucket.total);
                w.f64(bucket.squares);
            }
        }
        w.varint(self.width);
        w.f64(self.total);
        w.f64(self.sum_squares);
        w.varint(self.tick);
        w.bool(self.drift_detected);
    }

    /// Read a window written by [`Self::write`]; refuses one whose rows do not add up to its
    /// width.
    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let n_rows = r.len()?;
        ensure(n_rows <= 64, || "ADWIN snapshot is malformed".into())?;
        let mut rows = Vec::with_capacity(n_rows.max(1));
        let mut counted: u128 = 0;
        for i in 0..n_rows {
            let n = r.len()?;
            let mut row = Vec::with_capacity(n);
            for _ in 0..n {
                row.push(Bucket { total: r.f64()?, squares: r.f64()? });
            }
            counted += (n as u128) << i;
            rows.push(row);
        }
        if rows.is_empty() {
            rows.push(Vec::new());
        }
        let width = r.varint()?;
        ensure(counted == u128::from(width), || "ADWIN snapshot is malformed".into())?;
        Ok(AdwinState {
            rows,
            width,
            total: r.f64()?,
            sum_squares: r.f64()?,
            tick: r.varint()?,
            drift_detected: r.bool()?,
        })
    }
}

/// An ADWIN detector with its own hyperparameters: the Python class `ADWIN`, and what a
/// single Rust detector embeds.
#[pyclass(module = "operators._native", name = "ADWIN", from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct Adwin {
    pub config: AdwinConfig,
    pub state: AdwinState,
}

const TAG: &[u8; 3] = b"ADW";
const VERSION: u8 = 1;

impl Adwin {
    pub fn new(config: AdwinConfig) -> Self {
        Adwin { config, state: AdwinState::new() }
    }

    pub fn update(&mut self, x: f64) -> Result<bool, Invalid> {
        self.state.update(&self.config, x)
    }

    /// Config then state, no header (nestable).
    pub fn write(&self, w: &mut Writer) {
        self.config.write(w);
        self.state.write(w);
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        Ok(Adwin { config: AdwinConfig::read(r)?, state: AdwinState::read(r)? })
    }

    /// The versioned snapshot (`to_state`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_header(TAG, VERSION);
        self.write(&mut w);
        w.finish()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self, Invalid> {
        let mut r = Reader::with_header(data, TAG, VERSION, "ADWIN")?;
        let detector = Adwin::read(&mut r)?;
        r.end()?;
        Ok(detector)
    }
}

#[pymethods]
impl Adwin {
    #[new]
    #[pyo3(signature = (delta=0.002, clock=IntParam(Ok(32)), max_buckets=IntParam(Ok(5)),
                        min_window_length=IntParam(Ok(5)), grace_period=IntParam(Ok(10))))]
    fn py_new(
        delta: f64,
        clock: IntParam,
        max_buckets: IntParam,
        min_window_length: IntParam,
        grace_period: IntParam,
    ) -> PyResult<Self> {
        let config = AdwinConfig::from_args(AdwinArgs {
            delta,
            clock: clock.0,
            max_buckets: max_buckets.0,
            min_window_length: min_window_length.0,
            grace_period: grace_period.0,
        })?;
        Ok(Adwin::new(config))
    }

    #[getter]
    fn delta(&self) -> f64 {
        self.config.delta
    }
    #[getter]
    fn clock(&self) -> u64 {
        self.config.clock
    }
    #[getter]
    fn max_buckets(&self) -> u64 {
        self.config.max_buckets
    }
    #[getter]
    fn min_window_length(&self) -> u64 {
        self.config.min_window_length
    }
    #[getter]
    fn grace_period(&self) -> u64 {
        self.config.grace_period
    }

    /// Whether the last update shrank the window.
    #[getter(drift_detected)]
    fn py_drift_detected(&self) -> bool {
        self.state.drift_detected
    }

    /// Number of values in the window.
    #[getter(width)]
    fn py_width(&self) -> u64 {
        self.state.width
    }

    /// Sum of the values in the window.
    #[getter(total)]
    fn py_total(&self) -> f64 {
        self.state.total
    }

    /// Mean of the values in the window (0 when it is empty).
    #[getter(estimation)]
    fn py_estimation(&self) -> f64 {
        self.state.estimation()
    }

    /// Sum of squared deviations from the window's mean (river's ``variance``).
    #[getter(sum_squares)]
    fn py_sum_squares(&self) -> f64 {
        self.state.sum_squares
    }

    /// Population variance of the values in the window (0 when it is empty).
    #[getter(variance)]
    fn py_variance(&self) -> f64 {
        self.state.variance()
    }

    /// The histogram (a copy): one row per bucket size 2**i, oldest bucket first; each bucket
    /// is (sum of its values, sum of squared deviations from their mean).
    #[getter]
    fn buckets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let rows = self
            .state
            .rows
            .iter()
            .map(|row| PyTuple::new(py, row.iter().map(|b| (b.total, b.squares))))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, rows)
    }

    /// Add one value, shrink the window if it holds a change, and return whether it did.
    #[pyo3(name = "update")]
    fn py_update(&mut self, x: f64) -> PyResult<bool> {
        Ok(self.update(x)?)
    }

    /// The versioned snapshot bytes from which `from_state` rebuilds this detector.
    fn to_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.to_bytes())
    }

    /// Rebuild a detector from `to_state`'s bytes; its hyperparameters are re-validated.
    #[staticmethod]
    fn from_state(data: &[u8]) -> PyResult<Self> {
        Ok(Adwin::from_bytes(data)?)
    }

    fn __repr__(&self) -> String {
        let c = &self.config;
        format!(
            "ADWIN(delta={}, clock={}, max_buckets={}, min_window_length={}, grace_period={})",
            py_float(c.delta),
            c.clock,
            c.max_buckets,
            c.min_window_length,
            c.grace_period
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Adwin>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detections(detector: &mut Adwin, stream: &[f64]) -> Vec<usize> {
        stream
            .iter()
            .enumerate()
            .filter(|(_, x)| detector.update(**x).unwrap())
            .map(|(i, _)| i)
            .collect()
    }

    /// A stream whose mean jumps from 0 to `jump` at index 1000 (deterministic sawtooth noise).
    fn step_stream(jump: f64) -> Vec<f64> {
        (0..2000)
            .map(|i| ((i * 7919) % 13) as f64 / 13.0 + if i >= 1000 { jump } else { 0.0 })
            .collect()
    }

    #[test]
    fn golden_step() {
        // Indices checked against the Python oracle (tests/oracles/adwin.py).
        let mut adwin = Adwin::new(AdwinConfig::default());
        assert_eq!(detections(&mut adwin, &step_stream(1.0)), vec![1023]);
        assert_eq!(adwin.state.width(), 2000 - 1024);
        let mut every = Adwin::new(AdwinConfig::new(0.01, 1, 5, 5, 10).unwrap());
        assert_eq!(detections(&mut every, &step_stream(1.0)), vec![1011]);
    }

    #[test]
    fn rows_add_up_to_the_width_and_merge_at_max_buckets() {
        let mut adwin = Adwin::new(AdwinConfig::new(0.002, 32, 2, 5, 10).unwrap());
        for i in 0..100 {
            adwin.update((i % 2) as f64).unwrap();
        }
        let rows = adwin.state.rows();
        assert!(rows.iter().all(|row| row.len() <= 2));
        let width: u64 = rows.iter().enumerate().map(|(i, r)| (r.len() as u64) << i).sum();
        assert_eq!(width, 100);
        assert_eq!(adwin.state.total(), 50.0);
        assert_eq!(adwin.state.estimation(), 0.5);
        assert!((adwin.state.variance() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn constant_stream_never_alarms() {
        let mut adwin = Adwin::new(AdwinConfig::new(0.5, 1, 1, 1, 0).unwrap());
        for _ in 0..3000 {
            assert!(!adwin.update(-7.5).unwrap());
        }
        assert_eq!(adwin.state.width(), 3000);
    }

    #[test]
    fn single_bucket_rows_keep_detecting() {
        let mut adwin = Adwin::new(AdwinConfig::new(0.002, 1, 1, 5, 10).unwrap());
        let mut stream = step_stream(3.0);
        stream.extend(step_stream(3.0).iter().map(|x| -x));
        assert_eq!(detections(&mut adwin, &stream), vec![1005, 2004, 3005]);
    }

    #[test]
    fn bad_hyperparameters_say_why_in_pythons_order() {
        let err = |a: AdwinArgs| AdwinConfig::from_args(a).unwrap_err().0;
        let d = AdwinArgs::default;
        assert_eq!(err(AdwinArgs { delta: 1.0, ..d() }), "delta must be in (0, 1), got 1.0");
        assert_eq!(
            err(AdwinArgs { clock: Err("1.5".into()), ..d() }),
            "clock must be an int, got 1.5"
        );
        assert_eq!(err(AdwinArgs { max_buckets: Ok(0), ..d() }), "max_buckets must be >= 1, got 0");
        assert_eq!(
            err(AdwinArgs { grace_period: Err("True".into()), ..d() }),
            "grace_period must be an int, got True"
        );
        assert_eq!(
            err(AdwinArgs { clock: Ok(0), max_buckets: Err("None".into()), ..d() }),
            "clock must be >= 1, got 0"
        );
    }

    #[test]
    fn snapshot_round_trips_and_refuses_inconsistent_rows() {
        let mut adwin = Adwin::new(AdwinConfig::default());
        for x in step_stream(2.0).iter().take(1500) {
            adwin.update(*x).unwrap();
        }
        let bytes = adwin.to_bytes();
        assert_eq!(Adwin::from_bytes(&bytes).unwrap(), adwin);
        let mut w = Writer::with_header(TAG, VERSION);
        AdwinConfig::default().write(&mut w);
        w.len(1);
        w.len(1);
        w.f64(1.0);
        w.f64(0.0);
        w.varint(2); // one bucket of one value cannot make a width of 2
        w.f64(1.0);
        w.f64(0.0);
        w.varint(2);
        w.bool(false);
        assert!(Adwin::from_bytes(&w.finish()).is_err());
    }
}
