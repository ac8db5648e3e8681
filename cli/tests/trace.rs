//! One trace through the whole suite: a client that sends W3C `traceparent` with its requests
//! (a contribution, a snapshot seal, a training job, a price and a completion) finds, in one
//! trace, every span the suite recorded for them: each API request, the validator's verdict,
//! the training job and its model's registration, the inference, its settlement and the
//! ledger entry. `provenant up` exports over OTLP/HTTP to a receiver in this test, which
//! decodes what arrives with OpenTelemetry's own protobuf types.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use common::{INFER, INGEST, OWNER_KEY, SERVICES, SETTLE, Suite, TRAIN, VALIDATE, config_dir, free_port};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use serde_json::{Value, json};

/// A span as the receiver decoded it; ids in lowercase hex.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
}

impl ReceivedSpan {
    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }

    fn label(&self) -> String {
        match self.attribute("consumer") {
            "" => self.name.clone(),
            consumer => format!("{} {consumer} {}", self.name, self.attribute("event_type")),
        }
    }
}

/// An OTLP/HTTP trace receiver (protobuf), as a collector would run it.
async fn start_receiver() -> (String, Arc<Mutex<Vec<ReceivedSpan>>>) {
    let received: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export decodes");
                let spans = request.resource_spans.into_iter().flat_map(|resource| resource.scope_spans).flat_map(|scope| scope.spans);
                sink.lock().expect("lock").extend(spans.map(|span| {
                    ReceivedSpan {
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        name: span.name,
                        attributes: span
                            .attributes
                            .into_iter()
                            .map(|attribute| {
                                let value = match attribute.value.and_then(|value| value.value) {
                                    Some(any_value::Value::StringValue(text)) => text,
                                    Some(any_value::Value::IntValue(number)) => number.to_string(),
                                    Some(other) => format!("{other:?}"),
                                    None => String::new(),
                                };
                                (attribute.key, value)
                            })
                            .collect(),
                    }
                }));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, received)
}

/// Sixty distinct sentences: enough tokens for a tiny model, no two near duplicates.
fn sentences() -> Vec<String> {
    let subjects = ["the old cat", "a quiet dog", "my clever friend", "the tall teacher", "our young neighbour"];
    let verbs = ["watches", "follows", "paints", "remembers"];
    let objects = ["the slow river", "a red kite", "the small garden", "an empty boat"];
    let times = ["every morning", "before dinner", "in the rain"];
    let mut sentences = Vec::new();
    for (index, subject) in subjects.iter().enumerate() {
        for (offset, verb) in verbs.iter().enumerate() {
            for (shift, object) in objects.iter().enumerate() {
                let time = times[(index + offset + shift) % times.len()];
                sentences.push(format!("{subject} {verb} {object} {time}."));
            }
        }
    }
    sentences.truncate(60);
    sentences
}

async fn eventually(what: &str, seconds: u64, mut check: impl AsyncFnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn body(response: reqwest::Response) -> Option<Value> {
    response.status().is_success().then_some(())?;
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_a_contribution_through_validation_training_an_inference_and_its_settlement() {
    provenant_telemetry::install_crypto_provider();
    let (endpoint, received) = start_receiver().await;
    let data_dir = tempfile::tempdir().expect("data dir");
    let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
    let config_dir = config_dir("datanet_owner, contributor, model_builder, finance");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {OWNER_KEY}").parse().expect("header"));
    headers.insert("traceparent", format!("00-{trace_id}-{client_span}-01").parse().expect("header"));
    let http = reqwest::Client::builder().default_headers(headers).build().expect("client");
    let mut suite =
        Suite::start(data_dir.path(), config_dir.path(), &ports, free_port(), &[("PROVENANT_TELEMETRY__OTLP_ENDPOINT", endpoint)]);
    suite.wait_ready(&http).await;

    // Contributions, accepted by the validator.
    let created = body(
        http.post(suite.url(INGEST, "/v1/datanets")).json(&json!({"name": "Traced", "licence": "CC0-1.0"})).send().await.expect("create"),
    )
    .await
    .expect("the Datanet is created");
    let datanet_id = created["datanet_id"].as_str().expect("id").to_owned();
    eventually("the Datanet's read model", 15, async || {
        body(http.get(suite.url(INGEST, &format!("/v1/datanets/{datanet_id}"))).send().await.ok()?).await
    })
    .await;
    let mut contributions = Vec::new();
    for text in sentences() {
        let submitted = http
            .post(suite.url(INGEST, &format!("/v1/datanets/{datanet_id}/contributions")))
            .header("content-type", "text/plain")
            .body(text)
            .send()
            .await
            .expect("submit");
        let submitted = body(submitted).await.expect("the contribution is taken");
        contributions.push(submitted["contribution_id"].as_str().expect("contribution id").to_owned());
    }
    for contribution in &contributions {
        eventually("a verdict", 30, async || {
            let view = body(http.get(suite.url(INGEST, &format!("/v1/contributions/{contribution}"))).send().await.ok()?).await?;
            (view["status"] == "accepted").then_some(view)
        })
        .await;
    }

    // A sealed snapshot, a base model trained on it and registered.
    let sealed = body(http.post(suite.url(VALIDATE, &format!("/v1/datanets/{datanet_id}/snapshots"))).send().await.expect("seal"))
        .await
        .expect("the snapshot is sealed");
    let job = json!({
        "name": "traced-base",
        "architecture": {"layers": 1, "heads": 2, "width": 32, "context_length": 32},
        "snapshots": [{"snapshot_id": sealed["snapshot_id"], "merkle_root": sealed["merkle_root"]}],
        "method": {"type": "full"},
        "hyperparameters": {"steps": 5, "batch_size": 4, "sequence_length": 32, "learning_rate": 0.01, "warmup_steps": 1, "checkpoint_every": 0},
        "seed": 7,
        "held_out_fraction": 0.2
    });
    // The train service learns of the seal from the log: retried until it has.
    let submitted = eventually("the training job's submission", 30, async || {
        body(http.post(suite.url(TRAIN, "/v1/training-jobs")).json(&job).send().await.ok()?).await
    })
    .await;
    let job_path = format!("/v1/training-jobs/{}", submitted["job_id"].as_str().expect("job id"));
    let finished = eventually("the training job", 300, async || {
        let view = body(http.get(suite.url(TRAIN, &job_path)).send().await.ok()?).await?;
        assert_ne!(view["status"], "failed", "{view}");
        (view["status"] == "completed").then_some(view)
    })
    .await;
    let model_id = finished["model_id"].as_str().expect("model id").to_owned();

    // A priced completion, settled.
    let price = json!({"currency": "EUR", "exponent": 2, "per_request": "10", "per_1k_prompt_tokens": "50", "per_1k_output_tokens": "200"});
    eventually("the price", 30, async || {
        body(http.put(suite.url(INFER, &format!("/v1/pricing/{model_id}"))).json(&price).send().await.ok()?).await
    })
    .await;
    let completion = json!({"model": "traced-base", "prompt": "the old cat", "max_tokens": 8, "seed": 1});
    let answer = eventually("a completion", 30, async || {
        body(http.post(suite.url(INFER, "/v1/completions")).json(&completion).send().await.ok()?).await
    })
    .await;
    let request_id = answer["provenant"]["request_id"].as_str().expect("request id").to_owned();
    eventually("the settlement in the ledger", 30, async || {
        body(http.get(suite.url(SETTLE, &format!("/v1/requests/{request_id}/settlements"))).send().await.ok()?).await
    })
    .await;
    // SIGTERM flushes the exporter before the process exits.
    suite.stop();

    let spans: Vec<ReceivedSpan> = received.lock().expect("lock").iter().filter(|span| span.trace_id == trace_id).cloned().collect();
    let by_id: HashMap<&str, &ReceivedSpan> = spans.iter().map(|span| (span.span_id.as_str(), span)).collect();
    let ancestry = |span: &ReceivedSpan| -> Vec<String> {
        let mut chain = vec![span.label()];
        let mut parent = span.parent_span_id.as_str();
        while let Some(next) = by_id.get(parent) {
            chain.push(next.label());
            parent = next.parent_span_id.as_str();
        }
        assert_eq!(parent, client_span, "the chain {chain:?} is broken: no span {parent} in the trace");
        chain
    };
    let find = |what: &str, matches: &dyn Fn(&ReceivedSpan) -> bool| -> &ReceivedSpan {
        spans.iter().find(|span| matches(span)).unwrap_or_else(|| {
            let mut labels = std::collections::BTreeMap::<String, usize>::new();
            for span in &spans {
                *labels.entry(span.label()).or_default() += 1;
            }
            panic!("no {what} in the trace; it holds (span: count) {labels:?}")
        })
    };
    let handled = |consumer: &'static str, event_type: &'static str| {
        move |span: &ReceivedSpan| {
            span.name == "handle_event" && span.attribute("consumer") == consumer && span.attribute("event_type").ends_with(event_type)
        }
    };
    // Every span of the trace reaches the client's span through spans that are all there.
    for span in &spans {
        ancestry(span);
    }

    let contribution_request = find("contribution request", &|span| span.name == "POST /v1/datanets/{datanet_id}/contributions");
    assert_eq!((contribution_request.attribute("service"), contribution_request.attribute("http.response.status_code")), ("ingest", "202"));
    let verdict = ancestry(find("validation", &handled("validate-contributions", "ContributionSubmitted")));
    assert_eq!(verdict[1], contribution_request.label(), "the validator's span is the request's child: {verdict:?}");
    let view = ancestry(find("the verdict in ingest's read model", &handled("ingest-contributions", "ContributionAccepted")));
    assert!(view.contains(&verdict[0]) && view.contains(&contribution_request.label()), "{view:?}");

    let registered = ancestry(find("the model's registration", &handled("settle-models", "ModelRegistered")));
    for step in ["training_job", "handle_event train-jobs", "POST /v1/training-jobs"] {
        assert!(registered.iter().any(|label| label.starts_with(step)), "{step} is not among {registered:?}");
    }

    let ledger = ancestry(find("the ledger entry", &handled("settle-ledger", "InferenceSettled")));
    for step in ["handle_event settle-inferences", "POST /v1/completions"] {
        assert!(ledger.iter().any(|label| label.starts_with(step)), "{step} is not among {ledger:?}");
    }
    let completion_request = find("completion request", &|span| span.name == "POST /v1/completions");
    assert_eq!((completion_request.attribute("service"), completion_request.attribute("http.response.status_code")), ("infer", "200"));
}
