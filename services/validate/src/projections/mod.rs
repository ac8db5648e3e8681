//! Validate's read models: each Datanet's rules (`policies`), and the accepted contributions
//! with their duplicate clusters and near-duplicate band keys (`accepted`).

pub mod accepted;
pub mod held;
pub mod policies;
pub mod snapshots;
