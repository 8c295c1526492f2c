//! Factor similarity: the float32 inner product every ranking step is built on, the cosine
//! top-K of one item against the catalogue, and the items shown next to a product
//! (`/v1/items/{id}/similar`): every row that passes the request's filters scored by
//! `0.5 x cosine + co-visitation weight`, re-weighed by the shop's rules, pins first
//! (`merchandising.rs`), in one pass over the catalogue.
//!
//! Sums are float32 and reassociated (eight partial sums), so the loop vectorises; results
//! can differ from a sequential sum in the last bits, never for small integers.

use crate::merchandising::{Layout, Placed, Plan, adjust};
use crate::ranking::{Covisits, Filters, Items, slot_category};

/// Reason codes of similar items: co-visited with the item, or close in factor space.
pub const REASON_VIEWED_TOGETHER: i64 = -6;
pub const REASON_SIMILAR: i64 = -7;
/// Weight of the cosine in the blend with co-visitation (whose weights are at most 1).
pub const COSINE_WEIGHT: f32 = 0.5;

/// `<a, b>` of two equal-length float32 vectors, summed in float32 over eight lanes.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 8];
    let mut a8 = a.chunks_exact(8);
    let mut b8 = b.chunks_exact(8);
    for (x, y) in (&mut a8).zip(&mut b8) {
        for j in 0..8 {
            lanes[j] += x[j] * y[j];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in a8.remainder().iter().zip(b8.remainder()) {
        tail += x * y;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + tail
}

/// Norms are offset by this before dividing: a zero vector has cosine 0, not NaN.
const NORM_EPSILON: f32 = 1e-9;

/// The `k` rows of `matrix[..size]` (`factors` floats per row) most similar to `row`
/// (cosine), best first: rows and cosines.
///
/// `norms` holds each row's norm (kept by the caller, so no request touches the matrix twice).
/// `row` itself and non-finite similarities are left out; ties go to the lower row. One pass
/// with a k-sized buffer: no catalogue-sized temporaries.
pub fn top_cosine(
    matrix: &[f32],
    factors: usize,
    size: usize,
    norms: &[f32],
    row: usize,
    k: usize,
) -> (Vec<usize>, Vec<f32>) {
    let mut best = TopK::new(k);
    if k == 0 || factors == 0 {
        return (best.rows, best.scores);
    }
    let query = &matrix[row * factors..(row + 1) * factors];
    let query_norm = norms[row] + NORM_EPSILON;
    for (r, vector) in matrix[..size * factors].chunks_exact(factors).enumerate() {
        if r != row {
            best.offer(r, dot(vector, query) / ((norms[r] + NORM_EPSILON) * query_norm));
        }
    }
    (best.rows, best.scores)
}

/// The `k` best (row, score) offered, best first, ties to the earlier (lower) row; non-finite
/// scores are never kept.
pub(crate) struct TopK {
    k: usize,
    pub(crate) rows: Vec<usize>,
    pub(crate) scores: Vec<f32>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> TopK {
        TopK { k, rows: Vec::with_capacity(k), scores: Vec::with_capacity(k) }
    }

    /// Whether `score` would enter (checked before the costlier filters).
    #[inline]
    fn would_take(&self, score: f32) -> bool {
        let k = self.k;
        k > 0 && score.is_finite() && (self.scores.len() < k || score > self.scores[k - 1])
    }

    #[inline]
    pub(crate) fn offer(&mut self, row: usize, score: f32) {
        if !self.would_take(score) {
            return;
        }
        let k = self.k;
        // Equal stays ahead: the lower row first.
        let at = self.scores.partition_point(|&b| b >= score);
        if self.scores.len() == k {
            self.scores.pop();
            self.rows.pop();
        }
        self.scores.insert(at, score);
        self.rows.insert(at, row);
    }
}

/// What `/v1/items/{id}/similar` asks: the item's row (None: it has no factors), its
/// co-visited neighbours (one source), the filters and how many items.
pub struct SimilarRequest<'a> {
    pub row: Option<usize>,
    pub covisits: &'a Covisits,
    pub filters: &'a Filters,
    pub k: usize,
}

/// The items shown next to a product: pinned items first, then the best of every other row
/// that passes the filters by `COSINE_WEIGHT x cosine + co-visitation weight` (an item without
/// factors: its co-visited rows by their weight alone), re-weighed by the plan's factors, each
/// with its reason. One pass over the catalogue with a k-sized buffer.
pub fn similar_items(
    items: &Items<'_>,
    norms: &[f32],
    plan: &Plan,
    request: &SimilarRequest<'_>,
) -> Vec<Placed> {
    let (filters, covisits) = (request.filters, request.covisits);
    let query = request.row.map(|q| (items.vector(q), norms[q] + NORM_EPSILON));
    let blended = |r: usize, covisit: Option<f32>| -> f32 {
        let score = match query {
            Some((vector, norm)) => {
                let cosine = dot(items.vector(r), vector) / ((norms[r] + NORM_EPSILON) * norm);
                COSINE_WEIGHT * cosine + covisit.unwrap_or(0.0)
            }
            None => covisit.unwrap_or(f32::NAN), // no factors, no co-visit: no score
        };
        adjust(score, plan.factor(r))
    };
    let mut layout = Layout::new(request.k, 0);
    layout.pin(
        plan,
        |slot| Some(slot) != request.row && filters.passes_slot(items, plan, slot),
        |slot| {
            if slot < items.size {
                blended(slot, covisits.lookup(slot).map(|(w, _)| w))
            } else {
                0.0
            }
        },
        |slot| slot_category(items, plan, slot),
    );
    let pinned = layout.placed_slots();
    let keep = |r: usize| {
        Some(r) != request.row
            && (pinned.is_empty() || pinned.binary_search(&r).is_err())
            && filters.passes(items, r)
    };
    let mut best = TopK::new(layout.free());
    if let Some((query, query_norm)) = query.filter(|_| items.factors > 0) {
        // Rows ascend and so do the co-visited rows: one cursor finds each row's weight. The
        // filters are asked only of a row whose score would enter the top k.
        let mut next_covisit = 0;
        let vectors = items.matrix[..items.size * items.factors].chunks_exact(items.factors);
        for (r, vector) in vectors.enumerate() {
            while next_covisit < covisits.rows.len() && covisits.rows[next_covisit] < r {
                next_covisit += 1;
            }
            let covisit = if covisits.rows.get(next_covisit) == Some(&r) {
                covisits.boost[next_covisit]
            } else {
                0.0
            };
            let cosine = dot(vector, query) / ((norms[r] + NORM_EPSILON) * query_norm);
            let score = adjust(COSINE_WEIGHT * cosine + covisit, plan.factor(r));
            if best.would_take(score) && keep(r) {
                best.offer(r, score);
            }
        }
    } else {
        for (&r, &weight) in covisits.rows.iter().zip(&covisits.boost) {
            if keep(r) {
                best.offer(r, blended(r, Some(weight)));
            }
        }
    }
    let organic: Vec<Placed> = best
        .rows
        .iter()
        .zip(&best.scores)
        .map(|(&slot, &score)| {
            let reason = if covisits.lookup(slot).is_some() {
                REASON_VIEWED_TOGETHER
            } else {
                REASON_SIMILAR
            };
            Placed { slot, score, reason }
        })
        .collect();
    layout.finish(plan, organic, |slot| slot_category(items, plan, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norms(matrix: &[f32], factors: usize) -> Vec<f32> {
        matrix.chunks_exact(factors).map(|v| dot(v, v).sqrt()).collect()
    }

    #[test]
    fn dot_is_exact_on_small_integers_at_every_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
            let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot(&a, &b), expected, "length {n}");
        }
    }

    #[test]
    fn ties_go_to_the_lower_row_and_non_finite_rows_are_left_out() {
        // Rows 1 and 4 point the same way as row 0 (cosine 1): the lower first. Row 2 is NaN;
        // row 6 has no direction (cosine 0, finite thanks to the epsilon).
        let matrix = [1., 0., 2., 0., f32::NAN, 1., 0., 1., 3., 0., 1., 1., 0., 0.];
        let norms = norms(&matrix, 2);
        let (rows, cosines) = top_cosine(&matrix, 2, 7, &norms, 0, 10);
        assert_eq!(rows, vec![1, 4, 5, 3, 6]);
        assert!((cosines[0] - 1.0).abs() < 1e-6 && (cosines[1] - 1.0).abs() < 1e-6);
        assert_eq!(top_cosine(&matrix, 2, 7, &norms, 0, 2).0, vec![1, 4]);
    }

    #[test]
    fn rows_past_size_and_k_zero_give_nothing_extra() {
        let matrix = [1., 0., 1., 0., 1., 0.];
        let norms = norms(&matrix, 2);
        assert_eq!(top_cosine(&matrix, 2, 2, &norms, 0, 5).0, vec![1]);
        assert!(top_cosine(&matrix, 2, 3, &norms, 0, 0).0.is_empty());
    }
}
