//! Prequential quality of the live model, and global drift on it, per worker process.
//!
//! A deterministic sample of events (by event id: BLAKE2b-32 of the id modulo
//! `sample_every`, as `hashlib.blake2b(id, digest_size=4)` gives it) is evaluated *before* the
//! model learns from them (test-then-train): the true item is ranked among `negatives` items
//! drawn from the worker's item replica with the user's current vector — a sampled HR@10 (1
//! true + 99 random candidates, the sampled protocol of e.g. Koren 2008; cheaper than ranking
//! the catalogue per event, and comparable over time, which is what monitoring needs). The
//! sliding HR@10 feeds a `GlobalRecalibration` whose alarms are global drift. This is
//! monitoring state: per process, not part of the recovery snapshot.

use std::collections::VecDeque;
use std::sync::Mutex;

use blake2::Blake2bVar;
use blake2::digest::{Update, VariableOutput};
use pyo3::prelude::*;

use crate::intern::Id;
use crate::isgd::dot;
use crate::item_vectors::ItemVectors;
use crate::prequential::sampled_negatives;
use crate::recalibration::{GlobalRecalibration, GlobalRecalibrationConfig, GlobalWarmup};

struct Window {
    hits: VecDeque<bool>,
    hit_count: usize,
    evaluated: u64,
    drift: GlobalRecalibration,
}

/// Sampled test-then-train HR@10 and the global drift policy of one process.
#[pyclass(module = "operators._native", frozen)]
pub struct LiveQuality {
    drift_config: GlobalRecalibrationConfig,
    sample_every: u32,
    negatives: usize,
    window: usize,
    state: Mutex<Window>,
}

impl LiveQuality {
    /// Whether this event is in the evaluation sample (stable across runs and processes).
    pub fn sampled(&self, event_id: &str) -> bool {
        let mut hasher = Blake2bVar::new(4).expect("4 is a valid BLAKE2b output size");
        hasher.update(event_id.as_bytes());
        let mut digest = [0u8; 4];
        hasher.finalize_variable(&mut digest).expect("4-byte buffer");
        u32::from_le_bytes(digest) % self.sample_every == 0
    }

    /// Rank `item` (already in the replica) for the user before learning; return a global
    /// warm-up if the drift policy fires. Nothing happens while the replica holds too few
    /// items to draw the negatives from.
    pub fn evaluate(
        &self,
        event_id: &str,
        user_vector: &[f32],
        item: Id,
        replica: &ItemVectors,
    ) -> Option<GlobalWarmup> {
        let k = replica.factors();
        let true_row = replica.ensure(item);
        let rank = replica.with_table(|ids, data| {
            if ids.len() <= self.negatives {
                return None;
            }
            let row = |r: usize| &data[r * k..(r + 1) * k];
            let true_score = dot(row(true_row), user_vector);
            // A stable descending sort puts the true item (candidate 0) first among equals:
            // its rank is 1 + the candidates that score strictly higher.
            let better = sampled_negatives(event_id, ids.len(), self.negatives)
                .into_iter()
                .filter(|&r| ids[r] != item)
                .filter(|&r| dot(row(r), user_vector) > true_score)
                .count();
            Some(1 + better)
        })?;
        let mut state = self.state.lock().expect("live quality poisoned");
        let hit = rank <= 10;
        if state.hits.len() == self.window && state.hits.pop_front() == Some(true) {
            state.hit_count -= 1;
        }
        state.hits.push_back(hit);
        state.hit_count += usize::from(hit);
        state.evaluated += 1;
        state
            .drift
            .update(&self.drift_config, if hit { 1.0 } else { 0.0 })
            .expect("a hit is finite")
    }

    /// Process-wide boost of learning rates during a global warm-up.
    pub fn learning_rate_multiplier(&self) -> f64 {
        self.state
            .lock()
            .expect("live quality poisoned")
            .drift
            .learning_rate_multiplier(&self.drift_config)
    }
}

#[pymethods]
impl LiveQuality {
    #[new]
    #[pyo3(signature = (sample_every=10, negatives=99, window=1000))]
    fn new(sample_every: u32, negatives: usize, window: usize) -> PyResult<Self> {
        if sample_every < 1 || window < 1 {
            return Err(crate::errors::Invalid::new("sample_every and window must be >= 1").into());
        }
        let drift_config = GlobalRecalibrationConfig::default();
        Ok(LiveQuality {
            drift_config,
            sample_every,
            negatives,
            window,
            state: Mutex::new(Window {
                hits: VecDeque::with_capacity(window),
                hit_count: 0,
                evaluated: 0,
                drift: GlobalRecalibration::new(&GlobalRecalibrationConfig::default()),
            }),
        })
    }

    #[pyo3(name = "sampled")]
    fn py_sampled(&self, event_id: &str) -> bool {
        self.sampled(event_id)
    }

    /// HR@10 over the last `window` evaluated events (0 before any): the live gauge.
    #[getter]
    fn window_recall(&self) -> f64 {
        let state = self.state.lock().expect("live quality poisoned");
        if state.hits.is_empty() { 0.0 } else { state.hit_count as f64 / state.hits.len() as f64 }
    }

    /// Events evaluated so far.
    #[getter]
    fn evaluated(&self) -> u64 {
        self.state.lock().expect("live quality poisoned").evaluated
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LiveQuality>()?;
    Ok(())
}
