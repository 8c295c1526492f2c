//! freshrec's native core: the stream operators of the personalization dataflow.
//!
//! One Rust module per concept, mirroring the Python modules they replaced (the Python
//! versions live on under `tests/oracles/` as reference oracles); this file only registers
//! them, the pydantic-core layout. Nothing here knows Bytewax, Kafka or Redis: the
//! `dataflows/` package wires these operators into the flow.

// `!(x > 0.0)` is how a check that must also refuse NaN reads; the lint's `partial_cmp`
// spelling hides that.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use pyo3::prelude::*;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod adwin;
pub mod codec;
pub mod covisitation;
pub mod dedup;
pub mod enrich;
pub mod errors;
pub mod events;
pub mod feedback;
pub mod feedback_model;
pub mod intern;
pub mod isgd;
pub mod item_model;
pub mod item_neighbours;
pub mod item_state;
pub mod item_vectors;
pub mod live_quality;
pub mod merchandising;
pub mod messages;
pub mod page_hinkley;
pub mod popular_list;
pub mod popularity;
pub mod popularity_shift;
pub mod popularity_shift_model;
pub mod prequential;
pub mod pseudonym;
pub mod ranking;
pub mod recalibration;
pub mod records;
pub mod resp;
pub mod routing;
pub mod sessions;
pub mod similar;
pub mod stage_costs;
pub mod timing;
pub mod user_model;
pub mod user_state;
pub mod user_window;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    adwin::register(m)?;
    covisitation::register(m)?;
    dedup::register(m)?;
    enrich::register(m)?;
    events::register(m)?;
    feedback::register(m)?;
    feedback_model::register(m)?;
    isgd::register(m)?;
    item_model::register(m)?;
    item_state::register(m)?;
    item_vectors::register(m)?;
    live_quality::register(m)?;
    merchandising::register(m)?;
    messages::register(m)?;
    page_hinkley::register(m)?;
    popularity::register(m)?;
    popularity_shift::register(m)?;
    popularity_shift_model::register(m)?;
    prequential::register(m)?;
    pseudonym::register(m)?;
    ranking::register(m)?;
    recalibration::register(m)?;
    resp::register(m)?;
    routing::register(m)?;
    stage_costs::register(m)?;
    timing::register(m)?;
    user_model::register(m)?;
    user_state::register(m)?;
    Ok(())
}
