//! x86-64 SIMD kernels, chosen at run time: AVX2 + FMA + F16C, and where the
//! CPU has AVX-512 VNNI, the same loops with its fused u8 x i8 dot product.
//!
//! Each weight block costs one f16 pair conversion, one multiply by the
//! activation's `[d, s]` pair, one integer dot product and one FMA; two
//! blocks per iteration keep independent accumulators in flight.

#[cfg(target_arch = "x86_64")]
mod chunks;
#[cfg(target_arch = "x86_64")]
mod half;
#[cfg(target_arch = "x86_64")]
use imp::{DotU8I8, hsum};

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    use super::super::{Kernels, QK, QRow, WeightFormat};
    use super::chunks::bytes_from_bits;

    pub(in super::super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    fn vnni_available() -> bool {
        available()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
    }

    /// The best kernel set for this CPU (callers checked `available()`).
    pub(in super::super) fn kernels() -> Kernels {
        if vnni_available() { VNNI } else { AVX2 }
    }

    const AVX2: Kernels = Kernels {
        quantize,
        dot_q4_0: dot_q4_0_avx2,
        dot_q4_1: dot_q4_1_avx2,
        dot_q8_0: dot_q8_0_avx2,
        dot4_q4_0: dot4_q4_0_avx2,
        dot4_q4_1: dot4_q4_1_avx2,
        dot4_q8_0: dot4_q8_0_avx2,
        dot_q5_0: dot_q5_0_avx2,
        dot_q5_1: dot_q5_1_avx2,
        dot4_q5_0: dot4_q5_0_avx2,
        dot4_q5_1: dot4_q5_1_avx2,
        dot_chunked: dot_chunked_avx2,
        dot4_chunked: dot4_chunked_avx2,
        dot_half,
        dot4_half,
        dot_f32,
    };

    const VNNI: Kernels = Kernels {
        quantize,
        dot_q4_0: dot_q4_0_vnni,
        dot_q4_1: dot_q4_1_vnni,
        dot_q8_0: dot_q8_0_vnni,
        dot4_q4_0: dot4_q4_0_vnni,
        dot4_q4_1: dot4_q4_1_vnni,
        dot4_q8_0: dot4_q8_0_vnni,
        dot_q5_0: dot_q5_0_vnni,
        dot_q5_1: dot_q5_1_vnni,
        dot4_q5_0: dot4_q5_0_vnni,
        dot4_q5_1: dot4_q5_1_vnni,
        dot_chunked: dot_chunked_vnni,
        dot4_chunked: dot4_chunked_vnni,
        dot_half,
        dot4_half,
        dot_f32,
    };

    fn check(w: &[u8], block_bytes: usize, x: QRow<'_>) -> usize {
        let nb = w.len() / block_bytes;
        assert!(
            w.len() == nb * block_bytes && x.scale_sums.len() == nb && x.values.len() == nb * QK,
            "quantized row shapes disagree"
        );
        nb
    }

    /// Integer dot products of 32 unsigned by 32 signed bytes, as 8 i32 lanes.
    pub(in super::super) trait DotU8I8 {
        /// # Safety
        /// The CPU must have the features the implementation is for.
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
    }

    struct Avx2Dot;
    impl DotU8I8 for Avx2Dot {
        #[inline(always)]
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
            // SAFETY: callers run inside `#[target_feature(enable = "avx2")]`.
            unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)) }
        }
    }

    struct VnniDot;
    impl DotU8I8 for VnniDot {
        #[inline(always)]
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
            // SAFETY: callers run inside a function enabling avx512vnni+vl.
            unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s) }
        }
    }

    /// The 32 nibbles of a 4-bit block: low nibbles first, then high ones.
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes and AVX2.
        unsafe {
            let qs = _mm_loadu_si128(p.cast());
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(qs, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
            _mm256_set_m128i(hi, lo)
        }
    }

    /// The fifth bits of a Q5 block (the u32 at `p`) as 0x10 in each byte.
    #[inline(always)]
    unsafe fn fifth_bit(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 4 readable bytes and AVX2.
        unsafe {
            let qh = p.cast::<u32>().read_unaligned();
            _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10))
        }
    }

    #[inline(always)]
    pub(in super::super) unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: the caller runs with AVX enabled.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }

    /// Which block format a loop runs over.
    #[derive(Clone, Copy)]
    enum Format {
        Q4_0,
        Q4_1,
        Q5_0,
        Q5_1,
        Q8_0,
    }

    impl Format {
        fn block_bytes(self) -> usize {
            match self {
                Format::Q4_0 => 18,
                Format::Q4_1 => 20,
                Format::Q5_0 => 22,
                Format::Q5_1 => 24,
                Format::Q8_0 => 34,
            }
        }

        /// Whether blocks carry a minimum (and so unsigned codes).
        fn with_min(self) -> bool {
            matches!(self, Format::Q4_1 | Format::Q5_1)
        }
    }

    /// The shared loop: two blocks per iteration, independent accumulators.
    #[inline(always)]
    unsafe fn dot_blocks<D: DotU8I8>(w: &[u8], x: QRow<'_>, format: Format) -> f32 {
        let block_bytes = format.block_bytes();
        let with_min = format.with_min();
        let nb = check(w, block_bytes, x);
        // SAFETY: `check` proved nb blocks of weights and activations; the
        // caller enabled the CPU features the intrinsics need.
        unsafe {
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            let mut mins = _mm_setzero_ps();
            let mut b = 0;
            while b + 2 <= nb {
                let (p0, s0) = apply::<D>(
                    prepare(w.as_ptr().add(b * block_bytes), format),
                    x,
                    b,
                    with_min,
                );
                let (p1, s1) = apply::<D>(
                    prepare(w.as_ptr().add((b + 1) * block_bytes), format),
                    x,
                    b + 1,
                    with_min,
                );
                acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(s0), p0, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_broadcastss_ps(s1), p1, acc1);
                mins = _mm_add_ps(mins, _mm_add_ps(s0, s1));
                b += 2;
            }
            if b < nb {
                let (p0, s0) = apply::<D>(
                    prepare(w.as_ptr().add(b * block_bytes), format),
                    x,
                    b,
                    with_min,
                );
                acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(s0), p0, acc0);
                mins = _mm_add_ps(mins, s0);
            }
            let mut total = hsum(_mm256_add_ps(acc0, acc1));
            if with_min {
                total += _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 1));
            }
            total
        }
    }

    // Helpers are `inline(always)` functions, never closures: closures do
    // not inherit the caller's target features, and the intrinsics must
    // inline into the feature-enabled kernels.

    /// A weight block unpacked for the integer dot product: the unsigned
    /// operand, the sign source for the activations (formats without a
    /// minimum are signed), and the f16 header `[d, m]` as f32.
    #[inline(always)]
    unsafe fn prepare(blk: *const u8, format: Format) -> (__m256i, __m256i, __m128) {
        // SAFETY: the caller guarantees a whole block at `blk` and the CPU
        // features.
        unsafe {
            let (q, with_min) = match format {
                Format::Q4_1 => (nibbles(blk.add(4)), true),
                Format::Q4_0 => (
                    _mm256_sub_epi8(nibbles(blk.add(2)), _mm256_set1_epi8(8)),
                    false,
                ),
                Format::Q5_1 => (
                    _mm256_or_si256(nibbles(blk.add(8)), fifth_bit(blk.add(4))),
                    true,
                ),
                Format::Q5_0 => (
                    _mm256_sub_epi8(
                        _mm256_or_si256(nibbles(blk.add(6)), fifth_bit(blk.add(2))),
                        _mm256_set1_epi8(16),
                    ),
                    false,
                ),
                Format::Q8_0 => (_mm256_loadu_si256(blk.add(2).cast()), false),
            };
            let bits = if with_min {
                blk.cast::<i32>().read_unaligned()
            } else {
                i32::from(blk.cast::<u16>().read_unaligned())
            };
            let unsigned = if with_min { q } else { _mm256_sign_epi8(q, q) };
            (unsigned, q, _mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
        }
    }

    /// The product of a prepared block with one activation block, and the
    /// block's `[d_w * d_a, m_w * s_a]` scales.
    #[inline(always)]
    unsafe fn apply<D: DotU8I8>(
        prepared: (__m256i, __m256i, __m128),
        x: QRow<'_>,
        b: usize,
        with_min: bool,
    ) -> (__m256, __m128) {
        let (unsigned, q, dm) = prepared;
        // SAFETY: the caller checked block b exists in `x`.
        unsafe {
            let a = _mm256_loadu_si256(x.values.as_ptr().add(b * QK).cast());
            let a = if with_min { a } else { _mm256_sign_epi8(a, q) };
            let ds = x.scale_sums.get_unchecked(b);
            let s = _mm_mul_ps(dm, _mm_castpd_ps(_mm_load_sd(ds.as_ptr().cast())));
            (_mm256_cvtepi32_ps(D::dot(unsigned, a)), s)
        }
    }

    /// One weight row against four activation rows: each weight block is
    /// unpacked once and used four times (the prefill kernel). Every row's
    /// sum is accumulated in exactly the order of `dot_blocks`, so a token's
    /// result does not depend on how many tokens share its batch.
    #[inline(always)]
    unsafe fn dot_blocks_x4<D: DotU8I8>(w: &[u8], xs: [QRow<'_>; 4], format: Format) -> [f32; 4] {
        let block_bytes = format.block_bytes();
        let nb = check(w, block_bytes, xs[0]);
        for x in &xs[1..] {
            check(w, block_bytes, *x);
        }
        let with_min = format.with_min();
        // SAFETY: `check` proved nb blocks in the weights and in every
        // activation row; the caller enabled the CPU features.
        unsafe {
            let mut acc0 = [_mm256_setzero_ps(); 4];
            let mut acc1 = [_mm256_setzero_ps(); 4];
            let mut mins = [_mm_setzero_ps(); 4];
            let mut b = 0;
            while b + 2 <= nb {
                let w0 = prepare(w.as_ptr().add(b * block_bytes), format);
                let w1 = prepare(w.as_ptr().add((b + 1) * block_bytes), format);
                for t in 0..4 {
                    let (p0, s0) = apply::<D>(w0, xs[t], b, with_min);
                    let (p1, s1) = apply::<D>(w1, xs[t], b + 1, with_min);
                    acc0[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s0), p0, acc0[t]);
                    acc1[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s1), p1, acc1[t]);
                    mins[t] = _mm_add_ps(mins[t], _mm_add_ps(s0, s1));
                }
                b += 2;
            }
            if b < nb {
                let w0 = prepare(w.as_ptr().add(b * block_bytes), format);
                for t in 0..4 {
                    let (p0, s0) = apply::<D>(w0, xs[t], b, with_min);
                    acc0[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s0), p0, acc0[t]);
                    mins[t] = _mm_add_ps(mins[t], s0);
                }
            }
            let mut out = [0.0; 4];
            for t in 0..4 {
                out[t] = hsum(_mm256_add_ps(acc0[t], acc1[t]));
                if with_min {
                    out[t] += _mm_cvtss_f32(_mm_shuffle_ps(mins[t], mins[t], 1));
                }
            }
            out
        }
    }

    macro_rules! dot4_kernel {
        ($name:ident, $features:literal, $dot:ty, $format:expr) => {
            fn $name(w: &[u8], xs: [QRow<'_>; 4]) -> [f32; 4] {
                #[target_feature(enable = $features)]
                unsafe fn inner(w: &[u8], xs: [QRow<'_>; 4]) -> [f32; 4] {
                    // SAFETY: forwarded from the caller.
                    unsafe { dot_blocks_x4::<$dot>(w, xs, $format) }
                }
                // SAFETY: this kernel set is only chosen when the CPU has
                // these features (`available()` / `vnni_available()`).
                unsafe { inner(w, xs) }
            }
        };
    }

    dot4_kernel!(dot4_q4_0_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q4_0);
    dot4_kernel!(dot4_q4_1_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q4_1);
    dot4_kernel!(dot4_q8_0_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q8_0);
    dot4_kernel!(
        dot4_q4_0_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q4_0
    );
    dot4_kernel!(
        dot4_q4_1_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q4_1
    );
    dot4_kernel!(
        dot4_q8_0_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q8_0
    );
    dot4_kernel!(dot4_q5_0_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q5_0);
    dot4_kernel!(dot4_q5_1_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q5_1);
    dot4_kernel!(
        dot4_q5_0_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q5_0
    );
    dot4_kernel!(
        dot4_q5_1_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q5_1
    );

    macro_rules! dot_kernel {
        ($name:ident, $features:literal, $dot:ty, $format:expr) => {
            fn $name(w: &[u8], x: QRow<'_>) -> f32 {
                #[target_feature(enable = $features)]
                unsafe fn inner(w: &[u8], x: QRow<'_>) -> f32 {
                    // SAFETY: forwarded from the caller.
                    unsafe { dot_blocks::<$dot>(w, x, $format) }
                }
                // SAFETY: this kernel set is only chosen when the CPU has
                // these features (`available()` / `vnni_available()`).
                unsafe { inner(w, x) }
            }
        };
    }

    dot_kernel!(dot_q4_0_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q4_0);
    dot_kernel!(dot_q4_1_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q4_1);
    dot_kernel!(dot_q8_0_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q8_0);
    dot_kernel!(
        dot_q4_0_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q4_0
    );
    dot_kernel!(
        dot_q4_1_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q4_1
    );
    dot_kernel!(
        dot_q8_0_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q8_0
    );
    dot_kernel!(dot_q5_0_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q5_0);
    dot_kernel!(dot_q5_1_avx2, "avx2,fma,f16c", Avx2Dot, Format::Q5_1);
    dot_kernel!(
        dot_q5_0_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q5_0
    );
    dot_kernel!(
        dot_q5_1_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        Format::Q5_1
    );

    /// One chunked-format row against `R` activation rows, with the
    /// format a constant in each arm so its decoding folds away.
    #[inline(always)]
    unsafe fn chunked<D: DotU8I8, const R: usize>(
        format: WeightFormat,
        w: &[u8],
        xs: [QRow<'_>; R],
    ) -> [f32; R] {
        use super::chunks::dot_rows;
        // SAFETY: forwarded from the caller.
        unsafe {
            match format {
                WeightFormat::Q2K => dot_rows::<D, R>(WeightFormat::Q2K, w, xs),
                WeightFormat::Q3K => dot_rows::<D, R>(WeightFormat::Q3K, w, xs),
                WeightFormat::Q4K => dot_rows::<D, R>(WeightFormat::Q4K, w, xs),
                WeightFormat::Q5K => dot_rows::<D, R>(WeightFormat::Q5K, w, xs),
                WeightFormat::Q6K => dot_rows::<D, R>(WeightFormat::Q6K, w, xs),
                _ => unreachable!("{format:?} is not a chunked format"),
            }
        }
    }

    macro_rules! chunked_kernel {
        ($name:ident, $features:literal, $dot:ty, $rows:literal) => {
            fn $name(format: WeightFormat, w: &[u8], xs: [QRow<'_>; $rows]) -> [f32; $rows] {
                #[target_feature(enable = $features)]
                unsafe fn inner(
                    format: WeightFormat,
                    w: &[u8],
                    xs: [QRow<'_>; $rows],
                ) -> [f32; $rows] {
                    // SAFETY: forwarded from the caller.
                    unsafe { chunked::<$dot, $rows>(format, w, xs) }
                }
                // SAFETY: this kernel set is only chosen when the CPU has
                // these features (`available()` / `vnni_available()`).
                unsafe { inner(format, w, xs) }
            }
        };
    }

    chunked_kernel!(dot4_chunked_avx2, "avx2,fma,f16c", Avx2Dot, 4);
    chunked_kernel!(dot1_chunked_avx2, "avx2,fma,f16c", Avx2Dot, 1);
    chunked_kernel!(
        dot4_chunked_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        4
    );
    chunked_kernel!(
        dot1_chunked_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        1
    );

    fn dot_chunked_avx2(format: WeightFormat, w: &[u8], x: QRow<'_>) -> f32 {
        dot1_chunked_avx2(format, w, [x])[0]
    }

    fn dot_chunked_vnni(format: WeightFormat, w: &[u8], x: QRow<'_>) -> f32 {
        dot1_chunked_vnni(format, w, [x])[0]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn half_rows<const R: usize>(
        format: WeightFormat,
        w: &[u8],
        xs: [&[f32]; R],
    ) -> [f32; R] {
        use super::half::dot_rows;
        // SAFETY: forwarded from the caller.
        unsafe {
            if format == WeightFormat::BF16 {
                dot_rows::<R>(WeightFormat::BF16, w, xs)
            } else {
                dot_rows::<R>(WeightFormat::F16, w, xs)
            }
        }
    }

    fn dot_half(format: WeightFormat, w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: only chosen when `available()`.
        unsafe { half_rows::<1>(format, w, [x])[0] }
    }

    fn dot4_half(format: WeightFormat, w: &[u8], xs: [&[f32]; 4]) -> [f32; 4] {
        // SAFETY: only chosen when `available()`.
        unsafe { half_rows::<4>(format, w, xs) }
    }

    fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of unequal lengths");
        // SAFETY: only chosen when `available()`; lengths checked above.
        unsafe { dot_f32_avx2(a, b) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n = a.len() = b.len().
            unsafe {
                let pa = a.as_ptr().add(i);
                let pb = b.as_ptr().add(i);
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), acc0);
                acc1 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)), acc1);
            }
            i += 16;
        }
        // SAFETY: AVX is enabled in this function.
        let mut sum = unsafe { hsum(_mm256_add_ps(acc0, acc1)) };
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }

    fn quantize(x: &[f32], scale_sums: &mut [[f32; 2]], values: &mut [i8]) {
        let nb = x.len() / QK;
        assert!(
            x.len() == nb * QK && scale_sums.len() == nb && values.len() == nb * QK,
            "quantize shapes disagree"
        );
        // SAFETY: only chosen when `available()`; shapes checked above.
        unsafe { quantize_avx2(x, scale_sums, values) }
    }

    /// Same results as the scalar `quantize`: `d = max|x| / 127`, values
    /// rounded to nearest, ties to even.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quantize_avx2(x: &[f32], scale_sums: &mut [[f32; 2]], values: &mut [i8]) {
        let sign = _mm256_set1_ps(-0.0);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (b, ds) in scale_sums.iter_mut().enumerate() {
            // SAFETY: block b of 32 values exists in `x` and `values`.
            unsafe {
                let p = x.as_ptr().add(b * QK);
                let v = [
                    _mm256_loadu_ps(p),
                    _mm256_loadu_ps(p.add(8)),
                    _mm256_loadu_ps(p.add(16)),
                    _mm256_loadu_ps(p.add(24)),
                ];
                let m = _mm256_max_ps(
                    _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                    _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
                );
                let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
                let d = amax / 127.0;
                let id = _mm256_set1_ps(if d == 0.0 { 0.0 } else { 1.0 / d });
                let q = [
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[0], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[1], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[2], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[3], id)),
                ];
                let s =
                    _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                let sum = _mm_cvtsi128_si32(s);
                let packed = _mm256_packs_epi16(
                    _mm256_packs_epi32(q[0], q[1]),
                    _mm256_packs_epi32(q[2], q[3]),
                );
                let packed = _mm256_permutevar8x32_epi32(packed, order);
                _mm256_storeu_si256(values.as_mut_ptr().add(b * QK).cast(), packed);
                *ds = [d, d * sum as f32];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use imp::{available, kernels};

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn available() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn kernels() -> super::Kernels {
    super::scalar::KERNELS
}
