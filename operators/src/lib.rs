//! freshrec's native core: the stream operators of the personalization dataflow.
//!
//! One Rust module per concept, mirroring the Python modules they replaced (the Python
//! versions live on under `tests/oracles/` as reference oracles); this file only registers
//! them, the pydantic-core layout. Nothing here knows Bytewax, Kafka or Redis: the
//! `dataflows/` package wires these operators into the flow.

use pyo3::prelude::*;

pub mod adwin;
pub mod codec;
pub mod errors;
pub mod events;
pub mod feedback;
pub mod intern;
pub mod isgd;
pub mod page_hinkley;
pub mod popularity;
pub mod popularity_shift;
pub mod prequential;
pub mod recalibration;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    isgd::register(m)?;
    page_hinkley::register(m)?;
    adwin::register(m)?;
    popularity::register(m)?;
    recalibration::register(m)?;
    feedback::register(m)?;
    prequential::register(m)?;
    popularity_shift::register(m)?;
    Ok(())
}
