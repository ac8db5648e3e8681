//! Appends a handler makes while a consumer applies a batch, confirmed together before the
//! batch commits.
//!
//! A handler that reacts to an event by appending another (a verdict, a settlement) used to
//! wait for each append's acknowledgement before the next event: one round trip to the server
//! per event, which capped a consumer at a few hundred events a second. Instead it sends the
//! append and hands its confirmation to the batch's [`Outbox`]; the consumer confirms them all
//! (they are in flight together) before it records its checkpoint and commits. The guarantee
//! is unchanged: nothing commits, and nothing is acked, before every append of the batch is
//! durable, and an append that fails abandons the batch as a failed handler would.
//!
//! Under per-event isolation (a batch retried after a failure) each event's appends are
//! confirmed before its savepoint commits, so a failing append is charged to its own event.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;

use crate::HandleError;

/// One append's confirmation: resolves once the server acknowledged it (or refused it).
type Confirmation = BoxFuture<'static, Result<(), HandleError>>;

/// The confirmations a batch still owes (see the module docs). Cheap to clone: every delivery
/// of one attempt at a batch shares one.
#[derive(Clone, Default)]
pub struct Outbox {
    pending: Arc<Mutex<Vec<Confirmation>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Outbox").field("pending", &self.lock().len()).finish()
    }
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Confirmation>> {
        // A panic while pushing leaves a valid vector behind.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a confirmation to await before the batch commits.
    pub fn defer(&self, confirmation: impl Future<Output = Result<(), HandleError>> + Send + 'static) {
        self.lock().push(Box::pin(confirmation));
    }

    /// Awaits every confirmation deferred so far (concurrently: their appends are in flight
    /// already) and reports the first failure in the order they were deferred; a transient
    /// failure wins over a rejection, since the batch is retried either way.
    pub async fn confirm(&self) -> Result<(), HandleError> {
        let pending = std::mem::take(&mut *self.lock());
        if pending.is_empty() {
            return Ok(());
        }
        let outcomes = futures::future::join_all(pending).await;
        let mut first_failure = None;
        for outcome in outcomes {
            match (outcome, &first_failure) {
                (Ok(()), _) => {}
                (Err(failure @ HandleError::Transient(_)), None | Some(HandleError::Rejected { .. })) => first_failure = Some(failure),
                (Err(failure), None) => first_failure = Some(failure),
                (Err(_), Some(_)) => {}
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Drops what was deferred without waiting for it: the event that deferred it failed and
    /// its savepoint is rolled back; whatever its appends did, the event's retry finds.
    pub fn discard(&self) {
        self.lock().clear();
    }
}
