//! `provenant attribution explain <request-id>`: shows an answer's receipt (the one its
//! `InferenceServed` carries, or the `InferenceAttributed` computed after it) and recomputes it
//! from what the log and the object store hold — the `InferenceServed` event, the prompt and
//! answer (kept under the digests the event names), the model's weights and the attribution
//! index the receipt names — then says whether the two agree, bit for bit.

#![allow(clippy::print_stdout, reason = "the receipt and the verdict are the command's output")]

use anyhow::{Context as _, bail};
use attribution::{RECOMPUTABLE_METHODS, Receipt};
use infer::attribution::{AttributedModel, fetch_index};
use model::Transformer;
use provenant_bus::Event as _;
use provenant_bus::{BlobStore, Bus, BusConfig, Context, Upcasters};
use provenant_events::proto::inference::v1::{AttributionReceipt, InferenceAttributed, InferenceServed};

#[derive(Debug, clap::Args)]
pub struct ExplainArguments {
    /// The request id (`provenant.request_id` of the answer, or its `x-request-id` header).
    request_id: String,
    /// The NATS server holding the log.
    #[arg(long, default_value = "nats://127.0.0.1:4222", env = "PROVENANT_NATS_URL")]
    nats_url: String,
    /// The log's subject root.
    #[arg(long, default_value = "pv")]
    subject_root: String,
    /// Print the recomputed receipt as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(arguments: ExplainArguments) -> anyhow::Result<()> {
    let config = BusConfig { subject_root: arguments.subject_root.clone(), ..BusConfig::new(&arguments.nats_url, "cli") };
    let bus = Bus::connect(&config).await.with_context(|| format!("cannot reach NATS at {}", arguments.nats_url))?;
    let upcasters = Upcasters::contract();
    // The inference, then (when it came without a receipt) the receipt computed after it.
    let history = bus.aggregate_history(Context::Inference, "request", &arguments.request_id).await?;
    let first = history.first().with_context(|| format!("no InferenceServed for request {}", arguments.request_id))?;
    let served: InferenceServed = first.decode(&upcasters)?;
    let late = history.iter().skip(1).find(|delivery| delivery.envelope.event_type == InferenceAttributed::TYPE);
    let recorded = match (served.receipt.clone(), late) {
        (Some(receipt), _) => receipt,
        (None, Some(delivery)) => {
            let attributed: InferenceAttributed = delivery.decode(&upcasters)?;
            if !arguments.json {
                println!("attributed after the fact (InferenceAttributed {})", delivery.envelope.event_id);
            }
            attributed.receipt.context("the InferenceAttributed carries no receipt")?
        }
        (None, None) => bail!(
            "request {} was served without a receipt and has not been attributed yet (see pv.deadletter.infer-late-receipts)",
            arguments.request_id
        ),
    };
    let recomputed = recompute(&bus, &served, &recorded).await?;
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&recomputed)?);
    } else {
        print_receipt(&served, &recomputed);
    }
    if recomputed.to_proto() != recorded {
        bail!("the recomputed receipt differs from the one recorded in InferenceServed");
    }
    println!("recomputed from the model and the index: identical to the recorded receipt");
    Ok(())
}

async fn recompute(bus: &Bus, served: &InferenceServed, recorded: &AttributionReceipt) -> anyhow::Result<Receipt> {
    if !RECOMPUTABLE_METHODS.contains(&recorded.method.as_str()) {
        bail!("the receipt was computed with {:?}; this build recomputes {}", recorded.method, RECOMPUTABLE_METHODS.join(" and "));
    }
    let models = bus.blob_store(infer::MODELS_BUCKET).await?;
    let transcripts = bus.blob_store(infer::TRANSCRIPTS_BUCKET).await?;
    let prompt = blob(&transcripts, &served.prompt_sha256, "the prompt (transcripts are kept only with serving.keep_transcripts)").await?;
    let output = blob(&transcripts, &served.output_sha256, "the answer").await?;
    let registered = crate::report::registered(bus, &served.model_id).await?;
    let config_sha256 = registered.config.as_ref().map(|blob| blob.sha256.clone()).unwrap_or_default();
    let config: model::ModelConfig = serde_json::from_slice(&blob(&models, &config_sha256, "the model config").await?)?;
    let weights = blob(&models, &recorded.model_weights_sha256, "the base weights").await?;
    let adapter = match recorded.adapter_weights_sha256.as_str() {
        "" => None,
        sha256 => Some(blob(&models, sha256, "the adapter weights").await?),
    };
    let index = fetch_index(&models, &recorded.index_sha256).await?;
    let prompt_text = String::from_utf8(prompt).context("the kept prompt is not UTF-8")?;
    let (request_id, base_sha256, adapter_sha256) =
        (served.request_id.clone(), recorded.model_weights_sha256.clone(), recorded.adapter_weights_sha256.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Receipt> {
        let base = Transformer::from_bytes(&config, &weights, &model::backend::inference_device())?;
        let model = match adapter {
            Some(bytes) => base.load_adapter(&bytes)?,
            None => base,
        };
        let output: Vec<u32> = output.iter().map(|&byte| u32::from(byte)).collect();
        let prompt = infer::generation::prompt_tokens(&prompt_text);
        Ok(AttributedModel::new(index, model)?.receipt(&request_id, &base_sha256, &adapter_sha256, &prompt, &output)?)
    })
    .await?
}

async fn blob(store: &BlobStore, sha256: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    Ok(store.get(sha256).await?.with_context(|| format!("{what} ({sha256}) is not stored"))?.to_vec())
}

fn percent(ppb: u64) -> String {
    format!("{:>8.4} %", ppb as f64 / 1e7)
}

fn print_receipt(served: &InferenceServed, receipt: &Receipt) {
    let attribution = &receipt.attribution;
    let model = match served.adapter_model_id.as_str() {
        "" => served.model_id.clone(),
        adapter => format!("{} + adapter {adapter}", served.model_id),
    };
    println!("request   {}", served.request_id);
    println!("model     {model}");
    println!("receipt   {}  ({})", receipt.receipt_id, receipt.method);
    println!("index     {}", receipt.index_sha256);
    println!("\ncontributor shares (parts per billion), with the Datanet each was earned through");
    for share in &attribution.shares {
        println!("  {:<40} {:>10}  {}  {}", share.contributor_id, share.share_ppb, percent(share.share_ppb), share.datanet_id);
    }
    println!("  {:<40} {:>10}  {}", "(base pool)", attribution.base_pool_ppb, percent(attribution.base_pool_ppb));
    println!(
        "  noise floor {}   verbatim coverage {}   phrase coverage {} (of the rest)",
        percent(attribution.noise_floor_ppb),
        percent(attribution.span_coverage_ppb),
        percent(attribution.phrase_coverage_ppb)
    );
    println!("\ntop examples (signed score, ppb of the total absolute score)");
    for example in &attribution.top_examples {
        println!("  #{:<8} {:>12}  {:<38} {}", example.example, example.score_ppb, example.contribution_id, example.contributor_id);
    }
    if !attribution.spans.is_empty() {
        println!("\nverbatim spans (output token start, length, contribution)");
        for span in &attribution.spans {
            println!("  {:>5} {:>5}  {}", span.output_token_start, span.length_tokens, span.contribution_id);
        }
    }
    println!();
}
