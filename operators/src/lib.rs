//! freshrec's native core: the stream operators of the personalization dataflow.
//!
//! One Rust module per concept, mirroring the Python modules they replaced; this file only
//! registers them (the pydantic-core layout). Nothing here knows Bytewax, Kafka or Redis.

use pyo3::prelude::*;

pub mod popularity;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    popularity::register(m)?;
    Ok(())
}
