//! The generation loop: prompt in, text out, streamed as it is produced,
//! with stop strings, a token budget and end-of-generation tokens.

use crate::error::{ModelError, Result};
use crate::model::LanguageModel;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;

/// What to generate.
#[derive(Debug, Clone, Default)]
pub struct GenerationRequest {
    /// The prompt, already tokenized.
    pub prompt: Vec<u32>,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// How to choose each token.
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these strings,
    /// which is not part of the output.
    pub stop: Vec<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// The token budget (or the context window) ran out.
    Length,
    /// The caller asked to stop (for example, its client went away).
    Cancelled,
}

impl FinishReason {
    /// The name OpenAI's API uses for this reason.
    pub fn as_openai_str(self) -> &'static str {
        match self {
            Self::Stop | Self::Cancelled => "stop",
            Self::Length => "length",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids (without a final end-of-generation token).
    pub tokens: Vec<u32>,
    /// The generated text, cut before any stop string.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Number of prompt tokens processed.
    pub prompt_tokens: usize,
}

/// Whether the caller wants more text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep generating.
    Continue,
    /// Stop now.
    Stop,
}

/// Generates from `model`, calling `on_text` once per generated token with
/// the text that became certain with it (complete UTF-8, and not possibly
/// the start of a stop string), which may be empty. Returning
/// [`Flow::Stop`] cancels the generation before the next model step, so a
/// caller whose client went away stops within one step.
///
/// Fails before running the model if the prompt is empty or does not leave
/// room in the context for at least one new token.
pub fn generate(
    model: &mut dyn LanguageModel,
    tokenizer: &Tokenizer,
    request: &GenerationRequest,
    mut on_text: impl FnMut(&str) -> Flow,
) -> Result<Generation> {
    if request.prompt.is_empty() {
        return Err(ModelError::InvalidInput("the prompt is empty".into()));
    }
    let context = model.context_length();
    if request.prompt.len() >= context {
        return Err(ModelError::ContextOverflow {
            requested: request.prompt.len() + 1,
            limit: context,
        });
    }
    let mut sampler = Sampler::new(request.sampling.clone())?;
    let budget = request.max_tokens.min(context - request.prompt.len());
    let mut stops = StopMatcher::new(&request.stop);
    let mut decoder = tokenizer.stream_decoder(true);
    let mut tokens = Vec::new();
    let mut finish_reason = FinishReason::Length;

    let mut logits = if budget > 0 {
        model.forward(&request.prompt)?
    } else {
        Vec::new()
    };
    while tokens.len() < budget {
        let token = sampler.sample(&logits)?;
        if tokenizer.is_eog(token) {
            finish_reason = FinishReason::Stop;
            break;
        }
        tokens.push(token);
        let piece = decoder.push(token)?;
        let (ready, stopped) = stops.push(&piece);
        if on_text(&ready) == Flow::Stop {
            finish_reason = FinishReason::Cancelled;
            break;
        }
        if stopped {
            finish_reason = FinishReason::Stop;
            break;
        }
        if tokens.len() == budget {
            break;
        }
        logits = model.forward(&[token])?;
    }
    if finish_reason != FinishReason::Cancelled {
        let rest = stops.finish(&decoder.finish());
        if !rest.is_empty() {
            on_text(&rest);
        }
    }
    Ok(Generation {
        tokens,
        text: stops.into_text(),
        finish_reason,
        prompt_tokens: request.prompt.len(),
    })
}

/// Finds stop strings in streamed text and holds back any tail that could
/// still become one.
#[derive(Debug)]
struct StopMatcher {
    stops: Vec<String>,
    text: String,
    emitted: usize,
    stopped: bool,
}

impl StopMatcher {
    fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Adds `piece`; returns the text now safe to emit, and whether a stop
    /// string was found (the text is then cut before it).
    fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        let search_from =
            floor_char_boundary(&self.text, self.emitted.saturating_sub(self.longest_stop()));
        self.text.push_str(piece);
        let found = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = found {
            self.text.truncate(at);
            self.stopped = true;
            return (self.take(self.text.len()), true);
        }
        let safe = self.text.len() - self.held_back();
        (self.take(safe), false)
    }

    /// Flushes what is held back once no more text will come.
    fn finish(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        let (mut ready, _) = self.push(piece);
        if !self.stopped {
            ready.push_str(&self.take(self.text.len()));
        }
        ready
    }

    fn take(&mut self, until: usize) -> String {
        let until = until.max(self.emitted);
        let out = self.text[self.emitted..until].to_string();
        self.emitted = until;
        out
    }

    fn longest_stop(&self) -> usize {
        self.stops.iter().map(String::len).max().unwrap_or(0)
    }

    /// Length of the longest suffix of the text that is a proper prefix of
    /// some stop string.
    fn held_back(&self) -> usize {
        let mut hold = 0;
        for stop in &self.stops {
            for (len, _) in stop.char_indices().skip(1) {
                if len > hold && self.text.ends_with(&stop[..len]) {
                    hold = len;
                }
            }
        }
        hold
    }

    fn into_text(self) -> String {
        self.text
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = Vec::new();
        let mut stopped = false;
        for p in pieces {
            let (ready, s) = m.push(p);
            if !ready.is_empty() {
                out.push(ready);
            }
            if s {
                stopped = true;
                break;
            }
        }
        if !stopped {
            let rest = m.finish("");
            if !rest.is_empty() {
                out.push(rest);
            }
        }
        (out, m.into_text(), stopped)
    }

    #[test]
    fn stop_string_split_across_pieces_is_found_and_never_emitted() {
        let (out, text, stopped) = run(&["\nUser:"], &["Hello", " there\n", "Us", "er: hi"]);
        assert!(stopped);
        assert_eq!(text, "Hello there");
        assert_eq!(out.concat(), "Hello there");
    }

    #[test]
    fn held_back_prefix_is_released_when_it_does_not_complete() {
        let (out, text, stopped) = run(&["END"], &["a E", "N", "x"]);
        assert!(!stopped);
        assert_eq!(text, "a ENx");
        assert_eq!(out, vec!["a ", "ENx"]);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (_, text, stopped) = run(&["cd", "b"], &["abcdef"]);
        assert!(stopped);
        assert_eq!(text, "a");
    }

    #[test]
    fn no_stops_emits_everything_at_once() {
        let (out, text, _) = run(&[], &["ab", "ü", "c"]);
        assert_eq!(out, vec!["ab", "ü", "c"]);
        assert_eq!(text, "abüc");
    }
}
