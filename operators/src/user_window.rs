//! A user's recent history: rolling window of interactions, bounded seen set, type counts.
//!
//! Serving uses the window to explain ("because you viewed X") and the seen set to exclude
//! what the user already has. Both are bounded so a heavy user costs no more than a light one.
//! Items are interned ids; a window entry is 16 bytes.

use std::collections::VecDeque;

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure};
use crate::events::EventType;
use crate::intern::{self, Id};

/// Lengths of the window and of the seen list (from the settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowConfig {
    pub window: usize,
    pub seen_max: usize,
}

impl WindowConfig {
    pub fn new(window: i64, seen_max: i64) -> Result<Self, Invalid> {
        ensure(window >= 1, || format!("window must be >= 1, got {window}"))?;
        ensure(seen_max >= window, || {
            format!("seen_max ({seen_max}) must be >= window ({window})")
        })?;
        Ok(WindowConfig { window: window as usize, seen_max: seen_max as usize })
    }
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig { window: 50, seen_max: 500 }
    }
}

/// One interaction of the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recent {
    pub item: Id,
    pub event_type: EventType,
    pub ts_s: f64,
}

/// Last `window` interactions (most recent last), the seen and purchased items (insertion
/// ordered, the oldest forgotten first when full) and counts per event type.
#[derive(Debug, Clone, PartialEq)]
pub struct UserWindow {
    pub recent: VecDeque<Recent>,
    pub seen: Vec<Id>,
    pub purchased: Vec<Id>,
    pub counts: [u32; 6],
    pub last_ts_s: f64,
}

impl Default for UserWindow {
    fn default() -> Self {
        UserWindow {
            recent: VecDeque::new(),
            seen: Vec::new(),
            purchased: Vec::new(),
            counts: [0; 6],
            last_ts_s: f64::NEG_INFINITY,
        }
    }
}

/// Move `item` to the end of an insertion-ordered list, bounded to `max` (oldest first out).
fn touch(list: &mut Vec<Id>, item: Id, max: usize) {
    if let Some(at) = list.iter().position(|&x| x == item) {
        list.remove(at);
    }
    list.push(item);
    if list.len() > max {
        let drop = list.len() - max;
        list.drain(..drop);
    }
}

impl UserWindow {
    /// Record one interaction.
    pub fn add(&mut self, item: Id, event_type: EventType, ts_s: f64, cfg: &WindowConfig) {
        if self.recent.len() == cfg.window {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent { item, event_type, ts_s });
        touch(&mut self.seen, item, cfg.seen_max);
        if event_type == EventType::Purchase {
            touch(&mut self.purchased, item, cfg.seen_max);
        }
        self.count(event_type, ts_s);
    }

    /// Count an event that does not enter the window (an impression).
    pub fn count(&mut self, event_type: EventType, ts_s: f64) {
        self.counts[event_type as usize] += 1;
        self.last_ts_s = self.last_ts_s.max(ts_s);
    }

    /// Distinct items of the window, most recent first.
    pub fn recent_items(&self) -> Vec<Id> {
        let mut out: Vec<Id> = Vec::with_capacity(self.recent.len());
        for r in self.recent.iter().rev() {
            if !out.contains(&r.item) {
                out.push(r.item);
            }
        }
        out
    }

    pub fn write(&self, w: &mut Writer) {
        w.len(self.recent.len());
        let names = intern::names(self.recent.iter().map(|r| r.item));
        for (r, name) in self.recent.iter().zip(names) {
            w.str(name);
            w.u8(r.event_type as u8);
            w.f64(r.ts_s);
        }
        for list in [&self.seen, &self.purchased] {
            w.len(list.len());
            for name in intern::names(list.iter().copied()) {
                w.str(name);
            }
        }
        for c in self.counts {
            w.varint(u64::from(c));
        }
        w.f64(self.last_ts_s);
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let n = r.len()?;
        let mut recent = VecDeque::with_capacity(n);
        for _ in 0..n {
            let item = intern::intern(r.str()?);
            let event_type = EventType::from_index(r.u8()?)
                .ok_or_else(|| Invalid::new("user window snapshot is malformed"))?;
            recent.push_back(Recent { item, event_type, ts_s: r.f64()? });
        }
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = r.len()?;
            list.reserve_exact(n);
            for _ in 0..n {
                list.push(intern::intern(r.str()?));
            }
        }
        let [seen, purchased] = lists;
        let mut counts = [0u32; 6];
        for c in &mut counts {
            *c = r.varint()? as u32;
        }
        Ok(UserWindow { recent, seen, purchased, counts, last_ts_s: r.f64()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_seen_and_purchased_are_bounded_and_move_to_end() {
        let cfg = WindowConfig::new(2, 3).unwrap();
        let mut w = UserWindow::default();
        for (item, t) in [(1, EventType::View), (2, EventType::Purchase), (3, EventType::View)] {
            w.add(item, t, item as f64, &cfg);
        }
        assert_eq!(w.recent.iter().map(|r| r.item).collect::<Vec<_>>(), vec![2, 3]);
        w.add(1, EventType::View, 0.5, &cfg);
        assert_eq!(w.seen, vec![2, 3, 1]);
        w.add(4, EventType::View, 9.0, &cfg);
        assert_eq!(w.seen, vec![3, 1, 4]);
        assert_eq!(w.purchased, vec![2]);
        assert_eq!(w.recent_items(), vec![4, 1]);
        assert_eq!(w.counts[EventType::View as usize], 4);
        assert_eq!(w.last_ts_s, 9.0);
        assert!(WindowConfig::new(5, 4).is_err());
    }
}
