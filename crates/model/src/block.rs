//! One transformer block: pre-norm grouped-query attention and a SiLU-gated
//! MLP, each added to the residual stream.

use std::sync::Arc;

use rayon::prelude::*;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::kernels::{Precision, QMatrix, dot_f32};
use crate::layers::{RmsNorm, RopeTable, softmax, swiglu};

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
    config: Arc<LlamaConfig>,
    attn_norm: RmsNorm,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: RmsNorm,
    w_gate: QMatrix,
    w_up: QMatrix,
    w_down: QMatrix,
}

impl TransformerBlock {
    /// Reads block `index`'s tensors (`blk.<index>.*`) and checks their shapes.
    pub(crate) fn load(
        gguf: &GgufFile,
        config: Arc<LlamaConfig>,
        index: usize,
        precision: Precision,
    ) -> Result<Self> {
        let c = &config;
        let h = c.hidden_size;
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
        Ok(Self {
            attn_norm: RmsNorm::load(
                gguf,
                &format!("blk.{index}.attn_norm.weight"),
                h,
                c.rms_norm_eps,
            )?,
            wq: matrix("attn_q.weight", h, h)?,
            wk: matrix("attn_k.weight", c.kv_dim(), h)?,
            wv: matrix("attn_v.weight", c.kv_dim(), h)?,
            wo: matrix("attn_output.weight", h, h)?,
            ffn_norm: RmsNorm::load(
                gguf,
                &format!("blk.{index}.ffn_norm.weight"),
                h,
                c.rms_norm_eps,
            )?,
            w_gate: matrix("ffn_gate.weight", c.intermediate_size, h)?,
            w_up: matrix("ffn_up.weight", c.intermediate_size, h)?,
            w_down: matrix("ffn_down.weight", h, c.intermediate_size)?,
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
        let (h, kv_dim) = (c.hidden_size, c.kv_dim());
        let n = x.len() / h;
        debug_assert_eq!(lens.iter().sum::<usize>(), n);
        debug_assert_eq!(lens.len(), caches.len());

        let mut normed = vec![0.0; n * h];
        self.attn_norm.forward(x, &mut normed);
        let mut q = vec![0.0; n * h];
        let mut k = vec![0.0; n * kv_dim];
        let mut v = vec![0.0; n * kv_dim];
        self.wq.matmul(&normed, &mut q);
        self.wk.matmul(&normed, &mut k);
        self.wv.matmul(&normed, &mut v);
        rope.apply(&mut q, h);
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

        let mut attn = vec![0.0; n * h];
        let shared: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
        self.attention(&q, &shared, &rows, &mut attn);
        let mut projected = vec![0.0; n * h];
        self.wo.matmul(&attn, &mut projected);
        add_into(x, &projected);

        self.ffn_norm.forward(x, &mut normed);
        let mut gate = vec![0.0; n * c.intermediate_size];
        let mut up = vec![0.0; n * c.intermediate_size];
        self.w_gate.matmul(&normed, &mut gate);
        self.w_up.matmul(&normed, &mut up);
        swiglu(&mut gate, &up);
        self.w_down.matmul(&gate, &mut projected);
        add_into(x, &projected);
    }

    /// Causal attention of each query row over its own sequence's cache:
    /// `rows[t]` is row `t`'s sequence (an index into `caches`) and the
    /// number of that sequence's positions it sees.
    fn attention(&self, q: &[f32], caches: &[&KvCache], rows: &[(usize, usize)], out: &mut [f32]) {
        let c = &*self.config;
        let (h, d, kv_dim) = (c.hidden_size, c.head_dim, c.kv_dim());
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        // One task per (token, head): each writes its own `d` outputs.
        out.par_chunks_mut(d)
            .with_min_len(c.n_heads)
            .enumerate()
            .for_each(|(i, o)| {
                let (t, head) = (i / c.n_heads, i % c.n_heads);
                let (seq, visible) = rows[t];
                let cache = caches[seq];
                let kv_head = head / group;
                let qh = &q[t * h + head * d..][..d];
                let mut scores: Vec<f32> = (0..visible)
                    .map(|p| dot_f32(qh, &cache.keys[p * kv_dim + kv_head * d..][..d]) * scale)
                    .collect();
                softmax(&mut scores);
                o.fill(0.0);
                for (p, w) in scores.iter().enumerate() {
                    let vh = &cache.values[p * kv_dim + kv_head * d..][..d];
                    for (oi, vi) in o.iter_mut().zip(vh) {
                        *oi += w * vi;
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

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
