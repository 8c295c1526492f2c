//! Everything the dataflow keeps per user, and what one event does to it.
//!
//! One event: drop it if its id was seen within the dedup horizon; otherwise advance the
//! session, add it to the recent window and the type counts and, for an interaction, apply
//! the user half of an ISGD step and hand back the item half (for the item's owner) and the
//! co-visitation pairs it forms with the session's previous items; then feed the drift policy.
//!
//! Snapshot (tag `FRU`, version 1): user id, vector (f32s), version, duplicates, window,
//! dedup, session, segment (str), category profile, recalibration (opt), last_error,
//! last_surprise (opt f64).

use crate::codec::{Reader, Writer};
use crate::dedup::{DedupConfig, EventDedup};
use crate::errors::{Invalid, ensure};
use crate::events::EventType;
use crate::intern::{self, Id};
use crate::isgd::{self, IsgdParams, Kind};
use crate::messages::{ItemLearn, ItemOp};
use crate::recalibration::{
    CategoryProfile, CategoryProfileConfig, Recalibration, UserRecalibration,
    UserRecalibrationConfig,
};
use crate::records::{UserRecordFields, encode_user};
use crate::sessions::{SESSION_MAX_ITEMS, Session};
use crate::user_window::{UserWindow, WindowConfig};

/// Per-user bounds, horizons and the drift policy (from the settings).
#[derive(Debug, Clone, PartialEq)]
pub struct UserConfig {
    pub window: WindowConfig,
    pub dedup: DedupConfig,
    pub session_gap_s: f64,
    /// A new session item pairs with at most this many previous items of the session.
    pub covisit_span: usize,
    pub categories: CategoryProfileConfig,
    /// Per-user drift policy; None disables drift detection.
    pub recalibration: Option<UserRecalibrationConfig>,
}

impl UserConfig {
    pub fn new(
        window: i64,
        seen_max: i64,
        dedup_horizon_s: f64,
        dedup_max_ids: i64,
        session_gap_s: f64,
        covisit_span: i64,
        recalibration: Option<UserRecalibrationConfig>,
    ) -> Result<Self, Invalid> {
        ensure(session_gap_s > 0.0, || {
            format!("gap_s must be > 0, got {}", crate::errors::py_float(session_gap_s))
        })?;
        ensure(covisit_span >= 1, || format!("covisit_span must be >= 1, got {covisit_span}"))?;
        Ok(UserConfig {
            window: WindowConfig::new(window, seen_max)?,
            dedup: DedupConfig::new(dedup_horizon_s, dedup_max_ids)?,
            session_gap_s,
            covisit_span: covisit_span as usize,
            categories: CategoryProfileConfig::default(),
            recalibration,
        })
    }
}

/// A user's vector, window, session, dedup memory, drift policy and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct UserState {
    pub user_id: Box<str>,
    pub vector: Box<[f32]>,
    /// Events applied (duplicates not included).
    pub version: u64,
    /// Events dropped because their id was already applied.
    pub duplicates: u64,
    pub window: UserWindow,
    pub dedup: EventDedup,
    pub session: Session,
    /// Context segment of the user's last applied event (interned; "" before any).
    pub segment: Id,
    pub categories: CategoryProfile,
    pub recalibration: Option<UserRecalibration>,
    /// ISGD error of the last interaction before its step (its prequential loss).
    pub last_error: f64,
    /// How unexpected the last interaction's category was (None: no category).
    pub last_surprise: Option<f64>,
}

impl UserState {
    pub fn new(user_id: &str, params: &IsgdParams, config: &UserConfig) -> Self {
        UserState {
            user_id: user_id.into(),
            vector: isgd::initial_vector(user_id, Kind::User, params).into(),
            version: 0,
            duplicates: 0,
            window: UserWindow::default(),
            dedup: EventDedup::default(),
            session: Session::default(),
            segment: intern::intern(""),
            categories: CategoryProfile::new(),
            recalibration: config.recalibration.as_ref().map(|_| UserRecalibration::new()),
            last_error: 0.0,
            last_surprise: None,
        }
    }

    /// True (and counted) if this event id was already applied within the horizon.
    pub fn is_duplicate(&mut self, event_id_hash: u64, ts_s: f64, config: &UserConfig) -> bool {
        if self.dedup.is_duplicate(event_id_hash, ts_s, &config.dedup) {
            self.duplicates += 1;
            return true;
        }
        false
    }

    /// Apply an interaction: user half of ISGD, session, window. Appends to `ops` what the
    /// item owners must do: the item half of the step (for `item`), then the co-visits the
    /// item forms with the session's previous items (both directions).
    #[allow(clippy::too_many_arguments)]
    pub fn learn(
        &mut self,
        item: Id,
        item_vector: &[f32],
        event_type: EventType,
        ts_s: f64,
        category: Option<Id>,
        segment: Id,
        boost: f64,
        params: &IsgdParams,
        config: &UserConfig,
        ops: &mut Vec<(Id, ItemOp)>,
    ) {
        let weight = params.weight(event_type);
        let before = self.vector.clone();
        let mut boost = boost;
        if let (Some(policy), Some(cfg)) = (&self.recalibration, &config.recalibration) {
            boost *= policy.learning_rate_multiplier(cfg);
        }
        self.last_surprise = category.map(|c| self.categories.observe(&config.categories, c));
        self.last_error = isgd::user_step(&mut self.vector, item_vector, weight * boost, params);
        ops.push((
            item,
            ItemOp::Learn(ItemLearn { user_vector: before, weight, ts_s, category, segment }),
        ));
        self.advance_session(item, ts_s, weight, config, ops);
        self.window.add(item, event_type, ts_s, &config.window);
        self.version += 1;
    }

    fn advance_session(
        &mut self,
        item: Id,
        ts_s: f64,
        weight: f64,
        config: &UserConfig,
        ops: &mut Vec<(Id, ItemOp)>,
    ) {
        let new_session = self.session.starts_new(ts_s, config.session_gap_s);
        let pairs = !new_session && !self.session.items.contains(&item);
        if pairs {
            // The span: the previous items of the session, most recent first. Items viewed
            // right before count more than items viewed five clicks ago.
            let items = &self.session.items;
            let span_len = config.covisit_span.min(items.len());
            let span = &items[items.len() - span_len..];
            for (distance, other) in span.iter().rev().enumerate() {
                let w = weight / (distance + 1) as f64;
                ops.push((item, ItemOp::CoVisit { other: *other, weight: w, ts_s }));
            }
            for (distance, other) in span.iter().rev().enumerate() {
                let w = weight / (distance + 1) as f64;
                ops.push((*other, ItemOp::CoVisit { other: item, weight: w, ts_s }));
            }
        }
        self.session.advance(item, ts_s, config.session_gap_s, SESSION_MAX_ITEMS);
    }

    /// Feed the last interaction's loss to the drift policy; on an alarm, refit the user
    /// vector from the recent window (`item_vector` fetches current item vectors) and adopt it.
    pub fn check_drift(
        &mut self,
        item_vector: impl Fn(Id) -> Option<Vec<f32>>,
        params: &IsgdParams,
        config: &UserConfig,
    ) -> Result<Option<Recalibration>, Invalid> {
        let (Some(policy), Some(cfg)) = (&mut self.recalibration, &config.recalibration) else {
            return Ok(None);
        };
        // The category surprise is the stronger per-user signal on sparse logs (most items are
        // new to the model, so the MF error is ~1 whatever the user does; measured in
        // benchmarks/drift.py); the MF error is the fallback for events without a category.
        let loss = self.last_surprise.unwrap_or(self.last_error.abs());
        if !policy.update(cfg, loss)? {
            return Ok(None);
        }
        let recent: Vec<(Id, f64)> =
            self.window.recent.iter().map(|r| (r.item, params.weight(r.event_type))).collect();
        let initial = isgd::initial_vector(&self.user_id, Kind::User, params);
        let decision =
            policy.recalibrate(cfg, &self.vector, &recent, item_vector, &initial, params)?;
        self.vector = decision.user_vector.clone().into();
        Ok(Some(decision))
    }

    /// Count an event that does not train the model (e.g. an impression).
    pub fn observe(&mut self, event_type: EventType, ts_s: f64) {
        self.window.count(event_type, ts_s);
        self.version += 1;
    }

    /// What serving reads of the user: (version, encoded `state.records.UserRecord`).
    pub fn record(&self, event_ts_s: f64, written_at_s: f64) -> (u64, Vec<u8>) {
        let window = &self.window;
        let recent = intern::names(window.recent_items());
        let seen = intern::names(window.seen.iter().rev().copied());
        let purchased = intern::names(window.purchased.iter().rev().copied());
        let session_items = intern::names(self.session.items.iter().copied());
        let counts: Vec<(&str, u32)> = EventType::ALL
            .iter()
            .filter(|t| window.counts[**t as usize] > 0)
            .map(|t| (t.name(), window.counts[*t as usize]))
            .collect();
        // Every event, applied or dropped as a duplicate, changes the record: both count.
        let version = self.version + self.duplicates;
        let session = &self.session;
        let fields = UserRecordFields {
            version,
            event_ts_s,
            written_at_s,
            vector: &self.vector,
            recent: &recent,
            seen: &seen,
            counts: &counts,
            session_no: session.session_no,
            session_start_ts_s: if session.session_no > 0 { session.start_ts_s } else { 0.0 },
            session_event_count: session.event_count,
            session_items: &session_items,
            segment: intern::name(self.segment),
            duplicates: self.duplicates,
            dedup_ids: self.dedup.len() as u64,
            purchased: &purchased,
            events: self.version,
        };
        (version, encode_user(&fields))
    }

    pub const TAG: &'static [u8; 3] = b"FRU";
    pub const FORMAT: u8 = 1;

    pub fn write(&self, w: &mut Writer) {
        w.str(&self.user_id);
        w.f32s(&self.vector);
        w.varint(self.version);
        w.varint(self.duplicates);
        self.window.write(w);
        self.dedup.write(w);
        self.session.write(w);
        w.str(intern::name(self.segment));
        self.categories.write(w);
        match &self.recalibration {
            None => w.u8(0),
            Some(policy) => {
                w.u8(1);
                policy.write(w);
            }
        }
        w.f64(self.last_error);
        w.opt_f64(self.last_surprise);
    }

    pub fn read(r: &mut Reader, params: &IsgdParams, config: &UserConfig) -> Result<Self, Invalid> {
        let user_id: Box<str> = r.str()?.into();
        let vector = r.f32s()?;
        ensure(vector.len() == params.factors, || {
            format!(
                "user snapshot has {} factors, the settings say {}",
                vector.len(),
                params.factors
            )
        })?;
        let version = r.varint()?;
        let duplicates = r.varint()?;
        let window = UserWindow::read(r)?;
        let dedup = EventDedup::read(r)?;
        let session = Session::read(r)?;
        let segment = intern::intern(r.str()?);
        let categories = CategoryProfile::read(r)?;
        let stored = if r.bool()? { Some(UserRecalibration::read(r)?) } else { None };
        // A policy switched on after the snapshot starts fresh; switched off, it is dropped.
        let recalibration = match (&config.recalibration, stored) {
            (None, _) => None,
            (Some(_), Some(policy)) => Some(policy),
            (Some(_), None) => Some(UserRecalibration::new()),
        };
        Ok(UserState {
            user_id,
            vector: vector.into(),
            version,
            duplicates,
            window,
            dedup,
            session,
            segment,
            categories,
            recalibration,
            last_error: r.f64()?,
            last_surprise: r.opt_f64()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_header(Self::TAG, Self::FORMAT);
        self.write(&mut w);
        w.finish()
    }

    pub fn from_bytes(
        data: &[u8],
        params: &IsgdParams,
        config: &UserConfig,
    ) -> Result<Self, Invalid> {
        let mut r = Reader::with_header(data, Self::TAG, Self::FORMAT, "user state")?;
        let state = UserState::read(&mut r, params, config)?;
        r.end()?;
        Ok(state)
    }
}

// --- Python face (tests and tools; the flow uses the user model of `user_model.rs`) ---------

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

/// Per-user bounds, horizons and drift policy: `UserConfig(window=50, seen_max=500, ...)`.
#[pyclass(name = "UserConfig", module = "operators._native", frozen)]
pub struct PyUserConfig {
    pub inner: UserConfig,
}

#[pymethods]
impl PyUserConfig {
    #[new]
    #[pyo3(signature = (window=50, seen_max=500, dedup_horizon_s=86_400.0, dedup_max_ids=10_000,
                        session_gap_s=1800.0, covisit_span=5, recalibration=None))]
    fn new(
        window: i64,
        seen_max: i64,
        dedup_horizon_s: f64,
        dedup_max_ids: i64,
        session_gap_s: f64,
        covisit_span: i64,
        recalibration: Option<UserRecalibrationConfig>,
    ) -> PyResult<Self> {
        Ok(PyUserConfig {
            inner: UserConfig::new(
                window,
                seen_max,
                dedup_horizon_s,
                dedup_max_ids,
                session_gap_s,
                covisit_span,
                recalibration,
            )?,
        })
    }

    #[getter]
    fn window(&self) -> usize {
        self.inner.window.window
    }
    #[getter]
    fn seen_max(&self) -> usize {
        self.inner.window.seen_max
    }
    #[getter]
    fn session_gap_s(&self) -> f64 {
        self.inner.session_gap_s
    }
    #[getter]
    fn covisit_span(&self) -> usize {
        self.inner.covisit_span
    }
    #[getter]
    fn drift_detection(&self) -> bool {
        self.inner.recalibration.is_some()
    }
}

fn parse_event_type(name: &str) -> PyResult<EventType> {
    EventType::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown event type {name:?}")))
}

/// One user's state with its hyperparameters: `UserState(user_id, params, config)`.
#[pyclass(name = "UserState", module = "operators._native")]
pub struct PyUserState {
    state: UserState,
    params: IsgdParams,
    config: UserConfig,
}

#[pymethods]
impl PyUserState {
    #[new]
    fn new(user_id: &str, params: IsgdParams, config: PyRef<'_, PyUserConfig>) -> Self {
        let config = config.inner.clone();
        PyUserState { state: UserState::new(user_id, &params, &config), params, config }
    }

    #[getter]
    fn user_id(&self) -> &str {
        &self.state.user_id
    }
    #[getter]
    fn vector<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.state.vector)
    }
    #[getter]
    fn version(&self) -> u64 {
        self.state.version
    }
    #[getter]
    fn duplicates(&self) -> u64 {
        self.state.duplicates
    }
    #[getter]
    fn dedup_ids(&self) -> usize {
        self.state.dedup.len()
    }
    #[getter]
    fn segment(&self) -> &'static str {
        intern::name(self.state.segment)
    }
    #[getter]
    fn last_error(&self) -> f64 {
        self.state.last_error
    }
    #[getter]
    fn last_surprise(&self) -> Option<f64> {
        self.state.last_surprise
    }
    /// (session_no, start_ts_s, last_ts_s, event_count, items)
    #[getter]
    fn session(&self) -> (u32, f64, f64, u32, Vec<&'static str>) {
        let s = &self.state.session;
        (
            s.session_no,
            s.start_ts_s,
            s.last_ts_s,
            s.event_count,
            intern::names(s.items.iter().copied()),
        )
    }
    /// Distinct items of the window, most recent first.
    fn recent_items(&self) -> Vec<&'static str> {
        intern::names(self.state.window.recent_items())
    }
    /// Seen items, oldest first.
    #[getter]
    fn seen(&self) -> Vec<&'static str> {
        intern::names(self.state.window.seen.iter().copied())
    }
    /// Purchased items, oldest first.
    #[getter]
    fn purchased(&self) -> Vec<&'static str> {
        intern::names(self.state.window.purchased.iter().copied())
    }
    /// Event type → count (types seen only).
    #[getter]
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for t in EventType::ALL {
            let n = self.state.window.counts[t as usize];
            if n > 0 {
                out.set_item(t.name(), n)?;
            }
        }
        Ok(out)
    }
    #[getter]
    fn last_ts_s(&self) -> f64 {
        self.state.window.last_ts_s
    }

    /// True (and counted) if this event id was already applied within the horizon.
    fn is_duplicate(&mut self, event_id: &str, ts_s: f64) -> bool {
        self.state.is_duplicate(crate::dedup::id_hash(event_id), ts_s, &self.config)
    }

    /// Apply an interaction; returns `(item_update, covisits)` shaped like the Python
    /// operator's `ItemUpdate(item_id, user_vector, weight, ts_s, category_id)` and
    /// `CoVisit(item_id, other_ids, weights, ts_s)` messages, as tuples.
    #[pyo3(signature = (item_id, item_vector, event_type, ts_s, category_id=None, boost=1.0, segment=""))]
    #[allow(clippy::too_many_arguments)]
    fn learn<'py>(
        &mut self,
        py: Python<'py>,
        item_id: &str,
        item_vector: PyReadonlyArray1<'_, f32>,
        event_type: &str,
        ts_s: f64,
        category_id: Option<&str>,
        boost: f64,
        segment: &str,
    ) -> PyResult<(Bound<'py, PyTuple>, Vec<Bound<'py, PyTuple>>)> {
        let vector = item_vector.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?;
        if vector.len() != self.params.factors {
            return Err(PyValueError::new_err("item_vector has the wrong number of factors"));
        }
        let item = intern::intern(item_id);
        let mut ops = Vec::new();
        self.state.learn(
            item,
            vector,
            parse_event_type(event_type)?,
            ts_s,
            category_id.map(intern::intern),
            intern::intern(segment),
            boost,
            &self.params,
            &self.config,
            &mut ops,
        );
        let mut ops = ops.into_iter();
        let Some((_, ItemOp::Learn(learn))) = ops.next() else {
            unreachable!("learn starts with the item's own update")
        };
        let update = (
            item_id,
            PyBytes::new(py, &crate::records::vector_bytes(&learn.user_vector)),
            learn.weight,
            learn.ts_s,
            learn.category.map(intern::name),
        )
            .into_pyobject(py)?;
        let mut span: Vec<(&'static str, f64)> = Vec::new();
        let mut back: Vec<Bound<'py, PyTuple>> = Vec::new();
        for (target, op) in ops {
            let ItemOp::CoVisit { other, weight, ts_s } = op else {
                unreachable!("co-visits only")
            };
            if target == item {
                span.push((intern::name(other), weight));
            } else {
                back.push((intern::name(target), (item_id,), (weight,), ts_s).into_pyobject(py)?);
            }
        }
        let mut covisits = Vec::new();
        if !span.is_empty() {
            let others: Vec<&str> = span.iter().map(|(o, _)| *o).collect();
            let weights: Vec<f64> = span.iter().map(|(_, w)| *w).collect();
            let others = PyTuple::new(py, others)?;
            let weights = PyTuple::new(py, weights)?;
            covisits.push((item_id, others, weights, ts_s).into_pyobject(py)?);
        }
        covisits.extend(back);
        Ok((update, covisits))
    }

    /// Count an event that does not train the model (e.g. an impression).
    fn observe(&mut self, item_id: &str, event_type: &str, ts_s: f64) -> PyResult<()> {
        let _ = item_id; // impressions name an item but never enter the window
        self.state.observe(parse_event_type(event_type)?, ts_s);
        Ok(())
    }

    /// Feed the last interaction's loss to the drift policy; on an alarm return the decision
    /// as a dict (and adopt its vector). `item_vector(item_id)` gives current item vectors.
    fn check_drift<'py>(
        &mut self,
        py: Python<'py>,
        item_vector: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let lookup = |id: Id| -> Option<Vec<f32>> {
            let found = item_vector.call1((intern::name(id),)).ok()?;
            if found.is_none() {
                return None;
            }
            found.extract::<Vec<f32>>().ok()
        };
        let decision = self.state.check_drift(lookup, &self.params, &self.config)?;
        let Some(d) = decision else { return Ok(None) };
        let out = PyDict::new(py);
        out.set_item("user_vector", PyArray1::from_slice(py, &d.user_vector))?;
        out.set_item("learning_rate_multiplier", d.learning_rate_multiplier)?;
        out.set_item("boost_events", d.boost_events)?;
        out.set_item("refit_items", d.refit_items)?;
        out.set_item("threshold", d.threshold)?;
        out.set_item("event_index", d.event_index)?;
        Ok(Some(out))
    }

    /// (version, encoded `state.records.UserRecord`) as the flow writes it.
    fn record<'py>(
        &self,
        py: Python<'py>,
        event_ts_s: f64,
        written_at_s: f64,
    ) -> (u64, Bound<'py, PyBytes>) {
        let (version, blob) = self.state.record(event_ts_s, written_at_s);
        (version, PyBytes::new(py, &blob))
    }

    /// Versioned bytes of the state (tag `FRU`).
    fn to_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.state.to_bytes())
    }

    #[staticmethod]
    fn from_state(
        state: &[u8],
        params: IsgdParams,
        config: PyRef<'_, PyUserConfig>,
    ) -> PyResult<Self> {
        let config = config.inner.clone();
        Ok(PyUserState { state: UserState::from_bytes(state, &params, &config)?, params, config })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyUserConfig>()?;
    m.add_class::<PyUserState>()?;
    Ok(())
}
