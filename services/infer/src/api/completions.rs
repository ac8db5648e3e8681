//! `/v1/completions` and `/v1/chat/completions`, plain and streamed (server-sent events).
//!
//! Every answer is billed: once decoding ends, the fee is computed from the model's price and
//! `InferenceServed` is appended to the log; a plain answer is sent only after that event is
//! durable, and a stream's last chunk (`finish_reason`, then `[DONE]`) likewise. A client that
//! closes a stream early stops decoding; what was generated is still recorded and billed.

use std::convert::Infallible;

use attribution::Receipt;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use provenant_bus::{Envelope, Expect, sha256_hex};
use provenant_events::money::Amount;
use provenant_events::proto::common::v1::{Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::inference::v1::InferenceServed;
use provenant_runtime::identity::{Principal, Role};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument as _, warn};
use utoipa::ToSchema;

use super::AppState;
use super::error::{Caller, OpenAiError, OpenAiErrorResponses, OpenAiJson};
use super::requests::{ChatCompletionRequest, CompletionRequest, Decoding};
use crate::attribution::Answered;
use crate::batching::Job;
use crate::catalog::{Price, Resolved};
use crate::generation::{Generated, GenerationRequest, prompt_tokens};
use crate::models::{LoadError, Serving};

/// Which OpenAI endpoint answers: they differ only in their JSON shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Completion,
    Chat,
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// What Provenant adds to every answer: the request's id, its fee and the event that records it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Provenance {
    pub request_id: String,
    /// The `InferenceServed` event that records and bills this answer.
    pub event_id: String,
    pub model_id: String,
    /// Empty when the base answered alone.
    pub adapter_model_id: String,
    pub fee: FeeView,
    pub pricing_policy_version: u64,
    /// The attribution receipt: contributor shares in parts per billion, the base pool, the
    /// top examples, verbatim spans, and the model and index digests it was computed from.
    /// Absent when the model has no attribution index.
    #[schema(value_type = Option<Object>)]
    pub receipt: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeeView {
    pub currency: String,
    pub exponent: u32,
    /// Integer minor units, as a decimal string.
    pub minor_units: String,
}

impl From<&Amount> for FeeView {
    fn from(amount: &Amount) -> Self {
        FeeView { currency: amount.currency.clone(), exponent: amount.exponent, minor_units: amount.minor_units.to_string() }
    }
}

/// A plain `text_completion` or `chat.completion` answer (one choice).
#[derive(Debug, Serialize, ToSchema)]
pub struct CompletionResponse {
    pub id: String,
    /// `text_completion` or `chat.completion`.
    pub object: String,
    pub created: i64,
    pub model: String,
    #[schema(value_type = Vec<Object>)]
    pub choices: Vec<Value>,
    pub usage: Usage,
    pub provenant: Provenance,
}

/// Creates a completion.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "inference",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream: true`, server-sent `text_completion` chunks, then `data: [DONE]`", body = CompletionResponse),
        OpenAiErrorResponses
    ),
    security(("api_key" = []))
)]
pub async fn completions(State(state): State<AppState>, caller: Caller, OpenAiJson(request): OpenAiJson<CompletionRequest>) -> Response {
    match request.validate(&state.serving) {
        Ok(decoding) => answer(state, caller.0, decoding, Shape::Completion).await,
        Err(error) => error.into_response(),
    }
}

/// Creates a chat completion.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "inference",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The chat completion; with `stream: true`, server-sent `chat.completion.chunk`s, then `data: [DONE]`", body = CompletionResponse),
        OpenAiErrorResponses
    ),
    security(("api_key" = []))
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    OpenAiJson(request): OpenAiJson<ChatCompletionRequest>,
) -> Response {
    match request.validate(&state.serving) {
        Ok(decoding) => answer(state, caller.0, decoding, Shape::Chat).await,
        Err(error) => error.into_response(),
    }
}

/// A request ready to decode.
struct Prepared {
    request_id: String,
    created: i64,
    caller: Principal,
    resolved: Resolved,
    price: Price,
    serving: Serving,
    generation: GenerationRequest,
    decoding: Decoding,
}

/// A decoded and recorded answer.
struct Recorded {
    generated: Generated,
    usage: Usage,
    provenance: Provenance,
}

async fn answer(state: AppState, caller: Principal, decoding: Decoding, shape: Shape) -> Response {
    let prepared = match prepare(&state, caller, decoding).await {
        Ok(prepared) => prepared,
        Err(error) => return error.into_response(),
    };
    let request_id = prepared.request_id.clone();
    let mut response = if prepared.decoding.stream {
        stream(state, prepared, shape).into_response()
    } else {
        match decode_and_record(&state, prepared, None).await {
            Ok((prepared, recorded)) => axum::Json(plain_body(&prepared, &recorded, shape)).into_response(),
            Err(error) => error.into_response(),
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn prepare(state: &AppState, caller: Principal, decoding: Decoding) -> Result<Prepared, OpenAiError> {
    let resolved = state.catalog.resolve(&decoding.model).ok_or_else(|| OpenAiError::model_not_found(&decoding.model))?;
    let price = state.catalog.price(&resolved).ok_or_else(|| {
        OpenAiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "model_not_priced",
            format!(
                "{} has no price yet; its owner or an admin sets one with PUT /v1/pricing/{}",
                resolved.served_name(),
                resolved.served().model_id
            ),
        )
    })?;
    let serving = state.cache.get(&resolved).await.map_err(|error| match error {
        LoadError::Store(_) => OpenAiError::unavailable("object_store_unavailable", error),
        LoadError::Missing(..) | LoadError::Unloadable(..) => OpenAiError::unavailable("model_unavailable", error),
    })?;
    let prompt = prompt_tokens(&decoding.prompt);
    let context = serving.base.model.config().context_length;
    if prompt.len() >= context {
        return Err(OpenAiError::context_length_exceeded(prompt.len(), context));
    }
    let generation =
        GenerationRequest { prompt, max_tokens: decoding.max_tokens, stop: decoding.stop.clone(), sampling: decoding.sampling };
    Ok(Prepared {
        request_id: uuid::Uuid::now_v7().to_string(),
        created: chrono::Utc::now().timestamp(),
        caller,
        resolved,
        price,
        serving,
        generation,
        decoding,
    })
}

/// Decodes (streaming pieces into `pieces` when given), then bills the answer.
async fn decode_and_record(
    state: &AppState,
    prepared: Prepared,
    pieces: Option<mpsc::UnboundedSender<String>>,
) -> Result<(Prepared, Recorded), OpenAiError> {
    let (done, answer) = oneshot::channel();
    let job = Job { request: prepared.generation.clone(), adapter: prepared.serving.adapter.clone(), pieces, done };
    prepared.serving.base.batcher.submit(job).map_err(|error| OpenAiError::unavailable("decoding_failed", error))?;
    let generated = answer
        .await
        .map_err(|error| OpenAiError::unavailable("decoding_failed", error))?
        .map_err(|error| OpenAiError::unavailable("decoding_failed", error))?;
    let recorded = record(state, &prepared, generated).await?;
    Ok((prepared, recorded))
}

/// Computes the fee and appends `InferenceServed`; returns once the event is durable.
async fn record(state: &AppState, prepared: &Prepared, generated: Generated) -> Result<Recorded, OpenAiError> {
    let prompt_tokens = u32::try_from(prepared.generation.prompt.len()).unwrap_or(u32::MAX);
    let fee = crate::pricing::fee(&prepared.price, prompt_tokens, generated.output_tokens)
        .map_err(|error| OpenAiError::unavailable("fee_overflow", error))?;
    let base = &prepared.resolved.base;
    let adapter = prepared.resolved.adapter.as_ref();
    let output: Vec<u32> = generated.text.bytes().map(u32::from).collect();
    let answered = Answered {
        request_id: &prepared.request_id,
        base: &prepared.serving.base.model,
        base_weights_sha256: &base.weights_sha256,
        adapter: adapter.map(|adapter| (adapter.model_id.as_str(), adapter.weights_sha256.as_str())),
        base_model_id: &base.model_id,
        prompt: &prepared.generation.prompt,
        output: &output,
    };
    // An answer is never refused for want of a receipt: without one, settlement holds the
    // attributable part of the fee until the inference is attributed.
    let receipt = match state.attributor.receipt(answered).await {
        Ok(receipt) => receipt,
        Err(error) => {
            warn!(request_id = prepared.request_id, %error, "answer recorded without a receipt");
            metrics::counter!("infer_receipts_failed_total").increment(1);
            None
        }
    };
    let event = InferenceServed {
        request_id: prepared.request_id.clone(),
        producer: state.bus.producer().to_owned(),
        caller: Some(ProtoPrincipal { id: prepared.caller.id.clone(), kind: principal_kind(&prepared.caller).into() }),
        model_id: base.model_id.clone(),
        base_weights_sha256: base.weights_sha256.clone(),
        adapter_model_id: adapter.map(|adapter| adapter.model_id.clone()).unwrap_or_default(),
        adapter_weights_sha256: adapter.map(|adapter| adapter.weights_sha256.clone()).unwrap_or_default(),
        prompt_sha256: sha256_hex(prepared.decoding.prompt.as_bytes()),
        output_sha256: sha256_hex(generated.text.as_bytes()),
        prompt_tokens,
        output_tokens: generated.output_tokens,
        fee: Some(fee.to_proto()),
        pricing_policy_version: prepared.price.version,
        receipt: receipt.as_ref().map(Receipt::to_proto),
    };
    if let Some(transcripts) = &state.transcripts {
        let (prompt, answer) =
            tokio::join!(transcripts.put(prepared.decoding.prompt.as_bytes()), transcripts.put(generated.text.as_bytes()));
        prompt.and(answer).map_err(|error| OpenAiError::unavailable("object_store_unavailable", error))?;
    }
    let envelope = Envelope::new(&event, state.bus.producer());
    let published =
        state.bus.publish(&envelope, &event, Expect::NoEvents).await.map_err(|error| OpenAiError::unavailable("bus_unavailable", error))?;
    metrics::counter!("infer_requests_served_total", "adapter" => if adapter.is_some() { "yes" } else { "no" }).increment(1);
    metrics::counter!("infer_tokens_total", "kind" => "prompt").increment(u64::from(prompt_tokens));
    metrics::counter!("infer_tokens_total", "kind" => "output").increment(u64::from(generated.output_tokens));
    let usage = Usage {
        prompt_tokens,
        completion_tokens: generated.output_tokens,
        total_tokens: prompt_tokens.saturating_add(generated.output_tokens),
    };
    let provenance = Provenance {
        request_id: prepared.request_id.clone(),
        event_id: published.event_id.to_string(),
        model_id: event.model_id,
        adapter_model_id: event.adapter_model_id,
        fee: FeeView::from(&fee),
        pricing_policy_version: prepared.price.version,
        receipt: receipt.map(|receipt| serde_json::to_value(receipt).expect("a receipt always serialises")),
    };
    Ok(Recorded { generated, usage, provenance })
}

/// The caller's kind for the event: its most privileged role.
fn principal_kind(caller: &Principal) -> PrincipalKind {
    [
        (Role::Admin, PrincipalKind::Admin),
        (Role::Finance, PrincipalKind::Finance),
        (Role::ModelBuilder, PrincipalKind::ModelBuilder),
        (Role::DatanetOwner, PrincipalKind::DatanetOwner),
        (Role::Contributor, PrincipalKind::Contributor),
    ]
    .into_iter()
    .find(|(role, _)| caller.has(*role))
    .map_or(PrincipalKind::Unspecified, |(_, kind)| kind)
}

fn completion_id(prepared: &Prepared, shape: Shape) -> String {
    match shape {
        Shape::Completion => format!("cmpl-{}", prepared.request_id),
        Shape::Chat => format!("chatcmpl-{}", prepared.request_id),
    }
}

fn plain_body(prepared: &Prepared, recorded: &Recorded, shape: Shape) -> CompletionResponse {
    let finish = recorded.generated.finish.as_str();
    let (object, choice) = match shape {
        Shape::Completion => {
            ("text_completion", json!({"index": 0, "text": recorded.generated.text, "logprobs": null, "finish_reason": finish}))
        }
        Shape::Chat => (
            "chat.completion",
            json!({"index": 0, "message": {"role": "assistant", "content": recorded.generated.text}, "logprobs": null, "finish_reason": finish}),
        ),
    };
    CompletionResponse {
        id: completion_id(prepared, shape),
        object: object.to_owned(),
        created: prepared.created,
        model: prepared.resolved.served_name(),
        choices: vec![choice],
        usage: recorded.usage.clone(),
        provenant: recorded.provenance.clone(),
    }
}

/// One streamed chunk: text (or a chat delta) and, on the last, the finish reason.
/// What every streamed chunk of one answer repeats.
#[derive(Debug, Clone)]
struct Heading {
    id: String,
    created: i64,
    model: String,
    shape: Shape,
}

impl Heading {
    fn of(prepared: &Prepared, shape: Shape) -> Heading {
        Heading { id: completion_id(prepared, shape), created: prepared.created, model: prepared.resolved.served_name(), shape }
    }

    /// One streamed chunk: text (or a chat delta) and, on the last, the finish reason.
    fn chunk(&self, text: Option<&str>, finish: Option<&str>) -> Value {
        let (object, choice) = match self.shape {
            Shape::Completion => {
                ("text_completion", json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}))
            }
            Shape::Chat => {
                let delta = match text {
                    Some(text) => json!({"content": text}),
                    None if finish.is_none() => json!({"role": "assistant", "content": ""}),
                    None => json!({}),
                };
                ("chat.completion.chunk", json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}))
            }
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice]})
    }
}

fn sse(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

/// Streams the answer as server-sent events, OpenAI's way: chunks, a last chunk with the
/// finish reason (and Provenant's record of the request), an optional usage chunk, `[DONE]`.
fn stream(state: AppState, prepared: Prepared, shape: Shape) -> impl IntoResponse {
    let (events, receiver) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(
        async move {
            let heading = Heading::of(&prepared, shape);
            if shape == Shape::Chat && events.send(sse(&heading.chunk(None, None))).await.is_err() {
                return;
            }
            // Unbounded: the decoding thread serves many requests and must never wait on one
            // slow reader; an answer is at most `max_tokens` pieces.
            let (pieces, mut piece_receiver) = mpsc::unbounded_channel::<String>();
            let forward_events = events.clone();
            let forward_heading = heading.clone();
            let forwarding = tokio::spawn(async move {
                while let Some(piece) = piece_receiver.recv().await {
                    let value = forward_heading.chunk(Some(&piece), None);
                    // A closed stream drops the receiver, which stops decoding at its next piece.
                    if forward_events.send(sse(&value)).await.is_err() {
                        return;
                    }
                }
            });
            let include_usage = prepared.decoding.include_usage;
            let outcome = decode_and_record(&state, prepared, Some(pieces)).await;
            let _ = forwarding.await;
            let closing = match outcome {
                Ok((_, recorded)) => {
                    let mut last = heading.chunk(None, Some(recorded.generated.finish.as_str()));
                    last["provenant"] = json!(recorded.provenance);
                    let mut closing = vec![sse(&last)];
                    if include_usage {
                        let mut usage = heading.chunk(None, None);
                        usage["choices"] = json!([]);
                        usage["usage"] = json!(recorded.usage);
                        closing.push(sse(&usage));
                    }
                    closing.push(SseEvent::default().data("[DONE]"));
                    closing
                }
                // Headers are gone; OpenAI's clients raise an error event's body as an APIError.
                Err(error) => vec![sse(&json!(error.body()))],
            };
            for event in closing {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        }
        // The answer is recorded from this task: its InferenceServed continues the request's trace.
        .in_current_span(),
    );
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
