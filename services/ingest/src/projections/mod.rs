//! Read models of the ingest service (sea-orm; SQLite or PostgreSQL). Written only by the
//! handlers in `crate::handlers`, read by the API.

pub mod contributions;
pub mod daily_usage;
pub mod datanets;
