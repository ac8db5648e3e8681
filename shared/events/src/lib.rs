//! The event contract every Provenant service shares: the Rust types generated from
//! `schemas/` (module [`proto`]), the [`Envelope`] that travels in message headers, the
//! subject and stream scheme ([`Namespace`]), and the [`Upcasters`] that read old versions.
//!
//! Published artifact formats that more than one service reads belong to the contract too:
//! a sealed snapshot's manifest ([`snapshot`]) and its RFC 6962 Merkle tree ([`merkle`]), and the
//! text of a JSON-lines record ([`records`]).
//!
//! This is the only crate that knows protobuf. Start with [`Event`], then [`Envelope`].
//! Events are immutable: a consumer keeps the original bytes it received (hash and sign
//! those), because decoding and re-encoding would drop fields this build does not know.

mod envelope;
mod error;
mod event;
pub mod merkle;
pub mod money;
pub mod records;
pub mod snapshot;
mod subject;
mod upcast;

pub mod proto;

pub use envelope::{Envelope, header};
pub use error::Error;
pub use event::{Context, Event};
pub use subject::Namespace;
pub use upcast::{UpcastStep, Upcasters};
