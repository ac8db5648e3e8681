//! The ingest service owns Datanets (and, from issue 3, contributions and their blobs).
//!
//! - HTTP (`api`): create, update, get and list Datanets; a write answers once its event is
//!   durable in JetStream. Callers authenticate with API keys (`provenant_runtime::identity`).
//! - Emits `DatanetCreated`, `DatanetUpdated` on `pv.datanet.datanet.<id>`.
//! - Consumes its own Datanet stream into the `datanets` projection (`handlers`,
//!   `projections`), which the API reads.
//!
//! Start reading at [`Application`] (`startup.rs`), then `api/datanets.rs`.

pub mod api;
pub mod configuration;
pub mod domain;
pub mod handlers;
pub mod projections;
mod startup;

pub use configuration::Config;
pub use startup::{Application, open_database};
