//! Pseudonyms of user ids: what may name a user where their id must not appear.
//!
//! `user_pseudonym(id)` is 16 hex digits of BLAKE2b-64 over `"freshrec-user:" + id`, as
//! `hashlib.blake2b(b"freshrec-user:" + id.encode(), digest_size=8).hexdigest()` gives it. The
//! dashboard's drift alarms name users by it, the holdout and alarm stream entries carry it (so
//! an erasure finds and deletes them without the id being stored), and the archive's erasure
//! ledger lists erased users by it. A pseudonym, not an anonymisation: whoever holds an id can
//! compute its pseudonym and recognise it.

use blake2::Blake2bVar;
use blake2::digest::{Update, VariableOutput};
use pyo3::prelude::*;

const DOMAIN: &[u8] = b"freshrec-user:";

/// The user's pseudonym: 16 lowercase hex digits.
pub fn user_pseudonym(user_id: &str) -> String {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid BLAKE2b output size");
    hasher.update(DOMAIN);
    hasher.update(user_id.as_bytes());
    let mut digest = [0u8; 8];
    hasher.finalize_variable(&mut digest).expect("the buffer has the output size");
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The user's pseudonym (16 hex digits), for dashboards, logs and the erasure ledger.
#[pyfunction(name = "user_pseudonym")]
fn py_user_pseudonym(user_id: &str) -> String {
    user_pseudonym(user_id)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_user_pseudonym, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_distinct_and_hex() {
        // hashlib.blake2b(b"freshrec-user:u-42", digest_size=8).hexdigest()
        let p = user_pseudonym("u-42");
        assert_eq!(p, "06c8887c92864d6d");
        assert_ne!(p, user_pseudonym("u-43"));
        assert_ne!(user_pseudonym(""), user_pseudonym(" "));
    }
}
