//! freshrec's native core: the stream operators of the personalization dataflow.
//!
//! One Rust module per concept, mirroring the Python modules they replaced (the Python
//! versions live on under `tests/oracles/` as reference oracles); this file only registers
//! them, the pydantic-core layout. Nothing here knows Bytewax, Kafka or Redis: the
//! `dataflows/` package wires these operators into the flow.

use pyo3::prelude::*;

pub mod codec;
pub mod errors;
pub mod events;
pub mod intern;
pub mod isgd;
pub mod popularity;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    events::register(m)?;
    isgd::register(m)?;
    popularity::register(m)?;
    Ok(())
}
