//! The infer service against a real NATS: models registered as the train service registers
//! them (weights and config in the `models` bucket, `ModelRegistered` in the log), prices set
//! through the API, answers checked against the model run directly, and every answer's
//! `InferenceServed` read back from the log.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use infer::generation::{GenerationRequest, Sampling, generate, prompt_tokens};
use infer::{Application, Config};
use model::backend::{inference_device, training_device};
use model::{Control, LoraSpec, LoraTarget, ModelConfig, StepReport, Tokenizer, TrainConfig, Trainer, Transformer};
use provenant_bus::{Bus, BusConfig, Context, Envelope, Expect, Upcasters};
use provenant_events::proto::common::v1::{BlobRef, Principal, PrincipalKind};
use provenant_events::proto::inference::v1::{InferenceAttributed, InferenceServed};
use provenant_events::proto::training::v1::{AttributionIndexBuilt, ModelKind, ModelRegistered};
use provenant_runtime::Shutdown;
use provenant_runtime::identity::{ApiKeyConfig, Role};
use serde_json::{Value, json};

const OWNER_KEY: &str = "pvk_test_owner";
const CALLER_KEY: &str = "pvk_test_caller";
const ADMIN_KEY: &str = "pvk_test_admin";

fn api_key(principal: &str, roles: Vec<Role>, key: &str) -> ApiKeyConfig {
    ApiKeyConfig { principal: principal.into(), roles, key_sha256: hex::encode(provenant_runtime::identity::hash_key(key)) }
}

fn tiny() -> ModelConfig {
    ModelConfig::new(259, 1, 2, 32, 48)
}

const ENGLISH: &str = "The keeper lit the lamp at dusk and watched the ships pass the rocky point. ";
const GERMAN: &str = "Der Waerter zuendete die Lampe an und sah die Schiffe an der Kueste vorbeifahren. ";
const ITALIAN: &str = "Il guardiano accese la lampada al tramonto e guardo le navi passare la punta rocciosa. ";

/// A base trained a little on English, and LoRA adapters on German (rank 2) and on Italian
/// (rank 3, two targets).
fn models() -> (Transformer, Transformer, Transformer) {
    let tokens = |text: &str| Tokenizer::byte_level().encode(&text.repeat(6));
    let train =
        |steps| TrainConfig { learning_rate: 1e-2, weight_decay: 0.0, batch_size: 4, sequence_length: 32, steps, seed: 3, warmup_steps: 2 };
    let mut base = Trainer::full(&tiny(), train(30), tokens(ENGLISH), &training_device()).expect("valid run");
    base.run(&mut |_: &StepReport| Control::Continue).expect("trains");
    let base = base.into_model();
    let spec = LoraSpec { rank: 2, alpha: 4.0, targets: LoraTarget::ALL.to_vec() };
    let mut adapter = Trainer::lora(base.clone(), &spec, train(20), tokens(GERMAN)).expect("valid run");
    adapter.run(&mut |_: &StepReport| Control::Continue).expect("trains");
    let spec = LoraSpec { rank: 3, alpha: 3.0, targets: vec![LoraTarget::AttentionValue, LoraTarget::MlpUp] };
    let mut italian = Trainer::lora(base.clone(), &spec, train(20), tokens(ITALIAN)).expect("valid run");
    italian.run(&mut |_: &StepReport| Control::Continue).expect("trains");
    (base, adapter.into_model(), italian.into_model())
}

struct TestApp {
    base_url: String,
    bus: Bus,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    base_id: String,
    adapter_id: String,
    base: Transformer,
    adapter: Transformer,
    italian: Transformer,
}

fn client(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header"));
    reqwest::Client::builder().default_headers(headers).build().expect("client")
}

async fn register(bus: &Bus, model: &Transformer, model_id: &str, name: &str, base_id: Option<&str>) -> ModelRegistered {
    let store = bus.blob_store(infer::MODELS_BUCKET).await.expect("bucket");
    let blob = |stored: provenant_bus::StoredBlob| {
        Some(BlobRef { sha256: stored.sha256, size_bytes: stored.size_bytes, bucket: stored.bucket, media_type: String::new() })
    };
    let weights = match base_id {
        Some(_) => model.adapter_to_bytes().expect("an adapter"),
        None => model.to_bytes().expect("serialisable"),
    };
    let weights = blob(store.put(&weights).await.expect("weights"));
    let config = blob(store.put(&serde_json::to_vec(model.config()).expect("json")).await.expect("config"));
    let event = ModelRegistered {
        model_id: model_id.to_owned(),
        name: name.to_owned(),
        kind: if base_id.is_some() { ModelKind::Adapter } else { ModelKind::Base }.into(),
        base_model_id: base_id.unwrap_or_default().to_owned(),
        weights,
        config,
        owner: Some(Principal { id: "owner".into(), kind: PrincipalKind::ModelBuilder.into() }),
        ..Default::default()
    };
    bus.publish(&Envelope::new(&event, "train"), &event, Expect::NoEvents).await.expect("registered");
    event
}

/// The service with the base registered before it starts (loaded by catch-up) and the
/// adapter after (seen by following).
async fn spawn_app() -> TestApp {
    provenant_test_support::init_logs();
    provenant_telemetry::install_crypto_provider();
    // What `provenant_telemetry::init` does in the binary: the Prometheus recorder, first.
    provenant_telemetry::metrics::prometheus();
    let mut config: Config = provenant_config::load_with(
        infer::BASE_YAML,
        &provenant_config::Layers { directory: "/nonexistent".into(), environment: "test".into() },
        std::iter::empty(),
    )
    .expect("base configuration loads");
    config.http.port = 0;
    config.bus =
        BusConfig { subject_root: provenant_test_support::unique_root(), ..BusConfig::new(&provenant_test_support::nats_url(), "infer") };
    config.identity.api_keys = vec![
        api_key("owner", vec![Role::ModelBuilder], OWNER_KEY),
        api_key("caller", vec![Role::Contributor], CALLER_KEY),
        api_key("admin", vec![Role::Admin], ADMIN_KEY),
    ];
    config.serving.max_tokens_limit = 200;
    // Late receipts wait for indexes briefly here (about 15 s), not minutes.
    config.late_receipts.consumer = provenant_bus::ConsumerConfig {
        batch_size: 8,
        ack_wait_seconds: 10,
        max_deliver: 20,
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
    };
    let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
    bus.declare_streams().await.expect("streams");
    let (base, adapter, italian) = models();
    let base_id = uuid::Uuid::now_v7().to_string();
    let adapter_id = uuid::Uuid::now_v7().to_string();
    register(&bus, &base, &base_id, "en", None).await;
    let app = Application::build(config).await.expect("builds");
    let base_url = format!("http://{}", app.address());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let app = TestApp { base_url, bus, shutdown, task, base_id, adapter_id, base, adapter, italian };
    register(&app.bus, &app.adapter, &app.adapter_id, "de", Some(&app.base_id)).await;
    register(&app.bus, &app.italian, &uuid::Uuid::now_v7().to_string(), "it", Some(&app.base_id)).await;
    app.until(|| async { app.get(OWNER_KEY, "/v1/models/en/it").await.0 == 200 }).await;
    app.until(|| async { app.get(OWNER_KEY, "/v1/models/en/de").await.0 == 200 }).await;
    app
}

impl TestApp {
    async fn post(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let response = client(key).post(format!("{}{path}", self.base_url)).json(body).send().await.expect("answers");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let response = client(key).put(format!("{}{path}", self.base_url)).json(body).send().await.expect("answers");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let response = client(key).get(format!("{}{path}", self.base_url)).send().await.expect("answers");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn until<F, Fut>(&self, condition: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !condition().await {
            assert!(Instant::now() < deadline, "condition not met in 15 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prices the base at 1 cent per request, 5 per 1k prompt tokens, 20 per 1k output.
    async fn price_base(&self) {
        let body = json!({"currency": "EUR", "exponent": 2, "per_request": "1", "per_1k_prompt_tokens": "5", "per_1k_output_tokens": "20"});
        let (status, price) = self.put(OWNER_KEY, &format!("/v1/pricing/{}", self.base_id), &body).await;
        assert_eq!(status, 200, "{price}");
    }

    async fn served_event(&self, request_id: &str) -> InferenceServed {
        let delivery = self.bus.last_delivery(Context::Inference, "request", request_id).await.expect("reads").expect("recorded");
        delivery.decode(&Upcasters::contract()).expect("decodes")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("joins").expect("stops cleanly");
    }
}

/// The base, or the base with `adapter` attached (unmerged), on the inference device: the
/// model one request would run on alone.
fn alone(base: &Transformer, adapter: Option<&Transformer>) -> Transformer {
    let model = Transformer::from_bytes(base.config(), &base.to_bytes().expect("bytes"), &inference_device()).expect("loads");
    match adapter {
        Some(adapter) => model.load_adapter(&adapter.adapter_to_bytes().expect("an adapter")).expect("same base"),
        None => model,
    }
}

/// What the model itself says, decoded alone, one request at a time.
fn expected_text(model: &Transformer, prompt: &str, max_tokens: usize, temperature: f64, seed: u64) -> String {
    let request = GenerationRequest {
        prompt: prompt_tokens(prompt),
        max_tokens,
        stop: Vec::new(),
        sampling: Sampling { temperature, top_p: 1.0, seed },
    };
    generate(model, &request, &mut |_| true).expect("decodes").text
}

/// Text, finish reason and the closing chunk of a streamed answer.
async fn streamed(app: &TestApp, path: &str, body: &Value) -> (String, String, Value, bool) {
    let response = client(CALLER_KEY).post(format!("{}{path}", app.base_url)).json(body).send().await.expect("answers");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    let body = response.text().await.expect("a body");
    let mut text = String::new();
    let mut finish = String::new();
    let mut last = Value::Null;
    let mut done = false;
    for data in body.lines().filter_map(|line| line.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).expect("JSON chunk");
        let choice = &chunk["choices"][0];
        text.push_str(choice["text"].as_str().or_else(|| choice["delta"]["content"].as_str()).unwrap_or(""));
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = reason.to_owned();
            last = chunk.clone();
        }
    }
    (text, finish, last, done)
}

#[tokio::test]
async fn a_completion_is_the_models_own_answer_priced_and_recorded_in_the_log() {
    let app = spawn_app().await;
    app.price_base().await;
    let prompt = "The keeper";
    let (status, body) =
        app.post(CALLER_KEY, "/v1/completions", &json!({"model": "en", "prompt": prompt, "max_tokens": 30, "temperature": 0})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "en");
    let text = body["choices"][0]["text"].as_str().expect("text");
    assert_eq!(text, expected_text(&alone(&app.base, None), prompt, 30, 0.0, 0), "greedy decoding is the model's own");

    let usage = &body["usage"];
    let (prompt_tokens, output_tokens) = (usage["prompt_tokens"].as_u64().expect("n"), usage["completion_tokens"].as_u64().expect("n"));
    assert_eq!(prompt_tokens, prompt.len() as u64 + 1, "BOS and one token per byte");
    // 1 + ceil((11 · 5 + output · 20) / 1000) cents.
    let fee = 1 + (prompt_tokens * 5 + output_tokens * 20).div_ceil(1000);
    assert_eq!(body["provenant"]["fee"], json!({"currency": "EUR", "exponent": 2, "minor_units": fee.to_string()}));

    let request_id = body["provenant"]["request_id"].as_str().expect("id");
    let event = app.served_event(request_id).await;
    assert_eq!(event.model_id, app.base_id);
    assert_eq!(event.adapter_model_id, "");
    assert_eq!(event.producer, "infer");
    assert_eq!(event.caller.as_ref().map(|caller| caller.id.as_str()), Some("caller"));
    assert_eq!((u64::from(event.prompt_tokens), u64::from(event.output_tokens)), (prompt_tokens, output_tokens));
    assert_eq!(event.fee.as_ref().map(|fee| fee.minor_units.clone()), Some(fee.to_string()));
    assert_eq!(event.output_sha256, provenant_bus::sha256_hex(text.as_bytes()));
    assert_eq!(event.prompt_sha256, provenant_bus::sha256_hex(prompt.as_bytes()));
    assert_eq!(event.pricing_policy_version, 1);
    assert_eq!(event.base_weights_sha256, provenant_bus::sha256_hex(&app.base.to_bytes().expect("bytes")));
    app.stop().await;
}

#[tokio::test]
async fn an_adapter_answers_as_it_would_alone_and_is_billed_at_its_base_price_until_it_has_its_own() {
    let app = spawn_app().await;
    app.price_base().await;
    let request = json!({"model": "en/de", "prompt": "Der", "max_tokens": 25, "temperature": 0.8, "seed": 42});
    let (status, body) = app.post(CALLER_KEY, "/v1/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    let adapted = alone(&app.base, Some(&app.adapter));
    assert_eq!(body["choices"][0]["text"].as_str(), Some(expected_text(&adapted, "Der", 25, 0.8, 42).as_str()));
    let (_, again) = app.post(CALLER_KEY, "/v1/completions", &request).await;
    assert_eq!(again["choices"][0]["text"], body["choices"][0]["text"], "one seed, one answer");
    assert_ne!(
        body["choices"][0]["text"].as_str(),
        Some(expected_text(&alone(&app.base, None), "Der", 25, 0.8, 42).as_str()),
        "the adapter changes the answer"
    );
    let event = app.served_event(body["provenant"]["request_id"].as_str().expect("id")).await;
    assert_eq!((event.model_id.as_str(), event.adapter_model_id.as_str()), (app.base_id.as_str(), app.adapter_id.as_str()));
    assert_eq!(event.pricing_policy_version, 1);

    let own = json!({"currency": "EUR", "exponent": 2, "per_request": "7", "per_1k_prompt_tokens": "0", "per_1k_output_tokens": "0"});
    assert_eq!(app.put(ADMIN_KEY, &format!("/v1/pricing/{}", app.adapter_id), &own).await.0, 200);
    let (_, priced) = app.post(CALLER_KEY, "/v1/completions", &request).await;
    assert_eq!(priced["provenant"]["fee"]["minor_units"], "7");

    let (_, adapters) = app.get(CALLER_KEY, "/v1/adapters").await;
    assert_eq!(adapters["loaded"][0]["model_id"], app.adapter_id.as_str());
    assert!(adapters["cache"]["hits"].as_u64().expect("n") >= 2, "{adapters}");
    let (_, list) = app.get(CALLER_KEY, "/v1/models").await;
    let names: Vec<&str> = list["data"].as_array().expect("list").iter().filter_map(|model| model["id"].as_str()).collect();
    assert_eq!(names, ["en", "en/de", "en/it"]);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_carries_the_same_answer_as_a_plain_response_and_ends_after_the_event() {
    let app = spawn_app().await;
    app.price_base().await;
    for (path, request) in [
        ("/v1/completions", json!({"model": "en", "prompt": "The", "max_tokens": 40, "seed": 9})),
        ("/v1/chat/completions", json!({"model": "en", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 40, "seed": 9})),
    ] {
        let (status, plain) = app.post(CALLER_KEY, path, &request).await;
        assert_eq!(status, 200, "{plain}");
        let plain_text = plain["choices"][0]["text"].as_str().or_else(|| plain["choices"][0]["message"]["content"].as_str()).expect("text");
        let mut streaming = request.clone();
        streaming["stream"] = json!(true);
        let (text, finish, last, done) = streamed(&app, path, &streaming).await;
        assert_eq!(text, plain_text, "{path}: streamed pieces add up to the plain answer");
        assert_eq!(finish, plain["choices"][0]["finish_reason"].as_str().expect("reason"));
        assert!(done, "{path}: the stream ends with [DONE]");
        let event = app.served_event(last["provenant"]["request_id"].as_str().expect("id")).await;
        assert_eq!(event.output_sha256, provenant_bus::sha256_hex(text.as_bytes()));
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors_with_stable_codes() {
    let app = spawn_app().await;
    let code = |body: &Value| body["error"]["code"].as_str().unwrap_or_default().to_owned();
    let completion = |model: &str| json!({"model": model, "prompt": "x", "max_tokens": 4});

    let (status, body) = app.post(CALLER_KEY, "/v1/completions", &completion("en")).await;
    assert_eq!((status, code(&body).as_str()), (403, "model_not_priced"));
    app.price_base().await;
    let (status, body) = app.post(CALLER_KEY, "/v1/completions", &completion("nope")).await;
    assert_eq!((status, code(&body).as_str(), body["error"]["param"].as_str()), (404, "model_not_found", Some("model")));
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = app.post(CALLER_KEY, "/v1/completions", &completion("en/nope")).await;
    assert_eq!((status, code(&body).as_str()), (404, "model_not_found"));
    let long = json!({"model": "en", "prompt": "x".repeat(47), "max_tokens": 4});
    let (status, body) = app.post(CALLER_KEY, "/v1/completions", &long).await;
    assert_eq!((status, code(&body).as_str()), (400, "context_length_exceeded"));
    let (status, body) = app.post(CALLER_KEY, "/v1/completions", &json!({"model": "en", "prompt": "x", "temperature": 3})).await;
    assert_eq!((status, code(&body).as_str(), body["error"]["param"].as_str()), (400, "invalid_parameter", Some("temperature")));
    let (status, body) = app.post(CALLER_KEY, "/v1/completions", &json!({"model": "en"})).await;
    assert_eq!((status, code(&body).as_str()), (400, "invalid_body"));

    let response =
        reqwest::Client::new().post(format!("{}/v1/completions", app.base_url)).json(&completion("en")).send().await.expect("answers");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!((code(&body).as_str(), body["error"]["type"].as_str()), ("missing_api_key", Some("authentication_error")));
    let response = client(CALLER_KEY)
        .post(format!("{}/v1/completions", app.base_url))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);

    let price = json!({"currency": "EUR", "exponent": 2, "per_request": "1", "per_1k_prompt_tokens": "0", "per_1k_output_tokens": "0"});
    let (status, body) = app.put(CALLER_KEY, &format!("/v1/pricing/{}", app.base_id), &price).await;
    assert_eq!((status, code(&body).as_str()), (403, "not_model_owner"));
    let mut negative = price.clone();
    negative["per_request"] = json!("-1");
    let (status, body) = app.put(OWNER_KEY, &format!("/v1/pricing/{}", app.base_id), &negative).await;
    assert_eq!((status, code(&body).as_str()), (400, "invalid_parameter"));
    let mut padded = price.clone();
    padded["per_request"] = json!("01");
    assert_eq!(app.put(OWNER_KEY, &format!("/v1/pricing/{}", app.base_id), &padded).await.0, 400, "one spelling per amount");
    let (_, current) = app.get(CALLER_KEY, &format!("/v1/pricing/{}", app.base_id)).await;
    assert_eq!(current["version"], 1, "refused prices changed nothing");
    app.stop().await;
}

#[tokio::test]
async fn the_official_openai_python_client_works_unchanged() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/st-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/bootstrap.sh --api-fuzz installs the openai client (make test does)",
        python.display()
    );
    let app = spawn_app().await;
    app.price_base().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([format!("{}/v1", app.base_url), CALLER_KEY.to_owned(), "en".to_owned(), "en/de".to_owned()])
        .output()
        .await
        .expect("python runs");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the openai client disagreed:\n{report}");
    assert!(report.contains(": ok"), "{report}");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_for_different_adapters_share_batches_and_answer_as_they_would_alone() {
    let app = spawn_app().await;
    app.price_base().await;
    let requests: Vec<Value> = ["en", "en/de", "en/it", "en/de", "en", "en/it", "en/de", "en/it"]
        .iter()
        .enumerate()
        .map(|(index, model)| {
            let prompt = ["The", "Der", "Il"][index % 3];
            json!({"model": model, "prompt": prompt, "max_tokens": 20 + 5 * index, "temperature": 0.9, "seed": index})
        })
        .collect();
    let answer = |request: &Value| {
        let request = request.clone();
        let app = &app;
        async move {
            let (status, body) = app.post(CALLER_KEY, "/v1/completions", &request).await;
            assert_eq!(status, 200, "{body}");
            body["choices"][0]["text"].as_str().expect("text").to_owned()
        }
    };
    let mut one_at_a_time = Vec::new();
    for request in &requests {
        one_at_a_time.push(answer(request).await);
    }
    let together = futures::future::join_all(requests.iter().map(answer)).await;
    assert_eq!(together, one_at_a_time, "batched rows answer as they did alone");
    // BOS, the prompt and the answer: past the context of 48 the window slides, and the row
    // leaves the batch's cache to be recomputed each step.
    let past_context = together
        .iter()
        .zip(&requests)
        .filter(|(text, request)| 1 + request["prompt"].as_str().expect("prompt").len() + text.len() > tiny().context_length);
    assert!(past_context.count() >= 2, "some answers run past the context: {together:?}");
    let (_, adapters) = app.get(CALLER_KEY, "/v1/adapters").await;
    let largest = adapters["decoding"][0]["largest_batch"].as_u64().expect("counted");
    assert!(largest > 1, "the concurrent requests shared forward passes: {adapters}");
    let metrics = reqwest::get(format!("{}/metrics", app.base_url)).await.expect("answers").text().await.expect("text");
    for family in [
        "infer_batch_rows_bucket",
        "infer_tokens_total{kind=\"output\"}",
        "infer_model_cache_hits_total",
        "infer_requests_served_total",
        "http_requests_total{service=\"infer\",method=\"POST\",route=\"/v1/completions\",status=\"200\"}",
        "http_request_duration_seconds_bucket{service=\"infer\",method=\"POST\",route=\"/v1/completions\",le=\"0.001\"}",
        "# HELP infer_batch_rows",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}:\n{metrics}");
    }
    provenant_test_support::prometheus::assert_valid_exposition(&metrics);
    let (_, it) = app.get(CALLER_KEY, "/v1/models/en/it").await;
    let model_of = |name: &str| requests.iter().position(|request| request["model"] == name).expect("asked");
    let italian = alone(&app.base, Some(&app.italian));
    let index = model_of("en/it");
    let expected = expected_text(&italian, requests[index]["prompt"].as_str().expect("prompt"), 20 + 5 * index, 0.9, index as u64);
    assert_eq!(one_at_a_time[index], expected, "{it}");
    app.stop().await;
}

/// Builds and publishes an attribution index for `model` (as the train service does at the end
/// of a job) over `(contributor, text)` examples, with `phantoms` as never-trained controls.
async fn publish_index(
    bus: &Bus,
    model: &Transformer,
    model_id: &str,
    examples: &[(&str, &str)],
    phantoms: &[&str],
) -> (String, AttributionIndexBuilt) {
    let tokenizer = Tokenizer::byte_level();
    let featurizer = model::Featurizer::new(model, 5, 4).expect("featurizer");
    let frozen = model.inference();
    let features_of = |texts: Vec<Vec<u32>>| {
        let sequences: Vec<model::Sequence<'_>> = texts.iter().map(|tokens| model::Sequence::trained(tokens)).collect();
        featurizer.features(&frozen, &sequences).expect("features")
    };
    let encoded: Vec<Vec<u32>> = examples.iter().map(|(_, text)| tokenizer.encode_document(text)).collect();
    let mut rows = Vec::new();
    let mut stream = Vec::new();
    for (number, ((contributor, _), tokens)) in examples.iter().zip(&encoded).enumerate() {
        rows.push(attribution::ExampleRow {
            example: number as u64,
            contribution_id: format!("contribution-{number}"),
            contributor_id: (*contributor).to_owned(),
            duplicate_cluster_id: format!("contribution-{number}"),
            token_offset: stream.len() as u64,
            token_count: tokens.len() as u64,
            datanet_id: "datanet-1".to_owned(),
        });
        stream.extend_from_slice(tokens);
    }
    let blocks = featurizer
        .blocks()
        .iter()
        .map(|block| attribution::BlockLayout { name: block.name(), offset: block.offset, len: block.len })
        .collect();
    let built = attribution::build(attribution::IndexInput {
        model_id: model_id.to_owned(),
        model_weights_sha256: String::new(),
        base_weights_sha256: String::new(),
        projection: attribution::Projection { seed: 5, per_side: 4, dim: featurizer.dim(), blocks },
        features: features_of(encoded.clone()),
        phantoms: features_of(phantoms.iter().map(|text| tokenizer.encode_document(text)).collect()),
        table: attribution::ExampleTable::new(rows).expect("table"),
        tokens: stream,
        precision: attribution::Precision::F16,
        damping: 0.1,
        rules: attribution::ReceiptRules { min_span_tokens: 12, ..Default::default() },
    })
    .expect("builds");
    let store = bus.blob_store(infer::MODELS_BUCKET).await.expect("bucket");
    for (_, bytes) in &built.artifacts {
        store.put(bytes).await.expect("stored");
    }
    let manifest = store.put(&built.manifest_bytes).await.expect("stored");
    let event = AttributionIndexBuilt {
        index_id: uuid::Uuid::now_v7().to_string(),
        model_id: model_id.to_owned(),
        manifest: Some(BlobRef {
            sha256: manifest.sha256,
            size_bytes: manifest.size_bytes,
            bucket: manifest.bucket,
            media_type: String::new(),
        }),
        index_sha256: built.index_sha256.clone(),
        example_count: built.manifest.example_count,
        ..Default::default()
    };
    bus.publish(&Envelope::new(&event, "train"), &event, Expect::NoEvents).await.expect("published");
    (built.index_sha256, event)
}

#[tokio::test]
async fn every_answer_carries_a_receipt_that_anyone_with_the_model_and_index_recomputes() {
    let app = spawn_app().await;
    app.price_base().await;
    let (index_sha256, _) = publish_index(&app.bus, &app.adapter, &app.adapter_id, &GERMAN_EXAMPLES, &GERMAN_PHANTOMS).await;
    let prompt = "Der Waerter";
    let request = json!({"model": "en/de", "prompt": prompt, "max_tokens": 40, "temperature": 0});
    // The index arrives by following the log: ask until answers carry receipts.
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, answer) = app.post(CALLER_KEY, "/v1/completions", &request).await;
        assert_eq!(status, 200, "{answer}");
        if !answer["provenant"]["receipt"].is_null() {
            break answer;
        }
        assert!(Instant::now() < deadline, "no receipt in 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let receipt: attribution::Receipt = serde_json::from_value(body["provenant"]["receipt"].clone()).expect("a receipt");
    assert_eq!(receipt.index_sha256, index_sha256);
    assert_eq!(receipt.method, attribution::METHOD);
    assert_eq!(receipt.adapter_weights_sha256, provenant_bus::sha256_hex(&app.adapter.adapter_to_bytes().expect("adapter")));
    let total: u64 = receipt.attribution.shares.iter().map(|share| share.share_ppb).sum::<u64>() + receipt.attribution.base_pool_ppb;
    assert_eq!(total, attribution::WHOLE_PPB, "{receipt:?}");
    assert_eq!(receipt.attribution.top_examples.len(), 3);

    // The event carries the same receipt.
    let request_id = body["provenant"]["request_id"].as_str().expect("id");
    let event = app.served_event(request_id).await;
    assert_eq!(event.receipt.as_ref(), Some(&receipt.to_proto()));

    // Recomputed from the model and the index alone: the same shares, bit for bit.
    let store = app.bus.blob_store(infer::MODELS_BUCKET).await.expect("bucket");
    let text = body["choices"][0]["text"].as_str().expect("text");
    let model = alone(&app.base, Some(&app.adapter));
    let mut tokens = prompt_tokens(prompt);
    let prompt_len = tokens.len();
    let output: Vec<u32> = text.bytes().map(u32::from).collect();
    tokens.extend_from_slice(&output);
    let index = load_index(&store, &index_sha256).await;
    let featurizer = model::Featurizer::new(&model, 5, 4).expect("featurizer");
    let features = featurizer.features(&model, &[model::Sequence::answer(&tokens, prompt_len)]).expect("features");
    assert_eq!(index.attribute(&features, &output).expect("attributes"), receipt.attribution);

    // A model without an index answers without a receipt.
    let (_, plain) = app.post(CALLER_KEY, "/v1/completions", &json!({"model": "en", "prompt": prompt, "max_tokens": 5})).await;
    assert!(plain["provenant"]["receipt"].is_null(), "{plain}");
    app.stop().await;
}

/// The examples and phantoms of the German adapter's index in these tests.
const GERMAN_EXAMPLES: [(&str, &str); 3] =
    [("anna", GERMAN), ("bert", "Die Katze schlaeft auf dem warmen Dach in der Sonne. "), ("carl", ITALIAN)];
const GERMAN_PHANTOMS: [&str; 2] = ["Ein Zug faehrt durch den Tunnel nach Norden. ", "Das Brot ist frisch und warm. "];

#[tokio::test]
async fn answers_served_without_a_receipt_are_attributed_later_from_their_transcripts() {
    let app = spawn_app().await;
    app.price_base().await;
    // Before the adapter's index exists, an answer is served without a receipt.
    let prompt = "Der Waerter";
    let request = json!({"model": "en/de", "prompt": prompt, "max_tokens": 40, "temperature": 0});
    let (status, body) = app.post(CALLER_KEY, "/v1/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["provenant"]["receipt"].is_null(), "{body}");
    let request_id = body["provenant"]["request_id"].as_str().expect("id").to_owned();
    let text = body["choices"][0]["text"].as_str().expect("text").to_owned();

    // An external producer's answer from the same adapter, its transcript kept as ours are, and
    // one whose transcript never was.
    let transcripts = app.bus.blob_store(infer::TRANSCRIPTS_BUCKET).await.expect("bucket");
    let (external_prompt, external_output) = ("Die Katze", " schlaeft auf dem warmen Dach.");
    let kept_prompt = transcripts.put(external_prompt.as_bytes()).await.expect("kept");
    let kept_output = transcripts.put(external_output.as_bytes()).await.expect("kept");
    let ours = app.served_event(&request_id).await;
    let external = InferenceServed {
        request_id: "gateway-1".into(),
        producer: "gateway".into(),
        prompt_sha256: kept_prompt.sha256,
        output_sha256: kept_output.sha256,
        ..ours.clone()
    };
    let lost =
        InferenceServed { request_id: "gateway-2".into(), output_sha256: provenant_bus::sha256_hex(b"never kept"), ..external.clone() };
    for event in [&external, &lost] {
        app.bus.publish(&Envelope::new(event, "gateway"), event, Expect::NoEvents).await.expect("published");
    }

    // Once the index is built, each gets its receipt on its own subject, after the inference.
    let (index_sha256, _) = publish_index(&app.bus, &app.adapter, &app.adapter_id, &GERMAN_EXAMPLES, &GERMAN_PHANTOMS).await;
    let store = app.bus.blob_store(infer::MODELS_BUCKET).await.expect("bucket");
    let index = load_index(&store, &index_sha256).await;
    let model = alone(&app.base, Some(&app.adapter));
    let featurizer = model::Featurizer::new(&model, 5, 4).expect("featurizer");
    for (request_id, prompt, output) in [(request_id.as_str(), prompt, text.as_str()), ("gateway-1", external_prompt, external_output)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let history = loop {
            let history = app.bus.aggregate_history(Context::Inference, "request", request_id).await.expect("reads");
            if history.len() > 1 {
                break history;
            }
            assert!(Instant::now() < deadline, "{request_id} was not attributed in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let attributed: InferenceAttributed = history[1].decode(&Upcasters::contract()).expect("an InferenceAttributed");
        assert_eq!(attributed.inference_event_id, history[0].envelope.event_id.to_string());
        assert_eq!(history[1].envelope.causation_id, Some(history[0].envelope.event_id));
        let receipt = attributed.receipt.expect("a receipt");
        // What anyone with the model and the index computes for that prompt and answer.
        let mut tokens = prompt_tokens(prompt);
        let prompt_len = tokens.len();
        let output: Vec<u32> = output.bytes().map(u32::from).collect();
        tokens.extend_from_slice(&output);
        let features = featurizer.features(&model, &[model::Sequence::answer(&tokens, prompt_len)]).expect("features");
        let expected = attribution::Receipt {
            receipt_id: receipt.receipt_id.clone(),
            method: attribution::METHOD.to_owned(),
            model_weights_sha256: ours.base_weights_sha256.clone(),
            adapter_weights_sha256: ours.adapter_weights_sha256.clone(),
            index_sha256: index_sha256.clone(),
            attribution: index.attribute(&features, &output).expect("attributes"),
        };
        assert_eq!(receipt, expected.to_proto(), "{request_id}");
    }

    // The one without a transcript is refused with its reason, and nothing is appended for it.
    let stream = app.bus.jetstream().get_stream(app.bus.namespace().dead_letter_stream()).await.expect("dead-letter stream");
    let reader = stream.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await.expect("reader");
    let mut messages = reader.messages().await.expect("messages");
    let letter = loop {
        let message =
            tokio::time::timeout(Duration::from_secs(30), messages.next()).await.expect("a dead letter").expect("open").expect("message");
        let letter = provenant_bus::DeadLetter::from_message(message.headers.as_ref(), message.payload.clone());
        if letter.consumer == infer::late_receipts::LateReceipts::NAME {
            break letter;
        }
    };
    assert_eq!(letter.reason_code, "attribution.transcript_missing", "{}", letter.reason);
    assert_eq!(app.bus.aggregate_history(Context::Inference, "request", "gateway-2").await.expect("reads").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_late_receipt_appended_before_a_crash_is_not_appended_again_after_the_restart() {
    provenant_test_support::init_logs();
    // A one-second de-duplication window, so that the restart below comes after it: the
    // conditional append, not the server's message-id memory, must keep the receipt single.
    let config = BusConfig {
        subject_root: provenant_test_support::unique_root(),
        duplicate_window_seconds: 1,
        ..BusConfig::new(&provenant_test_support::nats_url(), "infer")
    };
    let bus = Bus::connect(&config).await.expect("bus");
    bus.declare_streams().await.expect("streams");
    let (base, adapter, _) = models();
    let (base_id, adapter_id) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let catalog = infer::catalog::Catalog::default();
    catalog.register(&register(&bus, &base, &base_id, "en", None).await, 0).expect("base");
    let registered = register(&bus, &adapter, &adapter_id, "de", Some(&base_id)).await;
    catalog.register(&registered, 0).expect("adapter");
    let indexes = infer::attribution::Indexes::default();
    indexes.add(&publish_index(&bus, &adapter, &adapter_id, &GERMAN_EXAMPLES, &GERMAN_PHANTOMS).await.1).expect("index");
    let transcripts = bus.blob_store(infer::TRANSCRIPTS_BUCKET).await.expect("bucket");
    let models = bus.blob_store(infer::MODELS_BUCKET).await.expect("bucket");
    let served = InferenceServed {
        request_id: "crash-1".into(),
        producer: "gateway".into(),
        caller: Some(Principal { id: "app".into(), kind: PrincipalKind::Contributor.into() }),
        model_id: base_id.clone(),
        base_weights_sha256: catalog.model(&base_id).expect("base").weights_sha256,
        adapter_model_id: adapter_id.clone(),
        adapter_weights_sha256: registered.weights.as_ref().expect("weights").sha256.clone(),
        prompt_sha256: transcripts.put(b"Der Waerter").await.expect("kept").sha256,
        output_sha256: transcripts.put(" zuendete die Lampe an".as_bytes()).await.expect("kept").sha256,
        prompt_tokens: 12,
        output_tokens: 22,
        ..Default::default()
    };
    bus.publish(&Envelope::new(&served, "gateway"), &served, Expect::NoEvents).await.expect("published");
    let consumer = |bookkeeping| {
        let handler = infer::late_receipts::LateReceipts {
            bus: bus.clone(),
            index_wait: Duration::from_secs(3_600),
            catalog: catalog.clone(),
            cache: std::sync::Arc::new(infer::models::ModelCache::new(models.clone(), 4, Vec::new(), 4, 2)),
            attributor: std::sync::Arc::new(infer::attribution::Attributor::new(models.clone(), indexes.clone())),
            transcripts: transcripts.clone(),
            upcasters: Upcasters::contract(),
        };
        let config = provenant_bus::ConsumerConfig {
            batch_size: 8,
            ack_wait_seconds: 1,
            max_deliver: 4,
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
        };
        provenant_bus::Consumer::new(bus.clone(), bookkeeping, handler, config)
    };
    let history = || bus.aggregate_history(Context::Inference, "request", "crash-1");

    // The receipt is appended, then the process dies before it commits and acks.
    let crashed = consumer(provenant_bus::store::in_memory().await.expect("db"))
        .crash_at(provenant_bus::CrashPoint::BeforeCommit)
        .run(std::future::pending())
        .await;
    assert!(matches!(crashed, Err(provenant_bus::Error::InjectedCrash(_))), "{crashed:?}");
    let history_before = history().await.expect("reads");
    assert_eq!(history_before.len(), 2);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Meanwhile, an answer of the base alone, which has had no index since it registered (long
    // ago, as the catalogue says): refused, not retried.
    let unindexed = InferenceServed {
        request_id: "no-index-1".into(),
        adapter_model_id: String::new(),
        adapter_weights_sha256: String::new(),
        ..served.clone()
    };
    bus.publish(&Envelope::new(&unindexed, "gateway"), &unindexed, Expect::NoEvents).await.expect("published");
    // Restarted with empty bookkeeping (it lived in memory), it gets the inference again and
    // finds its own receipt; nothing is appended twice.
    let shutdown = Shutdown::new();
    let restarted = tokio::spawn(consumer(provenant_bus::store::in_memory().await.expect("db")).run(shutdown.clone().cancelled_owned()));
    let stream = bus.jetstream().get_stream(bus.namespace().stream(Context::Inference)).await.expect("stream");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = stream.consumer_info(infer::late_receipts::LateReceipts::NAME).await.expect("consumer");
        if info.num_pending == 0 && info.num_ack_pending == 0 && info.ack_floor.stream_sequence > history_before[1].stream_sequence {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted consumer did not catch up: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    let stats = restarted.await.expect("joins").expect("runs");
    assert_eq!((stats.dead_lettered, stats.retried), (1, 0), "{stats:?}");
    let stream = bus.jetstream().get_stream(bus.namespace().dead_letter_stream()).await.expect("dead-letter stream");
    let reader = stream.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await.expect("reader");
    let message = reader.messages().await.expect("messages").next().await.expect("a dead letter").expect("message");
    let letter = provenant_bus::DeadLetter::from_message(message.headers.as_ref(), message.payload.clone());
    assert_eq!(
        (letter.reason_code.as_str(), letter.original_subject.ends_with("no-index-1")),
        ("attribution.no_index", true),
        "{}",
        letter.reason
    );
    assert_eq!(bus.aggregate_history(Context::Inference, "request", "no-index-1").await.expect("reads").len(), 1);
    let history = history().await.expect("reads");
    assert_eq!(history.len(), 2, "one receipt, not two");
    assert_eq!(history[1].envelope.event_id, infer::late_receipts::attribution_event_id(&history[0].envelope.event_id.to_string()));
}

/// An index loaded from the object store: its manifest is stored under the index's digest.
async fn load_index(store: &provenant_bus::BlobStore, index_sha256: &str) -> attribution::Index {
    let get = |sha256: String| async move { store.get(&sha256).await.expect("reads").expect("stored").to_vec() };
    let manifest_bytes = get(index_sha256.to_owned()).await;
    let manifest = attribution::Manifest::from_bytes(&manifest_bytes).expect("manifest");
    let mut artifacts = std::collections::HashMap::new();
    for artifact in manifest.artifacts() {
        artifacts.insert(artifact.sha256.clone(), get(artifact.sha256.clone()).await);
    }
    attribution::Index::assemble(&manifest_bytes, &artifacts).expect("assembles")
}
