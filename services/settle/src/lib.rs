//! The settle service turns inference fees into payouts.
//!
//! - Keeps what settlement must know: registered models (`ModelRegistered`: kind, weights,
//!   builder, pinned Datanets), Datanet owners (`DatanetCreated`), and each model's
//!   revenue-share policy (`RevenuePolicySet`, versioned, parts summing to one whole).
//! - Judges every `InferenceServed`, ours and external producers' (`handlers::Settler`):
//!   well-formed, from an authorised producer, for registered models and weights, one event
//!   per request; a refused event goes to the dead-letter stream with a stable reason code. An
//!   accepted one is split (`domain::split`: by policy, then Datanet owners by pinned
//!   snapshots, contributors by the receipt's shares, largest remainder throughout) and the
//!   decision appended as `InferenceSettled`, exactly once per inference event.
//! - Books every `InferenceSettled` into a double-entry ledger (`projections::ledger`); an
//!   inference event id that comes again with another body is recorded for review.
//! - Keeps closed periods and their reports (`SettlementPeriodClosed`, `SettlementReportIssued`),
//!   and books reversals and late receipts' payouts.
//! - HTTP (`api`): policies; settlements, reversals, balances, a principal's own statement,
//!   reconciliation, review items and periods (close one, list, download its reports) for
//!   finance.
//! - Two stores ([`Databases`]): the settler's and the ledger's, one database unless they live
//!   apart (a SQLite file's ledger lives beside it by default).
//!
//! An inference without a receipt has its contributors' part held per model until one comes.
//! Start reading at [`Application`].

pub mod api;
pub mod configuration;
pub mod domain;
pub mod handlers;
pub mod projections;
pub mod reports;
mod startup;

pub use configuration::{BASE_YAML, Config};
pub use startup::{Application, Databases, open_database, open_databases};
