//! The endpoints: parse, check the model, run the backend on a blocking
//! thread, answer as JSON or as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use hypertensor_model::{Flow, Generation, GenerationRequest, PromptTuning};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};

use crate::error::{ApiError, Result};
use crate::request::{ChatRequest, Common, CompletionRequest};
use crate::{Backend, BackendError};

/// Text pieces buffered between the generating thread and the HTTP stream.
const STREAM_BUFFER: usize = 64;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) permits: Arc<Semaphore>,
    /// Requests waiting for a permit now.
    pub(crate) waiting: Arc<AtomicUsize>,
    /// Most requests allowed to wait; beyond, 429.
    pub(crate) max_waiting: usize,
    /// `max_tokens` of a chat that gives none.
    pub(crate) chat_default_max_tokens: usize,
    /// The chain behind the dashboard's chain view, if any.
    pub(crate) chain: Option<Arc<dyn crate::ChainView>>,
    /// Token counters.
    pub(crate) metrics: crate::observe::ApiMetrics,
}

/// A place in the queue for a generation permit, given back on drop.
struct QueueSlot(Arc<AtomicUsize>);

impl QueueSlot {
    fn take(state: &AppState) -> Result<Self> {
        let taken = state
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < state.max_waiting).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Self(state.waiting.clone())),
            Err(n) => Err(ApiError::TooManyRequests(format!(
                "{n} requests are already waiting for a generation slot; retry later"
            ))),
        }
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which endpoint shapes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Invalid(message) => ApiError::BadRequest {
                message,
                param: None,
            },
            BackendError::Unavailable(m) => ApiError::Unavailable(m),
            BackendError::Full(m) => ApiError::Full(m),
            BackendError::Failed(m) => ApiError::Internal(m),
        }
    }
}

/// The model, then each trained prompt served as `<model>:<name>`.
pub(crate) async fn models(State(state): State<AppState>) -> Json<Value> {
    let id = state.backend.model_id();
    let entry = |id: String| {
        json!({
            "id": id,
            "object": "model",
            "created": 0,
            "owned_by": "hypertensor",
        })
    };
    let tunings = state.backend.tunings().names();
    let data: Vec<Value> = std::iter::once(entry(id.to_string()))
        .chain(tunings.map(|name| entry(format!("{id}:{name}"))))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

pub(crate) async fn swarm(State(state): State<AppState>) -> Result<Json<Value>> {
    // Backends may block (a swarm reads the DHT): keep it off the runtime.
    let backend = state.backend.clone();
    tokio::task::spawn_blocking(move || backend.swarm())
        .await
        .map_err(|e| ApiError::Internal(format!("swarm view failed: {e}")))??
        .map(Json)
        .ok_or_else(|| ApiError::BadRequest {
            message: "this server runs a local model, not a swarm".into(),
            param: None,
        })
}

fn parse_json(body: &Bytes) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        message: format!("the request body is not valid JSON: {e}"),
        param: None,
    })
}

/// The trained prompt the request's model id names (`<model>:<name>`),
/// or none for the plain model; an id served neither way is a 404.
fn resolve_model(state: &AppState, common: &Common) -> Result<Option<Arc<PromptTuning>>> {
    let id = state.backend.model_id();
    if common.model == id {
        return Ok(None);
    }
    common
        .model
        .strip_prefix(id)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|name| state.backend.tunings().get(name))
        .map(|tuning| Some(tuning.clone()))
        .ok_or_else(|| ApiError::UnknownModel(common.model.clone()))
}

pub(crate) async fn completions(State(state): State<AppState>, body: Bytes) -> Result<Response> {
    let req = CompletionRequest::parse(parse_json(&body)?)?;
    let tuning = resolve_model(&state, &req.common)?;
    let prompt = state
        .backend
        .tokenizer()
        .encode_with_bos(&req.prompt, false)
        .map_err(|e| ApiError::bad_param("prompt", e.to_string()))?;
    run(state, Kind::Completion, req.common, prompt, tuning).await
}

pub(crate) async fn chat(State(state): State<AppState>, body: Bytes) -> Result<Response> {
    let req = ChatRequest::parse(parse_json(&body)?, state.chat_default_max_tokens)?;
    let tuning = resolve_model(&state, &req.common)?;
    let template = state
        .backend
        .chat_template()
        .ok_or_else(|| ApiError::BadRequest {
            message: "this model has no chat template; use /v1/completions".into(),
            param: None,
        })?;
    let text = template
        .render(&req.messages, true)
        .map_err(|e| ApiError::bad_param("messages", e.to_string()))?;
    let prompt = state
        .backend
        .tokenizer()
        .encode(&text, true)
        .map_err(|e| ApiError::bad_param("messages", e.to_string()))?;
    run(state, Kind::Chat, req.common, prompt, tuning).await
}

enum Piece {
    Text(String),
    Done(std::result::Result<Generation, BackendError>),
}

/// Starts the generation on a blocking thread (after taking a permit) and
/// returns the channel its pieces arrive on.
async fn start(
    state: &AppState,
    request: GenerationRequest,
    tuning: Option<Arc<PromptTuning>>,
    stream: bool,
) -> Result<mpsc::Receiver<Piece>> {
    let closed = || ApiError::Unavailable("the server is shutting down".into());
    let permit: OwnedSemaphorePermit = match state.permits.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(TryAcquireError::Closed) => return Err(closed()),
        Err(TryAcquireError::NoPermits) => {
            let _slot = QueueSlot::take(state)?;
            state
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| closed())?
        }
    };
    let backend = state.backend.clone();
    let metrics = state.metrics.clone();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // Called once per token: the generation stops within one step of
        // its client going away (the handler drops the receiver), streamed
        // or not, and its caches are freed with the session.
        let mut on_text = |text: &str| {
            if tx.is_closed() {
                return Flow::Stop;
            }
            if !stream || text.is_empty() {
                return Flow::Continue;
            }
            match tx.blocking_send(Piece::Text(text.to_string())) {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Stop,
            }
        };
        let outcome = backend.generate(&request, tuning.as_deref(), &mut on_text);
        if let Ok(generation) = &outcome {
            metrics
                .prompt_tokens
                .inc_by(generation.prompt_tokens as u64);
            metrics
                .completion_tokens
                .inc_by(generation.tokens.len() as u64);
        }
        let _ = tx.blocking_send(Piece::Done(outcome));
    });
    Ok(rx)
}

/// The completion budget: `max_tokens` fitted to the context left after
/// the prompt, or a 400 naming the limit when the prompt leaves no room or
/// the caller asked for more than fits.
fn completion_budget(kind: Kind, common: &Common, prompt: usize, context: usize) -> Result<usize> {
    let room = context.saturating_sub(prompt);
    let too_long = |completion: usize, param: &'static str| ApiError::ContextLength {
        limit: context,
        requested: prompt.saturating_add(completion),
        prompt,
        completion,
        room,
        param,
    };
    if room == 0 {
        let param = match kind {
            Kind::Completion => "prompt",
            Kind::Chat => "messages",
        };
        return Err(too_long(1, param));
    }
    if common.max_tokens_explicit && common.max_tokens > room {
        return Err(too_long(common.max_tokens, "max_tokens"));
    }
    Ok(common.max_tokens.min(room))
}

async fn run(
    state: AppState,
    kind: Kind,
    common: Common,
    prompt: Vec<u32>,
    tuning: Option<Arc<PromptTuning>>,
) -> Result<Response> {
    let max_tokens = if prompt.is_empty() {
        common.max_tokens
    } else {
        // A trained prompt's rows take the context's first positions.
        let context = state
            .backend
            .context_length()
            .saturating_sub(tuning.as_ref().map_or(0, |t| t.tokens()));
        completion_budget(kind, &common, prompt.len(), context)?
    };
    let request = GenerationRequest {
        prompt,
        max_tokens,
        sampling: common.sampling.clone(),
        stop: common.stop.clone(),
    };
    let mut rx = start(&state, request, tuning, common.stream).await?;
    let first = rx.recv().await.ok_or_else(|| {
        ApiError::Internal("the generation thread ended without an answer".into())
    })?;
    let meta = Meta::new(kind, &common.model);
    if !common.stream {
        let Piece::Done(outcome) = first else {
            return Err(ApiError::Internal("unexpected streamed text".into()));
        };
        return Ok(Json(meta.whole(&outcome?)).into_response());
    }
    // Errors before any text still get their HTTP status.
    if let Piece::Done(Err(e)) = first {
        return Err(e.into());
    }
    let events = sse_events(meta, common.include_usage, first, rx);
    Ok(Sse::new(events).into_response())
}

/// Identity of one response, repeated in every chunk.
#[derive(Debug, Clone)]
struct Meta {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn new(kind: Kind, model: &str) -> Self {
        let prefix = match kind {
            Kind::Completion => "cmpl",
            Kind::Chat => "chatcmpl",
        };
        Self {
            kind,
            id: format!("{prefix}-{:032x}", rand::random::<u128>()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            model: model.to_string(),
        }
    }

    fn usage(g: &Generation) -> Value {
        json!({
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.tokens.len(),
            "total_tokens": g.prompt_tokens + g.tokens.len(),
        })
    }

    fn whole(&self, g: &Generation) -> Value {
        let finish = g.finish_reason.as_openai_str();
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": 0, "text": g.text, "logprobs": null, "finish_reason": finish,
            }),
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": g.text},
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        json!({
            "id": self.id,
            "object": match self.kind { Kind::Completion => "text_completion", Kind::Chat => "chat.completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": Self::usage(g),
        })
    }

    fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool) -> Value {
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish,
            }),
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), "assistant".into());
                }
                if let Some(t) = text {
                    delta.insert("content".into(), t.into());
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({
            "id": self.id,
            "object": match self.kind { Kind::Completion => "text_completion", Kind::Chat => "chat.completion.chunk" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    fn usage_chunk(&self, g: &Generation) -> Value {
        json!({
            "id": self.id,
            "object": match self.kind { Kind::Completion => "text_completion", Kind::Chat => "chat.completion.chunk" },
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": Self::usage(g),
        })
    }
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

/// The SSE body: a role chunk (chat), text chunks, a finishing chunk, an
/// optional usage chunk, then `[DONE]`. A failure mid-stream is sent as an
/// error object before `[DONE]`.
fn sse_events(
    meta: Meta,
    include_usage: bool,
    first: Piece,
    rx: mpsc::Receiver<Piece>,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let mut opening = Vec::new();
    if meta.kind == Kind::Chat {
        opening.push(data(&meta.chunk(Some(""), None, true)));
    }
    let state = (Some(first), rx, false);
    let body = stream::unfold(state, move |(mut pending, mut rx, finished)| {
        let meta = meta.clone();
        async move {
            if finished {
                return None;
            }
            let piece = match pending.take() {
                Some(p) => p,
                None => rx.recv().await.unwrap_or_else(|| {
                    Piece::Done(Err(BackendError::Failed("generation thread ended".into())))
                }),
            };
            let events = match piece {
                Piece::Text(t) => vec![data(&meta.chunk(Some(&t), None, false))],
                Piece::Done(Ok(g)) => {
                    let mut events = vec![data(&meta.chunk(
                        None,
                        Some(g.finish_reason.as_openai_str()),
                        false,
                    ))];
                    if include_usage {
                        events.push(data(&meta.usage_chunk(&g)));
                    }
                    events.push(Event::default().data("[DONE]"));
                    return Some((events, (None, rx, true)));
                }
                Piece::Done(Err(e)) => {
                    let err: ApiError = e.into();
                    vec![data(&err.body()), Event::default().data("[DONE]")]
                }
            };
            let done = events.len() > 1;
            Some((events, (None, rx, done)))
        }
    });
    use futures_util::StreamExt;
    stream::iter(opening)
        .chain(body.flat_map(stream::iter))
        .map(Ok)
}
