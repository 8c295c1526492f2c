//! The items of one shard listed in the global popularity ranking (Redis' popularity set).
//!
//! Serving reads only the head of that ranking (the 1,000 most popular items), yet writing
//! every changed item's score into it was the largest Redis cost of a batch (a ZADD into a
//! set of every item ever seen: ~7 µs of server time per item). A shard therefore lists only
//! its `capacity` most popular items: the global head is the head of the union of the
//! shards' lists as long as no shard holds more than `capacity` of it, which the flow's
//! sizing (`freshrec.settings`: several times the list size over the shard count) makes
//! vanishingly unlikely with hashed shards.
//!
//! Forward-decayed popularity only grows (an event adds a positive weight), so an item that
//! drops out of the list can only come back through a new event of its own, when it is offered
//! again: the list is exactly the shard's top `capacity` by current score, and can be rebuilt
//! from the item states after a restore instead of being snapshotted.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use crate::intern::Id;

/// A score with a total order (NaN never occurs; `total_cmp` keeps the set sound anyway).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The shard's listed items, the lowest first.
#[derive(Debug, Clone)]
pub struct PopularList {
    capacity: usize,
    by_score: BTreeSet<(Score, Id)>,
    scores: FxHashMap<Id, f64>,
}

/// What offering a new score changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The item is listed now (its score is to be written).
    pub listed: bool,
    /// The item this one pushed out of the list, if any.
    pub evicted: Option<Id>,
}

impl PopularList {
    pub fn new(capacity: usize) -> Self {
        PopularList { capacity, by_score: BTreeSet::new(), scores: FxHashMap::default() }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn contains(&self, item: Id) -> bool {
        self.scores.contains_key(&item)
    }

    /// The item's score is now `score`: list it if it ranks among the shard's top.
    pub fn offer(&mut self, item: Id, score: f64) -> Offer {
        if self.capacity == 0 {
            return Offer { listed: false, evicted: None };
        }
        if let Some(old) = self.scores.insert(item, score) {
            self.by_score.remove(&(Score(old), item));
            self.by_score.insert((Score(score), item));
            return Offer { listed: true, evicted: None };
        }
        if self.scores.len() <= self.capacity {
            self.by_score.insert((Score(score), item));
            return Offer { listed: true, evicted: None };
        }
        // Full: the newcomer replaces the lowest listed item if it beats it (ties keep the
        // incumbent, so equal scores don't churn the list).
        let &(lowest, lowest_item) = self.by_score.first().expect("a full list has items");
        if Score(score) > lowest {
            self.by_score.pop_first();
            self.scores.remove(&lowest_item);
            self.by_score.insert((Score(score), item));
            Offer { listed: true, evicted: Some(lowest_item) }
        } else {
            self.scores.remove(&item);
            Offer { listed: false, evicted: None }
        }
    }

    /// The list of the top `capacity` of these (item, score) pairs.
    pub fn rebuild(capacity: usize, items: impl IntoIterator<Item = (Id, f64)>) -> Self {
        let mut all: Vec<(Score, Id)> = items.into_iter().map(|(i, s)| (Score(s), i)).collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.truncate(capacity);
        let mut list = PopularList::new(capacity);
        for (score, item) in all {
            list.scores.insert(item, score.0);
            list.by_score.insert((score, item));
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intern;

    fn id(n: u32) -> Id {
        intern::intern(&format!("popular-list-{n}"))
    }

    #[test]
    fn keeps_the_top_and_names_whom_it_pushes_out() {
        let mut list = PopularList::new(2);
        assert_eq!(list.offer(id(1), 1.0), Offer { listed: true, evicted: None });
        assert_eq!(list.offer(id(2), 2.0), Offer { listed: true, evicted: None });
        assert_eq!(list.offer(id(3), 0.5), Offer { listed: false, evicted: None });
        assert_eq!(list.offer(id(3), 1.5), Offer { listed: true, evicted: Some(id(1)) });
        assert_eq!(list.offer(id(3), 3.0), Offer { listed: true, evicted: None });
        assert!(list.contains(id(2)) && list.contains(id(3)) && !list.contains(id(1)));
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn a_tie_keeps_the_incumbent() {
        let mut list = PopularList::new(1);
        list.offer(id(1), 1.0);
        assert_eq!(list.offer(id(2), 1.0), Offer { listed: false, evicted: None });
        assert!(list.contains(id(1)));
    }

    #[test]
    fn capacity_zero_lists_nothing() {
        let mut list = PopularList::new(0);
        assert_eq!(list.offer(id(1), 1.0), Offer { listed: false, evicted: None });
        assert!(list.is_empty());
    }

    /// With growing scores, the list is always the top `capacity` by current score, the
    /// rebuild from the scores gives the same, and an evicted item is no longer listed.
    /// Random streams from a fixed-seed generator (xorshift).
    #[test]
    fn is_the_top_of_growing_scores() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let capacity = (next() % 6) as usize;
            let mut list = PopularList::new(capacity);
            let mut scores: FxHashMap<Id, f64> = FxHashMap::default();
            for _ in 0..(next() % 80) {
                let item = id((next() % 12) as u32);
                let gain = 0.01 + (next() % 1000) as f64 / 333.0;
                let score = scores.get(&item).copied().unwrap_or(0.0) + gain;
                scores.insert(item, score);
                let offer = list.offer(item, score);
                assert_eq!(offer.listed, list.contains(item));
                if let Some(evicted) = offer.evicted {
                    assert!(!list.contains(evicted));
                }
                let lowest_listed = list.scores.values().copied().fold(f64::INFINITY, f64::min);
                for (other, s) in &scores {
                    if !list.contains(*other) {
                        assert!(*s <= lowest_listed);
                    }
                }
                assert_eq!(list.len(), scores.len().min(capacity));
            }
            let rebuilt = PopularList::rebuild(capacity, scores.iter().map(|(i, s)| (*i, *s)));
            let mut a: Vec<f64> = rebuilt.scores.values().copied().collect();
            let mut b: Vec<f64> = list.scores.values().copied().collect();
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            assert_eq!(a, b);
        }
    }
}
