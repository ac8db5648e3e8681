//! Weights and training checkpoints as bytes.
//!
//! Weights are a Burn record in the burnpack format (`.bpk`): tensors named by parameter path,
//! each with the parameter id that [`Transformer`] derives from that path. Burn writes tensors
//! in module order and names in sorted order, and the ids no longer vary between processes, so
//! the same weights always give the same bytes and [`Transformer::weights_digest`] is a content
//! address.
//!
//! A [`Checkpoint`] adds what training needs to continue in another process: the AdamW moments,
//! the step, and the position in the data order.

use burn::module::{Module, ParamGroup};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{LoraSpec, ModelConfig, TrainConfig};
use crate::container;
use crate::error::{Error, Result};
use crate::transformer::Transformer;

/// The path fragment of every LoRA factor (`….weight.lora.a`).
pub(crate) const LORA_PATH: &str = ".lora.";

/// SHA-256 hex of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Transformer {
    /// Every parameter as a burnpack record, LoRA factors included when attached.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.clone().into_record().into_bytes()?.to_vec())
    }

    /// The base weights alone: for a model without an adapter the same bytes as
    /// [`to_bytes`](Self::to_bytes); for an adapted one, the frozen weights the adapter sits on.
    pub fn base_weights_to_bytes(&self) -> Result<Vec<u8>> {
        let base = ParamGroup::all().exclude(ParamGroup::from_predicate(LORA_PATH));
        Ok(self.clone().into_record_group(base).into_bytes()?.to_vec())
    }

    /// SHA-256 hex of [`to_bytes`](Self::to_bytes).
    pub fn weights_digest(&self) -> Result<String> {
        Ok(sha256_hex(&self.to_bytes()?))
    }

    /// SHA-256 hex of [`base_weights_to_bytes`](Self::base_weights_to_bytes): unchanged by
    /// LoRA training, which freezes the base.
    pub fn base_weights_digest(&self) -> Result<String> {
        Ok(sha256_hex(&self.base_weights_to_bytes()?))
    }

    /// A model of shape `config` with the weights of [`to_bytes`](Self::to_bytes) (of a model
    /// without an adapter; load adapters with [`load_adapter`](Self::load_adapter)).
    pub fn from_bytes(config: &ModelConfig, bytes: &[u8], device: &Device) -> Result<Self> {
        Transformer::new(config, 0, device)?.load_weights(bytes, Coverage::Whole)
    }

    /// Replace this model's parameters with those of a record; every record tensor must land.
    pub(crate) fn load_weights(self, bytes: &[u8], coverage: Coverage) -> Result<Self> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))?.allow_partial(coverage == Coverage::Part);
        Ok(self.try_load_record(record)?.with_canonical_ids())
    }
}

/// Whether a record must cover every parameter of the model it is loaded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    Whole,
    /// Some parameters (an adapter's factors) only; the rest keep their values.
    Part,
}

/// Where training stands in its data order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataState {
    /// Training windows drawn so far, over all epochs.
    pub windows_consumed: u64,
    /// SHA-256 hex of the token stream (u32 little-endian), which a resumed run must match.
    pub stream_digest: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointHeader {
    step: u64,
    model: ModelConfig,
    train: TrainConfig,
    lora: Option<LoraSpec>,
    data: DataState,
}

const CHECKPOINT_MAGIC: &[u8; 4] = b"PVCK";

/// Everything a training run needs to continue where it stopped, in this or another process.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Optimizer steps completed.
    pub step: u64,
    /// Shape of the model.
    pub model: ModelConfig,
    /// The run's hyperparameters.
    pub train: TrainConfig,
    /// The adapter being trained, for a LoRA run.
    pub lora: Option<LoraSpec>,
    /// Position in the data order.
    pub data: DataState,
    /// Every parameter (base and LoRA factors), as [`Transformer::to_bytes`].
    pub(crate) weights: Vec<u8>,
    /// AdamW's state: a burnpack of moments keyed by parameter id, tensors sorted by name.
    pub(crate) optimizer: Vec<u8>,
}

impl Checkpoint {
    /// The checkpoint as one deterministic byte string.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = CheckpointHeader {
            step: self.step,
            model: self.model.clone(),
            train: self.train.clone(),
            lora: self.lora.clone(),
            data: self.data.clone(),
        };
        container::write(CHECKPOINT_MAGIC, &header, &[&self.weights, &self.optimizer])
    }

    /// Parse [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (header, sections): (CheckpointHeader, _) = container::read("checkpoint", CHECKPOINT_MAGIC, bytes)?;
        let [weights, optimizer] = sections[..] else {
            return Err(Error::Corrupt { artifact: "checkpoint", reason: format!("expected 2 sections, found {}", sections.len()) });
        };
        header.model.validate()?;
        header.train.validate(&header.model)?;
        Ok(Self {
            step: header.step,
            model: header.model,
            train: header.train,
            lora: header.lora,
            data: header.data,
            weights: weights.to_vec(),
            optimizer: optimizer.to_vec(),
        })
    }

    /// SHA-256 hex of the weights inside the checkpoint.
    pub fn weights_digest(&self) -> String {
        sha256_hex(&self.weights)
    }

    /// The model as it was at the checkpoint, on `device` (for inference or evaluation).
    pub fn model(&self, device: &Device) -> Result<Transformer> {
        let model = Transformer::new(&self.model, 0, device)?;
        let model = match &self.lora {
            Some(spec) => model.with_lora(spec, 0)?,
            None => model,
        };
        model.load_weights(&self.weights, Coverage::Whole)
    }
}
