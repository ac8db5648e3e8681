//! Settlement rules, with no IO: splitting amounts exactly, revenue-share policies, checking an
//! inference event, and turning a fee into a balanced transaction.

pub mod allocation;
pub mod inference;
pub mod period;
pub mod policy;
pub mod split;
