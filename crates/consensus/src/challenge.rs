//! The challenge input `X_e` and the Johnson-Lindenstrauss sketch.
//!
//! Both are drawn from ChaCha20 (`rand_chacha::ChaCha20Rng`, the 20-round
//! ChaCha with a 64-bit block counter) keyed by the challenge's 32-byte seed,
//! on separate streams, so any implementation can reproduce them:
//!
//! * **Input, stream 0.** `ChaCha20Rng::from_seed(seed)`, `set_stream(0)`.
//!   Values are produced in pairs by Box-Muller from two `u64` draws `a`, `b`
//!   (each `next_u64`, i.e. two consecutive little-endian 32-bit words):
//!   `u1 = ((a >> 11) + 1) * 2^-53` in (0, 1], `u2 = (b >> 11) * 2^-53` in
//!   [0, 1), `r = sqrt(-2 ln u1)`, `z0 = r cos(2π u2)`, `z1 = r sin(2π u2)`,
//!   in f64. They fill `X` row-major, `[T, hidden]` (`z0` first; with an odd
//!   count the last `z1` is dropped). Each row is then scaled in f64 to the
//!   L2 norm `target_norm` (the model's typical hidden-state norm) and
//!   rounded to f32.
//! * **Sketch, stream 1.** `set_stream(1)`. The matrix `R` is `[64, T *
//!   hidden]`; entry `i` (row-major) is `+1/8` if bit `i % 64` of the
//!   `i / 64`-th `next_u64` draw is 1, else `-1/8` (`1/8 = 1/√64`). A
//!   block's output `Y` (`[T, hidden]`, flattened row-major) sketches to
//!   `z_k = Σ_i R[k, i] · Y[i]`, summed in f64 in index order and rounded to
//!   f32.
//!
//! `ln`, `cos` and `sin` come from the platform's libm and may differ in the
//! last bit between platforms; scoring compares sketches by relative
//! distance, so such differences are far below anything it can see.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::records::{SKETCH_LEN, Sketch};
use crate::{Error, Result};

/// Largest `T * hidden` the challenge accepts (a guard against absurd sizes).
pub const MAX_CHALLENGE_VALUES: usize = 1 << 24;

fn rng(seed: &[u8; 32], stream: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    rng.set_stream(stream);
    rng
}

fn size(tokens: u32, hidden: usize) -> Result<usize> {
    let n = (tokens as usize)
        .checked_mul(hidden)
        .filter(|n| *n > 0 && *n <= MAX_CHALLENGE_VALUES);
    n.ok_or_else(|| Error::Invalid {
        field: "challenge shape",
        reason: format!("[{tokens}, {hidden}] must hold 1..={MAX_CHALLENGE_VALUES} values"),
    })
}

/// The challenge input `X_e`, `[tokens, hidden]` row-major, each row of L2
/// norm `target_norm` (see the module docs for the derivation).
pub fn challenge_input(
    seed: &[u8; 32],
    tokens: u32,
    hidden: usize,
    target_norm: f64,
) -> Result<Vec<f32>> {
    let n = size(tokens, hidden)?;
    if !(target_norm.is_finite() && target_norm > 0.0) {
        return Err(Error::Invalid {
            field: "target norm",
            reason: format!("{target_norm} is not a positive number"),
        });
    }
    let mut rng = rng(seed, 0);
    let mut z = Vec::with_capacity(n + 1);
    while z.len() < n {
        let a = rng.next_u64();
        let b = rng.next_u64();
        let u1 = ((a >> 11) + 1) as f64 * f64::powi(2.0, -53);
        let u2 = (b >> 11) as f64 * f64::powi(2.0, -53);
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        z.push(r * theta.cos());
        z.push(r * theta.sin());
    }
    z.truncate(n);
    let mut out = Vec::with_capacity(n);
    for row in z.chunks(hidden) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        // A row of exact zeros cannot come out of Box-Muller (r > 0 unless
        // u1 = 1, and cos and sin are never both 0); guard anyway.
        let scale = if norm > 0.0 { target_norm / norm } else { 0.0 };
        out.extend(row.iter().map(|v| (v * scale) as f32));
    }
    Ok(out)
}

impl crate::records::Challenge {
    /// This challenge's input `X_e` for a model of width `hidden` (see
    /// [`challenge_input`]).
    pub fn input(&self, hidden: usize, target_norm: f64) -> Result<Vec<f32>> {
        challenge_input(&self.seed, self.tokens, hidden, target_norm)
    }

    /// This challenge's sketch matrix for a model of width `hidden`.
    pub fn sketch_matrix(&self, hidden: usize) -> Result<SketchMatrix> {
        SketchMatrix::new(&self.seed, self.tokens, hidden)
    }
}

/// The sketch projection of one challenge: a `[64, tokens * hidden]` ±1/8
/// matrix, kept as bits.
#[derive(Clone, Debug)]
pub struct SketchMatrix {
    width: usize,
    bits: Vec<u64>,
}

impl SketchMatrix {
    /// Draws the matrix of a challenge (stream 1 of its seed).
    pub fn new(seed: &[u8; 32], tokens: u32, hidden: usize) -> Result<SketchMatrix> {
        let width = size(tokens, hidden)?;
        let mut rng = rng(seed, 1);
        let words = (SKETCH_LEN * width).div_ceil(64);
        let bits = (0..words).map(|_| rng.next_u64()).collect();
        Ok(SketchMatrix { width, bits })
    }

    /// Entry `(k, i)`: `+1/8` or `-1/8`.
    pub fn entry(&self, k: usize, i: usize) -> f64 {
        let idx = k * self.width + i;
        if (self.bits[idx / 64] >> (idx % 64)) & 1 == 1 {
            0.125
        } else {
            -0.125
        }
    }

    /// Sketches a block's output (`[tokens, hidden]`, row-major) to 64 numbers.
    pub fn sketch(&self, output: &[f32]) -> Result<Sketch> {
        if output.len() != self.width {
            return Err(Error::Invalid {
                field: "block output",
                reason: format!("{} values, the challenge has {}", output.len(), self.width),
            });
        }
        let mut z = [0f32; SKETCH_LEN];
        for (k, zk) in z.iter_mut().enumerate() {
            let mut acc = 0f64;
            for (i, y) in output.iter().enumerate() {
                acc += self.entry(k, i) * f64::from(*y);
            }
            *zk = acc as f32;
        }
        Ok(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [42; 32];

    #[test]
    fn first_values_follow_the_documented_derivation() {
        // Recompute the first pair by hand from the raw stream.
        let mut raw = ChaCha20Rng::from_seed(SEED);
        raw.set_stream(0);
        let (a, b) = (raw.next_u64(), raw.next_u64());
        let u1 = ((a >> 11) + 1) as f64 / 9007199254740992.0;
        let u2 = (b >> 11) as f64 / 9007199254740992.0;
        let r = (-2.0 * u1.ln()).sqrt();
        let (z0, z1) = (
            r * (std::f64::consts::TAU * u2).cos(),
            r * (std::f64::consts::TAU * u2).sin(),
        );
        // A single row of 2 values scaled to norm 5.
        let x = challenge_input(&SEED, 1, 2, 5.0).unwrap();
        let n = (z0 * z0 + z1 * z1).sqrt();
        assert_eq!(x, vec![(z0 * 5.0 / n) as f32, (z1 * 5.0 / n) as f32]);
    }

    #[test]
    fn test_vector() {
        // Pinned so that any change of the derivation is seen; regenerate
        // only together with docs/consensus.md.
        let x = challenge_input(&SEED, 2, 4, 2.0).unwrap();
        let head: Vec<String> = x.iter().map(|v| format!("{v:.6}")).collect();
        assert_eq!(
            head,
            TEST_VECTOR_X
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
        let m = SketchMatrix::new(&SEED, 2, 4).unwrap();
        let z = m.sketch(&x).unwrap();
        let zs: Vec<String> = z[..4].iter().map(|v| format!("{v:.6}")).collect();
        assert_eq!(
            zs,
            TEST_VECTOR_Z
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
    }

    const TEST_VECTOR_X: [&str; 8] = [
        "-1.909737",
        "0.263661",
        "-0.369810",
        "0.382918",
        "-1.453801",
        "0.723612",
        "1.165006",
        "0.074907",
    ];
    const TEST_VECTOR_Z: [&str; 4] = ["-0.792932", "0.228325", "-0.343312", "0.357931"];

    #[test]
    fn rows_have_the_target_norm_and_look_normal() {
        let hidden = 2048;
        let x = challenge_input(&SEED, 8, hidden, 30.0).unwrap();
        assert_eq!(x.len(), 8 * hidden);
        for row in x.chunks(hidden) {
            let norm = row
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((norm - 30.0).abs() < 1e-3, "{norm}");
        }
        // Unscaled, the values are standard normal: mean ~0, and the
        // fraction within one sigma is ~68.3%.
        let sigma = 30.0 / (hidden as f64).sqrt();
        let mean = x.iter().map(|v| f64::from(*v)).sum::<f64>() / x.len() as f64;
        assert!(mean.abs() < 0.03 * sigma, "{mean}");
        let within =
            x.iter().filter(|v| f64::from(v.abs()) < sigma).count() as f64 / x.len() as f64;
        assert!((within - 0.683).abs() < 0.02, "{within}");
        // Other seeds give other inputs; the same seed the same bits.
        assert_ne!(x, challenge_input(&[1; 32], 8, hidden, 30.0).unwrap());
        assert_eq!(x, challenge_input(&SEED, 8, hidden, 30.0).unwrap());
    }

    #[test]
    fn sketch_is_linear_and_roughly_preserves_distances() {
        let (t, hidden) = (4, 256);
        let m = SketchMatrix::new(&SEED, t, hidden).unwrap();
        let mut entries = [0usize; 2];
        for k in 0..SKETCH_LEN {
            for i in 0..t as usize * hidden {
                entries[usize::from(m.entry(k, i) > 0.0)] += 1;
            }
        }
        let total = (entries[0] + entries[1]) as f64;
        assert!(
            (entries[1] as f64 / total - 0.5).abs() < 0.01,
            "{entries:?}"
        );
        let a = challenge_input(&[1; 32], t, hidden, 10.0).unwrap();
        let b = challenge_input(&[2; 32], t, hidden, 10.0).unwrap();
        let (za, zb) = (m.sketch(&a).unwrap(), m.sketch(&b).unwrap());
        let dist = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let d_full = dist(
            &a.iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x - *y))
                .collect::<Vec<_>>(),
        );
        let d_sketch = dist(
            &za.iter()
                .zip(&zb)
                .map(|(x, y)| f64::from(*x - *y))
                .collect::<Vec<_>>(),
        );
        // JL with 64 dimensions: within ~50% with overwhelming probability.
        assert!(
            (d_sketch / d_full - 1.0).abs() < 0.5,
            "{d_sketch} vs {d_full}"
        );
        // Linearity: sketch(a) entry 0 equals the hand-written sum.
        let hand: f64 = a
            .iter()
            .enumerate()
            .map(|(i, v)| m.entry(0, i) * f64::from(*v))
            .sum();
        assert_eq!(za[0], hand as f32);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(challenge_input(&SEED, 0, 8, 1.0).is_err());
        assert!(challenge_input(&SEED, 8, 0, 1.0).is_err());
        assert!(challenge_input(&SEED, 8, 8, f64::NAN).is_err());
        assert!(
            challenge_input(&SEED, 64, 1 << 20, 1.0)
                .unwrap_err()
                .to_string()
                .contains("challenge shape")
        );
        let m = SketchMatrix::new(&SEED, 2, 4).unwrap();
        assert!(
            m.sketch(&[0.0; 7])
                .unwrap_err()
                .to_string()
                .contains("7 values")
        );
    }
}
