//! The train service's read models (sea-orm; SQLite or PostgreSQL), each rebuilt from the log:
//! Datanet record formats and sealed snapshots (for validating pins), jobs, and the model
//! registry.

pub mod datanets;
pub mod jobs;
pub mod models;
pub mod snapshots;
