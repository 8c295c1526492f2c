//! Merchandising of an answer: the shop's rules (boost or bury an item, a category or a brand
//! by a factor; pin an item to a position), each for an optional time window, and the
//! exploration slots that catalogue items without events get.
//!
//! A [`Plan`] is compiled once per version of the rules and of the items (and again when a
//! rule's window opens or closes: [`Plan::valid_until_s`]); every request borrows it. The
//! rankers (`ranking.rs`, `similar.rs`) apply it to the whole candidate pool before the top-K
//! is cut, so an answer has k items whenever k qualify:
//!
//! - **factors**: the factors of every active rule matching an item (the item, its category,
//!   its brand) multiply; [`adjust`] multiplies a score >= 0 by the factor and divides a
//!   negative one by it, so a boost (> 1) always raises and a bury (< 1) always lowers. Every
//!   request scores the boosted rows exactly and takes the best of them as candidates, so
//!   the bound that proves a graph answer stays as tight as without rules (past
//!   [`BOOSTED_CANDIDATES_MAX`] boosted rows it grows by the factor of the rest).
//! - **pins** ([`Layout::pin`]): in order of position (1-based), then of rule, a pinned item
//!   that passes the request's filters takes its position or the next free one; a pin past k
//!   is not shown, an item pinned twice keeps its first place.
//! - **new items** ([`Layout::explore`]): items of the catalogue without events (so without
//!   factors) fill up to the request's exploration slots, spread evenly over the answer:
//!   only in the user's recent categories, most recent category first, then highest factor,
//!   then newest. Buried new items are never explored. When the organic picks run out, more
//!   new items fill the rest.
//! - **the category cap** counts pinned and new items first and never drops them.
//!
//! Slots: a slot below the plan's `size` is a row of the item matrix; `size + j` is the j-th
//! new item (newest first).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rustc_hash::FxHashMap;

use crate::errors::Invalid;
use crate::ranking::NO_CATEGORY;

/// Brand code of an item without brand (no brand rule matches it).
pub const NO_BRAND: i32 = -1;
/// Reason code of an explored item without events: "new in <its category>".
pub const REASON_NEW_ITEM: i64 = -4;
/// Reason code of a pinned item: "promoted".
pub const REASON_PROMOTED: i64 = -5;
/// Boosted rows every request scores exactly (highest factor first): ~25 ns each at 64
/// factors, a fifth of a brute-force pass over 100,000 items at most.
pub const BOOSTED_CANDIDATES_MAX: usize = 16_384;

static PLAN_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Bounds of an item's combined factor.
pub const FACTOR_MIN: f32 = 1e-9;
pub const FACTOR_MAX: f32 = 1e9;

/// `score` re-weighed by `factor` (> 0): multiplied when >= 0, divided when negative, so
/// the order of the factors is the order of the results whatever the score's sign.
#[inline]
pub fn adjust(score: f32, factor: f32) -> f32 {
    // Most rows have no rule: skip the division (its latency doubled a scan of similar items).
    if factor == 1.0 {
        score
    } else if score >= 0.0 {
        score * factor
    } else {
        score / factor
    }
}

/// What a weighing rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One item, by slot.
    Item(usize),
    Category(i32),
    Brand(i32),
}

/// When a rule is active: from `starts_at_s` (inclusive) to `ends_at_s` (exclusive), unix
/// seconds; ±inf for an open end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub starts_at_s: f64,
    pub ends_at_s: f64,
}

impl Window {
    pub const ALWAYS: Window = Window { starts_at_s: f64::NEG_INFINITY, ends_at_s: f64::INFINITY };

    pub fn active(&self, now_s: f64) -> bool {
        self.starts_at_s <= now_s && now_s < self.ends_at_s
    }

    /// The first time after `now_s` at which activity changes (inf: never).
    fn next_change(&self, now_s: f64) -> f64 {
        if now_s < self.starts_at_s {
            self.starts_at_s
        } else if now_s < self.ends_at_s {
            self.ends_at_s
        } else {
            f64::INFINITY
        }
    }
}

/// Boost (factor > 1) or bury (factor < 1) what `target` matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weight {
    pub target: Target,
    pub factor: f64,
    pub window: Window,
}

/// Show the item of `slot` at `position` (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pin {
    pub slot: usize,
    pub position: usize,
    pub window: Window,
}

/// The catalogue's items without events, newest first: what the filters need of them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NewItems {
    pub category_codes: Vec<i32>,
    pub brand_codes: Vec<i32>,
    /// NaN: no price.
    pub prices: Vec<f64>,
    pub unavailable: Vec<bool>,
}

impl NewItems {
    pub fn len(&self) -> usize {
        self.category_codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.category_codes.is_empty()
    }
}

/// The rules active at one time, compiled against one version of the items.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Unique per compiled plan (0: the empty plan): what caches of its rows are keyed by.
    pub id: u64,
    /// Rows of the item matrix it was compiled for.
    pub size: usize,
    /// Each row's factor (empty: every row 1).
    row_factor: Vec<f32>,
    /// Each new item's factor.
    new_factor: Vec<f32>,
    /// Rows with a factor > 1, highest first (ties: lower row), at most
    /// [`BOOSTED_CANDIDATES_MAX`].
    pub boosted: Vec<usize>,
    /// The highest factor of a row not in `boosted` (1 when every row is listed).
    pub left_out_factor: f32,
    /// Active pins: (slot, 0-based position), by position then rule order.
    pins: Vec<(usize, usize)>,
    pub new_items: NewItems,
    /// New items worth exploring (not buried) by category: highest factor, then newest first.
    new_by_category: FxHashMap<i32, Vec<usize>>,
    /// When a rule's window next opens or closes: compile again from then on (inf: never).
    pub valid_until_s: f64,
}

impl Plan {
    /// Compile the rules active at `now_s` for `size` rows (their category and brand codes)
    /// and `new_items`.
    pub fn compile(
        size: usize,
        category_codes: &[i32],
        brand_codes: &[i32],
        new_items: NewItems,
        weights: &[Weight],
        pins: &[Pin],
        now_s: f64,
    ) -> Result<Plan, Invalid> {
        let n_new = new_items.len();
        let slots = size + n_new;
        if category_codes.len() < size || brand_codes.len() < size {
            return Err(Invalid::new(format!("{size} rows need {size} category and brand codes")));
        }
        let lengths =
            [new_items.brand_codes.len(), new_items.prices.len(), new_items.unavailable.len()];
        if lengths.iter().any(|&n| n != n_new) {
            return Err(Invalid::new("the new items' arrays differ in length"));
        }
        let mut valid_until_s = f64::INFINITY;
        let mut item_factor: FxHashMap<usize, f64> = FxHashMap::default();
        let mut category_factor: FxHashMap<i32, f64> = FxHashMap::default();
        let mut brand_factor: FxHashMap<i32, f64> = FxHashMap::default();
        // Factors multiply in rule order (float64, rounded to float32 once per item).
        for weight in weights {
            if !(weight.factor > 0.0 && weight.factor.is_finite()) {
                return Err(Invalid::new(format!(
                    "factor {} is not > 0 and finite",
                    weight.factor
                )));
            }
            if let Target::Item(slot) = weight.target {
                if slot >= slots {
                    return Err(Invalid::new(format!("slot {slot} is not in 0..{slots}")));
                }
            }
            valid_until_s = valid_until_s.min(weight.window.next_change(now_s));
            if !weight.window.active(now_s) {
                continue;
            }
            let factor = match weight.target {
                Target::Item(slot) => item_factor.entry(slot).or_insert(1.0),
                Target::Category(code) => category_factor.entry(code).or_insert(1.0),
                Target::Brand(code) => brand_factor.entry(code).or_insert(1.0),
            };
            *factor *= weight.factor;
        }
        // Codes are small and dense: the per-row pass reads tables, not hash maps.
        let dense = |factors: &FxHashMap<i32, f64>| -> Vec<f64> {
            let len = factors.keys().filter(|&&c| c >= 0).map(|&c| c as usize + 1).max();
            let mut table = vec![1.0; len.unwrap_or(0)];
            for (&code, &factor) in factors.iter().filter(|&(&c, _)| c >= 0) {
                table[code as usize] = factor;
            }
            table
        };
        let (category_table, brand_table) = (dense(&category_factor), dense(&brand_factor));
        let lookup = |table: &[f64], code: i32| -> f64 {
            if code < 0 { 1.0 } else { table.get(code as usize).copied().unwrap_or(1.0) }
        };
        let factor_of = |slot: usize, category: i32, brand: i32| -> f32 {
            let item = item_factor.get(&slot).copied().unwrap_or(1.0);
            let product = item * lookup(&category_table, category) * lookup(&brand_table, brand);
            // Clamped: many rules multiplied must not reach 0 or inf (a score / 0 is -inf,
            // which no ranking shows).
            (product as f32).clamp(FACTOR_MIN, FACTOR_MAX)
        };
        let weighed =
            !(item_factor.is_empty() && category_factor.is_empty() && brand_factor.is_empty());
        let mut row_factor: Vec<f32> = Vec::new();
        if weighed {
            // The tables for every row, then the few rows with item rules again.
            row_factor = (0..size)
                .map(|row| {
                    let product = lookup(&category_table, category_codes[row])
                        * lookup(&brand_table, brand_codes[row]);
                    (product as f32).clamp(FACTOR_MIN, FACTOR_MAX)
                })
                .collect();
            for &slot in item_factor.keys().filter(|&&slot| slot < size) {
                row_factor[slot] = factor_of(slot, category_codes[slot], brand_codes[slot]);
            }
        }
        let new_factor: Vec<f32> = (0..n_new)
            .map(|j| factor_of(size + j, new_items.category_codes[j], new_items.brand_codes[j]))
            .collect();
        let mut boosted: Vec<usize> =
            (0..row_factor.len()).filter(|&r| row_factor[r] > 1.0).collect();
        boosted.sort_by(|&a, &b| row_factor[b].total_cmp(&row_factor[a]).then(a.cmp(&b)));
        let left_out_factor = if boosted.len() > BOOSTED_CANDIDATES_MAX {
            let first_left_out = row_factor[boosted[BOOSTED_CANDIDATES_MAX]];
            boosted.truncate(BOOSTED_CANDIDATES_MAX);
            first_left_out
        } else {
            // Every boosted row is listed: the rest have factors <= 1.
            row_factor.iter().copied().filter(|&f| f <= 1.0).reduce(f32::max).unwrap_or(1.0)
        };
        let mut active_pins: Vec<(usize, usize)> = Vec::new();
        for pin in pins {
            if pin.slot >= slots {
                return Err(Invalid::new(format!("slot {} is not in 0..{slots}", pin.slot)));
            }
            if pin.position == 0 {
                return Err(Invalid::new("pin positions start at 1"));
            }
            valid_until_s = valid_until_s.min(pin.window.next_change(now_s));
            if pin.window.active(now_s) {
                active_pins.push((pin.slot, pin.position - 1));
            }
        }
        active_pins.sort_by_key(|&(_, position)| position); // stable: rule order within
        let mut new_by_category: FxHashMap<i32, Vec<usize>> = FxHashMap::default();
        for (j, (&code, &factor)) in new_items.category_codes.iter().zip(&new_factor).enumerate() {
            if code != NO_CATEGORY && factor >= 1.0 {
                new_by_category.entry(code).or_default().push(j);
            }
        }
        for list in new_by_category.values_mut() {
            list.sort_by(|&a, &b| new_factor[b].total_cmp(&new_factor[a]).then(a.cmp(&b)));
        }
        Ok(Plan {
            id: PLAN_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            size,
            row_factor,
            new_factor,
            boosted,
            left_out_factor,
            pins: active_pins,
            new_items,
            new_by_category,
            valid_until_s,
        })
    }

    /// No rules, no new items: the ranking as it is.
    pub fn empty(size: usize) -> Plan {
        Plan { size, left_out_factor: 1.0, valid_until_s: f64::INFINITY, ..Plan::default() }
    }

    /// The factor of a row.
    #[inline]
    pub fn factor(&self, row: usize) -> f32 {
        self.row_factor.get(row).copied().unwrap_or(1.0)
    }

    /// The factor of a new item.
    pub fn new_factor(&self, j: usize) -> f32 {
        self.new_factor[j]
    }

    /// Whether the new item `j` passes the request's category and price filters and
    /// availability (the filters rows pass in `ranking.rs`).
    pub fn new_item_passes(
        &self,
        j: usize,
        available_only: bool,
        wanted: Option<&[i32]>,
        unwanted: &[i32],
        price: (Option<f64>, Option<f64>),
    ) -> bool {
        let new = &self.new_items;
        if available_only && new.unavailable[j] {
            return false;
        }
        let code = new.category_codes[j];
        if wanted.is_some_and(|w| w.binary_search(&code).is_err())
            || unwanted.binary_search(&code).is_ok()
        {
            return false;
        }
        price_passes(new.prices[j], price)
    }
}

/// Whether `price` (NaN: unknown) is within the range; with a bound given, an item without
/// price never is.
#[inline]
pub fn price_passes(price: f64, (min, max): (Option<f64>, Option<f64>)) -> bool {
    if min.is_none() && max.is_none() {
        return true;
    }
    if price.is_nan() {
        return false;
    }
    min.is_none_or(|m| price >= m) && max.is_none_or(|m| price <= m)
}

/// One entry of an answer: its slot, score, reason code and co-visitation source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub slot: usize,
    pub score: f32,
    pub reason: i64,
}

/// The positions of an answer being built: pins first, new items next, organic picks last.
pub struct Layout {
    positions: Vec<Option<Placed>>,
    cap: usize,
    per_category: Vec<(i32, usize)>,
    explore: Explore,
}

/// Where exploration stands: the candidates in order and how far they were taken.
#[derive(Default)]
struct Explore {
    candidates: Vec<usize>,
    next: usize,
}

impl Layout {
    /// An empty answer of `k` positions, at most `cap` per category (0: no cap).
    pub fn new(k: usize, cap: usize) -> Layout {
        Layout {
            positions: vec![None; k],
            cap,
            per_category: Vec::new(),
            explore: Explore::default(),
        }
    }

    fn first_free(&self, from: usize) -> Option<usize> {
        (from..self.positions.len()).find(|&at| self.positions[at].is_none())
    }

    /// Positions still free.
    pub fn free(&self) -> usize {
        self.positions.iter().filter(|p| p.is_none()).count()
    }

    /// Whether the cap leaves no room in the category (uncategorised items are never capped).
    pub fn category_full(&self, code: i32) -> bool {
        self.cap > 0
            && code != NO_CATEGORY
            && self.per_category.iter().any(|&(c, n)| c == code && n >= self.cap)
    }

    /// Count one more item of the category.
    pub fn count(&mut self, code: i32) {
        if code == NO_CATEGORY {
            return;
        }
        match self.per_category.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.per_category.push((code, 1)),
        }
    }

    /// Categories already placed and how many of each (the cap's starting counts).
    pub fn placed_categories(&self) -> &[(i32, usize)] {
        &self.per_category
    }

    /// Slots placed so far, ascending.
    pub fn placed_slots(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = self.positions.iter().flatten().map(|p| p.slot).collect();
        slots.sort_unstable();
        slots
    }

    /// Place the plan's pins whose slot `passes`, scored by `score_of`, in `category_of`.
    pub fn pin(
        &mut self,
        plan: &Plan,
        passes: impl Fn(usize) -> bool,
        score_of: impl Fn(usize) -> f32,
        category_of: impl Fn(usize) -> i32,
    ) {
        for &(slot, position) in &plan.pins {
            if self.positions.iter().flatten().any(|p| p.slot == slot) || !passes(slot) {
                continue;
            }
            if let Some(at) = self.first_free(position) {
                let score = score_of(slot);
                let score = if score.is_finite() { score } else { 0.0 };
                self.positions[at] = Some(Placed { slot, score, reason: REASON_PROMOTED });
                self.count(category_of(slot));
            }
        }
    }

    /// Place up to `slots` new items in the user's `recent_categories` (most recent first)
    /// that `passes` (the request's filters), spread evenly over the answer; the rest of them
    /// wait for [`Layout::finish`] in case the organic picks run out.
    pub fn explore(
        &mut self,
        plan: &Plan,
        slots: usize,
        recent_categories: &[i32],
        passes: impl Fn(usize) -> bool,
    ) {
        let mut seen: Vec<i32> = Vec::new();
        let mut candidates: Vec<usize> = Vec::new();
        let k = self.positions.len();
        // No more than k (or a cap's worth) of one category can ever be taken.
        let per_category = if self.cap == 0 { k } else { self.cap.min(k) };
        for &code in recent_categories {
            if code == NO_CATEGORY || seen.contains(&code) {
                continue;
            }
            seen.push(code);
            let mut listed = 0;
            for &j in plan.new_by_category.get(&code).map(Vec::as_slice).unwrap_or(&[]) {
                if listed == per_category {
                    break;
                }
                let slot = plan.size + j;
                if passes(j) && !self.positions.iter().flatten().any(|p| p.slot == slot) {
                    candidates.push(slot);
                    listed += 1;
                }
            }
        }
        self.explore = Explore { candidates, next: 0 };
        let want = slots.min(self.free());
        let chosen = self.take_new(plan, want);
        let n = chosen.len();
        for (i, slot) in chosen.into_iter().enumerate() {
            let target = (i + 1) * k / (n + 1);
            let at =
                self.first_free(target).or_else(|| self.first_free(0)).expect("a free position");
            self.positions[at] = Some(Placed { slot, score: 0.0, reason: REASON_NEW_ITEM });
        }
    }

    /// The next `n` exploration candidates whose category is not full (counted).
    fn take_new(&mut self, plan: &Plan, n: usize) -> Vec<usize> {
        let mut taken = Vec::with_capacity(n);
        while taken.len() < n && self.explore.next < self.explore.candidates.len() {
            let slot = self.explore.candidates[self.explore.next];
            self.explore.next += 1;
            let code = plan.new_items.category_codes[slot - plan.size];
            if self.category_full(code) {
                continue;
            }
            self.count(code);
            taken.push(slot);
        }
        taken
    }

    /// The answer: `organic` picks (best first, already capped) into the free positions in
    /// order, then more new items while positions are left (their categories counted with
    /// the organic picks', `category_of`), without the gaps.
    pub fn finish(
        mut self,
        plan: &Plan,
        organic: Vec<Placed>,
        category_of: impl Fn(usize) -> i32,
    ) -> Vec<Placed> {
        let mut organic = organic.into_iter();
        for at in 0..self.positions.len() {
            if self.positions[at].is_none() {
                self.positions[at] = organic.next();
                if let Some(placed) = self.positions[at] {
                    self.count(category_of(placed.slot));
                }
            }
        }
        let left = self.free();
        if left > 0 {
            let more = self.take_new(plan, left);
            let mut more = more.into_iter();
            for at in 0..self.positions.len() {
                if self.positions[at].is_none() {
                    self.positions[at] = more.next().map(|slot| Placed {
                        slot,
                        score: 0.0,
                        reason: REASON_NEW_ITEM,
                    });
                }
            }
        }
        self.positions.into_iter().flatten().collect()
    }
}

// --- Python ----------------------------------------------------------------------------------

/// The shop's rules active at one time, compiled for one version of the items.
#[pyclass(module = "operators._native", frozen)]
pub struct Merchandising {
    pub plan: Plan,
}

fn window(starts_at_s: f64, ends_at_s: f64) -> PyResult<Window> {
    if starts_at_s.is_nan() || ends_at_s.is_nan() || !(starts_at_s < ends_at_s) {
        return Err(PyValueError::new_err(format!(
            "a window must start before it ends, got {starts_at_s} .. {ends_at_s}"
        )));
    }
    Ok(Window { starts_at_s, ends_at_s })
}

#[pymethods]
impl Merchandising {
    /// ``weights``: (``"item"`` / ``"category"`` / ``"brand"``, slot or code, factor,
    /// starts_at_s, ends_at_s); ``pins``: (slot, position, starts_at_s, ends_at_s); windows
    /// in unix seconds, ±inf for an open end. New items' arrays are newest first.
    #[new]
    #[pyo3(signature = (
        size, category_codes, brand_codes, new_category_codes, new_brand_codes, new_prices,
        new_unavailable, weights, pins, now_s,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        size: usize,
        category_codes: numpy::PyReadonlyArray1<'_, i32>,
        brand_codes: numpy::PyReadonlyArray1<'_, i32>,
        new_category_codes: numpy::PyReadonlyArray1<'_, i32>,
        new_brand_codes: numpy::PyReadonlyArray1<'_, i32>,
        new_prices: numpy::PyReadonlyArray1<'_, f64>,
        new_unavailable: numpy::PyReadonlyArray1<'_, bool>,
        weights: Vec<(String, i64, f64, f64, f64)>,
        pins: Vec<(usize, usize, f64, f64)>,
        now_s: f64,
    ) -> PyResult<Self> {
        let weights: Vec<Weight> = weights
            .into_iter()
            .map(|(kind, target, factor, starts, ends)| {
                let target = match kind.as_str() {
                    "item" if target >= 0 => Target::Item(target as usize),
                    "category" => Target::Category(target as i32),
                    "brand" => Target::Brand(target as i32),
                    _ => {
                        return Err(PyValueError::new_err(format!(
                            "no weighing rule targets {kind} {target}"
                        )));
                    }
                };
                Ok(Weight { target, factor, window: window(starts, ends)? })
            })
            .collect::<PyResult<_>>()?;
        let pins: Vec<Pin> = pins
            .into_iter()
            .map(|(slot, position, starts, ends)| {
                Ok(Pin { slot, position, window: window(starts, ends)? })
            })
            .collect::<PyResult<_>>()?;
        let new_items = NewItems {
            category_codes: new_category_codes.as_slice()?.to_vec(),
            brand_codes: new_brand_codes.as_slice()?.to_vec(),
            prices: new_prices.as_slice()?.to_vec(),
            unavailable: new_unavailable.as_slice()?.to_vec(),
        };
        let plan = Plan::compile(
            size,
            category_codes.as_slice()?,
            brand_codes.as_slice()?,
            new_items,
            &weights,
            &pins,
            now_s,
        )?;
        Ok(Merchandising { plan })
    }

    /// Rows of the item matrix it was compiled for.
    #[getter]
    fn size(&self) -> usize {
        self.plan.size
    }

    /// Items without events it holds.
    #[getter]
    fn new_items(&self) -> usize {
        self.plan.new_items.len()
    }

    /// When a rule's window next opens or closes (unix seconds; inf: never): compile again
    /// from then on.
    #[getter]
    fn valid_until_s(&self) -> f64 {
        self.plan.valid_until_s
    }

    /// Rows scored with every request's candidates (factor > 1), highest factor first.
    #[getter]
    fn boosted_rows(&self) -> Vec<usize> {
        self.plan.boosted.clone()
    }

    /// The factor of each slot (rows, then new items).
    fn factors(&self) -> Vec<f32> {
        (0..self.plan.size)
            .map(|r| self.plan.factor(r))
            .chain((0..self.plan.new_items.len()).map(|j| self.plan.new_factor(j)))
            .collect()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Merchandising>()?;
    m.add("NO_BRAND", NO_BRAND)?;
    m.add("REASON_NEW_ITEM", REASON_NEW_ITEM)?;
    m.add("REASON_PROMOTED", REASON_PROMOTED)?;
    m.add("BOOSTED_CANDIDATES_MAX", BOOSTED_CANDIDATES_MAX)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_items(codes: &[i32]) -> NewItems {
        NewItems {
            category_codes: codes.to_vec(),
            brand_codes: vec![NO_BRAND; codes.len()],
            prices: vec![f64::NAN; codes.len()],
            unavailable: vec![false; codes.len()],
        }
    }

    fn weight(target: Target, factor: f64) -> Weight {
        Weight { target, factor, window: Window::ALWAYS }
    }

    #[test]
    fn adjust_raises_with_a_boost_and_lowers_with_a_bury_whatever_the_sign() {
        assert_eq!(adjust(2.0, 4.0), 8.0);
        assert_eq!(adjust(-2.0, 4.0), -0.5);
        assert_eq!(adjust(2.0, 0.5), 1.0);
        assert_eq!(adjust(-2.0, 0.5), -4.0);
        assert_eq!(adjust(0.0, 0.5), 0.0);
        assert!(adjust(f32::NAN, 2.0).is_nan());
    }

    #[test]
    fn factors_of_item_category_and_brand_rules_multiply() {
        // Rows 0..4 in categories 1, 1, 2, NO_CATEGORY; brands 7, NO_BRAND, 7, 7.
        let plan = Plan::compile(
            4,
            &[1, 1, 2, NO_CATEGORY],
            &[7, NO_BRAND, 7, 7],
            new_items(&[1]),
            &[
                weight(Target::Category(1), 2.0),
                weight(Target::Brand(7), 0.5),
                weight(Target::Item(1), 4.0),
                weight(Target::Item(1), 2.0),
                weight(Target::Item(4), 8.0), // the new item
            ],
            &[],
            0.0,
        )
        .unwrap();
        let factors: Vec<f32> = (0..4).map(|r| plan.factor(r)).collect();
        assert_eq!(factors, vec![1.0, 16.0, 0.5, 0.5]);
        assert_eq!(plan.new_factor(0), 16.0);
        assert_eq!(plan.boosted, vec![1]);
        assert_eq!(plan.left_out_factor, 1.0);
    }

    #[test]
    fn windows_decide_what_is_active_and_when_to_compile_again() {
        let later = Window { starts_at_s: 100.0, ends_at_s: 200.0 };
        let rules = [Weight { target: Target::Item(0), factor: 2.0, window: later }];
        let pins =
            [Pin { slot: 1, position: 1, window: Window { starts_at_s: 0.0, ends_at_s: 150.0 } }];
        let at = |now| {
            Plan::compile(2, &[0, 0], &[0, 0], NewItems::default(), &rules, &pins, now).unwrap()
        };
        let before = at(50.0);
        assert_eq!((before.factor(0), before.pins.len(), before.valid_until_s), (1.0, 1, 100.0));
        let during = at(120.0);
        assert_eq!((during.factor(0), during.pins.len(), during.valid_until_s), (2.0, 1, 150.0));
        let after = at(250.0);
        assert_eq!(
            (after.factor(0), after.pins.len(), after.valid_until_s),
            (1.0, 0, f64::INFINITY)
        );
    }

    #[test]
    fn past_the_boosted_limit_the_rest_bound_the_proof() {
        let n = BOOSTED_CANDIDATES_MAX + 10;
        let rules: Vec<Weight> =
            (0..n).map(|r| weight(Target::Item(r), if r < 5 { 4.0 } else { 2.0 })).collect();
        let plan = Plan::compile(
            n + 3,
            &vec![0; n + 3],
            &vec![0; n + 3],
            NewItems::default(),
            &rules,
            &[],
            0.0,
        )
        .unwrap();
        assert_eq!(plan.boosted.len(), BOOSTED_CANDIDATES_MAX);
        assert_eq!(plan.boosted[..6], [0, 1, 2, 3, 4, 5]);
        assert_eq!(plan.left_out_factor, 2.0);
    }

    #[test]
    fn bad_rules_are_refused() {
        let compile = |weights: &[Weight], pins: &[Pin]| {
            Plan::compile(2, &[0, 0], &[0, 0], new_items(&[0]), weights, pins, 0.0).map(|_| ())
        };
        assert!(compile(&[weight(Target::Item(3), 2.0)], &[]).is_err());
        assert!(compile(&[weight(Target::Item(0), 0.0)], &[]).is_err());
        assert!(compile(&[weight(Target::Item(0), f64::INFINITY)], &[]).is_err());
        assert!(compile(&[], &[Pin { slot: 0, position: 0, window: Window::ALWAYS }]).is_err());
        assert!(compile(&[], &[Pin { slot: 2, position: 1, window: Window::ALWAYS }]).is_ok());
    }

    #[test]
    fn pins_take_their_position_or_the_next_free_one() {
        let pins = [
            Pin { slot: 3, position: 2, window: Window::ALWAYS },
            Pin { slot: 1, position: 2, window: Window::ALWAYS },
            Pin { slot: 3, position: 1, window: Window::ALWAYS }, // pinned twice: first kept
            Pin { slot: 0, position: 5, window: Window::ALWAYS }, // past k
            Pin { slot: 2, position: 1, window: Window::ALWAYS }, // filtered out
        ];
        let plan =
            Plan::compile(4, &[0; 4], &[0; 4], NewItems::default(), &[], &pins, 0.0).unwrap();
        let mut layout = Layout::new(4, 0);
        layout.pin(&plan, |slot| slot != 2, |slot| slot as f32, |_| 0);
        let organic = vec![Placed { slot: 9, score: 9.0, reason: 0 }];
        let answer = layout.finish(&plan, organic, |_| 0);
        let slots: Vec<usize> = answer.iter().map(|p| p.slot).collect();
        // By position: slot 3's pin at 1 comes first (its pin at 2 is then a duplicate), slot
        // 2 is filtered out, slot 1 goes to 2, slot 0 (at 5) falls past k; the organic pick
        // fills position 3 and the empty fourth is dropped.
        assert_eq!(slots, vec![3, 1, 9]);
        assert_eq!(answer[0].reason, REASON_PROMOTED);
    }

    #[test]
    fn new_items_spread_over_the_answer_in_recent_categories_and_fill_what_is_left() {
        // New items 0..5 in categories 1, 2, 1, 3, 2 (newest first); rows: size 10.
        let plan = Plan::compile(
            10,
            &[0; 10],
            &[0; 10],
            new_items(&[1, 2, 1, 3, 2]),
            &[weight(Target::Item(10 + 2), 2.0), weight(Target::Item(10 + 4), 0.5)],
            &[],
            0.0,
        )
        .unwrap();
        let mut layout = Layout::new(6, 0);
        // Recent categories: 2 then 1 (3 never viewed). Category 2: item 4 is buried, so
        // item 1; category 1: item 2 (factor 2) before item 0.
        layout.explore(&plan, 2, &[2, 2, NO_CATEGORY, 1], |_| true);
        let organic: Vec<Placed> =
            (0..3).map(|r| Placed { slot: r, score: 1.0, reason: 0 }).collect();
        let answer = layout.finish(&plan, organic, |_| 0);
        let slots: Vec<usize> = answer.iter().map(|p| p.slot).collect();
        // Two new items at positions 6/3 = 2 and 12/3 = 4; three organic picks; then the
        // next new item fills the last position.
        assert_eq!(slots, vec![0, 1, 11, 2, 12, 10]);
        assert_eq!(answer[2].reason, REASON_NEW_ITEM);
    }

    #[test]
    fn the_cap_counts_pins_and_new_items_first() {
        let plan = Plan::compile(
            2,
            &[1, 1],
            &[0, 0],
            new_items(&[1, 1]),
            &[],
            &[Pin { slot: 0, position: 1, window: Window::ALWAYS }],
            0.0,
        )
        .unwrap();
        let mut layout = Layout::new(4, 2);
        layout.pin(&plan, |_| true, |_| 1.0, |_| 1);
        layout.explore(&plan, 2, &[1], |_| true);
        // The pin and one new item fill category 1: the second new item is not taken.
        assert_eq!(layout.placed_categories(), &[(1, 2)]);
        assert_eq!(layout.free(), 2);
    }

    #[test]
    fn prices_pass_only_within_a_given_range() {
        assert!(price_passes(f64::NAN, (None, None)));
        assert!(!price_passes(f64::NAN, (Some(1.0), None)));
        assert!(price_passes(5.0, (Some(5.0), Some(5.0))));
        assert!(!price_passes(5.5, (None, Some(5.0))));
        assert!(!price_passes(4.5, (Some(5.0), None)));
    }
}
