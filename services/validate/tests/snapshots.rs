//! Sealed snapshots over HTTP: the owner seals, anyone authenticated proves a contribution's
//! inclusion, and the proof verifies against the root in `SnapshotSealed` (RFC 6962).

mod common;

use std::time::{Duration, Instant};

use provenant_bus::Bus;
use provenant_events::proto::common::v1::{Principal, PrincipalKind};
use provenant_events::proto::datanet::v1::{ContributionPolicy, PersonalDataAction, SnapshotSealed};
use provenant_events::snapshot;
use provenant_runtime::Shutdown;
use provenant_runtime::identity::{ApiKeyConfig, Role, hash_key};
use provenant_test_support::Backend;
use serde_json::Value;
use validate::Application;
use validate::domain::merkle;
use validate::projections::accepted;
use validate::sealing;

const OWNER_KEY: &str = "pvk_snapshot_owner";
const BOB_KEY: &str = "pvk_snapshot_bob";

fn client(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header"));
    reqwest::Client::builder().default_headers(headers).build().expect("client")
}

async fn get_until(http: &reqwest::Client, url: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = http.get(url).send().await.expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if done(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{url}: last {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_owner_seals_a_snapshot_and_every_contribution_gets_a_proof_that_verifies() {
    for backend in Backend::ALL {
        provenant_telemetry::install_crypto_provider();
        let (mut config, database) = common::config(backend).await;
        config.identity.api_keys = vec![
            ApiKeyConfig { principal: "owner".into(), roles: vec![Role::DatanetOwner], key_sha256: hex::encode(hash_key(OWNER_KEY)) },
            ApiKeyConfig { principal: "bob".into(), roles: vec![Role::Contributor], key_sha256: hex::encode(hash_key(BOB_KEY)) },
        ];
        let app = Application::build(config.clone()).await.expect("builds");
        let base = format!("http://{}", app.address());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let bus = Bus::connect(&config.bus).await.expect("bus");
        let (owner, bob) = (client(OWNER_KEY), client(BOB_KEY));

        common::create_datanet_with_policy(&bus, "fortunes", PersonalDataAction::Reject, ContributionPolicy::Open).await;
        common::create_datanet_with_policy(&bus, "empty", PersonalDataAction::Reject, ContributionPolicy::Open).await;
        // Accepted in the order submitted, which the leaf indices below assert: an early partial
        // seal fixes the order of what it holds, and later snapshots extend it.
        common::policies_caught_up(&bus).await;
        let texts = [
            "The early bird gets the worm, but the second mouse gets the cheese.",
            "Never put off until tomorrow what you can do the day after tomorrow.",
            "A journey of a thousand miles begins with a cash advance from the bank.",
            "Honesty is the best policy, but insanity is a better defence in court.",
            "If at first you do not succeed, destroy all evidence that you tried at all.",
        ];
        let mut ids = Vec::new();
        for (index, text) in texts.iter().enumerate() {
            ids.push(common::submit(&bus, "fortunes", &format!("contributor-{index}"), text.as_bytes()).await);
        }
        // Wait until validation accepted all five (the seal takes what is accepted).
        let seal_url = format!("{base}/v1/datanets/fortunes/snapshots");
        let deadline = Instant::now() + Duration::from_secs(20);
        let sealed: Value = loop {
            let response = owner.post(&seal_url).send().await.expect("seal");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            if status == 202 && body["entry_count"] == 5 {
                break body;
            }
            assert!(Instant::now() < deadline, "never sealed all five: {status} {body}");
            // An earlier partial seal is a legitimate snapshot too; wait and seal again.
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let snapshot_id = sealed["snapshot_id"].as_str().expect("id").to_owned();
        let root = sealed["merkle_root"].as_str().expect("root").to_owned();
        let snapshot = get_until(&bob, &format!("{base}/v1/snapshots/{snapshot_id}"), |status, _| status == 200).await;
        assert_eq!((snapshot["merkle_root"].as_str(), snapshot["entry_count"].as_i64()), (Some(root.as_str()), Some(5)));

        for (index, id) in ids.iter().enumerate() {
            let proof = get_until(&bob, &format!("{base}/v1/snapshots/{snapshot_id}/proofs/{id}"), |status, _| status == 200).await;
            assert_eq!(proof["leaf_index"], index, "entries are in order of acceptance");
            let leaf = merkle::leaf_hash(proof["leaf"].as_str().expect("leaf").as_bytes());
            assert_eq!(hex::encode(leaf), proof["leaf_hash"].as_str().expect("hash"));
            let path: Vec<merkle::Hash> = proof["audit_path"]
                .as_array()
                .expect("path")
                .iter()
                .map(|hash| hex::decode(hash.as_str().expect("hex")).expect("hex").try_into().expect("32 bytes"))
                .collect();
            let root_bytes: merkle::Hash = hex::decode(&root).expect("hex").try_into().expect("32 bytes");
            assert_eq!(merkle::verify_inclusion(&leaf, index, 5, &path, &root_bytes), Ok(()), "proof of {id}");
            assert!(proof["leaf"].as_str().expect("leaf").contains(id.as_str()));
        }

        let forbidden = bob.post(&seal_url).send().await.expect("seal");
        assert_eq!(forbidden.status().as_u16(), 403);
        let empty = owner.post(format!("{base}/v1/datanets/empty/snapshots")).send().await.expect("seal");
        assert_eq!(empty.status().as_u16(), 422);
        let unknown = owner.post(format!("{base}/v1/datanets/nope/snapshots")).send().await.expect("seal");
        assert_eq!(unknown.status().as_u16(), 404);
        let missing = bob.get(format!("{base}/v1/snapshots/{snapshot_id}/proofs/not-there")).send().await.expect("proof");
        assert_eq!(missing.status().as_u16(), 404);
        let anonymous = reqwest::Client::new().get(format!("{base}/v1/snapshots/{snapshot_id}")).send().await.expect("get");
        assert_eq!(anonymous.status().as_u16(), 401);

        shutdown.cancel();
        task.await.expect("task").expect("stopped cleanly");
        database.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn a_policy_seals_a_snapshot_after_every_n_accepted_contributions() {
    provenant_telemetry::install_crypto_provider();
    let (mut config, database) = common::config(Backend::Sqlite).await;
    config.identity.api_keys =
        vec![ApiKeyConfig { principal: "bob".into(), roles: vec![Role::Contributor], key_sha256: hex::encode(hash_key(BOB_KEY)) }];
    let app = Application::build(config.clone()).await.expect("builds");
    let base = format!("http://{}", app.address());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let bus = Bus::connect(&config.bus).await.expect("bus");
    let bob = client(BOB_KEY);

    common::create_datanet_sealing_every(&bus, "every-two", PersonalDataAction::Reject, ContributionPolicy::Open, 2).await;
    // Accepted in the order submitted (the assertions below rely on it), not some retried after
    // later ones for want of the Datanet's rules.
    common::policies_caught_up(&bus).await;
    let texts = [
        "Time flies like an arrow; fruit flies like a banana, or so the linguists say.",
        "The only thing we have to fear is running out of coffee before the deadline.",
        "Every cloud has a silver lining, except the ones that bring the thunderstorms.",
        "A penny saved is a penny that will be lost behind the sofa cushions anyway.",
        "Two wrongs do not make a right, but three lefts certainly make one right turn.",
    ];
    let mut ids = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        ids.push(common::submit(&bus, "every-two", &format!("contributor-{index}"), text.as_bytes()).await);
    }
    let first = get_until(&bob, &format!("{base}/v1/snapshots/every-two-1"), |status, _| status == 200).await;
    let second = get_until(&bob, &format!("{base}/v1/snapshots/every-two-2"), |status, _| status == 200).await;
    assert_eq!((first["entry_count"].as_i64(), second["entry_count"].as_i64()), (Some(2), Some(4)));
    // Four accepted make two snapshots; the fifth waits for the sixth.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = bob.get(format!("{base}/v1/snapshots/every-two-3")).send().await.expect("get");
    assert_eq!(third.status().as_u16(), 404);
    let proof = get_until(&bob, &format!("{base}/v1/snapshots/every-two-2/proofs/{}", ids[3]), |status, _| status == 200).await;
    assert_eq!(proof["leaf_index"], 3, "the second snapshot extends the first, in order of acceptance");

    shutdown.cancel();
    task.await.expect("task").expect("stopped cleanly");
    database.drop_database().await.expect("drop");
}

/// The contribution ids of a sealed snapshot's manifest, in order.
async fn manifest_ids(manifests: &provenant_bus::BlobStore, sealed: &SnapshotSealed) -> Vec<String> {
    let reference = sealed.manifest.as_ref().expect("a manifest");
    let bytes = manifests.get(&reference.sha256).await.expect("get").expect("stored");
    snapshot::parse_manifest(&bytes).expect("parses").into_iter().map(|entry| entry.contribution_id).collect()
}

/// A contribution accepted after later submissions (its submission retried for want of its
/// Datanet's rules, say) has the smaller stream sequence. The next snapshot must still extend the
/// previous one, not re-sort it: a proof's leaf index may never move.
#[tokio::test]
async fn a_snapshot_extends_the_previous_one_when_contributions_were_accepted_out_of_submission_order() {
    for backend in Backend::ALL {
        let (config, database) = common::config(backend).await;
        let store = validate::open_database(&config.database).await.expect("database");
        let bus = Bus::connect(&config.bus).await.expect("bus");
        bus.declare_streams().await.expect("streams");
        let manifests = bus.blob_store("snapshots").await.expect("bucket");
        let row = |id: &str, accepted_sequence: i64| accepted::Model {
            contribution_id: id.into(),
            datanet_id: "ordered".into(),
            contributor_id: format!("contributor-{id}"),
            content_sha256: format!("{accepted_sequence:064x}"),
            cluster_id: id.into(),
            signature: None,
            accepted_sequence,
        };

        accepted::insert_all(&store, &[row("a", 10), row("b", 20)]).await.expect("accepted");
        let first = sealing::seal_by_policy(&bus, &manifests, &store, "ordered", 2).await.expect("sealed").expect("due at 2");
        // Accepted only now, though submitted before a and b.
        accepted::insert_all(&store, &[row("late", 5), row("c", 30)]).await.expect("accepted");
        let second = sealing::seal_by_policy(&bus, &manifests, &store, "ordered", 2).await.expect("sealed").expect("due at 4");
        assert_eq!((first.ordinal, second.ordinal), (1, 2), "{backend:?}");
        assert_eq!(second.previous_snapshot_id, first.snapshot_id);
        assert_eq!(manifest_ids(&manifests, &first).await, ["a", "b"]);
        assert_eq!(manifest_ids(&manifests, &second).await, ["a", "b", "late", "c"], "{backend:?}: extends the first");

        // No snapshot projector runs here, so the read model knows none: a retried policy seal
        // finds its own snapshot in the stream and seals nothing new.
        let retried = sealing::seal_by_policy(&bus, &manifests, &store, "ordered", 2).await.expect("sealed").expect("due at 4");
        assert_eq!(retried, second);

        // The owner seals with nothing new accepted: the same entries, in the same order.
        let everything: Vec<_> = accepted::all_in_order(&store, "ordered").await.expect("read").into_iter().map(Into::into).collect();
        let owner = Principal { id: "owner".into(), kind: PrincipalKind::DatanetOwner.into() };
        let third = sealing::seal(&bus, &manifests, &store, "ordered", &everything, owner, uuid::Uuid::now_v7()).await.expect("sealed");
        assert_eq!((third.ordinal, third.previous_snapshot_id.as_str()), (3, second.snapshot_id.as_str()));
        assert_eq!(third.merkle_root, second.merkle_root, "{backend:?}");

        store.close().await.expect("close");
        database.drop_database().await.expect("drop");
    }
}
