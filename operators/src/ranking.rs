//! The personal ranking of one request, in one native call: exact re-scoring of the
//! candidates, the co-visitation merge, the best popular candidates, filters, the per-category
//! cap and the reason of every pick.
//!
//! Serving keeps a [`Ranker`] per version of the item matrix and ranked lists (it holds the
//! item matrix, its per-row arrays and norms by reference, zero-copy, and the popular items'
//! vectors gathered once) and calls [`Ranker::rank`] once per request with the user's fresh
//! vector, the graph's candidates (HNSW stays in Python: hnswlib) and the request's filters.
//!
//! Rules (the numba kernels' and the brute-force path's before them; `tests/oracles/` keeps
//! those as the reference): score = evidence x <item, user> + (1 - evidence) x popularity +
//! co-visitation boost, in float32; best first, ties to the lower row; NaN and ±inf never
//! picked; excluded and (if asked) unavailable rows skipped; category include/exclude; at most
//! `cap` per category (uncategorised items are not capped). Candidates are graph ∪ best popular
//! ∪ co-visited, or every row (brute force); a graph answer is returned only when its k-th
//! score reaches the bound on everything left out, else the graph is asked for 8x more
//! candidates once, then brute force answers.
//!
//! Merchandising (`merchandising.rs`) applies over that whole pool, before the top-K: the
//! price range filters like the categories do, rule factors re-weigh every score (boosted rows
//! join the candidates; the bound grows by the factor of the rest), pins and new items take
//! their positions first and the organic picks fill the rest, so filters and rules never
//! leave an answer short while enough items qualify (the graph is asked for more, then brute
//! force answers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::py_float;
use crate::merchandising::{Layout, Merchandising, Placed, Plan, adjust, price_passes};
use crate::similar::{
    REASON_SIMILAR, REASON_VIEWED_TOGETHER, SimilarRequest, TopK, dot, similar_items, top_cosine,
};

/// Category code of an item without category (never capped).
pub const NO_CATEGORY: i32 = -1;
/// Reason codes of a pick that no recent item explains (a code >= 0 names a viewed item).
pub const REASON_TRENDING: i64 = -1;
pub const REASON_NEW: i64 = -2;
pub const REASON_RECOMMENDED: i64 = -3;
/// Cosine to a recent item from which "because you viewed it" is said.
pub const SIMILARITY_REASON_MIN: f64 = 0.3;
/// Graph candidates (and best popular ones) of the first round: recall hardly moves past
/// 30, the graph's search depth is what buys it.
pub const ANN_FETCH_MIN: usize = 30;
/// Rounds of graph candidates (each fetching 8x more) before brute force.
pub const ANN_FETCH_ROUNDS: usize = 2;
/// Brute force over-selects this many times k per round when a category cap may skip picks.
const CAP_FACTOR: usize = 4;

/// The item side, borrowed for one call: `matrix` holds `factors` floats per row, at least
/// `size` rows; the per-row arrays at least `size` entries.
#[derive(Clone, Copy)]
pub struct Items<'a> {
    pub matrix: &'a [f32],
    pub factors: usize,
    pub size: usize,
    pub category_codes: &'a [i32],
    pub unavailable: &'a [bool],
    /// NaN: no price.
    pub prices: &'a [f64],
}

impl Items<'_> {
    pub(crate) fn vector(&self, row: usize) -> &[f32] {
        &self.matrix[row * self.factors..(row + 1) * self.factors]
    }
}

/// The popular items as rows, with their vectors gathered once per version, and what every
/// request derives from the ranked lists.
pub struct Lists {
    /// Rows of the popular items that have factors, most popular first.
    pub popular_rows: Vec<usize>,
    /// Each popular row's popularity term: 1 for the most popular item down to 0 past the list.
    pub popular_terms: Vec<f32>,
    /// `matrix[popular_rows]`, contiguous.
    pub popular_vectors: Vec<f32>,
    /// The popularity term of every row (0 for rows not in the list).
    pub popularity: Vec<f32>,
    /// Rows of trending items, ascending.
    pub trending: Vec<usize>,
}

impl Lists {
    /// `popular`: the ranked popular list as rows (None: an item without factors, which still
    /// takes its rank); `trending`: rows of the trending items.
    pub fn build(items: &Items<'_>, popular: &[Option<usize>], trending: &[usize]) -> Lists {
        let total = popular.len().max(1) as f64;
        let mut popularity = vec![0.0f32; items.size];
        let mut popular_rows = Vec::new();
        let mut popular_terms = Vec::new();
        let mut popular_vectors = Vec::new();
        for (rank, row) in popular.iter().enumerate() {
            if let Some(row) = *row {
                let term = (1.0 - rank as f64 / total) as f32;
                popular_rows.push(row);
                popular_terms.push(term);
                popular_vectors.extend_from_slice(items.vector(row));
                popularity[row] = term;
            }
        }
        let mut trending = trending.to_vec();
        trending.sort_unstable();
        trending.dedup();
        Lists { popular_rows, popular_terms, popular_vectors, popularity, trending }
    }
}

/// Co-visitation evidence of one request: boosted rows (ascending, distinct), their boost
/// summed over sources, and the first (most recent) source that led to each.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Covisits {
    pub rows: Vec<usize>,
    pub boost: Vec<f32>,
    pub source: Vec<usize>,
}

impl Covisits {
    /// `lists[n]`: the neighbour rows and weights of the n-th source (most recent first);
    /// weights are summed in float64 in that order, then rounded to float32 once.
    pub fn combine(lists: &[(&[isize], &[f64])], size: usize) -> Covisits {
        let mut all: Vec<(usize, f64, usize)> = Vec::new();
        for (source, (rows, weights)) in lists.iter().enumerate() {
            for (&row, &weight) in rows.iter().zip(weights.iter()) {
                // A row the matrix does not have (yet) can be neither scored nor picked.
                if row >= 0 && (row as usize) < size {
                    all.push((row as usize, weight, source));
                }
            }
        }
        all.sort_by_key(|&(row, _, _)| row); // stable: a row's first source stays first
        let mut out = Covisits::default();
        let mut sums: Vec<f64> = Vec::new();
        for (row, weight, source) in all {
            if out.rows.last() == Some(&row) {
                *sums.last_mut().expect("a row has a sum") += weight;
            } else {
                out.rows.push(row);
                sums.push(weight);
                out.source.push(source);
            }
        }
        out.boost = sums.into_iter().map(|s| s as f32).collect();
        out
    }

    pub(crate) fn lookup(&self, row: usize) -> Option<(f32, usize)> {
        self.rows.binary_search(&row).ok().map(|at| (self.boost[at], self.source[at]))
    }
}

/// What the caller excludes or requires.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    /// Rows never returned (seen / purchased), ascending.
    pub excluded_rows: Vec<usize>,
    pub available_only: bool,
    /// Only these category codes (ascending), if given.
    pub wanted: Option<Vec<i32>>,
    /// Never these category codes, ascending.
    pub unwanted: Vec<i32>,
    /// At most this many picks per category (0: no cap).
    pub cap: usize,
    /// The price range, bounds included (an item without price is outside any range).
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
}

impl Filters {
    pub fn passes(&self, items: &Items<'_>, row: usize) -> bool {
        if self.excluded_rows.binary_search(&row).is_ok() {
            return false;
        }
        if self.available_only && items.unavailable[row] {
            return false;
        }
        let code = items.category_codes[row];
        if let Some(wanted) = &self.wanted {
            if wanted.binary_search(&code).is_err() {
                return false;
            }
        }
        self.unwanted.binary_search(&code).is_err()
            && price_passes(items.prices[row], (self.min_price, self.max_price))
    }

    /// Whether the slot (a row, or `plan.size + j` for the new item j) passes.
    pub fn passes_slot(&self, items: &Items<'_>, plan: &Plan, slot: usize) -> bool {
        if slot < items.size {
            self.passes(items, slot)
        } else {
            self.passes_new(plan, slot - items.size)
        }
    }

    /// Whether the new item `j` passes (it has no events, so nothing excludes it as seen).
    pub fn passes_new(&self, plan: &Plan, j: usize) -> bool {
        plan.new_item_passes(
            j,
            self.available_only,
            self.wanted.as_deref(),
            &self.unwanted,
            (self.min_price, self.max_price),
        )
    }
}

/// The category code of a slot (a row or a new item).
pub fn slot_category(items: &Items<'_>, plan: &Plan, slot: usize) -> i32 {
    if slot < items.size {
        items.category_codes[slot]
    } else {
        plan.new_items.category_codes[slot - items.size]
    }
}

/// Where the candidates come from.
pub enum Candidates<'a> {
    /// The graph's rows (∪ the rows changed since its snapshot; duplicates allowed), the
    /// lowest inner product it returned (-inf: nothing left out) and how many popular
    /// candidates to add.
    Graph { rows: &'a [isize], bound: f64, fetch: usize },
    /// Every row: exact, for small catalogues or when the graph's answer was not provably right.
    Everything,
}

/// The graph, asked for about `n` candidates: their rows and the lowest inner product.
pub type Nearest<'a, E> = &'a mut dyn FnMut(usize) -> Result<(Vec<isize>, f64), E>;

/// One pick: its row, score and co-visitation source (if any).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub row: usize,
    pub score: f32,
    pub source: Option<usize>,
}

/// Rows of the `n` best blended scores among the popular items, and the best score left out
/// (-inf when every row is taken). Of rows tied at the cut, the most popular are taken.
pub fn best_popular(
    lists: &Lists,
    factors: usize,
    user_vector: &[f32],
    evidence: f64,
    n: usize,
) -> (Vec<usize>, f64) {
    let size = lists.popular_rows.len();
    if n >= size {
        return (lists.popular_rows.clone(), f64::NEG_INFINITY);
    }
    let (weight, rest) = (evidence as f32, (1.0 - evidence) as f32);
    let blended: Vec<f32> = (0..size)
        .map(|i| {
            let vector = &lists.popular_vectors[i * factors..(i + 1) * factors];
            weight * dot(vector, user_vector) + rest * lists.popular_terms[i]
        })
        .collect();
    // The (n+1)-th best is the best left out; NaN sorts above every number (numpy's order).
    let mut sorted = blended.clone();
    let at = size - n - 1;
    sorted.select_nth_unstable_by(at, |a, b| nan_last(*a, *b));
    let cut = sorted[at];
    let mut taken: Vec<usize> = Vec::with_capacity(n);
    taken.extend((0..size).filter(|&i| blended[i] > cut).map(|i| lists.popular_rows[i]));
    for (i, &score) in blended.iter().enumerate() {
        if taken.len() == n {
            break;
        }
        if score == cut {
            taken.push(lists.popular_rows[i]);
        }
    }
    (taken, cut as f64)
}

/// Rows of the `n` best re-weighed scores among the plan's boosted rows (without their
/// co-visitation boost: co-visited rows are candidates anyway), and the best score left out
/// (-inf when every row is taken). Every boosted row is scored: a boost lifts rows from
/// anywhere in the catalogue, which no graph query by inner product finds.
fn best_boosted(
    items: &Items<'_>,
    lists: &Lists,
    user_vector: &[f32],
    evidence: f64,
    merch: Merch<'_>,
    n: usize,
) -> (Vec<usize>, f32) {
    let (plan, gathered) = (merch.plan, merch.boosted_vectors);
    let boosted = &plan.boosted;
    if n >= boosted.len() {
        return (boosted.clone(), f32::NEG_INFINITY);
    }
    let (weight, rest) = (evidence as f32, (1.0 - evidence) as f32);
    let score_of = |row: usize, vector: &[f32]| -> f32 {
        let score = weight * dot(vector, user_vector) + rest * lists.popularity[row];
        adjust(score, plan.factor(row))
    };
    // The n + 1 best finite scores: the first n are taken, the last is the best left out
    // (non-finite scores are never picked, so they bound nothing). Most rows fall below the
    // buffer's last score and cost one comparison.
    let mut best = TopK::new(n + 1);
    if gathered.len() == boosted.len() * items.factors {
        // Gathered, the vectors stream from one block instead of rows across the matrix.
        for (&row, vector) in boosted.iter().zip(gathered.chunks_exact(items.factors.max(1))) {
            best.offer(row, score_of(row, vector));
        }
    } else {
        for &row in boosted {
            best.offer(row, score_of(row, items.vector(row)));
        }
    }
    let left_out = if best.rows.len() > n { best.scores[n] } else { f32::NEG_INFINITY };
    best.rows.truncate(n);
    (best.rows, left_out)
}

fn nan_last(a: f32, b: f32) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.partial_cmp(&b).expect("neither is NaN"),
    }
}

/// Best first, ties to the lower row (scores are finite here).
fn better(a: &(f32, usize), b: &(f32, usize)) -> std::cmp::Ordering {
    b.0.partial_cmp(&a.0).expect("finite scores").then(a.1.cmp(&b.1))
}

/// The best `k` of `scored` (finite, filters passed) honouring the per-category cap, counting
/// from `placed` (categories already in the answer, and how many of each).
fn select(
    items: &Items<'_>,
    mut scored: Vec<(f32, usize)>,
    k: usize,
    cap: usize,
    placed: &[(i32, usize)],
) -> Vec<(f32, usize)> {
    let n = scored.len();
    // Without a cap the k best are the answer; with one, a full category skips picks, so
    // order a few times k and order more only if that was not enough.
    let mut want = if cap == 0 { k } else { k.saturating_mul(CAP_FACTOR) };
    loop {
        let m = want.min(n);
        if m == 0 {
            return Vec::new();
        }
        if m < n {
            scored.select_nth_unstable_by(m - 1, better);
        }
        scored[..m].sort_unstable_by(better);
        let mut picked: Vec<(f32, usize)> = Vec::with_capacity(k);
        let mut per_category: Vec<(i32, usize)> = placed.to_vec();
        for &(score, row) in &scored[..m] {
            let code = items.category_codes[row];
            if cap > 0 && code != NO_CATEGORY {
                match per_category.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, count)) if *count >= cap => continue,
                    Some((_, count)) => *count += 1,
                    None => per_category.push((code, 1)),
                }
            }
            picked.push((score, row));
            if picked.len() == k {
                return picked;
            }
        }
        if m == n {
            return picked;
        }
        want = want.saturating_mul(CAP_FACTOR);
    }
}

/// What the ranking adds to the plain scores: the rules' plan, and the categories already
/// placed (pins, new items) with their counts, where the cap starts from.
#[derive(Clone, Copy)]
pub struct Merch<'a> {
    pub plan: &'a Plan,
    pub placed: &'a [(i32, usize)],
    /// The boosted rows' vectors gathered in the plan's order (empty: read from the matrix).
    pub boosted_vectors: &'a [f32],
}

/// The blended score of a row, re-weighed by the plan's factor.
fn score_row(
    items: &Items<'_>,
    lists: &Lists,
    user_vector: &[f32],
    evidence: f64,
    covisits: &Covisits,
    plan: &Plan,
    row: usize,
) -> f32 {
    let (weight, rest) = (evidence as f32, (1.0 - evidence) as f32);
    let mut score = weight * dot(items.vector(row), user_vector) + rest * lists.popularity[row];
    if let Some((boost, _)) = covisits.lookup(row) {
        score += boost;
    }
    adjust(score, plan.factor(row))
}

/// The best `k` picks of a request, or None when the graph's candidates cannot be shown to
/// hold them (the caller fetches more candidates or asks for `Candidates::Everything`).
#[allow(clippy::too_many_arguments)]
pub fn rank(
    items: &Items<'_>,
    lists: &Lists,
    user_vector: &[f32],
    evidence: f64,
    covisits: &Covisits,
    filters: &Filters,
    merch: Merch<'_>,
    candidates: &Candidates<'_>,
    k: usize,
) -> Option<Vec<Pick>> {
    let plan = merch.plan;
    let score_of = |row: usize| score_row(items, lists, user_vector, evidence, covisits, plan, row);
    let keep = |row: usize| filters.passes(items, row);
    let (scored, bound) = match candidates {
        Candidates::Everything => {
            let scored: Vec<(f32, usize)> = (0..items.size)
                .filter(|&row| keep(row))
                .map(|row| (score_of(row), row))
                .filter(|(score, _)| score.is_finite())
                .collect();
            (scored, None)
        }
        Candidates::Graph { rows, bound, fetch } => {
            let (popular, popular_bound) =
                best_popular(lists, items.factors, user_vector, evidence, *fetch);
            let (boosted, boosted_bound) =
                best_boosted(items, lists, user_vector, evidence, merch, *fetch);
            let mut all: Vec<usize> = rows
                .iter()
                .filter(|&&row| row >= 0 && (row as usize) < items.size)
                .map(|&row| row as usize)
                .chain(popular)
                .chain(covisits.rows.iter().copied())
                .chain(boosted)
                .collect();
            all.sort_unstable();
            all.dedup();
            let scored: Vec<(f32, usize)> = all
                .into_iter()
                .filter(|&row| keep(row))
                .map(|row| (score_of(row), row))
                .filter(|(score, _)| score.is_finite())
                .collect();
            // A row left out has no co-visitation term: it scores at most evidence x the
            // lowest inner product the graph returned, or the best popular score left out,
            // re-weighed by the highest factor of a row the plan does not list as boosted;
            // a boosted row left out, at most the best boosted score left out.
            // (Python's max: a NaN first operand wins; float32 as numpy compares them.)
            let graph_term = evidence * bound;
            let bound = if popular_bound > graph_term { popular_bound } else { graph_term };
            let bound = adjust(bound as f32, plan.left_out_factor);
            let bound = if boosted_bound > bound { boosted_bound } else { bound };
            (scored, Some(bound))
        }
    };
    let picks: Vec<Pick> = select(items, scored, k, filters.cap, merch.placed)
        .into_iter()
        .map(|(score, row)| Pick {
            row,
            score,
            source: covisits.lookup(row).map(|(_, source)| source),
        })
        .collect();
    if let Some(bound) = bound {
        let proven = picks.len() == k && picks.last().is_some_and(|p| p.score >= bound);
        if !proven {
            return None;
        }
    }
    Some(picks)
}

/// The best `k` picks of a request: graph rounds while a graph is given (`nearest(n)`: about
/// the `n` best rows by inner product ∪ rows changed since the graph's snapshot, and the
/// lowest inner product returned, -inf when nothing was left out), brute force when none is
/// or its candidates could not be shown to hold the answer. Also says whether a graph was
/// given and missed (brute force answered).
#[allow(clippy::too_many_arguments)]
pub fn rank_request<E>(
    items: &Items<'_>,
    lists: &Lists,
    user_vector: &[f32],
    evidence: f64,
    covisits: &Covisits,
    filters: &Filters,
    merch: Merch<'_>,
    k: usize,
    nearest: Option<Nearest<'_, E>>,
) -> Result<(Vec<Pick>, bool), E> {
    let graph_given = nearest.is_some();
    if let Some(nearest) = nearest {
        // Excluded rows are skipped among the candidates: fetch enough to leave k after them.
        let mut fetch = ANN_FETCH_MIN.max(2 * k + filters.excluded_rows.len() / 4);
        for _ in 0..ANN_FETCH_ROUNDS {
            let (rows, bound) = nearest(fetch)?;
            let candidates = Candidates::Graph { rows: &rows, bound, fetch };
            if let Some(picks) =
                rank(items, lists, user_vector, evidence, covisits, filters, merch, &candidates, k)
            {
                return Ok((picks, false));
            }
            if bound == f64::NEG_INFINITY {
                break; // the graph was exhausted: only filters left too few
            }
            fetch = fetch.saturating_mul(8);
        }
    }
    let everything = Candidates::Everything;
    let picks = rank(items, lists, user_vector, evidence, covisits, filters, merch, &everything, k)
        .expect("brute force always answers");
    Ok((picks, graph_given))
}

/// One ranked list of an answer without a user vector (cold start, fallback): its rows best
/// first, their scores, the reason code of its picks and how many picks it may give.
pub struct Listed<'a> {
    pub rows: &'a [usize],
    pub scores: &'a [f32],
    pub reason: i64,
    pub quota: usize,
}

/// An answer from ranked lists: pins first, then each list in turn, re-weighed by the plan's
/// factors (ties keep the list's order), up to its quota, skipping what is already taken or
/// fails the filters, honouring the cap.
pub fn answer_from_lists(
    items: &Items<'_>,
    filters: &Filters,
    plan: &Plan,
    lists: &[Listed<'_>],
    k: usize,
) -> Vec<Placed> {
    let mut layout = Layout::new(k, filters.cap);
    let listed_score = |row: usize| -> f32 {
        lists
            .iter()
            .find_map(|l| l.rows.iter().position(|&r| r == row).map(|at| l.scores[at]))
            .map_or(0.0, |score| adjust(score, plan.factor(row)))
    };
    layout.pin(
        plan,
        |slot| filters.passes_slot(items, plan, slot),
        |slot| if slot < items.size { listed_score(slot) } else { 0.0 },
        |slot| slot_category(items, plan, slot),
    );
    let mut taken = layout.placed_slots();
    let want = layout.free();
    let mut chosen: Vec<Placed> = Vec::with_capacity(want);
    for list in lists {
        let mut order: Vec<(f32, usize)> = list
            .rows
            .iter()
            .zip(list.scores)
            .map(|(&row, &score)| (adjust(score, plan.factor(row)), row))
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0)); // stable: ties keep the list's order
        let mut added = 0;
        for (score, row) in order {
            if chosen.len() == want || added == list.quota {
                break;
            }
            let code = items.category_codes[row];
            if !score.is_finite()
                || taken.contains(&row)
                || !filters.passes(items, row)
                || layout.category_full(code)
            {
                continue;
            }
            layout.count(code);
            taken.push(row);
            chosen.push(Placed { slot: row, score, reason: list.reason });
            added += 1;
        }
    }
    // `finish` counts the chosen again: nothing is placed after them.
    layout.finish(plan, chosen, |slot| slot_category(items, plan, slot))
}

/// What a personal request asks of the exploration of new items: how many positions they may
/// take, and the user's recent categories (most recent first) they must be in.
#[derive(Clone, Copy)]
pub struct Explore<'a> {
    pub slots: usize,
    pub recent_categories: &'a [i32],
}

/// The answer to a personal request: pinned items, new items, then the organic picks of
/// [`rank_request`] in the positions left, each with its reason code; and whether a graph was
/// given and missed. A slot >= `items.size` is the new item `slot - items.size`.
#[allow(clippy::too_many_arguments)]
pub fn answer_request<E>(
    items: &Items<'_>,
    lists: &Lists,
    user_vector: &[f32],
    evidence: f64,
    covisits: &Covisits,
    n_sources: usize,
    recent_rows: &[usize],
    filters: &Filters,
    plan: &Plan,
    boosted_vectors: &[f32],
    explore: Explore<'_>,
    k: usize,
    nearest: Option<Nearest<'_, E>>,
) -> Result<(Vec<Placed>, bool), E> {
    let mut layout = Layout::new(k, filters.cap);
    layout.pin(
        plan,
        |slot| filters.passes_slot(items, plan, slot),
        |slot| {
            if slot < items.size {
                score_row(items, lists, user_vector, evidence, covisits, plan, slot)
            } else {
                0.0
            }
        },
        |slot| slot_category(items, plan, slot),
    );
    layout.explore(plan, explore.slots, explore.recent_categories, |j| filters.passes_new(plan, j));
    let k_organic = layout.free();
    let placed_rows: Vec<usize> =
        layout.placed_slots().into_iter().filter(|&slot| slot < items.size).collect();
    let with_placed;
    let organic_filters = if placed_rows.is_empty() {
        filters
    } else {
        let mut excluded = filters.excluded_rows.clone();
        excluded.extend(placed_rows);
        excluded.sort_unstable();
        excluded.dedup();
        with_placed = Filters { excluded_rows: excluded, ..filters.clone() };
        &with_placed
    };
    let (picks, missed) = if k_organic == 0 {
        (Vec::new(), false)
    } else {
        let merch = Merch { plan, placed: layout.placed_categories(), boosted_vectors };
        rank_request(
            items,
            lists,
            user_vector,
            evidence,
            covisits,
            organic_filters,
            merch,
            k_organic,
            nearest,
        )?
    };
    let why = reasons(items, lists, &picks, n_sources, recent_rows, explore.recent_categories);
    let organic: Vec<Placed> = picks
        .iter()
        .zip(why)
        .map(|(pick, reason)| Placed { slot: pick.row, score: pick.score, reason })
        .collect();
    Ok((layout.finish(plan, organic, |slot| slot_category(items, plan, slot)), missed))
}

/// For each of `rows`, the most similar of `history` (cosine): index into `history` and the
/// cosine (None when the history is empty). The first of equally similar history items wins.
pub fn explain_by_similarity(
    items: &Items<'_>,
    rows: &[usize],
    history: &[usize],
) -> Vec<Option<(usize, f32)>> {
    let norm = |row: usize| {
        let v = items.vector(row);
        dot(v, v).sqrt() + 1e-12f32
    };
    let history_norms: Vec<f32> = history.iter().map(|&h| norm(h)).collect();
    rows.iter()
        .map(|&row| {
            let (vector, row_norm) = (items.vector(row), norm(row));
            let mut best: Option<(usize, f32)> = None;
            for (h, (&history_row, &history_norm)) in history.iter().zip(&history_norms).enumerate()
            {
                let cosine = dot(vector, items.vector(history_row)) / (row_norm * history_norm);
                if best.is_none_or(|(_, similarity)| cosine > similarity) {
                    best = Some((h, cosine));
                }
            }
            best
        })
        .collect()
}

/// The reason of each pick: a co-visitation source explains first (its index into the
/// sources), then the most similar recent item if similar enough (`n_sources` + its index
/// into `recent_rows`), then trending, then whether its category is new to the user.
pub fn reasons(
    items: &Items<'_>,
    lists: &Lists,
    picks: &[Pick],
    n_sources: usize,
    recent_rows: &[usize],
    recent_categories: &[i32],
) -> Vec<i64> {
    let unexplained: Vec<usize> =
        picks.iter().filter(|p| p.source.is_none()).map(|p| p.row).collect();
    let mut similar = if recent_rows.is_empty() || unexplained.is_empty() {
        Vec::new()
    } else {
        explain_by_similarity(items, &unexplained, recent_rows)
    }
    .into_iter();
    picks
        .iter()
        .map(|pick| {
            if let Some(source) = pick.source {
                return source as i64;
            }
            if let Some(Some((h, cosine))) = similar.next() {
                if cosine as f64 >= SIMILARITY_REASON_MIN {
                    return (n_sources + h) as i64;
                }
            }
            if lists.trending.binary_search(&pick.row).is_ok() {
                REASON_TRENDING
            } else if !recent_categories.contains(&items.category_codes[pick.row]) {
                REASON_NEW
            } else {
                REASON_RECOMMENDED
            }
        })
        .collect()
}

// --- Python ----------------------------------------------------------------------------------

/// The item side of ranking for one version of the item matrix and the ranked lists.
#[pyclass(module = "operators._native", frozen)]
pub struct Ranker {
    matrix: Py<PyArray2<f32>>,
    category_codes: Py<PyArray1<i32>>,
    unavailable: Py<PyArray1<bool>>,
    norms: Py<PyArray1<f32>>,
    prices: Py<PyArray1<f64>>,
    size: usize,
    factors: usize,
    lists: Lists,
    /// Requests with a graph that brute force answered (its candidates were not provably
    /// enough): a rising share says the graph's recall or the fetch sizes fell short.
    graph_misses: AtomicU64,
    /// The boosted rows' vectors of the last plan (by id), gathered once: every request
    /// scores them all. Never locked across a call into Python.
    boosted_vectors: Mutex<(u64, Arc<Vec<f32>>)>,
}

fn rows_in(rows: &[isize], size: usize, what: &str) -> PyResult<Vec<usize>> {
    rows.iter()
        .map(|&row| {
            if row >= 0 && (row as usize) < size {
                Ok(row as usize)
            } else {
                Err(PyValueError::new_err(format!("{what}: row {row} is not in 0..{size}")))
            }
        })
        .collect()
}

impl Filters {
    /// A request's filters as the handler passes them: excluded rows outside `0..size` are
    /// dropped, the rest and the category codes sorted and deduplicated, the price range
    /// checked.
    #[allow(clippy::too_many_arguments)]
    fn of_request(
        size: usize,
        excluded_rows: Vec<isize>,
        available_only: bool,
        wanted_categories: Option<Vec<i32>>,
        unwanted_categories: Vec<i32>,
        max_per_category: usize,
        min_price: Option<f64>,
        max_price: Option<f64>,
    ) -> PyResult<Filters> {
        let mut excluded: Vec<usize> = excluded_rows
            .into_iter()
            .filter(|&r| r >= 0 && (r as usize) < size)
            .map(|r| r as usize)
            .collect();
        excluded.sort_unstable();
        excluded.dedup();
        let (min_price, max_price) = price_range(min_price, max_price)?;
        Ok(Filters {
            excluded_rows: excluded,
            available_only,
            wanted: wanted_categories.map(sorted_codes),
            unwanted: sorted_codes(unwanted_categories),
            cap: max_per_category,
            min_price,
            max_price,
        })
    }
}

fn sorted_codes(mut codes: Vec<i32>) -> Vec<i32> {
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// The request's price range, refused when empty or not a number.
fn price_range(
    min_price: Option<f64>,
    max_price: Option<f64>,
) -> PyResult<(Option<f64>, Option<f64>)> {
    if min_price.is_some_and(f64::is_nan) || max_price.is_some_and(f64::is_nan) {
        return Err(PyValueError::new_err("a price bound is NaN"));
    }
    if let (Some(low), Some(high)) = (min_price, max_price) {
        if low > high {
            return Err(PyValueError::new_err(format!(
                "min_price {} is above max_price {}",
                py_float(low),
                py_float(high)
            )));
        }
    }
    Ok((min_price, max_price))
}

impl Ranker {
    /// Run `f` over the item side, the arrays borrowed read-only (zero-copy).
    fn with_items<R>(&self, py: Python<'_>, f: impl FnOnce(&Items<'_>) -> R) -> PyResult<R> {
        let matrix = self.matrix.bind(py).readonly();
        let codes = self.category_codes.bind(py).readonly();
        let unavailable = self.unavailable.bind(py).readonly();
        let prices = self.prices.bind(py).readonly();
        let items = Items {
            matrix: matrix.as_slice()?,
            factors: self.factors,
            size: self.size,
            category_codes: codes.as_slice()?,
            unavailable: unavailable.as_slice()?,
            prices: prices.as_slice()?,
        };
        Ok(f(&items))
    }

    /// The vectors of the plan's boosted rows, gathered on the plan's first request (none
    /// when there are too few to be worth it).
    fn gathered(&self, items: &Items<'_>, plan: &Plan) -> Arc<Vec<f32>> {
        if plan.boosted.len() <= ANN_FETCH_MIN {
            return Arc::new(Vec::new());
        }
        let mut cache = self.boosted_vectors.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != plan.id {
            let mut vectors = Vec::with_capacity(plan.boosted.len() * items.factors);
            for &row in &plan.boosted {
                vectors.extend_from_slice(items.vector(row));
            }
            *cache = (plan.id, Arc::new(vectors));
        }
        Arc::clone(&cache.1)
    }

    /// The plan of `merchandising` (checked to be of these items), or an empty one.
    fn plan<'a>(
        &self,
        merchandising: &'a Option<PyRef<'_, Merchandising>>,
        empty: &'a Plan,
    ) -> PyResult<&'a Plan> {
        match merchandising {
            Some(m) if m.plan.size != self.size => Err(PyValueError::new_err(format!(
                "merchandising compiled for {} items, the ranker has {}",
                m.plan.size, self.size
            ))),
            Some(m) => Ok(&m.plan),
            None => Ok(empty),
        }
    }
}

/// Slots, scores and reason codes of an answer.
type Answer = (Vec<usize>, Vec<f32>, Vec<i64>);

fn answer(placed: &[Placed]) -> Answer {
    (
        placed.iter().map(|p| p.slot).collect(),
        placed.iter().map(|p| p.score).collect(),
        placed.iter().map(|p| p.reason).collect(),
    )
}

#[pymethods]
impl Ranker {
    /// Hold the item arrays (by reference: serving overwrites rows in place, and a request
    /// racing with that sees the old or the new vector of an item) and gather the popular
    /// items' vectors. ``prices``: NaN for an item without price (None: no prices).
    #[new]
    #[pyo3(signature = (
        matrix, size, category_codes, unavailable, norms, popular_rows, trending_rows,
        prices=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        matrix: Bound<'_, PyArray2<f32>>,
        size: usize,
        category_codes: Bound<'_, PyArray1<i32>>,
        unavailable: Bound<'_, PyArray1<bool>>,
        norms: Bound<'_, PyArray1<f32>>,
        popular_rows: Vec<Option<isize>>,
        trending_rows: Vec<isize>,
        prices: Option<Bound<'_, PyArray1<f64>>>,
    ) -> PyResult<Self> {
        if !matrix.is_c_contiguous() {
            return Err(PyValueError::new_err("the item matrix must be C-contiguous"));
        }
        let prices = match prices {
            Some(prices) => prices,
            None => PyArray1::from_vec(py, vec![f64::NAN; size]),
        };
        let shape = matrix.shape();
        let short: Vec<&str> = [
            ("matrix", shape[0]),
            ("category_codes", category_codes.len()),
            ("unavailable", unavailable.len()),
            ("norms", norms.len()),
            ("prices", prices.len()),
        ]
        .into_iter()
        .filter(|&(_, len)| len < size)
        .map(|(name, _)| name)
        .collect();
        if !short.is_empty() {
            return Err(PyValueError::new_err(format!(
                "item matrix of {size} items has short per-row arrays: {short:?}"
            )));
        }
        let popular: Vec<Option<usize>> = popular_rows
            .iter()
            .map(|row| row.map(|r| rows_in(&[r], size, "popular_rows").map(|v| v[0])).transpose())
            .collect::<PyResult<_>>()?;
        let trending = rows_in(&trending_rows, size, "trending_rows")?;
        let factors = shape[1];
        let lists = {
            let matrix_ro = matrix.readonly();
            let codes = category_codes.readonly();
            let unav = unavailable.readonly();
            let prices_ro = prices.readonly();
            let items = Items {
                matrix: matrix_ro.as_slice()?,
                factors,
                size,
                category_codes: codes.as_slice()?,
                unavailable: unav.as_slice()?,
                prices: prices_ro.as_slice()?,
            };
            Lists::build(&items, &popular, &trending)
        };
        Ok(Ranker {
            matrix: matrix.unbind(),
            category_codes: category_codes.unbind(),
            unavailable: unavailable.unbind(),
            norms: norms.unbind(),
            prices: prices.unbind(),
            size,
            factors,
            lists,
            graph_misses: AtomicU64::new(0),
            boosted_vectors: Mutex::new((0, Arc::new(Vec::new()))),
        })
    }

    /// Items ranked (rows with factors).
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// Requests given a graph that brute force answered.
    #[getter]
    fn graph_misses(&self) -> u64 {
        self.graph_misses.load(Ordering::Relaxed)
    }

    /// Rows of the popular items that have factors, most popular first.
    #[getter]
    fn popular_rows(&self) -> Vec<usize> {
        self.lists.popular_rows.clone()
    }

    /// The best ``k`` picks for a user: slots, scores and reasons. ``nearest(n)``, if given,
    /// returns graph candidates (intp rows) and the lowest inner product among them.
    #[pyo3(signature = (
        user_vector, evidence, k, *, nearest, covisits, excluded_rows, available_only,
        wanted_categories, unwanted_categories, max_per_category, recent_rows, recent_categories,
        min_price=None, max_price=None, merchandising=None, new_item_slots=0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn rank(
        &self,
        py: Python<'_>,
        user_vector: &[u8],
        evidence: f64,
        k: usize,
        nearest: Option<Bound<'_, PyAny>>,
        covisits: Vec<Option<(PyReadonlyArray1<'_, isize>, PyReadonlyArray1<'_, f64>)>>,
        excluded_rows: Vec<isize>,
        available_only: bool,
        wanted_categories: Option<Vec<i32>>,
        unwanted_categories: Vec<i32>,
        max_per_category: usize,
        recent_rows: Vec<isize>,
        recent_categories: Vec<i32>,
        min_price: Option<f64>,
        max_price: Option<f64>,
        merchandising: Option<PyRef<'_, Merchandising>>,
        new_item_slots: usize,
    ) -> PyResult<Answer> {
        if user_vector.len() != self.factors * 4 {
            return Err(PyValueError::new_err(format!(
                "the user vector must be {} float32 bytes, got {}",
                self.factors * 4,
                user_vector.len()
            )));
        }
        let user: Vec<f32> = user_vector
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let recent = rows_in(&recent_rows, self.size, "recent_rows")?;
        let mut lists: Vec<(&[isize], &[f64])> = Vec::with_capacity(covisits.len());
        for entry in &covisits {
            match entry {
                Some((rows, weights)) => {
                    let (rows, weights) = (rows.as_slice()?, weights.as_slice()?);
                    if rows.len() != weights.len() {
                        return Err(PyValueError::new_err(
                            "co-visitation rows and weights differ in length",
                        ));
                    }
                    lists.push((rows, weights));
                }
                None => lists.push((&[], &[])),
            }
        }
        let covisits = Covisits::combine(&lists, self.size);
        let filters = Filters::of_request(
            self.size,
            excluded_rows,
            available_only,
            wanted_categories,
            unwanted_categories,
            max_per_category,
            min_price,
            max_price,
        )?;
        let empty = Plan::empty(self.size);
        let plan = self.plan(&merchandising, &empty)?;
        let explore = Explore { slots: new_item_slots, recent_categories: &recent_categories };
        let mut ask_graph = |n: usize| -> PyResult<(Vec<isize>, f64)> {
            let graph = nearest.as_ref().expect("called only with a graph");
            let (rows, bound): (PyReadonlyArray1<'_, isize>, f64) = graph.call1((n,))?.extract()?;
            Ok((rows.as_slice()?.to_vec(), bound))
        };
        let ask: Option<Nearest<'_, PyErr>> =
            if nearest.is_some() { Some(&mut ask_graph) } else { None };
        self.with_items(py, |items| {
            let gathered = self.gathered(items, plan);
            let (placed, graph_missed) = answer_request(
                items,
                &self.lists,
                &user,
                evidence,
                &covisits,
                lists.len(),
                &recent,
                &filters,
                plan,
                &gathered,
                explore,
                k,
                ask,
            )?;
            if graph_missed {
                self.graph_misses.fetch_add(1, Ordering::Relaxed);
            }
            Ok(answer(&placed))
        })?
    }

    /// The ``k`` rows most similar to ``row`` (cosine over the factors), best first, with
    /// their cosines; ``row`` itself and non-finite similarities are left out.
    fn similar(&self, py: Python<'_>, row: usize, k: usize) -> PyResult<(Vec<usize>, Vec<f32>)> {
        if row >= self.size {
            return Err(PyValueError::new_err(format!("row {row} is not in 0..{}", self.size)));
        }
        let norms = self.norms.bind(py).readonly();
        let norms = norms.as_slice()?;
        self.with_items(py, |items| {
            top_cosine(items.matrix, items.factors, items.size, norms, row, k)
        })
    }

    /// An answer without a user vector (cold start, fallback) from ranked ``lists``: each
    /// (rows best first, scores, reason code, quota) in turn after the pins, re-weighed by the
    /// rules and filtered: slots, scores and reasons.
    #[pyo3(signature = (
        lists, k, *, excluded_rows, available_only, wanted_categories, unwanted_categories,
        max_per_category, min_price=None, max_price=None, merchandising=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn rank_lists(
        &self,
        py: Python<'_>,
        lists: Vec<(PyReadonlyArray1<'_, isize>, PyReadonlyArray1<'_, f32>, i64, usize)>,
        k: usize,
        excluded_rows: Vec<isize>,
        available_only: bool,
        wanted_categories: Option<Vec<i32>>,
        unwanted_categories: Vec<i32>,
        max_per_category: usize,
        min_price: Option<f64>,
        max_price: Option<f64>,
        merchandising: Option<PyRef<'_, Merchandising>>,
    ) -> PyResult<Answer> {
        let mut rows: Vec<Vec<usize>> = Vec::with_capacity(lists.len());
        for (list_rows, scores, _, _) in &lists {
            let list_rows = rows_in(list_rows.as_slice()?, self.size, "lists")?;
            if list_rows.len() != scores.len() {
                return Err(PyValueError::new_err("a list's rows and scores differ in length"));
            }
            rows.push(list_rows);
        }
        let listed: Vec<Listed<'_>> = lists
            .iter()
            .zip(&rows)
            .map(|((_, scores, reason, quota), rows)| {
                Ok(Listed { rows, scores: scores.as_slice()?, reason: *reason, quota: *quota })
            })
            .collect::<PyResult<_>>()?;
        let filters = Filters::of_request(
            self.size,
            excluded_rows,
            available_only,
            wanted_categories,
            unwanted_categories,
            max_per_category,
            min_price,
            max_price,
        )?;
        let empty = Plan::empty(self.size);
        let plan = self.plan(&merchandising, &empty)?;
        self.with_items(py, |items| answer(&answer_from_lists(items, &filters, plan, &listed, k)))
    }

    /// Items to show next to ``row`` (None: an item without factors): pins, then the best
    /// ``k`` by cosine blended with co-visitation (``covisits``: the item's neighbour rows and
    /// weights), all filtered and re-weighed before the top-K: slots, scores and reasons.
    #[pyo3(signature = (
        row, k, *, covisits, available_only, wanted_categories, unwanted_categories,
        min_price=None, max_price=None, merchandising=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn similar_items(
        &self,
        py: Python<'_>,
        row: Option<usize>,
        k: usize,
        covisits: Option<(PyReadonlyArray1<'_, isize>, PyReadonlyArray1<'_, f64>)>,
        available_only: bool,
        wanted_categories: Option<Vec<i32>>,
        unwanted_categories: Vec<i32>,
        min_price: Option<f64>,
        max_price: Option<f64>,
        merchandising: Option<PyRef<'_, Merchandising>>,
    ) -> PyResult<Answer> {
        if let Some(row) = row.filter(|&r| r >= self.size) {
            return Err(PyValueError::new_err(format!("row {row} is not in 0..{}", self.size)));
        }
        let covisits = match &covisits {
            Some((rows, weights)) => {
                let (rows, weights) = (rows.as_slice()?, weights.as_slice()?);
                if rows.len() != weights.len() {
                    return Err(PyValueError::new_err(
                        "co-visitation rows and weights differ in length",
                    ));
                }
                Covisits::combine(&[(rows, weights)], self.size)
            }
            None => Covisits::default(),
        };
        let (min_price, max_price) = price_range(min_price, max_price)?;
        let filters = Filters {
            excluded_rows: Vec::new(),
            available_only,
            wanted: wanted_categories.map(sorted_codes),
            unwanted: sorted_codes(unwanted_categories),
            cap: 0,
            min_price,
            max_price,
        };
        let empty = Plan::empty(self.size);
        let plan = self.plan(&merchandising, &empty)?;
        let norms = self.norms.bind(py).readonly();
        let norms = norms.as_slice()?;
        let request = SimilarRequest { row, covisits: &covisits, filters: &filters, k };
        self.with_items(py, |items| answer(&similar_items(items, norms, plan, &request)))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Ranker>()?;
    m.add("NO_CATEGORY", NO_CATEGORY)?;
    m.add("REASON_TRENDING", REASON_TRENDING)?;
    m.add("REASON_NEW", REASON_NEW)?;
    m.add("REASON_RECOMMENDED", REASON_RECOMMENDED)?;
    m.add("SIMILARITY_REASON_MIN", SIMILARITY_REASON_MIN)?;
    m.add("ANN_FETCH_MIN", ANN_FETCH_MIN)?;
    m.add("ANN_FETCH_ROUNDS", ANN_FETCH_ROUNDS)?;
    m.add("REASON_VIEWED_TOGETHER", REASON_VIEWED_TOGETHER)?;
    m.add("REASON_SIMILAR", REASON_SIMILAR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four items in two dimensions: row r points along (4 - r, 0) except row 3 at (0, 1).
    struct Fixture {
        matrix: Vec<f32>,
        codes: Vec<i32>,
        unavailable: Vec<bool>,
        prices: Vec<f64>,
    }

    impl Fixture {
        fn new(matrix: Vec<f32>, codes: Vec<i32>) -> Fixture {
            let unavailable = vec![false; codes.len()];
            let prices = vec![f64::NAN; codes.len()];
            Fixture { matrix, codes, unavailable, prices }
        }
        fn items(&self) -> Items<'_> {
            Items {
                matrix: &self.matrix,
                factors: self.matrix.len() / self.codes.len(),
                size: self.codes.len(),
                category_codes: &self.codes,
                unavailable: &self.unavailable,
                prices: &self.prices,
            }
        }
    }

    fn no_merch() -> Merch<'static> {
        Merch { plan: Box::leak(Box::new(Plan::empty(0))), placed: &[], boosted_vectors: &[] }
    }

    fn no_lists(items: &Items<'_>) -> Lists {
        Lists::build(items, &[], &[])
    }

    fn rows(picks: &[Pick]) -> Vec<usize> {
        picks.iter().map(|p| p.row).collect()
    }

    #[test]
    fn covisits_sum_per_row_and_keep_the_most_recent_source() {
        let lists: [(&[isize], &[f64]); 3] =
            [(&[5, 2, 99], &[0.25, 0.5, 1.0]), (&[], &[]), (&[2, 7, -1], &[0.125, 1.0, 1.0])];
        let c = Covisits::combine(&lists, 10);
        assert_eq!(c.rows, vec![2, 5, 7]); // 99 and -1: no such rows
        assert_eq!(c.boost, vec![0.625, 0.25, 1.0]);
        assert_eq!(c.source, vec![0, 0, 2]);
    }

    #[test]
    fn best_popular_takes_the_n_best_and_bounds_the_rest() {
        let f = Fixture::new(vec![1., 0., 3., 0., 2., 0., 3., 0.], vec![NO_CATEGORY; 4]);
        let items = f.items();
        let lists = Lists::build(&items, &[Some(0), None, Some(1), Some(2), Some(3)], &[]);
        assert_eq!(lists.popular_terms, vec![1.0, 0.6, 0.4, 0.2]);
        // evidence 1: the dot products 1, 3, 2, 3 alone; rows 1 and 3 tie at the top.
        let (taken, bound) = best_popular(&lists, 2, &[1.0, 0.0], 1.0, 2);
        assert_eq!((taken, bound), (vec![1, 3], 2.0));
        let (taken, bound) = best_popular(&lists, 2, &[1.0, 0.0], 1.0, 1);
        assert_eq!((taken, bound), (vec![1], 3.0)); // ties at the cut: the most popular
        let (taken, bound) = best_popular(&lists, 2, &[1.0, 0.0], 0.5, 4);
        assert_eq!((taken, bound), (vec![0, 1, 2, 3], f64::NEG_INFINITY));
    }

    #[test]
    fn a_full_category_skips_to_the_next_best() {
        let f = Fixture::new(
            vec![1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.],
            vec![7, 7, NO_CATEGORY, 8],
        );
        let items = f.items();
        let filters = Filters { cap: 1, ..Filters::default() };
        let picks = rank(
            &items,
            &no_lists(&items),
            &[4., 3., 2., 1.],
            1.0,
            &Covisits::default(),
            &filters,
            no_merch(),
            &Candidates::Everything,
            3,
        )
        .unwrap();
        assert_eq!(rows(&picks), vec![0, 2, 3]); // row 1: category 7 is full
        assert_eq!(picks.iter().map(|p| p.score).collect::<Vec<_>>(), vec![4., 2., 1.]);
    }

    #[test]
    fn ties_go_to_the_lower_row_among_many_candidates() {
        let n = 300;
        let matrix: Vec<f32> = (0..n).map(|r| if r % 7 == 0 { 2.0 } else { 1.0 }).collect();
        let f = Fixture::new(matrix, vec![NO_CATEGORY; n]);
        let items = f.items();
        let picks = rank(
            &items,
            &no_lists(&items),
            &[1.0],
            1.0,
            &Covisits::default(),
            &Filters::default(),
            no_merch(),
            &Candidates::Everything,
            100,
        )
        .unwrap();
        let best: Vec<usize> = (0..n).step_by(7).collect();
        let rest = (0..n).filter(|r| r % 7 != 0).take(100 - best.len());
        assert_eq!(rows(&picks), best.iter().copied().chain(rest).collect::<Vec<_>>());
    }

    #[test]
    fn filters_leave_out_excluded_unavailable_unwanted_and_non_finite_rows() {
        let mut f = Fixture::new(
            vec![5., 4., 3., 2., 1., f32::NAN, f32::INFINITY],
            vec![1, 1, 2, 3, 3, 3, 3],
        );
        f.unavailable[1] = true;
        let items = f.items();
        let filters = Filters {
            excluded_rows: vec![0],
            available_only: true,
            wanted: Some(vec![1, 2, 3]),
            unwanted: vec![2],
            cap: 0,
            min_price: None,
            max_price: None,
        };
        let lists = no_lists(&items);
        let picks = rank(
            &items,
            &lists,
            &[1.0],
            1.0,
            &Covisits::default(),
            &filters,
            no_merch(),
            &Candidates::Everything,
            10,
        )
        .unwrap();
        assert_eq!(rows(&picks), vec![3, 4]);
        let only_one = Filters { wanted: Some(vec![1]), available_only: false, ..filters };
        let picks = rank(
            &items,
            &lists,
            &[1.0],
            1.0,
            &Covisits::default(),
            &only_one,
            no_merch(),
            &Candidates::Everything,
            10,
        );
        assert_eq!(rows(&picks.unwrap()), vec![1]);
    }

    #[test]
    fn a_graph_answer_is_returned_only_when_the_bound_proves_it() {
        // Inner products 0..9 by row; the graph returns the rows it is given.
        let f = Fixture::new((0..10).map(|r| r as f32).collect(), vec![NO_CATEGORY; 10]);
        let items = f.items();
        let lists = no_lists(&items);
        let covisits = Covisits::default();
        let filters = Filters::default();
        let graph =
            |rows: &'static [isize], bound: f64| Candidates::Graph { rows, bound, fetch: 30 };
        let run = |c: &Candidates<'_>| {
            rank(&items, &lists, &[1.0], 1.0, &covisits, &filters, no_merch(), c, 2)
        };
        assert_eq!(rows(&run(&graph(&[9, 8, 7], 7.0)).unwrap()), vec![9, 8]);
        // Row 9 was missed: 7 may be beaten by what was left out (bound 8).
        assert_eq!(run(&graph(&[8, 7, 6], 8.0)), None);
        assert_eq!(run(&graph(&[9], f64::NEG_INFINITY)), None); // fewer than k
        // rank_request fetches again, then brute-forces.
        let mut asked = Vec::new();
        let mut nearest = |n: usize| -> Result<(Vec<isize>, f64), ()> {
            asked.push(n);
            Ok((vec![8, 7, 6], 8.0))
        };
        let (picks, missed) = rank_request(
            &items,
            &lists,
            &[1.0],
            1.0,
            &covisits,
            &filters,
            no_merch(),
            2,
            Some(&mut nearest),
        )
        .unwrap();
        assert_eq!((rows(&picks), missed), (vec![9, 8], true));
        assert_eq!(asked, vec![ANN_FETCH_MIN, 8 * ANN_FETCH_MIN]);
    }

    #[test]
    fn reasons_name_the_source_then_a_similar_recent_item_then_the_lists() {
        // Rows: 0 (1,0) 1 (0,1) 2 (1,1) 3 (-1,0) 4 (0,-1); categories 5, 6, 6, 7, 7.
        let f = Fixture::new(vec![1., 0., 0., 1., 1., 1., -1., 0., 0., -1.], vec![5, 6, 6, 7, 7]);
        let items = f.items();
        let lists = Lists::build(&items, &[], &[3]);
        let pick = |row, source| Pick { row, score: 1.0, source };
        let picks = [pick(2, Some(1)), pick(1, None), pick(3, None), pick(4, None)];
        // Two sources; recent history: row 0 (category 5) and row 1... which is picked too.
        let why = reasons(&items, &lists, &picks, 2, &[0], &[5, 6]);
        // 2: co-visited via source 1; 1: cosine to row 0 is 0 (< 0.3), not trending, category
        // 6 is the user's; 3: trending; 4: category 7 is new to the user.
        assert_eq!(why, vec![1, REASON_RECOMMENDED, REASON_TRENDING, REASON_NEW]);
        let why = reasons(&items, &lists, &[pick(2, None)], 2, &[4, 0], &[]);
        assert_eq!(why, vec![3]); // similar to row 0 (index 1 of the history), after 2 sources
    }
}
