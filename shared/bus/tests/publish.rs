//! Publishing against a real NATS JetStream server: de-duplication and optimistic concurrency.

mod common;

use common::{created, shared_bus};
use provenant_bus::{Context, Envelope, Error, Expect};

#[tokio::test]
async fn a_duplicate_publish_of_the_same_event_id_is_stored_once() {
    let bus = shared_bus().await;
    let event = created("dup-1", "first");
    let envelope = Envelope::new(&event, "test");

    let first = bus.publish(&envelope, &event, Expect::Any).await.expect("first publish");
    let again = bus.publish(&envelope, &event, Expect::Any).await.expect("retried publish");

    assert!(!first.duplicate);
    assert!(again.duplicate, "the server should recognise the event id");
    assert_eq!(again.sequence, first.sequence);
    let mut stream = bus.jetstream().get_stream(bus.namespace().stream(Context::Datanet)).await.expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
}

#[tokio::test]
async fn two_writers_racing_on_one_aggregate_one_wins_and_the_other_gets_a_conflict() {
    let bus = shared_bus().await;
    let created_event = created("race-1", "v1");
    let creation = bus.publish(&Envelope::new(&created_event, "test"), &created_event, Expect::NoEvents).await.expect("create");

    // Both writers read the aggregate at the same version, then append concurrently.
    let read_version = bus.last_sequence(Context::Datanet, "datanet", "race-1").await.expect("reads").expect("exists");
    assert_eq!(read_version, creation.sequence);
    let update_a = created("race-1", "writer a");
    let update_b = created("race-1", "writer b");
    let envelope_a = Envelope::new(&update_a, "writer-a");
    let envelope_b = Envelope::new(&update_b, "writer-b");
    let (result_a, result_b) = tokio::join!(
        bus.publish(&envelope_a, &update_a, Expect::LastSequence(read_version)),
        bus.publish(&envelope_b, &update_b, Expect::LastSequence(read_version)),
    );

    let outcomes = [result_a, result_b];
    let winners = outcomes.iter().filter(|result| result.is_ok()).count();
    assert_eq!(winners, 1, "exactly one append may win: {outcomes:?}");
    let loser = outcomes.into_iter().find_map(Result::err).expect("one loses");
    match loser {
        Error::Conflict { subject, expected } => {
            assert!(subject.ends_with(".datanet.datanet.race-1"), "{subject}");
            assert_eq!(expected, Expect::LastSequence(read_version));
        }
        other => panic!("expected a typed conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn creating_an_aggregate_that_exists_is_a_conflict() {
    let bus = shared_bus().await;
    let event = created("exists-1", "first");
    bus.publish(&Envelope::new(&event, "test"), &event, Expect::NoEvents).await.expect("create");
    let again = created("exists-1", "second");
    let error = bus.publish(&Envelope::new(&again, "test"), &again, Expect::NoEvents).await.expect_err("conflicts");
    assert!(matches!(error, Error::Conflict { expected: Expect::NoEvents, .. }), "{error:?}");
    assert_eq!(bus.last_sequence(Context::Datanet, "datanet", "never-written").await.expect("reads"), None);
}

#[tokio::test]
async fn an_aggregate_id_that_would_escape_its_subject_is_refused_before_sending() {
    let bus = shared_bus().await;
    let event = created("a.b.>", "bad");
    let error = bus.publish(&Envelope::new(&event, "test"), &event, Expect::Any).await.expect_err("refused");
    assert!(matches!(error, Error::Event(_)), "{error:?}");
}

#[tokio::test]
async fn blobs_are_stored_once_under_their_sha256_and_read_back_checked() {
    let bus = shared_bus().await;
    let blobs = bus.blob_store("contributions").await.expect("bucket");
    let content = "Q: Why did the chicken cross the road?\nA: To get to the other side.".repeat(3_000); // > one 128 KiB chunk
    let first = blobs.put(content.as_bytes()).await.expect("stored");
    assert!(first.newly_stored);
    assert_eq!(first.sha256, provenant_bus::sha256_hex(content.as_bytes()));
    assert_eq!(first.size_bytes, content.len() as u64);
    let again = bus.blob_store("contributions").await.expect("bucket").put(content.as_bytes()).await.expect("stored");
    assert!(!again.newly_stored, "the same bytes are stored once");
    assert_eq!(blobs.get(&first.sha256).await.expect("read").as_deref(), Some(content.as_bytes()));
    assert_eq!(blobs.get(&provenant_bus::sha256_hex(b"never stored")).await.expect("read"), None);

    // Chunks of objects stored at the same time interleave in the stream; each reads back whole.
    let (left, right) = ("left ".repeat(120_000), "right".repeat(120_000));
    let (stored_left, stored_right) = tokio::join!(blobs.put(left.as_bytes()), blobs.put(right.as_bytes()));
    let (stored_left, stored_right) = (stored_left.expect("left"), stored_right.expect("right"));
    assert_eq!(blobs.get(&stored_left.sha256).await.expect("read").as_deref(), Some(left.as_bytes()));
    assert_eq!(blobs.get(&stored_right.sha256).await.expect("read").as_deref(), Some(right.as_bytes()));
}
