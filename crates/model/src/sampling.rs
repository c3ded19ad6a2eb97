//! Choosing the next token from logits: greedy, or seeded sampling with
//! temperature, top-k and top-p.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{ModelError, Result};

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (None: no limit).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches
    /// `p` (None or 1.0: no limit).
    pub top_p: Option<f32>,
    /// Seed of the random stream, so a sampled generation can be repeated.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks the parameters, naming the first one out of range.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(ModelError::InvalidInput(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(ModelError::InvalidInput("top_k must be at least 1".into()));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ModelError::InvalidInput(format!(
                "top_p must be in (0, 1], got {p}"
            )));
        }
        Ok(())
    }
}

/// Picks tokens according to [`SamplingParams`], with its own random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha20Rng,
}

impl Sampler {
    /// A sampler whose random stream starts from `params.seed`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            rng: ChaCha20Rng::seed_from_u64(params.seed),
            params,
        })
    }

    /// Chooses the next token id from `logits`. Only finite logits are
    /// candidates (a NaN or infinite one is the sign of broken numbers,
    /// and `-inf` means impossible); with none, the answer is
    /// [`ModelError::NonFiniteLogits`], never a panic or an arbitrary id.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(ModelError::InvalidInput("no logits to sample from".into()));
        }
        let no_candidate = || ModelError::NonFiniteLogits { len: logits.len() };
        if self.params.temperature == 0.0 {
            return finite_argmax(logits).ok_or_else(no_candidate);
        }
        // Candidates sorted by logit, highest first (ties: lower id first).
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.params.top_k {
            candidates.truncate(k);
        }
        let Some(&(_, max)) = candidates.first() else {
            return Err(no_candidate());
        };
        let mut probs: Vec<f32> = candidates
            .iter()
            .map(|(_, l)| ((l - max) / self.params.temperature).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = self.params.top_p {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            if r < *p {
                return Ok(candidates[i].0);
            }
            r -= p;
        }
        // Rounding left `r` past the last kept token: it is the pick.
        Ok(candidates[probs.len() - 1].0)
    }
}

/// The index of the largest finite logit (the lowest index among equals),
/// `None` when no logit is finite.
fn finite_argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_finite() && best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// The index of the largest logit (the lowest index among equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64) -> Sampler {
        Sampler::new(SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
        })
        .unwrap()
    }

    #[test]
    fn greedy_picks_the_largest_logit_and_lowest_id_on_ties() {
        let mut s = sampler(0.0, None, None, 1);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]).unwrap(), 1);
        assert_eq!(s.sample(&[5.0, 5.0]).unwrap(), 0);
    }

    #[test]
    fn same_seed_same_tokens_and_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = sampler(1.0, None, None, seed);
            (0..40)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.5, 2.0, 1.9, -3.0];
        let mut s = sampler(5.0, Some(1), None, 9);
        for _ in 0..20 {
            assert_eq!(s.sample(&logits).unwrap(), 1);
        }
    }

    #[test]
    fn top_k_and_top_p_never_pick_outside_the_kept_set() {
        // Probabilities at temperature 1: token 3 holds ~0.84, token 2 ~0.11.
        let logits = [0.0, 0.1, 2.0, 4.0];
        let mut top_k = sampler(1.0, Some(2), None, 5);
        let mut top_p = sampler(1.0, None, Some(0.8), 5);
        for _ in 0..200 {
            assert!(matches!(top_k.sample(&logits).unwrap(), 2 | 3));
            assert_eq!(top_p.sample(&logits).unwrap(), 3);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two tokens with probabilities 0.25 and 0.75 at temperature 1.
        let logits = [0.0, 3f32.ln()];
        let mut s = sampler(1.0, None, None, 123);
        let ones = (0..4000)
            .filter(|_| s.sample(&logits).unwrap() == 1)
            .count();
        assert!((2850..3150).contains(&ones), "{ones} of 4000");
    }

    #[test]
    fn logits_without_a_finite_value_are_an_error_not_a_panic() {
        let nan = [f32::NAN; 5];
        let inf = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        for (temperature, top_k, top_p) in [
            (0.0, None, None),
            (0.7, None, None),
            (1.0, Some(2), Some(0.9)),
        ] {
            let mut s = sampler(temperature, top_k, top_p, 3);
            for logits in [&nan[..], &inf[..]] {
                let err = s.sample(logits).unwrap_err();
                assert!(
                    matches!(err, ModelError::NonFiniteLogits { len } if len == logits.len()),
                    "temperature {temperature}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn non_finite_logits_are_never_picked() {
        // A NaN first (which a plain `>` scan would keep as the best) and
        // an infinity among finite logits: only finite ones are chosen.
        let logits = [f32::NAN, 1.0, f32::INFINITY, 3.0, f32::NEG_INFINITY];
        let mut greedy = sampler(0.0, None, None, 0);
        assert_eq!(greedy.sample(&logits).unwrap(), 3);
        let mut hot = sampler(2.0, None, None, 11);
        for _ in 0..200 {
            assert!(matches!(hot.sample(&logits).unwrap(), 1 | 3));
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        let bad = |p: SamplingParams| Sampler::new(p).unwrap_err().to_string();
        let base = SamplingParams::default();
        assert!(
            bad(SamplingParams {
                temperature: -1.0,
                ..base.clone()
            })
            .contains("temperature")
        );
        assert!(
            bad(SamplingParams {
                top_k: Some(0),
                ..base.clone()
            })
            .contains("top_k")
        );
        assert!(
            bad(SamplingParams {
                top_p: Some(1.5),
                ..base
            })
            .contains("top_p")
        );
    }
}
