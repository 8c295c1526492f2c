//! One item's co-visited neighbours: decayed co-occurrence counts, bounded, top-M on demand.
//!
//! Held by the item's owner in the dataflow. Scores use the same log2 forward decay as
//! popularity, so an old co-visit fades with the half-life without touching the entry. At
//! most `capacity` neighbours are tracked: when full, the weakest is forgotten (the first
//! of equals in insertion order) — a space-saving style bound that keeps the strong, recent
//! neighbours exact.

use crate::codec::{Reader, Writer};
use crate::errors::{Invalid, ensure, py_float};
use crate::intern::{self, Id};
use crate::popularity;

/// Half-life and bound of every item's neighbours (from the settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeighboursConfig {
    pub half_life_s: f64,
    pub capacity: usize,
}

impl NeighboursConfig {
    pub fn new(half_life_s: f64, capacity: i64) -> Result<Self, Invalid> {
        ensure(half_life_s > 0.0, || {
            format!("half_life_s must be > 0, got {}", py_float(half_life_s))
        })?;
        ensure(capacity >= 1, || format!("capacity must be >= 1, got {capacity}"))?;
        Ok(NeighboursConfig { half_life_s, capacity: capacity as usize })
    }
}

impl Default for NeighboursConfig {
    fn default() -> Self {
        NeighboursConfig { half_life_s: 7.0 * 86_400.0, capacity: 100 }
    }
}

/// Decayed co-visitation scores (log2) of one item's neighbours, in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemNeighbours {
    pub scores: Vec<(Id, f64)>,
}

impl ItemNeighbours {
    /// Count one co-visit with `other`.
    pub fn add(&mut self, other: Id, weight: f64, ts_s: f64, cfg: &NeighboursConfig) {
        match self.scores.iter_mut().find(|(id, _)| *id == other) {
            Some((_, score)) => {
                *score = popularity::add_event(*score, weight, ts_s, cfg.half_life_s);
            }
            None => {
                let score =
                    popularity::add_event(popularity::NO_POPULARITY, weight, ts_s, cfg.half_life_s);
                self.scores.push((other, score));
            }
        }
        if self.scores.len() > cfg.capacity {
            let mut weakest = 0;
            for (i, (_, s)) in self.scores.iter().enumerate() {
                if *s < self.scores[weakest].1 {
                    weakest = i;
                }
            }
            self.scores.remove(weakest);
        }
    }

    /// The `m` strongest neighbours with their log2 scores, strongest first (ties by id).
    pub fn top(&self, m: usize) -> Vec<(Id, f64)> {
        let mut ranked: Vec<(Id, f64, &'static str)> = self
            .scores
            .iter()
            .zip(intern::names(self.scores.iter().map(|(id, _)| *id)))
            .map(|((id, s), name)| (*id, *s, name))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.2.cmp(b.2)));
        ranked.truncate(m);
        ranked.into_iter().map(|(id, s, _)| (id, s)).collect()
    }

    pub fn write(&self, w: &mut Writer) {
        w.len(self.scores.len());
        let names = intern::names(self.scores.iter().map(|(id, _)| *id));
        for ((_, score), name) in self.scores.iter().zip(names) {
            w.str(name);
            w.f64(*score);
        }
    }

    pub fn read(r: &mut Reader) -> Result<Self, Invalid> {
        let n = r.len()?;
        let mut scores = Vec::with_capacity(n);
        for _ in 0..n {
            let id = intern::intern(r.str()?);
            scores.push((id, r.f64()?));
        }
        Ok(ItemNeighbours { scores })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_forgets_the_weakest_and_top_breaks_ties_by_id() {
        let cfg = NeighboursConfig::new(10.0, 2).unwrap();
        let [a, b, c] = [intern::intern("nb-a"), intern::intern("nb-b"), intern::intern("nb-c")];
        let mut n = ItemNeighbours::default();
        n.add(b, 1.0, 0.0, &cfg);
        n.add(a, 1.0, 0.0, &cfg);
        assert_eq!(n.top(5), vec![(a, 0.0), (b, 0.0)]);
        n.add(a, 1.0, 0.0, &cfg); // a: 1.0
        n.add(c, 2.0, 10.0, &cfg); // c: 2.0, b (0.0) is dropped
        assert_eq!(n.top(5), vec![(c, 2.0), (a, 1.0)]);
        assert_eq!(n.top(1), vec![(c, 2.0)]);
    }
}
