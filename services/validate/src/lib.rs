//! The validate service judges contributions.
//!
//! - Consumes `DatanetCreated` / `DatanetUpdated` into each Datanet's rules
//!   (`projections::policies`).
//! - Consumes `ContributionSubmitted`: reads the content from the object store, checks decoding,
//!   records (and the Datanet's JSON Schema) and quality, applies the Datanet's personal-data policy, finds exact and near
//!   duplicates (the earliest submitter's cluster wins), and appends `ContributionAccepted` or
//!   `ContributionRejected` with stable reason codes (`handlers/on_contribution_submitted.rs`).
//! - HTTP (`api`): the owner seals a snapshot of every contribution accepted so far
//!   (`SnapshotSealed`, manifest in the object store, RFC 6962 Merkle root), which extends the
//!   previous snapshot (`sealing`); anyone
//!   authenticated gets a contribution's inclusion proof. `SnapshotSealed` is projected back
//!   (checked against its root) for the proofs.
//! - Rules without IO live in `domain`: Merkle trees, manifests, MinHash/LSH, quality.
//!
//! - Contributions to owner-approval Datanets are held (`projections::held`) until
//!   `ContributionApproved`, then judged the same way.
//!
//! - A Datanet's policy may seal a snapshot after every N accepted contributions
//!   (`sealing::seal_by_policy`, inside the validator's transaction).
//!
//! Start reading at [`Application`].

pub mod api;
pub mod configuration;
pub mod domain;
pub mod handlers;
pub mod projections;
pub mod sealing;
mod startup;

pub use configuration::{BASE_YAML, Config};
pub use startup::{Application, open_database};
