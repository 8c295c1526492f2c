//! The flow's routing steps: one call per batch each, pure data movement (no engine, no I/O).
//!
//! - `key_by_user`: the Kafka messages of a batch keyed by user id (the message key, which
//!   the ingest API sets to the user id; the payload's user id when a producer set none).
//! - `item_batches`: the item work of a batch's `UserDelta`s grouped into one `ItemBatch`
//!   per target item, in event order.
//! - `dead_letters`, `archive_rows`: what the side outputs need.
//! - `collect_writes`: everything bound for Redis in a batch, coalesced to the last write per
//!   key, ready to be sent in one pipeline by `state/store.py`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::events::{self, Fast};
use crate::intern::{self, Id};
use crate::feedback_model::{FeedbackBatch, FeedbackOut};
use crate::messages::{ArchiveRow, DeadLetter, ItemBatch, ItemOp, ItemOut, UserDelta};
use crate::popularity_shift_model::{PopularitySample, ShiftAlarms};

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
                    None => payload_user(&msg).map_or_else(|| empty.clone(), |u| PyString::new(py, &u)),
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

/// One `(item id, ItemBatch)` per target item of the batch, in first-touched order.
#[pyfunction]
pub fn item_batches<'py>(batch: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let _timer = crate::timing::time(crate::timing::Part::ItemBatches);
    let py = batch.py();
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
    let out = PyList::empty(py);
    for group in grouped {
        let key = PyString::new(py, intern::name(group.item));
        out.append((key, Bound::new(py, group)?))?;
    }
    Ok(out)
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
                grouped.push(FeedbackBatch { model: hit.model, segment: hit.segment, hits: Vec::new() });
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
    let items: Vec<Id> =
        deltas(batch).flat_map(|d| d.get().holdouts.iter().map(|h| h.item).collect::<Vec<_>>()).collect();
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

/// The batch's valid events with their enrichment, for the Parquet archive.
#[pyfunction]
pub fn archive_rows<'py>(batch: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let _timer = crate::timing::time(crate::timing::Part::SideOutputs);
    let py = batch.py();
    let out = PyList::empty(py);
    for delta in deltas(batch) {
        for row in &delta.get().archive {
            out.append(Bound::new(py, row.clone())?)?;
        }
    }
    Ok(out)
}

/// Everything a batch writes to Redis, coalesced (the newest version per key).
#[pyclass(module = "operators._native", frozen, get_all)]
#[derive(Default)]
pub struct StateWrites {
    /// Users whose record changed, and the versioned-set arguments (version, blob) for each.
    pub user_ids: Vec<String>,
    pub user_args: Vec<Py<PyAny>>,
    /// Broker arrival of the newest event behind each written user record.
    pub arrivals: Vec<f64>,
    /// (user id, full state) of users leaving worker memory.
    pub parked: Vec<(String, Py<PyBytes>)>,
    /// The item-write script's arguments (layout: `state/store.py`, `_WRITE_ITEMS_LUA`).
    pub item_args: Vec<Py<PyAny>>,
    /// Items whose neighbour lists changed, and (version, blob) for each.
    pub neighbour_ids: Vec<&'static str>,
    pub neighbour_args: Vec<Py<PyAny>>,
    /// (segment, item id, log2 popularity within the segment).
    pub segment_scores: Vec<(&'static str, &'static str, f64)>,
    /// (key, user vector before the event, item id) of sampled events.
    pub holdouts: Vec<(String, Py<PyBytes>, &'static str)>,
    /// (model, segment, window start, impressions, clicks, conversions) of touched windows.
    pub feedback: Vec<(&'static str, &'static str, f64, u64, u64, u64)>,
    /// (kind, scope, detail).
    pub alarms: Vec<(&'static str, &'static str, String)>,
    pub applied: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub user_alarms: u64,
    pub global_alarms: u64,
    pub ctr_alarms: u64,
    pub shift_alarms: u64,
}

/// Coalesce a batch of the flow's outputs into the writes that reach Redis.
#[pyfunction]
pub fn collect_writes(batch: &Bound<'_, PyList>) -> PyResult<StateWrites> {
    let _timer = crate::timing::time(crate::timing::Part::CollectWrites);
    let py = batch.py();
    let mut writes = StateWrites::default();
    let mut users: FxHashMap<&str, (u64, Py<PyBytes>, Option<f64>)> = FxHashMap::default();
    let mut user_order: Vec<String> = Vec::new();
    let mut items: FxHashMap<Id, usize> = FxHashMap::default();
    let mut item_rows: Vec<(Id, &crate::messages::ItemWrite)> = Vec::new();
    let mut neighbours: FxHashMap<Id, (u64, Py<PyBytes>)> = FxHashMap::default();
    let mut neighbour_order: Vec<Id> = Vec::new();
    let mut segments: FxHashMap<(Id, Id), usize> = FxHashMap::default();
    let bound: Vec<Bound<'_, PyAny>> = batch
        .iter()
        .map(|item| match item.cast::<PyTuple>() {
            Ok(pair) => pair.get_item(1),
            Err(_) => Ok(item),
        })
        .collect::<PyResult<_>>()?;
    let user_deltas: Vec<Bound<'_, UserDelta>> =
        bound.iter().filter_map(|o| o.cast::<UserDelta>().ok().cloned()).collect();
    let item_outs: Vec<Bound<'_, ItemOut>> =
        bound.iter().filter_map(|o| o.cast::<ItemOut>().ok().cloned()).collect();
    for delta in &user_deltas {
        let d = delta.get();
        writes.applied += u64::from(d.applied);
        writes.duplicates += u64::from(d.duplicates);
        writes.dead_letters += d.dead_letters.len() as u64;
        writes.user_alarms += u64::from(d.user_alarms);
        writes.global_alarms += u64::from(d.global_alarms);
        if let Some((version, blob)) = &d.record {
            match users.get_mut(&*d.user_id) {
                Some(held) if held.0 >= *version => {}
                Some(held) => *held = (*version, PyBytes::new(py, blob).unbind(), d.arrival_s),
                None => {
                    user_order.push(d.user_id.to_string());
                    users.insert(&d.user_id, (*version, PyBytes::new(py, blob).unbind(), d.arrival_s));
                }
            }
        }
        if let Some(state) = &d.parked {
            writes.parked.push((d.user_id.to_string(), PyBytes::new(py, state).unbind()));
        }
        for h in &d.holdouts {
            let vector = PyBytes::new(py, &crate::records::vector_bytes(&h.user_vector)).unbind();
            writes.holdouts.push((h.key.clone(), vector, intern::name(h.item)));
        }
        for a in &d.alarms {
            writes.alarms.push((a.kind, a.scope, a.detail.clone()));
        }
    }
    for user_id in user_order {
        let (version, blob, arrival) = users.remove(user_id.as_str()).expect("ordered users are held");
        writes.user_args.push(version.into_pyobject(py)?.into_any().unbind());
        writes.user_args.push(blob.into_any());
        if let Some(at) = arrival {
            writes.arrivals.push(at);
        }
        writes.user_ids.push(user_id);
    }
    for out in &item_outs {
        let o = out.get();
        if let Some(w) = &o.write {
            match items.get(&o.item) {
                Some(&at) if item_rows[at].1.version >= w.version => {}
                Some(&at) => item_rows[at] = (o.item, w),
                None => {
                    items.insert(o.item, item_rows.len());
                    item_rows.push((o.item, w));
                }
            }
        }
        if let Some((version, blob)) = &o.neighbours {
            match neighbours.get(&o.item) {
                Some(held) if held.0 >= *version => {}
                _ => {
                    if !neighbours.contains_key(&o.item) {
                        neighbour_order.push(o.item);
                    }
                    neighbours.insert(o.item, (*version, PyBytes::new(py, blob).unbind()));
                }
            }
        }
        for (segment, score) in &o.segments {
            let key = (*segment, o.item);
            match segments.get(&key) {
                Some(&at) => writes.segment_scores[at].2 = *score,
                None => {
                    segments.insert(key, writes.segment_scores.len());
                    writes.segment_scores.push((intern::name(*segment), intern::name(o.item), *score));
                }
            }
        }
    }
    let mut windows: FxHashMap<(Id, Id, u64), usize> = FxHashMap::default();
    for object in &bound {
        if let Ok(out) = object.cast::<FeedbackOut>() {
            let o = out.get();
            for w in &o.windows {
                let key = (o.model, o.segment, w.start_s.to_bits());
                let row = (intern::name(o.model), intern::name(o.segment), w.start_s, w.impressions, w.clicks, w.conversions);
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
                writes.alarms.push(("ctr drift", "global", detail.clone()));
            }
        } else if let Ok(shift) = object.cast::<ShiftAlarms>() {
            for detail in &shift.get().details {
                writes.shift_alarms += 1;
                writes.alarms.push(("popularity drift", "global", detail.clone()));
            }
        }
    }
    // The item-write script's arguments, grouped by the command they feed so the script can
    // pass whole ranges on (see state/store.py): n, ids, versions, (id, vector) pairs,
    // (id, version) pairs, (popularity, id) pairs, then counted lists of (trend, id) pairs,
    // ids to un-list from trending, and (id, category) pairs.
    if !item_rows.is_empty() {
        let args = &mut writes.item_args;
        let text = |s: &str| PyString::new(py, s).into_any().unbind();
        let int = |v: u64| -> PyResult<Py<PyAny>> { Ok(v.into_pyobject(py)?.into_any().unbind()) };
        args.push(int(item_rows.len() as u64)?);
        for (item, _) in &item_rows {
            args.push(text(intern::name(*item)));
        }
        for (_, w) in &item_rows {
            args.push(int(w.version)?);
        }
        for (item, w) in &item_rows {
            args.push(text(intern::name(*item)));
            args.push(PyBytes::new(py, &crate::records::vector_bytes(&w.vector)).into_any().unbind());
        }
        for (item, w) in &item_rows {
            args.push(text(intern::name(*item)));
            args.push(int(w.version)?);
        }
        // Redis parses scores with strtod: Rust's shortest round-trip form reads back exactly.
        for (item, w) in &item_rows {
            args.push(text(&w.popularity_log2.to_string()));
            args.push(text(intern::name(*item)));
        }
        let trending: Vec<_> = item_rows.iter().filter_map(|(i, w)| w.trend_log2.map(|t| (*i, t))).collect();
        args.push(int(trending.len() as u64)?);
        for (item, trend) in trending {
            args.push(text(&trend.to_string()));
            args.push(text(intern::name(item)));
        }
        let untrend: Vec<_> = item_rows.iter().filter(|(_, w)| w.untrend).collect();
        args.push(int(untrend.len() as u64)?);
        for (item, _) in untrend {
            args.push(text(intern::name(*item)));
        }
        let categories: Vec<_> = item_rows
            .iter()
            .filter_map(|(i, w)| w.category.filter(|_| w.category_changed).map(|c| (*i, c)))
            .collect();
        args.push(int(categories.len() as u64)?);
        for (item, category) in categories {
            args.push(text(intern::name(item)));
            args.push(text(intern::name(category)));
        }
    }
    for item in neighbour_order {
        let (version, blob) = neighbours.remove(&item).expect("ordered neighbours are held");
        writes.neighbour_ids.push(intern::name(item));
        writes.neighbour_args.push(version.into_pyobject(py)?.into_any().unbind());
        writes.neighbour_args.push(blob.into_any());
    }
    Ok(writes)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(key_by_user, m)?)?;
    m.add_function(wrap_pyfunction!(item_batches, m)?)?;
    m.add_function(wrap_pyfunction!(feedback_batches, m)?)?;
    m.add_function(wrap_pyfunction!(popularity_samples, m)?)?;
    m.add_function(wrap_pyfunction!(dead_letters, m)?)?;
    m.add_function(wrap_pyfunction!(archive_rows, m)?)?;
    m.add_function(wrap_pyfunction!(collect_writes, m)?)?;
    m.add_class::<StateWrites>()?;
    Ok(())
}

#[allow(dead_code)]
fn _types_used(_: ItemOp, _: DeadLetter, _: ArchiveRow) {}
