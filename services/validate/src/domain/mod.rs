//! The validate service's rules, pure and without IO: snapshot Merkle trees with inclusion
//! proofs ([`merkle`]), near-duplicate detection ([`near_duplicates`]), and record quality
//! and personal-data flags ([`quality`]). The consumer and the snapshot API that apply them
//! arrive with the rest of issue 3.

pub mod merkle;
pub mod near_duplicates;
pub mod quality;
pub mod snapshot;
pub mod verdict;
