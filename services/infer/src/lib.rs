//! The infer service will serve one base model with many LoRA adapters behind an
//! OpenAI-compatible API, consume `ModelRegistered`, and emit a priced `InferenceServed` with
//! an attribution receipt for every answer (issues 5 and 6).
//!
//! Today it is the service's frame: it boots like every service (configuration, NATS with the
//! event streams declared, health, readiness and metrics endpoints) and stops cleanly, so the
//! all-in-one binary, the Helm chart and the tests already treat it as a service.
//! Start reading at [`Application`].

mod startup;

pub use startup::{Application, Config};
