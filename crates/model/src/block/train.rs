//! A block's forward pass for training, which keeps what its backward pass
//! needs, and that backward pass: the gradient of a loss with respect to
//! the block's input hidden states, given its gradient with respect to
//! the output. The weights stay frozen and quantized; the products run
//! on the weights dequantized to f32 ([`DenseWeights`], made by the caller
//! for as long as it trains: the input gradient is the transposed product
//! with them), and everything else is f32 too: RMS
//! norms, RoPE, causal grouped-query attention (with a sliding window
//! where the layer has one) and the gated MLP.
//!
//! One sequence at a time, from position 0 (a training example is a whole
//! sequence; there is no cache). The tape holds every activation of the
//! block (`BlockSpan::tape_len` counts them).

use rayon::prelude::*;

use super::TransformerBlock;
use crate::dense::Dense;
use crate::layers::{RopeTable, gated, gated_backward};

/// What a block's training forward kept for its backward pass.
#[derive(Debug, Clone)]
pub(crate) struct BlockTape {
    n: usize,
    x0: Vec<f32>,
    scales_attn: Vec<f32>,
    /// Queries and keys after the bias, before the per-head norms.
    q_lin: Vec<f32>,
    k_lin: Vec<f32>,
    qk_scales: Option<[Vec<f32>; 2]>,
    /// Queries and keys as attention used them (normed, rotated).
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention weights: per query row, per query head, over the visible
    /// keys `first(t)..=t`.
    probs: Vec<Vec<f32>>,
    attn: Vec<f32>,
    attn_out: Vec<f32>,
    scales_post_attn: Vec<f32>,
    x1: Vec<f32>,
    scales_ffn: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    ffn_out: Vec<f32>,
    scales_post_ffn: Vec<f32>,
}

impl BlockTape {
    /// Floats held, for memory budgets.
    pub(crate) fn len(&self) -> usize {
        let vecs = [
            &self.x0,
            &self.q_lin,
            &self.k_lin,
            &self.q,
            &self.k,
            &self.v,
            &self.attn,
            &self.attn_out,
            &self.x1,
            &self.gate,
            &self.up,
            &self.ffn_out,
        ];
        vecs.iter().map(|v| v.len()).sum::<usize>() + self.probs.iter().map(Vec::len).sum::<usize>()
    }
}

/// A block's seven matrices in f32.
#[derive(Debug)]
pub(crate) struct DenseWeights {
    wq: Dense,
    wk: Dense,
    wv: Dense,
    wo: Dense,
    w_gate: Dense,
    w_up: Dense,
    w_down: Dense,
}

impl TransformerBlock {
    /// The block's seven matrices dequantized to f32, for training calls.
    pub(crate) fn dense_weights(&self) -> DenseWeights {
        DenseWeights {
            wq: Dense::of(&self.wq),
            wk: Dense::of(&self.wk),
            wv: Dense::of(&self.wv),
            wo: Dense::of(&self.wo),
            w_gate: Dense::of(&self.w_gate),
            w_up: Dense::of(&self.w_up),
            w_down: Dense::of(&self.w_down),
        }
    }

    /// The first position row `t` of a sequence sees in this layer.
    fn first_visible(&self, t: usize) -> usize {
        self.window.map_or(0, |w| (t + 1).saturating_sub(w))
    }

    /// Runs the block on the `n` rows of one sequence `x` (positions
    /// `0..n`, rotations in `rope`) in f32, in place, and keeps what
    /// [`TransformerBlock::backward`] needs.
    pub(crate) fn forward_train(
        &self,
        dense: &DenseWeights,
        x: &mut [f32],
        rope: &RopeTable,
    ) -> BlockTape {
        let c = &*self.config;
        let (h, q_dim, kv_dim, d) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.head_dim);
        let n = x.len() / h;
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let x0 = x.to_vec();

        let mut normed = vec![0.0; n * h];
        let scales_attn = self.attn_norm.forward_keeping(x, &mut normed);
        let mut q_lin = dense.wq.forward(&normed);
        let mut k_lin = dense.wk.forward(&normed);
        let mut v = dense.wv.forward(&normed);
        if let Some([qb, kb, vb]) = &self.qkv_bias {
            super::add_rows(&mut q_lin, qb);
            super::add_rows(&mut k_lin, kb);
            super::add_rows(&mut v, vb);
        }
        let (mut q, mut k) = (q_lin.clone(), k_lin.clone());
        let qk_scales = self.qk_norm.as_ref().map(|[qn, kn]| {
            [
                qn.forward_keeping(&q_lin, &mut q),
                kn.forward_keeping(&k_lin, &mut k),
            ]
        });
        rope.apply(&mut q, q_dim);
        rope.apply(&mut k, kv_dim);

        let mut attn = vec![0.0; n * q_dim];
        let probs: Vec<Vec<f32>> = attn
            .par_chunks_mut(q_dim)
            .enumerate()
            .map(|(t, out)| {
                let first = self.first_visible(t);
                let len = t + 1 - first;
                let mut weights = vec![0.0f32; c.n_heads * len];
                for head in 0..c.n_heads {
                    let kv_head = head / group;
                    let query = &q[t * q_dim + head * d..][..d];
                    let row = &mut weights[head * len..][..len];
                    for (p, s) in (first..=t).enumerate() {
                        let key = &k[s * kv_dim + kv_head * d..][..d];
                        row[p] = query.iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * scale;
                    }
                    softmax(row);
                    let o = &mut out[head * d..][..d];
                    for (p, s) in (first..=t).enumerate() {
                        let value = &v[s * kv_dim + kv_head * d..][..d];
                        for (a, b) in o.iter_mut().zip(value) {
                            *a += row[p] * b;
                        }
                    }
                }
                weights
            })
            .collect();

        let attn_out = dense.wo.forward(&attn);
        let mut projected = attn_out.clone();
        let scales_post_attn = match &self.post_attn_norm {
            Some(norm) => norm.forward_keeping(&attn_out, &mut projected),
            None => Vec::new(),
        };
        super::add_into(x, &projected);
        let x1 = x.to_vec();

        let scales_ffn = self.ffn_norm.forward_keeping(x, &mut normed);
        let gate = dense.w_gate.forward(&normed);
        let up = dense.w_up.forward(&normed);
        let mut act = gate.clone();
        gated(c.activation, &mut act, &up);
        let ffn_out = dense.w_down.forward(&act);
        let mut projected = ffn_out.clone();
        let scales_post_ffn = match &self.post_ffn_norm {
            Some(norm) => norm.forward_keeping(&ffn_out, &mut projected),
            None => Vec::new(),
        };
        super::add_into(x, &projected);
        BlockTape {
            n,
            x0,
            scales_attn,
            q_lin,
            k_lin,
            qk_scales,
            q,
            k,
            v,
            probs,
            attn,
            attn_out,
            scales_post_attn,
            x1,
            scales_ffn,
            gate,
            up,
            ffn_out,
            scales_post_ffn,
        }
    }

    /// The gradient with respect to the block's input, given `dy`, the
    /// gradient with respect to its output, for the forward `tape` kept
    /// (with the same `rope`).
    pub(crate) fn backward(
        &self,
        dense: &DenseWeights,
        tape: &BlockTape,
        dy: &[f32],
        rope: &RopeTable,
    ) -> Vec<f32> {
        let c = &*self.config;
        let (h, q_dim, kv_dim, d) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.head_dim);
        let n = tape.n;
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (d as f32).sqrt();

        // MLP: y = x1 + post_ffn(down(act(gate) * up)) over ffn_norm(x1).
        let mut dx1 = dy.to_vec();
        let d_ffn_out = match &self.post_ffn_norm {
            Some(norm) => {
                let mut g = vec![0.0; n * h];
                norm.backward(&tape.ffn_out, &tape.scales_post_ffn, dy, &mut g);
                g
            }
            None => dy.to_vec(),
        };
        let d_act = dense.w_down.backward(&d_ffn_out);
        let (d_gate, d_up) = gated_backward(c.activation, &tape.gate, &tape.up, &d_act);
        let mut d_normed = dense.w_gate.backward(&d_gate);
        super::add_into(&mut d_normed, &dense.w_up.backward(&d_up));
        self.ffn_norm
            .backward(&tape.x1, &tape.scales_ffn, &d_normed, &mut dx1);

        // Attention: x1 = x0 + post_attn(wo(attention(q, k, v))).
        let d_attn_out = match &self.post_attn_norm {
            Some(norm) => {
                let mut g = vec![0.0; n * h];
                norm.backward(&tape.attn_out, &tape.scales_post_attn, &dx1, &mut g);
                g
            }
            None => dx1.clone(),
        };
        let d_attn = dense.wo.backward(&d_attn_out);
        let mut dq = vec![0.0; n * q_dim];
        let mut dk = vec![0.0; n * kv_dim];
        let mut dv = vec![0.0; n * kv_dim];
        for t in 0..n {
            let first = self.first_visible(t);
            let len = t + 1 - first;
            for head in 0..c.n_heads {
                let kv_head = head / group;
                let p = &tape.probs[t][head * len..][..len];
                let d_out = &d_attn[t * q_dim + head * d..][..d];
                // d p_s = d_out . v_s; d score_s = p_s (d p_s - sum p d p).
                let mut dp = vec![0.0f32; len];
                for (j, s) in (first..=t).enumerate() {
                    let value = &tape.v[s * kv_dim + kv_head * d..][..d];
                    dp[j] = d_out.iter().zip(value).map(|(a, b)| a * b).sum();
                    let dvs = &mut dv[s * kv_dim + kv_head * d..][..d];
                    for (g, o) in dvs.iter_mut().zip(d_out) {
                        *g += p[j] * o;
                    }
                }
                let mean: f32 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                let query = &tape.q[t * q_dim + head * d..][..d];
                for (j, s) in (first..=t).enumerate() {
                    let ds = p[j] * (dp[j] - mean) * scale;
                    if ds == 0.0 {
                        continue;
                    }
                    let key = &tape.k[s * kv_dim + kv_head * d..][..d];
                    let dqt = &mut dq[t * q_dim + head * d..][..d];
                    for (g, kv) in dqt.iter_mut().zip(key) {
                        *g += ds * kv;
                    }
                    let dks = &mut dk[s * kv_dim + kv_head * d..][..d];
                    for (g, qv) in dks.iter_mut().zip(query) {
                        *g += ds * qv;
                    }
                }
            }
        }
        rope.apply_inverse(&mut dq, q_dim);
        rope.apply_inverse(&mut dk, kv_dim);
        if let (Some([qn, kn]), Some([sq, sk])) = (&self.qk_norm, &tape.qk_scales) {
            let mut g = vec![0.0; n * q_dim];
            qn.backward(&tape.q_lin, sq, &dq, &mut g);
            dq = g;
            let mut g = vec![0.0; n * kv_dim];
            kn.backward(&tape.k_lin, sk, &dk, &mut g);
            dk = g;
        }
        let mut d_normed = dense.wq.backward(&dq);
        super::add_into(&mut d_normed, &dense.wk.backward(&dk));
        super::add_into(&mut d_normed, &dense.wv.backward(&dv));
        let mut dx0 = dx1;
        self.attn_norm
            .backward(&tape.x0, &tape.scales_attn, &d_normed, &mut dx0);
        dx0
    }
}

/// Softmax of `row` in place (max subtracted first).
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}
