//! The train service owns training jobs, the training workers and the model registry.
//!
//! - HTTP (`api`): model builders submit jobs (a base, pinned sealed snapshots, full or LoRA,
//!   hyperparameters, a seed), follow and cancel them, and read the registry. A submission is
//!   checked against what the service knows (`projections`) and becomes
//!   `TrainingJobRequested`.
//! - Consumes `DatanetCreated`/`Updated` and `SnapshotSealed` into what a job may pin, and the
//!   `TrainingJob*` and `ModelRegistered` events into jobs and models (`handlers`); a
//!   requested job is queued on the work queue (`queue`).
//! - Workers (`worker`; alone on GPU nodes with `--worker`) pull jobs, train them with Burn
//!   (`provenant-model`), emit `TrainingJobStarted`/`Progressed`/`Checkpointed`, register the
//!   result as `ModelRegistered` with its lineage (snapshot roots, the example table's
//!   digest, hyperparameters, seed, code version, artifact digests, held-out perplexity) and
//!   finish with `TrainingJobCompleted`/`Failed`. A dead worker's job resumes from its last
//!   checkpoint on another worker, bit for bit.
//! - Rules without IO live in `domain`: job specs, and assembling training data.
//!
//! Not yet: `AttributionIndexBuilt` (the Proof of Attribution issue).
//! Start reading at [`Application`], then [`worker`].

pub mod api;
pub mod configuration;
pub mod domain;
pub mod handlers;
pub mod projections;
pub mod queue;
mod startup;
pub mod worker;

pub use configuration::{BASE_YAML, Config};
pub use startup::{Application, Mode, open_database};
pub use worker::model_id_of;
