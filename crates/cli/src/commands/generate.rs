//! `hypertensor generate`: complete a prompt, streaming only the completion
//! to stdout.

use std::io::Write;

use anyhow::Result;
use hypertensor_model::{Flow, GenerationRequest, generate};

use crate::cli::GenerateArgs;
use crate::commands::model;
use crate::commands::swarm::Engine;

pub(crate) fn run(args: GenerateArgs, runtime: &tokio::runtime::Handle) -> Result<()> {
    let path = model::resolve(&args.model, false)?;
    let llm = Engine::open(&path, &args.swarm, runtime)?;
    let tuning = match &args.prompt_tuning {
        Some(file) => Some(llm.load_tuning(&path, file)?),
        None => None,
    };
    let tokenizer = llm.tokenizer();
    let request = GenerationRequest {
        prompt: tokenizer.encode_with_bos(&args.prompt, false)?,
        max_tokens: args.sampling.max_tokens,
        sampling: model::sampling(&args.sampling),
        stop: args.sampling.stop.clone(),
    };
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let tokens = request.prompt.len().saturating_add(request.max_tokens);
    let mut session = llm.session(tokens, tuning.as_ref())?;
    generate(session.as_mut(), tokenizer, &request, |text| {
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Flow::Continue,
            Err(e) => {
                // A closed pipe (`| head`) ends generation quietly.
                write_error = Some(e);
                Flow::Stop
            }
        }
    })?;
    match write_error {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => {
            let _ = writeln!(stdout);
            Ok(())
        }
    }
}
