//! The feedback model: the keyed operator per (model version, context segment).
//!
//! Counts impressions, clicks and conversions of served recommendations in tumbling windows of
//! event time (`FeedbackWindows`) and watches the click-through rate with ADWIN
//! (`GlobalRecalibration`, alarms on drops only): the click/impression stream's mean is the
//! click share CTR / (1 + CTR), monotone in the CTR, so a drop in it is a drop in CTR. One
//! `FeedbackOut` per key and batch carries the windows it touched and its alarms.
//!
//! Snapshot (tag `FRF`, version 1): model, segment, windows, drift policy.

use std::sync::Arc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::codec::{Reader, Writer};
use crate::errors::Invalid;
use crate::events::EventType;
use crate::feedback::{FeedbackWindows, FeedbackWindowsConfig, WindowCounts};
use crate::intern::{self, Id};
use crate::recalibration::{GlobalRecalibration, GlobalRecalibrationConfig};

/// One batch's feedback events of one (model, segment), in event order.
#[pyclass(module = "operators._native", frozen, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackBatch {
    pub model: Id,
    pub segment: Id,
    pub hits: Vec<(EventType, f64)>,
}

impl FeedbackBatch {
    const TAG: &'static [u8; 3] = b"FFB";

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_header(Self::TAG, 1);
        w.str(intern::name(self.model));
        w.str(intern::name(self.segment));
        w.len(self.hits.len());
        for (t, ts) in &self.hits {
            w.u8(*t as u8);
            w.f64(*ts);
        }
        w.finish()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self, Invalid> {
        let mut r = Reader::with_header(data, Self::TAG, 1, "feedback batch")?;
        let model = intern::intern(r.str()?);
        let segment = intern::intern(r.str()?);
        let n = r.len()?;
        let mut hits = Vec::with_capacity(n);
        for _ in 0..n {
            let t = EventType::from_index(r.u8()?)
                .ok_or_else(|| Invalid::new("feedback batch is malformed"))?;
            hits.push((t, r.f64()?));
        }
        r.end()?;
        Ok(FeedbackBatch { model, segment, hits })
    }
}

#[pymethods]
impl FeedbackBatch {
    #[staticmethod]
    fn from_bytes_py(data: &[u8]) -> PyResult<Self> {
        Ok(FeedbackBatch::from_bytes(data)?)
    }

    /// Pickles as its bytes: it crosses processes when its key lives on another worker.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let rebuild = py.get_type::<FeedbackBatch>().getattr("from_bytes_py")?;
        (rebuild, (PyBytes::new(py, &slf.get().to_bytes()),)).into_pyobject(py)
    }
}

/// What one batch changed of one (model, segment): touched windows and CTR alarms.
#[pyclass(module = "operators._native", frozen, skip_from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackOut {
    pub model: Id,
    pub segment: Id,
    pub windows: Vec<WindowCounts>,
    pub alarms: Vec<String>,
}

struct FeedbackShared {
    windows: FeedbackWindowsConfig,
    ctr_drift: GlobalRecalibrationConfig,
}

/// Builds feedback models, new or from a snapshot.
#[pyclass(module = "operators._native", frozen)]
pub struct FeedbackModelFactory {
    shared: Arc<FeedbackShared>,
}

#[pymethods]
impl FeedbackModelFactory {
    #[new]
    fn new(window_s: f64, keep: i64) -> PyResult<Self> {
        Ok(FeedbackModelFactory {
            shared: Arc::new(FeedbackShared {
                windows: FeedbackWindowsConfig::new(window_s, keep)?,
                // ADWIN on the click share, alarms on drops only.
                ctr_drift: GlobalRecalibrationConfig::default(),
            }),
        })
    }

    #[pyo3(signature = (resume=None))]
    fn __call__(&self, resume: Option<&Bound<'_, PyAny>>) -> PyResult<FeedbackModel> {
        let shared = self.shared.clone();
        let Some(snapshot) = resume else {
            let ctr = GlobalRecalibration::new(&shared.ctr_drift);
            return Ok(FeedbackModel { shared, key: None, windows: FeedbackWindows::new(), ctr });
        };
        let bytes = snapshot.cast::<PyBytes>().map_err(|_| {
            Invalid::new(
                "feedback: the recovery store holds a snapshot of an older freshrec; recreate it",
            )
        })?;
        let mut r = Reader::with_header(bytes.as_bytes(), b"FRF", 1, "feedback state")?;
        let key = (intern::intern(r.str()?), intern::intern(r.str()?));
        let windows = FeedbackWindows::read(&mut r)?;
        let ctr = GlobalRecalibration::read(&mut r)?;
        r.end()?;
        Ok(FeedbackModel { shared, key: Some(key), windows, ctr })
    }
}

/// One (model, segment)'s keyed operator.
#[pyclass(module = "operators._native")]
pub struct FeedbackModel {
    shared: Arc<FeedbackShared>,
    key: Option<(Id, Id)>,
    windows: FeedbackWindows,
    ctr: GlobalRecalibration,
}

#[pymethods]
impl FeedbackModel {
    fn on_batch<'py>(&mut self, values: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyTuple>> {
        let _timer = crate::timing::time(crate::timing::Part::FeedbackModel);
        let py = values.py();
        let mut touched: Vec<WindowCounts> = Vec::new();
        let mut alarms = Vec::new();
        for value in values.iter() {
            let batch = value.cast::<FeedbackBatch>()?;
            let batch = batch.get();
            let (model, segment) = *self.key.get_or_insert((batch.model, batch.segment));
            for &(event_type, ts_s) in &batch.hits {
                if let Some(counts) = self.windows.add(&self.shared.windows, event_type, ts_s)? {
                    match touched.iter_mut().find(|w| w.start_s == counts.start_s) {
                        Some(w) => *w = counts,
                        None => touched.push(counts),
                    }
                }
                if matches!(event_type, EventType::RecImpression | EventType::RecClick) {
                    let click = if event_type == EventType::RecClick { 1.0 } else { 0.0 };
                    if let Some(warmup) = self.ctr.update(&self.shared.ctr_drift, click)? {
                        alarms.push(format!(
                            "CTR of {} in {} dropped: click share {:.3} -> {:.3}",
                            intern::name(model),
                            intern::name(segment),
                            warmup.mean_before,
                            warmup.mean_after
                        ));
                    }
                }
            }
        }
        let out = PyList::empty(py);
        if let Some((model, segment)) = self.key {
            if !touched.is_empty() || !alarms.is_empty() {
                out.append(Bound::new(
                    py,
                    FeedbackOut { model, segment, windows: touched, alarms },
                )?)?;
            }
        }
        (out, false).into_pyobject(py)
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let Some((model, segment)) = self.key else {
            return Err(PyRuntimeError::new_err("snapshot before any feedback"));
        };
        let mut w = Writer::with_header(b"FRF", 1);
        w.str(intern::name(model));
        w.str(intern::name(segment));
        self.windows.write(&mut w);
        self.ctr.write(&mut w);
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
    m.add_class::<FeedbackBatch>()?;
    m.add_class::<FeedbackOut>()?;
    m.add_class::<FeedbackModelFactory>()?;
    m.add_class::<FeedbackModel>()?;
    Ok(())
}
