//! The item model: the keyed operator over one shard of the items.
//!
//! Items are keyed by shard (a fixed-key hash of the id modulo `item_shards`), not one key per
//! item: the item side of a batch then costs the engine a handful of keyed calls instead of
//! about one per event (measured: a skeleton of the flow's shape runs at 0.29× a keyed counter
//! with a per-item exchange, 1.5× without one). One `ItemModel` holds its shard's
//! `ItemState`s and applies each item's ops of the batch in order (ISGD item halves,
//! popularity and trend, co-visits, popularity per context segment), answering with one
//! `ItemsOut`. It speaks the stateful-operator protocol the engine calls by name (`on_batch`,
//! `snapshot`, `notify_at`, `on_notify`, `on_eof`: Bytewax's `StatefulBatchLogic`, to which
//! `dataflows/steps.py` registers it) without knowing the engine.
//!
//! The price: a shard's snapshot holds every item of the shard, so a recovery snapshot costs
//! the item state of the shards touched in the epoch (in practice all of them), not of the
//! items touched. Snapshot (tag `FRK`, version 1): shard, item count, then each `ItemState`.

use std::sync::Arc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_64;

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure};
use crate::intern::{self, Id};
use crate::isgd::IsgdParams;
use crate::item_state::{ItemConfig, ItemState};
use crate::item_vectors::ItemVectors;
use crate::messages::{ItemBatch, ItemOp, ItemOut, ItemShardBatch, ItemWrite, ItemsOut};
use crate::popular_list::PopularList;
use crate::records;

/// The shard of an item: the same in every process and run.
#[inline]
pub fn shard_of(item_id: &str, shards: u32) -> u32 {
    (xxh3_64(item_id.as_bytes()) % u64::from(shards)) as u32
}

/// Hyperparameters every item model of a process shares.
pub struct ItemShared {
    pub params: IsgdParams,
    pub config: ItemConfig,
    /// Co-visited neighbours stored per item.
    pub top_m: usize,
    /// This process' replica of item vectors for its user models, if it has one.
    pub replica: Option<Py<ItemVectors>>,
    /// Items each shard lists in the global popularity ranking (None: every item).
    pub popular_listed: Option<usize>,
}

/// Builds item models, new or from a snapshot (the keyed step's builder).
#[pyclass(module = "operators._native", frozen)]
pub struct ItemModelFactory {
    shared: Arc<ItemShared>,
}

#[pymethods]
impl ItemModelFactory {
    #[new]
    #[pyo3(signature = (params, config, top_m, replica=None, popular_listed=None))]
    fn new(
        params: IsgdParams,
        config: ItemConfig,
        top_m: usize,
        replica: Option<Py<ItemVectors>>,
        popular_listed: Option<usize>,
    ) -> Self {
        let shared = ItemShared { params, config, top_m, replica, popular_listed };
        ItemModelFactory { shared: Arc::new(shared) }
    }

    #[pyo3(signature = (resume=None))]
    fn __call__(&self, resume: Option<&Bound<'_, PyAny>>) -> PyResult<ItemModel> {
        let shared = self.shared.clone();
        let Some(snapshot) = resume else {
            let listed = shared.popular_listed.map(PopularList::new);
            return Ok(ItemModel { shared, items: FxHashMap::default(), listed });
        };
        let bytes = snapshot.cast::<PyBytes>().map_err(|_| {
            Invalid::new(
                "item_model: the recovery store holds a snapshot of an older freshrec (not \
                 versioned bytes); recreate the recovery store",
            )
        })?;
        let mut r = Reader::with_header(bytes.as_bytes(), b"FRK", 1, "item shard")?;
        let _shard = r.varint()?;
        let n = r.len()?;
        let mut items = FxHashMap::default();
        items.reserve(n);
        for _ in 0..n {
            let state = ItemState::read(&mut r, &shared.params)?;
            items.insert(state.item, state);
        }
        r.end()?;
        // Not snapshotted: with growing scores the list is the top of the restored states.
        let listed = shared.popular_listed.map(|capacity| {
            let scores = items.values().map(|s| (s.item, s.popularity_log2));
            PopularList::rebuild(capacity, scores.filter(|(_, p)| p.is_finite()))
        });
        Ok(ItemModel { shared, items, listed })
    }
}

/// One shard's keyed operator.
#[pyclass(module = "operators._native")]
pub struct ItemModel {
    shared: Arc<ItemShared>,
    items: FxHashMap<Id, ItemState>,
    /// The shard's items in the global popularity ranking, if it is bounded.
    listed: Option<PopularList>,
}

/// Apply one item's ops of a batch to its state; what changed, for Redis.
pub fn apply_item(shared: &ItemShared, state: &mut ItemState, ops: &[ItemOp]) -> ItemOut {
    let (mut learned, mut covisited) = (false, false);
    let (category_before, trending_before) = (state.category, state.trending);
    let mut segments: Vec<(Id, f64)> = Vec::new();
    for op in ops {
        match op {
            ItemOp::Learn(l) => {
                state.learn(
                    &l.user_vector,
                    l.weight,
                    l.ts_s,
                    l.category,
                    &shared.params,
                    &shared.config,
                );
                let score = state.segment_hit(l.segment, l.weight, l.ts_s, &shared.config);
                match segments.iter_mut().find(|(s, _)| *s == l.segment) {
                    Some(slot) => slot.1 = score,
                    None => segments.push((l.segment, score)),
                }
                learned = true;
            }
            ItemOp::CoVisit { other, weight, ts_s } => {
                state.covisit(*other, *weight, *ts_s, &shared.config);
                covisited = true;
            }
        }
    }
    if learned {
        if let Some(replica) = &shared.replica {
            replica.get().stage_local(state.item, &state.vector);
        }
    }
    let write = learned.then(|| {
        let trend_log2 = state.trend_log2(&shared.config);
        state.trending = trend_log2.is_some();
        ItemWrite {
            version: state.version,
            vector: state.vector.clone(),
            popularity_log2: state.popularity_log2,
            trend_log2,
            untrend: trending_before && trend_log2.is_none(),
            category: state.category,
            category_changed: state.category != category_before,
            listed: true,
        }
    });
    let neighbours = covisited.then(|| {
        let top = state.neighbours.top(shared.top_m);
        let names = intern::names(top.iter().map(|(id, _)| *id));
        let named: Vec<(&str, f64)> = names.into_iter().zip(top.iter().map(|(_, s)| *s)).collect();
        (state.covisit_version, records::encode_neighbours(state.covisit_version, &named))
    });
    ItemOut { item: state.item, write, neighbours, segments }
}

impl ItemModel {
    /// Apply a batch's items of this shard; what changed of each, and the items that left
    /// the shard's popularity list.
    pub fn apply(&mut self, batches: &[&ItemShardBatch]) -> ItemsOut {
        let shared = &*self.shared;
        let mut outs = Vec::new();
        let mut evicted: Vec<Id> = Vec::new();
        for batch in batches {
            for ItemBatch { item, ops } in &batch.items {
                let state = self
                    .items
                    .entry(*item)
                    .or_insert_with(|| ItemState::new(*item, &shared.params));
                let mut out = apply_item(shared, state, ops);
                if let (Some(list), Some(write)) = (&mut self.listed, &mut out.write) {
                    let offer = list.offer(*item, write.popularity_log2);
                    write.listed = offer.listed;
                    evicted.extend(offer.evicted);
                }
                outs.push(out);
            }
        }
        let mut unlisted: Vec<(Id, u64)> = Vec::new();
        if let Some(list) = &self.listed {
            evicted.sort_unstable();
            evicted.dedup();
            for item in evicted.into_iter().filter(|i| !list.contains(*i)) {
                unlisted.push((item, self.items[&item].version));
            }
        }
        ItemsOut { outs, unlisted }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn nothing(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    (PyList::empty(py), false).into_pyobject(py)
}

#[pymethods]
impl ItemModel {
    /// Bytewax: apply the shard's batch; returns `([ItemsOut], retain)`.
    fn on_batch<'py>(&mut self, values: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyTuple>> {
        let _timer = crate::timing::time(crate::timing::Part::ItemModel);
        let py = values.py();
        let bound: Vec<Bound<'py, ItemShardBatch>> = values
            .iter()
            .map(|v| v.cast_into::<ItemShardBatch>().map_err(PyErr::from))
            .collect::<PyResult<_>>()?;
        let batches: Vec<&ItemShardBatch> = bound.iter().map(|b| b.get()).collect();
        let outs = self.apply(&batches);
        let out = PyList::empty(py);
        if !outs.outs.is_empty() || !outs.unlisted.is_empty() {
            out.append(Bound::new(py, outs)?)?;
        }
        (out, false).into_pyobject(py)
    }

    /// Versioned bytes of the shard's item states (tag `FRK`).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if self.items.is_empty() {
            return Err(PyRuntimeError::new_err("snapshot before any update"));
        }
        let mut w = Writer::with_header(b"FRK", 1);
        w.varint(0);
        w.len(self.items.len());
        // In id order, so one state gives one snapshot (hash-map order is not stable).
        let mut items: Vec<&ItemState> = self.items.values().collect();
        items.sort_unstable_by_key(|s| s.item);
        for state in items {
            state.write(&mut w);
        }
        Ok(PyBytes::new(py, &w.finish()))
    }

    /// Items never wake up on their own.
    fn notify_at(&self) -> Option<Py<PyAny>> {
        None
    }

    fn on_notify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        nothing(py)
    }

    fn on_eof<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        nothing(py)
    }

    /// Items held by this shard.
    fn __len__(&self) -> usize {
        self.items.len()
    }
}

/// Routes a batch's item work to the item shards: `(shard key, ItemShardBatch)` per shard the
/// batch touches (the `item_batches` step of the flow).
#[pyclass(module = "operators._native", frozen)]
pub struct ItemRouter {
    shards: u32,
}

#[pymethods]
impl ItemRouter {
    #[new]
    fn new(shards: i64) -> PyResult<Self> {
        ensure(shards >= 1 && shards <= i64::from(u32::MAX), || {
            format!("item_shards must be >= 1, got {shards}")
        })?;
        Ok(ItemRouter { shards: shards as u32 })
    }

    #[getter]
    fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard an item id belongs to.
    fn shard_of(&self, item_id: &str) -> u32 {
        shard_of(item_id, self.shards)
    }

    fn __call__<'py>(&self, batch: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
        let _timer = crate::timing::time(crate::timing::Part::ItemBatches);
        let py = batch.py();
        let per_item = crate::routing::group_item_ops(batch);
        let mut slots: FxHashMap<u32, usize> = FxHashMap::default();
        let mut grouped: Vec<ItemShardBatch> = Vec::new();
        for item_batch in per_item {
            let shard = shard_of(intern::name(item_batch.item), self.shards);
            let slot = *slots.entry(shard).or_insert_with(|| {
                grouped.push(ItemShardBatch { shard, items: Vec::new() });
                grouped.len() - 1
            });
            grouped[slot].items.push(item_batch);
        }
        let out = PyList::empty(py);
        for group in grouped {
            out.append((group.shard.to_string(), Bound::new(py, group)?))?;
        }
        Ok(out)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ItemModelFactory>()?;
    m.add_class::<ItemModel>()?;
    m.add_class::<ItemRouter>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("item-1", 64), shard_of("item-1", 64));
        let used: std::collections::HashSet<u32> =
            (0..2000).map(|i| shard_of(&format!("item-{i}"), 64)).collect();
        assert_eq!(used.len(), 64);
    }
}
