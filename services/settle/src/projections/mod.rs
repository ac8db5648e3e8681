//! The settle service's tables: what it knows of models, Datanets and policies (fed by their
//! events), the inference events it judged, items for review, and the ledger.

pub mod catalog;
pub mod inferences;
pub mod ledger;
pub mod periods;
pub mod policies;
