//! The small pieces a transformer block is made of: RMS norm, rotary
//! position embedding, and numerically careful softmax and SiLU.

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// Root-mean-square layer norm with a learned per-channel gain.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// Loads the gain vector `name`, which must have `width` entries.
    pub(crate) fn load(gguf: &GgufFile, name: &str, width: usize, eps: f32) -> Result<Self> {
        let t = gguf.read_tensor(name)?;
        let weight: Vec<f32> = t
            .dequantize(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        if weight.len() != width {
            return Err(ModelError::Tensor {
                name: name.into(),
                problem: format!("expected {width} values, found {}", weight.len()),
            });
        }
        Ok(Self { weight, eps })
    }

    /// Normalizes each row of `x` into `out`.
    pub(crate) fn forward(&self, x: &[f32], out: &mut [f32]) {
        let w = self.weight.len();
        for (xr, or) in x.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            let ms = xr.iter().map(|v| v * v).sum::<f32>() / w as f32;
            let scale = 1.0 / (ms + self.eps).sqrt();
            for ((o, v), g) in or.iter_mut().zip(xr).zip(&self.weight) {
                *o = v * scale * g;
            }
        }
    }
}

/// Rotary position embedding on adjacent pairs `(x[2i], x[2i+1])`, the
/// layout llama.cpp's GGUF conversion produces for Llama models.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv_freq: Vec<f64>,
}

/// Cosines and sines for a run of positions, shared by every block.
#[derive(Debug, Clone)]
pub(crate) struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Frequencies for heads of `head_dim` with base `theta`.
    pub(crate) fn new(head_dim: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        Self { inv_freq }
    }

    /// The rotation table for positions `start..start + n`.
    pub(crate) fn table(&self, start: usize, n: usize) -> RopeTable {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in start..start + n {
            for f in &self.inv_freq {
                let angle = p as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { half, cos, sin }
    }
}

impl RopeTable {
    /// Appends `other`'s rows after this table's (one table for a batch
    /// of sequences at their own positions).
    pub(crate) fn extend(&mut self, other: &RopeTable) {
        debug_assert_eq!(self.half, other.half);
        self.cos.extend_from_slice(&other.cos);
        self.sin.extend_from_slice(&other.sin);
    }

    /// Rotates every head of every row of `x` (rows of `n_heads * head_dim`).
    pub(crate) fn apply(&self, x: &mut [f32], row_width: usize) {
        let head_dim = self.half * 2;
        for (t, row) in x.chunks_exact_mut(row_width).enumerate() {
            let cos = &self.cos[t * self.half..(t + 1) * self.half];
            let sin = &self.sin[t * self.half..(t + 1) * self.half];
            for head in row.chunks_exact_mut(head_dim) {
                for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos[i] - b * sin[i];
                    pair[1] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}

/// In-place softmax.
pub(crate) fn softmax(x: &mut [f32]) {
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

/// `silu(gate) * up`, written into `gate`.
pub(crate) fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}
