//! Prequential (test-then-train) evaluation of a recommender over a stream, one event at a time,
//! and the seeded negative sampler of sampled HR@10 and model validation.
//!
//! For each event the caller first asks the model for a ranked list, hands it here with the
//! item the user really chose, and only then trains the model on the event (Vinagre, Jorge and
//! Gama 2014, "Evaluation of recommender systems in streaming environments"). The evaluator
//! keeps running totals and a sliding window (Kitazawa 2016) so the live flow publishes the same
//! numbers as the offline harness; it never sees the model. Items are interned ids in Rust.
//!
//! Snapshot of the Python class: `b"PQE"`, version 1: k, cutoff count and cutoffs, window,
//! events, hits, one recall hit count per cutoff (varints), ndcg_sum, rr_sum (f64), the
//! recommended items (count, then names sorted), the recent hits (count, then one bit each,
//! oldest first, packed little-endian into bytes), window_hits varint, window_curve_sum f64.

use std::collections::VecDeque;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use rustc_hash::FxHashSet;
use sha3::Shake128;
use sha3::digest::{ExtendableOutput, Update, XofReader};

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure};
use crate::intern::{self, Id};

/// Up to `count` distinct catalogue indices drawn with a seed derived from `key`, in the order
/// drawn (all indices, in order, when `count >= catalogue_len`).
///
/// The draw is read straight off a SHAKE-128 stream of the key: little-endian 64-bit words
/// modulo the catalogue size (a bias below 2^-40 for any real catalogue), repeats skipped —
/// the same list Python's `hashlib` version drew, so the live flow and the lifecycle rank a
/// held-out interaction against the same candidates.
pub fn sampled_negatives(key: &str, catalogue_len: usize, count: usize) -> Vec<usize> {
    if count >= catalogue_len {
        return (0..catalogue_len).collect();
    }
    let mut shake = Shake128::default();
    shake.update(key.as_bytes());
    let mut stream = shake.finalize_xof();
    let mut picks = Vec::with_capacity(count);
    let mut seen = FxHashSet::with_capacity_and_hasher(count, Default::default());
    let n = catalogue_len as u64;
    let mut word = [0u8; 8];
    while picks.len() < count {
        stream.read(&mut word);
        let index = (u64::from_le_bytes(word) % n) as usize;
        if seen.insert(index) {
            picks.push(index);
        }
    }
    picks
}

/// Totals over every evaluated event (`window_*`: the moving average as last seen).
#[pyclass(module = "operators._native", frozen, eq, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct PrequentialReport {
    #[pyo3(get)]
    pub events: u64,
    /// HR@k: share of events whose true item is in the top k.
    #[pyo3(get)]
    pub hit_rate: f64,
    /// recall@c per cutoff c (one relevant item: recall@c = HR@c), cutoffs ascending.
    pub recall_at: Vec<(usize, f64)>,
    /// NDCG@k with one relevant item: 1/log2(rank + 1).
    #[pyo3(get)]
    pub ndcg: f64,
    /// Mean reciprocal rank within the list handed in (0 when absent).
    #[pyo3(get)]
    pub mrr: f64,
    /// Distinct items ever recommended in a top k / catalogue size.
    #[pyo3(get)]
    pub coverage: f64,
    /// recall@k over the last `window` events.
    #[pyo3(get)]
    pub window_recall: f64,
    /// The moving average averaged over the stream (Kitazawa 2016).
    #[pyo3(get)]
    pub mean_window_recall: f64,
}

#[pymethods]
impl PrequentialReport {
    /// recall@k per cutoff (a new dict).
    #[getter(recall_at)]
    fn py_recall_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (cutoff, recall) in &self.recall_at {
            dict.set_item(cutoff, recall)?;
        }
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!(
            "PrequentialReport(events={}, hit_rate={}, recall_at={{{}}}, ndcg={}, mrr={}, \
             coverage={}, window_recall={}, mean_window_recall={})",
            self.events,
            crate::errors::py_float(self.hit_rate),
            self.recall_at
                .iter()
                .map(|(c, r)| format!("{c}: {}", crate::errors::py_float(*r)))
                .collect::<Vec<_>>()
                .join(", "),
            crate::errors::py_float(self.ndcg),
            crate::errors::py_float(self.mrr),
            crate::errors::py_float(self.coverage),
            crate::errors::py_float(self.window_recall),
            crate::errors::py_float(self.mean_window_recall)
        )
    }
}

/// Hit rate, recall@k, NDCG@k, MRR and coverage of a stream of ranked lists of interned items.
///
/// `k` is the main cutoff (HR, NDCG, coverage, the sliding window); `cutoffs` are the recall
/// cutoffs reported. The sliding recall over `window` events: after each evaluated event its
/// value is `hits in the window / min(n, window)`; `mean_window_recall` averages that curve.
#[pyclass(module = "operators._native", skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct PrequentialEvaluator {
    k: usize,
    cutoffs: Vec<usize>,
    window: usize,
    events: u64,
    hits: u64,
    recall_hits: Vec<u64>,
    ndcg_sum: f64,
    rr_sum: f64,
    recommended: FxHashSet<Id>,
    recent_hits: VecDeque<bool>,
    window_hits: u64,
    window_curve_sum: f64,
}

const TAG: &[u8; 3] = b"PQE";
const VERSION: u8 = 1;

impl PrequentialEvaluator {
    /// Checks as the Python operator did, in its order and with its messages.
    pub fn new(k: i64, cutoffs: &[i64], window: i64) -> Result<Self, Invalid> {
        ensure(k >= 1, || format!("k must be >= 1, got {k}"))?;
        ensure(window >= 1, || format!("window must be >= 1, got {window}"))?;
        ensure(!cutoffs.is_empty() && cutoffs.iter().all(|c| *c >= 1), || {
            let items: Vec<String> = cutoffs.iter().map(i64::to_string).collect();
            let trailing = if items.len() == 1 { "," } else { "" };
            format!("cutoffs must be >= 1, got ({}{trailing})", items.join(", "))
        })?;
        let mut cutoffs: Vec<usize> =
            cutoffs.iter().map(|c| usize::try_from(*c).unwrap_or(usize::MAX)).collect();
        cutoffs.sort_unstable();
        cutoffs.dedup();
        let k = usize::try_from(k).unwrap_or(usize::MAX);
        let window = usize::try_from(window).unwrap_or(usize::MAX);
        Ok(PrequentialEvaluator {
            k,
            recall_hits: vec![0; cutoffs.len()],
            cutoffs,
            window,
            events: 0,
            hits: 0,
            ndcg_sum: 0.0,
            rr_sum: 0.0,
            recommended: FxHashSet::default(),
            recent_hits: VecDeque::with_capacity(window.min(1 << 16)),
            window_hits: 0,
            window_curve_sum: 0.0,
        })
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Recall cutoffs, ascending and distinct.
    pub fn cutoffs(&self) -> &[usize] {
        &self.cutoffs
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Events evaluated.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Score one ranked list against the item the user chose; its 1-based rank (0: absent).
    pub fn evaluate(&mut self, true_item: Id, ranked_items: &[Id]) -> usize {
        let rank = ranked_items.iter().position(|i| *i == true_item).map_or(0, |p| p + 1);
        let top = &ranked_items[..ranked_items.len().min(self.k)];
        self.record(rank, top.iter().copied());
        rank
    }

    /// Count one evaluated event whose true item had `rank` (0: absent) in a list whose first
    /// k items are `top_k` (what [`Self::evaluate`] does once it has the rank).
    pub fn record(&mut self, rank: usize, top_k: impl IntoIterator<Item = Id>) {
        self.events += 1;
        let hit = rank > 0 && rank <= self.k;
        self.hits += u64::from(hit);
        for (cutoff, hits) in self.cutoffs.iter().zip(&mut self.recall_hits) {
            if rank > 0 && rank <= *cutoff {
                *hits += 1;
            }
        }
        if hit {
            self.ndcg_sum += 1.0 / ((rank + 1) as f64).log2();
        }
        if rank > 0 {
            self.rr_sum += 1.0 / rank as f64;
        }
        self.recommended.extend(top_k);
        if self.recent_hits.len() == self.window && self.recent_hits.pop_front() == Some(true) {
            self.window_hits -= 1;
        }
        self.recent_hits.push_back(hit);
        self.window_hits += u64::from(hit);
        self.window_curve_sum += self.window_recall();
    }

    /// Recall@k over the last `window` evaluated events (0 before any).
    pub fn window_recall(&self) -> f64 {
        if self.recent_hits.is_empty() {
            0.0
        } else {
            self.window_hits as f64 / self.recent_hits.len() as f64
        }
    }

    /// Totals so far; `catalogue_size` is the number of items that could be recommended.
    pub fn report(&self, catalogue_size: i64) -> PrequentialReport {
        let n = self.events.max(1) as f64;
        PrequentialReport {
            events: self.events,
            hit_rate: self.hits as f64 / n,
            recall_at: self
                .cutoffs
                .iter()
                .zip(&self.recall_hits)
                .map(|(c, h)| (*c, *h as f64 / n))
                .collect(),
            ndcg: self.ndcg_sum / n,
            mrr: self.rr_sum / n,
            coverage: if catalogue_size > 0 {
                self.recommended.len() as f64 / catalogue_size as f64
            } else {
                0.0
            },
            window_recall: self.window_recall(),
            mean_window_recall: self.window_curve_sum / n,
        }
    }

    /// Config and state, no header (nestable); recommended items as names.
    pub fn write(&self, w: &mut Writer) {
        w.varint(self.k as u64);
        w.len(self.cutoffs.len());
        for c in &self.cutoffs {
            w.varint(*c as u64);
        }
        w.varint(self.window as u64);
        w.varint(self.events);
        w.varint(self.hits);
        for h in &self.recall_hits {
            w.varint(*h);
        }
        w.f64(self.ndcg_sum);
        w.f64(self.rr_sum);
        let mut names = intern::names(self.recommended.iter().copied());
        names.sort_unstable();
        w.len(names.len());
        for name in names {
            w.str(name);
        }
        w.len(self.recent_hits.len());
        let mut byte = 0u8;
        for (i, hit) in self.recent_hits.iter().enumerate() {
            byte |= u8::from(*hit) << (i % 8);
            if i % 8 == 7 {
                w.u8(byte);
                byte = 0;
            }
        }
        if self.recent_hits.len() % 8 != 0 {
            w.u8(byte);
        }
        w.varint(self.window_hits);
        w.f64(self.window_curve_sum);
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let k = int(r.varint()?);
        let n_cutoffs = r.len()?;
        let mut cutoffs = Vec::with_capacity(n_cutoffs);
        for _ in 0..n_cutoffs {
            cutoffs.push(int(r.varint()?));
        }
        let window = int(r.varint()?);
        let mut ev = PrequentialEvaluator::new(k, &cutoffs, window)?;
        let malformed = || Invalid::new("PrequentialEvaluator snapshot is malformed");
        if ev.cutoffs.len() != n_cutoffs {
            return Err(malformed());
        }
        ev.events = r.varint()?;
        ev.hits = r.varint()?;
        for h in &mut ev.recall_hits {
            *h = r.varint()?;
        }
        ev.ndcg_sum = r.f64()?;
        ev.rr_sum = r.f64()?;
        let n_items = r.len()?;
        for _ in 0..n_items {
            ev.recommended.insert(intern::intern(r.str()?));
        }
        let n_recent = r.len()?;
        if n_recent > ev.window {
            return Err(malformed());
        }
        let mut byte = 0u8;
        for i in 0..n_recent {
            if i % 8 == 0 {
                byte = r.u8()?;
            }
            ev.recent_hits.push_back(byte >> (i % 8) & 1 == 1);
        }
        ev.window_hits = r.varint()?;
        if ev.window_hits != ev.recent_hits.iter().filter(|h| **h).count() as u64 {
            return Err(malformed());
        }
        ev.window_curve_sum = r.f64()?;
        Ok(ev)
    }
}

#[pymethods]
impl PrequentialEvaluator {
    #[new]
    #[pyo3(signature = (k=10, cutoffs=vec![10, 20], window=3000))]
    fn py_new(k: i64, cutoffs: Vec<i64>, window: i64) -> PyResult<Self> {
        Ok(PrequentialEvaluator::new(k, &cutoffs, window)?)
    }

    #[getter(k)]
    fn py_k(&self) -> usize {
        self.k
    }

    /// Recall cutoffs, ascending and distinct.
    #[getter(cutoffs)]
    fn py_cutoffs(&self) -> Vec<usize> {
        self.cutoffs.clone()
    }

    #[getter(window)]
    fn py_window(&self) -> usize {
        self.window
    }

    /// Events evaluated.
    #[getter(events)]
    fn py_events(&self) -> u64 {
        self.events
    }

    /// Events whose true item was in the top k.
    #[getter]
    fn hits(&self) -> u64 {
        self.hits
    }

    /// Score one ranked list against the item the user chose; return its rank (0: absent).
    ///
    /// ``user`` is accepted for per-user breakdowns by callers and not used here.
    #[pyo3(name = "evaluate")]
    fn py_evaluate(
        &mut self,
        user: &Bound<'_, PyAny>,
        true_item: &str,
        ranked_items: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let _ = user;
        let mut rank = 0;
        let mut top_k = Vec::with_capacity(self.k.min(64));
        for (position, item) in ranked_items.try_iter()?.enumerate() {
            let item = item?;
            let item: &str = item.extract()?;
            if position < self.k {
                top_k.push(intern::intern(item));
            }
            if rank == 0 && item == true_item {
                rank = position + 1;
            }
            if rank > 0 && position + 1 >= self.k {
                break; // the rank is known and the top k are all counted
            }
        }
        self.record(rank, top_k);
        Ok(rank)
    }

    /// Recall@k over the last ``window`` evaluated events (0 before any).
    #[getter(window_recall)]
    fn py_window_recall(&self) -> f64 {
        self.window_recall()
    }

    /// Totals so far; ``catalogue_size`` is the number of items that could be recommended.
    #[pyo3(name = "report")]
    fn py_report(&self, catalogue_size: i64) -> PrequentialReport {
        self.report(catalogue_size)
    }

    /// The evaluator (config and totals) as versioned bytes.
    fn to_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut w = Writer::with_header(TAG, VERSION);
        self.write(&mut w);
        PyBytes::new(py, &w.finish())
    }

    #[staticmethod]
    fn from_state(data: &[u8]) -> PyResult<Self> {
        let mut r = Reader::with_header(data, TAG, VERSION, "PrequentialEvaluator")?;
        let ev = PrequentialEvaluator::read(&mut r)?;
        r.end()?;
        Ok(ev)
    }
}

/// Python's `sampled_negatives`: up to ``count`` distinct items of ``catalogue`` drawn with a
/// seed derived from ``key``, minus ``exclude``.
#[pyfunction(name = "sampled_negatives")]
fn py_sampled_negatives<'py>(
    py: Python<'py>,
    key: &str,
    catalogue: &Bound<'py, PyAny>,
    count: i64,
    exclude: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let n = catalogue.len()?;
    let out = PyList::empty(py);
    let count = usize::try_from(count).unwrap_or(0);
    if count >= n {
        for item in catalogue.try_iter()? {
            let item = item?;
            if item.ne(exclude)? {
                out.append(item)?;
            }
        }
        return Ok(out);
    }
    let list = catalogue.cast::<PyList>().ok(); // the replica's ids: index without a PyLong
    for index in sampled_negatives(key, n, count) {
        let item = match list {
            Some(list) => list.get_item(index)?,
            None => catalogue.get_item(index)?,
        };
        if item.ne(exclude)? {
            out.append(item)?;
        }
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PrequentialEvaluator>()?;
    m.add_class::<PrequentialReport>()?;
    m.add_function(wrap_pyfunction!(py_sampled_negatives, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_values() {
        let [a, b, c, d, e, z] =
            ["pq-a", "pq-b", "pq-c", "pq-d", "pq-e", "pq-z"].map(intern::intern);
        let mut ev = PrequentialEvaluator::new(2, &[1, 3], 2).unwrap();
        assert_eq!(ev.evaluate(a, &[a, b, c]), 1);
        assert_eq!(ev.evaluate(b, &[a, b, c]), 2);
        assert_eq!(ev.evaluate(c, &[a, b, c]), 3);
        assert_eq!(ev.evaluate(z, &[d, e]), 0);
        let r = ev.report(10);
        assert_eq!(r.events, 4);
        assert_eq!(r.hit_rate, 0.5);
        assert_eq!(r.recall_at, vec![(1, 0.25), (3, 0.75)]);
        assert_eq!(r.ndcg, (1.0 + 1.0 / 3f64.log2()) / 4.0);
        assert_eq!(r.mrr, (1.0 + 0.5 + 1.0 / 3.0) / 4.0);
        assert_eq!(r.coverage, 0.4);
        assert_eq!(r.window_recall, 0.0);
        assert_eq!(r.mean_window_recall, (1.0 + 1.0 + 0.5 + 0.0) / 4.0);
    }

    #[test]
    fn window_slides_and_snapshot_round_trips() {
        let [a, b] = ["pq-a", "pq-b"].map(intern::intern);
        let mut ev = PrequentialEvaluator::new(1, &[1], 3).unwrap();
        for hit in [true, true, true, false, false, false] {
            let ranked = if hit { [a] } else { [b] };
            ev.evaluate(a, &ranked);
        }
        assert_eq!(ev.window_recall(), 0.0);
        ev.evaluate(a, &[a]);
        assert_eq!(ev.window_recall(), 1.0 / 3.0);
        let mut w = Writer::with_header(TAG, VERSION);
        ev.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::with_header(&bytes, TAG, VERSION, "PrequentialEvaluator").unwrap();
        assert_eq!(PrequentialEvaluator::read(&mut r).unwrap(), ev);
        r.end().unwrap();
    }

    #[test]
    fn bad_arguments_say_why() {
        assert_eq!(PrequentialEvaluator::new(0, &[1], 1).unwrap_err().0, "k must be >= 1, got 0");
        assert_eq!(
            PrequentialEvaluator::new(1, &[1], 0).unwrap_err().0,
            "window must be >= 1, got 0"
        );
        assert_eq!(
            PrequentialEvaluator::new(1, &[], 1).unwrap_err().0,
            "cutoffs must be >= 1, got ()"
        );
        assert_eq!(
            PrequentialEvaluator::new(1, &[0], 1).unwrap_err().0,
            "cutoffs must be >= 1, got (0,)"
        );
        assert_eq!(
            PrequentialEvaluator::new(1, &[5, 0], 1).unwrap_err().0,
            "cutoffs must be >= 1, got (5, 0)"
        );
    }

    #[test]
    fn negatives_golden_distinct_and_seeded() {
        // Golden: the first picks Python's hashlib version drew for this key.
        let picks = sampled_negatives("event-1", 1000, 5);
        assert_eq!(picks, GOLDEN_EVENT_1);
        let many = sampled_negatives("event-1", 1000, 99);
        assert_eq!(&many[..5], &picks[..]);
        let distinct: FxHashSet<usize> = many.iter().copied().collect();
        assert_eq!(distinct.len(), 99);
        assert!(many.iter().all(|i| *i < 1000));
        assert_ne!(sampled_negatives("event-2", 1000, 5), picks);
        assert_eq!(sampled_negatives("k", 3, 5), vec![0, 1, 2]);
        // Nearly the whole catalogue: the stream is read well past its first chunk.
        let all_but_one = sampled_negatives("k", 50, 49);
        assert_eq!(&all_but_one[..10], &[18, 47, 28, 32, 12, 13, 6, 34, 24, 30]);
        assert_eq!(all_but_one.iter().copied().collect::<FxHashSet<_>>().len(), 49);
    }

    const GOLDEN_EVENT_1: [usize; 5] = [825, 57, 478, 90, 81];
}
