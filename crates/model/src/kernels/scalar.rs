//! Portable kernels: the fallback on CPUs without AVX2, and the oracle the
//! SIMD kernels are tested against.

use half::{bf16, f16};

use super::{Kernels, QK, QRow, WeightFormat, chunks, f16_at};

pub(super) const KERNELS: Kernels = Kernels {
    quantize,
    dot_block,
    rows_block: |f, ws, x| ws.map(|w| dot_block(f, w, x)),
    tile_block: |f, ws, xs| ws.map(|w| xs.map(|x| dot_block(f, w, x))),
    dot_chunked: chunks::dot,
    dot4_chunked: |f, w, xs| xs.map(|x| chunks::dot(f, w, x)),
    dot8_chunked: |f, w, xs| xs.map(|x| chunks::dot(f, w, x)),
    dot_half,
    dot4_half: |f, w, xs| xs.map(|x| dot_half(f, w, x)),
    dot8_half: |f, w, xs| xs.map(|x| dot_half(f, w, x)),
    dot_f32,
    axpy,
    softmax,
};

/// A row of a 32-value block format against an 8-bit activation row.
fn dot_block(format: WeightFormat, w: &[u8], x: QRow<'_>) -> f32 {
    match format {
        WeightFormat::Q4_0 => dot_q4_0(w, x),
        WeightFormat::Q4_1 => dot_q4_1(w, x),
        WeightFormat::Q8_0 => dot_q8_0(w, x),
        WeightFormat::Q5_0 | WeightFormat::Q5_1 => chunks::dot(format, w, x),
        _ => unreachable!("{format} is not a 32-value block format"),
    }
}

/// An F16 or BF16 row against an f32 row.
pub(super) fn dot_half(format: WeightFormat, w: &[u8], x: &[f32]) -> f32 {
    let mut wide = vec![0.0f32; x.len()];
    widen_half(format, w, &mut wide);
    dot_f32(&wide, x)
}

/// Widens an F16 or BF16 row to f32.
fn widen_half(format: WeightFormat, w: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(w.chunks_exact(2)) {
        *o = match format {
            WeightFormat::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => f16::from_le_bytes([b[0], b[1]]).to_f32(),
        };
    }
}

/// Quantizes `x` in blocks of 32 to `round(x / d)` with `d = max|x| / 127`.
pub(super) fn quantize(x: &[f32], scale_sums: &mut [[f32; 2]], values: &mut [i8]) {
    for (b, block) in x.chunks_exact(QK).enumerate() {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut sum = 0i32;
        for (i, v) in block.iter().enumerate() {
            let q = (v * id).round_ties_even() as i8;
            values[b * QK + i] = q;
            sum += i32::from(q);
        }
        scale_sums[b] = [d, d * sum as f32];
    }
}

pub(super) fn dot_q4_0(w: &[u8], x: QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let d = f16_at(blk, 0);
        let qa = &x.values[b * QK..(b + 1) * QK];
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let lo = i32::from(blk[2 + j] & 0x0F) - 8;
            let hi = i32::from(blk[2 + j] >> 4) - 8;
            s += lo * i32::from(qa[j]) + hi * i32::from(qa[j + QK / 2]);
        }
        acc += d * x.scale_sums[b][0] * s as f32;
    }
    acc
}

pub(super) fn dot_q4_1(w: &[u8], x: QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let d = f16_at(blk, 0);
        let m = f16_at(blk, 2);
        let qa = &x.values[b * QK..(b + 1) * QK];
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let lo = i32::from(blk[4 + j] & 0x0F);
            let hi = i32::from(blk[4 + j] >> 4);
            s += lo * i32::from(qa[j]) + hi * i32::from(qa[j + QK / 2]);
        }
        acc += d * x.scale_sums[b][0] * s as f32 + m * x.scale_sums[b][1];
    }
    acc
}

pub(super) fn dot_q8_0(w: &[u8], x: QRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let d = f16_at(blk, 0);
        let qa = &x.values[b * QK..(b + 1) * QK];
        let s: i32 = blk[2..]
            .iter()
            .zip(qa)
            .map(|(&w, &a)| i32::from(w as i8) * i32::from(a))
            .sum();
        acc += d * x.scale_sums[b][0] * s as f32;
    }
    acc
}

pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorize the loop.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for k in 0..8 {
            acc[k] += a[i * 8 + k] * b[i * 8 + k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

pub(super) fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += w * x;
    }
}

pub(super) fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Expands one row of weights to f32.
pub(super) fn dequantize_row(format: WeightFormat, row: &[u8], out: &mut [f32]) {
    match format {
        WeightFormat::Q4_0 => {
            for (b, blk) in row.chunks_exact(18).enumerate() {
                let d = f16_at(blk, 0);
                for j in 0..QK / 2 {
                    out[b * QK + j] = d * (f32::from(blk[2 + j] & 0x0F) - 8.0);
                    out[b * QK + j + QK / 2] = d * (f32::from(blk[2 + j] >> 4) - 8.0);
                }
            }
        }
        WeightFormat::Q4_1 => {
            for (b, blk) in row.chunks_exact(20).enumerate() {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                for j in 0..QK / 2 {
                    out[b * QK + j] = d * f32::from(blk[4 + j] & 0x0F) + m;
                    out[b * QK + j + QK / 2] = d * f32::from(blk[4 + j] >> 4) + m;
                }
            }
        }
        WeightFormat::Q8_0 => {
            for (b, blk) in row.chunks_exact(34).enumerate() {
                let d = f16_at(blk, 0);
                for j in 0..QK {
                    out[b * QK + j] = d * f32::from(blk[2 + j] as i8);
                }
            }
        }
        WeightFormat::F16 | WeightFormat::BF16 => widen_half(format, row, out),
        _ => unreachable!("{format} rows are not dequantized here"),
    }
}
