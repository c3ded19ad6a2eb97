//! `hypertensor finetune`: prompt tuning. Soft prompts are trained with
//! Adam on prompt/completion pairs while the model stays frozen; the
//! embedding, head and optimizer run here, the blocks here or on the
//! swarm's servers (`--swarm`), which compute forward and backward passes
//! for this process. Checkpoints go to `--out` as training goes, and a run
//! resumes from one (`--resume`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use hypertensor_inference::tune::{RemoteRunner, train_step};
use hypertensor_model::tune::{Adam, Example, LocalRunner, SoftPrompts, SpanRunner, Tuner};
use hypertensor_model::{BlockSpan, Embedding, GgufFile, Head, Tokenizer};
use tokio::runtime::Handle;

use crate::cli::ModelArgs;
use crate::commands::model;
use crate::commands::swarm::{SwarmArgs, SwarmEngine};

/// `finetune` options.
#[derive(Debug, Args)]
pub(crate) struct FinetuneArgs {
    /// Training data: JSON lines, each `{"prompt": ..., "completion": ...}`.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// Rows of the soft prompt.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    prompt_tokens: u32,
    /// Also train a prompt for every block's input (deep prompt tuning).
    #[arg(long)]
    deep: bool,
    /// Optimizer steps in all (a resumed run goes on to this many).
    #[arg(long, value_name = "S", default_value_t = 100)]
    steps: u64,
    /// Adam's learning rate.
    #[arg(long, value_name = "LR", default_value_t = 0.01)]
    lr: f32,
    /// Examples per step.
    #[arg(long, value_name = "B", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    batch: u32,
    /// Where the trained prompts go (also each checkpoint).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Continue from the checkpoint at --out.
    #[arg(long)]
    resume: bool,
    /// Save a checkpoint every this many steps.
    #[arg(long, value_name = "K", default_value_t = 10)]
    checkpoint_every: u64,
    /// Seed of the prompts' initial values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Times a step is retried when the swarm fails under it.
    #[arg(long, default_value_t = 3)]
    retries: usize,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    swarm: SwarmArgs,
}

/// Reads prompt/completion pairs, naming the line of any bad one.
fn read_data(path: &Path, tokenizer: &Tokenizer) -> Result<Vec<Example>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut examples = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: not JSON", at()))?;
        let (Some(prompt), Some(completion)) =
            (value["prompt"].as_str(), value["completion"].as_str())
        else {
            bail!(
                "{}: needs string fields \"prompt\" and \"completion\"",
                at()
            );
        };
        examples.push(Example::new(tokenizer, prompt, completion).with_context(at)?);
    }
    if examples.is_empty() {
        bail!("{} holds no example", path.display());
    }
    Ok(examples)
}

pub(crate) fn run(args: FinetuneArgs, runtime: &Handle) -> Result<()> {
    let path = model::resolve(&args.model, false)?;
    let gguf = GgufFile::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let config = gguf.config()?;
    let tokenizer = Tokenizer::from_gguf(gguf.metadata())?;
    let examples = read_data(&args.data, &tokenizer)?;
    let name = args
        .swarm
        .model_name
        .clone()
        .unwrap_or_else(|| crate::commands::node::default_model_name(&path));
    let prompts = if args.resume {
        let p = SoftPrompts::load(&args.out)?;
        let deep_blocks = if args.deep { config.n_blocks } else { 0 };
        if (p.tokens, p.hidden, p.deep.len())
            != (args.prompt_tokens as usize, config.hidden_size, deep_blocks)
        {
            bail!(
                "{} holds {} prompt rows of width {}{}, not what these options ask for this model",
                args.out.display(),
                p.tokens,
                p.hidden,
                if p.deep.is_empty() {
                    String::new()
                } else {
                    format!(" for {} blocks", p.deep.len())
                }
            );
        }
        if p.model != name {
            bail!(
                "{} was trained for `{}`, not `{name}`",
                args.out.display(),
                p.model
            );
        }
        p
    } else {
        SoftPrompts::new(
            &name,
            args.prompt_tokens as usize,
            config.hidden_size,
            config.n_blocks,
            args.deep,
            args.seed,
        )
    };
    let embedding = Embedding::load(&gguf)?;
    let head = Head::load(&gguf, Some(&embedding))?.for_training();
    eprintln!(
        "tuning {} prompt rows{} of `{name}` on {} examples, {} steps",
        prompts.tokens,
        if args.deep { " per block" } else { "" },
        examples.len(),
        args.steps
    );
    if args.swarm.bootstrap.is_empty() {
        let span = BlockSpan::load(&gguf, 0..config.n_blocks)?;
        let tuner = Tuner {
            embedding: &embedding,
            head: &head,
            runner: LocalRunner::new(span),
            hidden: config.hidden_size,
        };
        train(tuner, prompts, &examples, &args)
    } else {
        let engine = SwarmEngine::join(&path, &args.swarm, runtime)?;
        let client = engine.client();
        let runner = RemoteRunner::new(
            client.p2p().clone(),
            runtime.clone(),
            &name,
            config.n_blocks,
            config.hidden_size,
            Duration::from_secs(120),
        );
        let tuner = Tuner {
            embedding: &embedding,
            head: &head,
            runner,
            hidden: config.hidden_size,
        };
        train(tuner, prompts, &examples, &args)
    }
}

/// The training loop: batches in order, a progress line, checkpoints.
fn train<R: SpanRunner>(
    mut tuner: Tuner<'_, R>,
    mut prompts: SoftPrompts,
    examples: &[Example],
    args: &FinetuneArgs,
) -> Result<()> {
    let adam = Adam::new(args.lr);
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let first = prompts.step;
    let batch = args.batch as usize;
    while prompts.step < args.steps {
        let from = (prompts.step as usize * batch) % examples.len();
        let chunk: Vec<Example> = (0..batch.min(examples.len()))
            .map(|i| examples[(from + i) % examples.len()].clone())
            .collect();
        let loss = train_step(&mut tuner, &adam, &mut prompts, &chunk, args.retries)
            .with_context(|| format!("step {}", prompts.step + 1))?;
        let done = prompts.step;
        let per_step = started.elapsed().as_secs_f64() / (done - first) as f64;
        let filled = (done * 30 / args.steps.max(1)) as usize;
        let line = format!(
            "[{}{}] step {done}/{}  loss {loss:.4}  {per_step:.1} s/step",
            "#".repeat(filled),
            " ".repeat(30 - filled.min(30)),
            args.steps
        );
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        if done.is_multiple_of(args.checkpoint_every.max(1)) || done == args.steps {
            prompts.save(&args.out)?;
        }
    }
    if tty {
        eprintln!();
    }
    prompts.save(&args.out)?;
    println!(
        "saved {} prompt rows to {}",
        prompts.tokens,
        args.out.display()
    );
    let _ = std::io::stdout().flush();
    Ok(())
}
