//! `provenant inference report`: what an external producer does for each inference it serves
//! from a registered model, as a reference client of the contract in README, "External
//! inference producers": keep the prompt and the answer in the `transcripts` bucket under
//! their SHA-256, then append one `InferenceServed` without a receipt on
//! `pv.inference.request.<request id>` under the producer's own name. `settle` checks and
//! settles it (holding the contributors' part), `infer` attributes it from the transcript.

#![allow(clippy::print_stdout, reason = "the ids of what was recorded are the command's output")]

use anyhow::{Context as _, bail};
use provenant_bus::{Bus, BusConfig, Context, Envelope, Expect, Upcasters};
use provenant_events::proto::common::v1::{Money, Principal, PrincipalKind};
use provenant_events::proto::inference::v1::InferenceServed;
use provenant_events::proto::training::v1::ModelRegistered;

#[derive(Debug, clap::Args)]
pub struct ReportArguments {
    /// The producer's name (`Pv-Producer`); settle accepts it only if `settlement.producers`
    /// lists it for the model.
    #[arg(long)]
    producer: String,
    /// The base model's id.
    #[arg(long)]
    model: String,
    /// The adapter's model id, when an adapter answered.
    #[arg(long)]
    adapter: Option<String>,
    /// The prompt, as the model saw it.
    #[arg(long)]
    prompt: String,
    /// The answer.
    #[arg(long)]
    output: String,
    /// The fee in minor units of `--currency` (e.g. 250 for 2.50 EUR with exponent 2).
    #[arg(long)]
    fee: String,
    #[arg(long, default_value = "EUR")]
    currency: String,
    #[arg(long, default_value_t = 2)]
    exponent: u32,
    /// Who was charged.
    #[arg(long)]
    caller: String,
    /// The request id (a new UUIDv7 when absent).
    #[arg(long)]
    request_id: Option<String>,
    #[arg(long, default_value = "nats://127.0.0.1:4222", env = "PROVENANT_NATS_URL")]
    nats_url: String,
    #[arg(long, default_value = "pv")]
    subject_root: String,
}

pub async fn run(arguments: ReportArguments) -> anyhow::Result<()> {
    let config = BusConfig { subject_root: arguments.subject_root.clone(), ..BusConfig::new(&arguments.nats_url, &arguments.producer) };
    let bus = Bus::connect(&config).await.with_context(|| format!("cannot reach NATS at {}", arguments.nats_url))?;
    let base = registered(&bus, &arguments.model).await?;
    let adapter = match &arguments.adapter {
        Some(adapter_id) => Some(registered(&bus, adapter_id).await?),
        None => None,
    };
    if adapter.as_ref().is_some_and(|adapter| adapter.base_model_id != base.model_id) {
        bail!("{} is not an adapter of {}", arguments.adapter.as_deref().unwrap_or_default(), base.model_id);
    }
    // The transcripts first: an event whose transcript is missing can never be attributed.
    let transcripts = bus.blob_store(infer::TRANSCRIPTS_BUCKET).await?;
    let prompt = transcripts.put(arguments.prompt.as_bytes()).await?;
    let output = transcripts.put(arguments.output.as_bytes()).await?;
    let request_id = arguments.request_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let weights = |model: &ModelRegistered| model.weights.as_ref().map(|blob| blob.sha256.clone()).unwrap_or_default();
    let event = InferenceServed {
        request_id: request_id.clone(),
        producer: arguments.producer.clone(),
        caller: Some(Principal { id: arguments.caller.clone(), kind: PrincipalKind::Unspecified.into() }),
        model_id: base.model_id.clone(),
        base_weights_sha256: weights(&base),
        adapter_model_id: adapter.as_ref().map(|adapter| adapter.model_id.clone()).unwrap_or_default(),
        adapter_weights_sha256: adapter.as_ref().map(weights).unwrap_or_default(),
        prompt_sha256: prompt.sha256,
        output_sha256: output.sha256,
        prompt_tokens: u32::try_from(infer::generation::prompt_tokens(&arguments.prompt).len())?,
        output_tokens: u32::try_from(arguments.output.len())?,
        fee: Some(Money { currency: arguments.currency.clone(), exponent: arguments.exponent, minor_units: arguments.fee.clone() }),
        pricing_policy_version: 0,
        receipt: None,
    };
    let envelope = Envelope::new(&event, &arguments.producer);
    bus.publish(&envelope, &event, Expect::NoEvents).await.with_context(|| format!("request {request_id} was reported before"))?;
    println!("request_id {request_id}");
    println!("event_id {}", envelope.event_id);
    Ok(())
}

/// Model `model_id`'s registration, read from the log.
pub(crate) async fn registered(bus: &Bus, model_id: &str) -> anyhow::Result<ModelRegistered> {
    Ok(bus
        .last_delivery(Context::Training, "model", model_id)
        .await?
        .with_context(|| format!("model {model_id} is not registered"))?
        .decode(&Upcasters::contract())?)
}
