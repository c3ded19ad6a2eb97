//! The SIMD kernels agree with the scalar oracle, and the quantized products
//! agree with plain f32 math within the error 8-bit activations allow.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every format that meets 8-bit activations.
const QUANTIZED: [GgmlDType; 10] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

fn random_values(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Quantizes `values` (rows x cols) into a GGUF block format via candle.
fn quantized(rows: usize, cols: usize, values: &[f32], dtype: GgmlDType) -> QMatrix {
    let t = candle_core::Tensor::from_slice(values, (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    QMatrix::from_qtensor("test", &q).unwrap()
}

fn dequantized(m: &QMatrix) -> Vec<f32> {
    let mut out = vec![0.0; m.rows * m.cols];
    for r in 0..m.rows {
        m.dequantize_row(r, &mut out[r * m.cols..(r + 1) * m.cols]);
    }
    out
}

fn reference_matmul(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let n = x.len() / cols;
    let mut out = vec![0.0f32; n * rows];
    for t in 0..n {
        for r in 0..rows {
            out[t * rows + r] = (0..cols)
                .map(|c| f64::from(w[r * cols + c]) * f64::from(x[t * cols + c]))
                .sum::<f64>() as f32;
        }
    }
    out
}

#[test]
fn simd_kernels_match_scalar_oracle() {
    if !avx2::available() {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (rows, cols) = (8, 256);
    let x = random_values(&mut rng, cols * 3);
    let q = QuantizedRows::quantize(&x, cols, scalar::KERNELS);
    let q_simd = QuantizedRows::quantize(&x, cols, avx2::kernels());
    assert_eq!(q.values, q_simd.values, "SIMD quantization differs");
    assert_eq!(q.scale_sums, q_simd.scale_sums, "SIMD quantization differs");
    for dtype in QUANTIZED {
        let m = quantized(rows, cols, &random_values(&mut rng, rows * cols), dtype);
        for r in 0..rows {
            for t in 0..3 {
                let s = scalar::KERNELS.dot(m.format, m.row(r), q.row(t));
                let v = avx2::kernels().dot(m.format, m.row(r), q.row(t));
                assert!(
                    (s - v).abs() <= 1e-4 * s.abs().max(1.0),
                    "{dtype:?}: {s} vs {v}"
                );
                // The four-row kernel sums each row exactly as the one-row
                // kernel does (batch invariance), whatever its neighbours.
                let rows4 = [q.row(t), q.row((t + 1) % 3), q.row(t), q.row((t + 2) % 3)];
                let four = avx2::kernels().dot4(m.format, m.row(r), rows4);
                assert_eq!(four[0].to_bits(), v.to_bits(), "{dtype:?} four-row kernel");
                assert_eq!(four[2].to_bits(), v.to_bits(), "{dtype:?} four-row kernel");
            }
        }
        // A tile of eight weight rows by eight activation rows, and eight
        // rows against one, sum each pair exactly as the one-by-one kernel
        // does.
        let ws: [&[u8]; TILE_ROWS] = std::array::from_fn(|i| m.row(i));
        let ts: [usize; TILE_TOKENS] = [2, 0, 1, 2, 1, 1, 0, 2];
        let tile = avx2::kernels().tile(m.format, ws, ts.map(|t| q.row(t)));
        let oracle = scalar::KERNELS.tile(m.format, ws, ts.map(|t| q.row(t)));
        for (i, w) in ws.iter().enumerate() {
            for (j, &t) in ts.iter().enumerate() {
                let v = avx2::kernels().dot(m.format, w, q.row(t));
                assert_eq!(tile[i][j].to_bits(), v.to_bits(), "{dtype:?} tile");
                let column = avx2::kernels().rows(m.format, ws, q.row(t));
                assert_eq!(column[i].to_bits(), v.to_bits(), "{dtype:?} rows");
                let s = oracle[i][j];
                assert!(
                    (s - v).abs() <= 1e-4 * s.abs().max(1.0),
                    "{dtype:?}: {s} vs {v}"
                );
            }
        }
    }
    for dtype in [GgmlDType::F16, GgmlDType::BF16] {
        let m = quantized(rows, cols, &random_values(&mut rng, rows * cols), dtype);
        let xr = |t: usize| &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            for t in 0..3 {
                let s = (scalar::KERNELS.dot_half)(m.format, m.row(r), xr(t));
                let v = (avx2::kernels().dot_half)(m.format, m.row(r), xr(t));
                assert!(
                    (s - v).abs() <= 1e-4 * s.abs().max(1.0),
                    "{dtype:?}: {s} vs {v}"
                );
                let four =
                    (avx2::kernels().dot4_half)(m.format, m.row(r), [xr(t), xr(0), xr(t), xr(1)]);
                assert_eq!(four[0].to_bits(), v.to_bits(), "{dtype:?} four-row kernel");
                assert_eq!(four[2].to_bits(), v.to_bits(), "{dtype:?} four-row kernel");
            }
        }
    }
    let a = random_values(&mut rng, 1000);
    let b = random_values(&mut rng, 1000);
    let (s, v) = (
        (scalar::KERNELS.dot_f32)(&a, &b),
        (avx2::kernels().dot_f32)(&a, &b),
    );
    assert!((s - v).abs() < 1e-4, "f32: {s} vs {v}");
}

/// AVX2 (maddubs) and AVX-512 VNNI (dpbusd) form the same integer sums
/// and the same float steps: a model gives the same bits on either CPU.
#[test]
#[cfg(target_arch = "x86_64")]
fn kernel_sets_agree_bit_for_bit() {
    let sets = avx2::sets();
    if sets.len() < 2 {
        eprintln!("this CPU has one SIMD kernel set; nothing to compare");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let (rows, cols) = (TILE_ROWS, 512);
    let x = random_values(&mut rng, cols * TILE_TOKENS);
    let q = QuantizedRows::quantize(&x, cols, sets[0]);
    for dtype in QUANTIZED {
        let m = quantized(rows, cols, &random_values(&mut rng, rows * cols), dtype);
        let ws: [&[u8]; TILE_ROWS] = std::array::from_fn(|i| m.row(i));
        let xs: [QRow<'_>; TILE_TOKENS] = std::array::from_fn(|t| q.row(t));
        let bits = |k: Kernels| {
            let tile = k.tile(m.format, ws, xs);
            let rows = k.rows(m.format, ws, xs[0]);
            (tile.map(|r| r.map(f32::to_bits)), rows.map(f32::to_bits))
        };
        assert_eq!(bits(sets[0]), bits(sets[1]), "{dtype:?}");
    }
}

#[test]
fn quantized_matmul_matches_dequantized_f32_math() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (rows, cols) = (300, 768);
    for dtype in QUANTIZED
        .into_iter()
        .chain([GgmlDType::F16, GgmlDType::BF16])
    {
        let m = quantized(rows, cols, &random_values(&mut rng, rows * cols), dtype);
        let w = dequantized(&m);
        for n in [1, 5] {
            let x = random_values(&mut rng, n * cols);
            let mut out = vec![0.0; n * rows];
            m.matmul(&x, &mut out);
            let expected = reference_matmul(&w, rows, cols, &x);
            // 8-bit activations: each input is off by a rounding error
            // uniform in ±d/2 (d = max|x|/127 <= 1/127), so its standard
            // deviation is d/sqrt(12); weights uniform in ±1 have rms
            // 1/sqrt(3); over `cols` products of random sign the error's
            // standard deviation is their product times sqrt(cols). Allow 6σ.
            let sigma = (cols as f32).sqrt() / 3f32.sqrt() / (127.0 * 12f32.sqrt());
            let scale = 6.0 * sigma;
            for (o, e) in out.iter().zip(&expected) {
                assert!((o - e).abs() <= scale, "{dtype:?} n={n}: {o} vs {e}");
            }
        }
    }
}

#[test]
fn quantize_round_trips_within_half_a_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = random_values(&mut rng, 64);
    let q = QuantizedRows::quantize(&x, 64, Kernels::detect());
    for (b, block) in x.chunks(QK).enumerate() {
        let [d, s] = q.scale_sums[b];
        let mut sum = 0.0;
        for (i, v) in block.iter().enumerate() {
            let back = f32::from(q.values[b * QK + i]) * d;
            assert!((back - v).abs() <= d / 2.0 + 1e-7);
            sum += f32::from(q.values[b * QK + i]);
        }
        assert!((s - d * sum).abs() < 1e-5);
    }
}

#[test]
fn stored_formats_dequantize_as_ggml_does() {
    // candle's dequantizers follow ggml's reference code; ours must give
    // the same weights for every format we multiply natively.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (rows, cols) = (4, 512);
    for dtype in QUANTIZED
        .into_iter()
        .chain([GgmlDType::F16, GgmlDType::BF16])
    {
        let values = random_values(&mut rng, rows * cols);
        let t = candle_core::Tensor::from_slice(&values, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let expected: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let m = QMatrix::from_qtensor("test", &q).unwrap();
        assert_ne!(
            m.format,
            WeightFormat::F32,
            "{dtype:?} is kept in its format"
        );
        assert_eq!(dequantized(&m), expected, "{dtype:?}");
    }
}

#[test]
fn unsupported_types_are_refused_by_name() {
    let values = vec![0.5f32; 2 * 256];
    let t = candle_core::Tensor::from_slice(&values, (2, 256), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, GgmlDType::Q8K).unwrap();
    let err = QMatrix::from_qtensor("blk.0.attn_q.weight", &q).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("blk.0.attn_q.weight") && text.contains("Q8K"),
        "{text}"
    );
}
