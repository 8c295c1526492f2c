//! Process-wide interning of item, category and segment ids: each distinct string is kept once
//! and named by a `u32` everywhere else.
//!
//! Per-user and per-item state hold these small integers instead of strings (a user's window,
//! seen set and session are lists of items), which is most of why a resident user costs a few
//! hundred bytes. Ids are process-local: snapshots and records always carry the strings.
//! Interned strings live as long as the process; their number is bounded by the catalogue
//! (user ids and event ids are never interned).

use std::sync::{LazyLock, RwLock};

use rustc_hash::FxHashMap;

/// An interned id.
pub type Id = u32;

struct Table {
    ids: FxHashMap<&'static str, Id>,
    names: Vec<&'static str>,
}

static TABLE: LazyLock<RwLock<Table>> =
    LazyLock::new(|| RwLock::new(Table { ids: FxHashMap::default(), names: Vec::new() }));

/// The id of `name`, interning it on first sight.
pub fn intern(name: &str) -> Id {
    if let Some(&id) = TABLE.read().expect("interner poisoned").ids.get(name) {
        return id;
    }
    let mut table = TABLE.write().expect("interner poisoned");
    if let Some(&id) = table.ids.get(name) {
        return id;
    }
    let id = Id::try_from(table.names.len()).expect("more than 2^32 interned ids");
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    table.names.push(leaked);
    table.ids.insert(leaked, id);
    id
}

/// The id of `name` if it was interned.
pub fn lookup(name: &str) -> Option<Id> {
    TABLE.read().expect("interner poisoned").ids.get(name).copied()
}

/// The string an id names. Panics on an id this process never handed out (a bug).
pub fn name(id: Id) -> &'static str {
    TABLE.read().expect("interner poisoned").names[id as usize]
}

/// Many names at once, under one lock.
pub fn names(ids: impl IntoIterator<Item = Id>) -> Vec<&'static str> {
    let table = TABLE.read().expect("interner poisoned");
    ids.into_iter().map(|id| table.names[id as usize]).collect()
}

/// Many interns at once (one lock when all are known).
pub fn intern_all<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Id> {
    names.into_iter().map(intern).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_string_same_id_and_back() {
        let a = intern("intern-test-a");
        let b = intern("intern-test-b");
        assert_ne!(a, b);
        assert_eq!(intern("intern-test-a"), a);
        assert_eq!(name(a), "intern-test-a");
        assert_eq!(lookup("intern-test-b"), Some(b));
        assert_eq!(lookup("intern-test-never"), None);
        assert_eq!(names([b, a]), vec!["intern-test-b", "intern-test-a"]);
    }
}
