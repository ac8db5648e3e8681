//! How far a consumer has got through its stream, for read-your-writes without polling.
//!
//! A handler that appends an event and must answer only once its own projection shows it (the
//! 202 of a submission, say) knows the event's stream sequence from the append's
//! acknowledgement. The consumer that projects it reads the stream in order and reports, after
//! each batch commits, the last sequence of that batch. Once the report reaches the event's
//! sequence, the event has been handled: applied (the usual case), or found a duplicate,
//! dead-lettered, or sent back for a retry, so a caller that must be certain still reads the
//! projection.
//!
//! Polling the database instead cost several queries per request on the hottest write path
//! (ingest's submissions), each through the same connection pool the projection writes with.

use std::time::Duration;

use tokio::sync::watch;

/// The consumer's side: what it reports after each committed batch.
#[derive(Debug)]
pub(crate) struct ProgressReporter(watch::Sender<u64>);

impl ProgressReporter {
    pub(crate) fn new() -> Self {
        Self(watch::Sender::new(0))
    }

    /// Every event through stream sequence `sequence` has been handled and committed.
    pub(crate) fn handled_through(&self, sequence: u64) {
        self.0.send_if_modified(|current| {
            let advanced = sequence > *current;
            *current = (*current).max(sequence);
            advanced
        });
    }

    pub(crate) fn subscribe(&self) -> Progress {
        Progress(self.0.subscribe())
    }
}

/// The reader's side: a cheap clone to keep in request handlers' state.
#[derive(Debug, Clone)]
pub struct Progress(watch::Receiver<u64>);

impl Progress {
    /// Waits until the consumer has handled stream sequence `sequence`, or `wait` passes, or
    /// the consumer is gone; says whether it got there.
    pub async fn reached(&self, sequence: u64, wait: Duration) -> bool {
        let mut receiver = self.0.clone();
        matches!(tokio::time::timeout(wait, receiver.wait_for(|&handled| handled >= sequence)).await, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_its_sequence_is_handled_and_gives_up_at_its_deadline() {
        let reporter = ProgressReporter::new();
        let progress = reporter.subscribe();
        let waiter = tokio::spawn({
            let progress = progress.clone();
            async move { progress.reached(7, Duration::from_secs(30)).await }
        });
        reporter.handled_through(5);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "5 is not 7 yet");
        reporter.handled_through(9);
        assert!(waiter.await.expect("the waiter runs"), "9 is past 7");
        reporter.handled_through(3);
        assert!(progress.reached(9, Duration::ZERO).await, "progress never goes back: 9 is still reached");

        assert!(!progress.reached(10, Duration::from_millis(20)).await, "never got there");
        drop(reporter);
        assert!(!progress.reached(10, Duration::from_secs(30)).await, "a consumer gone ends the wait at once");
    }
}
