//! The validate service's rules, pure and without IO: near-duplicate detection
//! ([`near_duplicates`]), record quality and personal-data flags ([`quality`]), verdicts.
//! Snapshot Merkle trees and manifests are part of the published contract (the train service
//! verifies them too) and live in `provenant_events`; they are re-exported here.

pub mod near_duplicates;
pub mod quality;
pub mod verdict;

pub use provenant_events::{merkle, snapshot};
