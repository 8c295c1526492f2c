//! Decayed item-to-item co-visitation over users' recent histories, bounded in memory: the
//! offline harness's co-visitation model, built on the flow's `ItemNeighbours`.
//!
//! Two items are co-visited when one user touches both within `session_gap_s` and `history`
//! events of each other. Each item keeps its strongest neighbours (log2 forward decay, at most
//! `neighbours` each); at most `max_items` items and `max_users` user histories are kept,
//! least recently touched forgotten first. A user's recommendations are the neighbours of
//! their last items, weighted by how recent each of those items is.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroUsize;

use lru::LruCache;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::errors::{Invalid, ensure};
use crate::intern::{self, Id};
use crate::item_neighbours::{ItemNeighbours, NeighboursConfig};
use crate::popularity::decayed_value;

/// Item→item co-visitation with forward decay, top-M neighbours per item.
#[pyclass(module = "operators._native")]
pub struct CoVisitation {
    cfg: NeighboursConfig,
    history: usize,
    session_gap_s: f64,
    recency_decay: f64,
    item_neighbours: LruCache<Id, ItemNeighbours, FxBuildHasher>,
    user_history: LruCache<String, VecDeque<(Id, f64)>, FxBuildHasher>,
}

impl CoVisitation {
    fn named_scores(&self, user_id: &str, now_s: Option<f64>) -> Vec<(&'static str, f64)> {
        let found = self.scores_interned(user_id, now_s);
        let names = intern::names(found.iter().map(|(id, _)| *id));
        names.into_iter().zip(found.into_iter().map(|(_, s)| s)).collect()
    }

    fn neighbours_of(&mut self, item: Id) -> &mut ItemNeighbours {
        if !self.item_neighbours.contains(&item) {
            // push evicts the least recently used entry once full
            self.item_neighbours.push(item, ItemNeighbours::default());
        }
        self.item_neighbours.get_mut(&item).expect("just inserted")
    }

    /// Record that `user_id` touched `item_id` at `ts_s` (weight > 0).
    pub fn learn_interned(&mut self, user_id: &str, item: Id, ts_s: f64, weight: f64) {
        let mut past = match self.user_history.pop(user_id) {
            Some(past) => past,
            None => VecDeque::with_capacity(self.history),
        };
        let cfg = self.cfg;
        let gap = self.session_gap_s;
        let pairs: Vec<Id> = past
            .iter()
            .filter(|(other, other_ts)| *other != item && !(ts_s - other_ts > gap))
            .map(|(other, _)| *other)
            .collect();
        // The item's list is touched once, first; the others are touched (moved to the
        // recent end) as they are paired. A tiny `max_items` can evict the item's own list
        // while its pairs are added: those additions are then lost with it, as they were in
        // the Python model (which held the evicted list by reference).
        self.neighbours_of(item);
        for other in pairs {
            if let Some(mine) = self.item_neighbours.peek_mut(&item) {
                mine.add(other, weight, ts_s, &cfg);
            }
            self.neighbours_of(other).add(item, weight, ts_s, &cfg);
        }
        if past.len() == self.history {
            past.pop_front();
        }
        past.push_back((item, ts_s));
        self.user_history.push(user_id.to_owned(), past);
    }

    /// Candidate items with their recency-weighted decayed co-visitation scores.
    pub fn scores_interned(&self, user_id: &str, now_s: Option<f64>) -> Vec<(Id, f64)> {
        let Some(past) = self.user_history.peek(user_id) else { return Vec::new() };
        let Some(last) = past.back() else { return Vec::new() };
        let now = now_s.unwrap_or(last.1);
        let mut order: Vec<Id> = Vec::new();
        let mut totals: FxHashMap<Id, f64> = FxHashMap::default();
        let mut factor = 1.0;
        for (item, _) in past.iter().rev() {
            if let Some(found) = self.item_neighbours.peek(item) {
                for (other, log2_score) in &found.scores {
                    let value = factor * decayed_value(*log2_score, now, self.cfg.half_life_s);
                    match totals.get_mut(other) {
                        Some(total) => *total += value,
                        None => {
                            order.push(*other);
                            totals.insert(*other, 0.0 + value);
                        }
                    }
                }
            }
            factor *= self.recency_decay;
        }
        order.into_iter().map(|id| (id, totals[&id])).collect()
    }
}

#[pymethods]
impl CoVisitation {
    #[new]
    #[pyo3(signature = (half_life_s=7.0 * 86_400.0, history=5, neighbours=50,
                        session_gap_s=3.0 * 3600.0, recency_decay=0.7, max_items=200_000,
                        max_users=200_000))]
    fn new(
        half_life_s: f64,
        history: i64,
        neighbours: i64,
        session_gap_s: f64,
        recency_decay: f64,
        max_items: i64,
        max_users: i64,
    ) -> PyResult<Self> {
        ensure(half_life_s > 0.0 && session_gap_s > 0.0, || {
            "half_life_s and session_gap_s must be > 0".into()
        })?;
        ensure(history >= 1 && neighbours >= 1 && max_items >= 1 && max_users >= 1, || {
            "history, neighbours, max_items and max_users must be >= 1".into()
        })?;
        ensure(recency_decay > 0.0 && recency_decay <= 1.0, || {
            format!(
                "recency_decay must be in (0, 1], got {}",
                crate::errors::py_float(recency_decay)
            )
        })?;
        let cap = |n: i64| NonZeroUsize::new(n as usize).expect("checked >= 1");
        Ok(CoVisitation {
            cfg: NeighboursConfig::new(half_life_s, neighbours)?,
            history: history as usize,
            session_gap_s,
            recency_decay,
            item_neighbours: LruCache::with_hasher(cap(max_items), FxBuildHasher),
            user_history: LruCache::with_hasher(cap(max_users), FxBuildHasher),
        })
    }

    /// Record that `user_id` touched `item_id` at `ts_s` (weight > 0).
    #[pyo3(signature = (user_id, item_id, ts_s, weight=1.0))]
    fn learn(&mut self, user_id: &str, item_id: &str, ts_s: f64, weight: f64) -> PyResult<()> {
        if !(weight > 0.0 && weight.is_finite() && ts_s.is_finite()) {
            return Err(Invalid::new("weight must be finite and > 0, ts_s finite").into());
        }
        self.learn_interned(user_id, intern::intern(item_id), ts_s, weight);
        Ok(())
    }

    /// The user's most recent items, newest first.
    fn last_items(&self, user_id: &str) -> Vec<&'static str> {
        match self.user_history.peek(user_id) {
            None => Vec::new(),
            Some(past) => intern::names(past.iter().rev().map(|(item, _)| *item)),
        }
    }

    /// Candidate items with their recency-weighted decayed co-visitation scores.
    #[pyo3(signature = (user_id, now_s=None))]
    fn scores<'py>(
        &self,
        py: Python<'py>,
        user_id: &str,
        now_s: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (item, score) in self.named_scores(user_id, now_s) {
            out.set_item(item, score)?;
        }
        Ok(out)
    }

    /// Items whose neighbours are kept, and users whose history is kept (memory bounds).
    #[getter]
    fn sizes(&self) -> (usize, usize) {
        (self.item_neighbours.len(), self.user_history.len())
    }

    /// Longest neighbour list and longest history kept (memory bounds).
    #[getter]
    fn longest(&self) -> (usize, usize) {
        (
            self.item_neighbours.iter().map(|(_, n)| n.scores.len()).max().unwrap_or(0),
            self.user_history.iter().map(|(_, h)| h.len()).max().unwrap_or(0),
        )
    }

    /// The `k` items most co-visited with the user's recent ones, best first.
    #[pyo3(signature = (user_id, k, exclude=None, now_s=None))]
    fn recommend(
        &self,
        user_id: &str,
        k: usize,
        exclude: Option<HashSet<String>>,
        now_s: Option<f64>,
    ) -> Vec<&'static str> {
        let banned = exclude.unwrap_or_default();
        let mut ranked: Vec<(f64, &'static str)> = self
            .named_scores(user_id, now_s)
            .into_iter()
            .filter(|(item, _)| !banned.contains(*item))
            .map(|(item, score)| (score, item))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        ranked.into_iter().take(k).map(|(_, item)| item).collect()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CoVisitation>()?;
    Ok(())
}
