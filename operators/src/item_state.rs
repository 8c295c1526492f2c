//! An item's learned state: factor vector, update count, popularity, trend, co-visited
//! neighbours and popularity per context segment.
//!
//! Owned by the item-keyed step of the dataflow (one owner per item), so every update to an
//! item is applied exactly once and in one order.
//!
//! Snapshot (tag `FRI`, version 1): item id, vector (f32s), version, popularity_log2,
//! short_popularity_log2, last_ts, neighbours, covisit_version, category (opt str),
//! segments (count, then segment str + log2 score each), trending (bool).

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure, py_float};
use crate::intern::{self, Id};
use crate::isgd::{self, IsgdParams, Kind};
use crate::item_neighbours::{ItemNeighbours, NeighboursConfig};
use crate::popularity::{self, NO_POPULARITY};

/// Half-lives and bounds of item state (from the settings).
#[pyclass(module = "operators._native", frozen, from_py_object)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemConfig {
    #[pyo3(get)]
    pub half_life_s: f64,
    #[pyo3(get)]
    pub trend_half_life_s: f64,
    /// Short-term (decayed) event weight an item needs before it can be trending.
    #[pyo3(get)]
    pub trend_min_events: f64,
    pub neighbours: NeighboursConfig,
}

impl Default for ItemConfig {
    fn default() -> Self {
        ItemConfig {
            half_life_s: 86_400.0,
            trend_half_life_s: 3_600.0,
            trend_min_events: 3.0,
            neighbours: NeighboursConfig::default(),
        }
    }
}

#[pymethods]
impl ItemConfig {
    #[new]
    #[pyo3(signature = (half_life_s=86_400.0, trend_half_life_s=3_600.0, trend_min_events=3.0,
                        covisit_half_life_s=7.0 * 86_400.0, neighbour_capacity=100))]
    fn py_new(
        half_life_s: f64,
        trend_half_life_s: f64,
        trend_min_events: f64,
        covisit_half_life_s: f64,
        neighbour_capacity: i64,
    ) -> PyResult<Self> {
        Ok(ItemConfig::new(
            half_life_s,
            trend_half_life_s,
            trend_min_events,
            covisit_half_life_s,
            neighbour_capacity,
        )?)
    }

    #[getter]
    fn covisit_half_life_s(&self) -> f64 {
        self.neighbours.half_life_s
    }

    #[getter]
    fn neighbour_capacity(&self) -> usize {
        self.neighbours.capacity
    }
}

impl ItemConfig {
    pub fn new(
        half_life_s: f64,
        trend_half_life_s: f64,
        trend_min_events: f64,
        covisit_half_life_s: f64,
        neighbour_capacity: i64,
    ) -> Result<Self, Invalid> {
        for (name, value) in
            [("half_life_s", half_life_s), ("trend_half_life_s", trend_half_life_s)]
        {
            ensure(value > 0.0 && value.is_finite(), || {
                format!("{name} must be finite and > 0, got {}", py_float(value))
            })?;
        }
        ensure(trend_min_events >= 0.0, || {
            format!("trend_min_events must be >= 0, got {}", py_float(trend_min_events))
        })?;
        Ok(ItemConfig {
            half_life_s,
            trend_half_life_s,
            trend_min_events,
            neighbours: NeighboursConfig::new(covisit_half_life_s, neighbour_capacity)?,
        })
    }
}

/// Vector, update counts, decayed popularities and co-visited neighbours of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemState {
    pub item: Id,
    pub vector: Box<[f32]>,
    pub version: u64,
    pub popularity_log2: f64,
    pub short_popularity_log2: f64,
    pub last_ts_s: f64,
    pub neighbours: ItemNeighbours,
    pub covisit_version: u64,
    pub category: Option<Id>,
    /// log2 decayed popularity of the item within each context segment it was seen in.
    pub segments: Vec<(Id, f64)>,
    /// Whether the item was trending at its last update (so a write knows to un-list it).
    pub trending: bool,
}

impl ItemState {
    pub fn new(item: Id, params: &IsgdParams) -> Self {
        ItemState {
            item,
            vector: isgd::initial_vector(intern::name(item), Kind::Item, params).into(),
            version: 0,
            popularity_log2: NO_POPULARITY,
            short_popularity_log2: NO_POPULARITY,
            last_ts_s: f64::NEG_INFINITY,
            neighbours: ItemNeighbours::default(),
            covisit_version: 0,
            category: None,
            segments: Vec::new(),
            trending: false,
        }
    }

    /// Apply one positive interaction of a user (their vector before their own update).
    pub fn learn(
        &mut self,
        user_vector: &[f32],
        weight: f64,
        ts_s: f64,
        category: Option<Id>,
        params: &IsgdParams,
        cfg: &ItemConfig,
    ) {
        if category.is_some() {
            self.category = category;
        }
        isgd::item_step(&mut self.vector, user_vector, weight, params);
        self.popularity_log2 =
            popularity::add_event(self.popularity_log2, weight, ts_s, cfg.half_life_s);
        self.short_popularity_log2 =
            popularity::add_event(self.short_popularity_log2, weight, ts_s, cfg.trend_half_life_s);
        self.last_ts_s = self.last_ts_s.max(ts_s);
        self.version += 1;
    }

    /// Count one co-visit with another item.
    pub fn covisit(&mut self, other: Id, weight: f64, ts_s: f64, cfg: &ItemConfig) {
        self.neighbours.add(other, weight, ts_s, &cfg.neighbours);
        self.covisit_version += 1;
    }

    /// Count one interaction within a context segment (popularity half-life); returns the
    /// segment's new log2 score for this item.
    pub fn segment_hit(&mut self, segment: Id, weight: f64, ts_s: f64, cfg: &ItemConfig) -> f64 {
        let slot = match self.segments.iter().position(|(s, _)| *s == segment) {
            Some(at) => at,
            None => {
                self.segments.push((segment, NO_POPULARITY));
                self.segments.len() - 1
            }
        };
        let score = popularity::add_event(self.segments[slot].1, weight, ts_s, cfg.half_life_s);
        self.segments[slot].1 = score;
        score
    }

    /// log2 of short-term over long-term event rate at the last event; None if too quiet.
    ///
    /// > 0 means the item is drawing more attention lately than over the long half-life.
    pub fn trend_log2(&self, cfg: &ItemConfig) -> Option<f64> {
        let now = self.last_ts_s;
        let short =
            popularity::decayed_value(self.short_popularity_log2, now, cfg.trend_half_life_s);
        if short < cfg.trend_min_events {
            return None;
        }
        let long = popularity::decayed_value(self.popularity_log2, now, cfg.half_life_s);
        // Rates: decayed sum divided by the mean lifetime of its kernel (h / ln 2).
        Some((short / cfg.trend_half_life_s).log2() - (long / cfg.half_life_s).log2())
    }

    pub fn write(&self, w: &mut Writer) {
        w.str(intern::name(self.item));
        w.f32s(&self.vector);
        w.varint(self.version);
        w.f64(self.popularity_log2);
        w.f64(self.short_popularity_log2);
        w.f64(self.last_ts_s);
        self.neighbours.write(w);
        w.varint(self.covisit_version);
        w.opt_str(self.category.map(intern::name));
        w.len(self.segments.len());
        for (segment, score) in &self.segments {
            w.str(intern::name(*segment));
            w.f64(*score);
        }
        w.bool(self.trending);
    }

    pub fn read(r: &mut Reader, params: &IsgdParams) -> Result<Self, Invalid> {
        let item = intern::intern(r.str()?);
        let vector = r.f32s()?;
        ensure(vector.len() == params.factors, || {
            format!(
                "item snapshot has {} factors, the settings say {}",
                vector.len(),
                params.factors
            )
        })?;
        let version = r.varint()?;
        let popularity_log2 = r.f64()?;
        let short_popularity_log2 = r.f64()?;
        let last_ts_s = r.f64()?;
        let neighbours = ItemNeighbours::read(r)?;
        let covisit_version = r.varint()?;
        let category = r.opt_str()?.map(intern::intern);
        let n = r.len()?;
        let mut segments = Vec::with_capacity(n);
        for _ in 0..n {
            let segment = intern::intern(r.str()?);
            segments.push((segment, r.f64()?));
        }
        let trending = r.bool()?;
        Ok(ItemState {
            item,
            vector: vector.into(),
            version,
            popularity_log2,
            short_popularity_log2,
            last_ts_s,
            neighbours,
            covisit_version,
            category,
            segments,
            trending,
        })
    }

    pub const TAG: &'static [u8; 3] = b"FRI";
    pub const FORMAT: u8 = 1;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_header(Self::TAG, Self::FORMAT);
        self.write(&mut w);
        w.finish()
    }

    pub fn from_bytes(data: &[u8], params: &IsgdParams) -> Result<Self, Invalid> {
        let mut r = Reader::with_header(data, Self::TAG, Self::FORMAT, "item state")?;
        let state = ItemState::read(&mut r, params)?;
        r.end()?;
        Ok(state)
    }
}

// --- Python face (tests and tools; the flow uses the item model of `item_model.rs`) ---------

/// One item's state with its hyperparameters: `ItemState(item_id, params, config)`.
#[pyclass(name = "ItemState", module = "operators._native")]
pub struct PyItemState {
    state: ItemState,
    params: IsgdParams,
    config: ItemConfig,
}

#[pymethods]
impl PyItemState {
    #[new]
    fn new(item_id: &str, params: IsgdParams, config: ItemConfig) -> Self {
        PyItemState { state: ItemState::new(intern::intern(item_id), &params), params, config }
    }

    #[getter]
    fn item_id(&self) -> &'static str {
        intern::name(self.state.item)
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
    fn popularity_log2(&self) -> f64 {
        self.state.popularity_log2
    }
    #[getter]
    fn short_popularity_log2(&self) -> f64 {
        self.state.short_popularity_log2
    }
    #[getter]
    fn last_ts_s(&self) -> f64 {
        self.state.last_ts_s
    }
    #[getter]
    fn covisit_version(&self) -> u64 {
        self.state.covisit_version
    }
    #[getter]
    fn category_id(&self) -> Option<&'static str> {
        self.state.category.map(intern::name)
    }
    /// Segment → log2 popularity of this item within it.
    #[getter]
    fn segments(&self) -> Vec<(&'static str, f64)> {
        self.state.segments.iter().map(|(s, v)| (intern::name(*s), *v)).collect()
    }

    /// Apply one positive interaction of a user (vector before their update).
    #[pyo3(signature = (user_vector, weight, ts_s, category_id=None))]
    fn learn(
        &mut self,
        user_vector: PyReadonlyArray1<'_, f32>,
        weight: f64,
        ts_s: f64,
        category_id: Option<&str>,
    ) -> PyResult<()> {
        let user = user_vector.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?;
        if user.len() != self.params.factors {
            return Err(PyValueError::new_err("user_vector has the wrong number of factors"));
        }
        let category = category_id.map(intern::intern);
        self.state.learn(user, weight, ts_s, category, &self.params, &self.config);
        Ok(())
    }

    /// Count one co-visit with another item.
    fn covisit(&mut self, other_id: &str, weight: f64, ts_s: f64) {
        self.state.covisit(intern::intern(other_id), weight, ts_s, &self.config);
    }

    /// Count one interaction within a context segment; returns the new log2 score.
    fn segment_hit(&mut self, segment: &str, weight: f64, ts_s: f64) -> f64 {
        self.state.segment_hit(intern::intern(segment), weight, ts_s, &self.config)
    }

    fn trend_log2(&self) -> Option<f64> {
        self.state.trend_log2(&self.config)
    }

    /// The `m` strongest neighbours with their log2 scores, strongest first.
    fn top_neighbours(&self, m: usize) -> Vec<(&'static str, f64)> {
        self.state.neighbours.top(m).into_iter().map(|(id, s)| (intern::name(id), s)).collect()
    }

    /// Every tracked neighbour with its log2 score, in insertion order.
    #[getter]
    fn neighbour_scores(&self) -> Vec<(&'static str, f64)> {
        self.state.neighbours.scores.iter().map(|(id, s)| (intern::name(*id), *s)).collect()
    }

    fn to_state(&self) -> Vec<u8> {
        self.state.to_bytes()
    }

    #[staticmethod]
    fn from_state(state: &[u8], params: IsgdParams, config: ItemConfig) -> PyResult<Self> {
        Ok(PyItemState { state: ItemState::from_bytes(state, &params)?, params, config })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ItemConfig>()?;
    m.add_class::<PyItemState>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_counts_popularity_and_snapshot_round_trips() {
        let params = IsgdParams::new(4, 0.05, 0.01, 0.1, 1, None, 10.0).unwrap();
        let cfg = ItemConfig::new(1000.0, 100.0, 3.0, 500.0, 4).unwrap();
        let mut item = ItemState::new(intern::intern("item-state-test"), &params);
        let user = isgd::initial_vector("u", Kind::User, &params);
        item.learn(&user, 2.0, 10.0, Some(intern::intern("cat")), &params, &cfg);
        item.covisit(intern::intern("other"), 1.0, 10.0, &cfg);
        item.segment_hit(intern::intern("mobile|evening|DE"), 2.0, 10.0, &cfg);
        assert_eq!(item.version, 1);
        assert_eq!(item.popularity_log2, 10.0 / 1000.0 + 1.0);
        assert_eq!(item.trend_log2(&cfg), None);
        let back = ItemState::from_bytes(&item.to_bytes(), &params).unwrap();
        assert_eq!(back, item);
    }
}
