//! The small pieces a transformer block is made of: RMS norm, rotary
//! position embedding, and numerically careful SiLU and GELU (attention's
//! softmax is a kernel).

use crate::config::{Activation, RopeLayout};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// Reads the vector tensor `name`, which must have `width` entries.
pub(crate) fn load_vector(gguf: &GgufFile, name: &str, width: usize) -> Result<Vec<f32>> {
    let t = gguf.read_tensor(name)?;
    let values: Vec<f32> = t
        .dequantize(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    if values.len() != width {
        return Err(ModelError::Tensor {
            name: name.into(),
            problem: format!("expected {width} values, found {}", values.len()),
        });
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(ModelError::Tensor {
            name: name.into(),
            problem: format!("holds the non-finite value {bad}"),
        });
    }
    Ok(values)
}

/// Root-mean-square layer norm with a learned per-channel gain.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// Loads the gain vector `name`, which must have `width` entries.
    pub(crate) fn load(gguf: &GgufFile, name: &str, width: usize, eps: f32) -> Result<Self> {
        Ok(Self {
            weight: load_vector(gguf, name, width)?,
            eps,
        })
    }

    /// Whether the file has the gain vector `name` (optional norms).
    pub(crate) fn load_optional(
        gguf: &GgufFile,
        name: &str,
        width: usize,
        eps: f32,
    ) -> Result<Option<Self>> {
        if gguf.has_tensor(name) {
            Self::load(gguf, name, width, eps).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Normalizes each row of `x` in place (rows of the gain's width; a
    /// per-head norm passes rows of one head).
    pub(crate) fn forward_in_place(&self, x: &mut [f32]) {
        let w = self.weight.len();
        for row in x.chunks_exact_mut(w) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / w as f32;
            let scale = 1.0 / (ms + self.eps).sqrt();
            for (v, g) in row.iter_mut().zip(&self.weight) {
                *v = *v * scale * g;
            }
        }
    }

    /// Normalizes each row of `x` into `out`, returning each row's
    /// `1 / rms` for [`RmsNorm::backward`] (the same arithmetic as
    /// [`RmsNorm::forward`]).
    pub(crate) fn forward_keeping(&self, x: &[f32], out: &mut [f32]) -> Vec<f32> {
        let w = self.weight.len();
        let mut scales = Vec::with_capacity(x.len() / w);
        for (xr, or) in x.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            let ms = xr.iter().map(|v| v * v).sum::<f32>() / w as f32;
            let scale = 1.0 / (ms + self.eps).sqrt();
            for ((o, v), g) in or.iter_mut().zip(xr).zip(&self.weight) {
                *o = *v * scale * g;
            }
            scales.push(scale);
        }
        scales
    }

    /// Adds to `dx` the gradient with respect to the norm's input `x`
    /// (rows of the gain's width) of a loss whose gradient with respect
    /// to the output is `dy`; `scales` are what
    /// [`RmsNorm::forward_keeping`] returned for `x`. With
    /// `y_i = x_i s g_i`, `s = (mean(x^2) + eps)^(-1/2)`:
    /// `dx_i = s g_i dy_i - x_i s^3 / w * sum_j dy_j g_j x_j`.
    pub(crate) fn backward(&self, x: &[f32], scales: &[f32], dy: &[f32], dx: &mut [f32]) {
        let w = self.weight.len();
        for (((xr, dyr), dxr), s) in x
            .chunks_exact(w)
            .zip(dy.chunks_exact(w))
            .zip(dx.chunks_exact_mut(w))
            .zip(scales)
        {
            let dot: f32 = xr
                .iter()
                .zip(dyr)
                .zip(&self.weight)
                .map(|((x, d), g)| x * d * g)
                .sum();
            let k = s * s * s * dot / w as f32;
            for (((o, x), d), g) in dxr.iter_mut().zip(xr).zip(dyr).zip(&self.weight) {
                *o += s * g * d - x * k;
            }
        }
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

/// Rotary position embedding, on adjacent pairs `(x[2i], x[2i+1])` (the
/// layout llama.cpp's GGUF conversion produces for Llama models) or on the
/// halves `(x[i], x[i + d/2])` of each head.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rope {
    inv_freq: Vec<f64>,
    layout: RopeLayout,
}

/// Cosines and sines for a run of positions, shared by every block with
/// the same [`Rope`].
#[derive(Debug, Clone)]
pub(crate) struct RopeTable {
    half: usize,
    layout: RopeLayout,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Frequencies for heads of `head_dim` with base `theta`, positions
    /// divided by `scale` (linear scaling), and each frequency divided by
    /// its factor in `freq_factors` when given (Llama 3's `rope_freqs`).
    pub(crate) fn new(
        head_dim: usize,
        theta: f32,
        scale: f32,
        freq_factors: Option<&[f32]>,
        layout: RopeLayout,
    ) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let base = f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64);
                let factor = freq_factors.map_or(1.0, |f| f64::from(f[i]));
                base / factor / f64::from(scale)
            })
            .collect();
        Self { inv_freq, layout }
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
        RopeTable {
            half,
            layout: self.layout,
            cos,
            sin,
        }
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

    /// Rotates every head of every row of `x` back (the inverse of
    /// [`RopeTable::apply`], which is also its transpose: the gradient
    /// through a rotation is the opposite rotation).
    pub(crate) fn apply_inverse(&self, x: &mut [f32], row_width: usize) {
        self.rotate(x, row_width, -1.0);
    }

    /// Rotates every head of every row of `x` (rows of `n_heads * head_dim`).
    pub(crate) fn apply(&self, x: &mut [f32], row_width: usize) {
        self.rotate(x, row_width, 1.0);
    }

    /// Rotates by each angle times `sign` (1 forward, -1 back).
    fn rotate(&self, x: &mut [f32], row_width: usize, sign: f32) {
        let head_dim = self.half * 2;
        for (t, row) in x.chunks_exact_mut(row_width).enumerate() {
            let cos = &self.cos[t * self.half..(t + 1) * self.half];
            let sin = &self.sin[t * self.half..(t + 1) * self.half];
            for head in row.chunks_exact_mut(head_dim) {
                match self.layout {
                    RopeLayout::Adjacent => {
                        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                            let (a, b, s) = (pair[0], pair[1], sign * sin[i]);
                            pair[0] = a * cos[i] - b * s;
                            pair[1] = a * s + b * cos[i];
                        }
                    }
                    RopeLayout::Halves => {
                        let (first, second) = head.split_at_mut(self.half);
                        for (i, (a, b)) in first.iter_mut().zip(second).enumerate() {
                            let (x, y, s) = (*a, *b, sign * sin[i]);
                            *a = x * cos[i] - y * s;
                            *b = x * s + y * cos[i];
                        }
                    }
                }
            }
        }
    }
}

/// `act(gate) * up`, written into `gate`.
pub(crate) fn gated(activation: Activation, gate: &mut [f32], up: &[f32]) {
    match activation {
        Activation::Silu => {
            for (g, u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        }
        Activation::GeluTanh => {
            // 0.5 x (1 + tanh(y)) with y = sqrt(2/pi) (x + 0.044715 x^3),
            // as ggml's gelu, computed as x / (1 + exp(-2y)) (the same
            // function, since 1 + tanh(y) = 2 / (1 + exp(-2y))): one exp
            // instead of a tanh, which took a tenth of Gemma's prefill.
            // Large |y| saturates cleanly: exp(-2y) -> 0 gives x, -> inf
            // gives 0.
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            for (g, u) in gate.iter_mut().zip(up) {
                let x = *g;
                let y = SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
                *g = x / (1.0 + (-2.0 * y).exp()) * u;
            }
        }
    }
}

/// The gradients through `act(gate) * up` with respect to `gate` (before
/// the activation) and `up`, given the gradient `d` with respect to the
/// product: `(d * up * act'(gate), d * act(gate))`, with the forward's
/// formulas.
pub(crate) fn gated_backward(
    activation: Activation,
    gate: &[f32],
    up: &[f32],
    d: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let mut d_gate = Vec::with_capacity(gate.len());
    let mut d_up = Vec::with_capacity(gate.len());
    for ((&x, &u), &d) in gate.iter().zip(up).zip(d) {
        let (act, slope) = match activation {
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-x).exp());
                (x * s, s * (1.0 + x * (1.0 - s)))
            }
            Activation::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                let y = SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
                // 1 + tanh(y) = 2 s with s = 1 / (1 + exp(-2y)).
                let s = 1.0 / (1.0 + (-2.0 * y).exp());
                let tanh = 2.0 * s - 1.0;
                let dy_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x);
                (x * s, s + 0.5 * x * (1.0 - tanh * tanh) * dy_dx)
            }
        };
        d_gate.push(d * u * slope);
        d_up.push(d * act);
    }
    (d_gate, d_up)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exp form of GELU is the tanh form, to f32 rounding, including
    /// where it saturates, and never NaN.
    #[test]
    fn gelu_matches_its_tanh_definition() {
        let xs: Vec<f32> = (-2000..=2000)
            .map(|i| i as f32 / 100.0)
            .chain([-1e4, -100.0, 100.0, 1e4, 0.0, -0.0, 1e-30])
            .collect();
        let mut gate = xs.clone();
        gated(Activation::GeluTanh, &mut gate, &vec![1.0; xs.len()]);
        for (&x, &g) in xs.iter().zip(&gate) {
            let x64 = f64::from(x);
            let y = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044_715 * x64.powi(3));
            let expected = 0.5 * x64 * (1.0 + y.tanh());
            assert!(
                (f64::from(g) - expected).abs() <= 1e-6 * expected.abs().max(1e-3),
                "gelu({x}) = {g}, expected {expected}"
            );
        }
    }
}
