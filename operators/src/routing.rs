//! The flow's routing steps: one call per batch each, pure data movement (no engine, no I/O).
//!
//! - `key_by_user`: the Kafka messages of a batch keyed by user id (the message key, which
//!   the ingest API sets to the user id; the payload's user id when a producer set none).
//! - `group_item_ops`: the item work of a batch's `UserDelta`s grouped into one `ItemBatch`
//!   per target item, in event order (the item router, `item_model.rs`, shards them).
//! - `dead_letters`, `archive_rows`: what the side outputs need.
//! - `collect_writes`: everything bound for Redis in a batch, coalesced to the last write per
//!   key, ready to be sent in one pipeline by `state/store.py`. An erased user's earlier
//!   writes of the batch are dropped and the erasure goes first, before anything newer.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::errors::Invalid;
use crate::events::{self, Fast};
use crate::feedback_model::{FeedbackBatch, FeedbackOut};
use crate::intern::{self, Id};
use crate::messages::{ArchiveRow, DeadLetter, ItemBatch, ItemOp, ItemsOut, UserDelta};
use crate::popularity_shift_model::{PopularitySample, ShiftAlarms};
use crate::resp::RespArgs;

/// The batch's messages as `(user id, (user id, message))`: keyed for the user model, which
/// also needs to know the key it was routed by. Broker errors and unreadable keys go to the
/// key "" (their dead letters are written from there).
#[pyfunction]
pub fn key_by_user<'py>(batch: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let _timer = crate::timing::time(crate::timing::Part::KeyByUser);
    let py = batch.py();
    let out = PyList::empty(py);
    let empty = PyString::new(py, "");
    for msg in batch.iter() {
        let key = match msg.getattr(pyo3::intern!(py, "key")) {
            Err(_) => empty.clone(), // a broker error: no key, no payload
            Ok(key) => {
                let from_key = if key.is_none() {
                    None
                } else {
                    key.cast::<PyBytes>()
                        .ok()
                        .and_then(|k| std::str::from_utf8(k.as_bytes()).ok())
                        .filter(|k| !k.is_empty())
                        .map(|k| PyString::new(py, k))
                };
                match from_key {
                    Some(key) => key,
                    None => {
                        payload_user(&msg).map_or_else(|| empty.clone(), |u| PyString::new(py, &u))
                    }
                }
            }
        };
        let value = PyTuple::new(py, [key.as_any(), &msg])?;
        out.append(PyTuple::new(py, [key.as_any(), value.as_any()])?)?;
    }
    Ok(out)
}

/// The user id of a valid payload (for messages a producer sent without a key).
fn payload_user(msg: &Bound<'_, PyAny>) -> Option<String> {
    let value = msg.getattr("value").ok()?;
    let payload = value.cast::<PyBytes>().ok()?;
    // Routing needs the user id, not the time check: judge it against a "now" in year ~9890
    // (any timestamp the fast path reads is before it); the user model checks the real clock.
    const FAR_FUTURE_US: i64 = 250_000_000_000_000_000;
    match events::decode_fast(payload.as_bytes(), FAR_FUTURE_US, 0.0) {
        Fast::Valid(event) => Some(event.user_id),
        Fast::NotSure => None,
    }
}

fn deltas<'py>(batch: &Bound<'py, PyList>) -> impl Iterator<Item = Bound<'py, UserDelta>> + 'py {
    batch.clone().into_iter().filter_map(|item| {
        let value = match item.cast::<PyTuple>() {
            Ok(pair) => pair.get_item(1).ok()?,
            Err(_) => item,
        };
        value.cast_into::<UserDelta>().ok()
    })
}

/// The item work of a batch's `UserDelta`s, one `ItemBatch` per target item, in
/// first-touched order (the ops of each in event order). Taken from the deltas: only the item
/// router reads them.
pub fn group_item_ops(batch: &Bound<'_, PyList>) -> Vec<ItemBatch> {
    let mut slots: FxHashMap<Id, usize> = FxHashMap::default();
    let mut grouped: Vec<ItemBatch> = Vec::new();
    for delta in deltas(batch) {
        let ops = std::mem::take(&mut *delta.get().item_ops.lock().expect("delta poisoned"));
        for (target, op) in ops {
            let slot = *slots.entry(target).or_insert_with(|| {
                grouped.push(ItemBatch { item: target, ops: Vec::new() });
                grouped.len() - 1
            });
            grouped[slot].ops.push(op);
        }
    }
    grouped
}

/// One `(model|segment, FeedbackBatch)` per (model version, segment) with feedback events.
#[pyfunction]
pub fn feedback_batches<'py>(batch: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let _timer = crate::timing::time(crate::timing::Part::SideOutputs);
    let py = batch.py();
    let mut slots: FxHashMap<(Id, Id), usize> = FxHashMap::default();
    let mut grouped: Vec<FeedbackBatch> = Vec::new();
    for delta in deltas(batch) {
        for hit in &delta.get().feedback {
            let slot = *slots.entry((hit.model, hit.segment)).or_insert_with(|| {
                grouped.push(FeedbackBatch {
                    model: hit.model,
                    segment: hit.segment,
                    hits: Vec::new(),
                });
                grouped.len() - 1
            });
            grouped[slot].hits.push((hit.event_type, hit.ts_s));
        }
    }
    let out = PyList::empty(py);
    for group in grouped {
        let key = format!("{}|{}", intern::name(group.model), intern::name(group.segment));
        out.append((key, Bound::new(py, group)?))?;
    }
    Ok(out)
}

/// The items of the batch's sampled interactions, for the one global popularity-shift key.
#[pyfunction]
pub fn popularity_samples<'py>(batch: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let _timer = crate::timing::time(crate::timing::Part::SideOutputs);
    let py = batch.py();
    let items: Vec<Id> = deltas(batch)
        .flat_map(|d| d.get().holdouts.iter().map(|h| h.item).collect::<Vec<_>>())
        .collect();
    let out = PyList::empty(py);
    if !items.is_empty() {
        out.append(("all", Bound::new(py, PopularitySample { items })?))?;
    }
    Ok(out)
}

/// The batch's dead letters.
#[pyfunction]
pub fn dead_letters<'py>(batch: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let _timer = crate::timing::time(crate::timing::Part::SideOutputs);
    let py = batch.py();
    let out = PyList::empty(py);
    for delta in deltas(batch) {
        for letter in &delta.get().dead_letters {
            out.append(Bound::new(py, letter.clone())?)?;
        }
    }
    Ok(out)
}

/// The batch's valid events with their enrichment, for the Parquet archive, in order; an
/// erased user appears as their id (a `str`) before any row that came after the tombstone.
#[pyfunction]
pub fn archive_rows<'py>(batch: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let _timer = crate::timing::time(crate::timing::Part::SideOutputs);
    let py = batch.py();
    let out = PyList::empty(py);
    for delta in deltas(batch) {
        let delta = delta.get();
        if !delta.erasures.is_empty() {
            out.append(PyString::new(py, &delta.user_id))?;
        }
        for row in &delta.archive {
            out.append(Bound::new(py, row.clone())?)?;
        }
    }
    Ok(out)
}

/// Everything a batch writes to Redis, coalesced to the newest version per key.
///
/// Writing takes two round trips (`state/store.py`): the store reads the versions stored for
/// these users, items and neighbour lists (`user_ids`, `item_ids`, `neighbour_ids`), then
/// `plan` keeps only what is newer and lays it out as the arguments of variadic commands.
#[pyclass(module = "operators._native", frozen)]
#[derive(Default)]
pub struct StateWrites {
    /// (user id, pseudonym) of users erased in this batch: deleted before anything is written.
    #[pyo3(get)]
    pub erased: Vec<(String, String)>,
    /// Erasure ids of the batch's tombstones (recorded as done once the deletion is written).
    #[pyo3(get)]
    pub erasure_ids: Vec<String>,
    users: Vec<(Box<str>, u64, Vec<u8>)>,
    items: Vec<(Id, crate::messages::ItemWrite)>,
    /// (item, version at which it left its shard's popularity list, index in `items` if the
    /// batch also writes it) of items to remove from the global popularity ranking.
    unlisted: Vec<(Id, u64, Option<usize>)>,
    neighbours: Vec<(Id, u64, Vec<u8>)>,
    /// Broker arrival of the newest event behind each written user record.
    #[pyo3(get)]
    pub arrivals: Vec<f64>,
    /// (user id, full state) of users leaving worker memory.
    #[pyo3(get)]
    pub parked: Vec<(String, Py<PyBytes>)>,
    /// Per segment: its (log2 popularity within the segment, item id) pairs.
    #[pyo3(get)]
    pub segment_scores: Vec<(&'static str, Py<RespArgs>)>,
    /// (key, user vector before the event, item id, user pseudonym) of sampled events.
    #[pyo3(get)]
    pub holdouts: Vec<(String, Py<PyBytes>, &'static str, String)>,
    /// (model, segment, window start, impressions, clicks, conversions) of touched windows.
    #[pyo3(get)]
    pub feedback: Vec<(&'static str, &'static str, f64, u64, u64, u64)>,
    /// (kind, scope, detail, pseudonym of the user of a per-user alarm).
    #[pyo3(get)]
    pub alarms: Vec<(&'static str, &'static str, String, Option<String>)>,
    #[pyo3(get)]
    pub applied: u64,
    #[pyo3(get)]
    pub duplicates: u64,
    #[pyo3(get)]
    pub dead_letters: u64,
    #[pyo3(get)]
    pub user_alarms: u64,
    #[pyo3(get)]
    pub global_alarms: u64,
    #[pyo3(get)]
    pub ctr_alarms: u64,
    #[pyo3(get)]
    pub shift_alarms: u64,
}

/// A user record's version as the store reads it: the record's first 8 bytes (its big-endian
/// version header, `GETRANGE key 0 7`), empty or None for a user without a record.
fn stored_user_version(value: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if value.is_none() {
        return Ok(None);
    }
    let raw = value.cast::<PyBytes>()?.as_bytes();
    if raw.is_empty() {
        return Ok(None);
    }
    let header: [u8; 8] =
        raw.try_into().map_err(|_| Invalid::new("a stored user record has no version header"))?;
    Ok(Some(u64::from_be_bytes(header)))
}

/// A stored version as Redis returns it (`HMGET`: bytes of a decimal integer, or None).
fn stored_version(value: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if value.is_none() {
        return Ok(None);
    }
    let raw = value.cast::<PyBytes>()?.as_bytes();
    let text =
        std::str::from_utf8(raw).map_err(|_| Invalid::new("a stored version is not text"))?;
    Ok(Some(text.parse::<u64>().map_err(|_| Invalid::new("a stored version is not a number"))?))
}

fn is_newer(version: u64, stored: Option<u64>) -> bool {
    stored.is_none_or(|s| version > s)
}

/// Ids as the arguments of an `HMGET`.
fn id_args<'a>(ids: impl Iterator<Item = &'a str>) -> RespArgs {
    let mut args = RespArgs::new();
    for id in ids {
        args.push_str(id);
    }
    args
}

#[pymethods]
impl StateWrites {
    /// The record keys (`prefix` + id) of the users whose stored versions `plan` needs.
    fn user_record_keys(&self, prefix: &str) -> RespArgs {
        let mut args = RespArgs::new();
        let mut key = String::new();
        for (user, _, _) in &self.users {
            key.clear();
            key.push_str(prefix);
            key.push_str(user);
            args.push_str(&key);
        }
        args
    }

    /// The written items, then the un-listed ones not written: whose versions `plan` needs.
    #[getter]
    fn item_ids(&self) -> RespArgs {
        let unlisted_only = self.unlisted.iter().filter(|(_, _, at)| at.is_none());
        let ids = self.items.iter().map(|(i, _)| *i).chain(unlisted_only.map(|(i, _, _)| *i));
        id_args(ids.map(intern::name))
    }

    #[getter]
    fn neighbour_ids(&self) -> RespArgs {
        id_args(self.neighbours.iter().map(|(i, _, _)| intern::name(*i)))
    }

    /// What to write, given the versions stored for `user_ids` (their records' version
    /// headers), `item_ids` and `neighbour_ids` (as `HMGET` returns them). Record keys are the
    /// id appended to the prefix `state/keys.py` gives for each kind.
    fn plan<'py>(
        &self,
        py: Python<'py>,
        stored_users: &Bound<'py, PyList>,
        stored_items: &Bound<'py, PyList>,
        stored_neighbours: &Bound<'py, PyList>,
        user_key_prefix: &str,
        neighbour_key_prefix: &str,
    ) -> PyResult<WritePlan> {
        let _timer = crate::timing::time(crate::timing::Part::WritePlan);
        let expect = |what: &str, have: usize, want: usize| {
            if have == want {
                Ok(())
            } else {
                Err(Invalid::new(format!("plan: {have} stored {what} versions for {want} ids")))
            }
        };
        let unlisted_only = self.unlisted.iter().filter(|(_, _, at)| at.is_none()).count();
        expect("user", stored_users.len(), self.users.len())?;
        expect("item", stored_items.len(), self.items.len() + unlisted_only)?;
        expect("neighbour", stored_neighbours.len(), self.neighbours.len())?;
        let mut plan = PlanArgs::default();
        let mut key = String::new();
        for ((user, version, blob), stored) in self.users.iter().zip(stored_users.iter()) {
            if is_newer(*version, stored_user_version(&stored)?) {
                key.clear();
                key.push_str(user_key_prefix);
                key.push_str(user);
                plan.user_keys.push_str(&key);
                plan.user_records.push(blob);
            }
        }
        let stored_items: Vec<Option<u64>> =
            stored_items.iter().map(|v| stored_version(&v)).collect::<PyResult<_>>()?;
        let mut unlisted_only = stored_items.iter().skip(self.items.len());
        for &(item, version, at) in &self.unlisted {
            let stored = match at {
                Some(at) => stored_items[at],
                None => *unlisted_only.next().expect("counted above"),
            };
            // The un-listing is as new as the state it was decided on: a replay of older
            // output (stored is newer) must not remove what the newer state listed.
            if stored.is_none_or(|s| version >= s) {
                plan.unlisted.push_str(intern::name(item));
            }
        }
        let mut changed: Vec<&str> = Vec::new();
        for ((item, w), &stored) in self.items.iter().zip(stored_items.iter()) {
            if !is_newer(w.version, stored) {
                continue;
            }
            let id = intern::name(*item);
            plan.item_factors.push_str(id);
            plan.item_factors.push_vector(&w.vector);
            plan.item_versions.push_str(id);
            plan.item_versions.push_u64(w.version);
            changed.push(id);
            if w.listed {
                plan.popularity.push_f64(w.popularity_log2);
                plan.popularity.push_str(id);
            }
            match w.trend_log2 {
                Some(trend) => {
                    plan.trending.push_f64(trend);
                    plan.trending.push_str(id);
                }
                None if w.untrend => plan.untrending.push_str(id),
                None => {}
            }
            if let Some(category) = w.category.filter(|_| w.category_changed) {
                plan.categories.push_str(id);
                plan.categories.push_str(intern::name(category));
            }
        }
        for ((item, version, blob), stored) in self.neighbours.iter().zip(stored_neighbours.iter())
        {
            if is_newer(*version, stored_version(&stored)?) {
                let id = intern::name(*item);
                key.clear();
                key.push_str(neighbour_key_prefix);
                key.push_str(id);
                plan.neighbour_records.push_str(&key);
                plan.neighbour_records.push(blob);
                plan.neighbour_versions.push_str(id);
                plan.neighbour_versions.push_u64(*version);
            }
        }
        plan.into_plan(py, &changed)
    }
}

impl StateWrites {
    /// The plan when Redis holds none of these keys yet (the benchmark's floor: a first
    /// write of everything, the common case on a long-tail stream).
    pub(crate) fn plan_all_new(&self, py: Python<'_>) -> PyResult<WritePlan> {
        let nones = |n: usize| PyList::new(py, (0..n).map(|_| py.None()));
        let unlisted_only = self.unlisted.iter().filter(|(_, _, at)| at.is_none()).count();
        self.plan(
            py,
            &nones(self.users.len())?,
            &nones(self.items.len() + unlisted_only)?,
            &nones(self.neighbours.len())?,
            "{fr}:user:",
            "{fr}:neighbours:",
        )
    }
}

/// A msgpack array of strings (what `msgspec.msgpack.encode(list_of_str)` gives).
fn msgpack_strings(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|s| s.len() + 2).sum::<usize>() + 5);
    rmp::encode::write_array_len(&mut out, items.len() as u32).expect("Vec write");
    for s in items {
        rmp::encode::write_str(&mut out, s).expect("Vec write");
    }
    out
}

/// The arguments of a `WritePlan` while `plan` lays them out.
#[derive(Default)]
struct PlanArgs {
    user_keys: RespArgs,
    user_records: RespArgs,
    item_factors: RespArgs,
    item_versions: RespArgs,
    popularity: RespArgs,
    unlisted: RespArgs,
    trending: RespArgs,
    untrending: RespArgs,
    categories: RespArgs,
    neighbour_records: RespArgs,
    neighbour_versions: RespArgs,
}

/// The newer part of a `StateWrites`, as the arguments of variadic Redis commands.
#[pyclass(module = "operators._native", frozen, get_all)]
pub struct WritePlan {
    /// The record keys of users to write, and their records (each carries its version).
    pub user_keys: Py<RespArgs>,
    pub user_records: Py<RespArgs>,
    /// (item id, float32 vector) pairs.
    pub item_factors: Py<RespArgs>,
    /// (item id, version) pairs.
    pub item_versions: Py<RespArgs>,
    /// How many items are written, and their ids (a msgpack array, for the change log).
    pub changed_items: usize,
    pub changed_item_ids: Py<PyBytes>,
    /// (log2 popularity, item id) pairs of items listed in the popularity ranking.
    pub popularity: Py<RespArgs>,
    /// Items that left the popularity ranking.
    pub unlisted: Py<RespArgs>,
    /// (log2 trend, item id) pairs of trending items, and items that stopped trending.
    pub trending: Py<RespArgs>,
    pub untrending: Py<RespArgs>,
    /// (item id, category) pairs of items whose category is new.
    pub categories: Py<RespArgs>,
    /// (record key, record) pairs of neighbour lists to write, and (item id, version) pairs.
    pub neighbour_records: Py<RespArgs>,
    pub neighbour_versions: Py<RespArgs>,
}

impl PlanArgs {
    fn into_plan(self, py: Python<'_>, changed: &[&str]) -> PyResult<WritePlan> {
        Ok(WritePlan {
            user_keys: Py::new(py, self.user_keys)?,
            user_records: Py::new(py, self.user_records)?,
            item_factors: Py::new(py, self.item_factors)?,
            item_versions: Py::new(py, self.item_versions)?,
            changed_items: changed.len(),
            changed_item_ids: PyBytes::new(py, &msgpack_strings(changed)).unbind(),
            popularity: Py::new(py, self.popularity)?,
            unlisted: Py::new(py, self.unlisted)?,
            trending: Py::new(py, self.trending)?,
            untrending: Py::new(py, self.untrending)?,
            categories: Py::new(py, self.categories)?,
            neighbour_records: Py::new(py, self.neighbour_records)?,
            neighbour_versions: Py::new(py, self.neighbour_versions)?,
        })
    }
}

impl StateWrites {
    /// A user erased in this batch: drop what the batch collected for them so far (record,
    /// parked state, holdout samples, per-user alarms) and delete them before anything newer
    /// is written (the new user's record that may follow in the same batch).
    fn erase(
        &mut self,
        user_id: &str,
        erasure_ids: &[String],
        users: &mut FxHashMap<Box<str>, usize>,
        arrivals: &mut Vec<Option<f64>>,
    ) {
        if let Some(at) = users.remove(user_id) {
            self.users.remove(at);
            arrivals.remove(at);
            for slot in users.values_mut() {
                if *slot > at {
                    *slot -= 1;
                }
            }
        }
        let pseudonym = crate::pseudonym::user_pseudonym(user_id);
        self.parked.retain(|(u, _)| u != user_id);
        self.holdouts.retain(|h| h.3 != pseudonym);
        self.alarms.retain(|a| a.3.as_deref() != Some(pseudonym.as_str()));
        if !self.erased.iter().any(|(u, _)| u == user_id) {
            self.erased.push((user_id.to_owned(), pseudonym));
        }
        self.erasure_ids.extend(erasure_ids.iter().cloned());
    }
}

/// Coalesce a batch of the flow's outputs into the writes that reach Redis.
#[pyfunction]
pub fn collect_writes(batch: &Bound<'_, PyList>) -> PyResult<StateWrites> {
    let _timer = crate::timing::time(crate::timing::Part::CollectWrites);
    let py = batch.py();
    let mut writes = StateWrites::default();
    let mut users: FxHashMap<Box<str>, usize> = FxHashMap::default();
    let mut items: FxHashMap<Id, usize> = FxHashMap::default();
    let mut neighbours: FxHashMap<Id, usize> = FxHashMap::default();
    let mut unlisted: FxHashMap<Id, u64> = FxHashMap::default();
    let mut segments: FxHashMap<(Id, Id), usize> = FxHashMap::default();
    let mut segment_rows: Vec<(Id, Id, f64)> = Vec::new();
    let mut windows: FxHashMap<(Id, Id, u64), usize> = FxHashMap::default();
    let mut arrivals: Vec<Option<f64>> = Vec::new();
    for object in batch.iter() {
        let object = match object.cast::<PyTuple>() {
            Ok(pair) => pair.get_item(1)?,
            Err(_) => object,
        };
        if let Ok(delta) = object.cast::<UserDelta>() {
            let d = delta.get();
            if !d.erasures.is_empty() {
                writes.erase(&d.user_id, &d.erasures, &mut users, &mut arrivals);
            }
            writes.applied += u64::from(d.applied);
            writes.duplicates += u64::from(d.duplicates);
            writes.dead_letters += d.dead_letters.len() as u64;
            writes.user_alarms += u64::from(d.user_alarms);
            writes.global_alarms += u64::from(d.global_alarms);
            if let Some((version, blob)) = &d.record {
                let row = (d.user_id.clone(), *version, blob.clone());
                match users.get(&d.user_id) {
                    Some(&at) if writes.users[at].1 >= *version => {}
                    Some(&at) => {
                        writes.users[at] = row;
                        arrivals[at] = d.arrival_s;
                    }
                    None => {
                        users.insert(d.user_id.clone(), writes.users.len());
                        writes.users.push(row);
                        arrivals.push(d.arrival_s);
                    }
                }
            }
            if let Some(state) = &d.parked {
                writes.parked.push((d.user_id.to_string(), PyBytes::new(py, state).unbind()));
            }
            for h in &d.holdouts {
                let vector =
                    PyBytes::new(py, &crate::records::vector_bytes(&h.user_vector)).unbind();
                writes.holdouts.push((h.key.clone(), vector, intern::name(h.item), h.user.clone()));
            }
            for a in &d.alarms {
                writes.alarms.push((a.kind, a.scope, a.detail.clone(), a.user.clone()));
            }
        } else if let Ok(outs) = object.cast::<ItemsOut>() {
            for &(item, version) in &outs.get().unlisted {
                match unlisted.get(&item) {
                    Some(&known) if known >= version => {}
                    _ => {
                        unlisted.insert(item, version);
                    }
                }
            }
            for o in &outs.get().outs {
                if let Some(w) = &o.write {
                    match items.get(&o.item) {
                        Some(&at) if writes.items[at].1.version >= w.version => {}
                        Some(&at) => writes.items[at] = (o.item, w.clone()),
                        None => {
                            items.insert(o.item, writes.items.len());
                            writes.items.push((o.item, w.clone()));
                        }
                    }
                }
                if let Some((version, blob)) = &o.neighbours {
                    let row = (o.item, *version, blob.clone());
                    match neighbours.get(&o.item) {
                        Some(&at) if writes.neighbours[at].1 >= *version => {}
                        Some(&at) => writes.neighbours[at] = row,
                        None => {
                            neighbours.insert(o.item, writes.neighbours.len());
                            writes.neighbours.push(row);
                        }
                    }
                }
                for (segment, score) in &o.segments {
                    let key = (*segment, o.item);
                    match segments.get(&key) {
                        Some(&at) => segment_rows[at].2 = *score,
                        None => {
                            segments.insert(key, segment_rows.len());
                            segment_rows.push((*segment, o.item, *score));
                        }
                    }
                }
            }
        } else if let Ok(out) = object.cast::<FeedbackOut>() {
            let o = out.get();
            for w in &o.windows {
                let key = (o.model, o.segment, w.start_s.to_bits());
                let row = (
                    intern::name(o.model),
                    intern::name(o.segment),
                    w.start_s,
                    w.impressions,
                    w.clicks,
                    w.conversions,
                );
                match windows.get(&key) {
                    Some(&at) => writes.feedback[at] = row,
                    None => {
                        windows.insert(key, writes.feedback.len());
                        writes.feedback.push(row);
                    }
                }
            }
            for detail in &o.alarms {
                writes.ctr_alarms += 1;
                writes.alarms.push(("ctr drift", "global", detail.clone(), None));
            }
        } else if let Ok(shift) = object.cast::<ShiftAlarms>() {
            for detail in &shift.get().details {
                writes.shift_alarms += 1;
                writes.alarms.push(("popularity drift", "global", detail.clone(), None));
            }
        }
    }
    // An item both un-listed and written: whichever is newer wins. Un-listing at the version
    // of a write comes after it (an item is listed only by a write of its own).
    let mut unlisted: Vec<(Id, u64)> = unlisted.into_iter().collect();
    unlisted.sort_unstable();
    for (item, version) in unlisted {
        match items.get(&item) {
            Some(&at) if version >= writes.items[at].1.version => {
                writes.items[at].1.listed = false;
                writes.unlisted.push((item, version, Some(at)));
            }
            Some(_) => {}
            None => writes.unlisted.push((item, version, None)),
        }
    }
    writes.arrivals = arrivals.into_iter().flatten().collect();
    let mut by_segment: FxHashMap<Id, usize> = FxHashMap::default();
    let mut segment_args: Vec<(&'static str, RespArgs)> = Vec::new();
    for (segment, item, score) in segment_rows {
        let at = *by_segment.entry(segment).or_insert_with(|| {
            segment_args.push((intern::name(segment), RespArgs::new()));
            segment_args.len() - 1
        });
        let pairs = &mut segment_args[at].1;
        pairs.push_f64(score);
        pairs.push_str(intern::name(item));
    }
    for (segment, pairs) in segment_args {
        writes.segment_scores.push((segment, Py::new(py, pairs)?));
    }
    Ok(writes)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(key_by_user, m)?)?;
    m.add_function(wrap_pyfunction!(feedback_batches, m)?)?;
    m.add_function(wrap_pyfunction!(popularity_samples, m)?)?;
    m.add_function(wrap_pyfunction!(dead_letters, m)?)?;
    m.add_function(wrap_pyfunction!(archive_rows, m)?)?;
    m.add_function(wrap_pyfunction!(collect_writes, m)?)?;
    m.add_class::<StateWrites>()?;
    m.add_class::<WritePlan>()?;
    Ok(())
}

#[allow(dead_code)]
fn _types_used(_: ItemOp, _: DeadLetter, _: ArchiveRow) {}
