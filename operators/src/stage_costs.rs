//! The native per-event cost of each stage of the flow, timed in Rust loops: exists for
//! `benchmarks/bench_pipeline.py` (its "floors"), not used by the flow.
//!
//! Each stage runs alone over the whole input, no stream engine, driving the very functions
//! the keyed models call (`events::decode`, `Enricher`, `UserState`, `LiveQuality`,
//! `ItemRouter` (item shards), `ItemModel::apply`, `routing::collect_writes`), in the models'
//! order, on batches grouped by key as the engine hands them. A Python loop calling one native
//! function per event would time the call, not the work.

use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::dedup::id_hash;
use crate::enrich::{DEFAULT_CACHE_SIZE, Enricher, EventContext};
use crate::events::{self, DecodedEvent, Message};
use crate::intern::{self, Id};
use crate::isgd::IsgdParams;
use crate::item_model::{ItemModel, ItemModelFactory, ItemRouter};
use crate::item_state::{ItemConfig, ItemState};
use crate::item_vectors::ItemVectors;
use crate::live_quality::LiveQuality;
use crate::messages::{ItemOp, ItemShardBatch, ItemsOut, UserDelta};
use crate::routing::collect_writes;
use crate::user_model::{ParkedUsers, learn_event};
use crate::user_state::{PyUserConfig, UserConfig, UserState};

fn wall_clock_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds of one run of `f`.
fn timed<R>(f: impl FnOnce() -> R) -> (f64, R) {
    let started = Instant::now();
    let out = f();
    (started.elapsed().as_secs_f64(), out)
}

/// The events of one batch grouped by user, in first-seen order (what the engine hands the
/// user-keyed step: one call per key and batch).
fn group_by_user(events: &[Option<DecodedEvent>], batch_size: usize) -> Vec<Vec<Vec<usize>>> {
    let mut batches = Vec::new();
    for start in (0..events.len()).step_by(batch_size.max(1)) {
        let end = (start + batch_size).min(events.len());
        let mut slots: FxHashMap<&str, usize> = FxHashMap::default();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, event) in events.iter().enumerate().take(end).skip(start) {
            let Some(event) = event else { continue };
            let slot = *slots.entry(event.user_id.as_str()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[slot].push(i);
        }
        batches.push(groups);
    }
    batches
}

/// The user model's per-event work (`UserModel::apply` and the end of `on_batch`) on one
/// key's events of a batch, decode and enrichment given: state lookup or creation, dedup,
/// feedback hit, observe or (replica read, sampled HR@10, boost, ISGD user half + session +
/// window, drift check), then the record.
#[allow(clippy::too_many_arguments)]
fn user_group(
    group: &[usize],
    events: &[Option<DecodedEvent>],
    contexts: &[Option<EventContext>],
    states: &mut FxHashMap<Id, UserState>,
    params: &IsgdParams,
    config: &UserConfig,
    replica: &ItemVectors,
    quality: Option<&LiveQuality>,
    parked: &ParkedUsers,
    item_buf: &mut Vec<f32>,
) -> UserDelta {
    let mut delta = UserDelta::default();
    let first = events[group[0]].as_ref().expect("grouped events are valid");
    let key = intern::intern(&first.user_id);
    let state = states.entry(key).or_insert_with(|| {
        // A new key asks the parked index first (nothing is parked here: no Redis read).
        let _ = parked.contains(&first.user_id);
        UserState::new(&first.user_id, params, config)
    });
    let duplicates_before = state.duplicates;
    let mut last_ts = Some(state.window.last_ts_s);
    delta.user_id = first.user_id.as_str().into();
    let mut ops = Vec::new();
    for &i in group {
        let event = events[i].as_ref().expect("grouped events are valid");
        let ts_s = event.ts_s;
        if state.is_duplicate(id_hash(&event.event_id), ts_s, config) {
            delta.duplicates += 1;
            continue;
        }
        let context = contexts[i].as_ref().expect("valid events are enriched");
        last_ts = Some(ts_s);
        let learned = learn_event(
            state,
            event,
            context.segment,
            replica,
            quality,
            params,
            config,
            item_buf,
            &mut delta,
            &mut ops,
        );
        // The product raises a failed refit (the last step); the floor has timed the work.
        let _ = learned;
    }
    delta.item_ops = Mutex::new(ops);
    if delta.applied > 0 || state.duplicates != duplicates_before {
        delta.record = Some(state.record(last_ts.unwrap_or(f64::NEG_INFINITY), wall_clock_s()));
    }
    delta
}

/// Per stage, the best (least) seconds over the repeats.
#[derive(Default)]
struct Best(Vec<(&'static str, f64)>);

impl Best {
    fn add(&mut self, name: &'static str, seconds: f64) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = slot.1.min(seconds),
            None => self.0.push((name, seconds)),
        }
    }
}

pub const DECODE: &str = "decode + validate";
pub const ENRICH: &str = "enrichment";
pub const USER: &str = "user state";
pub const ROUTE: &str = "item_batches";
pub const ITEM: &str = "item model";
pub const WRITES: &str = "collect_writes";

/// µs per event of each stage of the flow over `payloads` (Kafka values keyed by their user
/// id), best of `repeats`, in the flow's order: decode + validate, enrichment, user state
/// (dedup, session, window, ISGD user half, sampled HR@10, drift check, record), item_batches
/// (routing), item model (ISGD item half, popularity, trend, co-visits, neighbours top-M,
/// segment popularity) and collect_writes (coalescing for Redis, then the write plan's RESP
/// encoding as for keys Redis does not hold yet). The stages' keys are the
/// module constants; `detail` maps a few parts of them, timed alone (not in the sum).
#[pyfunction]
#[pyo3(signature = (payloads, params, user_config, item_config, top_m, repeats=5,
                    batch_size=1000, sample_every=10, max_future_skew_s=300.0, item_shards=64))]
#[allow(clippy::too_many_arguments)]
pub fn stage_costs<'py>(
    py: Python<'py>,
    payloads: Vec<Vec<u8>>,
    params: IsgdParams,
    user_config: PyRef<'_, PyUserConfig>,
    item_config: ItemConfig,
    top_m: usize,
    repeats: usize,
    batch_size: usize,
    sample_every: u32,
    max_future_skew_s: f64,
    item_shards: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let config = user_config.inner.clone();
    let n = payloads.len().max(1) as f64;
    let factory = py.get_type::<ItemModelFactory>().call1((params.clone(), item_config, top_m))?;
    let router = py.get_type::<ItemRouter>().call1((item_shards,))?;
    let mut best = Best::default();
    let mut detail = Best::default();
    // One enricher for every repeat: the flow's per-thread enricher is warm after its first
    // events (a miss calls the Python rules); the best repeat is the warm one.
    let mut enricher = Enricher::new(py, DEFAULT_CACHE_SIZE)?;
    let mut valid = 0usize;
    for _ in 0..repeats.max(1) {
        // 1. decode + validate, as the user model calls it (dead letters: the Python judge).
        let now_us = (wall_clock_s() * 1e6) as i64;
        let (s, decoded) = timed(|| -> PyResult<Vec<Option<DecodedEvent>>> {
            let mut out = Vec::with_capacity(payloads.len());
            for payload in &payloads {
                out.push(match events::decode(py, payload, now_us, max_future_skew_s)? {
                    Ok(Message::Event(event)) => Some(event),
                    Ok(Message::Erase(_)) | Err(_) => None,
                });
            }
            Ok(out)
        });
        let decoded = decoded?;
        best.add(DECODE, s);
        valid = decoded.iter().flatten().count();

        // 2. enrichment of every valid event (the flow skips duplicates: none here).
        let (s, contexts) = timed(|| -> PyResult<Vec<Option<EventContext>>> {
            let mut out = Vec::with_capacity(decoded.len());
            for event in &decoded {
                out.push(match event {
                    None => None,
                    Some(e) => {
                        let ctx = e.context.as_ref();
                        Some(enricher.enrich(
                            py,
                            ctx.and_then(|c| c.user_agent.as_deref()),
                            ctx.and_then(|c| c.device.as_deref()),
                            ctx.and_then(|c| c.country.as_deref()),
                            ctx.and_then(|c| c.region.as_deref()),
                            e.ts_us,
                            e.utc_offset_s,
                        )?)
                    }
                });
            }
            Ok(out)
        });
        let contexts = contexts?;
        best.add(ENRICH, s);

        // 3. the user state, one call per user and batch, emitting one UserDelta each.
        let batches = group_by_user(&decoded, batch_size);
        let quality = if sample_every > 0 {
            Some(py.get_type::<LiveQuality>().call1((sample_every,))?.cast_into::<LiveQuality>()?)
        } else {
            None
        };
        let replica = ItemVectors::new(params.clone());
        let parked = ParkedUsers::default();
        let mut states: FxHashMap<Id, UserState> = FxHashMap::default();
        let (s, deltas) = timed(|| -> PyResult<Vec<Vec<Bound<'py, UserDelta>>>> {
            let mut item_buf = Vec::new();
            let mut out = Vec::with_capacity(batches.len());
            for groups in &batches {
                let mut batch_out = Vec::with_capacity(groups.len());
                for group in groups {
                    let delta = user_group(
                        group,
                        &decoded,
                        &contexts,
                        &mut states,
                        &params,
                        &config,
                        &replica,
                        quality.as_ref().map(|q| q.get()),
                        &parked,
                        &mut item_buf,
                    );
                    batch_out.push(Bound::new(py, delta)?);
                }
                out.push(batch_out);
            }
            Ok(out)
        });
        let deltas = deltas?;
        best.add(USER, s);

        // 4. routing: the batch's item work grouped per item (one ItemBatch per item).
        let inputs: Vec<Bound<'py, PyList>> = deltas
            .iter()
            .map(|batch| {
                let pairs: Vec<Bound<'py, PyTuple>> = batch
                    .iter()
                    .map(|d| {
                        let key = PyString::new(py, &d.get().user_id);
                        PyTuple::new(py, [key.as_any(), d.as_any()])
                    })
                    .collect::<PyResult<_>>()?;
                PyList::new(py, pairs)
            })
            .collect::<PyResult<_>>()?;
        let (s, routed) =
            timed(|| inputs.iter().map(|b| router.call1((b,))).collect::<PyResult<Vec<_>>>());
        let routed = routed?;
        best.add(ROUTE, s);

        // 5. the item model, one call per shard and batch (models built beforehand: building
        // a key's logic is the engine's call).
        let mut per_batch: Vec<Vec<(u32, Bound<'py, ItemShardBatch>)>> =
            Vec::with_capacity(routed.len());
        let mut models: FxHashMap<u32, Bound<'py, ItemModel>> = FxHashMap::default();
        for out in &routed {
            let mut shards = Vec::new();
            for pair in out.cast::<PyList>()?.iter() {
                let batch = pair.cast::<PyTuple>()?.get_item(1)?.cast_into::<ItemShardBatch>()?;
                let shard = batch.get().shard;
                if let Entry::Vacant(slot) = models.entry(shard) {
                    slot.insert(factory.call0()?.cast_into::<ItemModel>()?);
                }
                shards.push((shard, batch));
            }
            per_batch.push(shards);
        }
        let (s, outs) = timed(|| -> PyResult<Vec<Vec<Bound<'py, ItemsOut>>>> {
            let mut all = Vec::with_capacity(per_batch.len());
            for shards in &per_batch {
                let mut batch_out = Vec::with_capacity(shards.len());
                for (shard, batch) in shards {
                    let model = models.get(shard).expect("built above");
                    let outs = model.borrow_mut().apply(&[batch.get()]);
                    batch_out.push(Bound::new(py, outs)?);
                }
                all.push(batch_out);
            }
            Ok(all)
        });
        let outs = outs?;
        best.add(ITEM, s);

        // 6. the sink's coalescing of a batch's user deltas and item outputs.
        let sink_batches: Vec<Bound<'py, PyList>> = deltas
            .iter()
            .zip(&outs)
            .map(|(users, items)| {
                let list = PyList::empty(py);
                for d in users {
                    let key = PyString::new(py, &d.get().user_id);
                    list.append(PyTuple::new(py, [key.as_any(), d.as_any()])?)?;
                }
                for o in items {
                    let key = PyString::new(py, "shard");
                    list.append(PyTuple::new(py, [key.as_any(), o.as_any()])?)?;
                }
                Ok(list)
            })
            .collect::<PyResult<_>>()?;
        let (s, writes) = timed(|| {
            sink_batches
                .iter()
                .map(|b| collect_writes(b)?.plan_all_new(py))
                .collect::<PyResult<Vec<_>>>()
        });
        writes?;
        best.add(WRITES, s);

        // Details (parts of the stages above, each alone; not in the sum).
        if quality.is_some() {
            let fresh =
                py.get_type::<LiveQuality>().call1((sample_every,))?.cast_into::<LiveQuality>()?;
            let fresh = fresh.get();
            let (s, _) = timed(|| {
                for event in decoded.iter().flatten() {
                    if !event.event_type.is_interaction() {
                        continue;
                    }
                    let item = intern::intern(&event.item_id);
                    if fresh.sampled(&event.event_id) {
                        let user = &states[&intern::intern(&event.user_id)];
                        let _ = fresh.evaluate(&event.event_id, &user.vector, item, &replica);
                    }
                    let _ = fresh.learning_rate_multiplier();
                }
            });
            detail.add(
                "user state: sampled HR@10 (blake2 of each id, 1+99 ranked for 1 in sample_every)",
                s,
            );
        }
        let (s, _) = timed(|| {
            for groups in &batches {
                for group in groups {
                    let user = events_user(&decoded, group);
                    let _ = states[&user].record(0.0, 0.0);
                }
            }
        });
        detail.add("user state: record encoding (once per user and batch)", s);
        item_details(&per_batch, &params, &item_config, top_m, &mut detail);
    }
    let out = PyDict::new(py);
    let stages = PyDict::new(py);
    for (name, seconds) in &best.0 {
        stages.set_item(*name, seconds / n * 1e6)?;
    }
    let details = PyDict::new(py);
    for (name, seconds) in &detail.0 {
        details.set_item(*name, seconds / n * 1e6)?;
    }
    out.set_item("stage_us_per_event", stages)?;
    out.set_item("detail_us_per_event", details)?;
    out.set_item("events", payloads.len())?;
    out.set_item("valid_events", valid)?;
    out.set_item("repeats", repeats.max(1))?;
    Ok(out)
}

fn events_user(events: &[Option<DecodedEvent>], group: &[usize]) -> Id {
    intern::intern(&events[group[0]].as_ref().expect("grouped events are valid").user_id)
}

/// The item model's parts on fresh `ItemState`s, each alone over the same item batches.
fn item_details(
    per_batch: &[Vec<(u32, Bound<'_, ItemShardBatch>)>],
    params: &IsgdParams,
    cfg: &ItemConfig,
    top_m: usize,
    detail: &mut Best,
) {
    let mut items: FxHashMap<Id, ItemState> = FxHashMap::default();
    let every = || {
        per_batch
            .iter()
            .flat_map(|b| b.iter())
            .flat_map(|(_, shard)| shard.get().items.iter().map(|b| (&b.item, b)))
    };
    for (item, _) in every() {
        items.entry(*item).or_insert_with(|| ItemState::new(*item, params));
    }
    let (s, _) = timed(|| {
        for (item, batch) in every() {
            let state = items.get_mut(item).expect("built above");
            let mut learned = false;
            for op in &batch.ops {
                if let ItemOp::Learn(l) = op {
                    state.learn(&l.user_vector, l.weight, l.ts_s, l.category, params, cfg);
                    learned = true;
                }
            }
            if learned {
                let _ = state.trend_log2(cfg);
            }
        }
    });
    detail.add("item model: ISGD item half, popularity, trend", s);
    let (s, _) = timed(|| {
        for (item, batch) in every() {
            let state = items.get_mut(item).expect("built above");
            for op in &batch.ops {
                if let ItemOp::Learn(l) = op {
                    state.segment_hit(l.segment, l.weight, l.ts_s, cfg);
                }
            }
        }
    });
    detail.add("item model: segment popularity", s);
    let (s, _) = timed(|| {
        for (item, batch) in every() {
            let state = items.get_mut(item).expect("built above");
            for op in &batch.ops {
                if let ItemOp::CoVisit { other, weight, ts_s } = op {
                    state.covisit(*other, *weight, *ts_s, cfg);
                }
            }
        }
    });
    detail.add("item model: co-visit counts", s);
    let (s, _) = timed(|| {
        for (item, batch) in every() {
            if !batch.ops.iter().any(|op| matches!(op, ItemOp::CoVisit { .. })) {
                continue;
            }
            let state = &items[item];
            let top = state.neighbours.top(top_m);
            let names = intern::names(top.iter().map(|(id, _)| *id));
            let named: Vec<(&str, f64)> =
                names.into_iter().zip(top.iter().map(|(_, s)| *s)).collect();
            let _ = crate::records::encode_neighbours(state.covisit_version, &named);
        }
    });
    detail.add("item model: neighbours top-M + record encoding", s);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(stage_costs, m)?)?;
    Ok(())
}
