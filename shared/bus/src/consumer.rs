use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message, consumer::pull};
use futures::StreamExt as _;
use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait as _};
use tracing::{Instrument as _, info_span, warn};

use crate::delivery::DeadLetter;
use crate::progress::{Progress, ProgressReporter};
use crate::{Bus, ConsumerConfig, Context, Delivery, Error, Namespace, Outbox, store};

/// Why a handler could not apply an event.
#[derive(Debug)]
pub enum HandleError {
    /// Can never succeed (undecodable, invalid): the message is terminated and recorded in the
    /// dead-letter stream with this reason. A business refusal is an event, not this.
    Rejected { code: String, message: String },
    /// Worth retrying (database busy, a dependency down): nak with backoff.
    Transient(anyhow::Error),
}

impl HandleError {
    pub fn rejected(code: impl Into<String>, message: impl std::fmt::Display) -> HandleError {
        HandleError::Rejected { code: code.into(), message: message.to_string() }
    }
}

impl From<provenant_events::Error> for HandleError {
    fn from(error: provenant_events::Error) -> Self {
        HandleError::rejected(error.code(), error)
    }
}

impl From<sea_orm::DbErr> for HandleError {
    fn from(error: sea_orm::DbErr) -> Self {
        HandleError::Transient(error.into())
    }
}

/// A projection (or any reaction) fed by one durable consumer.
///
/// `handle` runs inside the transaction that also records the event as processed; it must do
/// all its writes through `transaction` and nothing irreversible outside it.
pub trait Handler: Send + Sync + 'static {
    /// Durable consumer name: stable across deployments, unique per stream. Also the key of
    /// this consumer's bookkeeping rows.
    fn name(&self) -> &str;
    /// The stream (context) this consumer reads.
    fn context(&self) -> Context;
    /// Subjects within that stream; empty for all of them.
    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String>;

    /// Whether `handle` does anything with events of `event_type` (an envelope's type). The
    /// others are acknowledged and counted in the checkpoint without being recorded as
    /// processed, nor passed to `prepare` or `handle`: doing nothing twice is harmless, and the
    /// record costs a row each. A consumer whose filter also matches events that others append
    /// to the same subjects (the validator's own verdicts) saves half its rows this way.
    fn handles(&self, event_type: &str) -> bool {
        let _ = event_type;
        true
    }

    fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// Called instead of `handle` for an event id this consumer has processed before (a
    /// redelivery, or a producer re-sending an id after the de-duplication window). Its writes
    /// commit with the batch; the message is acknowledged as a duplicate either way. A handler
    /// whose idempotency key can arrive with a different body records that here for review.
    fn on_duplicate(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> impl Future<Output = Result<(), HandleError>> + Send {
        let _ = (transaction, delivery);
        std::future::ready(Ok(()))
    }

    /// Reads, once for the batch, what each of its events would read alone (see
    /// [`crate::Deferred`]): called before the events of a batch applied under shared isolation
    /// with those of them that decoded; not called under per-event isolation, so `handle` must
    /// still find what it needs without it. A failure abandons the attempt.
    fn prepare(&self, transaction: &DatabaseTransaction, deliveries: &[&Delivery]) -> impl Future<Output = Result<(), HandleError>> + Send {
        let _ = (transaction, deliveries);
        std::future::ready(Ok(()))
    }

    /// Writes what `handle` deferred (see [`crate::Deferred`]) inside `transaction`: once
    /// before a batch commits, or after each event inside its savepoint under per-event
    /// isolation.
    fn flush(&self, transaction: &DatabaseTransaction) -> impl Future<Output = Result<(), HandleError>> + Send {
        let _ = transaction;
        std::future::ready(Ok(()))
    }

    /// Forgets what `prepare` and `handle` kept for the batch: its attempt is abandoned, or a
    /// new one starts.
    fn discard(&self) {}

    /// Whether `handle` writes only this consumer's own store: no appends, no effect anywhere
    /// else, so that applying the log again repeats nothing but the store's rows. Such a
    /// projection is refilled from the start of the log whenever its store lacks events the
    /// server saw it acknowledge: a new or replaced store, one restored from an older backup, or
    /// a fill cut short ([`Consumer::run`]).
    fn is_pure_projection(&self) -> bool {
        false
    }
}

/// Where a fault-injection test makes the consumer die, to prove nothing is lost or doubled.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the handler ran, before the transaction commits: nothing may stay applied.
    BeforeCommit,
    /// After the commit, before the ack: the redelivery must apply nothing twice.
    AfterCommitBeforeAck,
}

/// Counters of one consumer run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    pub applied: u64,
    /// Events of types the handler does not handle ([`Handler::handles`]).
    pub ignored: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub retried: u64,
    /// Fills of a store that lacked events, from the start of the log, before following it
    /// (0 or 1 per run; their events are not counted above).
    pub fills: u64,
}

/// A durable pull consumer bound to one handler and one database.
pub struct Consumer<H: Handler> {
    bus: Bus,
    database: DatabaseConnection,
    handler: H,
    config: ConsumerConfig,
    progress: ProgressReporter,
    #[cfg(feature = "fault-injection")]
    crash_at: Option<CrashPoint>,
}

/// How a batch's events are isolated from each other inside its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// No savepoints; any failure abandons the whole attempt.
    Shared,
    /// A savepoint per event, so a failing event leaves no trace and the others commit.
    PerEvent,
}

enum Outcome {
    Applied,
    Ignored,
    Duplicate,
    Dead { code: String, reason: String, sequence: u64, delivered: i64 },
    Retry { delay: Duration },
}

impl<H: Handler> Consumer<H> {
    pub fn new(bus: Bus, database: DatabaseConnection, handler: H, config: ConsumerConfig) -> Consumer<H> {
        Consumer {
            bus,
            database,
            handler,
            config,
            progress: ProgressReporter::new(),
            #[cfg(feature = "fault-injection")]
            crash_at: None,
        }
    }

    /// How far this consumer has got through its stream, reported after each committed batch:
    /// for request handlers that wait for their own write to be projected.
    pub fn progress(&self) -> Progress {
        self.progress.subscribe()
    }

    /// Makes the next batch die at `point` (the run returns [`Error::InjectedCrash`] without
    /// acking anything, as a killed process would).
    #[cfg(feature = "fault-injection")]
    #[must_use]
    pub fn crash_at(mut self, point: CrashPoint) -> Consumer<H> {
        self.crash_at = Some(point);
        self
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    async fn create_pull_consumer(&self, durable: bool) -> Result<async_nats::jetstream::consumer::PullConsumer, Error> {
        let namespace = self.bus.namespace();
        let name = self.handler.name().to_owned();
        let stream = self
            .bus
            .jetstream()
            .get_stream(namespace.stream(self.handler.context()))
            .await
            .map_err(|error| Error::Consumer { consumer: name.clone(), reason: error.to_string() })?;
        let batch = i64::try_from(self.config.batch_size).unwrap_or(i64::MAX);
        let config = pull::Config {
            durable_name: durable.then(|| name.clone()),
            filter_subjects: self.handler.filter_subjects(namespace),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_wait: self.config.ack_wait(),
            // The server's own bound is one above ours, so our last attempt still reaches the
            // handler and is dead-lettered by us instead of silently dropped by the server.
            max_deliver: self.config.max_deliver + 1,
            max_ack_pending: batch.saturating_mul(4),
            inactive_threshold: if durable { Duration::ZERO } else { Duration::from_secs(60) },
            ..Default::default()
        };
        stream.create_consumer(config).await.map_err(|error| Error::Consumer { consumer: name, reason: error.to_string() })
    }

    async fn messages(&self, consumer: &async_nats::jetstream::consumer::PullConsumer) -> Result<pull::Stream, Error> {
        let name = self.handler.name().to_owned();
        consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|error| Error::Consumer { consumer: name, reason: error.to_string() })
    }

    /// Applies events until `shutdown` resolves, then finishes the batch in hand (its commit
    /// and acks) and returns. Messages prefetched but not started are redelivered later.
    ///
    /// A pure projection ([`Handler::is_pure_projection`]) whose store lacks events first
    /// replays the whole stream into it: the server remembers how far the durable consumer got
    /// in whatever store it wrote before, so a new store, or one restored from an older
    /// backup, would otherwise only see what comes next.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<ConsumerStats, Error> {
        tokio::pin!(shutdown);
        let durable = self.create_pull_consumer(true).await?;
        let filling = self.handler.is_pure_projection() && self.store_lacks_acknowledged_events(&durable).await?;
        if filling {
            // A fill cut short is started again next time: it records its checkpoint only once
            // it is complete.
            metrics::counter!("bus_store_fills_total", "consumer" => self.handler.name().to_owned()).increment(1);
            let filled = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(ConsumerStats { fills: 1, ..ConsumerStats::default() }),
                filled = self.replay() => filled?,
            };
            tracing::info!(
                consumer = self.handler.name(),
                applied = filled.stats.applied,
                through = filled.last_sequence,
                "filled a store that lacked events from the start of the log"
            );
        }
        let mut incoming = self.messages(&durable).await?.fuse();
        let mut stats = ConsumerStats { fills: u64::from(filling), ..ConsumerStats::default() };
        loop {
            let first = tokio::select! {
                biased;
                () = &mut shutdown => break,
                first = incoming.next() => first,
            };
            let Some(first) = first else { break };
            let batch = fill_batch(first, &mut incoming, self.config.batch_size).await;
            let mut messages = Vec::with_capacity(batch.len());
            for item in batch {
                match item {
                    Ok(message) => messages.push(message),
                    // Missing heartbeats and similar are reported while NATS restarts; the
                    // stream reconnects on its own.
                    Err(error) => warn!(consumer = self.handler.name(), %error, "pull consumer hiccup"),
                }
            }
            if !messages.is_empty() {
                self.apply_batch(messages, true, &mut stats).await?;
            }
        }
        Ok(stats)
    }

    /// Whether the server saw this consumer acknowledge events that its store does not account
    /// for. The server's ack floor is read before the store's checkpoint: a replica making
    /// progress in between can then only cause a needless replay, never a missed one.
    async fn store_lacks_acknowledged_events(&self, durable: &async_nats::jetstream::consumer::PullConsumer) -> Result<bool, Error> {
        let acknowledged = durable.get_info().await.map_err(Error::nats)?.ack_floor.stream_sequence;
        let accounted = store::read_checkpoint(&self.database, self.handler.name()).await?.unwrap_or(0);
        Ok(acknowledged > accounted)
    }

    /// Applies the whole of the handler's stream from the first event into this consumer's
    /// database (fresh, or already holding part of it) and returns once it holds everything
    /// the stream held when the replay started. This is how a projection is rebuilt.
    ///
    /// Only a complete replay moves the store's checkpoint: the replay's consumer is not
    /// durable, so a replay cut short must be started again rather than trusted.
    pub async fn replay(&self) -> Result<Replay, Error> {
        let namespace = self.bus.namespace();
        let stream_name = namespace.stream(self.handler.context());
        let mut stream = self.bus.jetstream().get_stream(&stream_name).await.map_err(Error::nats)?;
        let last = stream.info().await.map_err(Error::nats)?.state.last_sequence;
        let mut stats = ConsumerStats::default();
        if last == 0 {
            return Ok(Replay { stats, last_sequence: 0 });
        }
        let mut consumer = self.create_pull_consumer(false).await?;
        // The stream holds events, but maybe none this consumer's filter matches: nothing would
        // ever arrive.
        if consumer.info().await.map_err(Error::nats)?.num_pending == 0 {
            return Ok(Replay { stats, last_sequence: last });
        }
        let mut incoming = self.messages(&consumer).await?.fuse();
        // Events set back for redelivery (a transient failure: another projection filling beside
        // this one has not written what this event needs yet) must still be applied before the
        // replay may end, although the stream's end has been seen.
        let mut awaiting: BTreeSet<u64> = BTreeSet::new();
        let mut caught_up = false;
        let mut accounted: Option<Accounted> = None;
        while let Some(first) = incoming.next().await {
            let batch = fill_batch(first, &mut incoming, self.config.batch_size).await;
            let mut messages = Vec::with_capacity(batch.len());
            for message in batch.into_iter().flatten() {
                let info = message.info().map_err(Error::nats)?;
                caught_up |= info.stream_sequence >= last || info.pending == 0;
                awaiting.remove(&info.stream_sequence);
                messages.push(message);
            }
            let settled = self.apply_batch(messages, false, &mut stats).await?;
            awaiting.extend(settled.set_back);
            accounted = accounted.max(settled.accounted);
            if caught_up && awaiting.is_empty() {
                if let Some(Accounted { sequence, event_id }) = accounted {
                    store::record_checkpoint(&self.database, self.handler.name(), sequence, &event_id).await?;
                }
                return Ok(Replay { stats, last_sequence: last });
            }
        }
        Err(Error::Consumer {
            consumer: self.handler.name().to_owned(),
            reason: "the replay's messages ended before it caught up".to_owned(),
        })
    }

    /// [`Self::apply_and_acknowledge`], timed.
    async fn apply_batch(&self, messages: Vec<Message>, live: bool, stats: &mut ConsumerStats) -> Result<Settled, Error> {
        let (started, events) = (std::time::Instant::now(), messages.len());
        let applied = self.apply_and_acknowledge(messages, live, stats).await;
        // How big batches are and what they cost: the first thing to read when a consumer is slow.
        tracing::debug!(consumer = self.handler.name(), events, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "batch applied");
        applied
    }

    /// Applies a batch (retrying it event by event when it fails as a whole) and settles each
    /// message with the server: ack, delayed redelivery or dead letter.
    async fn apply_and_acknowledge(&self, messages: Vec<Message>, live: bool, stats: &mut ConsumerStats) -> Result<Settled, Error> {
        // Nearly every batch applies cleanly, so it is first tried without savepoints (two
        // statements fewer per event); only a batch with a failing event pays for isolating
        // each event in its own savepoint.
        let Committed { outcomes, accounted } = match self.attempt(&messages, Isolation::Shared, live).await? {
            Some(committed) => committed,
            None => match self.attempt(&messages, Isolation::PerEvent, live).await? {
                Some(committed) => committed,
                None => {
                    self.retry_all(&messages, 1).await;
                    let set_back = messages.iter().filter_map(|message| Some(message.info().ok()?.stream_sequence)).collect();
                    return Ok(Settled { set_back, accounted: None });
                }
            },
        };
        let last = messages.last().and_then(|message| message.info().ok()).map(|info| (info.stream_sequence, info.pending));
        // Committed: whoever waits for one of these events to be projected may read it now.
        if let Some((sequence, _)) = last {
            self.progress.handled_through(sequence);
        }
        let mut set_back = Vec::new();
        for (message, outcome) in messages.iter().zip(outcomes) {
            if let (Outcome::Retry { .. }, Ok(info)) = (&outcome, message.info()) {
                set_back.push(info.stream_sequence);
            }
            self.settle(message, outcome, live, stats).await;
        }
        // Consumer lag, as the server counted it when it sent the batch's last message.
        if let Some((_, pending)) = last {
            metrics::gauge!("bus_consumer_pending", "consumer" => self.handler.name().to_owned()).set(pending as f64);
        }
        Ok(Settled { set_back, accounted })
    }

    /// Applies the batch in one transaction and commits it, with the store's checkpoint when
    /// `live`. `None` when the attempt was abandoned (rolled back): a handler failed under
    /// shared isolation, or the database did.
    async fn attempt(&self, messages: &[Message], isolation: Isolation, live: bool) -> Result<Option<Committed>, Error> {
        // Nothing an abandoned attempt kept may leak into this one.
        self.handler.discard();
        let transaction = match self.database.begin().await {
            Ok(transaction) => transaction,
            Err(error) => {
                warn!(consumer = self.handler.name(), %error, "failed to begin transaction, retrying batch");
                return Ok(None);
            }
        };
        // What the handler appends while applying this attempt is confirmed before it commits.
        let outbox = Outbox::default();
        let deliveries: Vec<_> = messages.iter().map(|message| Delivery::parse(message, &outbox)).collect();
        let identities: Vec<Accounted> = deliveries
            .iter()
            .map(|delivery| match delivery {
                Ok(delivery) => Accounted { sequence: delivery.stream_sequence, event_id: delivery.envelope.event_id.to_string() },
                Err((sequence, _, _)) => Accounted { sequence: *sequence, event_id: String::new() },
            })
            .collect();
        // The decoded events of types the handler handles; the others are only acknowledged.
        let handled: Vec<&Delivery> =
            deliveries.iter().flatten().filter(|delivery| self.handler.handles(&delivery.envelope.event_type)).collect();
        // Under shared isolation the whole batch is recorded as processed in one statement; the
        // events it reports as new are applied, the others are redeliveries.
        let mut newly_recorded = match isolation {
            Isolation::PerEvent => None,
            Isolation::Shared => {
                let events: Vec<(String, u64)> =
                    handled.iter().map(|delivery| (delivery.envelope.event_id.to_string(), delivery.stream_sequence)).collect();
                match store::record_processed_batch(&transaction, self.handler.name(), &events).await {
                    Ok(recorded) => Some(recorded),
                    Err(error) => {
                        warn!(consumer = self.handler.name(), %error, "failed to record the batch as processed, retrying it");
                        return Ok(None);
                    }
                }
            }
        };
        if isolation == Isolation::Shared
            && let Err(failure) = self.handler.prepare(&transaction, &handled).await
        {
            warn!(consumer = self.handler.name(), failure = ?failure, "failed to prepare the batch, retrying it event by event");
            return Ok(None);
        }
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut halted = false;
        for delivery in deliveries {
            if halted {
                // Keep per-aggregate order: nothing after a transient failure is applied now.
                outcomes.push(Outcome::Retry { delay: self.config.backoff(1) });
                continue;
            }
            let outcome = match delivery {
                Err((sequence, delivered, error)) => {
                    Outcome::Dead { code: error.code().to_owned(), reason: error.to_string(), sequence, delivered }
                }
                Ok(delivery) if !self.handler.handles(&delivery.envelope.event_type) => Outcome::Ignored,
                Ok(delivery) => {
                    // `remove`, so a message delivered twice within one batch is applied once.
                    let recorded_now = newly_recorded.as_mut().map(|recorded| recorded.remove(&delivery.envelope.event_id.to_string()));
                    match self.apply_one(&transaction, &delivery, isolation, recorded_now).await {
                        Some(outcome) => outcome,
                        None => return Ok(None),
                    }
                }
            };
            halted = matches!(outcome, Outcome::Retry { .. });
            outcomes.push(outcome);
        }
        // Under per-event isolation each event flushed its own writes.
        if isolation == Isolation::Shared
            && let Err(failure) = self.handler.flush(&transaction).await
        {
            // Shared isolation cannot tell whose write failed: the per-event attempt will.
            warn!(consumer = self.handler.name(), failure = ?failure, "the batch's deferred writes failed, retrying it");
            return Ok(None);
        }
        if let Err(failure) = outbox.confirm().await {
            // Shared isolation cannot tell whose append failed: the per-event attempt will.
            warn!(consumer = self.handler.name(), failure = ?failure, "an append of the batch failed, retrying it");
            return Ok(None);
        }
        let accounted = identities
            .into_iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| !matches!(outcome, Outcome::Retry { .. }))
            .map(|(identity, _)| identity)
            .max();
        if live
            && let Some(Accounted { sequence, event_id }) = &accounted
            && let Err(error) = store::record_checkpoint(&transaction, self.handler.name(), *sequence, event_id).await
        {
            warn!(consumer = self.handler.name(), %error, "failed to record checkpoint, retrying batch");
            return Ok(None);
        }
        #[cfg(feature = "fault-injection")]
        if self.crash_at == Some(CrashPoint::BeforeCommit) {
            drop(transaction);
            return Err(Error::InjectedCrash("before commit"));
        }
        if let Err(error) = transaction.commit().await {
            warn!(consumer = self.handler.name(), %error, "failed to commit batch, retrying it");
            return Ok(None);
        }
        #[cfg(feature = "fault-injection")]
        if self.crash_at == Some(CrashPoint::AfterCommitBeforeAck) {
            return Err(Error::InjectedCrash("after commit, before ack"));
        }
        Ok(Some(Committed { outcomes, accounted }))
    }

    /// Applies one event; `None` abandons the attempt (shared isolation cannot undo a failed
    /// event alone). `recorded_now` is the batch's bookkeeping under shared isolation: `true`
    /// when this attempt recorded the event as processed, `false` when it had been before;
    /// `None` when the event records itself (per-event isolation).
    async fn apply_one(
        &self,
        transaction: &DatabaseTransaction,
        delivery: &Delivery,
        isolation: Isolation,
        recorded_now: Option<bool>,
    ) -> Option<Outcome> {
        let span = info_span!(
            "handle_event",
            consumer = self.handler.name(),
            event_type = %delivery.envelope.event_type,
            event_id = %delivery.envelope.event_id,
            subject = %delivery.subject,
            stream_sequence = delivery.stream_sequence,
            delivered = delivery.delivered,
        );
        provenant_telemetry::propagation::continue_trace(
            &span,
            delivery.envelope.traceparent.as_deref(),
            delivery.envelope.tracestate.as_deref(),
        );
        async {
            let savepoint = match isolation {
                Isolation::Shared => None,
                Isolation::PerEvent => match transaction.begin().await {
                    Ok(savepoint) => Some(savepoint),
                    Err(error) => return Some(self.transient(delivery, error.into())),
                },
            };
            let scope = savepoint.as_ref().unwrap_or(transaction);
            let event_id = delivery.envelope.event_id.to_string();
            let recorded = match recorded_now {
                Some(recorded) => Ok(recorded),
                None => store::record_processed(scope, self.handler.name(), &event_id, delivery.stream_sequence).await,
            };
            let (result, done) = match recorded {
                Ok(false) => (self.handler.on_duplicate(scope, delivery).await, Outcome::Duplicate),
                Ok(true) => (self.handler.handle(scope, delivery).await, Outcome::Applied),
                Err(error) => (Err(error.into()), Outcome::Duplicate),
            };
            let result = match (result, &savepoint) {
                // Per-event isolation charges a failed write or append to the event that made it.
                (Ok(()), Some(_)) => match self.handler.flush(scope).await {
                    Ok(()) => delivery.outbox.confirm().await,
                    Err(failure) => Err(failure),
                },
                (result, _) => result,
            };
            if result.is_err() {
                delivery.outbox.discard();
                self.handler.discard();
            }
            let Some(savepoint) = savepoint else {
                return result.is_ok().then_some(done);
            };
            match result {
                Ok(()) => match savepoint.commit().await {
                    Ok(()) => Some(done),
                    Err(error) => {
                        self.handler.discard();
                        Some(self.transient(delivery, error.into()))
                    }
                },
                Err(failure) => {
                    // Undo this event's writes only; the rest of the batch stands.
                    let _ = savepoint.rollback().await;
                    Some(match failure {
                        HandleError::Rejected { code, message } => {
                            Outcome::Dead { code, reason: message, sequence: delivery.stream_sequence, delivered: delivery.delivered }
                        }
                        HandleError::Transient(error) => self.transient(delivery, error),
                    })
                }
            }
        }
        .instrument(span)
        .await
    }

    fn transient(&self, delivery: &Delivery, error: anyhow::Error) -> Outcome {
        if delivery.delivered >= self.config.max_deliver {
            return Outcome::Dead {
                code: EXHAUSTED.to_owned(),
                reason: format!("gave up after {} deliveries: {error:#}", delivery.delivered),
                sequence: delivery.stream_sequence,
                delivered: delivery.delivered,
            };
        }
        warn!(error = format!("{error:#}"), delivered = delivery.delivered, "transient failure, will retry");
        Outcome::Retry { delay: self.config.backoff(delivery.delivered) }
    }

    async fn retry_all(&self, messages: &[Message], delivered: i64) {
        for message in messages {
            let _ = message.ack_with(AckKind::Nak(Some(self.config.backoff(delivered)))).await;
        }
    }

    async fn settle(&self, message: &Message, outcome: Outcome, live: bool, stats: &mut ConsumerStats) {
        let consumer = self.handler.name().to_owned();
        let result = match outcome {
            Outcome::Applied => {
                stats.applied += 1;
                metrics::counter!("bus_events_applied_total", "consumer" => consumer).increment(1);
                message.ack().await
            }
            Outcome::Ignored => {
                stats.ignored += 1;
                metrics::counter!("bus_events_ignored_total", "consumer" => consumer).increment(1);
                message.ack().await
            }
            Outcome::Duplicate => {
                stats.duplicates += 1;
                metrics::counter!("bus_events_duplicate_total", "consumer" => consumer).increment(1);
                message.ack().await
            }
            Outcome::Retry { delay } => {
                stats.retried += 1;
                metrics::counter!("bus_redeliveries_total", "consumer" => self.handler.name().to_owned()).increment(1);
                message.ack_with(AckKind::Nak(Some(delay))).await
            }
            Outcome::Dead { code, reason, sequence, delivered } => {
                stats.dead_lettered += 1;
                // A replay does not record again what the live consumer rejected (a rejection
                // does not depend on when it is made), but it does record an event it gave up
                // on after transient failures: that depends on the moment, so the live consumer
                // may have applied it, and the filled store would lack it unseen.
                if live || code == EXHAUSTED {
                    // Record first, terminate after: a crash in between re-records the same
                    // dead letter, which its message id de-duplicates.
                    if let Err(error) = self.record_dead_letter(message, &code, &reason, sequence, delivered).await {
                        warn!(%error, "failed to record dead letter, will retry the message");
                        let _ = message.ack_with(AckKind::Nak(Some(self.config.backoff(delivered)))).await;
                        return;
                    }
                    warn!(consumer = self.handler.name(), code, reason, sequence, "dead-lettered a message");
                }
                metrics::counter!("bus_dead_letters_total", "consumer" => self.handler.name().to_owned(), "code" => code).increment(1);
                message.ack_with(AckKind::Term).await
            }
        };
        if let Err(error) = result {
            // The server redelivers after ack_wait; the processed-events table absorbs it.
            warn!(consumer = self.handler.name(), %error, "failed to acknowledge a message");
        }
    }

    async fn record_dead_letter(&self, message: &Message, code: &str, reason: &str, sequence: u64, delivered: i64) -> Result<(), Error> {
        let consumer = self.handler.name();
        let subject = self.bus.namespace().dead_letter_subject(consumer)?;
        let headers = DeadLetter::headers_for(message, consumer, code, reason, sequence, delivered);
        let stream = message.info().map(|info| info.stream.to_owned()).unwrap_or_default();
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(format!("dead-{consumer}-{stream}-{sequence}"));
        let ack = self
            .bus
            .jetstream()
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|source| Error::Publish { subject: subject.clone(), source })?;
        ack.await.map_err(|source| Error::Publish { subject, source })?;
        Ok(())
    }
}

/// The event with the highest stream sequence that a committed batch lets its store account
/// for: applied, a duplicate, or dead-lettered, but not set back for redelivery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Accounted {
    sequence: u64,
    /// Empty for a message that did not decode.
    event_id: String,
}

/// A committed attempt: each message's outcome, and what the store now accounts for.
struct Committed {
    outcomes: Vec<Outcome>,
    accounted: Option<Accounted>,
}

/// A batch settled with the server: the sequences set back for redelivery, and what the store
/// now accounts for.
struct Settled {
    set_back: Vec<u64>,
    accounted: Option<Accounted>,
}

/// The dead-letter code of an event given up on after `max_deliver` transient failures.
const EXHAUSTED: &str = "delivery.exhausted";

/// What a replay applied, and up to which stream sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub stats: ConsumerStats,
    pub last_sequence: u64,
}

/// How long a batch waits for more messages while the server says more are pending for the
/// consumer. One read of the socket often holds a fraction of what the server sent, and each
/// batch costs a commit (and, on SQLite, a turn at the file's one write lock): a busy consumer
/// should commit full batches. An idle one never waits, since nothing is pending.
const BATCH_LINGER: Duration = Duration::from_millis(5);

/// A batch of at most `size` items: `first`, what is ready, and, while the server reports more
/// pending, what arrives within [`BATCH_LINGER`].
async fn fill_batch<S>(first: S::Item, incoming: &mut S, size: usize) -> Vec<S::Item>
where
    S: futures::Stream<Item = Result<Message, pull::MessagesError>> + futures::stream::FusedStream + Unpin,
{
    use futures::FutureExt as _;
    let deadline = tokio::time::Instant::now() + BATCH_LINGER;
    let mut batch = vec![first];
    while batch.len() < size {
        let more_pending = matches!(batch.last(), Some(Ok(message)) if message.info().is_ok_and(|info| info.pending > 0));
        let next = if more_pending {
            tokio::time::timeout_at(deadline, incoming.next()).await.ok().flatten()
        } else {
            incoming.next().now_or_never().flatten()
        };
        match next {
            Some(item) => batch.push(item),
            None => break,
        }
    }
    batch
}

/// Runs `consumer` until `shutdown` fires, and fires `shutdown` when the consumer stops on its
/// own: a service whose consumer died must not go on serving stale reads.
pub async fn run_until_stopped<H: Handler>(consumer: Consumer<H>, shutdown: provenant_runtime::Shutdown) -> Result<ConsumerStats, Error> {
    let outcome = consumer.run(shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    outcome
}
