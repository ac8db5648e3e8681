//! Read-your-writes over eventually consistent read models.
//!
//! A write is an event, durable in JetStream before the 202; the read model that a following GET
//! reads is a projection a moment behind. Handlers wait here, briefly, for their own write to
//! show, so that a client that reads right after writing finds what it wrote. Past the deadline
//! the answer goes out anyway: the write stands, and the read follows when the projection does.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long a write waits for its projection before answering regardless.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);

/// Polls `applied` (2 ms, doubling to 50 ms) until it holds or `wait` passes; says which.
pub async fn await_projection<F, Fut>(wait: Duration, mut applied: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(2);
    loop {
        if applied().await {
            return true;
        }
        if Instant::now() + pause > deadline {
            tracing::debug!(?wait, "read model did not catch up in time; answering anyway");
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_once_the_write_shows_and_gives_up_at_the_deadline() {
        let polls = AtomicU32::new(0);
        let shown = await_projection(Duration::from_secs(5), || async { polls.fetch_add(1, Ordering::SeqCst) >= 3 }).await;
        assert!(shown);
        assert_eq!(polls.load(Ordering::SeqCst), 4);

        let started = Instant::now();
        assert!(!await_projection(Duration::from_millis(100), || async { false }).await);
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited before giving up");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
