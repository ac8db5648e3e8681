//! The validate service will own validation rules, duplicate clusters and sealed snapshots:
//! it consumes `ContributionSubmitted` and emits `ContributionAccepted` / `ContributionRejected`
//! and `SnapshotSealed` (issue 3).
//!
//! Today it is the service's frame: it boots like every service (configuration, NATS with the
//! event streams declared, health, readiness and metrics endpoints) and stops cleanly, so the
//! all-in-one binary and the tests already treat it as a service.
//! Start reading at [`provenant_bus::FrameOnlyService`].

pub mod domain;

pub use provenant_bus::{FrameConfig as Config, FrameOnlyService as Application};

/// Embedded defaults of [`Config`] (`configuration/base.yaml`).
pub const BASE_YAML: &str = include_str!("../configuration/base.yaml");

/// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
pub fn load_config() -> Result<Config, provenant_config::Error> {
    provenant_config::load(BASE_YAML)
}
