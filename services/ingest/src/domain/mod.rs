//! Ingest's domain: pure types and rules, no IO. Outside input is parsed into these types
//! once, at the edge (HTTP bodies, events from other producers), and trusted afterwards.

pub mod datanet;
