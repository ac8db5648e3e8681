//! The train service will own training jobs, the model registry and the Burn workers: it
//! takes jobs over HTTP and `SnapshotSealed`, and emits `TrainingJob*`, `ModelRegistered` and
//! `AttributionIndexBuilt` (issues 4 and 6).
//!
//! Today it is the service's frame: it boots like every service (configuration, NATS with the
//! event streams declared, health, readiness and metrics endpoints) and stops cleanly, so the
//! all-in-one binary, the Helm chart and the tests already treat it as a service.
//! Start reading at [`Application`].

mod startup;

pub use startup::{Application, Config};
