//! Prompt tuning through the swarm: the blocks of a training step run on
//! servers ([`RemoteRunner`], a `SpanRunner` over [`crate::train`]'s
//! requests), while the embedding, the head and the optimizer stay with
//! the client.
//!
//! A route covers the model with servers whose whole spans follow one
//! another (a training request names a server's exact span). The forward
//! keeps each hop's input; the backward sends it back with the gradient
//! (servers recompute). A server that fails is excluded for the rest of
//! the run; a failed forward hop is replaced and the forward goes on from
//! it, and a failed backward fails the step, which [`RemoteRunner`]'s
//! caller retries on a new route ([`train_step`]).

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
use crate::train::{TrainKind, TrainRequest, remote_train};

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

    /// Hops from block `from` to the end: at each block, the announced,
    /// non-excluded server starting there whose span reaches furthest
    /// (then the fastest).
    async fn plan(&mut self, from: usize) -> Result<Vec<Hop>> {
        let servers = announced_servers(&self.p2p, &self.model, self.n_blocks, 0).await?;
        let mut hops = Vec::new();
        let mut at = from;
        while at < self.n_blocks {
            let best = servers
                .iter()
                .filter(|(peer, info)| info.start as usize == at && !self.excluded.contains(peer))
                .max_by(|(_, a), (_, b)| {
                    (a.end, a.throughput)
                        .partial_cmp(&(b.end, b.throughput))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            let Some((peer, info)) = best else {
                // Training uses servers' whole spans: one must start here.
                return Err(InferenceError::NoRoute {
                    model: self.model.clone(),
                    from: at,
                    to: self.n_blocks,
                });
            };
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

    async fn forward_async(
        &mut self,
        inputs: &[Vec<f32>],
        deep: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>> {
        self.route = self.plan(0).await?;
        self.hop_inputs.clear();
        let mut x = inputs.to_vec();
        let mut i = 0;
        let mut attempts = 0;
        while i < self.route.len() {
            let hop = self.route[i].clone();
            let request = self.request(TrainKind::Forward, &hop, x.clone(), deep, Vec::new());
            match remote_train(&self.p2p, hop.peer, &request, self.hidden, self.timeout).await {
                Ok(out) => {
                    self.hop_inputs.push(std::mem::replace(&mut x, out));
                    i += 1;
                }
                Err(e) => {
                    attempts += 1;
                    tracing::warn!(peer = %hop.peer, error = %e, "training server failed; routing around it");
                    self.excluded.insert(hop.peer);
                    self.failovers += 1;
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
        let mut g = grads.to_vec();
        let sequences = g.len();
        for (i, hop) in self.route.clone().iter().enumerate().rev() {
            let inputs = self.hop_inputs[i].clone();
            let request = self.request(TrainKind::Backward, hop, inputs, deep, g);
            match remote_train(&self.p2p, hop.peer, &request, self.hidden, self.timeout).await {
                Ok(mut out) => {
                    let prompts = out.split_off(sequences);
                    for (b, p) in (hop.start..hop.end).zip(prompts) {
                        deep_grads[b] = p;
                    }
                    g = out;
                }
                Err(e) => {
                    self.excluded.insert(hop.peer);
                    self.failovers += 1;
                    return Err(e);
                }
            }
        }
        Ok((g, deep_grads))
    }
}

/// Most servers replaced within one forward.
const MAX_FAILOVERS: usize = 8;

fn unavailable(e: InferenceError) -> ModelError {
    ModelError::Unavailable(Box::new(e))
}

impl SpanRunner for RemoteRunner {
    fn forward(&mut self, inputs: &[Vec<f32>], deep: &[Vec<f32>]) -> ModelResult<Vec<Vec<f32>>> {
        let handle = self.handle.clone();
        handle
            .block_on(self.forward_async(inputs, deep))
            .map_err(unavailable)
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
            .map_err(unavailable)
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
                adam.step(prompts, &grads);
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
