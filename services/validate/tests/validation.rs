//! The validate service against a real NATS JetStream (events and object store) and real
//! databases: verdicts, duplicate clusters, and exactly one verdict per contribution across
//! crashes.

mod common;

use std::time::{Duration, Instant};

use common::{config, create_datanet_with_policy, fast_consumer, submit};

use prost::Message as _;
use provenant_bus::{Bus, Consumer, CrashPoint, Envelope, Expect};
use provenant_events::proto::common::v1::{BlobRef, Principal};
use provenant_events::proto::datanet::v1::{
    ContributionAccepted, ContributionApproved, ContributionPolicy, ContributionRejected, ContributionSubmitted, DatanetCreated,
    DatanetSpec, PersonalDataAction, RecordFormat,
};
use provenant_runtime::Shutdown;
use provenant_test_support::Backend;
use sea_orm_migration::MigratorTrait as _;
use validate::handlers::ContributionValidator;
use validate::{Application, Config};

const WAIT: Duration = Duration::from_secs(20);

struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(config: &Config) -> Running {
    let app = Application::build(config.clone()).await.expect("builds");
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("task").expect("validate stopped cleanly");
    }
}

async fn create_datanet(bus: &Bus, id: &str, personal_data: PersonalDataAction) {
    create_datanet_with_policy(bus, id, personal_data, ContributionPolicy::Open).await;
}

enum Verdict {
    Accepted(ContributionAccepted),
    Rejected(ContributionRejected),
}

/// Waits for the contribution's verdict (the event after its submission).
async fn verdict(bus: &Bus, contribution_id: &str) -> Verdict {
    let stream = bus.jetstream().get_stream(bus.namespace().stream(provenant_bus::Context::Datanet)).await.expect("stream");
    let subject = bus.namespace().subject(provenant_bus::Context::Datanet, "contribution", contribution_id).expect("subject");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(message) = stream.direct_get_last_for_subject(&subject).await {
            let event_type = message.headers.get(provenant_events::header::EVENT_TYPE).map(|value| value.as_str().to_owned());
            match event_type.as_deref() {
                Some("datanet.ContributionAccepted") => {
                    return Verdict::Accepted(ContributionAccepted::decode(message.payload).expect("decodes"));
                }
                Some("datanet.ContributionRejected") => {
                    return Verdict::Rejected(ContributionRejected::decode(message.payload).expect("decodes"));
                }
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "no verdict for {contribution_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn accepted(bus: &Bus, id: &str) -> ContributionAccepted {
    match verdict(bus, id).await {
        Verdict::Accepted(event) => event,
        Verdict::Rejected(event) => panic!("{id} rejected: {:?}", event.reasons),
    }
}

async fn rejection_codes(bus: &Bus, id: &str) -> Vec<String> {
    match verdict(bus, id).await {
        Verdict::Rejected(event) => event.reasons.into_iter().map(|reason| reason.code).collect(),
        Verdict::Accepted(_) => panic!("{id} accepted"),
    }
}

const FORTUNE: &str = "You have an unusual equipment for success. Be sure to use it properly, and often, and well.";

#[tokio::test]
async fn duplicates_join_the_earliest_submitters_cluster_and_repeating_yourself_gains_nothing() {
    for backend in Backend::ALL {
        let (config, database) = config(backend).await;
        let running = start(&config).await;
        let bus = Bus::connect(&config.bus).await.expect("bus");
        create_datanet(&bus, "fortunes", PersonalDataAction::Reject).await;

        let original = submit(&bus, "fortunes", "alice", FORTUNE.as_bytes()).await;
        let first = accepted(&bus, &original).await;
        assert_eq!((first.duplicate_cluster_id.as_str(), first.cluster_founder), (original.as_str(), true));
        assert!(first.quality_score_ppm > 500_000);

        let edited = FORTUNE.replace("unusual", "UNUSUAL").replace("well.", "well!");
        let near = submit(&bus, "fortunes", "bob", edited.as_bytes()).await;
        let near = accepted(&bus, &near).await;
        assert_eq!((near.duplicate_cluster_id.as_str(), near.cluster_founder), (original.as_str(), false), "bob joins alice's cluster");

        let exact = submit(&bus, "fortunes", "carol", FORTUNE.as_bytes()).await;
        assert_eq!(accepted(&bus, &exact).await.duplicate_cluster_id, original);

        let again = submit(&bus, "fortunes", "alice", FORTUNE.as_bytes()).await;
        assert_eq!(rejection_codes(&bus, &again).await, ["duplicate.already_contributed"]);

        let other =
            submit(&bus, "fortunes", "dave", b"The best way to predict the future is to invent it, said someone clever once.").await;
        let other_verdict = accepted(&bus, &other).await;
        assert_eq!((other_verdict.duplicate_cluster_id.as_str(), other_verdict.cluster_founder), (other.as_str(), true));

        // Clusters are per Datanet: the same texts in another one found clusters of their own,
        // although their band keys are those of the first Datanet's rows.
        create_datanet(&bus, "sayings", PersonalDataAction::Reject).await;
        let founder = submit(&bus, "sayings", "erin", edited.as_bytes()).await;
        let founded = accepted(&bus, &founder).await;
        assert_eq!((founded.duplicate_cluster_id.as_str(), founded.cluster_founder), (founder.as_str(), true), "erin founds one");
        let joiner = submit(&bus, "sayings", "frank", FORTUNE.as_bytes()).await;
        assert_eq!(accepted(&bus, &joiner).await.duplicate_cluster_id, founder, "frank joins erin's cluster, not alice's");
        running.stop().await;
        database.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn bad_content_is_rejected_with_stable_codes_and_the_datanet_policy_decides_on_personal_data() {
    let (config, _database) = config(Backend::Sqlite).await;
    let running = start(&config).await;
    let bus = Bus::connect(&config.bus).await.expect("bus");
    create_datanet(&bus, "strict", PersonalDataAction::Reject).await;
    create_datanet(&bus, "lenient", PersonalDataAction::AcceptWithFlag).await;

    let not_text = submit(&bus, "strict", "alice", &[0xff, 0xfe, 0xfd, 0x00, 0x41]).await;
    assert_eq!(rejection_codes(&bus, &not_text).await, ["record.not_utf8"]);
    let short = submit(&bus, "strict", "alice", b"hm").await;
    assert_eq!(rejection_codes(&bus, &short).await, ["quality.too_short"]);
    let email = "Questions about the newsletter go to jane.doe@example.org every Monday.";
    let strict = submit(&bus, "strict", "alice", email.as_bytes()).await;
    assert_eq!(rejection_codes(&bus, &strict).await, ["personal_data.email"]);
    let lenient = submit(&bus, "lenient", "alice", email.as_bytes()).await;
    assert_eq!(accepted(&bus, &lenient).await.flags, ["personal_data.email"]);
    running.stop().await;
}

/// Subject message count: the submission plus at most one verdict.
async fn events_on(bus: &Bus, contribution_id: &str) -> u64 {
    events_on_subject(bus, "contribution", contribution_id).await
}

async fn events_on_subject(bus: &Bus, aggregate: &str, id: &str) -> u64 {
    let stream = bus.jetstream().get_stream(bus.namespace().stream(provenant_bus::Context::Datanet)).await.expect("stream");
    let subject = bus.namespace().subject(provenant_bus::Context::Datanet, aggregate, id).expect("subject");
    let mut consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config { filter_subject: subject, ..Default::default() })
        .await
        .expect("counter");
    consumer.info().await.expect("info").num_pending
}

/// The Datanet seals a snapshot after every 3 accepted contributions, so the crashing batch also
/// seals one: it must exist exactly once afterwards.
#[tokio::test]
async fn a_validator_killed_before_or_after_its_commit_appends_exactly_one_verdict_and_one_snapshot() {
    for point in [CrashPoint::BeforeCommit, CrashPoint::AfterCommitBeforeAck] {
        let (config, _database) = config(Backend::Sqlite).await;
        let bus = Bus::connect(&config.bus).await.expect("bus");
        bus.declare_streams().await.expect("streams");
        let database = provenant_bus::store::connect(config.database.url.expose()).await.expect("db");
        validate_migration::Migrator::up(&database, None).await.expect("migrates");
        let blobs = bus.blob_store("contributions").await.expect("bucket");
        let manifests = bus.blob_store("snapshots").await.expect("bucket");

        // Rules first, so the crashing batch holds the contributions.
        let policies = Consumer::new(bus.clone(), database.clone(), validate::handlers::PolicyProjector::default(), fast_consumer());
        let policies_stop = Shutdown::new();
        let policies_task = tokio::spawn(provenant_bus::run_until_stopped(policies, policies_stop.clone()));
        common::create_datanet_sealing_every(&bus, "fortunes", PersonalDataAction::Reject, ContributionPolicy::Open, 3).await;
        let ids = [
            submit(&bus, "fortunes", "alice", FORTUNE.as_bytes()).await,
            submit(&bus, "fortunes", "bob", FORTUNE.as_bytes()).await,
            submit(&bus, "fortunes", "carol", b"An entirely different and perfectly fine sentence to accept.").await,
        ];
        tokio::time::sleep(Duration::from_millis(300)).await;

        let validator = || ContributionValidator::new(bus.clone(), blobs.clone(), manifests.clone(), config.validation.clone());
        let crashing = Consumer::new(bus.clone(), database.clone(), validator(), fast_consumer()).crash_at(point);
        let outcome = crashing.run(std::future::pending()).await;
        assert!(matches!(outcome, Err(provenant_bus::Error::InjectedCrash(_))), "{outcome:?}");

        let restarted = Consumer::new(bus.clone(), database.clone(), validator(), fast_consumer());
        let stop = Shutdown::new();
        let task = tokio::spawn(provenant_bus::run_until_stopped(restarted, stop.clone()));
        for id in &ids {
            verdict(&bus, id).await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await; // past ack_wait: any redelivery has happened
        stop.cancel();
        task.await.expect("task").expect("validator");
        policies_stop.cancel();
        policies_task.await.expect("task").expect("policies");

        for id in &ids {
            assert_eq!(events_on(&bus, id).await, 2, "{point:?}: one submission and exactly one verdict for {id}");
        }
        assert_eq!(accepted(&bus, &ids[1]).await.duplicate_cluster_id, ids[0], "{point:?}: the recomputed verdict is the same");
        assert_eq!(events_on_subject(&bus, "snapshot", "fortunes-1").await, 1, "{point:?}: the policy's snapshot, once");
        assert_eq!(events_on_subject(&bus, "snapshot", "fortunes-2").await, 0, "{point:?}: and no second one");
    }
}

#[tokio::test]
async fn a_submission_to_an_approval_datanet_is_judged_only_after_the_owner_approves() {
    let (config, _database) = config(Backend::Sqlite).await;
    let running = start(&config).await;
    let bus = Bus::connect(&config.bus).await.expect("bus");
    create_datanet_with_policy(&bus, "curated", PersonalDataAction::Reject, ContributionPolicy::OwnerApproval).await;
    let id = submit(&bus, "curated", "alice", FORTUNE.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events_on(&bus, &id).await, 1, "held: no verdict before the owner approves");

    let approval = ContributionApproved {
        contribution_id: id.clone(),
        datanet_id: "curated".into(),
        approved_by: Some(Principal { id: "owner".into(), kind: 2 }),
    };
    let last = bus.last_sequence(provenant_bus::Context::Datanet, "contribution", &id).await.expect("read").expect("exists");
    bus.publish(&Envelope::new(&approval, "ingest"), &approval, Expect::LastSequence(last)).await.expect("approved");
    let verdict = accepted(&bus, &id).await;
    assert!(verdict.cluster_founder);
    assert_eq!(events_on(&bus, &id).await, 3, "submission, approval, verdict");
    running.stop().await;
}

#[tokio::test]
async fn json_lines_records_are_checked_against_the_datanets_schema() {
    let (config, _database) = config(Backend::Sqlite).await;
    let running = start(&config).await;
    let bus = Bus::connect(&config.bus).await.expect("bus");
    let datanet = DatanetCreated {
        datanet_id: "records".into(),
        owner: Some(Principal { id: "owner".into(), kind: 2 }),
        spec: Some(DatanetSpec {
            name: "records".into(),
            licence_spdx: "MIT".into(),
            record_format: RecordFormat::JsonLines.into(),
            json_schema: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"}}}"#.into(),
            visibility: 1,
            contribution_policy: 1,
            ..Default::default()
        }),
    };
    bus.publish(&Envelope::new(&datanet, "ingest"), &datanet, Expect::NoEvents).await.expect("datanet");
    let submit_lines = |content: &'static [u8]| {
        let bus = bus.clone();
        async move {
            let stored = bus.blob_store("contributions").await.expect("bucket").put(content).await.expect("stored");
            let id = uuid::Uuid::now_v7().to_string();
            let event = ContributionSubmitted {
                contribution_id: id.clone(),
                datanet_id: "records".into(),
                contributor: Some(Principal { id: "alice".into(), kind: 1 }),
                blob: Some(BlobRef {
                    sha256: stored.sha256,
                    size_bytes: stored.size_bytes,
                    bucket: stored.bucket,
                    media_type: "application/x-ndjson".into(),
                }),
                licence_spdx: "MIT".into(),
                record_format: RecordFormat::JsonLines.into(),
                record_count: 2,
                file_name: String::new(),
            };
            bus.publish(&Envelope::new(&event, "ingest"), &event, Expect::NoEvents).await.expect("submitted");
            id
        }
    };
    let good =
        submit_lines(b"{\"text\":\"The first record, with a proper text field.\"}\n{\"text\":\"The second record, also quite proper.\"}\n")
            .await;
    accepted(&bus, &good).await;
    let bad = submit_lines(b"{\"text\":\"This record is fine and long enough.\"}\n{\"text\": 42}\n").await;
    // The second record breaks the schema (and, holding no text, is empty for the quality check too).
    assert_eq!(rejection_codes(&bus, &bad).await, ["record.schema_violation", "record.empty"]);
    running.stop().await;
}

/// A submission naming `blob` as a contributor-less producer would send it.
fn submission(datanet: &str, contributor: Option<&str>, blob: BlobRef) -> ContributionSubmitted {
    ContributionSubmitted {
        contribution_id: uuid::Uuid::now_v7().to_string(),
        datanet_id: datanet.into(),
        contributor: contributor.map(|id| Principal { id: id.into(), kind: 1 }),
        blob: Some(blob),
        licence_spdx: "CC0-1.0".into(),
        record_format: RecordFormat::PlainText.into(),
        record_count: 1,
        file_name: String::new(),
    }
}

const DREAM: &str = "A journey of a thousand miles begins with a single step, and then a great many more of them.";

/// The validator reads a batch's contents, rules and possible duplicates together and writes
/// what it accepts at the batch's end (`ContributionValidator::prepare` and `flush`). Judged in
/// one batch, each submission still sees the stored contributions and every earlier one of the
/// batch, exactly, near and by the same contributor; and so it does when a failing event makes
/// the consumer retry the batch event by event, without `prepare`.
#[tokio::test]
async fn a_batch_of_submissions_is_judged_as_if_one_by_one() {
    for backend in Backend::ALL {
        let (config, database) = config(backend).await;
        let bus = Bus::connect(&config.bus).await.expect("bus");
        bus.declare_streams().await.expect("streams");
        create_datanet(&bus, "fortunes", PersonalDataAction::Reject).await;
        let running = start(&config).await;
        let stored = submit(&bus, "fortunes", "alice", FORTUNE.as_bytes()).await;
        assert_eq!(accepted(&bus, &stored).await.duplicate_cluster_id, stored);
        running.stop().await;

        // One batch, published while no validator runs.
        let near_stored = submit(&bus, "fortunes", "bob", FORTUNE.replace("unusual", "UNUSUAL").replace("well.", "well!").as_bytes()).await;
        let copy_stored = submit(&bus, "fortunes", "carol", FORTUNE.as_bytes()).await;
        let missing = submission(
            "fortunes",
            Some("bob"),
            BlobRef { sha256: "0".repeat(64), size_bytes: 10, bucket: "contributions".into(), media_type: "text/plain".into() },
        );
        bus.publish(&Envelope::new(&missing, "ingest"), &missing, Expect::NoEvents).await.expect("submitted");
        let founder = submit(&bus, "fortunes", "dave", DREAM.as_bytes()).await;
        let near_founder = submit(&bus, "fortunes", "erin", DREAM.replace("single", "SINGLE").as_bytes()).await;
        let copy_founder = submit(&bus, "fortunes", "frank", DREAM.as_bytes()).await;
        let founder_again = submit(&bus, "fortunes", "dave", DREAM.as_bytes()).await;
        let running = start(&config).await;
        assert_eq!(accepted(&bus, &near_stored).await.duplicate_cluster_id, stored, "near a stored one");
        assert_eq!(accepted(&bus, &copy_stored).await.duplicate_cluster_id, stored, "a copy of a stored one");
        assert_eq!(rejection_codes(&bus, &missing.contribution_id).await, ["content.missing"]);
        let founded = accepted(&bus, &founder).await;
        assert_eq!((founded.duplicate_cluster_id.as_str(), founded.cluster_founder), (founder.as_str(), true));
        assert_eq!(accepted(&bus, &near_founder).await.duplicate_cluster_id, founder, "near one earlier in the batch");
        assert_eq!(accepted(&bus, &copy_founder).await.duplicate_cluster_id, founder, "a copy of one earlier in the batch");
        assert_eq!(rejection_codes(&bus, &founder_again).await, ["duplicate.already_contributed"]);
        running.stop().await;

        // A batch with an event the validator refuses (no contributor) is applied event by event.
        let tale = "Once upon a time a small fox found a golden key under the old oak tree by the mill.";
        let first = submit(&bus, "fortunes", "gina", tale.as_bytes()).await;
        let content = bus.blob_store("contributions").await.expect("bucket").put(tale.as_bytes()).await.expect("stored");
        let anonymous = submission(
            "fortunes",
            None,
            BlobRef { sha256: content.sha256, size_bytes: content.size_bytes, bucket: content.bucket, media_type: "text/plain".into() },
        );
        bus.publish(&Envelope::new(&anonymous, "ingest"), &anonymous, Expect::NoEvents).await.expect("submitted");
        let near_first = submit(&bus, "fortunes", "hank", tale.replace("golden", "GOLDEN").as_bytes()).await;
        let first_again = submit(&bus, "fortunes", "gina", tale.as_bytes()).await;
        let near_earlier = submit(&bus, "fortunes", "ivan", DREAM.replace("great", "GREAT").as_bytes()).await;
        let running = start(&config).await;
        assert_eq!(accepted(&bus, &first).await.duplicate_cluster_id, first);
        assert_eq!(accepted(&bus, &near_first).await.duplicate_cluster_id, first, "near one earlier in the retried batch");
        assert_eq!(rejection_codes(&bus, &first_again).await, ["duplicate.already_contributed"]);
        assert_eq!(accepted(&bus, &near_earlier).await.duplicate_cluster_id, founder, "near one of an earlier batch");
        assert_eq!(events_on(&bus, &anonymous.contribution_id).await, 1, "the refused submission has no verdict");
        running.stop().await;
        database.drop_database().await.expect("drop");
    }
}
