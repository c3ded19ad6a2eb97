//! Prompt tuning: training soft prompts while every weight of the model
//! stays frozen (Petals' "ptune"). A shallow prompt is `N` hidden-state
//! rows put before a sequence's token embeddings; a deep prompt adds, to
//! each block's input, `N` more rows on those first positions.
//!
//! The embedding and the head run where the trainer runs; the blocks run
//! behind a [`SpanRunner`], in this process ([`LocalRunner`]) or on the
//! swarm's servers (the inference crate's). One [`TuningStep`] is: embed
//! each example after the shallow prompt, run the blocks forward, take the
//! head's cross-entropy on the completion's tokens and its gradient, run
//! the blocks backward, and read the prompts' gradients off the input
//! gradient (shallow) and the blocks' prompt gradients (deep). [`Adam`]
//! then moves the prompts.

use std::io::{Read, Write};
use std::path::Path;

use crate::dense::Dense;
use crate::embedding::Embedding;
use crate::error::{ModelError, Result};
use crate::head::Head;
use crate::hidden::HiddenStates;
use crate::layers::RmsNorm;
use crate::span::{BlockSpan, SpanTape, TrainingWeights};
use crate::tokenizer::Tokenizer;

/// Gradients a backward returns: each input sequence's, then each
/// block's deep prompt's (summed over the batch).
pub type BackwardGrads = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// A sequence's input rows and the (row, token) pairs its loss predicts.
type Prepared = (Vec<f32>, Vec<(usize, u32)>);

/// What runs the model's blocks for training: every block, in order, for
/// a batch of sequences with deep prompts (one per block, or none).
pub trait SpanRunner {
    /// The outputs of the last block for each input sequence.
    fn forward(&mut self, inputs: &[Vec<f32>], deep: &[Vec<f32>]) -> Result<Vec<Vec<f32>>>;
    /// The gradients with respect to each input sequence and to each
    /// block's deep prompt (summed over the batch), given the gradients
    /// with respect to the outputs; the inputs and prompts are those of
    /// the forward.
    fn backward(
        &mut self,
        inputs: &[Vec<f32>],
        deep: &[Vec<f32>],
        grad_outputs: &[Vec<f32>],
    ) -> Result<BackwardGrads>;
}

/// Every block in this process, on f32 weights made once for the run.
/// The activations of the last forward are kept, so the backward that
/// follows it (same inputs, same prompts) does not run it again.
pub struct LocalRunner {
    span: BlockSpan,
    weights: TrainingWeights,
    last: Option<LastForward>,
}

/// A forward's inputs, prompts and tapes.
struct LastForward {
    inputs: Vec<Vec<f32>>,
    deep: Vec<Vec<f32>>,
    tapes: Vec<SpanTape>,
}

impl LocalRunner {
    /// Runs the blocks of `span` (the whole model's, for training),
    /// keeping its weights in f32 while it lives.
    pub fn new(span: BlockSpan) -> Self {
        let weights = span.training_weights();
        Self {
            span,
            weights,
            last: None,
        }
    }

    fn run(&self, x: &[f32], deep: &[Vec<f32>]) -> Result<(HiddenStates, SpanTape)> {
        let h = self.span.config().hidden_size;
        self.span
            .forward_train(&self.weights, &HiddenStates::new(h, x.to_vec())?, deep)
    }
}

impl SpanRunner for LocalRunner {
    fn forward(&mut self, inputs: &[Vec<f32>], deep: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        self.last = None;
        let mut outputs = Vec::with_capacity(inputs.len());
        let mut tapes = Vec::with_capacity(inputs.len());
        for x in inputs {
            let (out, tape) = self.run(x, deep)?;
            outputs.push(out.into_vec());
            tapes.push(tape);
        }
        self.last = Some(LastForward {
            inputs: inputs.to_vec(),
            deep: deep.to_vec(),
            tapes,
        });
        Ok(outputs)
    }

    fn backward(
        &mut self,
        inputs: &[Vec<f32>],
        deep: &[Vec<f32>],
        grad_outputs: &[Vec<f32>],
    ) -> Result<BackwardGrads> {
        let h = self.span.config().hidden_size;
        let tapes = match self.last.take() {
            Some(last) if last.inputs == inputs && last.deep == deep => last.tapes,
            _ => inputs
                .iter()
                .map(|x| Ok(self.run(x, deep)?.1))
                .collect::<Result<Vec<_>>>()?,
        };
        let mut deep_grads: Vec<Vec<f32>> = deep.iter().map(|p| vec![0.0; p.len()]).collect();
        let mut input_grads = Vec::with_capacity(inputs.len());
        for (tape, g) in tapes.iter().zip(grad_outputs) {
            let grads =
                self.span
                    .backward(&self.weights, tape, &HiddenStates::new(h, g.clone())?)?;
            for (sum, p) in deep_grads.iter_mut().zip(&grads.prompts) {
                sum.iter_mut().zip(p).for_each(|(a, b)| *a += b);
            }
            input_grads.push(grads.input.into_vec());
        }
        Ok((input_grads, deep_grads))
    }
}

/// Trained soft prompts, as saved to and loaded from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftPrompts {
    /// The model they were trained for (its name in DHT keys).
    pub model: String,
    /// Prompt rows `N`.
    pub tokens: usize,
    /// Hidden size.
    pub hidden: usize,
    /// The shallow prompt: `N` rows before the token embeddings.
    pub shallow: Vec<f32>,
    /// The deep prompts: one `N`-row vector per block, or none.
    pub deep: Vec<Vec<f32>>,
    /// Optimizer steps taken.
    pub step: u64,
    /// Adam's moments (one pair per vector: the shallow prompt, then each
    /// deep one), kept so training resumes where it stopped.
    pub moments: Vec<(Vec<f32>, Vec<f32>)>,
}

/// The first bytes of a soft-prompt file.
const MAGIC: &[u8; 8] = b"HTPTUNE1";

impl SoftPrompts {
    /// Fresh prompts of `tokens` rows for a model of `n_blocks` blocks of
    /// width `hidden` (deep when asked): small values from `seed`, so
    /// training starts close to the untuned model.
    pub fn new(
        model: &str,
        tokens: usize,
        hidden: usize,
        n_blocks: usize,
        deep: bool,
        seed: u64,
    ) -> Self {
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * 0.02
                })
                .collect()
        };
        let shallow = draw(tokens * hidden);
        let deep = if deep {
            (0..n_blocks).map(|_| vec![0.0; tokens * hidden]).collect()
        } else {
            Vec::new()
        };
        Self {
            model: model.to_string(),
            tokens,
            hidden,
            shallow,
            deep,
            step: 0,
            moments: Vec::new(),
        }
    }

    /// Writes the prompts (and optimizer state) to `path`, atomically:
    /// a temporary file renamed over it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = serde_json::json!({
            "model": self.model,
            "tokens": self.tokens,
            "hidden": self.hidden,
            "deep_blocks": self.deep.len(),
            "step": self.step,
            "moments": self.moments.len(),
        })
        .to_string();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        let vectors = std::iter::once(&self.shallow)
            .chain(&self.deep)
            .chain(self.moments.iter().flat_map(|(m, v)| [m, v]));
        for v in vectors {
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        let tmp = path.with_extension("part");
        let io = |e: std::io::Error| {
            ModelError::InvalidInput(format!("cannot write {}: {e}", path.display()))
        };
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&out).and_then(|()| f.sync_all()))
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads prompts written by [`SoftPrompts::save`]; a file that is not
    /// one, or is damaged, is an error naming it.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |why: String| ModelError::InvalidInput(format!("{}: {why}", path.display()));
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("not a soft-prompt file".into()));
        }
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let header: serde_json::Value = bytes
            .get(12..12 + len)
            .and_then(|h| serde_json::from_slice(h).ok())
            .ok_or_else(|| bad("damaged header".into()))?;
        let field = |k: &str| {
            header[k]
                .as_u64()
                .ok_or_else(|| bad(format!("no `{k}` in the header")))
        };
        let (tokens, hidden) = (field("tokens")? as usize, field("hidden")? as usize);
        let (deep_blocks, moments) = (field("deep_blocks")? as usize, field("moments")? as usize);
        let model = header["model"].as_str().unwrap_or_default().to_string();
        let n = tokens
            .checked_mul(hidden)
            .filter(|n| *n > 0 && *n <= 1 << 26)
            .ok_or_else(|| bad("implausible prompt size".into()))?;
        let vectors = 1 + deep_blocks + 2 * moments;
        let data = &bytes[12 + len..];
        if deep_blocks > 4096 || moments > 4097 || data.len() != vectors * n * 4 {
            return Err(bad(format!(
                "{} bytes of values, expected {}",
                data.len(),
                vectors * n * 4
            )));
        }
        let mut chunks = data.chunks_exact(n * 4).map(|c| {
            c.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<f32>>()
        });
        let shallow = chunks.next().unwrap_or_default();
        let deep: Vec<Vec<f32>> = (0..deep_blocks).filter_map(|_| chunks.next()).collect();
        let mut pairs = Vec::with_capacity(moments);
        for _ in 0..moments {
            let (Some(m), Some(v)) = (chunks.next(), chunks.next()) else {
                return Err(bad("truncated moments".into()));
            };
            pairs.push((m, v));
        }
        if moments != 0 && moments != 1 + deep_blocks {
            return Err(bad(format!(
                "{moments} optimizer moments for {} prompt vectors",
                1 + deep_blocks
            )));
        }
        let moment_values = pairs.iter().flat_map(|(m, v)| m.iter().chain(v));
        if shallow
            .iter()
            .chain(deep.iter().flatten())
            .chain(moment_values)
            .any(|v| !v.is_finite())
        {
            return Err(bad("holds a non-finite value".into()));
        }
        Ok(Self {
            model,
            tokens,
            hidden,
            shallow,
            deep,
            step: field("step")?,
            moments: pairs,
        })
    }
}

/// Adam (Kingma and Ba), moving every vector of a [`SoftPrompts`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the second moment's root.
    pub eps: f32,
}

impl Adam {
    /// Adam with learning rate `lr` and the usual 0.9, 0.999, 1e-8.
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// One step of `prompts` down `grads` (the shallow prompt's, then each
    /// deep prompt's), updating its moments and step count. Gradients of
    /// another shape are refused and change nothing.
    pub fn step(&self, prompts: &mut SoftPrompts, grads: &[Vec<f32>]) -> Result<()> {
        let vectors = 1 + prompts.deep.len();
        let n = prompts.shallow.len();
        if grads.len() != vectors || grads.iter().any(|g| g.len() != n) {
            return Err(ModelError::InvalidInput(format!(
                "{} gradients for {vectors} prompt vectors of {n} values",
                grads.len()
            )));
        }
        if prompts.moments.len() != vectors {
            prompts.moments = (0..vectors)
                .map(|_| {
                    let n = prompts.shallow.len();
                    (vec![0.0; n], vec![0.0; n])
                })
                .collect();
        }
        prompts.step += 1;
        let t = prompts.step as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        let params = std::iter::once(&mut prompts.shallow).chain(prompts.deep.iter_mut());
        for ((p, g), (m, v)) in params.zip(grads).zip(prompts.moments.iter_mut()) {
            for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = self.beta1 * *m + (1.0 - self.beta1) * g;
                *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
                *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + self.eps);
            }
        }
        Ok(())
    }
}

/// One training example: a prompt's tokens, then the completion's, whose
/// every token (and the end-of-sequence token after it) is predicted.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The prompt's tokens (with the tokenizer's BOS when it adds one).
    pub prompt: Vec<u32>,
    /// The completion's tokens, the end-of-sequence token last.
    pub completion: Vec<u32>,
}

impl Example {
    /// Tokenizes a prompt/completion pair.
    pub fn new(tokenizer: &Tokenizer, prompt: &str, completion: &str) -> Result<Self> {
        let prompt_ids = tokenizer
            .encode_with_bos(prompt, false)
            .map_err(|e| ModelError::InvalidInput(e.to_string()))?;
        let mut completion_ids = tokenizer
            .encode(completion, false)
            .map_err(|e| ModelError::InvalidInput(e.to_string()))?;
        if let Some(eos) = tokenizer.eos_id() {
            completion_ids.push(eos);
        }
        if prompt_ids.is_empty() || completion_ids.is_empty() {
            return Err(ModelError::InvalidInput(
                "an example needs a prompt and a completion".into(),
            ));
        }
        Ok(Self {
            prompt: prompt_ids,
            completion: completion_ids,
        })
    }
}

/// The head in f32 for training: the final norm and the output matrix,
/// dequantized once.
pub struct TrainHead {
    norm: RmsNorm,
    output: Dense,
}

impl Head {
    /// This head for training (dequantizes the output matrix: vocabulary
    /// times hidden floats).
    pub fn for_training(&self) -> TrainHead {
        TrainHead {
            norm: self.norm.clone(),
            output: Dense::of(&self.output),
        }
    }
}

impl TrainHead {
    /// The summed cross-entropy of predicting `targets` (row, token) from
    /// the rows of `hidden` (width `h`), and its gradient with respect to
    /// `hidden` (zero on rows without a target). All targets go through the
    /// output matrix together: one pass over it forward, one back.
    pub fn loss(&self, hidden: &[f32], h: usize, targets: &[(usize, u32)]) -> (f64, Vec<f32>) {
        let mut grad = vec![0.0; hidden.len()];
        if targets.is_empty() {
            return (0.0, grad);
        }
        let vocab = self.output.rows;
        let rows: Vec<f32> = targets
            .iter()
            .flat_map(|(row, _)| hidden[row * h..(row + 1) * h].iter().copied())
            .collect();
        let mut normed = vec![0.0; rows.len()];
        let scales = self.norm.forward_keeping(&rows, &mut normed);
        let logits = self.output.forward(&normed);
        let mut total = 0.0f64;
        let mut d_logits = vec![0.0f32; logits.len()];
        for ((row_logits, d), (_, token)) in logits
            .chunks_exact(vocab)
            .zip(d_logits.chunks_exact_mut(vocab))
            .zip(targets)
        {
            let max = row_logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f64> = row_logits
                .iter()
                .map(|l| f64::from(l - max).exp())
                .collect();
            let sum: f64 = exp.iter().sum();
            let target = (*token as usize).min(vocab - 1);
            total += sum.ln() - f64::from(row_logits[target] - max);
            for (i, (g, e)) in d.iter_mut().zip(&exp).enumerate() {
                *g = (e / sum) as f32 - if i == target { 1.0 } else { 0.0 };
            }
        }
        let d_normed = self.output.backward(&d_logits);
        let mut d_rows = vec![0.0; rows.len()];
        self.norm.backward(&rows, &scales, &d_normed, &mut d_rows);
        for ((row, _), d) in targets.iter().zip(d_rows.chunks_exact(h)) {
            grad[row * h..(row + 1) * h]
                .iter_mut()
                .zip(d)
                .for_each(|(a, b)| *a += b);
        }
        (total, grad)
    }

    /// The most likely next token after row `row` of `hidden`.
    pub fn greedy(&self, hidden: &[f32], h: usize, row: usize) -> u32 {
        let x = &hidden[row * h..(row + 1) * h];
        let mut normed = vec![0.0; h];
        self.norm.forward_keeping(x, &mut normed);
        let logits = self.output.forward(&normed);
        let mut best = 0;
        for (i, l) in logits.iter().enumerate() {
            if *l > logits[best] {
                best = i;
            }
        }
        best as u32
    }
}

/// The embedding, the head and the blocks' runner, for tuning prompts.
pub struct Tuner<'a, R: SpanRunner> {
    /// Token embeddings.
    pub embedding: &'a Embedding,
    /// The head, in f32.
    pub head: &'a TrainHead,
    /// The blocks.
    pub runner: R,
    /// Hidden size.
    pub hidden: usize,
}

/// What one step measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TuningStep {
    /// Mean cross-entropy per completion token, before the step.
    pub loss: f64,
    /// The gradients (shallow, then each deep prompt), for the optimizer.
    pub grads: Vec<Vec<f32>>,
}

impl<R: SpanRunner> Tuner<'_, R> {
    /// The input rows of `example` after `prompts`' shallow rows, and the
    /// (row, token) pairs its loss predicts.
    fn input(&self, prompts: &SoftPrompts, example: &Example) -> Result<Prepared> {
        let tokens: Vec<u32> = example
            .prompt
            .iter()
            .chain(&example.completion)
            .copied()
            .collect();
        let embedded = self.embedding.forward(&tokens)?;
        let mut x = prompts.shallow.clone();
        x.extend_from_slice(embedded.as_slice());
        let first = prompts.tokens + example.prompt.len();
        let targets = example
            .completion
            .iter()
            .enumerate()
            .map(|(i, t)| (first + i - 1, *t))
            .collect();
        Ok((x, targets))
    }

    /// The loss of `batch` and the prompts' gradients.
    pub fn step(&mut self, prompts: &SoftPrompts, batch: &[Example]) -> Result<TuningStep> {
        let h = self.hidden;
        let mut inputs = Vec::with_capacity(batch.len());
        let mut targets = Vec::with_capacity(batch.len());
        for example in batch {
            let (x, t) = self.input(prompts, example)?;
            inputs.push(x);
            targets.push(t);
        }
        let count: usize = targets.iter().map(Vec::len).sum();
        let outputs = self.runner.forward(&inputs, &prompts.deep)?;
        let mut loss = 0.0;
        let mut grad_outputs = Vec::with_capacity(batch.len());
        for (out, t) in outputs.iter().zip(&targets) {
            let (l, mut g) = self.head.loss(out, h, t);
            loss += l;
            g.iter_mut().for_each(|v| *v /= count as f32);
            grad_outputs.push(g);
        }
        let (input_grads, deep_grads) =
            self.runner
                .backward(&inputs, &prompts.deep, &grad_outputs)?;
        let mut shallow = vec![0.0; prompts.shallow.len()];
        for g in &input_grads {
            shallow.iter_mut().zip(g).for_each(|(a, b)| *a += b);
        }
        let mut grads = vec![shallow];
        grads.extend(deep_grads);
        Ok(TuningStep {
            loss: loss / count as f64,
            grads,
        })
    }

    /// Greedy decoding of up to `max_tokens` after `prompt` with the soft
    /// prompts (recomputing the whole sequence each token: for checking a
    /// tuned prompt, not for serving).
    pub fn greedy(
        &mut self,
        prompts: &SoftPrompts,
        prompt: &[u32],
        max_tokens: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for _ in 0..max_tokens {
            let tokens: Vec<u32> = prompt.iter().chain(&out).copied().collect();
            let mut x = prompts.shallow.clone();
            x.extend_from_slice(self.embedding.forward(&tokens)?.as_slice());
            let rows = x.len() / self.hidden;
            let hidden = self.runner.forward(&[x], &prompts.deep)?.remove(0);
            let next = self.head.greedy(&hidden, self.hidden, rows - 1);
            if Some(next) == eos {
                break;
            }
            out.push(next);
        }
        Ok(out)
    }
}
