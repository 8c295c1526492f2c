//! The item model: the per-item keyed operator of the dataflow.
//!
//! One `ItemModel` per item holds its `ItemState` and applies a batch's `ItemBatch`es in
//! order (ISGD item halves, popularity and trend, co-visits, popularity per context segment),
//! answering with one `ItemOut`. It speaks the stateful-operator protocol the dataflow's
//! engine calls by name (`on_batch`, `snapshot`, `notify_at`, `on_notify`, `on_eof`; Bytewax's
//! `StatefulBatchLogic`, to which `dataflows/steps.py` registers it) without knowing the
//! engine: each call is one crossing for the whole batch of the key.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::intern;
use crate::isgd::IsgdParams;
use crate::item_state::{ItemConfig, ItemState};
use crate::item_vectors::ItemVectors;
use crate::messages::{ItemBatch, ItemOp, ItemOut, ItemWrite};
use crate::records;

/// Hyperparameters every item model of a process shares.
pub struct ItemShared {
    pub params: IsgdParams,
    pub config: ItemConfig,
    /// Co-visited neighbours stored per item.
    pub top_m: usize,
    /// This process' replica of item vectors for its user models, if it has one.
    pub replica: Option<Py<ItemVectors>>,
}

/// Builds item models, new or from a snapshot (the keyed step's builder).
#[pyclass(module = "operators._native", frozen)]
pub struct ItemModelFactory {
    shared: Arc<ItemShared>,
}

#[pymethods]
impl ItemModelFactory {
    #[new]
    #[pyo3(signature = (params, config, top_m, replica=None))]
    fn new(
        params: IsgdParams,
        config: ItemConfig,
        top_m: usize,
        replica: Option<Py<ItemVectors>>,
    ) -> Self {
        ItemModelFactory { shared: Arc::new(ItemShared { params, config, top_m, replica }) }
    }

    #[pyo3(signature = (resume=None))]
    fn __call__(&self, resume: Option<&[u8]>) -> PyResult<ItemModel> {
        let state = match resume {
            None => None,
            Some(bytes) => Some(ItemState::from_bytes(bytes, &self.shared.params)?),
        };
        Ok(ItemModel { shared: self.shared.clone(), state })
    }
}

/// One item's keyed operator.
#[pyclass(module = "operators._native")]
pub struct ItemModel {
    shared: Arc<ItemShared>,
    state: Option<ItemState>,
}

impl ItemModel {
    /// Apply a batch of the item's messages; what changed, for Redis.
    pub fn apply(&mut self, batches: &[&ItemBatch]) -> Option<ItemOut> {
        let first = batches.first()?;
        let shared = &*self.shared;
        let state = self.state.get_or_insert_with(|| ItemState::new(first.item, &shared.params));
        let (mut learned, mut covisited) = (false, false);
        let (category_before, trending_before) = (state.category, state.trending);
        let mut segments: Vec<(intern::Id, f64)> = Vec::new();
        for batch in batches {
            for op in &batch.ops {
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
            }
        });
        let neighbours = covisited.then(|| {
            let top = state.neighbours.top(shared.top_m);
            let names = intern::names(top.iter().map(|(id, _)| *id));
            let named: Vec<(&str, f64)> =
                names.into_iter().zip(top.iter().map(|(_, s)| *s)).collect();
            (state.covisit_version, records::encode_neighbours(state.covisit_version, &named))
        });
        Some(ItemOut { item: state.item, write, neighbours, segments })
    }
}

fn nothing(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    (PyList::empty(py), false).into_pyobject(py)
}

#[pymethods]
impl ItemModel {
    /// Bytewax: apply the key's batch; returns `([ItemOut], retain)`.
    fn on_batch<'py>(&mut self, values: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyTuple>> {
        let _timer = crate::timing::time(crate::timing::Part::ItemModel);
        let py = values.py();
        let bound: Vec<Bound<'py, ItemBatch>> = values
            .iter()
            .map(|v| v.cast_into::<ItemBatch>().map_err(PyErr::from))
            .collect::<PyResult<_>>()?;
        let batches: Vec<&ItemBatch> = bound.iter().map(|b| b.get()).collect();
        let out = PyList::empty(py);
        if let Some(changed) = self.apply(&batches) {
            out.append(Bound::new(py, changed)?)?;
        }
        (out, false).into_pyobject(py)
    }

    /// Versioned bytes of the item's state (tag `FRI`).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        match &self.state {
            Some(state) => Ok(PyBytes::new(py, &state.to_bytes())),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err("snapshot before any update")),
        }
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
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ItemModelFactory>()?;
    m.add_class::<ItemModel>()?;
    Ok(())
}
