//! Drop repeated events by `event_id` within a horizon, in bounded memory.
//!
//! SDK retries and Kafka redelivery repeat events; each may have one effect only. A user's
//! recently seen ids are kept with their event time; ids older than the horizon (default 24 h
//! of *event* time, so a replay behaves exactly like the live run) are forgotten.
//!
//! Ids are kept as 64-bit XXH3 hashes (8 bytes, where the Python operator kept the strings at
//! ~100–250 bytes each): two distinct ids of one user collide with probability ~n/2^64 per
//! event (n ≤ `max_ids`), i.e. never in practice. The hash is fixed-key, so the same id hashes
//! the same in every process and in every snapshot.
//!
//! Snapshot layout (nested, no header): newest_ts f64, count, then (hash u64, ts f64) per id
//! in insertion order.

use pyo3::prelude::*;
use rustc_hash::FxHashSet;
use xxhash_rust::xxh3::xxh3_64;

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure, py_float};

/// Linear scans beat a hash set below this many ids (most users hold a handful).
const INDEX_FROM: usize = 48;

/// The hash an event id is remembered by.
#[inline]
pub fn id_hash(event_id: &str) -> u64 {
    xxh3_64(event_id.as_bytes())
}

/// Horizon and bound of a user's remembered ids (from the settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DedupConfig {
    pub horizon_s: f64,
    pub max_ids: usize,
}

impl DedupConfig {
    pub fn new(horizon_s: f64, max_ids: i64) -> Result<Self, Invalid> {
        ensure(horizon_s > 0.0, || format!("horizon_s must be > 0, got {}", py_float(horizon_s)))?;
        ensure(max_ids >= 1, || format!("max_ids must be >= 1, got {max_ids}"))?;
        Ok(DedupConfig { horizon_s, max_ids: max_ids as usize })
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig { horizon_s: 86_400.0, max_ids: 10_000 }
    }
}

/// Event ids of one key seen within the horizon of event time.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDedup {
    /// (id hash, event time), in the order first seen.
    ids: Vec<(u64, f64)>,
    newest_ts_s: f64,
    /// Membership index once the list is long enough for scans to cost.
    index: Option<Box<FxHashSet<u64>>>,
}

impl Default for EventDedup {
    fn default() -> Self {
        EventDedup { ids: Vec::new(), newest_ts_s: f64::NEG_INFINITY, index: None }
    }
}

impl EventDedup {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn newest_ts_s(&self) -> f64 {
        self.newest_ts_s
    }

    fn contains(&self, hash: u64) -> bool {
        match &self.index {
            Some(index) => index.contains(&hash),
            None => self.ids.iter().any(|(h, _)| *h == hash),
        }
    }

    /// True if the id was seen within the horizon; otherwise remember it.
    pub fn is_duplicate(&mut self, hash: u64, ts_s: f64, cfg: &DedupConfig) -> bool {
        if self.contains(hash) {
            return true;
        }
        self.ids.push((hash, ts_s));
        if let Some(index) = &mut self.index {
            index.insert(hash);
        }
        if ts_s > self.newest_ts_s {
            self.newest_ts_s = ts_s;
        }
        if self.ids.len() > cfg.max_ids || self.ids.len() % 64 == 0 {
            self.expire(cfg);
        }
        self.reindex();
        false
    }

    fn expire(&mut self, cfg: &DedupConfig) {
        let cutoff = self.newest_ts_s - cfg.horizon_s;
        self.ids.retain(|(_, t)| *t >= cutoff);
        // A pathological burst of ids within the horizon: keep the newest max_ids, oldest
        // first (a stable sort by time, as Python's `sorted` is).
        if self.ids.len() > cfg.max_ids {
            self.ids.sort_by(|a, b| a.1.total_cmp(&b.1));
            let drop = self.ids.len() - cfg.max_ids;
            self.ids.drain(..drop);
        }
        self.index = None;
    }

    fn reindex(&mut self) {
        if self.index.is_none() && self.ids.len() >= INDEX_FROM {
            self.index = Some(Box::new(self.ids.iter().map(|(h, _)| *h).collect()));
        } else if self.index.is_some() && self.ids.len() < INDEX_FROM {
            self.index = None;
        }
    }

    pub fn write(&self, w: &mut Writer) {
        w.f64(self.newest_ts_s);
        w.len(self.ids.len());
        for (hash, ts) in &self.ids {
            w.u64(*hash);
            w.f64(*ts);
        }
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let newest_ts_s = r.f64()?;
        let n = r.len()?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push((r.u64()?, r.f64()?));
        }
        let mut dedup = EventDedup { ids, newest_ts_s, index: None };
        dedup.reindex();
        Ok(dedup)
    }

    /// Bytes this dedup holds on the heap (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * std::mem::size_of::<(u64, f64)>()
            + self.index.as_ref().map_or(0, |i| i.capacity() * 9 + 64)
    }
}

/// The Python face: `EventDedup(horizon_s=86400.0, max_ids=10000)`.
#[pyclass(name = "EventDedup", module = "operators._native")]
pub struct PyEventDedup {
    cfg: DedupConfig,
    inner: EventDedup,
}

#[pymethods]
impl PyEventDedup {
    #[new]
    #[pyo3(signature = (horizon_s=86_400.0, max_ids=10_000))]
    fn new(horizon_s: f64, max_ids: i64) -> PyResult<Self> {
        Ok(PyEventDedup {
            cfg: DedupConfig::new(horizon_s, max_ids)?,
            inner: EventDedup::default(),
        })
    }

    #[getter]
    fn horizon_s(&self) -> f64 {
        self.cfg.horizon_s
    }

    #[getter]
    fn max_ids(&self) -> usize {
        self.cfg.max_ids
    }

    #[getter]
    fn newest_ts_s(&self) -> f64 {
        self.inner.newest_ts_s
    }

    /// True if the id was seen within the horizon; otherwise remember it.
    fn is_duplicate(&mut self, event_id: &str, ts_s: f64) -> bool {
        self.inner.is_duplicate(id_hash(event_id), ts_s, &self.cfg)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Versioned bytes of the state (tag `FRD`, version 1).
    fn to_state(&self) -> Vec<u8> {
        let mut w = Writer::with_header(b"FRD", 1);
        self.inner.write(&mut w);
        w.finish()
    }

    #[staticmethod]
    #[pyo3(signature = (state, horizon_s=86_400.0, max_ids=10_000))]
    fn from_state(state: &[u8], horizon_s: f64, max_ids: i64) -> PyResult<Self> {
        let mut r = Reader::with_header(state, b"FRD", 1, "dedup")?;
        let inner = EventDedup::read(&mut r)?;
        r.end()?;
        Ok(PyEventDedup { cfg: DedupConfig::new(horizon_s, max_ids)?, inner })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEventDedup>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_horizon_are_duplicates() {
        let cfg = DedupConfig::new(100.0, 10).unwrap();
        let mut d = EventDedup::default();
        assert!(!d.is_duplicate(id_hash("a"), 0.0, &cfg));
        assert!(d.is_duplicate(id_hash("a"), 50.0, &cfg));
        assert!(!d.is_duplicate(id_hash("b"), 10.0, &cfg));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn old_ids_expire_every_64_and_the_bound_keeps_the_newest() {
        let cfg = DedupConfig::new(10.0, 1000).unwrap();
        let mut d = EventDedup::default();
        for i in 0..63 {
            d.is_duplicate(i, i as f64 * 0.001, &cfg);
        }
        // The 64th id, 100 s later, expires all the old ones.
        d.is_duplicate(1000, 100.0, &cfg);
        assert_eq!(d.len(), 1);
        assert!(!d.is_duplicate(0, 100.0, &cfg));

        let cfg = DedupConfig::new(1e9, 3).unwrap();
        let mut d = EventDedup::default();
        for (i, ts) in [(1, 5.0), (2, 1.0), (3, 3.0), (4, 2.0)] {
            d.is_duplicate(i, ts, &cfg);
        }
        let kept: Vec<u64> = d.ids.iter().map(|(h, _)| *h).collect();
        assert_eq!(kept, vec![4, 3, 1]); // newest 3 by time, oldest first
    }

    #[test]
    fn index_appears_for_long_lists_and_agrees() {
        let cfg = DedupConfig::new(1e9, 10_000).unwrap();
        let mut d = EventDedup::default();
        for i in 0..200u64 {
            assert!(!d.is_duplicate(i * 7, i as f64, &cfg));
        }
        assert!(d.index.is_some());
        for i in 0..200u64 {
            assert!(d.is_duplicate(i * 7, 0.0, &cfg));
        }
    }

    #[test]
    fn snapshot_round_trip() {
        let cfg = DedupConfig::default();
        let mut d = EventDedup::default();
        for i in 0..100u64 {
            d.is_duplicate(i, i as f64, &cfg);
        }
        let mut w = Writer::with_header(b"XXX", 1);
        d.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::with_header(&bytes, b"XXX", 1, "t").unwrap();
        let back = EventDedup::read(&mut r).unwrap();
        assert_eq!(back.ids, d.ids);
        assert!(back.index.is_some());
    }
}
