//! The train service's rules, pure and without IO: job specs and their validation ([`spec`]),
//! and the assembly of training data from pinned snapshots ([`examples`]).

pub mod examples;
pub mod spec;
