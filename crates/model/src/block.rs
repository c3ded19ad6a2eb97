//! One transformer block: pre-norm grouped-query attention and a gated MLP,
//! each added to the residual stream, with the variations of the supported
//! families: Q/K/V biases (Qwen 2), RMS-normed queries and keys, norms on
//! the attention and MLP outputs and sliding-window layers (Gemma 3).

use std::sync::Arc;

use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::kernels::{Precision, QMatrix, VectorKernels};
use crate::layers::{RmsNorm, RopeTable, gated, load_vector};

mod train;

pub(crate) use train::{BlockTape, DenseWeights};

/// Keys and values of every position a block has seen, for one sequence.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    fn len(&self, kv_dim: usize) -> usize {
        self.keys.len() / kv_dim
    }

    fn truncate(&mut self, positions: usize, kv_dim: usize) {
        self.keys.truncate(positions * kv_dim);
        self.values.truncate(positions * kv_dim);
    }

    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        (self.keys.len() + self.values.len()) * std::mem::size_of::<f32>()
    }
}

/// The weights of one transformer block.
#[derive(Debug, Clone)]
pub(crate) struct TransformerBlock {
    config: Arc<ModelConfig>,
    attn_norm: RmsNorm,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    /// Biases added to the Q, K and V projections (Qwen 2).
    qkv_bias: Option<[Vec<f32>; 3]>,
    /// RMS norms of each query and key head, before RoPE (Gemma 3).
    qk_norm: Option<[RmsNorm; 2]>,
    wo: QMatrix,
    /// Norm of the attention output before it joins the residual (Gemma 3).
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    w_gate: QMatrix,
    w_up: QMatrix,
    w_down: QMatrix,
    /// Norm of the MLP output before it joins the residual (Gemma 3).
    post_ffn_norm: Option<RmsNorm>,
    /// Positions a query sees in a sliding-window layer (None: all).
    window: Option<usize>,
}

impl TransformerBlock {
    /// Reads block `index`'s tensors (`blk.<index>.*`) and checks their shapes.
    pub(crate) fn load(
        gguf: &GgufFile,
        config: Arc<ModelConfig>,
        index: usize,
        precision: Precision,
    ) -> Result<Self> {
        let c = &config;
        let (h, q_dim, kv_dim, eps) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.rms_norm_eps);
        let name = |suffix: &str| format!("blk.{index}.{suffix}");
        let matrix = |suffix: &str, rows: usize, cols: usize| -> Result<QMatrix> {
            let name = format!("blk.{index}.{suffix}");
            let m = QMatrix::from_qtensor(&name, &gguf.read_tensor(&name)?)?;
            if (m.rows(), m.cols()) != (rows, cols) {
                return Err(ModelError::Tensor {
                    name,
                    problem: format!(
                        "expected shape [{rows}, {cols}], found [{}, {}]",
                        m.rows(),
                        m.cols()
                    ),
                });
            }
            Ok(m.with_precision(precision))
        };
        let qkv_bias = if gguf.has_tensor(&name("attn_q.bias")) {
            Some([
                load_vector(gguf, &name("attn_q.bias"), q_dim)?,
                load_vector(gguf, &name("attn_k.bias"), kv_dim)?,
                load_vector(gguf, &name("attn_v.bias"), kv_dim)?,
            ])
        } else {
            None
        };
        let qk_norm = match (
            RmsNorm::load_optional(gguf, &name("attn_q_norm.weight"), c.head_dim, eps)?,
            RmsNorm::load_optional(gguf, &name("attn_k_norm.weight"), c.head_dim, eps)?,
        ) {
            (Some(q), Some(k)) => Some([q, k]),
            (None, None) => None,
            _ => {
                return Err(ModelError::Tensor {
                    name: name("attn_k_norm.weight"),
                    problem: "queries and keys must both be normed or neither".into(),
                });
            }
        };
        Ok(Self {
            attn_norm: RmsNorm::load(gguf, &name("attn_norm.weight"), h, eps)?,
            wq: matrix("attn_q.weight", q_dim, h)?,
            wk: matrix("attn_k.weight", kv_dim, h)?,
            wv: matrix("attn_v.weight", kv_dim, h)?,
            qkv_bias,
            qk_norm,
            wo: matrix("attn_output.weight", h, q_dim)?,
            post_attn_norm: RmsNorm::load_optional(
                gguf,
                &name("post_attention_norm.weight"),
                h,
                eps,
            )?,
            ffn_norm: RmsNorm::load(gguf, &name("ffn_norm.weight"), h, eps)?,
            w_gate: matrix("ffn_gate.weight", c.intermediate_size, h)?,
            w_up: matrix("ffn_up.weight", c.intermediate_size, h)?,
            w_down: matrix("ffn_down.weight", h, c.intermediate_size)?,
            post_ffn_norm: RmsNorm::load_optional(gguf, &name("post_ffw_norm.weight"), h, eps)?,
            window: c.window_of(index),
            config,
        })
    }

    /// Bytes of weights held.
    pub(crate) fn byte_len(&self) -> usize {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
        .iter()
        .map(|m| m.byte_len())
        .sum()
    }

    /// Runs the block on `x`: the rows of several sequences one after the
    /// other, `lens[s]` rows of hidden size for sequence `s`, each at the
    /// positions following those already in its cache `caches[s]`, to which
    /// its keys and values are appended. `rope` holds one rotation per row
    /// of `x`, at that row's own position.
    ///
    /// Every product is row by row and every attention is within one
    /// sequence, computed in the same order whatever else is in the batch,
    /// so a sequence's outputs are bit for bit those of running it alone.
    pub(crate) fn forward(
        &self,
        x: &mut [f32],
        lens: &[usize],
        caches: &mut [&mut KvCache],
        rope: &RopeTable,
    ) {
        let c = &*self.config;
        let (h, q_dim, kv_dim) = (c.hidden_size, c.q_dim(), c.kv_dim());
        let n = x.len() / h;
        debug_assert_eq!(lens.iter().sum::<usize>(), n);
        debug_assert_eq!(lens.len(), caches.len());

        let mut normed = vec![0.0; n * h];
        self.attn_norm.forward(x, &mut normed);
        let mut q = vec![0.0; n * q_dim];
        let mut k = vec![0.0; n * kv_dim];
        let mut v = vec![0.0; n * kv_dim];
        self.wq.matmul(&normed, &mut q);
        self.wk.matmul(&normed, &mut k);
        self.wv.matmul(&normed, &mut v);
        if let Some([qb, kb, vb]) = &self.qkv_bias {
            add_rows(&mut q, qb);
            add_rows(&mut k, kb);
            add_rows(&mut v, vb);
        }
        if let Some([qn, kn]) = &self.qk_norm {
            qn.forward_in_place(&mut q);
            kn.forward_in_place(&mut k);
        }
        rope.apply(&mut q, q_dim);
        rope.apply(&mut k, kv_dim);
        // Each row's sequence and how many positions it sees (causal).
        let mut rows = Vec::with_capacity(n);
        let mut first = 0;
        for (s, (&len, cache)) in lens.iter().zip(caches.iter_mut()).enumerate() {
            let past = cache.len(kv_dim);
            cache
                .keys
                .extend_from_slice(&k[first * kv_dim..(first + len) * kv_dim]);
            cache
                .values
                .extend_from_slice(&v[first * kv_dim..(first + len) * kv_dim]);
            rows.extend((0..len).map(|t| (s, past + t + 1)));
            first += len;
        }

        let mut attn = vec![0.0; n * q_dim];
        let shared: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
        self.attention(&q, &shared, &rows, &mut attn);
        let mut projected = vec![0.0; n * h];
        self.wo.matmul(&attn, &mut projected);
        if let Some(norm) = &self.post_attn_norm {
            norm.forward_in_place(&mut projected);
        }
        add_into(x, &projected);

        self.ffn_norm.forward(x, &mut normed);
        let mut gate = vec![0.0; n * c.intermediate_size];
        let mut up = vec![0.0; n * c.intermediate_size];
        self.w_gate.matmul(&normed, &mut gate);
        self.w_up.matmul(&normed, &mut up);
        gated(c.activation, &mut gate, &up);
        self.w_down.matmul(&gate, &mut projected);
        if let Some(norm) = &self.post_ffn_norm {
            norm.forward_in_place(&mut projected);
        }
        add_into(x, &projected);
    }

    /// Causal attention of each query row over its own sequence's cache:
    /// `rows[t]` is row `t`'s sequence (an index into `caches`) and the
    /// number of that sequence's positions it sees (in a sliding-window
    /// layer, only the last `window` of them).
    ///
    /// One task per (row, KV head) computes that KV head's group of query
    /// heads together, so each cached key and value is read once for the
    /// group. A head's result depends only on its own query and cache, never
    /// on which rows share the batch, so prefill and decode agree bit for bit.
    fn attention(&self, q: &[f32], caches: &[&KvCache], rows: &[(usize, usize)], out: &mut [f32]) {
        let c = &*self.config;
        let (h, d, kv_dim) = (c.q_dim(), c.head_dim, c.kv_dim());
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let k = VectorKernels::detect();
        out.par_chunks_mut(d * group)
            .enumerate()
            .for_each(|(i, o)| {
                let (t, kv_head) = (i / c.n_kv_heads, i % c.n_kv_heads);
                let (seq, visible) = rows[t];
                let first = self.window.map_or(0, |w| visible.saturating_sub(w));
                let len = visible - first;
                let cache = caches[seq];
                let queries = &q[t * h + kv_head * group * d..][..group * d];
                let mut scores = vec![0.0f32; group * len];
                for (p, pos) in (first..visible).enumerate() {
                    let key = &cache.keys[pos * kv_dim + kv_head * d..][..d];
                    for (j, qh) in queries.chunks_exact(d).enumerate() {
                        scores[j * len + p] = (k.dot)(qh, key) * scale;
                    }
                }
                for row in scores.chunks_exact_mut(len.max(1)) {
                    (k.softmax)(row);
                }
                o.fill(0.0);
                for (p, pos) in (first..visible).enumerate() {
                    let value = &cache.values[pos * kv_dim + kv_head * d..][..d];
                    for (j, oh) in o.chunks_exact_mut(d).enumerate() {
                        (k.axpy)(oh, scores[j * len + p], value);
                    }
                }
            });
        debug_assert_eq!(out.len(), rows.len() * h);
    }

    /// Drops cached positions from `positions` on.
    pub(crate) fn truncate_cache(&self, cache: &mut KvCache, positions: usize) {
        cache.truncate(positions, self.config.kv_dim());
    }

    /// Number of positions in `cache`.
    pub(crate) fn cache_len(&self, cache: &KvCache) -> usize {
        cache.len(self.config.kv_dim())
    }
}

/// Adds `bias` to every row of `x`.
fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_into(row, bias);
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
