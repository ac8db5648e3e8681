//! JetStream plumbing shared by every service: the event log's streams, publishing with
//! de-duplication and per-aggregate optimistic concurrency, and durable consumers that apply
//! each event to a sea-orm projection exactly once in effect.
//!
//! Start with [`Bus`] (connect, declare streams, publish), then [`Handler`] and [`Consumer`]
//! (consume). The contract: delivery is at least once; a handler writes its projection rows
//! and the consumer's checkpoint in one database transaction, and the message is acked only
//! after that transaction commits, so a redelivered event finds its id already recorded and
//! applies nothing twice. Poison messages go to the dead-letter stream with their reason.

mod blobs;
mod bus;
mod config;
mod consumer;
mod deferred;
mod delivery;
mod error;
pub mod follow;
mod frame;
mod history;
pub mod identity;
mod outbox;
mod progress;
mod publish;

pub mod store;

pub use blobs::{BlobStore, StoredBlob, sha256_hex};
pub use bus::Bus;
pub use config::{BusConfig, ConsumerConfig};
pub use consumer::{Consumer, ConsumerStats, HandleError, Handler, Replay, run_until_stopped};
pub use deferred::Deferred;
pub use delivery::{DeadLetter, Delivery, dead_letter_header};
pub use error::Error;
pub use frame::ServiceFrame;
pub use outbox::Outbox;
pub use progress::Progress;
pub use provenant_events::{Context, Envelope, Event, Namespace, Upcasters};
pub use publish::{Expect, PendingPublish, Published};

#[cfg(feature = "fault-injection")]
pub use consumer::CrashPoint;
