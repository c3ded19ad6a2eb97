//! Continuous batching: the pending steps of many sequences run as one
//! forward pass through a span.
//!
//! Decoding one token is bound by memory bandwidth (every weight is read
//! for one row of arithmetic); decoding the next token of many sequences
//! in one pass reads the weights once for all of them. A [`Batcher`] owns a
//! span (and, for a whole model, the head) on a thread of its own. Callers
//! submit steps — a sequence's new hidden states with its cache — and get
//! back the cache and the outputs; the thread gathers what is pending,
//! runs it as one [`BlockSpan::forward_batch`], and answers each.
//!
//! # Policy
//!
//! * **Gathering.** When the first step of a batch arrives, the thread
//!   waits until every open sequence ([`Batcher::open`]) has a step
//!   pending, the batch is full, or [`BatchConfig::gather_wait`] has
//!   passed, whichever comes first. Sequences that step in lockstep (every
//!   decode loop does) then share every batch, and a lone sequence waits
//!   for nobody.
//! * **Order and chunks.** Steps are taken in order of arrival. Each step
//!   contributes at most [`BatchConfig::chunk_tokens`] rows to a batch and
//!   a batch holds at most [`BatchConfig::max_batch_tokens`] rows, so a
//!   long prompt is run a chunk per batch beside everyone else's decode
//!   steps: it delays them by at most one chunk per batch. A step that is
//!   only partly run keeps its place ahead of later arrivals, so every
//!   step is finished in a bounded number of batches (none starves).
//! * **Exactness.** Batching never changes a result: the span's products
//!   are row by row and its attention per sequence, computed in the same
//!   order whatever else is in the batch, so a sequence's outputs are bit
//!   for bit what it gets alone (the tests hold it to that).
//! * **Memory.** A batch's working memory is bounded by
//!   `max_batch_tokens` rows ([`Batcher::batch_bytes`]); the callers
//!   account the key/value caches themselves (they own them between
//!   steps).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{ModelError, Result};
use crate::head::Head;
use crate::hidden::HiddenStates;
use crate::span::{BlockSpan, SpanCache};

/// How a [`Batcher`] forms batches.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most rows (tokens) in one batch.
    pub max_batch_tokens: usize,
    /// Most rows one step contributes to a batch: longer prompts run a
    /// chunk per batch.
    pub chunk_tokens: usize,
    /// Longest a batch waits for open sequences' steps after its first.
    pub gather_wait: Duration,
}

impl Default for BatchConfig {
    /// 512 rows per batch, 128-row prefill chunks, 5 ms gathering: a
    /// chunk of 128 is where prefill reaches its full rate; the wait only
    /// runs while an open sequence has no step in (a lone sequence never
    /// waits), and 5 ms lets sequences whose steps come back through a
    /// chain of servers, a few milliseconds apart, join the same batch
    /// instead of splitting into two that each read the weights.
    fn default() -> Self {
        Self {
            max_batch_tokens: 512,
            chunk_tokens: 128,
            gather_wait: Duration::from_millis(5),
        }
    }
}

/// What a finished step returns.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutput {
    /// The span's output rows (a batcher without a head).
    Hidden(HiddenStates),
    /// Next-token logits after the step's last row (a batcher with a head).
    Logits(Vec<f32>),
}

/// A finished step: the sequence's cache back, and the outputs or why the
/// step failed (the cache is then as it was before the step).
pub type StepResult = (SpanCache, Result<StepOutput>);

/// Receives a step's result, on the batcher's thread.
pub type Reply = Box<dyn FnOnce(StepResult) + Send>;

/// Counters of the work done, for throughput under load and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    /// Batches run.
    pub batches: u64,
    /// Rows (tokens) run.
    pub rows: u64,
    /// Steps finished.
    pub steps: u64,
    /// Seconds spent running batches.
    pub busy_secs: f64,
    /// Rows in the largest batch so far.
    pub largest_batch: usize,
    /// Batches by size: `batch_sizes[i]` counts the batches of more than
    /// `BATCH_SIZE_BOUNDS[i - 1]` and at most `BATCH_SIZE_BOUNDS[i]` rows;
    /// the last slot counts the batches larger than every bound. For a
    /// histogram.
    pub batch_sizes: [u64; BATCH_SIZE_BOUNDS.len() + 1],
    /// Steps per second one sequence sees under the current load: the
    /// inverse of the recent mean batch time (zero before any batch).
    pub recent_steps_per_sec: f64,
    /// Rows per second over recent batches, all sequences together.
    pub recent_rows_per_sec: f64,
    /// When the last batch finished.
    pub last_batch: Option<Instant>,
}

/// Upper bounds (rows) of the batch size classes [`BatchStats`] counts.
pub const BATCH_SIZE_BOUNDS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Weight of the newest batch in the recent averages.
const RECENT_WEIGHT: f64 = 0.1;

struct Job {
    cache: SpanCache,
    input: HiddenStates,
    /// Rows of `input` already run.
    done: usize,
    /// Outputs of the rows already run.
    output: Vec<f32>,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// When the oldest pending job arrived.
    since: Option<Instant>,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    arrived: Condvar,
    open: AtomicUsize,
    stats: Mutex<BatchStats>,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A span (and optionally the head) behind a batching thread.
pub struct Batcher {
    span: Arc<BlockSpan>,
    head: Option<Arc<Head>>,
    config: BatchConfig,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("range", &self.span.range())
            .field("head", &self.head.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One open sequence, counted while it lives so batches wait for its
/// steps (see the module's gathering policy).
pub struct OpenSequence {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OpenSequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSequence").finish_non_exhaustive()
    }
}

impl Drop for OpenSequence {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
        // A batch may be waiting for this sequence's step.
        self.shared.arrived.notify_all();
    }
}

impl Batcher {
    /// Starts a batching thread for `span`; with `head`, finished steps
    /// return logits after their last row instead of hidden states.
    pub fn start(span: Arc<BlockSpan>, head: Option<Arc<Head>>, config: BatchConfig) -> Self {
        let config = BatchConfig {
            max_batch_tokens: config.max_batch_tokens.max(1),
            chunk_tokens: config.chunk_tokens.clamp(1, config.max_batch_tokens.max(1)),
            ..config
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            arrived: Condvar::new(),
            open: AtomicUsize::new(0),
            stats: Mutex::new(BatchStats::default()),
        });
        let worker = Worker {
            span: span.clone(),
            head: head.clone(),
            config: config.clone(),
            shared: shared.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("hypertensor-batcher".into())
            .spawn(move || worker.run());
        if let Err(e) = spawned {
            // Without a thread every step fails at once (see `submit`).
            tracing::error!(error = %e, "cannot start the batching thread");
            shared.queue().stopping = true;
        }
        Self {
            span,
            head,
            config,
            shared,
        }
    }

    /// The span run.
    pub fn span(&self) -> &Arc<BlockSpan> {
        &self.span
    }

    /// The batching parameters in force.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Bytes of working memory one batch may take at most: activations of
    /// `max_batch_tokens` rows through a block (the widest intermediate
    /// buffers of a block pass), which the caller can set aside from its
    /// memory budget.
    pub fn batch_bytes(&self) -> usize {
        let c = self.span.config();
        let per_row = 6 * c.hidden_size + 2 * c.kv_dim() + 2 * c.intermediate_size;
        self.config.max_batch_tokens * per_row * std::mem::size_of::<f32>()
    }

    /// Counts a sequence as open until the returned guard drops: batches
    /// wait (at most the gathering wait) for each open sequence's step.
    pub fn open(&self) -> OpenSequence {
        self.shared.open.fetch_add(1, Ordering::SeqCst);
        OpenSequence {
            shared: self.shared.clone(),
        }
    }

    /// Sequences open now.
    pub fn open_sequences(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The work done so far.
    pub fn stats(&self) -> BatchStats {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a step: `input` (the sequence's next rows) run on `cache`;
    /// `reply` gets the result on the batching thread, so it must only
    /// hand it on (send it on a channel). Bad input (wrong width, beyond
    /// the context, no rows) is answered at once, changing nothing.
    pub fn submit(&self, cache: SpanCache, input: HiddenStates, reply: Reply) {
        if let Err(e) = self.check(&cache, &input) {
            return reply((cache, Err(e)));
        }
        let mut queue = self.shared.queue();
        if queue.stopping {
            drop(queue);
            let e = ModelError::Unavailable("the batching thread has stopped".into());
            return reply((cache, Err(e)));
        }
        queue.since.get_or_insert_with(Instant::now);
        let rows = input.n_tokens();
        queue.jobs.push_back(Job {
            cache,
            input,
            done: 0,
            output: Vec::with_capacity(rows * self.span.config().hidden_size),
            reply,
        });
        drop(queue);
        self.shared.arrived.notify_all();
    }

    /// [`Batcher::submit`], waiting for the result on this thread.
    pub fn run(&self, cache: SpanCache, input: HiddenStates) -> StepResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fallback = cache.clone();
        self.submit(
            cache,
            input,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or_else(|_| {
            let e = ModelError::Unavailable("the batching thread stopped mid-step".into());
            (fallback, Err(e))
        })
    }

    fn check(&self, cache: &SpanCache, input: &HiddenStates) -> Result<()> {
        let c = self.span.config();
        if input.width() != c.hidden_size {
            return Err(ModelError::InvalidInput(format!(
                "hidden states have width {}, the model's is {}",
                input.width(),
                c.hidden_size
            )));
        }
        if input.n_tokens() == 0 {
            return Err(ModelError::InvalidInput(
                "a step needs at least one row".into(),
            ));
        }
        if !self.span.owns(cache) {
            return Err(ModelError::InvalidInput(
                "cache belongs to a span of another size".into(),
            ));
        }
        let requested = cache.positions() + input.n_tokens();
        if requested > c.context_length {
            return Err(ModelError::ContextOverflow {
                requested,
                limit: c.context_length,
            });
        }
        Ok(())
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.queue().stopping = true;
        self.shared.arrived.notify_all();
    }
}

/// The batching thread's side.
struct Worker {
    span: Arc<BlockSpan>,
    head: Option<Arc<Head>>,
    config: BatchConfig,
    shared: Arc<Shared>,
}

/// A job taken into the current batch, with how many of its rows run.
struct Taken {
    job: Job,
    rows: usize,
}

impl Worker {
    fn run(self) {
        while let Some(batch) = self.gather() {
            self.run_batch(batch);
        }
        // Stopping: answer whatever is left.
        let left: Vec<Job> = self.shared.queue().jobs.drain(..).collect();
        for job in left {
            let e = ModelError::Unavailable("the batching thread has stopped".into());
            (job.reply)((job.cache, Err(e)));
        }
    }

    /// Waits for work, then for the batch to fill (see the module's
    /// policy), and takes it: `None` when stopping.
    fn gather(&self) -> Option<Vec<Taken>> {
        let mut queue = self.shared.queue();
        loop {
            if queue.stopping {
                return None;
            }
            if !queue.jobs.is_empty() {
                let since = queue.since.unwrap_or_else(Instant::now);
                let deadline = since + self.config.gather_wait;
                let now = Instant::now();
                if now >= deadline || self.ready(&queue) {
                    break;
                }
                queue = self
                    .shared
                    .arrived
                    .wait_timeout(queue, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            queue = self
                .shared
                .arrived
                .wait(queue)
                .unwrap_or_else(|p| p.into_inner());
        }
        let mut budget = self.config.max_batch_tokens;
        let mut taken = Vec::new();
        while budget > 0 {
            let Some(job) = queue.jobs.pop_front() else {
                break;
            };
            let rows = (job.input.n_tokens() - job.done)
                .min(self.config.chunk_tokens)
                .min(budget);
            budget -= rows;
            taken.push(Taken { job, rows });
        }
        queue.since = (!queue.jobs.is_empty()).then(Instant::now);
        Some(taken)
    }

    /// Whether the pending steps make a batch without waiting longer:
    /// every open sequence has a step in, a step is part-way through, or
    /// the batch is full.
    fn ready(&self, queue: &Queue) -> bool {
        let pending_rows: usize = queue
            .jobs
            .iter()
            .map(|j| (j.input.n_tokens() - j.done).min(self.config.chunk_tokens))
            .sum();
        queue.jobs.len() >= self.shared.open.load(Ordering::SeqCst)
            || queue.jobs.iter().any(|j| j.done > 0)
            || pending_rows >= self.config.max_batch_tokens
    }

    fn run_batch(&self, mut batch: Vec<Taken>) {
        let width = self.span.config().hidden_size;
        let started = Instant::now();
        let before: Vec<usize> = batch.iter().map(|t| t.job.cache.positions()).collect();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut chunks = batch
                .iter()
                .map(|t| {
                    let rows = t.job.done * width..(t.job.done + t.rows) * width;
                    HiddenStates::new(width, t.job.input.as_slice()[rows].to_vec())
                })
                .collect::<Result<Vec<_>>>()?;
            let mut entries: Vec<(&mut HiddenStates, &mut SpanCache)> = chunks
                .iter_mut()
                .zip(batch.iter_mut())
                .map(|(hidden, t)| (hidden, &mut t.job.cache))
                .collect();
            self.span.forward_batch(&mut entries)?;
            Ok(chunks)
        }))
        .unwrap_or_else(|_| Err(ModelError::InvalidInput("the batch panicked".into())));
        let chunks = match outcome {
            Ok(chunks) => chunks,
            Err(e) => {
                // Steps are checked at submission, so this is a bug: fail
                // the batch's steps, each cache rewound to where it was.
                tracing::error!(error = %e, "a batch failed");
                for (mut t, positions) in batch.into_iter().zip(before) {
                    self.span.truncate(&mut t.job.cache, positions);
                    let e = ModelError::InvalidInput(format!("the step failed: {e}"));
                    (t.job.reply)((t.job.cache, Err(e)));
                }
                return;
            }
        };
        let rows: usize = batch.iter().map(|t| t.rows).sum();
        let mut unfinished = Vec::new();
        let mut finished = Vec::new();
        for (mut t, chunk) in batch.into_iter().zip(chunks) {
            t.job.done += t.rows;
            t.job.output.extend_from_slice(chunk.as_slice());
            if t.job.done < t.job.input.n_tokens() {
                unfinished.push(t.job);
            } else {
                finished.push(t.job);
            }
        }
        if !unfinished.is_empty() {
            // Part-run steps keep their place ahead of later arrivals.
            let mut queue = self.shared.queue();
            for job in unfinished.into_iter().rev() {
                queue.jobs.push_front(job);
            }
            queue.since.get_or_insert_with(Instant::now);
        }
        let steps = finished.len();
        let answers = self.answers(finished, width);
        // Counted before anyone hears back: whoever reads the stats after
        // their answer finds their batch in them.
        self.record(rows, steps, started.elapsed());
        for (reply, result) in answers {
            reply(result);
        }
    }

    /// The answers to finished steps: their output rows, or (with a head)
    /// the logits after each one's last row, computed in one product.
    fn answers(&self, finished: Vec<Job>, width: usize) -> Vec<(Reply, StepResult)> {
        let Some(head) = &self.head else {
            return finished
                .into_iter()
                .map(|job| {
                    let out = HiddenStates::new(width, job.output).map(StepOutput::Hidden);
                    (job.reply, (job.cache, out))
                })
                .collect();
        };
        let last: Vec<&[f32]> = finished
            .iter()
            .map(|j| &j.output[j.output.len() - width..])
            .collect();
        match head.forward_rows(&last) {
            Ok(logits) => finished
                .into_iter()
                .zip(logits)
                .map(|(job, logits)| (job.reply, (job.cache, Ok(StepOutput::Logits(logits)))))
                .collect(),
            Err(e) => finished
                .into_iter()
                .map(|job| {
                    let e = ModelError::InvalidInput(e.to_string());
                    (job.reply, (job.cache, Err(e)))
                })
                .collect(),
        }
    }

    fn record(&self, rows: usize, steps: usize, took: Duration) {
        let mut s = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        let secs = took.as_secs_f64().max(1e-9);
        s.batches += 1;
        s.rows += rows as u64;
        s.steps += steps as u64;
        s.busy_secs += secs;
        s.largest_batch = s.largest_batch.max(rows);
        let class = BATCH_SIZE_BOUNDS
            .iter()
            .position(|bound| rows <= *bound)
            .unwrap_or(BATCH_SIZE_BOUNDS.len());
        s.batch_sizes[class] += 1;
        s.last_batch = Some(Instant::now());
        let (step_rate, row_rate) = (1.0 / secs, rows as f64 / secs);
        if s.batches == 1 {
            s.recent_steps_per_sec = step_rate;
            s.recent_rows_per_sec = row_rate;
        } else {
            s.recent_steps_per_sec += RECENT_WEIGHT * (step_rate - s.recent_steps_per_sec);
            s.recent_rows_per_sec += RECENT_WEIGHT * (row_rate - s.recent_rows_per_sec);
        }
    }
}

/// A row waiting for the head, and where its logits go.
type HeadRequest = (Vec<f32>, std::sync::mpsc::SyncSender<Result<Vec<f32>>>);

/// The head shared by many sequences' threads, its products combined:
/// whoever asks while another product runs waits for it, and the first to
/// get the head next computes every waiting row at once (one pass over
/// the output matrix for all of them). Nobody waits when alone.
pub struct HeadBatcher {
    head: Arc<Head>,
    pending: Mutex<Vec<HeadRequest>>,
    running: Mutex<()>,
}

impl std::fmt::Debug for HeadBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadBatcher").finish_non_exhaustive()
    }
}

impl HeadBatcher {
    /// Shares `head`.
    pub fn new(head: Arc<Head>) -> Self {
        Self {
            head,
            pending: Mutex::new(Vec::new()),
            running: Mutex::new(()),
        }
    }

    /// Logits after `row` (one sequence's last hidden state), bit for bit
    /// what [`Head::forward_rows`] gives it alone.
    pub fn logits(&self, row: Vec<f32>) -> Result<Vec<f32>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((row, tx));
        let _running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // The one who held the head before may have done ours.
        if let Ok(done) = rx.try_recv() {
            return done;
        }
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let rows: Vec<&[f32]> = batch.iter().map(|(r, _)| r.as_slice()).collect();
        match self.head.forward_rows(&rows) {
            Ok(all) => {
                for ((_, tx), logits) in batch.iter().zip(all) {
                    let _ = tx.send(Ok(logits));
                }
            }
            Err(e) => {
                for (_, tx) in &batch {
                    let _ = tx.send(Err(ModelError::InvalidInput(e.to_string())));
                }
            }
        }
        rx.recv()
            .unwrap_or_else(|_| Err(ModelError::InvalidInput("the head product was lost".into())))
    }
}
