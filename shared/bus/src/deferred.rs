//! What a handler keeps while its consumer applies one batch: rows it defers so that the
//! batch writes them in one statement, and what it read once for the whole batch.
//!
//! A projection that writes a few rows per event spends most of its time on statements, not
//! on the rows: each costs a round trip to the database's worker thread (SQLite) or server
//! (PostgreSQL). A handler that keeps its rows in a [`Deferred`] during [`Handler::handle`] and
//! writes them in [`Handler::flush`] writes a batch of hundreds in a few statements. The
//! consumer keeps the guarantee: under shared isolation it flushes once, inside the batch's
//! transaction before it commits; under per-event isolation (a batch retried after a failure)
//! after each event inside its savepoint, so a failing write is charged to its own event. An
//! attempt that is abandoned forgets what it deferred ([`Handler::discard`]).
//!
//! A handler that reads what it deferred (a duplicate within the batch, a total it keeps)
//! must look in its [`Deferred`] before the database: the rows are not there yet.
//!
//! [`Handler::handle`]: crate::Handler::handle
//! [`Handler::flush`]: crate::Handler::flush
//! [`Handler::discard`]: crate::Handler::discard

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

/// A handler's per-batch state (see the module docs). One consumer applies one batch at a
/// time, so the lock is never contended; a clone starts empty, so that two consumers built
/// from clones of one handler never share a batch.
#[derive(Debug, Default)]
pub struct Deferred<T> {
    state: Mutex<T>,
}

impl<T: Default> Clone for Deferred<T> {
    fn clone(&self) -> Self {
        Deferred::default()
    }
}

impl<T: Default> Deferred<T> {
    /// Runs `change` on the batch's state.
    pub fn with<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        // A panic inside `change` leaves a state the next attempt resets.
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The state so far, leaving an empty one.
    pub fn take(&self) -> T {
        self.with(std::mem::take)
    }

    /// Forgets the state (the attempt that built it was abandoned, or a new one starts).
    pub fn reset(&self) {
        drop(self.take());
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Deferred<HashMap<K, V>> {
    /// What the batch knows for `key`, else `load`ed now and kept for the rest of the batch: a
    /// read made once per batch rather than per event. A `prepare` that reads many keys at once
    /// fills the map (with `None` for a key it found nothing for, when `V` is an `Option`).
    pub async fn get_or_load<E, Loaded>(&self, key: &K, load: impl FnOnce() -> Loaded) -> Result<V, E>
    where
        Loaded: Future<Output = Result<V, E>>,
    {
        if let Some(known) = self.with(|known| known.get(key).cloned()) {
            return Ok(known);
        }
        let loaded = load().await?;
        self.with(|known| known.insert(key.clone(), loaded.clone()));
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_starts_empty_and_take_leaves_an_empty_state() {
        let deferred: Deferred<Vec<u32>> = Deferred::default();
        deferred.with(|rows| rows.extend([1, 2]));
        assert!(deferred.clone().take().is_empty());
        assert_eq!(deferred.take(), vec![1, 2]);
        assert!(deferred.take().is_empty());
        deferred.with(|rows| rows.push(3));
        deferred.reset();
        assert!(deferred.take().is_empty());
    }

    #[tokio::test]
    async fn a_value_is_loaded_once_per_batch_and_a_failed_load_keeps_nothing() {
        let known: Deferred<HashMap<&str, u32>> = Deferred::default();
        let loaded = known.get_or_load(&"a", || async { Ok::<_, ()>(1) }).await;
        assert_eq!(loaded, Ok(1));
        assert_eq!(known.get_or_load(&"a", || async { Ok::<_, ()>(2) }).await, Ok(1), "kept, not loaded again");
        assert_eq!(known.get_or_load(&"b", || async { Err::<u32, _>("down") }).await, Err("down"));
        assert_eq!(known.get_or_load(&"b", || async { Ok::<_, &str>(3) }).await, Ok(3), "a failed load is retried");
        known.reset();
        assert_eq!(known.get_or_load(&"a", || async { Ok::<_, ()>(4) }).await, Ok(4), "a new batch loads again");
    }
}
