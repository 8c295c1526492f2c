//! Shift of the item-popularity distribution between consecutive windows of events.
//!
//! The items of the last `window` (sampled) interactions form a distribution; when a window is
//! full it is compared with the previous one by Jensen-Shannon divergence (Lin 1991; base 2, in
//! [0, 1], symmetric, defined when one side lacks an item). A Page-Hinkley test (Page 1954) on
//! that series alarms when the divergence rises above its usual level by a sustained 0.3 in
//! total: what shoppers look at changed faster than usual (a campaign, a season).
//!
//! The divergence sums the items of the first window in first-seen order, then the second's
//! other items: deterministic, where Python's set union summed in a hash-dependent order (the
//! two agree to rounding, ~1e-15). Snapshot of the Python class: `b"PSH"`, version 1: window
//! varint, the detector (Page-Hinkley config and state), the current then the previous window's
//! counts (count, then (item name, count varint) in first-seen order), last_divergence f64.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use rustc_hash::FxHashMap;

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure};
use crate::intern::{self, Id};
use crate::page_hinkley::{
    IntParam, Mode, PageHinkley, PageHinkleyArgs, PageHinkleyConfig, py_max, py_min,
};

/// Counts of items in first-seen order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemCounts {
    index: FxHashMap<Id, usize>,
    entries: Vec<(Id, u64)>,
    total: u64,
}

impl ItemCounts {
    pub fn new() -> Self {
        ItemCounts::default()
    }

    /// Add `count` to the item's count (0 records the item with nothing counted).
    pub fn add(&mut self, item: Id, count: u64) {
        match self.index.get(&item) {
            Some(&i) => self.entries[i].1 += count,
            None => {
                self.index.insert(item, self.entries.len());
                self.entries.push((item, count));
            }
        }
        self.total += count;
    }

    pub fn get(&self, item: Id) -> u64 {
        self.index.get(&item).map_or(0, |&i| self.entries[i].1)
    }

    pub fn contains(&self, item: Id) -> bool {
        self.index.contains_key(&item)
    }

    /// The sum of the counts.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Distinct items recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (item, count) in first-seen order.
    pub fn iter(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        self.entries.iter().copied()
    }

    fn write(&self, w: &mut Writer) {
        w.len(self.entries.len());
        let names = intern::names(self.entries.iter().map(|(id, _)| *id));
        for (name, (_, count)) in names.iter().zip(&self.entries) {
            w.str(name);
            w.varint(*count);
        }
    }

    fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let n = r.len()?;
        let mut counts = ItemCounts::new();
        for _ in 0..n {
            let item = intern::intern(r.str()?);
            ensure(!counts.contains(item), || "PopularityShift snapshot is malformed".into())?;
            counts.add(item, r.varint()?);
        }
        Ok(counts)
    }
}

/// Jensen-Shannon divergence (base 2, in [0, 1]) of two count distributions.
pub fn js_divergence(p: &ItemCounts, q: &ItemCounts) -> f64 {
    let (np, nq) = (p.total, q.total);
    if np == 0 || nq == 0 {
        return 0.0;
    }
    let (np, nq) = (np as f64, nq as f64);
    let mut total = 0.0f64;
    let mut add = |pc: u64, qc: u64| {
        let (pi, qi) = (pc as f64 / np, qc as f64 / nq);
        let mi = (pi + qi) / 2.0;
        if pi > 0.0 {
            total += 0.5 * pi * (pi / mi).log2();
        }
        if qi > 0.0 {
            total += 0.5 * qi * (qi / mi).log2();
        }
    };
    for (item, pc) in p.iter() {
        add(pc, q.get(item));
    }
    for (item, qc) in q.iter() {
        if !p.contains(item) {
            add(0, qc);
        }
    }
    py_min(1.0, py_max(0.0, total))
}

/// Windowed JS divergence of item popularity, watched by Page-Hinkley (one per flow).
#[pyclass(module = "operators._native", skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct PopularityShift {
    window: u64,
    current: ItemCounts,
    previous: ItemCounts,
    detector: PageHinkley,
    last_divergence: f64,
}

const TAG: &[u8; 3] = b"PSH";
const VERSION: u8 = 1;

/// The detector for `min_windows`: a fixed threshold in JS units (an adaptive one would learn
/// the spike it should flag: one shifted window inflates the spread before it is tested).
fn detector_config(min_windows: Result<i64, String>) -> Result<PageHinkleyConfig, Invalid> {
    PageHinkleyConfig::from_args(PageHinkleyArgs {
        min_instances: min_windows,
        delta: 0.02,
        threshold: 0.3,
        mode: Ok(Mode::Up),
        alpha: 1.0,
        ..PageHinkleyArgs::default()
    })
}

impl PopularityShift {
    pub fn new(window: i64, min_windows: i64) -> Result<Self, Invalid> {
        PopularityShift::from_args(window, Ok(min_windows))
    }

    fn from_args(window: i64, min_windows: Result<i64, String>) -> Result<Self, Invalid> {
        ensure(window >= 10, || format!("window must be >= 10, got {window}"))?;
        Ok(PopularityShift {
            window: window as u64,
            current: ItemCounts::new(),
            previous: ItemCounts::new(),
            detector: PageHinkley::new(detector_config(min_windows)?),
            last_divergence: 0.0,
        })
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    pub fn current(&self) -> &ItemCounts {
        &self.current
    }

    pub fn previous(&self) -> &ItemCounts {
        &self.previous
    }

    pub fn detector(&self) -> &PageHinkley {
        &self.detector
    }

    /// Divergence of the last two full windows (0 before there were two).
    pub fn last_divergence(&self) -> f64 {
        self.last_divergence
    }

    /// Count one interaction; at the end of a window, the divergence if it alarmed.
    pub fn add(&mut self, item: Id) -> Option<f64> {
        self.current.add(item, 1);
        if self.current.total() < self.window {
            return None;
        }
        let mut alarm = None;
        if !self.previous.is_empty() {
            self.last_divergence = js_divergence(&self.current, &self.previous);
            if self.detector.update(self.last_divergence).expect("a divergence is finite") {
                alarm = Some(self.last_divergence);
            }
        }
        self.previous = std::mem::take(&mut self.current);
        alarm
    }

    /// Config and state, no header (nestable).
    pub fn write(&self, w: &mut Writer) {
        w.varint(self.window);
        self.detector.write(w);
        self.current.write(w);
        self.previous.write(w);
        w.f64(self.last_divergence);
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let window = i64::try_from(r.varint()?).unwrap_or(i64::MAX);
        ensure(window >= 10, || format!("window must be >= 10, got {window}"))?;
        Ok(PopularityShift {
            window: window as u64,
            detector: PageHinkley::read(r)?,
            current: ItemCounts::read(r)?,
            previous: ItemCounts::read(r)?,
            last_divergence: r.f64()?,
        })
    }
}

fn counts_dict<'py>(py: Python<'py>, counts: &ItemCounts) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let names = intern::names(counts.iter().map(|(id, _)| id));
    for (name, (_, count)) in names.into_iter().zip(counts.iter()) {
        dict.set_item(name, count)?;
    }
    Ok(dict)
}

#[pymethods]
impl PopularityShift {
    #[new]
    #[pyo3(signature = (window=2000, min_windows=IntParam(Ok(10))))]
    fn py_new(window: i64, min_windows: IntParam) -> PyResult<Self> {
        Ok(PopularityShift::from_args(window, min_windows.0)?)
    }

    #[getter(window)]
    fn py_window(&self) -> u64 {
        self.window
    }

    /// The window being filled, item -> count (a copy).
    #[getter(current)]
    fn py_current<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counts_dict(py, &self.current)
    }

    /// The last full window, item -> count (a copy).
    #[getter(previous)]
    fn py_previous<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counts_dict(py, &self.previous)
    }

    /// The Page-Hinkley test on the divergences (a copy).
    #[getter(detector)]
    fn py_detector(&self) -> PageHinkley {
        self.detector.clone()
    }

    #[getter(last_divergence)]
    fn py_last_divergence(&self) -> f64 {
        self.last_divergence
    }

    /// Count one interaction; at the end of a window return the divergence if it alarmed.
    #[pyo3(name = "add")]
    fn py_add(&mut self, item_id: &str) -> Option<f64> {
        self.add(intern::intern(item_id))
    }

    fn to_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut w = Writer::with_header(TAG, VERSION);
        self.write(&mut w);
        PyBytes::new(py, &w.finish())
    }

    #[staticmethod]
    fn from_state(data: &[u8]) -> PyResult<Self> {
        let mut r = Reader::with_header(data, TAG, VERSION, "PopularityShift")?;
        let shift = PopularityShift::read(&mut r)?;
        r.end()?;
        Ok(shift)
    }
}

/// Python's `js_divergence` of two ``{item: count}`` mappings (e.g. ``Counter``s).
#[pyfunction(name = "js_divergence")]
fn py_js_divergence(p: &Bound<'_, PyDict>, q: &Bound<'_, PyDict>) -> PyResult<f64> {
    // Ids local to this call: nothing is interned for a one-off comparison.
    let mut ids: FxHashMap<String, Id> = FxHashMap::default();
    let mut counts = |dict: &Bound<'_, PyDict>| -> PyResult<ItemCounts> {
        let mut out = ItemCounts::new();
        for (key, value) in dict.iter() {
            let next = ids.len() as Id;
            let id = *ids.entry(key.extract::<String>()?).or_insert(next);
            out.add(id, value.extract::<u64>()?);
        }
        Ok(out)
    };
    let (p, q) = (counts(p)?, counts(q)?);
    Ok(js_divergence(&p, &q))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PopularityShift>()?;
    m.add_function(wrap_pyfunction!(py_js_divergence, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(u32, u64)]) -> ItemCounts {
        let mut c = ItemCounts::new();
        for (id, n) in pairs {
            c.add(*id, *n);
        }
        c
    }

    #[test]
    fn divergence_bounds_and_symmetry() {
        assert_eq!(js_divergence(&counts(&[(1, 10)]), &counts(&[(2, 3)])), 1.0);
        let (p, q) = (counts(&[(1, 3), (2, 1)]), counts(&[(1, 1), (2, 3)]));
        let d = js_divergence(&p, &q);
        assert!(d > 0.0 && d < 1.0);
        assert_eq!(d, js_divergence(&q, &p));
        assert_eq!(js_divergence(&p, &p), 0.0);
        assert_eq!(js_divergence(&p, &ItemCounts::new()), 0.0);
    }

    #[test]
    fn alarm_on_a_shift_only() {
        let mut shift = PopularityShift::new(100, 3).unwrap();
        let items_a: Vec<Id> = (0..10).map(|i| intern::intern(&format!("ps-a{i}"))).collect();
        let items_b: Vec<Id> = (0..10).map(|i| intern::intern(&format!("ps-b{i}"))).collect();
        for n in 0..100 * 20 {
            assert_eq!(shift.add(items_a[(n * 7) % 10]), None);
        }
        let alarms: Vec<f64> = (0..300).filter_map(|n| shift.add(items_b[(n * 3) % 10])).collect();
        assert!(!alarms.is_empty() && alarms[0] > 0.5);
        let mut w = Writer::with_header(TAG, VERSION);
        shift.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::with_header(&bytes, TAG, VERSION, "PopularityShift").unwrap();
        assert_eq!(PopularityShift::read(&mut r).unwrap(), shift);
    }

    #[test]
    fn bad_arguments() {
        assert_eq!(PopularityShift::new(5, 3).unwrap_err().0, "window must be >= 10, got 5");
        assert_eq!(PopularityShift::new(10, 0).unwrap_err().0, "min_instances must be >= 1, got 0");
    }
}
