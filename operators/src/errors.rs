//! Errors of the native core, mapped to Python exceptions in one place.
//!
//! Bad hyperparameters and unreadable snapshots are `ValueError`s with the same messages the
//! Python operators raised, so callers (and tests) see no difference.

use pyo3::PyErr;
use pyo3::exceptions::PyValueError;

/// A hyperparameter, argument or stored snapshot that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Invalid(message.into())
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Invalid> for PyErr {
    fn from(err: Invalid) -> PyErr {
        PyValueError::new_err(err.0)
    }
}

/// `Err(Invalid)` unless `ok`, with the message built only when it is needed.
pub fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok { Ok(()) } else { Err(Invalid(message())) }
}

/// A float as Python's `repr` writes it ("2.0", "0.0001", "1e-05", "inf"), so messages read
/// exactly as the Python operators' did.
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Shortest round-trip digits, then Python's choice of notation (repr: fixed for
    // 1e-4 <= |x| < 1e16, scientific with a signed two-digit exponent otherwise).
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("exponent is an integer");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() { first.to_string() } else { format!("{first}.{rest}") };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_as_python_repr() {
        for (x, text) in [
            (2.0, "2.0"),
            (0.05, "0.05"),
            (1.5, "1.5"),
            (-3.25, "-3.25"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e16, "1e+16"),
            (1.5e17, "1.5e+17"),
            (123456789.0, "123456789.0"),
            (1e15, "1000000000000000.0"),
            (f64::INFINITY, "inf"),
            (-0.0, "-0.0"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(py_float(x), text, "{x}");
        }
    }
}
