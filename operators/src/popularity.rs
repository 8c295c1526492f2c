//! Exponentially decayed item popularity, kept in log space so it never overflows.
//!
//! Forward decay (Cormode et al. 2009): an event of weight w at time t adds w * 2^(t/h) to the
//! item's score, h being the half-life. Scores of different items stay comparable without
//! touching every item as time passes, and keeping log2 of the score turns the ever-growing
//! 2^(t/h) into a plain sum: log2(score) grows by about 1 per half-life. Ranking by the stored
//! value equals ranking by the popularity decayed to any common "now".

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// log2 score of an item nobody touched yet.
pub const NO_POPULARITY: f64 = f64::NEG_INFINITY;

/// `2.0 ** x` as Python computes it, with C's pow(): exp2 can differ in the last bit, and LLVM
/// rewrites pow(2, x) into exp2(x) unless the base is hidden from it.
#[inline]
fn pow2(x: f64) -> f64 {
    std::hint::black_box(2.0f64).powf(x)
}

/// The item's log2 forward-decayed score after one more event (weight > 0, half-life > 0).
pub fn add_event(log2_score: f64, weight: f64, ts_s: f64, half_life_s: f64) -> f64 {
    let term = ts_s / half_life_s + weight.log2();
    if log2_score == NO_POPULARITY {
        return term;
    }
    let (high, low) = if term > log2_score { (term, log2_score) } else { (log2_score, term) };
    high + (1.0 + pow2(low - high)).log2()
}

/// The popularity as a plain number: the sum of weights decayed to `now_s`.
pub fn decayed_value(log2_score: f64, now_s: f64, half_life_s: f64) -> f64 {
    if log2_score == NO_POPULARITY {
        return 0.0;
    }
    pow2(log2_score - now_s / half_life_s)
}

#[pyfunction(name = "add_event")]
fn py_add_event(log2_score: f64, weight: f64, ts_s: f64, half_life_s: f64) -> PyResult<f64> {
    if !(weight > 0.0) {
        return Err(PyValueError::new_err(format!(
            "weight must be > 0, got {}",
            crate::errors::py_float(weight)
        )));
    }
    if !(half_life_s > 0.0) {
        return Err(PyValueError::new_err(format!(
            "half_life_s must be > 0, got {}",
            crate::errors::py_float(half_life_s)
        )));
    }
    Ok(add_event(log2_score, weight, ts_s, half_life_s))
}

#[pyfunction(name = "decayed_value")]
fn py_decayed_value(log2_score: f64, now_s: f64, half_life_s: f64) -> f64 {
    decayed_value(log2_score, now_s, half_life_s)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_add_event, m)?)?;
    m.add_function(wrap_pyfunction!(py_decayed_value, m)?)?;
    m.add("NO_POPULARITY", NO_POPULARITY)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_is_its_log2_weight_plus_time_over_half_life() {
        assert_eq!(add_event(NO_POPULARITY, 4.0, 100.0, 50.0), 4.0);
    }

    #[test]
    fn two_equal_events_double_the_score() {
        let once = add_event(NO_POPULARITY, 1.0, 0.0, 10.0);
        assert_eq!(add_event(once, 1.0, 0.0, 10.0), 1.0);
    }

    #[test]
    fn value_halves_per_half_life() {
        let score = add_event(NO_POPULARITY, 8.0, 0.0, 10.0);
        assert_eq!(decayed_value(score, 10.0, 10.0), 4.0);
        assert_eq!(decayed_value(NO_POPULARITY, 10.0, 10.0), 0.0);
    }
}
