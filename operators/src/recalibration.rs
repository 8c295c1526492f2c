//! Recalibration after drift: what a user's state and the global model do when a detector fires.
//!
//! Per user, each interaction's prequential loss (the ISGD error before the step, or the
//! category surprise of a [`CategoryProfile`]) feeds a Page-Hinkley test (Page 1954); on an
//! alarm the user vector is refit from the recent window with ISGD user steps (Vinagre et al.
//! 2014) and the user's learning rate is boosted for a while. Globally, one signal (prequential
//! HR@10, CTR) feeds ADWIN (Bifet and Gavaldà 2007) or Page-Hinkley and an alarm in the bad
//! direction starts a warm-up (shorter popularity half-life, faster learning).
//!
//! Per-user structs hold learned numbers only (`UserRecalibration`: 88 bytes; `CategoryProfile`:
//! 24 bytes + 12 per category); their configs are passed by reference. Snapshots of the Python
//! classes (`b"CAT"`, `b"URC"`, `b"GRC"`, version 1) are laid out in `_native.pyi`.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use numpy::{AllowTypeChange, PyArray1, PyArrayLike1};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PySlice};

use crate::adwin::{AdwinArgs, AdwinConfig, AdwinState};
use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure, py_float};
use crate::intern::{self, Id};
use crate::isgd::{IsgdParams, user_step};
use crate::page_hinkley::{
    IntArg, IntParam, Mode, ModeParam, PageHinkley, PageHinkleyArgs, PageHinkleyConfig,
    PageHinkleyState, int_at_least, py_max, py_min, py_repr_str,
};

/// A multiplier that is `start` with `length` events left and 1 with none, linearly.
pub fn ramp(start: f64, left: u64, length: u64) -> f64 {
    if left == 0 {
        return 1.0;
    }
    if left >= length {
        return start; // exactly: 1 + (start - 1) can round one ulp above start
    }
    let value = 1.0 + (start - 1.0) * left as f64 / length as f64;
    py_min(py_max(value, py_min(start, 1.0)), py_max(start, 1.0))
}

/// The exactly rounded sum of `values` (Shewchuk's algorithm, as CPython's `math.fsum`, whose
/// result this matches bit for bit, including its final half-even correction). An
/// intermediate overflow gives an infinity where Python raises `OverflowError`.
pub fn fsum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut partials = Partials::default();
    let (mut special_sum, mut inf_sum) = (0.0f64, 0.0f64);
    for value in values {
        let mut x = value;
        let mut i = 0;
        for j in 0..partials.len() {
            let mut y = partials.get(j);
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials.set(i, lo);
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        if x != 0.0 {
            if !x.is_finite() {
                // From a nan or inf summand, or an intermediate overflow (finite value).
                if value.is_infinite() {
                    inf_sum += value;
                }
                special_sum += if value.is_finite() { x } else { value };
                partials.truncate(0);
            } else {
                partials.push(x);
            }
        }
    }
    if special_sum != 0.0 || special_sum.is_nan() {
        return if inf_sum.is_nan() { f64::NAN } else { special_sum };
    }
    let mut n = partials.len();
    let mut hi = 0.0f64;
    if n > 0 {
        n -= 1;
        hi = partials.get(n);
        let mut lo = 0.0f64;
        // Sum the partials from the top, stopping when the sum becomes inexact.
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = partials.get(n);
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Make half-even rounding work across multiple partials.
        if n > 0
            && ((lo < 0.0 && partials.get(n - 1) < 0.0) || (lo > 0.0 && partials.get(n - 1) > 0.0))
        {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
    }
    hi
}

/// `fsum`'s partial sums: on the stack up to 32 (as in CPython), on the heap beyond.
struct Partials {
    inline: [f64; 32],
    heap: Vec<f64>,
    on_heap: bool,
    len: usize,
}

impl Default for Partials {
    fn default() -> Self {
        Partials { inline: [0.0; 32], heap: Vec::new(), on_heap: false, len: 0 }
    }
}

impl Partials {
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, i: usize) -> f64 {
        if self.on_heap { self.heap[i] } else { self.inline[i] }
    }
    fn set(&mut self, i: usize, v: f64) {
        if self.on_heap { self.heap[i] = v } else { self.inline[i] = v }
    }
    fn truncate(&mut self, n: usize) {
        self.len = n;
    }
    fn push(&mut self, v: f64) {
        if !self.on_heap && self.len == self.inline.len() {
            self.heap.extend_from_slice(&self.inline);
            self.on_heap = true;
        }
        if self.on_heap {
            self.heap.truncate(self.len);
            self.heap.push(v);
        } else {
            self.inline[self.len] = v;
        }
        self.len += 1;
    }
}

fn check_factors(what: &str, len: usize, params: &IsgdParams) -> Result<(), Invalid> {
    ensure(len == params.factors, || {
        format!("{what} has {len} factors, the params say {}", params.factors)
    })
}

/// Re-run ISGD user steps from `start` over `(item vector, weight)` pairs, oldest first.
///
/// Returns a new vector; `start` and the item vectors are left untouched (item vectors are held
/// fixed: the user half of Vinagre et al. 2014's update, repeated `epochs` times over the
/// window). `step_multiplier` scales every step, like an event weight.
pub fn refit_user_vector<V: AsRef<[f32]>>(
    start: &[f32],
    items: &[(V, f64)],
    params: &IsgdParams,
    epochs: i64,
    step_multiplier: f64,
) -> Result<Vec<f32>, Invalid> {
    ensure(epochs >= 1, || format!("epochs must be >= 1, got {epochs}"))?;
    ensure(0.0 < step_multiplier && step_multiplier < f64::INFINITY, || {
        format!("step_multiplier must be finite and > 0, got {}", py_float(step_multiplier))
    })?;
    check_factors("start", start.len(), params)?;
    for (item, _) in items {
        check_factors("an item vector", item.as_ref().len(), params)?;
    }
    let mut vector = start.to_vec();
    for _ in 0..epochs {
        for (item, weight) in items {
            user_step(&mut vector, item.as_ref(), weight * step_multiplier, params);
        }
    }
    Ok(vector)
}

// --- per user: the category profile -------------------------------------------------------

/// Validated hyperparameters of a [`CategoryProfile`].
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryProfileConfig {
    /// Every weight is multiplied by this per event.
    pub decay: f64,
    /// Only this many heaviest categories are kept.
    pub max_categories: usize,
}

impl Default for CategoryProfileConfig {
    fn default() -> Self {
        CategoryProfileConfig { decay: 0.97, max_categories: 32 }
    }
}

impl CategoryProfileConfig {
    pub fn new(decay: f64, max_categories: i64) -> Result<Self, Invalid> {
        CategoryProfileConfig::from_args(decay, Ok(max_categories))
    }

    /// Check the arguments in the Python operator's order, with its messages.
    pub fn from_args(decay: f64, max_categories: IntArg) -> Result<Self, Invalid> {
        ensure(0.0 < decay && decay <= 1.0, || {
            format!("decay must be in (0, 1], got {}", py_float(decay))
        })?;
        let max_categories = int_at_least("max_categories", &max_categories, 1)?;
        Ok(CategoryProfileConfig {
            decay,
            max_categories: usize::try_from(max_categories).unwrap_or(usize::MAX),
        })
    }
}

/// A category and its decayed weight, 12 bytes.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct Entry {
    id: Id,
    weight: f64,
}

/// A user's decayed category frequencies, in first-seen order (the order decides which of
/// equally light categories is dropped, as the Python dict's did); the config is passed in.
#[derive(Debug, Clone, Default)]
pub struct CategoryProfile {
    entries: Vec<Entry>,
}

impl PartialEq for CategoryProfile {
    fn eq(&self, other: &Self) -> bool {
        self.weights().eq(other.weights())
    }
}

impl CategoryProfile {
    pub fn new() -> Self {
        CategoryProfile { entries: Vec::new() }
    }

    /// (category, weight) in first-seen order.
    pub fn weights(&self) -> impl Iterator<Item = (Id, f64)> + '_ {
        self.entries.iter().map(|e| (e.id, e.weight))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes on the heap (what a resident user pays beyond `size_of`).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    fn weight(&self, category: Id) -> Option<f64> {
        self.entries.iter().find(|e| e.id == category).map(|e| e.weight)
    }

    /// 1 minus the share of the user's decayed history in `category` (1 with no history).
    pub fn surprise(&self, category: Option<Id>) -> f64 {
        let total = fsum(self.entries.iter().map(|e| e.weight));
        if total > 0.0 {
            1.0 - category.and_then(|c| self.weight(c)).unwrap_or(0.0) / total
        } else {
            1.0
        }
    }

    /// The surprise of `category`, then add it to the profile.
    pub fn observe(&mut self, cfg: &CategoryProfileConfig, category: Id) -> f64 {
        let loss = self.surprise(Some(category));
        for e in &mut self.entries {
            let w = e.weight;
            e.weight = w * cfg.decay;
        }
        match self.entries.iter().position(|e| e.id == category) {
            Some(i) => {
                let w = self.entries[i].weight;
                self.entries[i].weight = w + 1.0;
                if self.entries.len() > cfg.max_categories {
                    let lightest = self.lightest();
                    self.entries.remove(lightest);
                }
            }
            None if self.entries.len() < cfg.max_categories => self.push(cfg, category),
            None => {
                // Python adds the category (weight 1.0, last in order), then drops the first
                // lightest: an older one if it weighs <= 1.0, else the newcomer itself. Decided
                // before adding, so the list never outgrows its capacity.
                let lightest = self.lightest();
                if self.entries[lightest].weight <= 1.0 {
                    self.entries.remove(lightest);
                    self.push(cfg, category);
                }
            }
        }
        loss
    }

    /// Index of the first entry of minimal weight (Python's `min` keeps the first).
    fn lightest(&self) -> usize {
        let mut best = 0;
        for (i, e) in self.entries.iter().enumerate().skip(1) {
            let (w, b) = (e.weight, self.entries[best].weight);
            if w < b {
                best = i;
            }
        }
        best
    }

    fn push(&mut self, cfg: &CategoryProfileConfig, category: Id) {
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        if len == cap {
            // Grow by doubling but never past max_categories: no slack in a full profile.
            let target = (cap * 2).max(4).min(cfg.max_categories).max(len + 1);
            self.entries.reserve_exact(target - len);
        }
        self.entries.push(Entry { id: category, weight: 1.0 });
    }

    /// Count then (category name, weight f64) pairs in order; names, not process-local ids.
    pub fn write(&self, w: &mut Writer) {
        w.len(self.entries.len());
        let names = intern::names(self.entries.iter().map(|e| e.id));
        for (name, e) in names.iter().zip(&self.entries) {
            w.str(name);
            w.f64(e.weight);
        }
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let n = r.len()?;
        let mut entries: Vec<Entry> = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let id = intern::intern(r.str()?);
            let weight = r.f64()?;
            ensure(entries.iter().all(|e| e.id != id), || {
                "CategoryProfile snapshot has a category twice".into()
            })?;
            entries.push(Entry { id, weight });
        }
        entries.shrink_to_fit();
        Ok(CategoryProfile { entries })
    }
}

const CATEGORY_TAG: &[u8; 3] = b"CAT";
const CATEGORY_VERSION: u8 = 1;

/// The Python class `CategoryProfile`: a profile with its own config, categories as strings.
#[pyclass(module = "operators._native", name = "CategoryProfile", skip_from_py_object)]
#[derive(Debug, Clone)]
pub struct PyCategoryProfile {
    pub config: CategoryProfileConfig,
    pub profile: CategoryProfile,
}

#[pymethods]
impl PyCategoryProfile {
    #[new]
    #[pyo3(signature = (decay=0.97, max_categories=IntParam(Ok(32))))]
    fn py_new(decay: f64, max_categories: IntParam) -> PyResult<Self> {
        let config = CategoryProfileConfig::from_args(decay, max_categories.0)?;
        Ok(PyCategoryProfile { config, profile: CategoryProfile::new() })
    }

    #[getter]
    fn decay(&self) -> f64 {
        self.config.decay
    }

    #[getter]
    fn max_categories(&self) -> usize {
        self.config.max_categories
    }

    /// (category, weight) pairs in first-seen order (a copy).
    #[getter]
    fn weights(&self) -> Vec<(&'static str, f64)> {
        let ids: Vec<(Id, f64)> = self.profile.weights().collect();
        intern::names(ids.iter().map(|(id, _)| *id))
            .into_iter()
            .zip(ids.iter().map(|(_, w)| *w))
            .collect()
    }

    /// 1 minus the share of the user's decayed history in ``category``.
    fn surprise(&self, category: &str) -> f64 {
        self.profile.surprise(intern::lookup(category))
    }

    /// Return the surprise of ``category``, then add it to the profile.
    fn observe(&mut self, category: &str) -> f64 {
        self.profile.observe(&self.config, intern::intern(category))
    }

    fn to_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut w = Writer::with_header(CATEGORY_TAG, CATEGORY_VERSION);
        w.f64(self.config.decay);
        w.varint(self.config.max_categories as u64);
        self.profile.write(&mut w);
        PyBytes::new(py, &w.finish())
    }

    #[staticmethod]
    fn from_state(data: &[u8]) -> PyResult<Self> {
        let mut r = Reader::with_header(data, CATEGORY_TAG, CATEGORY_VERSION, "CategoryProfile")?;
        let decay = r.f64()?;
        let max_categories = i64::try_from(r.varint()?).unwrap_or(i64::MAX);
        let config = CategoryProfileConfig::new(decay, max_categories)?;
        let profile = CategoryProfile::read(&mut r)?;
        r.end()?;
        Ok(PyCategoryProfile { config, profile })
    }

    fn __repr__(&self) -> String {
        format!(
            "CategoryProfile(decay={}, max_categories={}, categories={})",
            py_float(self.config.decay),
            self.config.max_categories,
            self.profile.len()
        )
    }
}

// --- per user: the drift policy -------------------------------------------------------------

/// Hyperparameters of the per-user policy as given, checked in the Python operator's order.
#[derive(Debug, Clone)]
pub struct UserRecalibrationArgs {
    pub min_instances: IntArg,
    pub delta: f64,
    pub lambda_factor: f64,
    pub std_alpha: f64,
    pub min_threshold: f64,
    pub alpha: f64,
    pub refit_events: IntArg,
    pub refit_epochs: IntArg,
    pub shrink: f64,
    pub boost: f64,
    pub boost_events: IntArg,
}

impl Default for UserRecalibrationArgs {
    fn default() -> Self {
        UserRecalibrationArgs {
            min_instances: Ok(10),
            delta: 0.02,
            lambda_factor: 8.0,
            std_alpha: 0.95,
            min_threshold: 0.3,
            alpha: 0.999,
            refit_events: Ok(10),
            refit_epochs: Ok(3),
            shrink: 0.0,
            boost: 3.0,
            boost_events: Ok(20),
        }
    }
}

/// Hyperparameters of the per-user policy (detector, refit, learning-rate boost), shared by
/// every user. Counts above 2^32 - 1 saturate.
#[pyclass(module = "operators._native", frozen, eq, from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecalibrationConfig {
    /// Adaptive-threshold Page-Hinkley watching for a rising loss (mode "up").
    pub detector: PageHinkleyConfig,
    /// The refit uses the user's last `refit_events` interactions...
    pub refit_events: u32,
    /// ...in this many passes of ISGD user steps.
    pub refit_epochs: u32,
    /// Share of the old vector kept in the refit's start (0: start from the initial vector).
    pub shrink: f64,
    /// Learning-rate multiplier right after an alarm (also used for the refit's steps).
    pub boost: f64,
    /// Interactions over which the multiplier returns linearly to 1.
    pub boost_events: u32,
}

impl Default for UserRecalibrationConfig {
    fn default() -> Self {
        UserRecalibrationConfig::from_args(UserRecalibrationArgs::default())
            .expect("defaults are valid")
    }
}

impl UserRecalibrationConfig {
    pub fn from_args(args: UserRecalibrationArgs) -> Result<Self, Invalid> {
        let mut counts = [0u32; 3];
        for (slot, (name, value)) in counts.iter_mut().zip([
            ("refit_events", &args.refit_events),
            ("refit_epochs", &args.refit_epochs),
            ("boost_events", &args.boost_events),
        ]) {
            *slot = match value {
                Ok(v) if *v >= 1 => u32::try_from(*v).unwrap_or(u32::MAX),
                Ok(v) => return Err(Invalid(format!("{name} must be an int >= 1, got {v}"))),
                Err(repr) => {
                    return Err(Invalid(format!("{name} must be an int >= 1, got {repr}")));
                }
            };
        }
        let (shrink, boost) = (args.shrink, args.boost);
        ensure((0.0..=1.0).contains(&shrink), || {
            format!("shrink must be in [0, 1], got {}", py_float(shrink))
        })?;
        ensure((1.0..f64::INFINITY).contains(&boost), || {
            format!("boost must be finite and >= 1, got {}", py_float(boost))
        })?;
        let detector = PageHinkleyConfig::from_args(PageHinkleyArgs {
            min_instances: args.min_instances,
            delta: args.delta,
            alpha: args.alpha,
            mode: Ok(Mode::Up),
            lambda_factor: Some(args.lambda_factor),
            std_alpha: args.std_alpha,
            min_threshold: args.min_threshold,
            ..PageHinkleyArgs::default()
        })?;
        let [refit_events, refit_epochs, boost_events] = counts;
        Ok(UserRecalibrationConfig {
            detector,
            refit_events,
            refit_epochs,
            shrink,
            boost,
            boost_events,
        })
    }

    fn write(&self, w: &mut Writer) {
        self.detector.write(w);
        for v in [self.refit_events, self.refit_epochs, self.boost_events] {
            w.varint(u64::from(v));
        }
        w.f64(self.shrink);
        w.f64(self.boost);
    }
}

#[pymethods]
impl UserRecalibrationConfig {
    #[new]
    #[pyo3(signature = (min_instances=IntParam(Ok(10)), delta=0.02, lambda_factor=8.0,
                        std_alpha=0.95, min_threshold=0.3, alpha=0.999,
                        refit_events=IntParam(Ok(10)), refit_epochs=IntParam(Ok(3)), shrink=0.0,
                        boost=3.0, boost_events=IntParam(Ok(20))))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        min_instances: IntParam,
        delta: f64,
        lambda_factor: f64,
        std_alpha: f64,
        min_threshold: f64,
        alpha: f64,
        refit_events: IntParam,
        refit_epochs: IntParam,
        shrink: f64,
        boost: f64,
        boost_events: IntParam,
    ) -> PyResult<Self> {
        Ok(UserRecalibrationConfig::from_args(UserRecalibrationArgs {
            min_instances: min_instances.0,
            delta,
            lambda_factor,
            std_alpha,
            min_threshold,
            alpha,
            refit_events: refit_events.0,
            refit_epochs: refit_epochs.0,
            shrink,
            boost,
            boost_events: boost_events.0,
        })?)
    }

    /// Interactions since the last alarm before the next one may be raised.
    #[getter]
    fn min_instances(&self) -> u64 {
        self.detector.min_instances
    }
    /// Page-Hinkley tolerance, in loss units.
    #[getter]
    fn delta(&self) -> f64 {
        self.detector.delta
    }
    /// Adaptive threshold: this many standard deviations of the user's recent loss.
    #[getter]
    fn lambda_factor(&self) -> f64 {
        self.detector.lambda_factor.expect("the user detector is adaptive")
    }
    /// Forgetting factor of that spread.
    #[getter]
    fn std_alpha(&self) -> f64 {
        self.detector.std_alpha
    }
    /// Floor of the threshold, in loss units.
    #[getter]
    fn min_threshold(&self) -> f64 {
        self.detector.min_threshold
    }
    /// Forgetting factor of the Page-Hinkley sums.
    #[getter]
    fn alpha(&self) -> f64 {
        self.detector.alpha
    }
    #[getter(refit_events)]
    fn py_refit_events(&self) -> u32 {
        self.refit_events
    }
    #[getter(refit_epochs)]
    fn py_refit_epochs(&self) -> u32 {
        self.refit_epochs
    }
    #[getter(shrink)]
    fn py_shrink(&self) -> f64 {
        self.shrink
    }
    #[getter(boost)]
    fn py_boost(&self) -> f64 {
        self.boost
    }
    #[getter(boost_events)]
    fn py_boost_events(&self) -> u32 {
        self.boost_events
    }

    /// A fresh detector: adaptive-threshold Page-Hinkley watching for a rising loss.
    fn build_detector(&self) -> PageHinkley {
        PageHinkley::new(self.detector.clone())
    }

    fn __hash__(&self) -> u64 {
        let mut w = Writer::default();
        self.write(&mut w);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        w.finish().hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        let d = &self.detector;
        format!(
            "UserRecalibrationConfig(min_instances={}, delta={}, lambda_factor={}, std_alpha={}, \
             min_threshold={}, alpha={}, refit_events={}, refit_epochs={}, shrink={}, boost={}, \
             boost_events={})",
            d.min_instances,
            py_float(d.delta),
            py_float(self.lambda_factor()),
            py_float(d.std_alpha),
            py_float(d.min_threshold),
            py_float(d.alpha),
            self.refit_events,
            self.refit_epochs,
            py_float(self.shrink),
            py_float(self.boost),
            self.boost_events
        )
    }
}

/// A user-level recalibration: adopt `user_vector` and train with the boosted rate.
///
/// `event_index` is the number of interactions the policy had seen when it fired (1-based).
#[pyclass(module = "operators._native", frozen, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct Recalibration {
    pub user_vector: Vec<f32>,
    #[pyo3(get)]
    pub learning_rate_multiplier: f64,
    #[pyo3(get)]
    pub boost_events: u32,
    #[pyo3(get)]
    pub refit_items: usize,
    #[pyo3(get)]
    pub threshold: f64,
    #[pyo3(get)]
    pub event_index: u64,
}

#[pymethods]
impl Recalibration {
    /// The refit vector (a fresh array the caller may adopt as the user's state).
    #[getter(user_vector)]
    fn py_user_vector<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.user_vector)
    }

    fn __repr__(&self) -> String {
        format!(
            "Recalibration(factors={}, learning_rate_multiplier={}, boost_events={}, \
             refit_items={}, threshold={}, event_index={})",
            self.user_vector.len(),
            py_float(self.learning_rate_multiplier),
            self.boost_events,
            self.refit_items,
            py_float(self.threshold),
            self.event_index
        )
    }
}

/// Per-user drift policy: Page-Hinkley on the prequential loss, then refit and boost. Holds
/// the user's detector state and counters only; the config is passed in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserRecalibration {
    detector: PageHinkleyState,
    events: u64,
    alarms: u32,
    boost_left: u32,
}

impl UserRecalibration {
    pub fn new() -> Self {
        UserRecalibration::default()
    }

    /// Interactions seen.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Alarms raised (saturates at 2^32 - 1).
    pub fn alarms(&self) -> u32 {
        self.alarms
    }

    /// Interactions left in the learning-rate boost.
    pub fn boost_left(&self) -> u32 {
        self.boost_left
    }

    pub fn detector(&self) -> &PageHinkleyState {
        &self.detector
    }

    /// Multiply the next interaction's ISGD step (its event weight) by this.
    pub fn learning_rate_multiplier(&self, cfg: &UserRecalibrationConfig) -> f64 {
        ramp(cfg.boost, u64::from(self.boost_left), u64::from(cfg.boost_events))
    }

    /// The detector's current (adaptive) threshold.
    pub fn threshold(&self, cfg: &UserRecalibrationConfig) -> f64 {
        self.detector.current_threshold(&cfg.detector)
    }

    /// Feed one interaction's prequential loss; true if the user's loss has drifted up. Also
    /// advances the learning-rate boost by one interaction. A non-finite loss is refused.
    pub fn update(&mut self, cfg: &UserRecalibrationConfig, loss: f64) -> Result<bool, Invalid> {
        let drifted = self.detector.update(&cfg.detector, loss)?;
        self.events += 1;
        self.boost_left = self.boost_left.saturating_sub(1);
        if drifted {
            self.alarms = self.alarms.saturating_add(1);
        }
        Ok(drifted)
    }

    /// Refit the user vector from `recent` and start the learning-rate boost.
    ///
    /// `recent` is the user's window as (item, event weight), oldest first, including the
    /// interaction that raised the alarm; only its last `refit_events` are used.
    /// `item_vector` fetches an item's current vector (`None`: unknown, skipped); `initial` is
    /// the user's initial vector. Neither `user_vector` nor the item vectors are modified.
    #[allow(clippy::too_many_arguments)]
    pub fn recalibrate<K: Copy, V: AsRef<[f32]>>(
        &mut self,
        cfg: &UserRecalibrationConfig,
        user_vector: &[f32],
        recent: &[(K, f64)],
        mut item_vector: impl FnMut(K) -> Option<V>,
        initial: &[f32],
        params: &IsgdParams,
    ) -> Result<Recalibration, Invalid> {
        check_factors("user_vector", user_vector.len(), params)?;
        check_factors("initial", initial.len(), params)?;
        let window = &recent[recent.len().saturating_sub(cfg.refit_events as usize)..];
        let items: Vec<(V, f64)> = window
            .iter()
            .filter_map(|(item, weight)| item_vector(*item).map(|v| (v, *weight)))
            .collect();
        // float32 as numpy did it: shrink * user + (1 - shrink) * initial.
        let keep = cfg.shrink as f32;
        let fresh = (1.0 - cfg.shrink) as f32;
        let start: Vec<f32> =
            user_vector.iter().zip(initial).map(|(u, i)| keep * u + fresh * i).collect();
        let refit =
            refit_user_vector(&start, &items, params, i64::from(cfg.refit_epochs), cfg.boost)?;
        self.boost_left = cfg.boost_events;
        Ok(Recalibration {
            user_vector: refit,
            learning_rate_multiplier: cfg.boost,
            boost_events: cfg.boost_events,
            refit_items: items.len(),
            threshold: self.threshold(cfg),
            event_index: self.events,
        })
    }

    /// Detector state, then events, alarms, boost_left (varints); no config.
    pub fn write(&self, w: &mut Writer) {
        self.detector.write(w);
        w.varint(self.events);
        w.varint(u64::from(self.alarms));
        w.varint(u64::from(self.boost_left));
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let detector = PageHinkleyState::read(r)?;
        let events = r.varint()?;
        let small = |v: u64| {
            u32::try_from(v).map_err(|_| Invalid::new("UserRecalibration snapshot is malformed"))
        };
        let alarms = small(r.varint()?)?;
        let boost_left = small(r.varint()?)?;
        Ok(UserRecalibration { detector, events, alarms, boost_left })
    }
}

const USER_TAG: &[u8; 3] = b"URC";
const USER_VERSION: u8 = 1;

/// The Python class `UserRecalibration`: the policy's state with its config.
#[pyclass(module = "operators._native", name = "UserRecalibration", skip_from_py_object)]
#[derive(Debug, Clone)]
pub struct PyUserRecalibration {
    pub config: UserRecalibrationConfig,
    pub state: UserRecalibration,
}

/// A Python vector argument as float32 values (a copy only when it is not contiguous).
fn vector_of<'a>(array: &'a PyArrayLike1<'_, f32, AllowTypeChange>) -> Cow<'a, [f32]> {
    match array.as_slice() {
        Ok(slice) => Cow::Borrowed(slice),
        Err(_) => Cow::Owned(array.as_array().iter().copied().collect()),
    }
}

#[pymethods]
impl PyUserRecalibration {
    #[new]
    #[pyo3(signature = (config=None))]
    fn py_new(config: Option<UserRecalibrationConfig>) -> Self {
        PyUserRecalibration { config: config.unwrap_or_default(), state: UserRecalibration::new() }
    }

    #[getter]
    fn config(&self) -> UserRecalibrationConfig {
        self.config.clone()
    }

    /// Interactions seen.
    #[getter]
    fn events(&self) -> u64 {
        self.state.events
    }

    /// Alarms raised.
    #[getter]
    fn alarms(&self) -> u32 {
        self.state.alarms
    }

    /// Multiply the next interaction's ISGD step (its event weight) by this.
    #[getter]
    fn learning_rate_multiplier(&self) -> f64 {
        self.state.learning_rate_multiplier(&self.config)
    }

    /// The detector's current (adaptive) threshold.
    #[getter]
    fn threshold(&self) -> f64 {
        self.state.threshold(&self.config)
    }

    /// Feed one interaction's prequential loss; True if the user's loss has drifted up.
    fn update(&mut self, loss: f64) -> PyResult<bool> {
        Ok(self.state.update(&self.config, loss)?)
    }

    /// Refit the user vector from ``recent`` and start the learning-rate boost.
    fn recalibrate<'py>(
        &mut self,
        py: Python<'py>,
        user_vector: PyArrayLike1<'py, f32, AllowTypeChange>,
        recent: &Bound<'py, PyAny>,
        item_vector: &Bound<'py, PyAny>,
        initial: PyArrayLike1<'py, f32, AllowTypeChange>,
        params: &IsgdParams,
    ) -> PyResult<Recalibration> {
        // recent[-refit_events:], each item's vector fetched in order, as Python did.
        let last = -(self.config.refit_events as isize);
        let window = recent.get_item(PySlice::new(py, last, isize::MAX, 1))?;
        let mut weights = Vec::new();
        let mut fetched: Vec<Option<PyArrayLike1<'py, f32, AllowTypeChange>>> = Vec::new();
        for entry in window.try_iter()? {
            let (item_id, weight): (Bound<'py, PyAny>, f64) = entry?.extract()?;
            let vector = item_vector.call1((item_id,))?;
            fetched.push(if vector.is_none() { None } else { Some(vector.extract()?) });
            weights.push(weight);
        }
        let vectors: Vec<Option<Cow<'_, [f32]>>> =
            fetched.iter().map(|v| v.as_ref().map(vector_of)).collect();
        let recent: Vec<(usize, f64)> = weights.into_iter().enumerate().collect();
        Ok(self.state.recalibrate(
            &self.config,
            &vector_of(&user_vector),
            &recent,
            |i| vectors[i].as_deref(),
            &vector_of(&initial),
            params,
        )?)
    }

    /// The policy's state as versioned bytes (the config is not part of it).
    fn to_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut w = Writer::with_header(USER_TAG, USER_VERSION);
        self.state.write(&mut w);
        PyBytes::new(py, &w.finish())
    }

    /// Rebuild the policy from `to_state`'s bytes, under ``config`` (default config if None).
    #[staticmethod]
    #[pyo3(signature = (data, config=None))]
    fn from_state(data: &[u8], config: Option<UserRecalibrationConfig>) -> PyResult<Self> {
        let mut r = Reader::with_header(data, USER_TAG, USER_VERSION, "UserRecalibration")?;
        let state = UserRecalibration::read(&mut r)?;
        r.end()?;
        Ok(PyUserRecalibration { config: config.unwrap_or_default(), state })
    }

    fn __repr__(&self) -> String {
        format!(
            "UserRecalibration(events={}, alarms={}, boost_left={})",
            self.state.events, self.state.alarms, self.state.boost_left
        )
    }
}

/// Python's `refit_user_vector`.
#[pyfunction(name = "refit_user_vector")]
#[pyo3(signature = (start, items, params, epochs=3, step_multiplier=1.0))]
fn py_refit_user_vector<'py>(
    py: Python<'py>,
    start: PyArrayLike1<'py, f32, AllowTypeChange>,
    items: &Bound<'py, PyAny>,
    params: &IsgdParams,
    epochs: i64,
    step_multiplier: f64,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    // Python checked the arguments before touching the vectors.
    ensure(epochs >= 1, || format!("epochs must be >= 1, got {epochs}"))?;
    ensure(0.0 < step_multiplier && step_multiplier < f64::INFINITY, || {
        format!("step_multiplier must be finite and > 0, got {}", py_float(step_multiplier))
    })?;
    let mut arrays: Vec<(PyArrayLike1<'py, f32, AllowTypeChange>, f64)> = Vec::new();
    for entry in items.try_iter()? {
        arrays.push(entry?.extract()?);
    }
    let slices: Vec<(Cow<'_, [f32]>, f64)> =
        arrays.iter().map(|(a, w)| (vector_of(a), *w)).collect();
    let out = refit_user_vector(&vector_of(&start), &slices, params, epochs, step_multiplier)?;
    Ok(PyArray1::from_vec(py, out))
}

// --- global ----------------------------------------------------------------------------------

/// Which detector watches the global signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalDetectorKind {
    PageHinkley,
    Adwin,
}

impl GlobalDetectorKind {
    pub fn name(self) -> &'static str {
        match self {
            GlobalDetectorKind::PageHinkley => "page_hinkley",
            GlobalDetectorKind::Adwin => "adwin",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "page_hinkley" => Some(GlobalDetectorKind::PageHinkley),
            "adwin" => Some(GlobalDetectorKind::Adwin),
            _ => None,
        }
    }
}

/// A `detector` argument as Python passed it (`Err(repr)` unless it names a kind).
pub struct KindParam(pub Result<GlobalDetectorKind, String>);

impl<'a, 'py> FromPyObject<'a, 'py> for KindParam {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let kind = obj.extract::<&str>().ok().and_then(GlobalDetectorKind::from_name);
        Ok(KindParam(match kind {
            Some(kind) => Ok(kind),
            None => Err(obj.repr()?.to_string()),
        }))
    }
}

/// The global detector's hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub enum GlobalDetectorConfig {
    PageHinkley(PageHinkleyConfig),
    Adwin(AdwinConfig),
}

/// Hyperparameters of the global policy as given, checked in the Python operator's order.
#[derive(Debug, Clone)]
pub struct GlobalRecalibrationArgs {
    pub detector: Result<GlobalDetectorKind, String>,
    pub mode: Result<Mode, String>,
    pub adwin_delta: f64,
    pub ph_delta: f64,
    pub ph_lambda_factor: f64,
    pub ph_alpha: f64,
    pub ph_min_instances: IntArg,
    pub half_life_factor: f64,
    pub boost: f64,
    pub warmup_events: IntArg,
}

impl Default for GlobalRecalibrationArgs {
    fn default() -> Self {
        GlobalRecalibrationArgs {
            detector: Ok(GlobalDetectorKind::Adwin),
            mode: Ok(Mode::Down),
            adwin_delta: 0.002,
            ph_delta: 0.1,
            ph_lambda_factor: 50.0,
            ph_alpha: 1.0,
            ph_min_instances: Ok(1000),
            half_life_factor: 0.25,
            boost: 2.0,
            warmup_events: Ok(10_000),
        }
    }
}

/// Validated hyperparameters of the global policy (detector, direction, warm-up).
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalRecalibrationConfig {
    pub detector: GlobalDetectorConfig,
    /// Which change triggers a warm-up: `Down` for HR@10 or CTR (a drop is bad).
    pub mode: Mode,
    /// Multiply the popularity half-life by this at the start of the warm-up.
    pub half_life_factor: f64,
    /// Learning-rate multiplier at the start of the warm-up.
    pub boost: f64,
    /// Events over which both return linearly to 1.
    pub warmup_events: u64,
}

impl Default for GlobalRecalibrationConfig {
    fn default() -> Self {
        GlobalRecalibrationConfig::from_args(GlobalRecalibrationArgs::default())
            .expect("defaults are valid")
    }
}

impl GlobalRecalibrationConfig {
    pub fn from_args(args: GlobalRecalibrationArgs) -> Result<Self, Invalid> {
        let kind = args.detector.clone().map_err(|repr| {
            Invalid(format!("detector must be one of ('page_hinkley', 'adwin'), got {repr}"))
        })?;
        let half_life_factor = args.half_life_factor;
        ensure(0.0 < half_life_factor && half_life_factor <= 1.0, || {
            format!("half_life_factor must be in (0, 1], got {}", py_float(half_life_factor))
        })?;
        let boost = args.boost;
        ensure((1.0..f64::INFINITY).contains(&boost), || {
            format!("boost must be finite and >= 1, got {}", py_float(boost))
        })?;
        let warmup_events = int_at_least("warmup_events", &args.warmup_events, 1)? as u64;
        let (mode, detector) = match kind {
            GlobalDetectorKind::Adwin => {
                let mode = Mode::parse(&args.mode)?;
                let adwin = AdwinConfig::from_args(AdwinArgs {
                    delta: args.adwin_delta,
                    ..AdwinArgs::default()
                })?;
                (mode, GlobalDetectorConfig::Adwin(adwin))
            }
            GlobalDetectorKind::PageHinkley => {
                let ph = PageHinkleyConfig::from_args(PageHinkleyArgs {
                    min_instances: args.ph_min_instances.clone(),
                    delta: args.ph_delta,
                    alpha: args.ph_alpha,
                    mode: args.mode.clone(),
                    lambda_factor: Some(args.ph_lambda_factor),
                    ..PageHinkleyArgs::default()
                })?;
                (ph.mode, GlobalDetectorConfig::PageHinkley(ph))
            }
        };
        Ok(GlobalRecalibrationConfig { detector, mode, half_life_factor, boost, warmup_events })
    }

    pub fn kind(&self) -> GlobalDetectorKind {
        match self.detector {
            GlobalDetectorConfig::PageHinkley(_) => GlobalDetectorKind::PageHinkley,
            GlobalDetectorConfig::Adwin(_) => GlobalDetectorKind::Adwin,
        }
    }
}

/// A global recalibration: shorter popularity memory and faster learning for a while.
#[pyclass(module = "operators._native", frozen, eq, get_all, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalWarmup {
    pub half_life_factor: f64,
    pub learning_rate_multiplier: f64,
    pub warmup_events: u64,
    pub event_index: u64,
    /// The signal's mean before the alarm (ADWIN: over its window; PH: since its last reset).
    pub mean_before: f64,
    /// ADWIN: the mean of the window kept after the cut; PH: the value that raised the alarm.
    pub mean_after: f64,
}

#[pymethods]
impl GlobalWarmup {
    fn __repr__(&self) -> String {
        format!(
            "GlobalWarmup(half_life_factor={}, learning_rate_multiplier={}, warmup_events={}, \
             event_index={}, mean_before={}, mean_after={})",
            py_float(self.half_life_factor),
            py_float(self.learning_rate_multiplier),
            self.warmup_events,
            self.event_index,
            py_float(self.mean_before),
            py_float(self.mean_after)
        )
    }
}

/// The global detector's learned state, of the config's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum GlobalDetector {
    PageHinkley(PageHinkleyState),
    Adwin(AdwinState),
}

/// Global drift policy: a detector on one global signal, then a warm-up. Holds learned state
/// and counters; the config is passed in.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalRecalibration {
    detector: GlobalDetector,
    events: u64,
    alarms: u64,
    ignored: u64,
    warmup_left: u64,
}

impl GlobalRecalibration {
    pub fn new(cfg: &GlobalRecalibrationConfig) -> Self {
        let detector = match cfg.detector {
            GlobalDetectorConfig::PageHinkley(_) => {
                GlobalDetector::PageHinkley(PageHinkleyState::new())
            }
            GlobalDetectorConfig::Adwin(_) => GlobalDetector::Adwin(AdwinState::new()),
        };
        GlobalRecalibration { detector, events: 0, alarms: 0, ignored: 0, warmup_left: 0 }
    }

    pub fn detector(&self) -> &GlobalDetector {
        &self.detector
    }

    /// Values seen.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Alarms that started a warm-up.
    pub fn alarms(&self) -> u64 {
        self.alarms
    }

    /// Alarms in the direction that does not call for a warm-up.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Events left in the warm-up.
    pub fn warmup_left(&self) -> u64 {
        self.warmup_left
    }

    /// Multiply the popularity half-life by this now (1 outside a warm-up).
    pub fn half_life_factor(&self, cfg: &GlobalRecalibrationConfig) -> f64 {
        ramp(cfg.half_life_factor, self.warmup_left, cfg.warmup_events)
    }

    /// Multiply learning rates (event weights) by this now (1 outside a warm-up).
    pub fn learning_rate_multiplier(&self, cfg: &GlobalRecalibrationConfig) -> f64 {
        ramp(cfg.boost, self.warmup_left, cfg.warmup_events)
    }

    /// Feed one value of the global signal; the warm-up it starts, if any. A non-finite value,
    /// or a config of the other detector kind, is refused and leaves the state untouched.
    pub fn update(
        &mut self,
        cfg: &GlobalRecalibrationConfig,
        x: f64,
    ) -> Result<Option<GlobalWarmup>, Invalid> {
        let (drifted, before, after, went_down) = match (&mut self.detector, &cfg.detector) {
            (GlobalDetector::Adwin(state), GlobalDetectorConfig::Adwin(c)) => {
                let before = state.estimation();
                let drifted = state.update(c, x)?;
                let after = state.estimation();
                (drifted, before, after, after < before)
            }
            (GlobalDetector::PageHinkley(state), GlobalDetectorConfig::PageHinkley(c)) => {
                // Page-Hinkley only tests the direction(s) of `mode`; with Both any alarm counts.
                let drifted = state.update(c, x)?;
                let before = if drifted { state.mean() } else { 0.0 };
                (drifted, before, x, cfg.mode != Mode::Up)
            }
            _ => return Err(Invalid::new(KIND_MISMATCH)),
        };
        self.events += 1;
        self.warmup_left = self.warmup_left.saturating_sub(1);
        if !drifted {
            return Ok(None);
        }
        if (cfg.mode == Mode::Down && !went_down) || (cfg.mode == Mode::Up && went_down) {
            self.ignored += 1;
            return Ok(None);
        }
        self.alarms += 1;
        self.warmup_left = cfg.warmup_events;
        Ok(Some(GlobalWarmup {
            half_life_factor: cfg.half_life_factor,
            learning_rate_multiplier: cfg.boost,
            warmup_events: cfg.warmup_events,
            event_index: self.events,
            mean_before: before,
            mean_after: after,
        }))
    }

    /// Detector kind (u8: 0 Page-Hinkley, 1 ADWIN) and state, then events, alarms, ignored,
    /// warmup_left (varints); no config.
    pub fn write(&self, w: &mut Writer) {
        match &self.detector {
            GlobalDetector::PageHinkley(state) => {
                w.u8(0);
                state.write(w);
            }
            GlobalDetector::Adwin(state) => {
                w.u8(1);
                state.write(w);
            }
        }
        for v in [self.events, self.alarms, self.ignored, self.warmup_left] {
            w.varint(v);
        }
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let detector = match r.u8()? {
            0 => GlobalDetector::PageHinkley(PageHinkleyState::read(r)?),
            1 => GlobalDetector::Adwin(AdwinState::read(r)?),
            _ => return Err(Invalid::new("GlobalRecalibration snapshot is malformed")),
        };
        Ok(GlobalRecalibration {
            detector,
            events: r.varint()?,
            alarms: r.varint()?,
            ignored: r.varint()?,
            warmup_left: r.varint()?,
        })
    }

    /// Whether this state can be driven by `cfg` (same detector kind).
    pub fn matches(&self, cfg: &GlobalRecalibrationConfig) -> bool {
        matches!(
            (&self.detector, &cfg.detector),
            (GlobalDetector::PageHinkley(_), GlobalDetectorConfig::PageHinkley(_))
                | (GlobalDetector::Adwin(_), GlobalDetectorConfig::Adwin(_))
        )
    }
}

const KIND_MISMATCH: &str = "GlobalRecalibration: the state's detector is not of the config's kind";
const GLOBAL_TAG: &[u8; 3] = b"GRC";
const GLOBAL_VERSION: u8 = 1;

/// The Python class `GlobalRecalibrationConfig`: the validated config, plus the arguments as
/// given (the other kind's hyperparameters are kept for display, unvalidated, as in Python).
#[pyclass(
    module = "operators._native",
    name = "GlobalRecalibrationConfig",
    frozen,
    eq,
    from_py_object
)]
#[derive(Debug, Clone, PartialEq)]
pub struct PyGlobalRecalibrationConfig {
    pub config: GlobalRecalibrationConfig,
    #[pyo3(get)]
    adwin_delta: f64,
    #[pyo3(get)]
    ph_delta: f64,
    #[pyo3(get)]
    ph_lambda_factor: f64,
    #[pyo3(get)]
    ph_alpha: f64,
    #[pyo3(get)]
    ph_min_instances: i64,
}

impl Default for PyGlobalRecalibrationConfig {
    fn default() -> Self {
        let a = GlobalRecalibrationArgs::default();
        PyGlobalRecalibrationConfig {
            config: GlobalRecalibrationConfig::default(),
            adwin_delta: a.adwin_delta,
            ph_delta: a.ph_delta,
            ph_lambda_factor: a.ph_lambda_factor,
            ph_alpha: a.ph_alpha,
            ph_min_instances: 1000,
        }
    }
}

#[pymethods]
impl PyGlobalRecalibrationConfig {
    #[new]
    #[pyo3(signature = (detector=KindParam(Ok(GlobalDetectorKind::Adwin)),
                        mode=ModeParam(Ok(Mode::Down)), adwin_delta=0.002, ph_delta=0.1,
                        ph_lambda_factor=50.0, ph_alpha=1.0, ph_min_instances=IntParam(Ok(1000)),
                        half_life_factor=0.25, boost=2.0, warmup_events=IntParam(Ok(10_000))))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        detector: KindParam,
        mode: ModeParam,
        adwin_delta: f64,
        ph_delta: f64,
        ph_lambda_factor: f64,
        ph_alpha: f64,
        ph_min_instances: IntParam,
        half_life_factor: f64,
        boost: f64,
        warmup_events: IntParam,
    ) -> PyResult<Self> {
        let ph_min_instances = ph_min_instances.0;
        let config = GlobalRecalibrationConfig::from_args(GlobalRecalibrationArgs {
            detector: detector.0,
            mode: mode.0,
            adwin_delta,
            ph_delta,
            ph_lambda_factor,
            ph_alpha,
            ph_min_instances: ph_min_instances.clone(),
            half_life_factor,
            boost,
            warmup_events: warmup_events.0,
        })?;
        Ok(PyGlobalRecalibrationConfig {
            config,
            adwin_delta,
            ph_delta,
            ph_lambda_factor,
            ph_alpha,
            ph_min_instances: ph_min_instances.unwrap_or_default(),
        })
    }

    #[getter]
    fn detector(&self) -> &'static str {
        self.config.kind().name()
    }
    /// Which change triggers a warm-up: ``"down"`` for HR@10 or CTR (a drop is bad).
    #[getter]
    fn mode(&self) -> &'static str {
        self.config.mode.name()
    }
    /// Multiply the popularity half-life by this at the start of the warm-up.
    #[getter]
    fn half_life_factor(&self) -> f64 {
        self.config.half_life_factor
    }
    /// Learning-rate multiplier at the start of the warm-up.
    #[getter]
    fn boost(&self) -> f64 {
        self.config.boost
    }
    /// Events over which both return linearly to 1.
    #[getter]
    fn warmup_events(&self) -> u64 {
        self.config.warmup_events
    }

    /// A fresh detector of the configured kind (`PageHinkley` or `ADWIN`).
    fn build_detector(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match &self.config.detector {
            GlobalDetectorConfig::PageHinkley(c) => {
                Py::new(py, PageHinkley::new(c.clone()))?.into_any()
            }
            GlobalDetectorConfig::Adwin(c) => {
                Py::new(py, crate::adwin::Adwin::new(c.clone()))?.into_any()
            }
        })
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.__repr__().hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        format!(
            "GlobalRecalibrationConfig(detector={}, mode={}, adwin_delta={}, ph_delta={}, \
             ph_lambda_factor={}, ph_alpha={}, ph_min_instances={}, half_life_factor={}, \
             boost={}, warmup_events={})",
            py_repr_str(self.detector()),
            py_repr_str(self.mode()),
            py_float(self.adwin_delta),
            py_float(self.ph_delta),
            py_float(self.ph_lambda_factor),
            py_float(self.ph_alpha),
            self.ph_min_instances,
            py_float(self.config.half_life_factor),
            py_float(self.config.boost),
            self.config.warmup_events
        )
    }
}

/// The Python class `GlobalRecalibration`: the policy's state with its config.
#[pyclass(module = "operators._native", name = "GlobalRecalibration", skip_from_py_object)]
#[derive(Debug, Clone)]
pub struct PyGlobalRecalibration {
    pub config: PyGlobalRecalibrationConfig,
    pub state: GlobalRecalibration,
}

#[pymethods]
impl PyGlobalRecalibration {
    #[new]
    #[pyo3(signature = (config=None))]
    fn py_new(config: Option<PyGlobalRecalibrationConfig>) -> Self {
        let config = config.unwrap_or_default();
        let state = GlobalRecalibration::new(&config.config);
        PyGlobalRecalibration { config, state }
    }

    #[getter]
    fn config(&self) -> PyGlobalRecalibrationConfig {
        self.config.clone()
    }

    /// Values seen.
    #[getter]
    fn events(&self) -> u64 {
        self.state.events
    }

    /// Alarms that started a warm-up.
    #[getter]
    fn alarms(&self) -> u64 {
        self.state.alarms
    }

    /// Alarms in the direction that does not call for a warm-up.
    #[getter]
    fn ignored(&self) -> u64 {
        self.state.ignored
    }

    /// Multiply the popularity half-life by this now (1 outside a warm-up).
    #[getter]
    fn half_life_factor(&self) -> f64 {
        self.state.half_life_factor(&self.config.config)
    }

    /// Multiply learning rates (event weights) by this now (1 outside a warm-up).
    #[getter]
    fn learning_rate_multiplier(&self) -> f64 {
        self.state.learning_rate_multiplier(&self.config.config)
    }

    /// Feed one value of the global signal; return the warm-up it starts, if any.
    fn update(&mut self, x: f64) -> PyResult<Option<GlobalWarmup>> {
        Ok(self.state.update(&self.config.config, x)?)
    }

    /// The policy's state as versioned bytes (the config is not part of it).
    fn to_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut w = Writer::with_header(GLOBAL_TAG, GLOBAL_VERSION);
        self.state.write(&mut w);
        PyBytes::new(py, &w.finish())
    }

    /// Rebuild the policy from `to_state`'s bytes, under ``config`` (default config if None),
    /// which must name the snapshot's detector kind.
    #[staticmethod]
    #[pyo3(signature = (data, config=None))]
    fn from_state(data: &[u8], config: Option<PyGlobalRecalibrationConfig>) -> PyResult<Self> {
        let config = config.unwrap_or_default();
        let mut r = Reader::with_header(data, GLOBAL_TAG, GLOBAL_VERSION, "GlobalRecalibration")?;
        let state = GlobalRecalibration::read(&mut r)?;
        r.end()?;
        ensure(state.matches(&config.config), || KIND_MISMATCH.into())?;
        Ok(PyGlobalRecalibration { config, state })
    }

    fn __repr__(&self) -> String {
        format!(
            "GlobalRecalibration(detector={}, events={}, alarms={}, ignored={}, warmup_left={})",
            py_repr_str(self.config.detector()),
            self.state.events,
            self.state.alarms,
            self.state.ignored,
            self.state.warmup_left
        )
    }
}

/// Python's `_ramp` (for the oracle tests).
#[pyfunction(name = "_ramp")]
fn py_ramp(start: f64, left: i64, length: i64) -> f64 {
    ramp(start, left.max(0) as u64, length.max(0) as u64)
}

/// Python's `math.fsum` (for the oracle tests).
#[pyfunction(name = "_fsum")]
fn py_fsum(values: Vec<f64>) -> f64 {
    fsum(values)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCategoryProfile>()?;
    m.add_class::<UserRecalibrationConfig>()?;
    m.add_class::<Recalibration>()?;
    m.add_class::<PyUserRecalibration>()?;
    m.add_class::<PyGlobalRecalibrationConfig>()?;
    m.add_class::<GlobalWarmup>()?;
    m.add_class::<PyGlobalRecalibration>()?;
    m.add_function(wrap_pyfunction!(py_refit_user_vector, m)?)?;
    m.add_function(wrap_pyfunction!(py_ramp, m)?)?;
    m.add_function(wrap_pyfunction!(py_fsum, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_goes_linearly_from_start_to_one() {
        let seen: Vec<f64> = (0..=5).rev().map(|left| ramp(3.0, left, 4)).collect();
        assert_eq!(seen, vec![3.0, 3.0, 2.5, 2.0, 1.5, 1.0]);
        assert_eq!(ramp(0.2, 1, 4), 0.8);
        assert_eq!(ramp(7.0, 0, 4), 1.0);
    }

    #[test]
    fn fsum_is_exactly_rounded() {
        assert_eq!(fsum([0.1; 10]), 1.0);
        assert_eq!(fsum([1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]), 1e-100);
        // half-even across partials: CPython's own test case
        assert_eq!(fsum([1e-16, 1.0, 1e16]), 1.0000000000000002e16);
        assert_eq!(fsum([]), 0.0);
        assert_eq!(fsum([f64::INFINITY, 1.0]), f64::INFINITY);
        assert!(fsum([f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        // more than 32 partials spill to the heap and still sum exactly
        let many: Vec<f64> = (0..200)
            .map(|i| 2f64.powi(i * 5 - 500) * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let mut reversed = many.clone();
        reversed.reverse();
        assert_eq!(fsum(many), fsum(reversed));
    }

    #[test]
    fn category_profile_golden_and_bounded() {
        let cfg = CategoryProfileConfig::new(0.9, 32).unwrap();
        let mut profile = CategoryProfile::new();
        let [a, b, c] = [
            intern::intern("cat-test-a"),
            intern::intern("cat-test-b"),
            intern::intern("cat-test-c"),
        ];
        let losses: Vec<f64> = [a, a, b, a, c].iter().map(|k| profile.observe(&cfg, *k)).collect();
        let rounded: Vec<f64> = losses.iter().map(|l| (l * 1000.0).round() / 1000.0).collect();
        assert_eq!(rounded, vec![1.0, 0.0, 1.0, 0.369, 1.0]);

        let cfg = CategoryProfileConfig::new(1.0, 2).unwrap();
        let mut profile = CategoryProfile::new();
        for k in [a, a, a, b, c] {
            profile.observe(&cfg, k);
        }
        // b and c tie at 1.0: the older (b) goes.
        assert_eq!(profile.weights().collect::<Vec<_>>(), vec![(a, 3.0), (c, 1.0)]);
        assert_eq!(profile.heap_bytes(), 2 * 12);
        assert!((profile.surprise(Some(a)) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn a_full_profile_never_grows_past_its_bound() {
        let cfg = CategoryProfileConfig::new(0.97, 32).unwrap();
        let mut profile = CategoryProfile::new();
        for i in 0..500 {
            profile.observe(&cfg, intern::intern(&format!("cat-bound-{}", i % 45)));
            assert!(profile.len() <= 32 && profile.entries.capacity() <= 32);
        }
        assert_eq!(std::mem::size_of::<Entry>(), 12);
        assert_eq!(std::mem::size_of::<CategoryProfile>(), 24);
    }

    #[test]
    fn user_policy_golden_alarm_and_boost() {
        let cfg = UserRecalibrationConfig::default();
        let mut policy = UserRecalibration::new();
        let losses: Vec<f64> =
            (0..30).map(|i| 0.1 * f64::from(i % 3)).chain(std::iter::repeat_n(1.0, 10)).collect();
        let alarms: Vec<usize> = losses
            .iter()
            .enumerate()
            .filter(|(_, l)| policy.update(&cfg, **l).unwrap())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(alarms, vec![33]);
        let params = IsgdParams::new(4, 0.05, 0.01, 0.1, 42, None, 10.0).unwrap();
        let old = [1.0f32, 0.0, 0.0, 0.0];
        let new = [0.0f32, 1.0, 0.0, 0.0];
        let recent = vec![(7u32, 1.0); 10];
        let decision = policy
            .recalibrate(&cfg, &old, &recent, |k| (k == 7).then_some(&new[..]), &[0.0; 4], &params)
            .unwrap();
        assert_eq!(decision.refit_items, 10);
        assert!((decision.user_vector[1] - 0.98).abs() < 0.01 && decision.user_vector[0] == 0.0);
        assert_eq!(policy.learning_rate_multiplier(&cfg), 3.0);
        assert_eq!(std::mem::size_of::<UserRecalibration>(), 88);
    }

    #[test]
    fn user_config_messages_in_pythons_order() {
        let err = |a: UserRecalibrationArgs| UserRecalibrationConfig::from_args(a).unwrap_err().0;
        let d = UserRecalibrationArgs::default;
        assert_eq!(
            err(UserRecalibrationArgs { refit_events: Ok(0), ..d() }),
            "refit_events must be an int >= 1, got 0"
        );
        assert_eq!(
            err(UserRecalibrationArgs { boost_events: Err("2.5".into()), ..d() }),
            "boost_events must be an int >= 1, got 2.5"
        );
        assert_eq!(
            err(UserRecalibrationArgs { shrink: 1.5, ..d() }),
            "shrink must be in [0, 1], got 1.5"
        );
        assert_eq!(
            err(UserRecalibrationArgs { boost: 0.5, ..d() }),
            "boost must be finite and >= 1, got 0.5"
        );
        assert_eq!(
            err(UserRecalibrationArgs { lambda_factor: -1.0, ..d() }),
            "lambda_factor must be finite and > 0, got -1.0"
        );
        assert_eq!(
            err(UserRecalibrationArgs { min_instances: Ok(0), ..d() }),
            "min_instances must be >= 1, got 0"
        );
    }

    #[test]
    fn global_policy_warms_up_on_a_drop_only() {
        let cfg = GlobalRecalibrationConfig::from_args(GlobalRecalibrationArgs {
            warmup_events: Ok(4),
            boost: 3.0,
            half_life_factor: 0.2,
            ..GlobalRecalibrationArgs::default()
        })
        .unwrap();
        let mut policy = GlobalRecalibration::new(&cfg);
        // hit rate 0.5 then 0.0: a drop
        let stream: Vec<f64> =
            (0..4000).map(|i| if i < 2000 { f64::from(i % 2) } else { 0.0 }).collect();
        let mut first = None;
        for (i, x) in stream.iter().enumerate() {
            if let Some(w) = policy.update(&cfg, *x).unwrap() {
                first.get_or_insert((i, w));
            }
        }
        let (i, warmup) = first.expect("a warm-up");
        assert!(
            i >= 2000
                && warmup.mean_after < warmup.mean_before
                && warmup.event_index == i as u64 + 1
        );
        let mut up = GlobalRecalibration::new(&cfg);
        for x in stream.iter().map(|x| 1.0 - x) {
            assert!(up.update(&cfg, x).unwrap().is_none());
        }
        assert!(up.ignored() >= 1 && up.alarms() == 0);
        let ph = GlobalRecalibrationConfig::from_args(GlobalRecalibrationArgs {
            detector: Ok(GlobalDetectorKind::PageHinkley),
            ..GlobalRecalibrationArgs::default()
        })
        .unwrap();
        assert_eq!(policy.update(&ph, 1.0).unwrap_err().0, KIND_MISMATCH);
    }

    #[test]
    fn global_config_messages_in_pythons_order() {
        let err =
            |a: GlobalRecalibrationArgs| GlobalRecalibrationConfig::from_args(a).unwrap_err().0;
        let d = GlobalRecalibrationArgs::default;
        assert_eq!(
            err(GlobalRecalibrationArgs { detector: Err("'cusum'".into()), ..d() }),
            "detector must be one of ('page_hinkley', 'adwin'), got 'cusum'"
        );
        assert_eq!(
            err(GlobalRecalibrationArgs { warmup_events: Ok(0), ..d() }),
            "warmup_events must be >= 1, got 0"
        );
        assert_eq!(
            err(GlobalRecalibrationArgs { mode: Err("'sideways'".into()), ..d() }),
            "mode must be one of ('up', 'down', 'both'), got 'sideways'"
        );
        assert_eq!(
            err(GlobalRecalibrationArgs { adwin_delta: 2.0, ..d() }),
            "delta must be in (0, 1), got 2.0"
        );
        // the other kind's hyperparameters are not checked
        assert!(
            GlobalRecalibrationConfig::from_args(GlobalRecalibrationArgs { ph_delta: -1.0, ..d() })
                .is_ok()
        );
    }

    #[test]
    fn snapshots_round_trip() {
        let cfg = UserRecalibrationConfig::default();
        let mut policy = UserRecalibration::new();
        for i in 0..50 {
            policy.update(&cfg, f64::from(i % 7) / 7.0).unwrap();
        }
        let mut w = Writer::with_header(b"XXX", 1);
        policy.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::with_header(&bytes, b"XXX", 1, "test").unwrap();
        assert_eq!(UserRecalibration::read(&mut r).unwrap(), policy);
        r.end().unwrap();

        let gcfg = GlobalRecalibrationConfig::default();
        let mut global = GlobalRecalibration::new(&gcfg);
        for i in 0..500 {
            global.update(&gcfg, f64::from(i % 3 == 0)).unwrap();
        }
        let mut w = Writer::with_header(b"XXX", 1);
        global.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::with_header(&bytes, b"XXX", 1, "test").unwrap();
        assert_eq!(GlobalRecalibration::read(&mut r).unwrap(), global);
    }
}
