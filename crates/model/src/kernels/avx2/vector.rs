//! f32 vector operations of attention with AVX2 + FMA: the softmax of a
//! row of scores (with a polynomial exp) and `out += w * v`.

use std::arch::x86_64::*;

use super::hsum;

/// `out[i] += w * v[i]`.
pub(in super::super) fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    assert_eq!(out.len(), v.len(), "axpy of unequal lengths");
    // SAFETY: only in the AVX2 sets, chosen when the CPU has AVX2 and FMA;
    // lengths checked above.
    unsafe { axpy_avx2(out, w, v) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(out: &mut [f32], w: f32, v: &[f32]) {
    let n = out.len();
    let wv = _mm256_set1_ps(w);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = out.len() = v.len().
        unsafe {
            let o = out.as_mut_ptr().add(i);
            let x = _mm256_loadu_ps(v.as_ptr().add(i));
            _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(o)));
        }
        i += 8;
    }
    for (o, x) in out[i..].iter_mut().zip(&v[i..]) {
        *o = w.mul_add(*x, *o);
    }
}

/// `x` replaced by `exp(x - max) / Σ exp(x - max)`.
pub(in super::super) fn softmax(x: &mut [f32]) {
    // SAFETY: only in the AVX2 sets, chosen when the CPU has AVX2 and FMA.
    unsafe { softmax_avx2(x) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(x: &mut [f32]) {
    let n = x.len();
    let body = n - n % 8;
    let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in x[..body].chunks_exact(8) {
        // SAFETY: `c` holds 8 values.
        max = _mm256_max_ps(max, unsafe { _mm256_loadu_ps(c.as_ptr()) });
    }
    let mut m = f32::NEG_INFINITY;
    for lane in to_array(max).into_iter().chain(x[body..].iter().copied()) {
        m = m.max(lane);
    }
    let mv = _mm256_set1_ps(m);
    let mut sum = _mm256_setzero_ps();
    for c in x[..body].chunks_exact_mut(8) {
        // SAFETY: `c` holds 8 values; AVX2 and FMA are enabled here.
        unsafe {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm256_add_ps(sum, e);
        }
    }
    // SAFETY: AVX is enabled here.
    let mut total = unsafe { hsum(sum) };
    let tail = &mut x[body..];
    if !tail.is_empty() {
        let mut lanes = [0.0f32; 8];
        lanes[..tail.len()].copy_from_slice(tail);
        // SAFETY: `lanes` holds 8 values; AVX2 and FMA are enabled here.
        let e = to_array(unsafe { exp(_mm256_sub_ps(_mm256_loadu_ps(lanes.as_ptr()), mv)) });
        for (v, e) in tail.iter_mut().zip(e) {
            *v = e;
            total += e;
        }
    }
    let inv = _mm256_set1_ps(1.0 / total);
    for c in x[..body].chunks_exact_mut(8) {
        // SAFETY: `c` holds 8 values.
        unsafe {
            _mm256_storeu_ps(
                c.as_mut_ptr(),
                _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), inv),
            )
        };
    }
    for v in &mut x[body..] {
        *v *= 1.0 / total;
    }
}

#[inline(always)]
fn to_array(v: __m256) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 values; AVX is enabled in every caller.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// `e^x` per lane, within 2 ulp of the true value on [-87, 88]; below, the
/// smallest normal's neighbourhood (1.6e-38), which a softmax sum cannot
/// tell from 0. NaN stays NaN. Cephes' range reduction by ln 2 (split in
/// two parts for an exact product) and its degree-5 minimax polynomial.
#[inline(always)]
unsafe fn exp(x: __m256) -> __m256 {
    // SAFETY: callers enable AVX2 and FMA.
    unsafe {
        // max/min return the second operand when one is NaN: keep x there.
        let x = _mm256_min_ps(_mm256_set1_ps(88.0), x);
        let x = _mm256_max_ps(_mm256_set1_ps(-87.0), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let e = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(e, _mm256_castsi256_ps(scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_exp() {
        if !available() {
            return;
        }
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 87.0 {
            let xs = [
                x,
                x + 1e-3,
                x + 0.25,
                x + 0.5,
                x + 0.6,
                x + 0.7,
                x + 0.8,
                x + 0.9,
            ];
            // SAFETY: AVX2 and FMA checked above.
            let got = to_array(unsafe { exp(_mm256_loadu_ps(xs.as_ptr())) });
            for (x, g) in xs.iter().zip(got) {
                let want = f64::from(*x).exp();
                let ulp = f64::from(f32::EPSILON) * want;
                worst = worst.max((f64::from(g) - want).abs() / ulp);
            }
            x += 0.37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn softmax_matches_the_f64_definition_and_keeps_nan() {
        if !available() {
            return;
        }
        for n in [1usize, 7, 8, 9, 64, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3)
                .collect();
            let mut got = x.clone();
            softmax(&mut got);
            let max = x
                .iter()
                .fold(f64::NEG_INFINITY, |m, v| m.max(f64::from(*v)));
            let sum: f64 = x.iter().map(|v| (f64::from(*v) - max).exp()).sum();
            for (v, g) in x.iter().zip(&got) {
                let want = (f64::from(*v) - max).exp() / sum;
                assert!(
                    (f64::from(*g) - want).abs() <= 1e-6 * want.max(1e-30) + 1e-12,
                    "n={n}"
                );
            }
        }
        let mut x = vec![0.0, f32::NAN, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        softmax(&mut x);
        assert!(x.iter().any(|v| v.is_nan()), "a NaN score is not hidden");
    }

    #[test]
    fn axpy_adds_w_times_v() {
        if !available() {
            return;
        }
        let v: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let mut out = vec![1.0f32; 19];
        axpy(&mut out, 0.5, &v);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, 1.0 + 0.5 * i as f32);
        }
    }
}
