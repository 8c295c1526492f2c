//! Factor similarity: the float32 inner product every ranking step is built on, and the cosine
//! top-K of one item against the catalogue (`/v1/items/{id}/similar`).
//!
//! Sums are float32 and reassociated (eight partial sums), so the loop vectorises; results
//! can differ from a sequential sum in the last bits, never for small integers.

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
    let mut best_rows: Vec<usize> = Vec::with_capacity(k);
    let mut best: Vec<f32> = Vec::with_capacity(k);
    if k == 0 || factors == 0 {
        return (best_rows, best);
    }
    let query = &matrix[row * factors..(row + 1) * factors];
    let query_norm = norms[row] + NORM_EPSILON;
    for (r, vector) in matrix[..size * factors].chunks_exact(factors).enumerate() {
        if r == row {
            continue;
        }
        let cosine = dot(vector, query) / ((norms[r] + NORM_EPSILON) * query_norm);
        if !cosine.is_finite() || (best.len() == k && !(cosine > best[k - 1])) {
            continue;
        }
        // Equal stays ahead: the lower row first.
        let at = best.partition_point(|&b| b >= cosine);
        if best.len() == k {
            best.pop();
            best_rows.pop();
        }
        best.insert(at, cosine);
        best_rows.insert(at, r);
    }
    (best_rows, best)
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
