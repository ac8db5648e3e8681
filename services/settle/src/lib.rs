//! The settle service will own revenue policies, the double-entry ledger, periods and
//! finance reports: it consumes `InferenceServed` (ours and external producers') and emits
//! `InferenceSettled`, `SettlementPeriodClosed` and `SettlementReportIssued` (issue 7).
//!
//! Today it is the service's frame: it boots like every service (configuration, NATS with the
//! event streams declared, health, readiness and metrics endpoints) and stops cleanly, so the
//! all-in-one binary, the Helm chart and the tests already treat it as a service.
//! Start reading at [`Application`].

mod startup;

pub use startup::{Application, Config};
