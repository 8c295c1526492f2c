//! The dataflow's message vocabulary: what one keyed step hands the next, in one place.
//!
//! ```text
//! Kafka messages ─ key_by_user ─ (user id, (user id, message)) ─ user model ─ UserDelta
//! UserDelta ─ item_batches ─ (item id, ItemBatch) ─ item model ─ ItemOut
//! UserDelta ─ feedback_batches ─ (model|segment, FeedbackBatch) ─ feedback model ─ FeedbackOut
//! UserDelta ─ popularity_samples ─ ("all", PopularitySample) ─ popularity shift ─ Alarms
//! UserDelta, ItemOut, FeedbackOut, Alarms ─ collect_writes ─ StateWrites ─ the Redis sink
//! ```
//!
//! A keyed step emits ONE message per key and batch (one `UserDelta` per user, one
//! `ItemOut` per item), and the routing steps emit one message per target key and batch
//! (an item's updates, co-visits and segment hits of a whole batch travel together), because
//! every message through a Bytewax step costs more than the work it carries. Messages that
//! cross processes in a cluster (the keyed inputs) pickle as compact bytes (`__reduce__`).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::codec::{Reader, Writer};
use crate::errors::Invalid;
use crate::intern::{self, Id};

/// One interaction's share of an item's update.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemLearn {
    /// The user's vector before their own step (both halves start from the same pair).
    pub user_vector: Box<[f32]>,
    pub weight: f64,
    pub ts_s: f64,
    pub category: Option<Id>,
    /// Context segment of the event (segment popularity).
    pub segment: Id,
}

/// What happens to one item, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOp {
    Learn(ItemLearn),
    /// Co-visited with `other` in a session.
    CoVisit {
        other: Id,
        weight: f64,
        ts_s: f64,
    },
}

/// Everything one batch does to one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemBatch {
    pub item: Id,
    pub ops: Vec<ItemOp>,
}

impl ItemBatch {
    fn write(&self, w: &mut Writer) {
        w.str(intern::name(self.item));
        w.len(self.ops.len());
        for op in &self.ops {
            match op {
                ItemOp::Learn(l) => {
                    w.u8(0);
                    w.f32s(&l.user_vector);
                    w.f64(l.weight);
                    w.f64(l.ts_s);
                    w.opt_str(l.category.map(intern::name));
                    w.str(intern::name(l.segment));
                }
                ItemOp::CoVisit { other, weight, ts_s } => {
                    w.u8(1);
                    w.str(intern::name(*other));
                    w.f64(*weight);
                    w.f64(*ts_s);
                }
            }
        }
    }

    fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let item = intern::intern(r.str()?);
        let n = r.len()?;
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            ops.push(match r.u8()? {
                0 => ItemOp::Learn(ItemLearn {
                    user_vector: r.f32s()?.into(),
                    weight: r.f64()?,
                    ts_s: r.f64()?,
                    category: r.opt_str()?.map(intern::intern),
                    segment: intern::intern(r.str()?),
                }),
                1 => ItemOp::CoVisit {
                    other: intern::intern(r.str()?),
                    weight: r.f64()?,
                    ts_s: r.f64()?,
                },
                _ => return Err(Invalid::new("item batch is malformed")),
            });
        }
        Ok(ItemBatch { item, ops })
    }
}

/// Everything one batch does to the items of one shard (the item model's input): the item
/// side of a batch travels as one message per shard, not one per item.
#[pyclass(module = "operators._native", frozen, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct ItemShardBatch {
    pub shard: u32,
    /// One entry per item, in the order the batch first touched them.
    pub items: Vec<ItemBatch>,
}

impl ItemShardBatch {
    const TAG: &'static [u8; 3] = b"FIB";
    const FORMAT: u8 = 2;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_header(Self::TAG, Self::FORMAT);
        w.varint(u64::from(self.shard));
        w.len(self.items.len());
        for item in &self.items {
            item.write(&mut w);
        }
        w.finish()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self, Invalid> {
        let mut r = Reader::with_header(data, Self::TAG, Self::FORMAT, "item shard batch")?;
        let shard = r.varint()? as u32;
        let n = r.len()?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(ItemBatch::read(&mut r)?);
        }
        r.end()?;
        Ok(ItemShardBatch { shard, items })
    }
}

#[pymethods]
impl ItemShardBatch {
    #[getter]
    fn shard(&self) -> u32 {
        self.shard
    }

    /// Item ids, in order.
    #[getter]
    fn item_ids(&self) -> Vec<&'static str> {
        intern::names(self.items.iter().map(|b| b.item))
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }

    #[staticmethod]
    fn from_bytes_py(data: &[u8]) -> PyResult<Self> {
        Ok(ItemShardBatch::from_bytes(data)?)
    }

    /// Pickles as its bytes: it crosses processes when its shard lives on another worker.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let rebuild = py.get_type::<ItemShardBatch>().getattr("from_bytes_py")?;
        let bytes = PyBytes::new(py, &slf.get().to_bytes());
        (rebuild, (bytes,)).into_pyobject(py)
    }
}

/// A fresh item state bound for Redis (`state.store.ItemWrite`).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemWrite {
    pub version: u64,
    pub vector: Box<[f32]>,
    pub popularity_log2: f64,
    pub trend_log2: Option<f64>,
    /// The item was trending before this batch and no longer is: un-list it.
    pub untrend: bool,
    pub category: Option<Id>,
    /// The category is new with this batch: store it.
    pub category_changed: bool,
    /// The item is among its shard's most popular (`popular_list.rs`): write its popularity.
    pub listed: bool,
}

/// What one batch changed of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemOut {
    pub item: Id,
    pub write: Option<ItemWrite>,
    /// (co-visitation version, encoded `NeighboursRecord`) when the neighbours changed.
    pub neighbours: Option<(u64, Vec<u8>)>,
    /// (segment, the item's log2 popularity in it) for each segment hit this batch.
    pub segments: Vec<(Id, f64)>,
}

/// (item id, version or None, encoded neighbours or None, segment scores): `ItemsOut.items`.
type ItemOutRow<'py> =
    (&'static str, Option<u64>, Option<Bound<'py, PyBytes>>, Vec<(&'static str, f64)>);

/// What one batch changed of one shard's items (the item model's output).
#[pyclass(module = "operators._native", frozen, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct ItemsOut {
    pub outs: Vec<ItemOut>,
    /// (item, its version) of items that dropped out of the shard's popularity list in this
    /// batch: to remove from the global ranking.
    pub unlisted: Vec<(Id, u64)>,
}

#[pymethods]
impl ItemsOut {
    fn __len__(&self) -> usize {
        self.outs.len()
    }

    /// Per changed item: (item id, version or None, encoded neighbours or None, segment
    /// scores), for tests.
    #[getter]
    fn items<'py>(&self, py: Python<'py>) -> Vec<ItemOutRow<'py>> {
        self.outs
            .iter()
            .map(|o| {
                (
                    intern::name(o.item),
                    o.write.as_ref().map(|w| w.version),
                    o.neighbours.as_ref().map(|(_, b)| PyBytes::new(py, b)),
                    o.segments.iter().map(|(s, v)| (intern::name(*s), *v)).collect(),
                )
            })
            .collect()
    }
}

// --- the user model's output -----------------------------------------------------------------

/// A deduplicated event about a served recommendation (feedback counts, CTR drift).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackHit {
    /// The model version that served it (from the recommendation id).
    pub model: Id,
    pub segment: Id,
    pub event_type: crate::events::EventType,
    pub ts_s: f64,
}

/// A sampled interaction with the user's vector before it: model validation data.
#[derive(Debug, Clone, PartialEq)]
pub struct Holdout {
    pub key: String,
    pub user_vector: Box<[f32]>,
    pub item: Id,
    /// The user's pseudonym (`pseudonym.rs`): an erasure deletes the user's samples by it.
    pub user: String,
}

/// A drift alarm and the recalibration it caused (shown on the dashboard).
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub kind: &'static str,
    pub scope: &'static str,
    /// Names a user by their pseudonym only: the dashboard shows it.
    pub detail: String,
    /// The pseudonym of the user a per-user alarm is about (an erasure deletes it by that).
    pub user: Option<String>,
}

/// A message that could not be used, and why (bound for the dead-letter topic).
#[pyclass(module = "operators._native", frozen, get_all, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub payload: Vec<u8>,
    pub reason: String,
    pub source_topic: String,
    pub source_partition: i64,
    pub source_offset: i64,
    pub key: Option<Vec<u8>>,
}

#[pymethods]
impl DeadLetter {
    #[new]
    #[pyo3(signature = (payload, reason, source_topic, source_partition, source_offset, key=None))]
    fn new(
        payload: Vec<u8>,
        reason: String,
        source_topic: String,
        source_partition: i64,
        source_offset: i64,
        key: Option<Vec<u8>>,
    ) -> Self {
        DeadLetter { payload, reason, source_topic, source_partition, source_offset, key }
    }

    fn __repr__(&self) -> String {
        format!(
            "DeadLetter(reason={:?}, source={}[{}]@{})",
            self.reason, self.source_topic, self.source_partition, self.source_offset
        )
    }
}

/// A valid event for the Parquet archive: its canonical JSON and its enrichment.
#[pyclass(module = "operators._native", frozen, get_all, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveRow {
    pub user_id: String,
    pub payload: Vec<u8>,
    pub device_class: &'static str,
    pub tod_bucket: &'static str,
    pub weekday: u8,
    pub local_hour: u8,
    pub segment: &'static str,
}

/// Everything one user's batch produced: the user model's single output per call.
///
/// When the batch held a tombstone, `erasures` names it and everything else in the delta came
/// after it (the new user's record, rows and samples) or goes into aggregates (item updates,
/// co-visits, feedback counts), which an erasure keeps.
#[pyclass(module = "operators._native", frozen)]
#[derive(Debug, Default)]
pub struct UserDelta {
    pub user_id: Box<str>,
    /// Erasure ids of the tombstones of this batch: the sink deletes the user's keys (before
    /// writing anything newer of theirs) and records each as done.
    pub erasures: Vec<String>,
    /// (version, encoded `UserRecord`) when the record changed.
    pub record: Option<(u64, Vec<u8>)>,
    /// Latest broker arrival among the events this record reflects (freshness metric).
    pub arrival_s: Option<f64>,
    /// What item owners must do, per target item, in event order (taken by the router).
    pub item_ops: std::sync::Mutex<Vec<(Id, ItemOp)>>,
    pub feedback: Vec<FeedbackHit>,
    pub holdouts: Vec<Holdout>,
    pub alarms: Vec<Alarm>,
    pub dead_letters: Vec<DeadLetter>,
    /// The user's full state when they leave worker memory (idle), for Redis.
    pub parked: Option<Vec<u8>>,
    pub archive: Vec<ArchiveRow>,
    pub applied: u32,
    pub duplicates: u32,
    pub user_alarms: u32,
    pub global_alarms: u32,
}

impl UserDelta {
    pub fn is_empty(&self) -> bool {
        self.erasures.is_empty()
            && self.record.is_none()
            && self.item_ops.lock().expect("delta poisoned").is_empty()
            && self.feedback.is_empty()
            && self.holdouts.is_empty()
            && self.alarms.is_empty()
            && self.dead_letters.is_empty()
            && self.parked.is_none()
            && self.archive.is_empty()
    }
}

#[pymethods]
impl UserDelta {
    #[getter]
    fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Erasure ids of the tombstones of this batch (empty: none).
    #[getter]
    fn erasures(&self) -> Vec<String> {
        self.erasures.clone()
    }

    /// (version, encoded UserRecord), or None.
    #[getter]
    fn record<'py>(&self, py: Python<'py>) -> Option<(u64, Bound<'py, PyBytes>)> {
        self.record.as_ref().map(|(v, blob)| (*v, PyBytes::new(py, blob)))
    }

    #[getter]
    fn parked<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.parked.as_ref().map(|blob| PyBytes::new(py, blob))
    }

    #[getter]
    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.clone()
    }

    #[getter]
    fn archive_rows(&self) -> Vec<ArchiveRow> {
        self.archive.clone()
    }

    /// (kind, scope, detail) of each alarm.
    #[getter]
    fn alarms(&self) -> Vec<(&'static str, &'static str, String)> {
        self.alarms.iter().map(|a| (a.kind, a.scope, a.detail.clone())).collect()
    }

    /// (applied, duplicates, dead letters) of this batch.
    #[getter]
    fn counts(&self) -> (u32, u32, usize) {
        (self.applied, self.duplicates, self.dead_letters.len())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ItemShardBatch>()?;
    m.add_class::<ItemsOut>()?;
    m.add_class::<UserDelta>()?;
    m.add_class::<DeadLetter>()?;
    m.add_class::<ArchiveRow>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_shard_batch_bytes_round_trip() {
        let batch = ItemBatch {
            item: intern::intern("msg-item"),
            ops: vec![
                ItemOp::Learn(ItemLearn {
                    user_vector: vec![1.0, -2.0].into(),
                    weight: 2.0,
                    ts_s: 10.5,
                    category: Some(intern::intern("cat")),
                    segment: intern::intern("mobile|evening|DE"),
                }),
                ItemOp::CoVisit { other: intern::intern("msg-other"), weight: 0.5, ts_s: 11.0 },
            ],
        };
        let shard = ItemShardBatch { shard: 3, items: vec![batch] };
        assert_eq!(ItemShardBatch::from_bytes(&shard.to_bytes()).unwrap(), shard);
    }
}
