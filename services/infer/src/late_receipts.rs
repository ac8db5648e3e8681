//! Receipts after the fact. An `InferenceServed` that came without a receipt (an external
//! producer's, or ours when the model's index was not built yet or the receipt failed) is
//! attributed here, from the prompt and answer kept in the `transcripts` bucket under the
//! digests the event names, and the receipt is appended to the same request's subject as
//! `InferenceAttributed`. Settlement then pays out the contributors' part it held.
//!
//! Exactly once without a database of record: the append expects the request's subject to end
//! at the inference event, and the `InferenceAttributed` event id derives from the inference
//! event's, so a redelivery finds its own receipt (or a conflict) and adds nothing. The
//! consumer's bookkeeping therefore lives in memory ([`provenant_bus::store::in_memory`]).

use std::sync::Arc;

use provenant_bus::{BlobStore, Bus, Context, Delivery, Envelope, Error as BusError, Event as _, Expect, HandleError, Handler, Upcasters};
use provenant_events::Namespace;
use provenant_events::proto::inference::v1::{InferenceAttributed, InferenceServed};
use sea_orm::DatabaseTransaction;
use sha2::{Digest as _, Sha256};

use crate::attribution::{Answered, Attributor, ReceiptError};
use crate::catalog::{Catalog, Resolved};
use crate::generation::prompt_tokens;
use crate::models::{LoadError, ModelCache};

/// Attributes receipt-less inference events (durable consumer `infer-late-receipts`).
pub struct LateReceipts {
    pub bus: Bus,
    /// How long after a model's registration its index may still come (the train service
    /// builds it after registering); past that, an event for it is refused, not retried.
    pub index_wait: std::time::Duration,
    pub catalog: Catalog,
    pub cache: Arc<ModelCache>,
    pub attributor: Arc<Attributor>,
    pub transcripts: BlobStore,
    pub upcasters: Upcasters,
}

impl LateReceipts {
    pub const NAME: &'static str = "infer-late-receipts";
}

/// The event id of the `InferenceAttributed` for inference event `inference_event_id`.
pub fn attribution_event_id(inference_event_id: &str) -> uuid::Uuid {
    let digest = Sha256::new().chain_update("inference-attributed").chain_update([0]).chain_update(inference_event_id).finalize();
    uuid::Uuid::new_v8(digest[..16].try_into().expect("16 bytes"))
}

fn refuse(code: &'static str, message: impl std::fmt::Display) -> HandleError {
    metrics::counter!("infer_late_receipts_refused_total", "code" => code).increment(1);
    HandleError::rejected(code, message)
}

fn transient(error: impl Into<anyhow::Error>) -> HandleError {
    HandleError::Transient(error.into())
}

impl Handler for LateReceipts {
    fn name(&self) -> &str {
        LateReceipts::NAME
    }

    fn context(&self) -> Context {
        Context::Inference
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Inference, "request")]
    }

    async fn handle(&self, _transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        if delivery.envelope.event_type != InferenceServed::TYPE {
            return Ok(());
        }
        let served: InferenceServed = delivery.decode(&self.upcasters)?;
        if served.receipt.is_some() {
            return Ok(());
        }
        if served.request_id != delivery.envelope.aggregate_id {
            return Err(refuse("inference.request_id_mismatch", "the body's request id is not the subject's"));
        }
        let inference_event_id = delivery.envelope.event_id.to_string();
        let event_id = attribution_event_id(&inference_event_id);
        if self.already_attributed(&served.request_id, &event_id).await? {
            return Ok(());
        }
        let resolved = self.resolve(&served)?;
        // Before any transcript or weights are read: most retries are a wait for the index.
        if !self.attributor.has_index(&resolved.served().model_id) {
            return Err(self.no_index(resolved.served()));
        }
        let prompt = self.transcript(&served.prompt_sha256, "prompt").await?;
        let output = self.transcript(&served.output_sha256, "answer").await?;
        let prompt = String::from_utf8(prompt).map_err(|_| refuse("attribution.transcript_invalid", "the kept prompt is not UTF-8"))?;
        // The base only: the attributor loads the adapter alongside its index.
        let base_only = Resolved { base: resolved.base.clone(), adapter: None };
        let serving = self.cache.get(&base_only).await.map_err(|error| match error {
            LoadError::Store(error) => transient(error),
            other => refuse("attribution.model_unloadable", other),
        })?;
        let prompt = prompt_tokens(&prompt);
        let output: Vec<u32> = output.iter().map(|&byte| u32::from(byte)).collect();
        let answered = Answered {
            request_id: &served.request_id,
            base: &serving.base.model,
            base_weights_sha256: &resolved.base.weights_sha256,
            adapter: resolved.adapter.as_ref().map(|adapter| (adapter.model_id.as_str(), adapter.weights_sha256.as_str())),
            base_model_id: &resolved.base.model_id,
            prompt: &prompt,
            output: &output,
        };
        let receipt = match self.attributor.receipt(answered).await {
            Ok(Some(receipt)) => receipt,
            Ok(None) => return Err(self.no_index(resolved.served())),
            Err(ReceiptError::Store(error)) => return Err(transient(error)),
            Err(error) => return Err(refuse("attribution.index_unusable", error)),
        };
        let attributed =
            InferenceAttributed { request_id: served.request_id.clone(), inference_event_id, receipt: Some(receipt.to_proto()) };
        let mut envelope = Envelope::new(&attributed, self.bus.producer()).caused_by(&delivery.envelope);
        envelope.event_id = event_id;
        match self.bus.publish(&envelope, &attributed, Expect::LastSequence(delivery.stream_sequence)).await {
            Ok(_) => {
                metrics::counter!("infer_late_receipts_total").increment(1);
                Ok(())
            }
            Err(BusError::Conflict { .. }) if self.already_attributed(&served.request_id, &event_id).await? => Ok(()),
            Err(BusError::Conflict { .. }) => {
                Err(refuse("attribution.request_moved", "the request's subject holds a later event that is not this receipt"))
            }
            Err(error) => Err(transient(error)),
        }
    }
}

impl LateReceipts {
    /// The index is built after the model registers: an event waits for it (within
    /// `max_deliver`) while it may still come, and is refused once it cannot, so that a model
    /// without an index does not hold up the events behind it for long.
    fn no_index(&self, model: &crate::catalog::CatalogModel) -> HandleError {
        let registered = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(model.created).unwrap_or(0));
        let waited = std::time::SystemTime::now().duration_since(registered).unwrap_or_default();
        if waited < self.index_wait {
            return transient(anyhow::anyhow!("no attribution index for {} yet", model.model_id));
        }
        refuse(
            "attribution.no_index",
            format!("model {} has had no attribution index for {} s since it registered", model.model_id, waited.as_secs()),
        )
    }

    /// Whether the request's last event is this inference's receipt (appended before a crash).
    async fn already_attributed(&self, request_id: &str, event_id: &uuid::Uuid) -> Result<bool, HandleError> {
        let last = self.bus.last_event(Context::Inference, "request", request_id).await.map_err(transient)?;
        Ok(last.and_then(|(_, id)| id).is_some_and(|id| id == event_id.to_string()))
    }

    /// The registered models the event names, with the weights it names: a receipt is computed
    /// only against exactly what answered.
    fn resolve(&self, served: &InferenceServed) -> Result<Resolved, HandleError> {
        // Registration precedes any inference of the model; a miss here is the follower's lag.
        let registered = |model_id: &str| {
            self.catalog.model(model_id).ok_or_else(|| transient(anyhow::anyhow!("model {model_id} is not in the catalogue (yet)")))
        };
        let base = registered(&served.model_id)?;
        if base.is_adapter || base.weights_sha256 != served.base_weights_sha256 {
            return Err(refuse("attribution.weights_mismatch", format!("the base weights are not those of {}", base.model_id)));
        }
        let adapter = match served.adapter_model_id.as_str() {
            "" => None,
            adapter_id => {
                let adapter = registered(adapter_id)?;
                if !adapter.is_adapter || adapter.base_model_id != base.model_id || adapter.weights_sha256 != served.adapter_weights_sha256
                {
                    return Err(refuse("attribution.weights_mismatch", format!("the adapter weights are not those of {adapter_id}")));
                }
                Some(adapter)
            }
        };
        Ok(Resolved { base, adapter })
    }

    async fn transcript(&self, sha256: &str, what: &str) -> Result<Vec<u8>, HandleError> {
        if sha256.len() != 64 || !sha256.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)) {
            return Err(refuse("attribution.digest_invalid", format!("the {what} digest {sha256:?} is not a SHA-256")));
        }
        match self.transcripts.get(sha256).await {
            Ok(Some(bytes)) => Ok(bytes.to_vec()),
            // Producers store the transcript before they publish the event (README, "External
            // inference producers"): one that is missing will not come.
            Ok(None) => Err(refuse("attribution.transcript_missing", format!("the {what} ({sha256}) is not in the transcripts bucket"))),
            Err(error) => Err(transient(error)),
        }
    }
}
