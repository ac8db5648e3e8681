//! Provenant's model layer, shared by the `train` and `infer` services: a byte-level
//! [`Tokenizer`], a small decoder-only [`Transformer`] in Burn 0.22, LoRA adapters on its
//! linear layers, deterministic training with resumable [`Checkpoint`]s, and content-addressed
//! weights.
//!
//! Start with [`Transformer::new`] and [`Trainer`]; [`backend`] says which device runs them.
//! The invariant everything here protects: on one backend, the same config, seed and token
//! stream give the same weights digest, whether the run went straight through or was stopped,
//! checkpointed to bytes and resumed in another process.
//!
//! The crate emits no events and does no IO: artifacts go in and out as bytes, and the
//! services decide where they live.

pub mod backend;
pub mod checkpoint;
pub mod config;
mod container;
mod error;
pub mod influence;
pub mod kv_cache;
pub mod lora;
mod rng;
pub mod serving;
pub mod tokenizer;
pub mod training;
pub mod transformer;

/// The Burn this crate is built on, so callers use exactly the same version.
pub use burn;

pub use backend::Device;
pub use checkpoint::{Checkpoint, DataState};
pub use config::{Activation, LoraSpec, LoraTarget, ModelConfig, TrainConfig};
pub use error::{Error, Result};
pub use influence::{FeatureBlock, Featurizer, Reduction, Sequence};
pub use kv_cache::KvCache;
pub use lora::{AdapterMatrices, AdapterWeights, Matrix};
pub use serving::{AdapterBank, RowAdapters};
pub use tokenizer::{Tokenizer, TokenizerSpec};
pub use training::{Control, Evaluation, Observer, RunOutcome, StepReport, Trainer, evaluate};
pub use transformer::{Transformer, token_batch};
