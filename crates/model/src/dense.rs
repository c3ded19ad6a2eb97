//! Weight matrices dequantized to f32 for training: the forward product
//! and its transpose, which carries gradients back to the input.

use rayon::prelude::*;

use crate::kernels::{QMatrix, VectorKernels};

/// A weight matrix dequantized to f32, row-major (`rows` outputs of
/// `cols` inputs), for one forward or backward call.
#[derive(Clone)]
pub(crate) struct Dense {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) w: Vec<f32>,
}

impl Dense {
    /// Dequantizes `m` (every row, in parallel).
    pub(crate) fn of(m: &QMatrix) -> Dense {
        let (rows, cols) = (m.rows(), m.cols());
        let mut w = vec![0.0; rows * cols];
        w.par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, out)| m.dequantize_row(r, out));
        Dense { rows, cols, w }
    }

    /// `out[t][r] = sum_c w[r][c] x[t][c]`. Each weight row is read once
    /// for all input rows (the weights are far larger than the inputs),
    /// the rows shared out between threads.
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.cols;
        let k = VectorKernels::detect();
        let mut transposed = vec![0.0; self.rows * n];
        transposed
            .par_chunks_mut(n.max(1) * ROWS_PER_TASK)
            .zip(self.w.par_chunks(self.cols * ROWS_PER_TASK))
            .for_each(|(out, w)| {
                for (o, wr) in out
                    .chunks_exact_mut(n.max(1))
                    .zip(w.chunks_exact(self.cols))
                {
                    for (v, xr) in o.iter_mut().zip(x.chunks_exact(self.cols)) {
                        *v = (k.dot)(wr, xr);
                    }
                }
            });
        let mut out = vec![0.0; n * self.rows];
        for (r, column) in transposed.chunks_exact(n.max(1)).enumerate() {
            for (t, v) in column.iter().enumerate() {
                out[t * self.rows + r] = *v;
            }
        }
        out
    }

    /// The transposed product: `dx[t][c] = sum_r dy[t][r] w[r][c]`. The
    /// columns are shared out between threads, each summing over every
    /// weight row in order, so the result does not depend on how the work
    /// was split (the same bits every run) and the weights are read once.
    pub(crate) fn backward(&self, dy: &[f32]) -> Vec<f32> {
        let n = dy.len() / self.rows;
        let k = VectorKernels::detect();
        let width = COLS_PER_TASK.min(self.cols.max(1));
        let starts: Vec<usize> = (0..self.cols).step_by(width).collect();
        let parts: Vec<(usize, usize, Vec<f32>)> = starts
            .into_par_iter()
            .map(|c0| {
                let c1 = (c0 + width).min(self.cols);
                let w = c1 - c0;
                let mut part = vec![0.0f32; n * w];
                for (r, wr) in self.w.chunks_exact(self.cols).enumerate() {
                    let segment = &wr[c0..c1];
                    for (t, out) in part.chunks_exact_mut(w).enumerate() {
                        let d = dy[t * self.rows + r];
                        if d != 0.0 {
                            (k.axpy)(out, d, segment);
                        }
                    }
                }
                (c0, w, part)
            })
            .collect();
        let mut dx = vec![0.0; n * self.cols];
        for (c0, w, part) in parts {
            for (t, row) in part.chunks_exact(w).enumerate() {
                dx[t * self.cols + c0..t * self.cols + c0 + w].copy_from_slice(row);
            }
        }
        dx
    }
}

/// Columns one task of the transposed product takes.
const COLS_PER_TASK: usize = 128;

/// Weight rows one task takes.
const ROWS_PER_TASK: usize = 64;

impl std::fmt::Debug for Dense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dense({}x{})", self.rows, self.cols)
    }
}
