//! The user model: the per-user keyed operator of the dataflow, the whole per-event path.
//!
//! One `UserModel` per user receives the raw Kafka messages of a batch and, in one call:
//! decodes and validates each (dead letters for the bad ones, with the reasons of
//! `freshrec/events.py`), enriches it with its context, drops repeated event ids, applies it
//! to the user's state (session, window, ISGD user half, drift policy, live sampled HR@10)
//! and answers with ONE `UserDelta`: the user's fresh record, what item owners must do, the
//! feedback hits, samples, alarms and dead letters. A user idle for `idle_ttl_s` (wall clock)
//! leaves memory: their state is parked in Redis and restored by the next event.
//!
//! A tombstone (`"type": "erase"`, from `DELETE /v1/users/{id}`) drops the user's state
//! ([`erase_user`]): what the batch produced about them before it is withdrawn, the key's
//! state is discarded and its parked state forgotten, and the sink deletes their Redis keys.
//! The tombstone sits in the user's partition after their earlier events, so a replay from
//! an older snapshot (after a crash) or a restored parked state meets it again; events after
//! it start a new user.
//!
//! It speaks the stateful-operator protocol the dataflow's engine calls by name (`on_batch`,
//! `snapshot`, `notify_at`, `on_notify`, `on_eof`: Bytewax's `StatefulBatchLogic`, to which
//! `dataflows/steps.py` registers it) without knowing the engine. Redis reads (a parked user,
//! the item replica's refresh) happen through Python callbacks the dataflow hands in.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDateTime, PyList, PyTuple, PyTzInfo};
use rustc_hash::FxHashSet;

use crate::dedup::id_hash;
use crate::enrich::{DEFAULT_CACHE_SIZE, Enricher};
use crate::errors::Invalid;
use crate::events::{self, DecodedEvent, Message};
use crate::feedback::model_of;
use crate::intern;
use crate::isgd::IsgdParams;
use crate::item_vectors::ItemVectors;
use crate::live_quality::LiveQuality;
use crate::messages::{Alarm, ArchiveRow, DeadLetter, FeedbackHit, Holdout, ItemOp, UserDelta};
use crate::pseudonym::user_pseudonym;
use crate::user_state::{UserConfig, UserState};

/// Users whose state was parked in Redis (by hash of the id), so a new key costs a Redis
/// read only when there is something to read. Loaded from the store's index when the worker
/// starts and kept up to date as users are parked here; a user parked by this process comes
/// back to it (keys are routed by hash), and a restarted or rescaled worker reloads it.
#[pyclass(module = "operators._native", frozen)]
#[derive(Default)]
pub struct ParkedUsers {
    hashes: Mutex<FxHashSet<u64>>,
}

impl ParkedUsers {
    pub fn contains(&self, user_id: &str) -> bool {
        self.hashes.lock().expect("parked index poisoned").contains(&id_hash(user_id))
    }
    pub fn insert(&self, user_id: &str) {
        self.hashes.lock().expect("parked index poisoned").insert(id_hash(user_id));
    }
    /// Forget a user (erased): their next event must not look for a parked state.
    pub fn remove(&self, user_id: &str) {
        self.hashes.lock().expect("parked index poisoned").remove(&id_hash(user_id));
    }
}

#[pymethods]
impl ParkedUsers {
    #[new]
    fn new() -> Self {
        ParkedUsers::default()
    }

    fn add(&self, user_ids: Vec<String>) {
        let mut hashes = self.hashes.lock().expect("parked index poisoned");
        hashes.extend(user_ids.iter().map(|u| id_hash(u)));
    }

    fn __contains__(&self, user_id: &str) -> bool {
        self.contains(user_id)
    }

    fn __len__(&self) -> usize {
        self.hashes.lock().expect("parked index poisoned").len()
    }
}

/// What every user model of a process shares.
pub struct UserShared {
    pub params: IsgdParams,
    pub config: UserConfig,
    pub replica: Py<ItemVectors>,
    pub quality: Option<Py<LiveQuality>>,
    pub parked: Py<ParkedUsers>,
    /// `() -> None`: pull changed item factors into the replica (reads Redis).
    pub refresh_items: Py<PyAny>,
    pub refresh_interval_s: f64,
    next_refresh: Mutex<Option<Instant>>,
    /// `(user_id) -> bytes | None`: a parked user's state (reads Redis).
    pub fetch_parked: Py<PyAny>,
    pub idle_ttl_s: f64,
    pub max_future_skew_s: f64,
    pub archive: bool,
}

impl UserShared {
    fn maybe_refresh(&self, py: Python<'_>) -> PyResult<()> {
        let now = Instant::now();
        {
            let mut next = self.next_refresh.lock().expect("refresh clock poisoned");
            if matches!(*next, Some(due) if now < due) {
                return Ok(());
            }
            *next = Some(now + std::time::Duration::from_secs_f64(self.refresh_interval_s));
        }
        self.refresh_items.call0(py)?;
        Ok(())
    }
}

/// Builds user models, new or from a snapshot (the keyed step's builder).
#[pyclass(module = "operators._native", frozen)]
pub struct UserModelFactory {
    shared: Arc<UserShared>,
}

#[pymethods]
impl UserModelFactory {
    #[new]
    #[pyo3(signature = (params, config, *, replica, quality, parked, refresh_items,
                        refresh_interval_s, fetch_parked, idle_ttl_s, max_future_skew_s,
                        archive=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        params: IsgdParams,
        config: PyRef<'_, crate::user_state::PyUserConfig>,
        replica: Py<ItemVectors>,
        quality: Option<Py<LiveQuality>>,
        parked: Py<ParkedUsers>,
        refresh_items: Py<PyAny>,
        refresh_interval_s: f64,
        fetch_parked: Py<PyAny>,
        idle_ttl_s: f64,
        max_future_skew_s: f64,
        archive: bool,
    ) -> Self {
        UserModelFactory {
            shared: Arc::new(UserShared {
                params,
                config: config.inner.clone(),
                replica,
                quality,
                parked,
                refresh_items,
                refresh_interval_s,
                next_refresh: Mutex::new(None),
                fetch_parked,
                idle_ttl_s,
                max_future_skew_s,
                archive,
            }),
        }
    }

    #[pyo3(signature = (resume=None))]
    fn __call__(&self, resume: Option<&Bound<'_, PyAny>>) -> PyResult<UserModel> {
        let state = match resume {
            None => None,
            Some(snapshot) => {
                let bytes = snapshot.cast::<PyBytes>().map_err(|_| {
                    Invalid::new(
                        "user_model: the recovery store holds a snapshot of an older freshrec \
                         (not versioned bytes); recreate the recovery store",
                    )
                })?;
                Some(UserState::from_bytes(
                    bytes.as_bytes(),
                    &self.shared.params,
                    &self.shared.config,
                )?)
            }
        };
        Ok(UserModel { shared: self.shared.clone(), state, last_active_s: wall_clock_s() })
    }
}

thread_local! {
    /// Each worker thread enriches with its own caches: a miss calls the Python rules, which
    /// may hand the GIL to another thread, so one shared cache would need a lock held across
    /// Python (a deadlock) or a borrow that another thread could meet (a panic).
    static ENRICHER: RefCell<Option<Enricher>> = const { RefCell::new(None) };
}

fn with_enricher<R>(py: Python<'_>, f: impl FnOnce(&mut Enricher) -> PyResult<R>) -> PyResult<R> {
    ENRICHER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Enricher::new(py, DEFAULT_CACHE_SIZE)?);
        }
        f(slot.as_mut().expect("just set"))
    })
}

fn wall_clock_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One user's keyed operator.
#[pyclass(module = "operators._native")]
pub struct UserModel {
    shared: Arc<UserShared>,
    state: Option<UserState>,
    last_active_s: f64,
}

/// A Kafka message as the source hands it: anything with `value`, `key`, `topic`,
/// `partition`, `offset` and `timestamp`; a broker error is anything with `err` and `msg`.
fn dead_letter_of_error(msg: &Bound<'_, PyAny>) -> PyResult<DeadLetter> {
    let err = msg.getattr("err")?.str()?.to_string();
    let inner = msg.getattr("msg")?;
    let mut letter = message_letter(&inner, format!("kafka error: {err}"))?;
    letter.payload = bytes_attr(&inner, "value")?.unwrap_or_default();
    Ok(letter)
}

fn bytes_attr(msg: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<Vec<u8>>> {
    let value = msg.getattr(name)?;
    if value.is_none() {
        return Ok(None);
    }
    Ok(Some(value.cast::<PyBytes>()?.as_bytes().to_vec()))
}

fn message_letter(msg: &Bound<'_, PyAny>, reason: String) -> PyResult<DeadLetter> {
    let topic: Option<String> = msg.getattr("topic")?.extract()?;
    let partition: Option<i64> = msg.getattr("partition")?.extract()?;
    let offset: Option<i64> = msg.getattr("offset")?.extract()?;
    Ok(DeadLetter {
        payload: Vec::new(),
        reason,
        source_topic: topic.unwrap_or_default(),
        source_partition: partition.unwrap_or(-1),
        source_offset: offset.unwrap_or(-1),
        key: bytes_attr(msg, "key")?,
    })
}

/// When the message reached the broker (None when the broker gave no time).
fn arrival_s(msg: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let stamp = msg.getattr("timestamp")?;
    if stamp.is_none() {
        return Ok(None);
    }
    let (kind, ms): (i64, i64) = stamp.extract()?;
    Ok(if kind != 0 { Some(ms as f64 / 1000.0) } else { None })
}

impl UserModel {
    fn state_for(&mut self, py: Python<'_>, user_id: &str) -> PyResult<&mut UserState> {
        if self.state.is_none() {
            let shared = &*self.shared;
            let mut restored = None;
            if shared.parked.get().contains(user_id) {
                let blob = shared.fetch_parked.call1(py, (user_id,))?;
                if !blob.is_none(py) {
                    let bytes = blob.cast_bound::<PyBytes>(py)?;
                    restored = Some(UserState::from_bytes(
                        bytes.as_bytes(),
                        &shared.params,
                        &shared.config,
                    )?);
                }
            }
            self.state = Some(
                restored.unwrap_or_else(|| UserState::new(user_id, &shared.params, &shared.config)),
            );
        }
        Ok(self.state.as_mut().expect("just set"))
    }

    /// Apply one valid event; returns the event time if it was applied (not a duplicate).
    fn apply(
        &mut self,
        py: Python<'_>,
        event: &DecodedEvent,
        payload: &[u8],
        arrival: Option<f64>,
        delta: &mut UserDelta,
        item_buf: &mut Vec<f32>,
    ) -> PyResult<Option<f64>> {
        let shared = self.shared.clone();
        let state = self.state_for(py, &event.user_id)?;
        let ts_s = event.ts_s;
        let duplicate = state.is_duplicate(id_hash(&event.event_id), ts_s, &shared.config);
        let needs_context = !duplicate || shared.archive;
        let context = if needs_context {
            let ctx = event.context.as_ref();
            Some(with_enricher(py, |enricher| {
                enricher.enrich(
                    py,
                    ctx.and_then(|c| c.user_agent.as_deref()),
                    ctx.and_then(|c| c.device.as_deref()),
                    ctx.and_then(|c| c.country.as_deref()),
                    ctx.and_then(|c| c.region.as_deref()),
                    event.ts_us,
                    event.utc_offset_s,
                )
            })?)
        } else {
            None
        };
        if shared.archive {
            let ctx = context.as_ref().expect("enriched for the archive");
            delta.archive.push(ArchiveRow {
                user_id: event.user_id.clone(),
                payload: payload.to_vec(),
                device_class: ctx.device_class.name(),
                tod_bucket: ctx.tod_bucket.name(),
                weekday: ctx.weekday,
                local_hour: ctx.local_hour,
                segment: intern::name(ctx.segment),
            });
        }
        if duplicate {
            delta.duplicates += 1;
            return Ok(None);
        }
        let context = context.expect("enriched");
        if let Some(at) = arrival {
            delta.arrival_s = Some(delta.arrival_s.map_or(at, |a| a.max(at)));
        }
        let replica = shared.replica.get();
        let quality = shared.quality.as_ref().map(|q| q.get());
        let mut ops = std::mem::take(delta.item_ops.get_mut().expect("delta poisoned"));
        let learned = learn_event(
            state,
            event,
            context.segment,
            replica,
            quality,
            &shared.params,
            &shared.config,
            item_buf,
            delta,
            &mut ops,
        );
        *delta.item_ops.get_mut().expect("delta poisoned") = ops;
        learned?;
        Ok(Some(ts_s))
    }
}

/// What a valid event that is not a duplicate does to its user, once enriched: counted as
/// applied, the feedback hit of a served recommendation, then either the observation of a
/// non-interaction or the interaction's learning (the item from the replica; the sampled
/// test-then-train HR@10 before learning, with its holdout; the ISGD user half, session and
/// window, with the item work queued in `ops`; the drift check). The product's `UserModel`
/// and the benchmark's floor loop (`stage_costs.rs`) both run exactly this.
#[allow(clippy::too_many_arguments)]
pub(crate) fn learn_event(
    state: &mut UserState,
    event: &DecodedEvent,
    segment: intern::Id,
    replica: &ItemVectors,
    quality: Option<&LiveQuality>,
    params: &IsgdParams,
    config: &UserConfig,
    item_buf: &mut Vec<f32>,
    delta: &mut UserDelta,
    ops: &mut Vec<(intern::Id, ItemOp)>,
) -> Result<(), Invalid> {
    let ts_s = event.ts_s;
    delta.applied += 1;
    state.segment = segment;
    if let Some(recommendation_id) = &event.recommendation_id {
        delta.feedback.push(FeedbackHit {
            model: intern::intern(model_of(recommendation_id)),
            segment,
            event_type: event.event_type,
            ts_s,
        });
    }
    if !event.event_type.is_interaction() {
        state.observe(event.event_type, ts_s);
        return Ok(());
    }
    let item = intern::intern(&event.item_id);
    item_buf.resize(params.factors, 0.0);
    replica.copy_into(item, item_buf);
    let mut boost = 1.0;
    if let Some(quality) = quality {
        if quality.sampled(&event.event_id) {
            delta.holdouts.push(Holdout {
                key: event.event_id.clone(),
                user_vector: state.vector.clone(),
                item,
                user: user_pseudonym(&event.user_id),
            });
            if let Some(warmup) = quality.evaluate(&event.event_id, &state.vector, item, replica) {
                delta.global_alarms += 1;
                delta.alarms.push(Alarm {
                    kind: "global drift",
                    scope: "global",
                    user: None,
                    detail: format!(
                        "HR@10 {:.3} -> {:.3}; learning rate x{} for {} events",
                        warmup.mean_before,
                        warmup.mean_after,
                        warmup.learning_rate_multiplier,
                        warmup.warmup_events
                    ),
                });
            }
        }
        boost = quality.learning_rate_multiplier();
    }
    let category = event.category_id.as_deref().map(intern::intern);
    state.learn(
        item,
        item_buf,
        event.event_type,
        ts_s,
        category,
        segment,
        boost,
        params,
        config,
        ops,
    );
    if let Some(decision) = state.check_drift(|id| replica.get(id), params, config)? {
        delta.user_alarms += 1;
        // The alarm names the user by pseudonym only: alarms are shown on the dashboard.
        let user = user_pseudonym(&state.user_id);
        delta.alarms.push(Alarm {
            kind: "user drift",
            scope: "user",
            detail: format!(
                "user #{user}: refit from {} recent items, learning rate x{}",
                decision.refit_items, decision.learning_rate_multiplier
            ),
            user: Some(user),
        });
    }
    Ok(())
}

/// A tombstone for `user_id`: their state leaves the key (and the parked index, so their next
/// event starts a new user instead of asking Redis), and what `delta` holds about them from
/// this batch's earlier events is withdrawn: their record, archive rows, holdout samples and
/// per-user alarms. Item updates, co-visits and feedback counts stay: they went into
/// aggregates over many users. The sink deletes the user's keys by `delta.erasures`.
pub fn erase_user(
    state: &mut Option<UserState>,
    delta: &mut UserDelta,
    user_id: &str,
    erasure_id: &str,
    parked: &ParkedUsers,
) {
    *state = None;
    parked.remove(user_id);
    delta.user_id = user_id.into();
    delta.erasures.push(erasure_id.to_owned());
    delta.record = None;
    delta.arrival_s = None;
    delta.archive.clear();
    delta.holdouts.clear();
    delta.alarms.retain(|a| a.user.is_none());
}

fn emit<'py>(
    py: Python<'py>,
    delta: Option<UserDelta>,
    discard: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let out = PyList::empty(py);
    if let Some(delta) = delta {
        out.append(Bound::new(py, delta)?)?;
    }
    (out, discard).into_pyobject(py)
}

#[pymethods]
impl UserModel {
    /// Bytewax: the key's messages of this batch, as `(user id, message)` pairs from
    /// `key_by_user`; returns `([UserDelta], discard)`.
    fn on_batch<'py>(&mut self, values: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyTuple>> {
        let _timer = crate::timing::time(crate::timing::Part::UserModel);
        let py = values.py();
        let now_s = wall_clock_s();
        self.last_active_s = now_s;
        self.shared.maybe_refresh(py)?;
        let now_us = (now_s * 1e6) as i64;
        let mut delta = UserDelta::default();
        let mut duplicates_before = self.state.as_ref().map_or(0, |s| s.duplicates);
        let mut last_ts = self.state.as_ref().map(|s| s.window.last_ts_s);
        // Events applied before this batch's last tombstone are not the record's to show.
        let mut applied_before = 0;
        let mut item_buf = Vec::new();
        for value in values.iter() {
            let pair = value.cast::<PyTuple>()?;
            let key = pair.get_item(0)?;
            let key: &str = key.cast::<pyo3::types::PyString>()?.to_str()?;
            let msg = pair.get_item(1)?;
            let value = match msg.getattr(pyo3::intern!(py, "value")) {
                Ok(value) => value,
                Err(_) => {
                    delta.dead_letters.push(dead_letter_of_error(&msg)?);
                    continue;
                }
            };
            let payload: &[u8] =
                if value.is_none() { b"" } else { value.cast::<PyBytes>()?.as_bytes() };
            match events::decode(py, payload, now_us, self.shared.max_future_skew_s)? {
                Err(reason) => {
                    let mut letter = message_letter(&msg, reason)?;
                    letter.payload = payload.to_vec();
                    delta.dead_letters.push(letter);
                }
                Ok(message) if message.user_id() != key => {
                    let reason = format!(
                        "$.user_id: Expected the message key `{key}`: events are keyed by their \
                         user_id, which keeps each user's events in order"
                    );
                    let mut letter = message_letter(&msg, reason)?;
                    letter.payload = payload.to_vec();
                    delta.dead_letters.push(letter);
                }
                Ok(Message::Erase(erase)) => {
                    let parked = self.shared.parked.get();
                    erase_user(&mut self.state, &mut delta, key, &erase.erasure_id, parked);
                    applied_before = delta.applied;
                    duplicates_before = 0;
                    last_ts = None;
                }
                Ok(Message::Event(event)) => {
                    if delta.user_id.is_empty() {
                        delta.user_id = event.user_id.as_str().into();
                    }
                    let arrival = arrival_s(&msg)?;
                    if let Some(ts) =
                        self.apply(py, &event, payload, arrival, &mut delta, &mut item_buf)?
                    {
                        last_ts = Some(ts);
                    }
                }
            }
        }
        let Some(state) = &self.state else {
            // No valid event ever reached this key, or the user was erased: keep nothing.
            let keep = !delta.is_empty();
            return emit(py, keep.then_some(delta), true);
        };
        if delta.user_id.is_empty() {
            delta.user_id = state.user_id.clone();
        }
        if delta.applied > applied_before || state.duplicates != duplicates_before {
            delta.record = Some(state.record(last_ts.unwrap_or(f64::NEG_INFINITY), wall_clock_s()));
        }
        if delta.is_empty() && delta.applied == 0 {
            return emit(py, None, false);
        }
        emit(py, Some(delta), false)
    }

    /// Versioned bytes of the user's state (tag `FRU`).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        match &self.state {
            Some(state) => Ok(PyBytes::new(py, &state.to_bytes())),
            None => Err(PyRuntimeError::new_err("snapshot before any event")),
        }
    }

    /// Wake up when the user has been idle for `idle_ttl_s`.
    fn notify_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDateTime>> {
        let utc = PyTzInfo::utc(py)?;
        PyDateTime::from_timestamp(
            py,
            self.last_active_s + self.shared.idle_ttl_s,
            Some(&utc.to_owned()),
        )
    }

    /// Idle long enough: hand the state to Redis (parked) and leave memory.
    fn on_notify<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let idle = wall_clock_s() >= self.last_active_s + self.shared.idle_ttl_s;
        match &self.state {
            Some(state) if idle => {
                self.shared.parked.get().insert(&state.user_id);
                let delta = UserDelta {
                    user_id: state.user_id.clone(),
                    parked: Some(state.to_bytes()),
                    ..UserDelta::default()
                };
                emit(py, Some(delta), true)
            }
            _ => emit(py, None, false),
        }
    }

    fn on_eof<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        emit(py, None, false)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ParkedUsers>()?;
    m.add_class::<UserModelFactory>()?;
    m.add_class::<UserModel>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;
    use crate::messages::{FeedbackHit, ItemOp};

    const USER: &str = "u-erased";

    fn config() -> UserConfig {
        UserConfig::new(50, 500, 86_400.0, 10_000, 1800.0, 5, None).expect("valid config")
    }

    /// A user with `views` views of distinct items, and the item work they caused.
    fn user_with(views: usize, params: &IsgdParams, config: &UserConfig) -> UserState {
        let mut state = UserState::new(USER, params, config);
        let item_vector = vec![0.1; params.factors];
        for n in 0..views {
            state.learn(
                intern::intern(&format!("erase-item-{n}")),
                &item_vector,
                EventType::View,
                1_700_000_000.0 + n as f64,
                None,
                intern::intern(""),
                1.0,
                params,
                config,
                &mut Vec::new(),
            );
        }
        state
    }

    /// A delta as the batch's events before the tombstone left it.
    fn delta_before_the_tombstone(state: &UserState) -> UserDelta {
        let alarm = |scope: &'static str, user: Option<String>| Alarm {
            kind: if user.is_some() { "user drift" } else { "global drift" },
            scope,
            detail: String::new(),
            user,
        };
        let item = intern::intern("erase-item-0");
        UserDelta {
            user_id: USER.into(),
            record: Some(state.record(1_700_000_002.0, 1_800_000_000.0)),
            arrival_s: Some(1_800_000_000.0),
            item_ops: Mutex::new(vec![(
                item,
                ItemOp::CoVisit { other: item, weight: 1.0, ts_s: 1.0 },
            )]),
            feedback: vec![FeedbackHit {
                model: intern::intern("isgd"),
                segment: intern::intern(""),
                event_type: EventType::RecClick,
                ts_s: 1.0,
            }],
            holdouts: vec![Holdout {
                key: "e-1".into(),
                user_vector: state.vector.clone(),
                item,
                user: user_pseudonym(USER),
            }],
            alarms: vec![alarm("user", Some(user_pseudonym(USER))), alarm("global", None)],
            archive: vec![ArchiveRow {
                user_id: USER.into(),
                payload: b"{}".to_vec(),
                device_class: "desktop",
                tod_bucket: "morning",
                weekday: 1,
                local_hour: 9,
                segment: "",
            }],
            applied: 3,
            ..UserDelta::default()
        }
    }

    #[test]
    fn a_tombstone_drops_the_state_and_withdraws_what_the_batch_said_of_the_user() {
        let (params, config) = (IsgdParams::default(), config());
        let state = user_with(3, &params, &config);
        let mut delta = delta_before_the_tombstone(&state);
        let parked = ParkedUsers::default();
        parked.insert(USER);
        let mut slot = Some(state);

        erase_user(&mut slot, &mut delta, USER, "erasure-1", &parked);

        assert!(slot.is_none(), "the key's state is discarded");
        assert!(!parked.contains(USER), "the next event must not restore a parked state");
        assert_eq!(delta.erasures, vec!["erasure-1".to_string()]);
        assert!(delta.record.is_none() && delta.arrival_s.is_none());
        assert!(delta.archive.is_empty() && delta.holdouts.is_empty());
        let kinds: Vec<_> = delta.alarms.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, ["global drift"], "per-user alarms go, global ones stay");
        // Aggregates keep the user's contributions: item updates, co-visits, feedback counts.
        assert_eq!(delta.item_ops.lock().unwrap().len(), 1);
        assert_eq!(delta.feedback.len(), 1);
        assert!(!delta.is_empty(), "the sink must still hear of the erasure");
    }

    #[test]
    fn events_after_a_tombstone_start_a_new_user() {
        let (params, config) = (IsgdParams::default(), config());
        let mut slot = Some(user_with(5, &params, &config));
        let mut delta = UserDelta::default();
        erase_user(&mut slot, &mut delta, USER, "erasure-2", &ParkedUsers::default());
        // What `state_for` builds for the next event of the key: nothing parked, a new user.
        let fresh = user_with(1, &params, &config);
        assert_eq!(fresh.version, 1);
        assert_eq!(fresh.window.recent_items(), vec![intern::intern("erase-item-0")]);
        let (version, _) = fresh.record(0.0, 0.0);
        assert_eq!(version, 1, "the new user's record starts over");
    }

    #[test]
    fn a_state_restored_from_an_older_snapshot_meets_the_tombstone_again() {
        let (params, config) = (IsgdParams::default(), config());
        // A checkpoint (or a parked state) taken before the tombstone...
        let snapshot = user_with(4, &params, &config).to_bytes();
        let mut first = UserDelta::default();
        erase_user(&mut None, &mut first, USER, "erasure-3", &ParkedUsers::default());
        // ...is restored after a crash; the replay from its offsets reaches the tombstone,
        // which sits after the user's earlier events in their partition.
        let restored = UserState::from_bytes(&snapshot, &params, &config).expect("snapshot");
        assert_eq!(restored.version, 4);
        let mut slot = Some(restored);
        let mut again = UserDelta::default();
        erase_user(&mut slot, &mut again, USER, "erasure-3", &ParkedUsers::default());
        assert!(slot.is_none());
        assert_eq!(again.erasures, first.erasures, "an erasure repeated is the same erasure");
    }
}
