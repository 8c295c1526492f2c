//! The popularity-shift model: the one global keyed operator watching the item-popularity
//! distribution of sampled interactions (`PopularityShift`: windowed Jensen-Shannon
//! divergence watched by Page-Hinkley). Input: one `PopularitySample` per batch.
//!
//! Snapshot (tag `FRS`, version 1): the `PopularityShift` state.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::codec::{Reader, Writer};
use crate::errors::Invalid;
use crate::intern::{self, Id};
use crate::popularity_shift::PopularityShift;

/// The items of a batch's sampled interactions, in order.
#[pyclass(module = "operators._native", frozen, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct PopularitySample {
    pub items: Vec<Id>,
}

#[pymethods]
impl PopularitySample {
    #[staticmethod]
    fn from_items(items: Vec<String>) -> Self {
        PopularitySample { items: intern::intern_all(items.iter().map(String::as_str)) }
    }

    /// Pickles as its item ids: it crosses processes to the worker of the global key.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let rebuild = py.get_type::<PopularitySample>().getattr("from_items")?;
        (rebuild, (intern::names(slf.get().items.iter().copied()),)).into_pyobject(py)
    }
}

/// The alarms of one batch of the popularity-shift model.
#[pyclass(module = "operators._native", frozen, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftAlarms {
    pub details: Vec<String>,
}

/// Builds the popularity-shift model, new or from a snapshot.
#[pyclass(module = "operators._native", frozen)]
pub struct PopularityShiftModelFactory {
    window: i64,
}

#[pymethods]
impl PopularityShiftModelFactory {
    #[new]
    fn new(window: i64) -> PyResult<Self> {
        PopularityShift::new(window, 10)?; // validates the window
        Ok(PopularityShiftModelFactory { window })
    }

    #[pyo3(signature = (resume=None))]
    fn __call__(&self, resume: Option<&Bound<'_, PyAny>>) -> PyResult<PopularityShiftModel> {
        let shift = match resume {
            None => PopularityShift::new(self.window, 10)?,
            Some(snapshot) => {
                let bytes = snapshot.cast::<PyBytes>().map_err(|_| {
                    Invalid::new(
                        "popularity_shift: the recovery store holds a snapshot of an older \
                         freshrec; recreate it",
                    )
                })?;
                let mut r = Reader::with_header(bytes.as_bytes(), b"FRS", 1, "popularity shift")?;
                let shift = PopularityShift::read(&mut r)?;
                r.end()?;
                shift
            }
        };
        Ok(PopularityShiftModel { shift: Some(shift) })
    }
}

/// The global popularity-shift operator.
#[pyclass(module = "operators._native")]
pub struct PopularityShiftModel {
    shift: Option<PopularityShift>,
}

#[pymethods]
impl PopularityShiftModel {
    fn on_batch<'py>(&mut self, values: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyTuple>> {
        let _timer = crate::timing::time(crate::timing::Part::PopularityShift);
        let py = values.py();
        let shift = self.shift.as_mut().ok_or_else(|| PyRuntimeError::new_err("no state"))?;
        let mut details = Vec::new();
        for value in values.iter() {
            let sample = value.cast::<PopularitySample>()?;
            for &item in &sample.get().items {
                if let Some(divergence) = shift.add(item) {
                    details.push(format!(
                        "item popularity shifted: JS divergence {divergence:.3} between windows"
                    ));
                }
            }
        }
        let out = PyList::empty(py);
        if !details.is_empty() {
            out.append(Bound::new(py, ShiftAlarms { details })?)?;
        }
        (out, false).into_pyobject(py)
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let shift = self.shift.as_ref().ok_or_else(|| PyRuntimeError::new_err("no state"))?;
        let mut w = Writer::with_header(b"FRS", 1);
        shift.write(&mut w);
        Ok(PyBytes::new(py, &w.finish()))
    }

    fn notify_at(&self) -> Option<Py<PyAny>> {
        None
    }

    fn on_notify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (PyList::empty(py), false).into_pyobject(py)
    }

    fn on_eof<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (PyList::empty(py), false).into_pyobject(py)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PopularitySample>()?;
    m.add_class::<ShiftAlarms>()?;
    m.add_class::<PopularityShiftModelFactory>()?;
    m.add_class::<PopularityShiftModel>()?;
    Ok(())
}
