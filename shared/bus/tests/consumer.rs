//! Durable consumers against a real NATS JetStream server and real databases: exactly-once
//! effect across crashes, NATS restarts, poison messages, retries and replays.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt as _;
use provenant_bus::{
    Bus, Consumer, ConsumerConfig, ConsumerStats, Context, CrashPoint, DeadLetter, Deferred, Delivery, Envelope, Error, Expect,
    HandleError, Handler, Namespace,
};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{DatanetCreated, DatanetUpdated, SnapshotSealed};
use provenant_runtime::Shutdown;
use provenant_test_support::{Backend, NatsServer};
use sea_orm::ConnectionTrait as _;

const WAIT: Duration = Duration::from_secs(20);

/// Runs a consumer in the background until the returned token is cancelled.
fn spawn_consumer(
    bus: &provenant_bus::Bus,
    database: &sea_orm::DatabaseConnection,
    name: &str,
) -> (Shutdown, tokio::task::JoinHandle<Result<ConsumerStats, Error>>) {
    spawn(Consumer::new(bus.clone(), database.clone(), CountingProjection::new(name), fast_consumer()))
}

/// Runs `consumer` in the background until the returned token is cancelled.
fn spawn<H: Handler>(consumer: Consumer<H>) -> (Shutdown, tokio::task::JoinHandle<Result<ConsumerStats, Error>>) {
    let shutdown = Shutdown::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { consumer.run(async move { token.cancelled().await }).await });
    (shutdown, task)
}

async fn stop(shutdown: Shutdown, task: tokio::task::JoinHandle<Result<ConsumerStats, Error>>) -> ConsumerStats {
    shutdown.cancel();
    task.await.expect("consumer task").expect("consumer ran cleanly")
}

/// Runs `consumer` until the server has nothing pending for it, then stops it. Not for a run
/// that fills a store: its durable consumer has nothing pending while the fill goes on.
async fn run_until_drained<H: Handler>(bus: &Bus, consumer: Consumer<H>) -> ConsumerStats {
    let name = consumer.handler().name().to_owned();
    let (shutdown, task) = spawn(consumer);
    eventually(WAIT, "the consumer caught up", || async { drained(bus, &name).await }).await;
    stop(shutdown, task).await
}

fn all_once(ids: &[String]) -> Vec<(String, i64)> {
    ids.iter().map(|id| (id.clone(), 1)).collect()
}

async fn crash_then_recover(backend: Backend, point: CrashPoint) {
    let bus = shared_bus().await;
    let (test_database, database) = database(backend).await;
    let ids = ids("crash", 5);
    publish_created(&bus, &ids).await;

    let crashing = Consumer::new(bus.clone(), database.clone(), CountingProjection::new("crashy"), fast_consumer()).crash_at(point);
    let outcome = crashing.run(std::future::pending()).await;
    assert!(matches!(outcome, Err(Error::InjectedCrash(_))), "{outcome:?}");
    // The crash ends the first batch, which holds some or all of the five events.
    let after_crash = counts(&database).await;
    match point {
        CrashPoint::BeforeCommit => assert!(after_crash.is_empty(), "nothing may survive a crash before commit"),
        CrashPoint::AfterCommitBeforeAck => {
            assert!(!after_crash.is_empty(), "the batch committed before the crash");
            assert!(after_crash.iter().all(|(_, applied)| *applied == 1), "{after_crash:?}");
        }
    }
    let committed_before_crash = after_crash.len() as u64;

    // The restarted consumer gets the unacked messages again after ack_wait.
    let (shutdown, task) = spawn_consumer(&bus, &database, "crashy");
    eventually(WAIT, "redelivery drained", || async { drained(&bus, "crashy").await && counts(&database).await.len() == 5 }).await;
    let stats = stop(shutdown, task).await;

    assert_eq!(counts(&database).await, all_once(&ids), "each event applied exactly once");
    assert_eq!((stats.applied, stats.duplicates), (5 - committed_before_crash, committed_before_crash), "redeliveries are recognised");
    assert_eq!(provenant_bus::store::processed_count(&database, "crashy").await.expect("count"), 5);
    test_database.drop_database().await.expect("drop");
}

#[tokio::test]
async fn a_consumer_killed_after_commit_before_ack_is_redelivered_and_applies_nothing_twice() {
    for backend in Backend::ALL {
        crash_then_recover(backend, CrashPoint::AfterCommitBeforeAck).await;
    }
}

#[tokio::test]
async fn a_consumer_killed_before_commit_applies_the_events_exactly_once_after_restart() {
    for backend in Backend::ALL {
        crash_then_recover(backend, CrashPoint::BeforeCommit).await;
    }
}

#[tokio::test]
async fn a_poison_message_ends_in_the_dead_letter_stream_with_its_reason_and_the_consumer_keeps_going() {
    let bus = shared_bus().await;
    let (_test_database, database) = database(Backend::Sqlite).await;
    let before = ids("before", 2);
    publish_created(&bus, &before).await;

    // An external producer's message without an envelope, and one whose payload is garbage.
    let subject = bus.namespace().subject(Context::Datanet, "datanet", "poison-1").expect("subject");
    bus.jetstream().publish(subject, Bytes::from_static(b"no headers")).await.expect("sent").await.expect("stored");
    let valid = created("poison-2", "x");
    let envelope = Envelope::new(&valid, "external");
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in envelope.headers() {
        headers.insert(name, value.as_str());
    }
    let subject = bus.namespace().subject(Context::Datanet, "datanet", "poison-2").expect("subject");
    bus.jetstream()
        .publish_with_headers(subject, headers, Bytes::from_static(&[0xff, 0xff, 0xff]))
        .await
        .expect("sent")
        .await
        .expect("stored");
    let after = ids("after", 2);
    publish_created(&bus, &after).await;

    let (shutdown, task) = spawn_consumer(&bus, &database, "poisoned");
    eventually(WAIT, "all applied", || async { drained(&bus, "poisoned").await && counts(&database).await.len() == 4 }).await;
    let stats = stop(shutdown, task).await;
    assert_eq!(stats.dead_lettered, 2);
    let mut expected = all_once(&after);
    expected.extend(all_once(&before));
    expected.sort();
    assert_eq!(counts(&database).await, expected);

    let letters = dead_letters(&bus, 2).await;
    let codes: Vec<&str> = letters.iter().map(|letter| letter.reason_code.as_str()).collect();
    assert_eq!(codes, ["envelope.missing_header", "event.undecodable"]);
    assert!(letters.iter().all(|letter| letter.consumer == "poisoned" && !letter.reason.is_empty()));
    assert_eq!(letters[1].payload.as_ref(), [0xff, 0xff, 0xff], "the original bytes are kept");
    assert_eq!(letters[1].event_id(), Some(envelope.event_id.to_string().as_str()));
}

/// [`CountingProjection`] that handles only `DatanetCreated`: its `handle` would refuse the
/// other events on its subjects as undecodable.
struct CreatedOnly(CountingProjection);

impl Handler for CreatedOnly {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn context(&self) -> Context {
        self.0.context()
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        self.0.filter_subjects(namespace)
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == DatanetCreated::TYPE
    }

    async fn handle(&self, transaction: &sea_orm::DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        self.0.handle(transaction, delivery).await
    }

    fn is_pure_projection(&self) -> bool {
        self.0.is_pure_projection()
    }
}

#[tokio::test]
async fn events_a_handler_does_not_handle_are_acknowledged_and_checkpointed_without_a_processed_row() {
    for backend in Backend::ALL {
        let bus = shared_bus().await;
        let (test_database, database) = database(backend).await;
        let created_ids = ids("ignored", 3);
        publish_created(&bus, &created_ids).await;
        // An update of each, then a poison message of a handled type, which sends the batch down
        // the per-event path, then one more update: the stream's last event is one to ignore.
        for id in &created_ids {
            let event = DatanetUpdated { datanet_id: id.clone(), ..Default::default() };
            bus.publish(&Envelope::new(&event, bus.producer()), &event, Expect::Any).await.expect("publishes");
        }
        let poison = created("ignored-poison", "x");
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in Envelope::new(&poison, "external").headers() {
            headers.insert(name, value.as_str());
        }
        let subject = bus.namespace().subject(Context::Datanet, "datanet", "ignored-poison").expect("subject");
        bus.jetstream().publish_with_headers(subject, headers, Bytes::from_static(&[0xff])).await.expect("sent").await.expect("stored");
        let last = DatanetUpdated { datanet_id: created_ids[0].clone(), ..Default::default() };
        bus.publish(&Envelope::new(&last, bus.producer()), &last, Expect::Any).await.expect("publishes");

        let consumer =
            || Consumer::new(bus.clone(), database.clone(), CreatedOnly(CountingProjection::pure("created-only")), fast_consumer());
        let stats = run_until_drained(&bus, consumer()).await;
        assert_eq!(counts(&database).await, all_once(&created_ids), "{backend:?}");
        assert_eq!((stats.applied, stats.ignored, stats.dead_lettered), (3, 4, 1), "{backend:?}: {stats:?}");
        assert_eq!(provenant_bus::store::processed_count(&database, "created-only").await.expect("count"), 3, "{backend:?}");
        // The checkpoint covers the ignored events: a pure projection restarted over the same
        // store finds nothing missing, so it does not fill it again from the log.
        let restarted = run_until_drained(&bus, consumer()).await;
        assert_eq!(restarted, ConsumerStats::default(), "{backend:?}");
        test_database.drop_database().await.expect("drop");
    }
}

async fn dead_letters(bus: &provenant_bus::Bus, expected: usize) -> Vec<DeadLetter> {
    let stream = bus.jetstream().get_stream(bus.namespace().dead_letter_stream()).await.expect("dead-letter stream");
    let consumer = stream.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await.expect("reader");
    let mut messages = consumer.messages().await.expect("messages").take(expected);
    let mut letters = Vec::new();
    while let Some(message) = tokio::time::timeout(WAIT, messages.next()).await.expect("dead letter arrives") {
        let message = message.expect("message");
        letters.push(DeadLetter::from_message(message.headers.as_ref(), message.payload.clone()));
    }
    letters
}

#[tokio::test]
async fn a_transient_failure_is_retried_with_backoff_then_dead_lettered_when_delivery_is_exhausted() {
    let bus = shared_bus().await;
    let (_test_database, database) = database(Backend::Sqlite).await;
    let failing = created("flaky-1", "fail-transiently");
    bus.publish(&Envelope::new(&failing, "test"), &failing, Expect::NoEvents).await.expect("published");
    let fine = ids("fine", 1);
    publish_created(&bus, &fine).await;

    let (shutdown, task) = spawn_consumer(&bus, &database, "flaky");
    eventually(WAIT, "gave up on the failing event", || async { drained(&bus, "flaky").await && counts(&database).await.len() == 1 }).await;
    let stats = stop(shutdown, task).await;
    assert_eq!(stats.dead_lettered, 1);
    assert!(stats.retried >= 3, "max_deliver 4 means three retries: {stats:?}");
    assert_eq!(counts(&database).await, all_once(&fine));
    let letters = dead_letters(&bus, 1).await;
    assert_eq!(letters[0].reason_code, "delivery.exhausted");
    assert_eq!(letters[0].deliveries, 4);
}

/// An event a replay gives up on after transient failures is recorded in the dead-letter
/// stream as the live consumer would record it: whether it fails depends on the moment, so the
/// live store may hold it while the filled one does not.
#[tokio::test]
async fn an_event_a_replay_gives_up_on_is_recorded_in_the_dead_letter_stream() {
    let bus = shared_bus().await;
    let (handle, store) = database(Backend::Sqlite).await;
    let failing = created("flaky-in-replay", "fail-transiently");
    bus.publish(&Envelope::new(&failing, "test"), &failing, Expect::NoEvents).await.expect("published");
    let fine = ids("fine", 2);
    publish_created(&bus, &fine).await;
    let consumer = Consumer::new(bus.clone(), store.clone(), CountingProjection::new("replay-gives-up"), fast_consumer());
    let replay = tokio::time::timeout(WAIT, consumer.replay()).await.expect("returns").expect("replays");
    assert_eq!((replay.stats.applied, replay.stats.dead_lettered), (2, 1), "{:?}", replay.stats);
    assert_eq!(counts(&store).await, all_once(&fine));
    let letters = dead_letters(&bus, 1).await;
    assert_eq!((letters[0].reason_code.as_str(), letters[0].deliveries), ("delivery.exhausted", 4));
    handle.drop_database().await.expect("drop");
}

#[tokio::test]
async fn events_published_across_a_nats_restart_are_all_applied_exactly_once() {
    let mut server = NatsServer::start().expect("own nats server");
    let bus = bus_on(&server.url()).await;
    let (_test_database, database) = database(Backend::Sqlite).await;
    let first = ids("first", 10);
    publish_created(&bus, &first).await;
    let (shutdown, task) = spawn_consumer(&bus, &database, "survivor");
    eventually(WAIT, "first half applied", || async { counts(&database).await.len() == 10 }).await;

    server.restart().expect("restarts on the same port and store");
    eventually(WAIT, "client reconnected", || async { bus.is_connected() }).await;
    let second = ids("second", 10);
    publish_created(&bus, &second).await;
    eventually(WAIT, "second half applied", || async { drained(&bus, "survivor").await && counts(&database).await.len() == 20 }).await;
    stop(shutdown, task).await;

    let mut expected = all_once(&first);
    expected.extend(all_once(&second));
    assert_eq!(counts(&database).await, expected);
}

#[tokio::test]
async fn replaying_the_stream_into_a_fresh_database_rebuilds_the_same_rows() {
    for backend in Backend::ALL {
        let bus = shared_bus().await;
        let (live_database_handle, live) = database(backend).await;
        let ids = ids("replay", 30);
        publish_created(&bus, &ids).await;
        let (shutdown, task) = spawn_consumer(&bus, &live, "replayable");
        eventually(WAIT, "live projection caught up", || async { drained(&bus, "replayable").await }).await;
        stop(shutdown, task).await;

        let (rebuilt_database_handle, rebuilt) = database(backend).await;
        let replay = Consumer::new(bus.clone(), rebuilt.clone(), CountingProjection::new("replayable"), fast_consumer())
            .replay()
            .await
            .expect("replays");
        assert_eq!(replay.stats.applied, 30);
        assert_eq!(counts(&rebuilt).await, counts(&live).await);
        assert_eq!(counts(&rebuilt).await, all_once(&ids));

        // Replaying again into the same database changes nothing: every event is known.
        let again = Consumer::new(bus.clone(), rebuilt.clone(), CountingProjection::new("replayable"), fast_consumer())
            .replay()
            .await
            .expect("replays again");
        assert_eq!((again.stats.applied, again.stats.duplicates), (0, 30));
        assert_eq!(counts(&rebuilt).await, all_once(&ids));
        live_database_handle.drop_database().await.expect("drop");
        rebuilt_database_handle.drop_database().await.expect("drop");
    }
}

/// A projection given a new store (a deployment that moved it) is filled from the start of the
/// log before it follows it, although the server remembers how far its durable consumer got.
#[tokio::test]
async fn a_new_store_is_filled_from_the_start_of_the_log_then_followed() {
    let bus = shared_bus().await;
    let (old_handle, old_store) = database(Backend::Sqlite).await;
    let before = ids("moved", 10);
    publish_created(&bus, &before).await;
    // The stream's last events are not the projection's: its ack floor must still not read as
    // ahead of a store that holds all of its own.
    let publish_unrelated = |id: &'static str| {
        let bus = bus.clone();
        async move {
            let sealed = mirror_of(id);
            bus.publish(&Envelope::new(&sealed, "test"), &sealed, Expect::NoEvents).await.expect("published");
        }
    };
    publish_unrelated("snapshot-1").await;
    let moving = |store: &sea_orm::DatabaseConnection| {
        Consumer::new(bus.clone(), store.clone(), CountingProjection::pure("moving"), fast_consumer())
    };
    assert_eq!(run_until_drained(&bus, moving(&old_store)).await.fills, 0, "a first deployment has nothing to fill");

    let (new_handle, new_store) = database(Backend::Sqlite).await;
    let (shutdown, task) = spawn(moving(&new_store));
    let after = ids("after", 5);
    publish_created(&bus, &after).await;
    publish_unrelated("snapshot-2").await;
    eventually(WAIT, "the new store holds the whole log", || async { counts(&new_store).await.len() == 15 }).await;
    assert_eq!(stop(shutdown, task).await.fills, 1);
    assert_eq!(run_until_drained(&bus, moving(&new_store)).await.fills, 0, "a store that holds the log is not filled again");
    let mut expected = all_once(&before);
    expected.extend(all_once(&after));
    expected.sort();
    assert_eq!(counts(&new_store).await, expected, "each event once");
    old_handle.drop_database().await.expect("drop");
    new_handle.drop_database().await.expect("drop");
}

/// A store restored from a backup taken before the last events were applied lacks them,
/// although it holds others: it is refilled from the log before it follows it.
#[tokio::test]
async fn a_store_restored_from_an_older_backup_is_refilled_before_it_follows_the_log() {
    let bus = shared_bus().await;
    let restored = |store: &sea_orm::DatabaseConnection| {
        Consumer::new(bus.clone(), store.clone(), CountingProjection::pure("restored"), fast_consumer())
    };
    let (handle, store) = database(Backend::Sqlite).await;
    let early = ids("early", 5);
    publish_created(&bus, &early).await;
    run_until_drained(&bus, restored(&store)).await;

    let backup_path = handle.url.trim_start_matches("sqlite://").split('?').next().expect("a path").replace(".db", "-backup.db");
    store.execute_unprepared(&format!("VACUUM INTO '{backup_path}'")).await.expect("backs up");
    let late = ids("late", 5);
    publish_created(&bus, &late).await;
    assert_eq!(run_until_drained(&bus, restored(&store)).await.fills, 0, "a store that kept up is not filled");

    let backup = provenant_bus::store::connect(&format!("sqlite://{backup_path}")).await.expect("opens the backup");
    assert_eq!(counts(&backup).await, all_once(&early), "the backup predates the late events");
    let (shutdown, task) = spawn(restored(&backup));
    let mut expected = all_once(&early);
    expected.extend(all_once(&late));
    eventually(WAIT, "the restored store holds the whole log", || async { counts(&backup).await.len() == expected.len() }).await;
    assert_eq!(stop(shutdown, task).await.fills, 1);
    assert_eq!(counts(&backup).await, expected, "each event once");
    handle.drop_database().await.expect("drop");
}

/// A fill that dies after committing part of the log is started again by the next run, although
/// the store then holds events: the replay's consumer is not durable, so nothing else would ever
/// bring the rest.
#[tokio::test]
async fn a_fill_cut_short_is_started_again_by_the_next_run() {
    let bus = shared_bus().await;
    let (old_handle, old_store) = database(Backend::Sqlite).await;
    let all = ids("cut", 12);
    publish_created(&bus, &all).await;
    run_until_drained(&bus, Consumer::new(bus.clone(), old_store.clone(), CountingProjection::pure("cut-short"), fast_consumer())).await;

    let (new_handle, new_store) = database(Backend::Sqlite).await;
    let small_batches = ConsumerConfig { batch_size: 3, ..fast_consumer() };
    let dying = Consumer::new(bus.clone(), new_store.clone(), CountingProjection::pure("cut-short"), small_batches)
        .crash_at(CrashPoint::AfterCommitBeforeAck);
    let outcome = dying.run(std::future::pending()).await;
    assert!(matches!(outcome, Err(Error::InjectedCrash(_))), "{outcome:?}");
    let partial = counts(&new_store).await.len();
    assert!((1..all.len()).contains(&partial), "the first batch of the fill committed, and only it: {partial} rows");

    let (shutdown, task) = spawn(Consumer::new(bus.clone(), new_store.clone(), CountingProjection::pure("cut-short"), fast_consumer()));
    eventually(WAIT, "the new store holds the whole log", || async { counts(&new_store).await.len() == all.len() }).await;
    stop(shutdown, task).await;
    assert_eq!(counts(&new_store).await, all_once(&all), "each event once");
    old_handle.drop_database().await.expect("drop");
    new_handle.drop_database().await.expect("drop");
}

/// Stalls on one Datanet's event while `stalling` is set, as a handler stuck on a slow
/// dependency would, and says so in `stalled`; counts as [`CountingProjection`] does otherwise.
struct StallingOn {
    counting: CountingProjection,
    datanet_id: &'static str,
    stalling: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
}

impl Handler for StallingOn {
    fn name(&self) -> &str {
        self.counting.name()
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        self.counting.filter_subjects(namespace)
    }

    async fn handle(&self, transaction: &sea_orm::DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        let event: DatanetCreated = delivery.decode(&self.counting.upcasters)?;
        if event.datanet_id == self.datanet_id && self.stalling.load(SeqCst) {
            self.stalled.store(true, SeqCst);
            std::future::pending::<()>().await;
        }
        count_once_more(transaction, &event.datanet_id).await?;
        Ok(())
    }

    fn is_pure_projection(&self) -> bool {
        true
    }
}

/// A consumer asked to stop while it fills a store stops at once, and the next run finishes the
/// fill.
#[tokio::test]
async fn a_consumer_stopped_during_a_fill_returns_and_the_next_run_finishes_it() {
    let bus = shared_bus().await;
    let (stalling, stalled) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let consumer = |store: &sea_orm::DatabaseConnection, config| {
        let handler = StallingOn {
            counting: CountingProjection::new("stopped-fill"),
            datanet_id: "stopped-020",
            stalling: stalling.clone(),
            stalled: stalled.clone(),
        };
        Consumer::new(bus.clone(), store.clone(), handler, config)
    };
    let (old_handle, old_store) = database(Backend::Sqlite).await;
    let all = ids("stopped", 40);
    publish_created(&bus, &all).await;
    run_until_drained(&bus, consumer(&old_store, fast_consumer())).await;

    let (new_handle, new_store) = database(Backend::Sqlite).await;
    stalling.store(true, SeqCst);
    let (shutdown, task) = spawn(consumer(&new_store, ConsumerConfig { batch_size: 1, ..fast_consumer() }));
    // Not by reading the store: its one SQLite connection is the stalled transaction's.
    eventually(WAIT, "the fill reached the stalling event", || async { stalled.load(SeqCst) }).await;
    let stopped = tokio::time::timeout(WAIT, stop(shutdown, task)).await.expect("stops while filling");
    assert_eq!(stopped, ConsumerStats { fills: 1, ..ConsumerStats::default() }, "a fill is not counted as following");
    assert_eq!(counts(&new_store).await.len(), 20, "the batches before the stalled one committed");

    stalling.store(false, SeqCst);
    let (shutdown, task) = spawn(consumer(&new_store, fast_consumer()));
    eventually(WAIT, "the new store holds the whole log", || async { counts(&new_store).await.len() == all.len() }).await;
    stop(shutdown, task).await;
    assert_eq!(counts(&new_store).await, all_once(&all), "each event once");
    old_handle.drop_database().await.expect("drop");
    new_handle.drop_database().await.expect("drop");
}

/// A handler whose filter matches nothing in its stream.
struct MatchingNothing(CountingProjection);

impl Handler for MatchingNothing {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "nothing-here")]
    }

    async fn handle(&self, transaction: &sea_orm::DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        self.0.handle(transaction, delivery).await
    }
}

/// A stream that holds events, none of them for this consumer: a replay has nothing to wait for.
#[tokio::test]
async fn replaying_a_stream_that_holds_nothing_for_the_consumer_returns_at_once() {
    let bus = shared_bus().await;
    let (handle, store) = database(Backend::Sqlite).await;
    publish_created(&bus, &ids("unrelated", 3)).await;
    let consumer = Consumer::new(bus.clone(), store.clone(), MatchingNothing(CountingProjection::new("matching-nothing")), fast_consumer());
    let replay = tokio::time::timeout(WAIT, consumer.replay()).await.expect("returns").expect("replays");
    assert_eq!(replay.stats, ConsumerStats::default());
    assert!(replay.last_sequence > 0, "the stream was not empty");
    handle.drop_database().await.expect("drop");
}

/// Fails the first delivery of a Datanet named "once-flaky", as a projection does whose input
/// another projection filling beside it has not written yet; applies it when it comes again.
struct FlakyOnce(CountingProjection);

impl Handler for FlakyOnce {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        self.0.filter_subjects(namespace)
    }

    async fn handle(&self, transaction: &sea_orm::DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        let event: DatanetCreated = delivery.decode(&self.0.upcasters)?;
        if delivery.delivered == 1 && event.spec.is_some_and(|spec| spec.name == "once-flaky") {
            return Err(HandleError::Transient(anyhow::anyhow!("not there yet")));
        }
        count_once_more(transaction, &event.datanet_id).await?;
        Ok(())
    }
}

/// The stream's last event fails once: the replay has seen the end of the stream, but must not
/// return before that event came again and was applied (a filled store would lack it for good:
/// the durable consumer that follows starts past it).
#[tokio::test]
async fn a_replay_ends_only_once_the_events_set_back_for_redelivery_are_applied() {
    let bus = shared_bus().await;
    let (handle, store) = database(Backend::Sqlite).await;
    let steady = ids("steady", 4);
    publish_created(&bus, &steady).await;
    let flaky = created("late", "once-flaky");
    bus.publish(&Envelope::new(&flaky, "test"), &flaky, Expect::NoEvents).await.expect("published");
    let consumer = Consumer::new(bus.clone(), store.clone(), FlakyOnce(CountingProjection::new("flaky-once")), fast_consumer());
    let replay = tokio::time::timeout(WAIT, consumer.replay()).await.expect("returns").expect("replays");
    assert_eq!((replay.stats.applied, replay.stats.retried), (5, 1), "{:?}", replay.stats);
    let mut expected = all_once(&steady);
    expected.push(("late".to_owned(), 1));
    expected.sort();
    assert_eq!(counts(&store).await, expected);
    handle.drop_database().await.expect("drop");
}

/// Counts each Datanet as [`CountingProjection`] does and appends, for each, a snapshot event
/// named after it, through the batch's outbox (as the settler and the validator append).
struct MirroringProjection {
    counting: CountingProjection,
    bus: Bus,
}

impl Handler for MirroringProjection {
    fn name(&self) -> &str {
        self.counting.name()
    }

    fn context(&self) -> Context {
        self.counting.context()
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        self.counting.filter_subjects(namespace)
    }

    async fn handle(&self, transaction: &sea_orm::DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        self.counting.handle(transaction, delivery).await?;
        let mirror = mirror_of(&delivery.envelope.aggregate_id);
        let mut envelope = Envelope::new(&mirror, "mirror");
        // Derived from the event it answers, so that a retry sends the very same append.
        envelope.event_id = uuid::Uuid::from_u128(delivery.envelope.event_id.as_u128() ^ 1);
        let pending = self.bus.send(&envelope, &mirror, Expect::NoEvents).await.map_err(|error| HandleError::Transient(error.into()))?;
        delivery.confirm_append_before_commit(&self.bus, pending, "mirror.taken", "another event holds the mirror".into());
        Ok(())
    }
}

fn mirror_of(datanet_id: &str) -> SnapshotSealed {
    SnapshotSealed { snapshot_id: datanet_id.to_owned(), datanet_id: datanet_id.to_owned(), ..Default::default() }
}

/// A batch's appends are confirmed together before it commits: one that fails (its subject is
/// taken) dead-letters its own event only, a crash before the commit leaves appends that the
/// retry recognises as its own, and in the end every event is applied once with one append.
#[tokio::test]
async fn appends_deferred_to_the_batch_commit_with_it_and_a_failing_one_dead_letters_only_its_event() {
    let bus = shared_bus().await;
    let (test_database, database) = database(Backend::Sqlite).await;
    let ids = ids("outbox", 5);
    let squatter = mirror_of(&ids[2]);
    bus.publish(&Envelope::new(&squatter, "squatter"), &squatter, Expect::NoEvents).await.expect("published");
    publish_created(&bus, &ids).await;
    let mirroring = || MirroringProjection { counting: CountingProjection::new("mirroring"), bus: bus.clone() };

    let crashing = Consumer::new(bus.clone(), database.clone(), mirroring(), fast_consumer()).crash_at(CrashPoint::BeforeCommit);
    let outcome = crashing.run(std::future::pending()).await;
    assert!(matches!(outcome, Err(Error::InjectedCrash(_))), "{outcome:?}");
    assert!(counts(&database).await.is_empty(), "nothing may survive a crash before commit");

    let shutdown = Shutdown::new();
    let consumer = Consumer::new(bus.clone(), database.clone(), mirroring(), fast_consumer());
    let task = tokio::spawn(provenant_bus::run_until_stopped(consumer, shutdown.clone()));
    eventually(WAIT, "all judged", || async { drained(&bus, "mirroring").await && counts(&database).await.len() == 4 }).await;
    let stats = stop(shutdown, task).await;
    let mut applied = all_once(&ids);
    applied.remove(2);
    assert_eq!(counts(&database).await, applied);
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
    assert_eq!(dead_letters(&bus, 1).await[0].reason_code, "mirror.taken");
    assert_eq!(bus.count_messages(Context::Datanet, "snapshot").await.expect("count"), 5, "one append per event");
    test_database.drop_database().await.expect("drop");
}

/// Counts each Datanet as [`CountingProjection`] does, but keeps its rows for the end of the
/// batch ([`Handler::flush`]) and reads what the batch holds first ([`Handler::prepare`]), as
/// the ledger and the settler do. A Datanet named `refused-on-write` makes the flush fail, as
/// a constraint would.
#[derive(Default)]
struct DeferringProjection {
    rows: Deferred<Vec<(String, String)>>,
    /// (deliveries prepared, flushes that wrote rows, rows written) over the run.
    calls: std::sync::Arc<std::sync::Mutex<(usize, usize, usize)>>,
}

impl Handler for DeferringProjection {
    fn name(&self) -> &str {
        "deferring"
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "datanet")]
    }

    async fn prepare(&self, _transaction: &sea_orm::DatabaseTransaction, deliveries: &[&Delivery]) -> Result<(), HandleError> {
        self.calls.lock().expect("calls").0 += deliveries.len();
        Ok(())
    }

    async fn handle(&self, _transaction: &sea_orm::DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        let created: DatanetCreated = delivery.decode(&provenant_bus::Upcasters::contract())?;
        let name = created.spec.map(|spec| spec.name).unwrap_or_default();
        self.rows.with(|rows| rows.push((created.datanet_id, name)));
        Ok(())
    }

    async fn flush(&self, transaction: &sea_orm::DatabaseTransaction) -> Result<(), HandleError> {
        let rows = self.rows.take();
        if rows.is_empty() {
            return Ok(());
        }
        if rows.iter().any(|(_, name)| name == "refused-on-write") {
            return Err(HandleError::rejected("write.refused", "a row the database refuses"));
        }
        for (datanet_id, _) in &rows {
            count_once_more(transaction, datanet_id).await?;
        }
        let mut calls = self.calls.lock().expect("calls");
        calls.1 += 1;
        calls.2 += rows.len();
        Ok(())
    }

    fn discard(&self) {
        self.rows.reset();
    }
}

/// Deferred writes commit with their batch, a few flushes for many events; a crash before the
/// commit leaves none of them; a write that fails is charged to its own event under per-event
/// isolation (dead-lettered), and the rest of its batch is written once.
#[tokio::test]
async fn writes_deferred_to_the_end_of_the_batch_commit_with_it_and_a_failing_one_dead_letters_only_its_event() {
    let bus = shared_bus().await;
    let (test_database, database) = database(Backend::Sqlite).await;
    let first = ids("deferred", 20);
    publish_created(&bus, &first).await;

    let crashing =
        Consumer::new(bus.clone(), database.clone(), DeferringProjection::default(), fast_consumer()).crash_at(CrashPoint::BeforeCommit);
    let outcome = crashing.run(std::future::pending()).await;
    assert!(matches!(outcome, Err(Error::InjectedCrash(_))), "{outcome:?}");
    assert!(counts(&database).await.is_empty(), "nothing may survive a crash before commit");

    let projection = DeferringProjection::default();
    let calls = projection.calls.clone();
    let shutdown = Shutdown::new();
    let consumer = Consumer::new(bus.clone(), database.clone(), projection, fast_consumer());
    let task = tokio::spawn(provenant_bus::run_until_stopped(consumer, shutdown.clone()));
    eventually(WAIT, "all applied", || async { counts(&database).await.len() == 20 }).await;
    let (prepared, flushes, written) = *calls.lock().expect("calls");
    assert_eq!(written, 20, "each event's row is written once");
    assert!(flushes < written, "{flushes} flushes for {written} rows: no batch was written together");
    assert!(prepared >= 20, "every event of a batch under shared isolation is prepared ({prepared})");

    let mut more = ids("deferred-more", 2);
    let refused = created("deferred-refused", "refused-on-write");
    bus.publish(&Envelope::new(&refused, "test"), &refused, Expect::NoEvents).await.expect("published");
    publish_created(&bus, &more).await;
    eventually(WAIT, "the rest applied", || async { drained(&bus, "deferring").await && counts(&database).await.len() == 22 }).await;
    let stats = stop(shutdown, task).await;
    more.extend(first);
    more.sort();
    assert_eq!(counts(&database).await, all_once(&more));
    assert_eq!((stats.applied, stats.dead_lettered), (22, 1), "{stats:?}");
    assert_eq!(dead_letters(&bus, 1).await[0].reason_code, "write.refused");
    assert_eq!(calls.lock().expect("calls").2, 22, "each event's row is written once");
    test_database.drop_database().await.expect("drop");
}
