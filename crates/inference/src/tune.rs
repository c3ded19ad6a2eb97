//! Prompt tuning through the swarm: the blocks of a training step run on
//! servers ([`RemoteRunner`], a `SpanRunner` over [`crate::train`]'s
//! requests), while the embedding, the head and the optimizer stay with
//! the client.
//!
//! A route covers the model with servers whose whole spans follow one
//! another (a training request names a server's exact span): the fewest
//! hops, then the fastest. Batches are split into requests that fit the
//! P2P frame. The forward keeps each hop's input; the backward sends it
//! back with the gradient (servers recompute). A server that fails (no
//! answer, a broken stream) is excluded for the rest of the run: a failed
//! forward hop is replaced and the forward goes on from it, and a failed
//! backward fails the step, which [`train_step`] retries on a new route. A
//! server's refusal (a sequence beyond its limits) ends the step with the
//! server's reason, and the server stays usable; a busy server's refusal
//! is retried like a failure.

use std::collections::HashSet;
use std::time::Duration;

use hypertensor_model::tune::{
    Adam, BackwardGrads, Example, SoftPrompts, SpanRunner, Tuner, TuningStep,
};
use hypertensor_model::{ModelError, Result as ModelResult};
use hypertensor_p2p::{Client, Multiaddr, PeerId};
use tokio::runtime::Handle;

use crate::client::announced_servers;
use crate::error::{InferenceError, Result};
use crate::train::{MAX_REQUEST_BYTES, TrainKind, TrainLimits, TrainRequest, remote_train};

/// One hop of a training route: a server and its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The server.
    pub peer: PeerId,
    /// Its first block.
    pub start: usize,
    /// One past its last block.
    pub end: usize,
}

/// The blocks of a training step, run by the swarm's servers.
pub struct RemoteRunner {
    p2p: Client,
    handle: Handle,
    model: String,
    n_blocks: usize,
    hidden: usize,
    timeout: Duration,
    excluded: HashSet<PeerId>,
    dialed: HashSet<PeerId>,
    route: Vec<Hop>,
    /// Each hop's inputs in the last forward.
    hop_inputs: Vec<Vec<Vec<f32>>>,
    failovers: u64,
}

impl RemoteRunner {
    /// A runner of `model`'s `n_blocks` blocks of width `hidden` on the
    /// servers `p2p` finds, each request given `timeout`. Blocking calls
    /// run on `handle` (call from outside the runtime, or from a blocking
    /// thread).
    pub fn new(
        p2p: Client,
        handle: Handle,
        model: &str,
        n_blocks: usize,
        hidden: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            p2p,
            handle,
            model: model.to_string(),
            n_blocks,
            hidden,
            timeout,
            excluded: HashSet::new(),
            dialed: HashSet::new(),
            route: Vec::new(),
            hop_inputs: Vec::new(),
            failovers: 0,
        }
    }

    /// The route the last forward took.
    pub fn route(&self) -> &[Hop] {
        &self.route
    }

    /// Servers that failed and were replaced so far.
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// Hops from block `from` to the end over announced, non-excluded
    /// servers whose whole spans follow one another: the fewest hops, then
    /// the fastest (the slowest hop's throughput highest).
    async fn plan(&mut self, from: usize) -> Result<Vec<Hop>> {
        let servers = announced_servers(&self.p2p, &self.model, self.n_blocks, 0).await?;
        let usable: Vec<_> = servers
            .iter()
            .filter(|(peer, info)| {
                !self.excluded.contains(peer) && (info.end as usize) <= self.n_blocks
            })
            .collect();
        // best[b]: (hops, slowest throughput, next server) from block b.
        let n = self.n_blocks;
        let mut best: Vec<Option<(usize, f64, usize)>> = vec![None; n + 1];
        best[n] = Some((0, f64::INFINITY, usize::MAX));
        for b in (from..n).rev() {
            for (i, (_, info)) in usable.iter().enumerate() {
                let (start, end) = (info.start as usize, info.end as usize);
                if start != b || end <= start {
                    continue;
                }
                if let Some((hops, slowest, _)) = best[end] {
                    let candidate = (hops + 1, slowest.min(info.throughput), i);
                    let better = match best[b] {
                        None => true,
                        Some((h, s, _)) => candidate.0 < h || (candidate.0 == h && candidate.1 > s),
                    };
                    if better {
                        best[b] = Some(candidate);
                    }
                }
            }
        }
        if best[from].is_none() {
            // Training uses servers' whole spans: no chain of them covers
            // the rest of the model from here.
            return Err(InferenceError::NoRoute {
                model: self.model.clone(),
                from,
                to: n,
            });
        }
        let mut hops = Vec::new();
        let mut at = from;
        while at < n {
            let Some((_, _, i)) = best[at] else { break };
            let (peer, info) = usable[i];
            if self.dialed.insert(*peer) {
                for addr in info
                    .addrs
                    .iter()
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                {
                    if self.p2p.dial(addr).await.is_ok() {
                        break;
                    }
                }
            }
            hops.push(Hop {
                peer: *peer,
                start: at,
                end: info.end as usize,
            });
            at = info.end as usize;
        }
        Ok(hops)
    }

    fn request(
        &self,
        kind: TrainKind,
        hop: &Hop,
        inputs: Vec<Vec<f32>>,
        deep: &[Vec<f32>],
        grads: Vec<Vec<f32>>,
    ) -> TrainRequest {
        TrainRequest {
            kind,
            model: self.model.clone(),
            start: hop.start as u32,
            end: hop.end as u32,
            inputs,
            prompts: if deep.is_empty() {
                Vec::new()
            } else {
                deep[hop.start..hop.end].to_vec()
            },
            grad_outputs: grads,
        }
    }

    /// The sequences in groups whose requests fit [`MAX_REQUEST_BYTES`]
    /// (`vectors` per sequence: 1 forward, 2 backward), alongside the
    /// hop's prompts, and a server's default limits on sequences and rows
    /// per request.
    fn groups(
        &self,
        lens: &[usize],
        vectors: usize,
        hop: &Hop,
        deep: &[Vec<f32>],
    ) -> Vec<std::ops::Range<usize>> {
        let prompts: usize = deep
            .get(hop.start..hop.end)
            .map_or(0, |d| d.iter().map(Vec::len).sum());
        let room = MAX_REQUEST_BYTES.saturating_sub(prompts * 4 + 1024);
        let limits = TrainLimits::default();
        let width = self.hidden.max(1);
        let mut groups = Vec::new();
        let (mut first, mut bytes, mut rows) = (0, 0, 0);
        for (i, len) in lens.iter().enumerate() {
            let size = len * 4 * vectors;
            let full = bytes + size > room
                || rows + len / width > limits.max_rows
                || i - first >= limits.max_sequences;
            if i > first && full {
                groups.push(first..i);
                first = i;
                bytes = 0;
                rows = 0;
            }
            bytes += size;
            rows += len / width;
        }
        if first < lens.len() {
            groups.push(first..lens.len());
        }
        groups
    }

    /// Sends one hop's requests, group by group; a refusal comes back as
    /// the server's reason, a failure excludes the server.
    async fn call(&mut self, hop: &Hop, requests: Vec<TrainRequest>) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for request in requests {
            match remote_train(&self.p2p, hop.peer, &request, self.hidden, self.timeout).await {
                Ok(vectors) => out.push(vectors),
                Err(e @ InferenceError::Refused { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(peer = %hop.peer, error = %e, "training server failed; routing around it");
                    self.excluded.insert(hop.peer);
                    self.failovers += 1;
                    return Err(e);
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    async fn forward_async(
        &mut self,
        inputs: &[Vec<f32>],
        deep: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>> {
        self.route = self.plan(0).await?;
        self.hop_inputs.clear();
        let lens: Vec<usize> = inputs.iter().map(Vec::len).collect();
        let mut x = inputs.to_vec();
        let mut i = 0;
        let mut attempts = 0;
        while i < self.route.len() {
            let hop = self.route[i].clone();
            let requests = self
                .groups(&lens, 1, &hop, deep)
                .into_iter()
                .map(|g| self.request(TrainKind::Forward, &hop, x[g].to_vec(), deep, Vec::new()))
                .collect();
            match self.call(&hop, requests).await {
                Ok(out) => {
                    self.hop_inputs.push(std::mem::replace(&mut x, out));
                    i += 1;
                }
                Err(e @ InferenceError::Refused { .. }) => return Err(e),
                Err(e) => {
                    attempts += 1;
                    if attempts > MAX_FAILOVERS {
                        return Err(e);
                    }
                    let rest = self.plan(hop.start).await?;
                    self.route.truncate(i);
                    self.route.extend(rest);
                }
            }
        }
        Ok(x)
    }

    async fn backward_async(
        &mut self,
        deep: &[Vec<f32>],
        grads: &[Vec<f32>],
    ) -> Result<BackwardGrads> {
        let mut deep_grads: Vec<Vec<f32>> = deep.iter().map(|p| vec![0.0; p.len()]).collect();
        let lens: Vec<usize> = grads.iter().map(Vec::len).collect();
        let mut g = grads.to_vec();
        for (i, hop) in self.route.clone().iter().enumerate().rev() {
            let groups = self.groups(&lens, 2, hop, deep);
            let per_group = hop.end - hop.start;
            let requests = groups
                .iter()
                .map(|r| {
                    self.request(
                        TrainKind::Backward,
                        hop,
                        self.hop_inputs[i][r.clone()].to_vec(),
                        deep,
                        g[r.clone()].to_vec(),
                    )
                })
                .collect();
            let answers = self.call(hop, requests).await?;
            // Each group answered its sequences' input gradients, then the
            // hop's prompt gradients (when deep), summed here over groups.
            let mut next = Vec::with_capacity(g.len());
            let mut at = 0;
            for r in &groups {
                next.extend(answers[at..at + r.len()].iter().cloned());
                at += r.len();
                if !deep.is_empty() {
                    for (b, p) in (hop.start..hop.end).zip(&answers[at..at + per_group]) {
                        deep_grads[b].iter_mut().zip(p).for_each(|(a, v)| *a += v);
                    }
                    at += per_group;
                }
            }
            g = next;
        }
        Ok((g, deep_grads))
    }
}

/// Most servers replaced within one forward.
const MAX_FAILOVERS: usize = 8;

fn unavailable(e: InferenceError) -> ModelError {
    ModelError::Unavailable(Box::new(e))
}

/// A refusal is the caller's to see (a sequence too long, a busy
/// server); anything else is the swarm failing under the step, which
/// [`train_step`] retries.
fn model_error(e: InferenceError) -> ModelError {
    match e {
        InferenceError::Refused { peer, reason } if !reason.starts_with("busy") => {
            ModelError::InvalidInput(format!("server {peer} refused: {reason}"))
        }
        other => unavailable(other),
    }
}

impl SpanRunner for RemoteRunner {
    fn forward(&mut self, inputs: &[Vec<f32>], deep: &[Vec<f32>]) -> ModelResult<Vec<Vec<f32>>> {
        let handle = self.handle.clone();
        handle
            .block_on(self.forward_async(inputs, deep))
            .map_err(model_error)
    }

    fn backward(
        &mut self,
        _inputs: &[Vec<f32>],
        deep: &[Vec<f32>],
        grad_outputs: &[Vec<f32>],
    ) -> ModelResult<BackwardGrads> {
        let handle = self.handle.clone();
        handle
            .block_on(self.backward_async(deep, grad_outputs))
            .map_err(model_error)
    }
}

/// One optimizer step of `prompts` on `batch`, retried on a new route
/// (the failed server excluded) up to `retries` times when the swarm fails
/// under it; returns the step's loss.
pub fn train_step<R: SpanRunner>(
    tuner: &mut Tuner<'_, R>,
    adam: &Adam,
    prompts: &mut SoftPrompts,
    batch: &[Example],
    retries: usize,
) -> ModelResult<f64> {
    let mut attempt = 0;
    loop {
        match tuner.step(prompts, batch) {
            Ok(TuningStep { loss, grads }) => {
                adam.step(prompts, &grads)?;
                return Ok(loss);
            }
            Err(ModelError::Unavailable(e)) if attempt < retries => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "training step failed; retrying on another route");
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(hidden: usize) -> RemoteRunner {
        let config = crate::p2p_config(
            hypertensor_primitives::Keypair::dev("groups"),
            1,
            hypertensor_primitives::H256([0; 32]),
            "m",
            std::sync::Arc::new(crate::AdmitAll),
        );
        let (p2p, _events, _loop) = hypertensor_p2p::new(config).unwrap();
        RemoteRunner::new(
            p2p,
            Handle::current(),
            "m",
            4,
            hidden,
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn batches_split_to_fit_a_frame_and_a_servers_limits() {
        let r = runner(1000);
        let hop = Hop {
            peer: PeerId::random(),
            start: 0,
            end: 2,
        };
        // 500 rows of width 1000: 2 MB forward, 4 MB backward each.
        let lens = vec![500 * 1000; 3];
        let forward = r.groups(&lens, 1, &hop, &[]);
        assert_eq!(forward, vec![0..2, 2..3], "at most 1,024 rows a request");
        let backward = r.groups(&lens, 2, &hop, &[]);
        assert_eq!(backward, vec![0..1, 1..2, 2..3], "two would not fit 7 MiB");
        // Small sequences: at most 32 a request.
        let small = r.groups(&vec![1000; 40], 1, &hop, &[]);
        assert_eq!(small, vec![0..32, 32..40]);
        // A refusal is the caller's reason unless the server is busy.
        let peer = PeerId::random();
        let refused = model_error(InferenceError::Refused {
            peer,
            reason: "a sequence of 600 positions; at most 512 are trained on".into(),
        });
        assert!(matches!(refused, ModelError::InvalidInput(m) if m.contains("at most 512")));
        let busy = model_error(InferenceError::Refused {
            peer,
            reason: "busy with other training requests".into(),
        });
        assert!(matches!(busy, ModelError::Unavailable(_)));
    }
}
