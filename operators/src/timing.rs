//! Where the native core's time goes, for `benchmarks/bench_pipeline.py`'s profile: each keyed
//! model and routing step adds the wall time of its calls to a process-wide counter, only
//! while `enable_timing(True)` is in force (two clock reads per call; off, one relaxed load).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The timed parts of the native core.
#[derive(Clone, Copy)]
#[repr(usize)]
pub enum Part {
    KeyByUser,
    UserModel,
    ItemBatches,
    ItemModel,
    FeedbackModel,
    PopularityShift,
    SideOutputs,
    CollectWrites,
    WritePlan,
}

const NAMES: [&str; 9] = [
    "key_by_user",
    "user_model",
    "item_batches",
    "item_model",
    "feedback_model",
    "popularity_shift",
    "side_outputs",
    "collect_writes",
    "write_plan",
];

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
static CALLS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

/// Times a call when timing is on; adds its duration to `part` when dropped.
pub struct Timer {
    part: Part,
    start: Option<Instant>,
}

pub fn time(part: Part) -> Timer {
    let start = ENABLED.load(Ordering::Relaxed).then(Instant::now);
    Timer { part, start }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let i = self.part as usize;
            NANOS[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Turn the counters on or off (and reset them when turning on).
#[pyfunction]
pub fn enable_timing(on: bool) {
    if on {
        for (n, c) in NANOS.iter().zip(&CALLS) {
            n.store(0, Ordering::Relaxed);
            c.store(0, Ordering::Relaxed);
        }
    }
    ENABLED.store(on, Ordering::Relaxed);
}

/// Part → (seconds spent in its calls, calls) since timing was enabled.
#[pyfunction]
pub fn native_time(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    for (i, name) in NAMES.iter().enumerate() {
        let seconds = NANOS[i].load(Ordering::Relaxed) as f64 / 1e9;
        out.set_item(*name, (seconds, CALLS[i].load(Ordering::Relaxed)))?;
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(enable_timing, m)?)?;
    m.add_function(wrap_pyfunction!(native_time, m)?)?;
    Ok(())
}
