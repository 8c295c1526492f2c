//! A worker-local, read-only replica of the item factors for the user model.
//!
//! Item vectors have one owner: the item model, which applies every item update in order and
//! writes the result to Redis. The user model needs item vectors too (the user half of an
//! ISGD step moves the user towards the item), but a dataflow is a DAG, so the owner's state
//! cannot flow back upstream. Each worker process therefore keeps this replica, which
//! `dataflows/item_replica.py` refreshes from the store's change log (only the items whose
//! factors changed, at most every `item_refresh_ms`). An item the replica has not seen yet
//! starts from the same seeded vector its owner starts from (`initial_vector`), so a new item
//! needs no round trip.
//!
//! Consequence, stated plainly: user vectors depend on how stale the replica was when the
//! user's event was processed (bounded by the refresh interval plus the item step's lag), so
//! they are not bit-for-bit reproducible across runs; everything else is.

use std::sync::RwLock;

use numpy::PyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::intern::{self, Id};
use crate::isgd::{self, IsgdParams, Kind};

#[derive(Default)]
struct Table {
    rows: FxHashMap<Id, u32>,
    data: Vec<f32>,
    /// Every item held, in the order first held (sampled negatives index into it).
    ids: Vec<Id>,
    /// Items whose owner (item model) lives in this process: their vectors come from it,
    /// never from Redis, which only ever holds what this process wrote.
    owned: FxHashSet<Id>,
    /// Vectors this process' item models computed since the last refresh (newest per item).
    staged: FxHashMap<Id, Box<[f32]>>,
}

impl Table {
    fn row(&mut self, item: Id, params: &IsgdParams) -> usize {
        if let Some(&row) = self.rows.get(&item) {
            return row as usize;
        }
        let row = self.ids.len();
        self.rows.insert(item, row as u32);
        self.ids.push(item);
        let start = self.data.len();
        self.data.resize(start + params.factors, 0.0);
        isgd::initial_vector_into(intern::name(item), Kind::Item, params, &mut self.data[start..]);
        row
    }

    fn set(&mut self, item: Id, vector: &[f32], k: usize) {
        let row = match self.rows.get(&item) {
            Some(&row) => row as usize,
            None => {
                let row = self.ids.len();
                self.rows.insert(item, row as u32);
                self.ids.push(item);
                self.data.resize((row + 1) * k, 0.0);
                row
            }
        };
        self.data[row * k..(row + 1) * k].copy_from_slice(vector);
    }
}

/// Item vectors as last pulled from Redis, shared by the user models of a process.
#[pyclass(module = "operators._native", frozen)]
pub struct ItemVectors {
    params: IsgdParams,
    table: RwLock<Table>,
}

impl ItemVectors {
    pub fn new(params: IsgdParams) -> Self {
        ItemVectors { params, table: RwLock::new(Table::default()) }
    }

    pub fn factors(&self) -> usize {
        self.params.factors
    }

    /// Copy the item's vector into `out`, starting it from its seed if it is new here.
    pub fn copy_into(&self, item: Id, out: &mut [f32]) {
        let k = self.params.factors;
        {
            let table = self.table.read().expect("replica poisoned");
            if let Some(&row) = table.rows.get(&item) {
                let at = row as usize * k;
                out.copy_from_slice(&table.data[at..at + k]);
                return;
            }
        }
        let mut table = self.table.write().expect("replica poisoned");
        let at = table.row(item, &self.params) * k;
        out.copy_from_slice(&table.data[at..at + k]);
    }

    /// The item's vector if the replica holds it (never creates one).
    pub fn get(&self, item: Id) -> Option<Vec<f32>> {
        let k = self.params.factors;
        let table = self.table.read().expect("replica poisoned");
        table
            .rows
            .get(&item)
            .map(|&row| table.data[row as usize * k..(row as usize + 1) * k].to_vec())
    }

    /// Run `f` over the held item ids (in first-held order) and their vectors, row after
    /// row (`factors` floats each), under one read lock.
    pub fn with_table<R>(&self, f: impl FnOnce(&[Id], &[f32]) -> R) -> R {
        let table = self.table.read().expect("replica poisoned");
        f(&table.ids, &table.data)
    }

    /// Row index of an item, creating its seeded vector if it is new here.
    pub fn ensure(&self, item: Id) -> usize {
        if let Some(&row) = self.table.read().expect("replica poisoned").rows.get(&item) {
            return row as usize;
        }
        self.table.write().expect("replica poisoned").row(item, &self.params)
    }

    pub fn len(&self) -> usize {
        self.table.read().expect("replica poisoned").ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An item model of this process changed `item`: the user models see it at the next
    /// refresh (as they would see any other item), without reading it back from Redis.
    pub fn stage_local(&self, item: Id, vector: &[f32]) {
        let mut table = self.table.write().expect("replica poisoned");
        table.owned.insert(item);
        table.staged.insert(item, vector.into());
    }
}

#[pymethods]
impl ItemVectors {
    #[new]
    fn py_new(params: IsgdParams) -> Self {
        ItemVectors::new(params)
    }

    /// Of the items changed in Redis, those this process does not own (to be read from it).
    fn remote(&self, item_ids: Vec<String>) -> Vec<String> {
        let table = self.table.read().expect("replica poisoned");
        item_ids
            .into_iter()
            .filter(|id| intern::lookup(id).is_none_or(|item| !table.owned.contains(&item)))
            .collect()
    }

    /// Adopt what this process' item models computed since the last refresh; how many.
    fn apply_staged(&self) -> usize {
        let k = self.params.factors;
        let mut table = self.table.write().expect("replica poisoned");
        let staged = std::mem::take(&mut table.staged);
        for (item, vector) in &staged {
            table.set(*item, vector, k);
        }
        staged.len()
    }

    /// Adopt changed items: `matrix` is their float32 vectors, row after row.
    fn apply(&self, item_ids: Vec<String>, matrix: &[u8]) -> PyResult<usize> {
        let k = self.params.factors;
        if matrix.len() != item_ids.len() * k * 4 {
            return Err(PyValueError::new_err(format!(
                "{} items need {} bytes of float32 vectors, got {}",
                item_ids.len(),
                item_ids.len() * k * 4,
                matrix.len()
            )));
        }
        let ids = intern::intern_all(item_ids.iter().map(String::as_str));
        let mut table = self.table.write().expect("replica poisoned");
        for (n, item) in ids.into_iter().enumerate() {
            let row = match table.rows.get(&item) {
                Some(&row) => row as usize,
                None => {
                    let row = table.ids.len();
                    table.rows.insert(item, row as u32);
                    table.ids.push(item);
                    table.data.resize((row + 1) * k, 0.0);
                    row
                }
            };
            let src = &matrix[n * k * 4..(n + 1) * k * 4];
            for (x, raw) in table.data[row * k..(row + 1) * k].iter_mut().zip(src.chunks_exact(4)) {
                *x = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
            }
        }
        Ok(item_ids.len())
    }

    /// The item's vector (seeded if the replica has not seen it), a copy.
    #[pyo3(name = "get")]
    fn py_get<'py>(&self, py: Python<'py>, item_id: &str) -> Bound<'py, PyArray1<f32>> {
        let mut out = vec![0.0f32; self.params.factors];
        self.copy_into(intern::intern(item_id), &mut out);
        PyArray1::from_vec(py, out)
    }

    /// Every item id held, in first-held order.
    #[getter]
    fn ids(&self) -> Vec<&'static str> {
        let table = self.table.read().expect("replica poisoned");
        intern::names(table.ids.iter().copied())
    }

    fn __len__(&self) -> usize {
        self.len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ItemVectors>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_items_start_seeded_and_changes_replace_them() {
        let params = IsgdParams::new(4, 0.05, 0.01, 0.1, 7, None, 10.0).unwrap();
        let replica = ItemVectors::new(params.clone());
        let item = intern::intern("replica-test-item");
        let mut v = [0.0f32; 4];
        replica.copy_into(item, &mut v);
        assert_eq!(v.to_vec(), isgd::initial_vector("replica-test-item", Kind::Item, &params));
        assert_eq!(replica.len(), 1);
        assert_eq!(replica.get(intern::intern("replica-never")), None);
    }
}
