//! Incremental matrix factorization for positive-only feedback (ISGD).
//!
//! Vinagre, Jorge and Gama (2014), "Fast incremental matrix factorization for recommendation
//! with positive-only feedback", UMAP 2014, Algorithm 1: every observed (user, item) pair is a
//! positive with target 1; one SGD step per event moves the user and the item vector towards
//! each other, with L2 regularisation:
//!
//! ```text
//! err = 1 - <A_u, B_i>
//! A_u <- A_u + eta * (err * B_i - lambda * A_u)
//! B_i <- B_i + eta * (err * A_u - lambda * B_i)
//! ```
//!
//! The two halves are separate functions so the dataflow runs them in different keyed steps
//! (the user half where the user's state lives, the item half where the item's state lives);
//! the offline harness runs them back to back, so both use the same maths. `weight` scales the
//! step by the strength of the signal (a purchase says more than a view). New vectors are
//! drawn from the bytes of SHAKE128(seed, kind, id), so every process that meets a new item
//! starts from the *same* vector without talking (bit for bit what `hashlib` gives Python).
//!
//! Arithmetic is float32 element-wise, as numpy did it; dot products are summed in float64
//! and rounded to float32 (numpy's BLAS sums in float32 in an order of its own, so the two
//! agree to float32 rounding, not bit for bit).

use numpy::{PyArray1, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rustc_hash::FxHashMap;
use sha3::Shake128;
use sha3::digest::{ExtendableOutput, Update, XofReader};

use crate::errors::{Invalid, ensure, py_float};
use crate::events::EventType;

/// Default strength of each event type (multiplies the learning rate).
pub const DEFAULT_EVENT_WEIGHTS: [(&str, f64); 5] = [
    ("view", 1.0),
    ("rec_click", 1.0),
    ("add_to_cart", 2.0),
    ("favourite", 2.0),
    ("purchase", 3.0),
];

/// Whose vector a seed draws: users and items of the same id start apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Item,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Item => "item",
        }
    }
    fn from_name(name: &str) -> Result<Kind, Invalid> {
        match name {
            "user" => Ok(Kind::User),
            "item" => Ok(Kind::Item),
            other => Err(Invalid(format!("kind must be 'user' or 'item', got {other:?}"))),
        }
    }
}

/// Hyperparameters of ISGD, named as in the paper where it has a name.
#[pyclass(module = "operators._native", frozen, eq, from_py_object)]
#[derive(Debug, Clone, PartialEq)]
pub struct IsgdParams {
    #[pyo3(get)]
    pub factors: usize,
    /// eta
    #[pyo3(get)]
    pub learn_rate: f64,
    /// lambda
    #[pyo3(get)]
    pub regularization: f64,
    #[pyo3(get)]
    pub init_std: f64,
    #[pyo3(get)]
    pub seed: i64,
    /// Vectors are rescaled to at most this length: with a target of 1, a longer vector only
    /// means a step overshot, and one overshoot must not grow into inf/NaN.
    #[pyo3(get)]
    pub max_norm: f64,
    /// Weight of each schema event type (index: `EventType as usize`); 1.0 when unnamed.
    type_weights: [f64; 6],
    /// Every named weight in the order given (also names outside the schema, e.g. the raw
    /// behaviours of a dataset in the offline harness).
    named_weights: Vec<(String, f64)>,
}

impl IsgdParams {
    pub fn new(
        factors: usize,
        learn_rate: f64,
        regularization: f64,
        init_std: f64,
        seed: i64,
        event_weights: Option<Vec<(String, f64)>>,
        max_norm: f64,
    ) -> Result<Self, Invalid> {
        let named_weights = event_weights.unwrap_or_else(|| {
            DEFAULT_EVENT_WEIGHTS.iter().map(|(n, w)| ((*n).to_string(), *w)).collect()
        });
        let numbers = [learn_rate, regularization, init_std, max_norm];
        ensure(
            numbers.iter().chain(named_weights.iter().map(|(_, w)| w)).all(|x| x.is_finite()),
            || "hyperparameters and event weights must be finite".into(),
        )?;
        ensure(max_norm > 0.0, || format!("max_norm must be > 0, got {}", py_float(max_norm)))?;
        ensure(factors >= 1, || format!("factors must be >= 1, got {factors}"))?;
        ensure(0.0 < learn_rate && learn_rate < 1.0, || {
            format!("learn_rate must be in (0, 1), got {}", py_float(learn_rate))
        })?;
        ensure(regularization >= 0.0, || {
            format!("regularization must be >= 0, got {}", py_float(regularization))
        })?;
        ensure(init_std > 0.0, || format!("init_std must be > 0, got {}", py_float(init_std)))?;
        ensure(named_weights.iter().all(|(_, w)| *w > 0.0), || "event weights must be > 0".into())?;
        let mut type_weights = [1.0; 6];
        for (name, weight) in &named_weights {
            if let Some(t) = EventType::from_name(name) {
                type_weights[t as usize] = *weight;
            }
        }
        Ok(IsgdParams {
            factors,
            learn_rate,
            regularization,
            init_std,
            seed,
            max_norm,
            type_weights,
            named_weights,
        })
    }

    /// Step multiplier of an event type.
    #[inline]
    pub fn weight(&self, event_type: EventType) -> f64 {
        self.type_weights[event_type as usize]
    }

    /// Step multiplier of an event type by name; unknown types count as a view would with
    /// default weights (1.0).
    pub fn weight_of_name(&self, name: &str) -> f64 {
        self.named_weights.iter().find(|(n, _)| n == name).map_or(1.0, |(_, w)| *w)
    }
}

impl Default for IsgdParams {
    fn default() -> Self {
        IsgdParams::new(32, 0.05, 0.01, 0.1, 42, None, 10.0).expect("defaults are valid")
    }
}

#[pymethods]
impl IsgdParams {
    #[new]
    #[pyo3(signature = (factors=32, learn_rate=0.05, regularization=0.01, init_std=0.1, seed=42,
                        event_weights=None, max_norm=10.0))]
    fn py_new(
        factors: i64,
        learn_rate: f64,
        regularization: f64,
        init_std: f64,
        seed: i64,
        event_weights: Option<Bound<'_, PyDict>>,
        max_norm: f64,
    ) -> PyResult<Self> {
        if factors < 1 {
            return Err(PyValueError::new_err(format!("factors must be >= 1, got {factors}")));
        }
        let weights = match event_weights {
            None => None,
            Some(dict) => {
                let mut out = Vec::with_capacity(dict.len());
                for (k, v) in dict.iter() {
                    out.push((k.extract::<String>()?, v.extract::<f64>()?));
                }
                Some(out)
            }
        };
        Ok(IsgdParams::new(
            factors as usize,
            learn_rate,
            regularization,
            init_std,
            seed,
            weights,
            max_norm,
        )?)
    }

    /// Every named event weight (a copy).
    #[getter]
    fn event_weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, weight) in &self.named_weights {
            dict.set_item(name, weight)?;
        }
        Ok(dict)
    }

    /// Step multiplier of an event type; unknown types count as a view (1.0).
    fn weight_of(&self, event_type: &str) -> f64 {
        self.weight_of_name(event_type)
    }

    fn __repr__(&self) -> String {
        format!(
            "IsgdParams(factors={}, learn_rate={}, regularization={}, init_std={}, seed={}, \
             max_norm={})",
            self.factors,
            py_float(self.learn_rate),
            py_float(self.regularization),
            py_float(self.init_std),
            self.seed,
            py_float(self.max_norm)
        )
    }
}

/// Write the deterministic starting vector of a user or item into `out` (`factors` long).
///
/// Uniform on ±init_std·√3 (variance init_std²), from the little-endian u16 words of
/// SHAKE128(f"{seed}\x1f{kind}\x1f{id}").
pub fn initial_vector_into(entity_id: &str, kind: Kind, params: &IsgdParams, out: &mut [f32]) {
    let mut shake = Shake128::default();
    shake.update(params.seed.to_string().as_bytes());
    shake.update(b"\x1f");
    shake.update(kind.name().as_bytes());
    shake.update(b"\x1f");
    shake.update(entity_id.as_bytes());
    let mut reader = shake.finalize_xof();
    let mut raw = vec![0u8; 2 * out.len()];
    reader.read(&mut raw);
    let step = (2.0f64 / 65535.0) as f32;
    let scale = (params.init_std * 3.0f64.powf(0.5)) as f32;
    for (x, word) in out.iter_mut().zip(raw.chunks_exact(2)) {
        let unit = f32::from(u16::from_le_bytes([word[0], word[1]])) * step - 1.0f32;
        *x = unit * scale;
    }
}

/// The deterministic starting vector of a user or item.
pub fn initial_vector(entity_id: &str, kind: Kind, params: &IsgdParams) -> Vec<f32> {
    let mut out = vec![0.0f32; params.factors];
    initial_vector_into(entity_id, kind, params, &mut out);
    out
}

/// `<a, b>` of two float32 vectors, summed in float64 and rounded to float32.
///
/// Eight partial sums: a single float64 running sum is a chain of dependent adds (4 cycles
/// each) that no compiler may reorder, and the sampled HR@10 alone takes 99 dot products per
/// sampled event. Every product of two float32 is exact in float64 and the sum keeps ~29
/// bits more than float32, so the order changes the rounded result only on a float32
/// rounding boundary.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a8, b8) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let (a_tail, b_tail) = (a8.remainder(), b8.remainder());
    let mut lanes = [0.0f64; 8];
    for (x, y) in a8.zip(b8) {
        for j in 0..8 {
            lanes[j] += f64::from(x[j]) * f64::from(y[j]);
        }
    }
    let mut tail = 0.0f64;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += f64::from(*x) * f64::from(*y);
    }
    let sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + tail;
    sum as f32
}

#[inline]
fn step(target: &mut [f32], other: &[f32], weight: f64, params: &IsgdParams) -> f64 {
    let err = 1.0 - f64::from(dot(target, other));
    // Step size eta*weight stays below 1 for sane weights; clip the error so one adversarial
    // pair cannot blow a vector up (|err| is 1 at init, small after training).
    let err = err.clamp(-4.0, 4.0);
    let eta = (params.learn_rate * weight) as f32;
    let err32 = err as f32;
    let reg = params.regularization as f32;
    for (t, o) in target.iter_mut().zip(other) {
        *t += eta * (err32 * *o - reg * *t);
    }
    limit_norm(target, params.max_norm);
    err
}

/// Apply the user half of one ISGD step in place; return the error before the step.
pub fn user_step(user: &mut [f32], item: &[f32], weight: f64, params: &IsgdParams) -> f64 {
    step(user, item, weight, params)
}

/// Apply the item half of one ISGD step in place; return the error before the step.
pub fn item_step(item: &mut [f32], user: &[f32], weight: f64, params: &IsgdParams) -> f64 {
    step(item, user, weight, params)
}

fn limit_norm(vec: &mut [f32], max_norm: f64) {
    let squared = f64::from(dot(vec, vec));
    if !(squared <= max_norm * max_norm) {
        // also catches NaN
        if squared.is_finite() && squared > 0.0 {
            let scale = (max_norm / squared.sqrt()) as f32;
            vec.iter_mut().for_each(|x| *x *= scale);
        } else {
            // overflowed: restart the vector small rather than propagate inf/NaN
            vec.iter_mut().for_each(|x| *x = 0.0);
        }
    }
}

// --- the offline harness's sequential model --------------------------------------------------

/// Sequential ISGD over a stream: what the offline harness runs, with the flow's two halves.
#[pyclass(module = "operators._native")]
pub struct IncrementalMF {
    params: IsgdParams,
    users: FxHashMap<String, Vec<f32>>,
    items: FxHashMap<String, Vec<f32>>,
}

impl IncrementalMF {
    pub fn learn_pair(&mut self, user_id: &str, item_id: &str, weight: f64) -> f64 {
        let params = &self.params;
        let user = self
            .users
            .entry(user_id.to_owned())
            .or_insert_with(|| initial_vector(user_id, Kind::User, params));
        let item = self
            .items
            .entry(item_id.to_owned())
            .or_insert_with(|| initial_vector(item_id, Kind::Item, params));
        let user_before = user.clone();
        let err = user_step(user, item, weight, params);
        // Both halves use the vectors as they were before the event, as the live flow does
        // (its item step receives the user vector the user step started from).
        item_step(item, &user_before, weight, params);
        err
    }
}

#[pymethods]
impl IncrementalMF {
    #[new]
    fn py_new(params: IsgdParams) -> Self {
        IncrementalMF { params, users: FxHashMap::default(), items: FxHashMap::default() }
    }

    /// One ISGD step on a positive (user, item) pair; returns the error before it.
    #[pyo3(signature = (user_id, item_id, weight=1.0))]
    fn learn(&mut self, user_id: &str, item_id: &str, weight: f64) -> f64 {
        self.learn_pair(user_id, item_id, weight)
    }

    /// Predicted preference of the user for each item (0 for unknown ones).
    fn score(&self, user_id: &str, item_ids: Vec<String>) -> Vec<f64> {
        match self.users.get(user_id) {
            None => vec![0.0; item_ids.len()],
            Some(user) => item_ids
                .iter()
                .map(|i| self.items.get(i).map_or(0.0, |item| f64::from(dot(user, item))))
                .collect(),
        }
    }

    /// The user's vector (a copy), or None.
    fn user_vector<'py>(
        &self,
        py: Python<'py>,
        user_id: &str,
    ) -> Option<Bound<'py, PyArray1<f32>>> {
        self.users.get(user_id).map(|v| PyArray1::from_slice(py, v))
    }

    /// The item's vector (a copy), or None.
    fn item_vector<'py>(
        &self,
        py: Python<'py>,
        item_id: &str,
    ) -> Option<Bound<'py, PyArray1<f32>>> {
        self.items.get(item_id).map(|v| PyArray1::from_slice(py, v))
    }
}

// --- Python functions ----------------------------------------------------------------------

fn check_len(name: &str, len: usize, params: &IsgdParams) -> PyResult<()> {
    if len != params.factors {
        return Err(PyValueError::new_err(format!(
            "{name} has {len} factors, the params say {}",
            params.factors
        )));
    }
    Ok(())
}

/// The deterministic starting vector of a new user (`kind="user"`) or item.
#[pyfunction(name = "initial_vector")]
fn py_initial_vector<'py>(
    py: Python<'py>,
    entity_id: &str,
    kind: &str,
    params: &IsgdParams,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let kind = Kind::from_name(kind)?;
    Ok(PyArray1::from_vec(py, initial_vector(entity_id, kind, params)))
}

/// Apply the user half of one ISGD step in place; return the error before the step.
#[pyfunction(name = "user_step")]
fn py_user_step(
    mut user_vec: PyReadwriteArray1<'_, f32>,
    item_vec: PyReadonlyArray1<'_, f32>,
    weight: f64,
    params: &IsgdParams,
) -> PyResult<f64> {
    let user = user_vec.as_slice_mut().map_err(|e| PyValueError::new_err(e.to_string()))?;
    let item = item_vec.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?;
    check_len("user_vec", user.len(), params)?;
    check_len("item_vec", item.len(), params)?;
    Ok(user_step(user, item, weight, params))
}

/// Apply the item half of one ISGD step in place; return the error before the step.
#[pyfunction(name = "item_step")]
fn py_item_step(
    mut item_vec: PyReadwriteArray1<'_, f32>,
    user_vec: PyReadonlyArray1<'_, f32>,
    weight: f64,
    params: &IsgdParams,
) -> PyResult<f64> {
    let item = item_vec.as_slice_mut().map_err(|e| PyValueError::new_err(e.to_string()))?;
    let user = user_vec.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?;
    check_len("item_vec", item.len(), params)?;
    check_len("user_vec", user.len(), params)?;
    Ok(item_step(item, user, weight, params))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<IsgdParams>()?;
    m.add_class::<IncrementalMF>()?;
    m.add_function(wrap_pyfunction!(py_initial_vector, m)?)?;
    m.add_function(wrap_pyfunction!(py_user_step, m)?)?;
    m.add_function(wrap_pyfunction!(py_item_step, m)?)?;
    let weights = PyDict::new(m.py());
    for (name, weight) in DEFAULT_EVENT_WEIGHTS {
        weights.set_item(name, weight)?;
    }
    m.add("DEFAULT_EVENT_WEIGHTS", weights)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_vectors_are_seeded_and_bounded() {
        let p = IsgdParams::default();
        let a = initial_vector("item-1", Kind::Item, &p);
        assert_eq!(a, initial_vector("item-1", Kind::Item, &p));
        assert_ne!(a, initial_vector("item-1", Kind::User, &p));
        let bound = (0.1 * 3f64.sqrt()) as f32 * 1.0001;
        assert!(a.iter().all(|x| x.abs() <= bound));
    }

    #[test]
    fn a_step_moves_the_pair_towards_a_dot_of_one() {
        let p = IsgdParams::default();
        let mut u = initial_vector("u", Kind::User, &p);
        let mut i = initial_vector("i", Kind::Item, &p);
        let first = 1.0 - f64::from(dot(&u, &i));
        for _ in 0..200 {
            let before = u.clone();
            user_step(&mut u, &i, 1.0, &p);
            item_step(&mut i, &before, 1.0, &p);
        }
        let last = 1.0 - f64::from(dot(&u, &i));
        assert!(last.abs() < first.abs() && last.abs() < 0.1, "{first} -> {last}");
    }

    #[test]
    fn norms_are_limited_and_overflow_restarts_at_zero() {
        let p = IsgdParams::new(2, 0.5, 0.0, 0.1, 1, None, 1.0).unwrap();
        let mut v = vec![3.0f32, 4.0];
        limit_norm(&mut v, p.max_norm);
        assert!((f64::from(dot(&v, &v)) - 1.0).abs() < 1e-6);
        let mut bad = vec![f32::NAN, 1.0];
        limit_norm(&mut bad, 1.0);
        assert_eq!(bad, vec![0.0, 0.0]);
    }

    #[test]
    fn bad_hyperparameters_say_why() {
        let err = IsgdParams::new(32, 1.5, 0.01, 0.1, 42, None, 10.0).unwrap_err();
        assert_eq!(err.0, "learn_rate must be in (0, 1), got 1.5");
        let err = IsgdParams::new(32, 0.05, 0.01, 0.1, 42, Some(vec![("view".into(), 0.0)]), 10.0)
            .unwrap_err();
        assert_eq!(err.0, "event weights must be > 0");
        let err = IsgdParams::new(32, f64::NAN, 0.01, 0.1, 42, None, 10.0).unwrap_err();
        assert_eq!(err.0, "hyperparameters and event weights must be finite");
    }

    #[test]
    fn weights_by_type_and_by_name() {
        let p = IsgdParams::default();
        assert_eq!(p.weight(EventType::Purchase), 3.0);
        assert_eq!(p.weight(EventType::RecImpression), 1.0);
        assert_eq!(p.weight_of_name("pv"), 1.0);
    }
}
