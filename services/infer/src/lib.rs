//! The infer service serves registered base models and their LoRA adapters behind an
//! OpenAI-compatible API, and prices and records every answer as `InferenceServed`.
//!
//! - The catalogue ([`catalog`]) follows `ModelRegistered` and `PricingPolicySet` from the log
//!   into memory; a request names `<base>` or `<base>/<adapter>`.
//! - Weights come from the object store on first use ([`models`]): bases stay loaded, adapters'
//!   low-rank factors live in an LRU cache with pinning, loads are single-flight.
//! - Each base has its decoding threads ([`batching`]); each runs its active requests, whatever
//!   their adapters, through one forward pass per step (a gathered low-rank product per row),
//!   decoding one token per request from a cache of the positions before it.
//! - Decoding ([`generation`]) samples with temperature, top-p and a seed, honours stop
//!   sequences and streams whole characters.
//! - Each answer's fee comes from the model's price ([`pricing`]) and is recorded in
//!   `InferenceServed` before the answer (or a stream's last chunk) is sent.
//!
//! - Every answer carries its attribution receipt ([`attribution`]); events that came without
//!   one (external producers', or ours before the model's index existed) are attributed later
//!   from their kept transcripts ([`late_receipts`]).
//!
//! Start reading at [`Application`], then [`api::completions`].

pub mod api;
pub mod attribution;
pub mod batching;
pub mod catalog;
pub mod configuration;
pub mod generation;
pub mod late_receipts;
pub mod models;
pub mod pricing;
mod startup;

pub use configuration::{BASE_YAML, Config};
pub use startup::{Application, MODELS_BUCKET, TRANSCRIPTS_BUCKET};

/// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
pub fn load_config() -> Result<Config, provenant_config::Error> {
    Config::load()
}
