//! `hypertensor chat`: an interactive conversation on the model's chat
//! template, streaming the answer as it is generated.

use std::io::{BufRead, Write};

use anyhow::{Result, bail};
use hypertensor_model::{ChatMessage, Flow, GenerationRequest, generate};

use crate::cli::ChatArgs;
use crate::commands::model;
use crate::commands::swarm::Engine;

pub(crate) fn run(args: ChatArgs, runtime: &tokio::runtime::Handle) -> Result<()> {
    let path = model::resolve(&args.model, false)?;
    let llm = Engine::open(&path, &args.swarm, runtime)?;
    let tuning = match &args.prompt_tuning {
        Some(file) => Some(llm.load_tuning(&path, file)?),
        None => None,
    };
    let Some(template) = llm.chat_template() else {
        bail!("this model has no chat template in its GGUF metadata; use `generate` instead");
    };
    let tokenizer = llm.tokenizer();
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::new("system", system));
    }
    let sampling = model::sampling(&args.sampling);
    let mut session = llm.session(usize::MAX, tuning.as_ref())?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("Type a message; /reset starts over, /exit or Ctrl-D quits.");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages.truncate(usize::from(args.system.is_some()));
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", line));
        let prompt = template.render(&messages, true)?;
        let request = GenerationRequest {
            prompt: tokenizer.encode(&prompt, true)?,
            max_tokens: args.sampling.max_tokens,
            sampling: sampling.clone(),
            stop: args.sampling.stop.clone(),
        };
        session.reset();
        let answer = generate(session.as_mut(), tokenizer, &request, |text| {
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            Flow::Continue
        });
        println!();
        match answer {
            Ok(answer) => messages.push(ChatMessage::new("assistant", &answer.text)),
            Err(e) => {
                // Most likely the conversation outgrew the context: say so
                // and let the user reset rather than exit.
                messages.pop();
                eprintln!("error: {e}");
            }
        }
    }
    Ok(())
}
