//! The validate service will own validation rules, duplicate clusters and sealed snapshots:
//! it consumes `ContributionSubmitted` and emits `ContributionAccepted` / `ContributionRejected`
//! and `SnapshotSealed` (issue 3).
//!
//! Today it is the service's frame: it boots like every service (configuration, NATS with the
//! event streams declared, health, readiness and metrics endpoints) and stops cleanly, so the
//! all-in-one binary, the Helm chart and the tests already treat it as a service.
//! Start reading at [`Application`].

mod startup;

pub use startup::{Application, Config};
