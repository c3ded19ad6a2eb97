//! The interquartile filter used by both scores, in f64 and a fixed order.
//!
//! Quartiles are those of linear interpolation between order statistics
//! (numpy's default, "type 7"): for sorted `x_0..x_{n-1}` the `q`-quantile is
//! at position `h = q (n - 1)`, value `x_⌊h⌋ + (h - ⌊h⌋)(x_⌊h⌋+1 - x_⌊h⌋)`.

/// The `q`-quantile of `sorted` (ascending, non-empty) by linear
/// interpolation.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = q * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Component-wise mean of `rows` (each of the same length), summed in order.
pub(crate) fn mean(rows: &[&[f64]]) -> Vec<f64> {
    let dim = rows.first().map_or(0, |r| r.len());
    let mut acc = vec![0f64; dim];
    for row in rows {
        for (a, v) in acc.iter_mut().zip(row.iter()) {
            *a += v;
        }
    }
    let n = rows.len() as f64;
    acc.iter_mut().for_each(|a| *a /= n);
    acc
}

/// Euclidean distance, summed in index order.
pub(crate) fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Euclidean norm, summed in index order.
pub(crate) fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Which rows survive the 1.5-IQR filter on their distances to the plain
/// mean: row `i` is kept iff `Q1 - k·IQR <= d_i <= Q3 + k·IQR`.
pub(crate) fn iqr_keep(rows: &[&[f64]], k: f64) -> Vec<bool> {
    if rows.is_empty() {
        return Vec::new();
    }
    let m = mean(rows);
    let d: Vec<f64> = rows.iter().map(|r| distance(r, &m)).collect();
    let mut sorted = d.clone();
    sorted.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile(&sorted, 0.25), quantile(&sorted, 0.75));
    let (lo, hi) = (q1 - k * (q3 - q1), q3 + k * (q3 - q1));
    d.iter().map(|x| *x >= lo && *x <= hi).collect()
}

/// The mean of the rows the IQR filter keeps (`None` for no rows). The
/// filter always keeps at least one row for finite input; if rounding ever
/// made it keep none, the plain mean is used.
pub(crate) fn filtered_mean(rows: &[&[f64]], k: f64) -> Option<Vec<f64>> {
    if rows.is_empty() {
        return None;
    }
    let keep = iqr_keep(rows, k);
    let kept: Vec<&[f64]> = rows
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(r, _)| *r)
        .collect();
    Some(if kept.is_empty() {
        mean(rows)
    } else {
        mean(&kept)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.quantile([1, 2, 3, 4], [0.25, 0.75]) == [1.75, 3.25]
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&x, 0.25), 1.75);
        assert_eq!(quantile(&x, 0.75), 3.25);
        // numpy.quantile([10, 20, 40], [0.25, 0.5, 0.75]) == [15, 20, 30]
        let y = [10.0, 20.0, 40.0];
        assert_eq!(
            [quantile(&y, 0.25), quantile(&y, 0.5), quantile(&y, 0.75)],
            [15.0, 20.0, 30.0]
        );
        assert_eq!(quantile(&[7.0], 0.25), 7.0);
    }

    #[test]
    fn iqr_drops_the_outlier_of_five() {
        // Scalars 1, 1, 1, 1, 11: mean 3, distances 2, 2, 2, 2, 8.
        // Q1 = Q3 = 2, IQR = 0, fences [2, 2]: 8 is dropped.
        let rows: Vec<[f64; 1]> = vec![[1.0], [1.0], [11.0], [1.0], [1.0]];
        let refs: Vec<&[f64]> = rows.iter().map(|r| &r[..]).collect();
        assert_eq!(iqr_keep(&refs, 1.5), vec![true, true, false, true, true]);
        assert_eq!(filtered_mean(&refs, 1.5).unwrap(), vec![1.0]);
    }

    #[test]
    fn iqr_keeps_a_spread_that_is_not_an_outlier() {
        // 0, 1, 2, 3: mean 1.5, distances 1.5, 0.5, 0.5, 1.5;
        // sorted 0.5 0.5 1.5 1.5 -> Q1 = 0.5, Q3 = 1.5, fences [-1, 3]: all kept.
        let rows: Vec<[f64; 1]> = vec![[0.0], [1.0], [2.0], [3.0]];
        let refs: Vec<&[f64]> = rows.iter().map(|r| &r[..]).collect();
        assert_eq!(iqr_keep(&refs, 1.5), vec![true; 4]);
        assert_eq!(filtered_mean(&refs, 1.5).unwrap(), vec![1.5]);
        // 0, 0, 100: distances 33.3, 33.3, 66.7; Q1 = 33.3, Q3 = 50, upper
        // fence 75: with three rows a lone outlier is not dropped.
        let three: Vec<[f64; 1]> = vec![[0.0], [0.0], [100.0]];
        let refs: Vec<&[f64]> = three.iter().map(|r| &r[..]).collect();
        assert_eq!(iqr_keep(&refs, 1.5), vec![true; 3]);
        assert!(filtered_mean(&[], 1.5).is_none());
    }
}
