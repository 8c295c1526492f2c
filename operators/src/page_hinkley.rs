//! Page-Hinkley change detection on one scalar stream (a hit rate, a loss, a latency).
//!
//! Page (1954), "Continuous Inspection Schemes", Biometrika 41: the detector keeps two faded
//! cumulative deviations from the running mean and alarms when one strays more than a
//! threshold from its extreme. Same hyperparameters, float operation order and detection
//! indices as `river.drift.PageHinkley`, plus an optional threshold that follows the stream's
//! recent spread (`lambda_factor`; see `operators/_native.pyi` for the maths).
//!
//! Hyperparameters (`PageHinkleyConfig`) are kept apart from the learned numbers
//! (`PageHinkleyState`, 72 bytes) so a per-user detector costs only its state.
//! Snapshot of the Python class: `b"PHK"`, version 1, then the config (min_instances varint,
//! delta, threshold, alpha f64, mode u8 (0 up, 1 down, 2 both), lambda_factor opt f64,
//! std_alpha, min_threshold f64), then the state (n varint, mean, sum_increase, sum_decrease,
//! min_increase, max_decrease, spread_mean, spread_variance f64, drift_detected u8).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString};

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure, py_float};

// --- arguments as Python passes them -------------------------------------------------------

/// An integer hyperparameter as given: `Err(repr)` when Python passed something that is not an
/// int (the Python operators checked `isinstance(value, int)` in their own order of checks).
pub type IntArg = Result<i64, String>;

/// `name` must be an int and at least `least`: "must be an int" first, then the range.
pub(crate) fn int_at_least(name: &str, arg: &IntArg, least: i64) -> Result<i64, Invalid> {
    match arg {
        Err(repr) => Err(Invalid(format!("{name} must be an int, got {repr}"))),
        Ok(v) if *v < least => Err(Invalid(format!("{name} must be >= {least}, got {v}"))),
        Ok(v) => Ok(*v),
    }
}

/// A Python object as an `IntArg`: ints (not bools) saturate to i64, anything else is its repr.
pub(crate) fn int_arg(value: &Bound<'_, PyAny>) -> PyResult<IntArg> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Ok(Err(value.repr()?.to_string()));
    }
    Ok(Ok(match value.extract::<i64>() {
        Ok(v) => v,
        Err(_) if value.lt(0)? => i64::MIN,
        Err(_) => i64::MAX,
    }))
}

/// An integer hyperparameter argument as Python passed it: a `#[pyo3(signature)]` default
/// (`IntParam(Ok(30))`) tells "not given" apart from an explicit `None`, which Python refused.
pub struct IntParam(pub IntArg);

impl<'a, 'py> FromPyObject<'a, 'py> for IntParam {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(IntParam(int_arg(&obj)?))
    }
}

/// A `mode` argument as Python passed it (`Err(repr)` unless it names a mode).
pub struct ModeParam(pub Result<Mode, String>);

impl<'a, 'py> FromPyObject<'a, 'py> for ModeParam {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(ModeParam(Mode::arg(&obj)?))
    }
}

/// A string as Python's `repr` writes it ('up', "it's").
pub(crate) fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `max(a, b)`: `b` only if it is strictly greater (keeps `a` on ties and -0.0/0.0).
#[inline]
pub(crate) fn py_max(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}

/// Python's `min(a, b)`: `b` only if it is strictly smaller.
#[inline]
pub(crate) fn py_min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

// --- the core -------------------------------------------------------------------------------

/// Which change of the mean raises an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Down,
    Both,
}

/// The modes as Python names them, in the order of its error message.
pub const MODES: [&str; 3] = ["up", "down", "both"];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Up => "up",
            Mode::Down => "down",
            Mode::Both => "both",
        }
    }

    pub fn from_name(name: &str) -> Option<Mode> {
        match name {
            "up" => Some(Mode::Up),
            "down" => Some(Mode::Down),
            "both" => Some(Mode::Both),
            _ => None,
        }
    }

    /// The mode, or the error Python raised for anything else (`repr` is the value's repr).
    pub(crate) fn parse(arg: &Result<Mode, String>) -> Result<Mode, Invalid> {
        arg.clone().map_err(|repr| {
            Invalid(format!("mode must be one of ('up', 'down', 'both'), got {repr}"))
        })
    }

    /// A Python value as a mode argument: `Err(repr)` unless it names one.
    pub(crate) fn arg(value: &Bound<'_, PyAny>) -> PyResult<Result<Mode, String>> {
        if let Ok(s) = value.cast::<PyString>() {
            if let Some(mode) = Mode::from_name(s.to_str()?) {
                return Ok(Ok(mode));
            }
        }
        Ok(Err(value.repr()?.to_string()))
    }

    fn code(self) -> u8 {
        match self {
            Mode::Up => 0,
            Mode::Down => 1,
            Mode::Both => 2,
        }
    }

    fn from_code(code: u8) -> Result<Mode, Invalid> {
        match code {
            0 => Ok(Mode::Up),
            1 => Ok(Mode::Down),
            2 => Ok(Mode::Both),
            _ => Err(Invalid::new("PageHinkley snapshot has an unknown mode")),
        }
    }
}

/// Hyperparameters as given, checked by [`PageHinkleyConfig::from_args`] in Python's order.
#[derive(Debug, Clone)]
pub struct PageHinkleyArgs {
    pub min_instances: IntArg,
    pub delta: f64,
    pub threshold: f64,
    pub alpha: f64,
    pub mode: Result<Mode, String>,
    pub lambda_factor: Option<f64>,
    pub std_alpha: f64,
    pub min_threshold: f64,
}

impl Default for PageHinkleyArgs {
    fn default() -> Self {
        PageHinkleyArgs {
            min_instances: Ok(30),
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: Ok(Mode::Both),
            lambda_factor: None,
            std_alpha: 0.999,
            min_threshold: 1.0,
        }
    }
}

/// Validated hyperparameters of a Page-Hinkley test (shared by every detector built alike).
#[derive(Debug, Clone, PartialEq)]
pub struct PageHinkleyConfig {
    /// Values since the last reset before an alarm may be raised.
    pub min_instances: u64,
    /// Change tolerated (in input units) before deviations accumulate.
    pub delta: f64,
    /// The fixed threshold lambda; unused when `lambda_factor` is set.
    pub threshold: f64,
    /// Forgetting factor of the cumulative deviations (1: none).
    pub alpha: f64,
    pub mode: Mode,
    /// Adaptive threshold: `lambda_factor` x the spread, floored at `min_threshold`.
    pub lambda_factor: Option<f64>,
    /// Forgetting factor of the spread estimate.
    pub std_alpha: f64,
    pub min_threshold: f64,
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        PageHinkleyConfig::from_args(PageHinkleyArgs::default()).expect("defaults are valid")
    }
}

impl PageHinkleyConfig {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        min_instances: i64,
        delta: f64,
        threshold: f64,
        alpha: f64,
        mode: Mode,
        lambda_factor: Option<f64>,
        std_alpha: f64,
        min_threshold: f64,
    ) -> Result<Self, Invalid> {
        PageHinkleyConfig::from_args(PageHinkleyArgs {
            min_instances: Ok(min_instances),
            delta,
            threshold,
            alpha,
            mode: Ok(mode),
            lambda_factor,
            std_alpha,
            min_threshold,
        })
    }

    /// Check the arguments in the Python operator's order, with its messages.
    pub fn from_args(args: PageHinkleyArgs) -> Result<Self, Invalid> {
        let min_instances = int_at_least("min_instances", &args.min_instances, 1)?;
        let (delta, threshold, alpha) = (args.delta, args.threshold, args.alpha);
        ensure((0.0..f64::INFINITY).contains(&delta), || {
            format!("delta must be finite and >= 0, got {}", py_float(delta))
        })?;
        ensure(0.0 < threshold && threshold < f64::INFINITY, || {
            format!("threshold must be finite and > 0, got {}", py_float(threshold))
        })?;
        ensure(0.0 < alpha && alpha <= 1.0, || {
            format!("alpha must be in (0, 1], got {}", py_float(alpha))
        })?;
        let mode = Mode::parse(&args.mode)?;
        if let Some(factor) = args.lambda_factor {
            ensure(0.0 < factor && factor < f64::INFINITY, || {
                format!("lambda_factor must be finite and > 0, got {}", py_float(factor))
            })?;
        }
        let std_alpha = args.std_alpha;
        ensure(0.0 < std_alpha && std_alpha < 1.0, || {
            format!("std_alpha must be in (0, 1), got {}", py_float(std_alpha))
        })?;
        let min_threshold = args.min_threshold;
        ensure(0.0 < min_threshold && min_threshold < f64::INFINITY, || {
            format!("min_threshold must be finite and > 0, got {}", py_float(min_threshold))
        })?;
        Ok(PageHinkleyConfig {
            min_instances: min_instances as u64,
            delta,
            threshold,
            alpha,
            mode,
            lambda_factor: args.lambda_factor,
            std_alpha,
            min_threshold,
        })
    }

    pub fn write(&self, w: &mut Writer) {
        w.varint(self.min_instances);
        w.f64(self.delta);
        w.f64(self.threshold);
        w.f64(self.alpha);
        w.u8(self.mode.code());
        w.opt_f64(self.lambda_factor);
        w.f64(self.std_alpha);
        w.f64(self.min_threshold);
    }

    /// Read a config written by [`Self::write`], validated again.
    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let min_instances = i64::try_from(r.varint()?).unwrap_or(i64::MAX);
        let (delta, threshold, alpha) = (r.f64()?, r.f64()?, r.f64()?);
        let mode = Mode::from_code(r.u8()?)?;
        PageHinkleyConfig::from_args(PageHinkleyArgs {
            min_instances: Ok(min_instances),
            delta,
            threshold,
            alpha,
            mode: Ok(mode),
            lambda_factor: r.opt_f64()?,
            std_alpha: r.f64()?,
            min_threshold: r.f64()?,
        })
    }
}

/// The learned numbers of one Page-Hinkley test; its hyperparameters are passed in.
#[derive(Debug, Clone, PartialEq)]
pub struct PageHinkleyState {
    n: u64,
    mean: f64,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    spread_mean: f64,
    spread_variance: f64,
    drift_detected: bool,
}

impl Default for PageHinkleyState {
    fn default() -> Self {
        PageHinkleyState::new()
    }
}

impl PageHinkleyState {
    /// A fresh test (what an alarm resets to).
    pub fn new() -> Self {
        PageHinkleyState {
            n: 0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            max_decrease: f64::NEG_INFINITY,
            spread_mean: 0.0,
            spread_variance: 0.0,
            drift_detected: false,
        }
    }

    /// Whether the last update raised an alarm.
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// Values seen since the last reset.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Mean of the values seen since the last reset.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The threshold the last update was tested against (the floor before any update).
    ///
    /// Not stored: it is a function of the spread estimate, which resets with the test.
    pub fn current_threshold(&self, cfg: &PageHinkleyConfig) -> f64 {
        match cfg.lambda_factor {
            None => cfg.threshold,
            Some(factor) => py_max(cfg.min_threshold, factor * self.spread_variance.sqrt()),
        }
    }

    /// Advance the test by one value; whether it raised an alarm. Non-finite values are
    /// refused (they would poison the state) and leave it untouched.
    pub fn update(&mut self, cfg: &PageHinkleyConfig, x: f64) -> Result<bool, Invalid> {
        if !x.is_finite() {
            return Err(Invalid(format!(
                "PageHinkley.update needs a finite value, got {}",
                py_float(x)
            )));
        }
        if self.drift_detected {
            *self = PageHinkleyState::new();
        }
        // Same operation order as river's stats.Mean and PageHinkley, for identical floats.
        self.n += 1;
        let n = self.n as f64;
        self.mean += (1.0 / n) * (x - self.mean);
        let deviation = x - self.mean;
        self.sum_increase = cfg.alpha * self.sum_increase + deviation - cfg.delta;
        self.sum_decrease = cfg.alpha * self.sum_decrease + deviation + cfg.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if cfg.lambda_factor.is_some() {
            let weight = py_max(1.0 / n, 1.0 - cfg.std_alpha);
            let spread_deviation = x - self.spread_mean;
            self.spread_mean += weight * spread_deviation;
            self.spread_variance = (1.0 - weight)
                * (self.spread_variance + weight * spread_deviation * spread_deviation);
        }
        if self.n >= cfg.min_instances {
            let threshold = self.current_threshold(cfg);
            let test_up = cfg.mode != Mode::Down;
            let test_down = cfg.mode != Mode::Up;
            self.drift_detected = (test_up && self.sum_increase - self.min_increase > threshold)
                || (test_down && self.max_decrease - self.sum_decrease > threshold);
        }
        Ok(self.drift_detected)
    }

    pub fn write(&self, w: &mut Writer) {
        w.varint(self.n);
        for x in [
            self.mean,
            self.sum_increase,
            self.sum_decrease,
            self.min_increase,
            self.max_decrease,
            self.spread_mean,
            self.spread_variance,
        ] {
            w.f64(x);
        }
        w.bool(self.drift_detected);
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        Ok(PageHinkleyState {
            n: r.varint()?,
            mean: r.f64()?,
            sum_increase: r.f64()?,
            sum_decrease: r.f64()?,
            min_increase: r.f64()?,
            max_decrease: r.f64()?,
            spread_mean: r.f64()?,
            spread_variance: r.f64()?,
            drift_detected: r.bool()?,
        })
    }
}

/// A Page-Hinkley test with its own hyperparameters: the Python class, and what a single
/// (non per-user) Rust detector embeds.
#[pyclass(module = "operators._native", name = "PageHinkley", from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct PageHinkley {
    pub config: PageHinkleyConfig,
    pub state: PageHinkleyState,
}

const TAG: &[u8; 3] = b"PHK";
const VERSION: u8 = 1;

impl PageHinkley {
    pub fn new(config: PageHinkleyConfig) -> Self {
        PageHinkley { config, state: PageHinkleyState::new() }
    }

    pub fn update(&mut self, x: f64) -> Result<bool, Invalid> {
        self.state.update(&self.config, x)
    }

    pub fn current_threshold(&self) -> f64 {
        self.state.current_threshold(&self.config)
    }

    /// Config then state, no header (nestable).
    pub fn write(&self, w: &mut Writer) {
        self.config.write(w);
        self.state.write(w);
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        Ok(PageHinkley { config: PageHinkleyConfig::read(r)?, state: PageHinkleyState::read(r)? })
    }

    /// The versioned snapshot (`to_state`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_header(TAG, VERSION);
        self.write(&mut w);
        w.finish()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self, Invalid> {
        let mut r = Reader::with_header(data, TAG, VERSION, "PageHinkley")?;
        let detector = PageHinkley::read(&mut r)?;
        r.end()?;
        Ok(detector)
    }
}

#[pymethods]
impl PageHinkley {
    #[new]
    #[pyo3(signature = (min_instances=IntParam(Ok(30)), delta=0.005, threshold=50.0,
                        alpha=1.0 - 0.0001, mode=ModeParam(Ok(Mode::Both)), lambda_factor=None,
                        std_alpha=0.999, min_threshold=1.0))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        min_instances: IntParam,
        delta: f64,
        threshold: f64,
        alpha: f64,
        mode: ModeParam,
        lambda_factor: Option<f64>,
        std_alpha: f64,
        min_threshold: f64,
    ) -> PyResult<Self> {
        let config = PageHinkleyConfig::from_args(PageHinkleyArgs {
            min_instances: min_instances.0,
            delta,
            threshold,
            alpha,
            mode: mode.0,
            lambda_factor,
            std_alpha,
            min_threshold,
        })?;
        Ok(PageHinkley::new(config))
    }

    #[getter]
    fn min_instances(&self) -> u64 {
        self.config.min_instances
    }
    #[getter]
    fn delta(&self) -> f64 {
        self.config.delta
    }
    #[getter]
    fn threshold(&self) -> f64 {
        self.config.threshold
    }
    #[getter]
    fn alpha(&self) -> f64 {
        self.config.alpha
    }
    #[getter]
    fn mode(&self) -> &'static str {
        self.config.mode.name()
    }
    #[getter]
    fn lambda_factor(&self) -> Option<f64> {
        self.config.lambda_factor
    }
    #[getter]
    fn std_alpha(&self) -> f64 {
        self.config.std_alpha
    }
    #[getter]
    fn min_threshold(&self) -> f64 {
        self.config.min_threshold
    }

    /// Whether the last update raised an alarm.
    #[getter(drift_detected)]
    fn py_drift_detected(&self) -> bool {
        self.state.drift_detected
    }

    /// The threshold the last update was tested against (the floor before any update).
    #[getter(current_threshold)]
    fn py_current_threshold(&self) -> f64 {
        self.current_threshold()
    }

    /// Values since the last reset.
    #[getter]
    fn n(&self) -> u64 {
        self.state.n
    }

    /// Mean of the values since the last reset.
    #[getter]
    fn mean(&self) -> f64 {
        self.state.mean
    }

    /// Advance the test by one value and return whether it raised an alarm.
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
        Ok(PageHinkley::from_bytes(data)?)
    }

    fn __repr__(&self) -> String {
        let c = &self.config;
        format!(
            "PageHinkley(min_instances={}, delta={}, threshold={}, alpha={}, mode={}, \
             lambda_factor={}, std_alpha={}, min_threshold={})",
            c.min_instances,
            py_float(c.delta),
            py_float(c.threshold),
            py_float(c.alpha),
            py_repr_str(c.mode.name()),
            c.lambda_factor.map_or("None".to_string(), py_float),
            py_float(c.std_alpha),
            py_float(c.min_threshold)
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PageHinkley>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detections(detector: &mut PageHinkley, stream: &[f64]) -> Vec<usize> {
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
    fn golden_step_up_and_down() {
        // Indices checked against the Python oracle (tests/oracles/page_hinkley.py).
        let mut ph = PageHinkley::new(PageHinkleyConfig::default());
        assert_eq!(detections(&mut ph, &step_stream(3.0)), vec![1016]);
        let cfg = PageHinkleyConfig::new(30, 0.005, 50.0, 0.9999, Mode::Up, None, 0.999, 1.0);
        let mut up_only = PageHinkley::new(cfg.unwrap());
        assert_eq!(detections(&mut up_only, &step_stream(-3.0)), Vec::<usize>::new());
        let adaptive =
            PageHinkleyConfig::new(30, 0.005, 50.0, 0.9999, Mode::Both, Some(50.0), 0.999, 1.0);
        let mut ph = PageHinkley::new(adaptive.unwrap());
        assert_eq!(detections(&mut ph, &step_stream(3.0)), vec![1006]);
    }

    #[test]
    fn constant_stream_never_alarms_and_threshold_floor_holds() {
        let cfg =
            PageHinkleyConfig::new(1, 0.0, 1.0, 1.0, Mode::Both, Some(10.0), 0.9, 0.5).unwrap();
        let mut state = PageHinkleyState::new();
        assert_eq!(state.current_threshold(&cfg), 0.5);
        for _ in 0..5000 {
            assert!(!state.update(&cfg, 3.25).unwrap());
        }
        assert_eq!(state.current_threshold(&cfg), 0.5);
    }

    #[test]
    fn non_finite_values_are_refused_without_a_trace() {
        let mut ph = PageHinkley::new(PageHinkleyConfig::default());
        ph.update(1.0).unwrap();
        let before = ph.clone();
        let err = ph.update(f64::NAN).unwrap_err();
        assert_eq!(err.0, "PageHinkley.update needs a finite value, got nan");
        assert_eq!(ph, before);
    }

    #[test]
    fn bad_hyperparameters_say_why_in_pythons_order() {
        let args = |f: fn(&mut PageHinkleyArgs)| {
            let mut a = PageHinkleyArgs::default();
            f(&mut a);
            PageHinkleyConfig::from_args(a).unwrap_err().0
        };
        assert_eq!(
            args(|a| a.min_instances = Err("2.5".into())),
            "min_instances must be an int, got 2.5"
        );
        assert_eq!(args(|a| a.min_instances = Ok(0)), "min_instances must be >= 1, got 0");
        assert_eq!(args(|a| a.delta = f64::NAN), "delta must be finite and >= 0, got nan");
        assert_eq!(args(|a| a.threshold = 0.0), "threshold must be finite and > 0, got 0.0");
        assert_eq!(args(|a| a.alpha = 1.01), "alpha must be in (0, 1], got 1.01");
        assert_eq!(
            args(|a| a.mode = Err(py_repr_str("sideways"))),
            "mode must be one of ('up', 'down', 'both'), got 'sideways'"
        );
        assert_eq!(
            args(|a| a.lambda_factor = Some(-1.0)),
            "lambda_factor must be finite and > 0, got -1.0"
        );
        assert_eq!(args(|a| a.std_alpha = 1.0), "std_alpha must be in (0, 1), got 1.0");
        assert_eq!(
            args(|a| a.min_threshold = f64::INFINITY),
            "min_threshold must be finite and > 0, got inf"
        );
        // The first failing check wins, as in Python.
        assert_eq!(
            args(|a| {
                a.alpha = 0.0;
                a.mode = Err("None".into());
            }),
            "alpha must be in (0, 1], got 0.0"
        );
    }

    #[test]
    fn snapshot_round_trips_and_refuses_garbage() {
        let cfg =
            PageHinkleyConfig::new(5, 0.1, 3.0, 0.99, Mode::Down, Some(4.0), 0.9, 0.2).unwrap();
        let mut ph = PageHinkley::new(cfg);
        for x in step_stream(-2.0).iter().take(1100) {
            ph.update(*x).unwrap();
        }
        let bytes = ph.to_bytes();
        let back = PageHinkley::from_bytes(&bytes).unwrap();
        assert_eq!(back, ph);
        assert!(PageHinkley::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(PageHinkley::from_bytes(b"ADW\x01").is_err());
    }

    #[test]
    fn state_is_small() {
        assert_eq!(std::mem::size_of::<PageHinkleyState>(), 72);
    }

    #[test]
    fn python_reprs() {
        assert_eq!(py_repr_str("up"), "'up'");
        assert_eq!(py_repr_str("it's"), "\"it's\"");
        assert_eq!(py_repr_str("a\\b\n'\""), "'a\\\\b\\n\\'\"'");
    }
}
