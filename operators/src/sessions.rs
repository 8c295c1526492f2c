//! A user's current session: consecutive events with gaps shorter than `gap_s`.
//!
//! Sessions are per-user state with the rest of the user (Bytewax's `SessionWindower` never
//! frees per-key state, upstream issue #577), cut by *event* time so replays match live runs.
//! Items are interned ids (`crate::intern`).

use crate::codec::{Reader, Writer};
use crate::errors::Invalid;
use crate::intern::{self, Id};

/// Distinct items a session remembers (the oldest leave first).
pub const SESSION_MAX_ITEMS: usize = 50;

/// The current (or last) session of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// 1 for the user's first session, then counting up; 0 before any event.
    pub session_no: u32,
    pub start_ts_s: f64,
    pub last_ts_s: f64,
    pub event_count: u32,
    /// Distinct items of the session, in first-seen order (bounded).
    pub items: Vec<Id>,
}

impl Default for Session {
    /// No session yet.
    fn default() -> Self {
        Session {
            session_no: 0,
            start_ts_s: f64::NEG_INFINITY,
            last_ts_s: f64::NEG_INFINITY,
            event_count: 0,
            items: Vec::new(),
        }
    }
}

impl Session {
    /// Whether an event at `ts_s` would start a new session.
    #[inline]
    pub fn starts_new(&self, ts_s: f64, gap_s: f64) -> bool {
        self.event_count == 0 || ts_s - self.last_ts_s > gap_s
    }

    /// Advance by one more event at `ts_s` (a new session if the gap was too long).
    ///
    /// Events slightly out of order (`ts_s` before `last_ts_s`) join the current session.
    pub fn advance(&mut self, item: Id, ts_s: f64, gap_s: f64, max_items: usize) {
        if self.starts_new(ts_s, gap_s) {
            self.session_no += 1;
            self.start_ts_s = ts_s;
            self.last_ts_s = ts_s;
            self.event_count = 1;
            self.items.clear();
            self.items.push(item);
            return;
        }
        if !self.items.contains(&item) {
            self.items.push(item);
            if self.items.len() > max_items {
                let drop = self.items.len() - max_items;
                self.items.drain(..drop);
            }
        }
        self.start_ts_s = self.start_ts_s.min(ts_s);
        self.last_ts_s = self.last_ts_s.max(ts_s);
        self.event_count += 1;
    }

    pub fn duration_s(&self) -> f64 {
        self.last_ts_s - self.start_ts_s
    }

    pub fn write(&self, w: &mut Writer) {
        w.varint(u64::from(self.session_no));
        w.f64(self.start_ts_s);
        w.f64(self.last_ts_s);
        w.varint(u64::from(self.event_count));
        w.len(self.items.len());
        for name in intern::names(self.items.iter().copied()) {
            w.str(name);
        }
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let session_no = r.varint()? as u32;
        let start_ts_s = r.f64()?;
        let last_ts_s = r.f64()?;
        let event_count = r.varint()? as u32;
        let n = r.len()?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(intern::intern(r.str()?));
        }
        Ok(Session { session_no, start_ts_s, last_ts_s, event_count, items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_cut_sessions_and_items_stay_distinct_and_bounded() {
        let mut s = Session::default();
        s.advance(1, 0.0, 10.0, 3);
        s.advance(2, 5.0, 10.0, 3);
        s.advance(1, 6.0, 10.0, 3);
        assert_eq!((s.session_no, s.event_count, s.items.clone()), (1, 3, vec![1, 2]));
        s.advance(3, 4.0, 10.0, 3); // out of order joins, start stays the min
        s.advance(4, 7.0, 10.0, 3);
        assert_eq!(s.items, vec![2, 3, 4]);
        assert_eq!(s.start_ts_s, 0.0);
        s.advance(5, 18.0, 10.0, 3);
        assert_eq!((s.session_no, s.event_count, s.items.clone()), (2, 1, vec![5]));
        assert_eq!((s.start_ts_s, s.last_ts_s), (18.0, 18.0));
    }
}
