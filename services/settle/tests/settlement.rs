//! The settle service against real NATS and real databases: inference fees split into a
//! balanced ledger exactly once, external producers' events checked (refusals dead-lettered
//! with reasons), crashes lose and double nothing, and the ledger rebuilds from the log.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use provenant_bus::{Bus, BusConfig, Consumer, ConsumerConfig, CrashPoint, DeadLetter, Envelope, Expect};
use provenant_config::Secret;
use provenant_events::proto::common::v1::{BlobRef, Money, Principal};
use provenant_events::proto::datanet::v1::DatanetCreated;
use provenant_events::proto::inference::v1::{AttributionReceipt, ContributorShare, InferenceAttributed, InferenceServed};
use provenant_events::proto::settlement::v1::{InferenceSettled, Posting, SettlementPeriodClosed};
use provenant_events::proto::training::v1::{AttributionIndexBuilt, Lineage, ModelKind, ModelRegistered, SnapshotPin};
use provenant_runtime::Shutdown;
use provenant_runtime::identity::{ApiKeyConfig, Role, hash_key};
use provenant_test_support::{Backend, TestDatabase};
use sea_orm::{DatabaseConnection, EntityTrait as _, QueryOrder as _};
use sea_orm_migration::MigratorTrait as _;
use serde_json::{Value, json};
use settle::domain::period::PeriodLength;
use settle::handlers::{LedgerProjector, Settler};
use settle::projections::ledger::{balances, postings, transactions};
use settle::{Application, Config};

const WAIT: Duration = Duration::from_secs(20);
const FINANCE_KEY: &str = "finance-key";
const BUILDER_KEY: &str = "builder-key";
const ANN_KEY: &str = "ann-key";
const BASE: &str = "base-en";
const ADAPTER: &str = "adapter-de";

fn api_key(principal: &str, roles: Vec<Role>, key: &str) -> ApiKeyConfig {
    ApiKeyConfig { principal: principal.into(), roles, key_sha256: hex::encode(hash_key(key)) }
}

fn fast_consumer() -> ConsumerConfig {
    ConsumerConfig { batch_size: 32, ack_wait_seconds: 1, max_deliver: 4, initial_backoff_ms: 50, max_backoff_ms: 300 }
}

async fn config(backend: Backend) -> (Config, TestDatabase) {
    provenant_test_support::init_logs();
    provenant_telemetry::install_crypto_provider();
    let database = TestDatabase::create(backend).await.expect("database");
    let layers = provenant_config::Layers { directory: "/nonexistent".into(), environment: "test".into() };
    let mut config: Config = provenant_config::load_with(settle::BASE_YAML, &layers, std::iter::empty()).expect("defaults");
    config.http.port = 0;
    config.bus =
        BusConfig { subject_root: provenant_test_support::unique_root(), ..BusConfig::new(&provenant_test_support::nats_url(), "settle") };
    config.database.url = Secret::new(database.url.clone());
    config.consumer = fast_consumer();
    config.identity.api_keys = vec![
        api_key("fin", vec![Role::Finance], FINANCE_KEY),
        api_key("bob", vec![Role::ModelBuilder], BUILDER_KEY),
        api_key("ann", vec![Role::Contributor], ANN_KEY),
    ];
    // An external gateway may report inferences of the base model only.
    config.settlement.producers.insert("gateway".into(), vec![BASE.into()]);
    (config, database)
}

fn digest(seed: char) -> String {
    seed.to_string().repeat(64)
}

/// Two Datanets (olga's, otto's), a base model built by bob from olga's (two snapshots) and an
/// adapter built by bea from otto's.
async fn register_catalogue(bus: &Bus) {
    for (datanet, owner) in [("d-en", "olga"), ("d-de", "otto")] {
        let event = DatanetCreated { datanet_id: datanet.into(), owner: Some(Principal { id: owner.into(), kind: 2 }), spec: None };
        bus.publish(&Envelope::new(&event, "ingest"), &event, Expect::NoEvents).await.expect("datanet");
    }
    let model = |id: &str, kind: ModelKind, base: &str, weights: char, builder: &str, datanets: &[&str]| ModelRegistered {
        model_id: id.into(),
        name: id.into(),
        kind: kind.into(),
        base_model_id: base.into(),
        weights: Some(BlobRef { sha256: digest(weights), size_bytes: 1, bucket: "models".into(), media_type: String::new() }),
        lineage: Some(Lineage {
            snapshots: datanets
                .iter()
                .enumerate()
                .map(|(index, datanet)| SnapshotPin {
                    snapshot_id: format!("{datanet}-{index}"),
                    datanet_id: (*datanet).into(),
                    merkle_root: digest('0'),
                })
                .collect(),
            ..Default::default()
        }),
        owner: Some(Principal { id: builder.into(), kind: 3 }),
        ..Default::default()
    };
    for event in
        [model(BASE, ModelKind::Base, "", 'a', "bob", &["d-en", "d-en"]), model(ADAPTER, ModelKind::Adapter, BASE, 'b', "bea", &["d-de"])]
    {
        bus.publish(&Envelope::new(&event, "train"), &event, Expect::NoEvents).await.expect("model");
    }
    for (model_id, index) in [(BASE, BASE_INDEX), (ADAPTER, ADAPTER_INDEX)] {
        let event = AttributionIndexBuilt {
            index_id: format!("index-of-{model_id}"),
            model_id: model_id.into(),
            index_sha256: digest(index),
            ..Default::default()
        };
        bus.publish(&Envelope::new(&event, "train"), &event, Expect::NoEvents).await.expect("index");
    }
}

/// The digests (as `digest` seeds) of the attribution indexes built for the base and the adapter.
const BASE_INDEX: char = 'e';
const ADAPTER_INDEX: char = '9';

/// An inference of the base (or of the adapter) for `fee` euro cents.
fn served(request_id: &str, producer: &str, adapter: bool, fee: &str, receipt: Option<AttributionReceipt>) -> InferenceServed {
    InferenceServed {
        request_id: request_id.into(),
        producer: producer.into(),
        caller: Some(Principal { id: "app".into(), kind: 0 }),
        model_id: BASE.into(),
        base_weights_sha256: digest('a'),
        adapter_model_id: if adapter { ADAPTER.into() } else { String::new() },
        adapter_weights_sha256: if adapter { digest('b') } else { String::new() },
        prompt_sha256: digest('c'),
        output_sha256: digest('d'),
        prompt_tokens: 12,
        output_tokens: 30,
        fee: Some(Money { currency: "EUR".into(), exponent: 2, minor_units: fee.into() }),
        pricing_policy_version: 1,
        receipt,
    }
}

async fn publish(bus: &Bus, event: &InferenceServed) -> Envelope {
    let envelope = Envelope::new(event, &event.producer);
    bus.publish(&envelope, event, Expect::Any).await.expect("published");
    envelope
}

struct Running {
    base_url: String,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(config: &Config) -> Running {
    let app = Application::build(config.clone()).await.expect("builds");
    let base_url = format!("http://{}", app.address());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Running { base_url, shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("task").expect("settle stopped cleanly");
    }

    async fn call(&self, method: reqwest::Method, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.base_url)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, key, path, None).await
    }

    /// Polls the reconciliation until the settler, the log and the ledger all hold
    /// `transactions` settlements.
    async fn reconciled(&self, transactions: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(FINANCE_KEY, "/v1/reconciliation").await;
            assert_eq!(status, 200, "{body}");
            let settled = ["ledger_transactions", "settlements_in_log", "settled_inferences"];
            if settled.iter().all(|figure| body[figure] == json!(transactions)) {
                return body;
            }
            assert!(Instant::now() < deadline, "ledger never reached {transactions} settlements: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn receipt() -> AttributionReceipt {
    AttributionReceipt {
        shares: vec![
            ContributorShare { contributor_id: "ann".into(), share_ppb: 500_000_000, datanet_id: "d-en".into() },
            ContributorShare { contributor_id: "cid".into(), share_ppb: 10_000_000, datanet_id: "d-en".into() },
            ContributorShare { contributor_id: "dan".into(), share_ppb: 290_000_000, datanet_id: "d-en".into() },
        ],
        base_pool_ppb: 200_000_000,
        noise_floor_ppb: 20_000_000,
        // Computed with the base that `served` names (without an adapter), over its index.
        model_weights_sha256: digest('a'),
        index_sha256: digest(BASE_INDEX),
        ..Default::default()
    }
}

fn balance(accounts: &Value, account: &str) -> String {
    accounts["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|item| item["account"] == account)
        .map_or_else(|| "0".to_owned(), |item| item["balance"]["minor_units"].as_str().expect("amount").to_owned())
}

async fn ledger_rows(database: &DatabaseConnection) -> (Vec<transactions::Model>, Vec<postings::Model>, Vec<balances::Model>) {
    let mut rebuilt_transactions =
        transactions::Entity::find().order_by_asc(transactions::Column::SettlementId).all(database).await.expect("rows");
    // Stream positions differ in nothing here, but compare what the ledger says, not where.
    rebuilt_transactions.iter_mut().for_each(|row| row.stream_sequence = 0);
    let lines = postings::Entity::find()
        .order_by_asc(postings::Column::StreamSequence)
        .order_by_asc(postings::Column::Line)
        .all(database)
        .await
        .expect("rows");
    let totals = balances::Entity::find().order_by_asc(balances::Column::Account).all(database).await.expect("rows");
    (rebuilt_transactions, lines, totals)
}

/// Replaying the settlement events into an empty database gives the ledger the stopped service
/// left in its ledger's store (then dropped), with `applied` transactions. On SQLite that store
/// is a file of its own, and the settler's holds no ledger.
async fn assert_ledger_replays(config: &Config, database: TestDatabase, bus: &Bus, applied: u64, what: &str) {
    let ledger_url = config.ledger_database_url();
    assert_eq!(ledger_url.is_some(), database.backend == Backend::Sqlite, "{:?}: where the ledger lives", database.backend);
    let live = provenant_bus::store::connect(ledger_url.as_deref().unwrap_or(config.database.url.expose())).await.expect("db");
    let expected = ledger_rows(&live).await;
    if ledger_url.is_some() {
        let settler = provenant_bus::store::connect(config.database.url.expose()).await.expect("db");
        assert_eq!(settle::projections::ledger::count_transactions(&settler).await.expect("count"), 0, "{what}: not in the settler's");
        settler.close().await.expect("closed");
    }
    let fresh = database.sibling().await.expect("fresh database");
    let rebuilt = provenant_bus::store::connect(&fresh.url).await.expect("db");
    settle_migration::Migrator::up(&rebuilt, None).await.expect("migrates");
    let replay = Consumer::new(bus.clone(), rebuilt.clone(), LedgerProjector::default(), fast_consumer()).replay().await.expect("replays");
    assert_eq!(replay.stats.applied, applied, "{what}");
    assert_eq!(ledger_rows(&rebuilt).await, expected, "{:?}: the ledger is a function of the log", database.backend);
    fresh.drop_database().await.expect("drop");
    database.drop_database().await.expect("drop");
}

/// A store that is new while the log is not (the ledger of a deployment upgraded from one
/// SQLite file or given a database of its own; both stores after a lost volume) is filled from
/// the start of the log, then followed: the durable consumers' positions on the server belong to
/// the store they wrote before.
#[tokio::test]
async fn new_stores_are_filled_from_the_log_then_followed() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (mut config, database) = config(backend).await;
        // Before: one database holds both.
        config.ledger_database = Some(config.database.clone());
        let running = start(&config).await;
        let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
        register_catalogue(&bus).await;
        publish(&bus, &served("req-1", "infer", false, "100", Some(receipt()))).await;
        publish(&bus, &served("req-2", "infer", true, "7", None)).await;
        let before = running.reconciled(2).await;
        running.stop().await;

        // After: the ledger apart, in a store that holds nothing yet.
        let apart = database.sibling().await.expect("a new database");
        config.ledger_database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(provenant_bus::store::DatabaseConfig { url: Secret::new(apart.url.clone()) }),
        };
        assert!(config.ledger_database_url().is_some(), "{backend:?}: the ledger lives apart now");
        let running = start(&config).await;
        let refilled = running.reconciled(2).await;
        assert_eq!(refilled["currencies"], before["currencies"], "{backend:?}: the same books, from the log");
        assert_eq!(refilled["journal_matches_balances"], json!(true));
        publish(&bus, &served("req-3", "gateway", false, "250", None)).await;
        let after = running.reconciled(3).await;
        assert_eq!(after["currencies"][0]["fees_in"], json!("357"), "{backend:?}: {after}");
        running.stop().await;

        // Last, both stores lost (a new volume): the catalogue is filled from the log, so the
        // next inference settles rather than waiting for a model the store never sees, and the
        // ledger is filled again.
        let settler_store = database.sibling().await.expect("a new database");
        let ledger_store = database.sibling().await.expect("a new database");
        config.database.url = Secret::new(settler_store.url.clone());
        config.ledger_database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(provenant_bus::store::DatabaseConfig { url: Secret::new(ledger_store.url.clone()) }),
        };
        let running = start(&config).await;
        publish(&bus, &served("req-4", "infer", false, "43", None)).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, body) = running.get(FINANCE_KEY, "/v1/reconciliation").await;
            // The new settler store knows only the inference it settled itself.
            if body["ledger_transactions"] == json!(4) && body["settled_inferences"] == json!(1) {
                assert_eq!(body["currencies"][0]["fees_in"], json!("400"), "{backend:?}: {body}");
                assert_eq!(body["ledger_matches_log"], json!(true), "{backend:?}: {body}");
                break;
            }
            assert!(Instant::now() < deadline, "{backend:?}: the inference after the loss never settled: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.stop().await;
        for store in [apart, settler_store, ledger_store, database] {
            store.drop_database().await.expect("drop");
        }
    }
}

#[tokio::test]
async fn fees_settle_into_a_balanced_ledger_exactly_once_and_replay_to_the_same_ledger() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (config, database) = config(backend).await;
        let running = start(&config).await;
        let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
        register_catalogue(&bus).await;

        // With a receipt, through the base; without one, through the adapter; an external
        // gateway's; and a zero fee.
        let first = served("req-1", "infer", false, "1001", Some(receipt()));
        let first_envelope = publish(&bus, &first).await;
        publish(&bus, &served("req-2", "infer", true, "3", None)).await;
        let gateway_envelope = publish(&bus, &served("req-3", "gateway", false, "250", None)).await;
        publish(&bus, &served("req-4", "infer", false, "0", None)).await;
        // The first again, byte for byte (a producer's retry) …
        bus.publish(&first_envelope, &first, Expect::Any).await.expect("retry");
        running.reconciled(4).await;
        // The first under the same event id with another body, past the de-duplication window
        // (no Nats-Msg-Id), after it was settled: recorded for review, paid never.
        let mut tampered = first.clone();
        tampered.fee = Some(Money { currency: "EUR".into(), exponent: 2, minor_units: "999999".into() });
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in first_envelope.headers() {
            headers.insert(name, value.as_str());
        }
        let subject = bus.namespace().subject(provenant_bus::Context::Inference, "request", "req-1").expect("subject");
        bus.jetstream()
            .publish_with_headers(subject, headers, prost::Message::encode_to_vec(&tampered).into())
            .await
            .expect("sent")
            .await
            .expect("stored");

        let deadline = Instant::now() + WAIT;
        let reviews = loop {
            let (_, reviews) = running.get(FINANCE_KEY, "/v1/reviews").await;
            if reviews["items"].as_array().is_some_and(|items| !items.is_empty()) || Instant::now() > deadline {
                break reviews;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let reconciliation = running.reconciled(4).await;
        assert_eq!(reconciliation["settled_inferences"], json!(4));
        assert_eq!(reconciliation["journal_matches_balances"], json!(true));
        assert_eq!(reconciliation["ledger_matches_log"], json!(true));
        let euro = &reconciliation["currencies"][0];
        assert_eq!(
            (euro["currency"].as_str(), euro["fees_in"].as_str(), euro["balanced"].as_bool()),
            (Some("EUR"), Some("1254"), Some(true))
        );

        // req-1, 1,001 cents by the default policy (10 / 20 / 10 / 60 %): protocol 100, bob
        // 200, olga 100 (both snapshots hers), contributors 601 by the receipt: ann 301,
        // dan 174, base pool 126 (its 20 % and cid's share under the noise floor).
        let (status, accounts) = running.get(FINANCE_KEY, "/v1/ledger/accounts?limit=500").await;
        assert_eq!(status, 200, "{accounts}");
        assert_eq!(balance(&accounts, "payable:contributor:ann"), "301");
        assert_eq!(balance(&accounts, "payable:contributor:dan"), "174");
        assert_eq!(balance(&accounts, "payable:contributor:cid"), "0");
        assert_eq!(balance(&accounts, &format!("pool:base:{BASE}")), "126");
        // req-2, 3 cents through bea's adapter with no receipt: 2 held for the adapter, 1 to bea.
        assert_eq!(balance(&accounts, &format!("held:unattributed:{ADAPTER}")), "2");
        assert_eq!(balance(&accounts, "payable:model_builder:bea"), "1");
        // req-3, 250 cents: protocol 25, bob 50, olga 25, 150 held for the base.
        assert_eq!(balance(&accounts, "payable:protocol"), "125");
        assert_eq!(balance(&accounts, "payable:model_builder:bob"), "250");
        assert_eq!(balance(&accounts, "payable:datanet_owner:olga"), "125");
        assert_eq!(balance(&accounts, &format!("held:unattributed:{BASE}")), "150");
        assert_eq!(balance(&accounts, "fees:caller:app"), "-1254");

        // The same event id with another body waits for a person.
        assert_eq!(reviews["items"].as_array().map(Vec::len), Some(1), "{reviews}");
        assert_eq!(reviews["items"][0]["code"], "inference.conflicting_duplicate");
        assert_eq!(reviews["items"][0]["inference_event_id"], first_envelope.event_id.to_string());

        // A correction is a reversing entry: every posting of req-3 (the gateway's 250) negated.
        let reversed = settle::handlers::settlement_id_for(&gateway_envelope.event_id.to_string());
        let reverse = |settlement: String, reason: &'static str| {
            let running = &running;
            async move {
                running
                    .call(
                        reqwest::Method::POST,
                        FINANCE_KEY,
                        &format!("/v1/settlements/{settlement}/reverse"),
                        Some(json!({"reason": reason})),
                    )
                    .await
            }
        };
        assert_eq!(reverse(reversed.clone(), " ").await.1["error"]["code"], "reversal.reason_invalid");
        let (status, reversal) = reverse(reversed.clone(), "the gateway billed a test request").await;
        assert_eq!(
            (status, reversal["kind"].as_str(), reversal["fee"]["minor_units"].as_str()),
            (201, Some("reversal"), Some("-250")),
            "{reversal}"
        );
        assert_eq!(reverse(reversed.clone(), "again").await.1["error"]["code"], "settlement.already_reversed");
        let reversal_id = reversal["settlement_id"].as_str().expect("id").to_owned();
        assert_eq!(reverse(reversal_id, "undo").await.1["error"]["code"], "settlement.is_reversal");
        let (_, accounts) = running.get(FINANCE_KEY, "/v1/ledger/accounts?limit=500").await;
        assert_eq!(balance(&accounts, "payable:protocol"), "100");
        assert_eq!(balance(&accounts, &format!("held:unattributed:{BASE}")), "0");
        let (_, reconciliation) = running.get(FINANCE_KEY, "/v1/reconciliation").await;
        assert_eq!(reconciliation["currencies"][0]["fees_in"], "1004", "{reconciliation}");
        assert_eq!(reconciliation["currencies"][0]["balanced"], json!(true));
        assert_eq!((reconciliation["ledger_transactions"].as_u64(), reconciliation["ledger_matches_log"].as_bool()), (Some(5), Some(true)));

        // A settlement in full, and a contributor's own statement (theirs only).
        let settlement_id = settle::handlers::settlement_id_for(&first_envelope.event_id.to_string());
        let (status, settlement) = running.get(FINANCE_KEY, &format!("/v1/settlements/{settlement_id}")).await;
        assert_eq!(status, 200, "{settlement}");
        assert_eq!(
            settlement["postings"][0],
            json!({"account": "fees:caller:app", "amount": {"currency": "EUR", "exponent": 2, "minor_units": "-1001"}})
        );
        assert_eq!(running.get(ANN_KEY, &format!("/v1/settlements/{settlement_id}")).await.0, 403);
        assert_eq!(running.get(ANN_KEY, "/v1/ledger/accounts").await.0, 403);
        let (_, statement) = running.get(ANN_KEY, "/v1/statements/me").await;
        assert_eq!(statement["balances"].as_array().map(Vec::len), Some(1), "{statement}");
        assert_eq!(statement["balances"][0]["balance"]["minor_units"], "301");

        running.stop().await;
        assert_ledger_replays(&config, database, &bus, 5, "four settlements and one reversal").await;
    }
}

async fn dead_letters(bus: &Bus, expected: usize) -> Vec<DeadLetter> {
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
async fn external_inference_events_are_checked_and_refusals_dead_lettered_with_their_reason() {
    let (config, database) = config(Backend::Sqlite).await;
    let running = start(&config).await;
    let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
    register_catalogue(&bus).await;
    publish(&bus, &served("ok-1", "gateway", false, "100", None)).await;
    running.reconciled(1).await;

    let mut unknown_model = served("bad-2", "infer", false, "100", None);
    unknown_model.model_id = "no-such-model".into();
    let mut wrong_weights = served("bad-3", "infer", false, "100", None);
    wrong_weights.base_weights_sha256 = digest('f');
    let mut absurd_counts = served("bad-4", "infer", false, "100", None);
    absurd_counts.output_tokens = 10_000_000;
    let mut half_adapter = served("bad-5", "infer", false, "100", None);
    half_adapter.adapter_model_id = ADAPTER.into();
    let mut adapter_as_base = served("bad-6", "infer", false, "100", None);
    adapter_as_base.model_id = ADAPTER.into();
    adapter_as_base.base_weights_sha256 = digest('b');
    // Credits dan through otto's Datanet, which the base was not trained on.
    let mut foreign_datanet = receipt();
    foreign_datanet.shares[2].datanet_id = "d-de".into();
    let foreign_datanet = served("bad-9", "infer", false, "100", Some(foreign_datanet));
    // Computed over the adapter's index, for the base's answer; over an index nobody built.
    let foreign_index =
        served("bad-10", "infer", false, "100", Some(AttributionReceipt { index_sha256: digest(ADAPTER_INDEX), ..receipt() }));
    let unknown_index = served("bad-11", "infer", false, "100", Some(AttributionReceipt { index_sha256: digest('7'), ..receipt() }));
    let refused = [
        (served("bad-1", "rogue", false, "100", None), "inference.unauthorised_producer"),
        // The gateway may report the base only, not the adapter.
        (served("bad-7", "gateway", true, "100", None), "inference.unauthorised_producer"),
        (unknown_model, "inference.unknown_model"),
        (wrong_weights, "inference.weights_mismatch"),
        (absurd_counts, "inference.token_counts_invalid"),
        (half_adapter, "inference.adapter_incomplete"),
        (adapter_as_base, "inference.not_a_base"),
        (foreign_datanet, "inference.receipt_datanet_unknown"),
        (foreign_index, "inference.receipt_index_mismatch"),
        (unknown_index, "inference.receipt_index_unknown"),
        // A second, different event for a request already settled.
        (served("ok-1", "gateway", false, "5", None), "inference.request_conflict"),
    ];
    for (event, _) in &refused {
        publish(&bus, event).await;
    }
    // One that claims another producer than the one that sent it.
    let spoofed = served("bad-8", "infer", false, "100", None);
    bus.publish(&Envelope::new(&spoofed, "gateway"), &spoofed, Expect::Any).await.expect("published");

    let letters = dead_letters(&bus, refused.len() + 1).await;
    let codes: Vec<&str> = letters.iter().map(|letter| letter.reason_code.as_str()).collect();
    let mut expected: Vec<&str> = refused.iter().map(|(_, code)| *code).collect();
    expected.push("inference.producer_mismatch");
    assert_eq!(codes, expected);
    assert!(letters.iter().all(|letter| letter.consumer == Settler::NAME && !letter.reason.is_empty()));
    let reconciliation = running.reconciled(1).await;
    assert_eq!(reconciliation["currencies"][0]["fees_in"], "100", "nothing refused was booked");
    running.stop().await;
    database.drop_database().await.expect("drop");
}

/// A receipt computed after the fact for `request_id` (whose `InferenceServed` was `served`).
fn attributed(request_id: &str, served: &Envelope, receipt: AttributionReceipt) -> InferenceAttributed {
    InferenceAttributed { request_id: request_id.into(), inference_event_id: served.event_id.to_string(), receipt: Some(receipt) }
}

/// Polls the reconciliation until the ledger holds `transactions` and agrees with the log.
async fn ledger_holds(running: &Running, transactions: u64) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = running.get(FINANCE_KEY, "/v1/reconciliation").await;
        if body["ledger_transactions"] == json!(transactions) && body["ledger_matches_log"] == json!(true) {
            return body;
        }
        assert!(Instant::now() < deadline, "ledger never reached {transactions} transactions: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_late_receipt_pays_out_what_was_held_once_and_a_reversal_takes_the_payout_back() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (config, database) = config(backend).await;
        let running = start(&config).await;
        let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
        register_catalogue(&bus).await;

        // 1,001 cents through bea's adapter without a receipt: the contributors' 601 are held.
        let served_envelope = publish(&bus, &served("late-1", "infer", true, "1001", None)).await;
        running.reconciled(1).await;
        let (_, accounts) = running.get(FINANCE_KEY, "/v1/ledger/accounts?limit=500").await;
        assert_eq!(balance(&accounts, &format!("held:unattributed:{ADAPTER}")), "601");

        // The adapter was trained on otto's Datanet: its contributors earn through that one.
        let with_weights = AttributionReceipt {
            model_weights_sha256: digest('a'),
            adapter_weights_sha256: digest('b'),
            index_sha256: digest(ADAPTER_INDEX),
            ..receipt()
        };
        let mut signed = with_weights.clone();
        signed.shares.iter_mut().for_each(|share| share.datanet_id = "d-de".into());
        let send = |event: InferenceAttributed, producer: &'static str| {
            let bus = &bus;
            async move {
                let envelope = Envelope::new(&event, producer);
                bus.publish(&envelope, &event, Expect::Any).await.expect("published");
                envelope
            }
        };
        // Refused: from a producer that may not attribute, with other weights, with shares that
        // are not one whole.
        send(attributed("late-1", &served_envelope, signed.clone()), "gateway").await;
        let other_weights = AttributionReceipt { adapter_weights_sha256: digest('f'), ..signed.clone() };
        send(attributed("late-1", &served_envelope, other_weights), "infer").await;
        let not_whole = AttributionReceipt { base_pool_ppb: 0, ..signed.clone() };
        send(attributed("late-1", &served_envelope, not_whole), "infer").await;
        // … and one that credits through olga's Datanet, which the adapter was not trained on.
        send(attributed("late-1", &served_envelope, with_weights), "infer").await;
        let letters = dead_letters(&bus, 4).await;
        let codes: Vec<&str> = letters.iter().map(|letter| letter.reason_code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "attribution.unauthorised_producer",
                "attribution.weights_mismatch",
                "inference.receipt_invalid",
                "inference.receipt_datanet_unknown"
            ]
        );

        // The receipt, twice (a redelivery), and a second receipt: the held 601 are paid out once,
        // split as a receipt with the inference would have split them.
        let first = send(attributed("late-1", &served_envelope, signed.clone()), "infer").await;
        let again = attributed("late-1", &served_envelope, signed.clone());
        bus.publish(&first, &again, Expect::Any).await.expect("redelivered");
        let second = AttributionReceipt {
            shares: vec![ContributorShare { contributor_id: "eve".into(), share_ppb: 1_000_000_000, datanet_id: "d-de".into() }],
            base_pool_ppb: 0,
            ..signed.clone()
        };
        send(attributed("late-1", &served_envelope, second), "infer").await;
        ledger_holds(&running, 2).await;
        // Let the second receipt be judged too before reading the balances.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reconciliation = ledger_holds(&running, 2).await;
        assert_eq!(reconciliation["currencies"][0]["balanced"], json!(true), "{reconciliation}");
        assert_eq!(reconciliation["currencies"][0]["held"], "0", "{reconciliation}");
        let (_, accounts) = running.get(FINANCE_KEY, "/v1/ledger/accounts?limit=500").await;
        assert_eq!(balance(&accounts, &format!("held:unattributed:{ADAPTER}")), "0");
        assert_eq!(balance(&accounts, "payable:contributor:ann"), "301");
        assert_eq!(balance(&accounts, "payable:contributor:dan"), "174");
        assert_eq!(balance(&accounts, "payable:contributor:eve"), "0");
        assert_eq!(balance(&accounts, &format!("pool:base:{ADAPTER}")), "126");
        let settlement_id = settle::handlers::settlement_id_for(&served_envelope.event_id.to_string());
        let release_id = settle::handlers::release_id_for(&settlement_id);
        let (status, release) = running.get(FINANCE_KEY, &format!("/v1/settlements/{release_id}")).await;
        assert_eq!(
            (status, release["kind"].as_str(), release["fee"]["minor_units"].as_str()),
            (200, Some("attribution"), Some("0")),
            "{release}"
        );
        let ann_line = release["postings"].as_array().expect("postings").iter().find(|line| line["account"] == "payable:contributor:ann");
        assert_eq!(ann_line.map(|line| line["datanet_id"].clone()), Some(json!("d-de")), "{release}");
        let (status, refused) = running
            .call(reqwest::Method::POST, FINANCE_KEY, &format!("/v1/settlements/{release_id}/reverse"), Some(json!({"reason": "no"})))
            .await;
        assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("settlement.is_attribution")), "{refused}");

        // Reversing the inference's settlement takes the payout back with it.
        let (status, _) = running.get(ANN_KEY, "/v1/requests/late-1/settlements").await;
        assert_eq!(status, 403);
        assert_eq!(running.get(FINANCE_KEY, "/v1/requests/no-such-request/settlements").await.1["error"]["code"], "settlement.not_found");
        let (status, reversal) = running
            .call(
                reqwest::Method::POST,
                FINANCE_KEY,
                &format!("/v1/settlements/{settlement_id}/reverse"),
                Some(json!({"reason": "refunded"})),
            )
            .await;
        assert_eq!(status, 201, "{reversal}");
        let reconciliation = ledger_holds(&running, 4).await;
        assert_eq!(reconciliation["currencies"][0]["fees_in"], "0", "{reconciliation}");
        // The request's whole story, in booking order.
        let (status, story) = running.get(FINANCE_KEY, "/v1/requests/late-1/settlements").await;
        let kinds: Vec<&str> = story["items"].as_array().expect("items").iter().filter_map(|item| item["kind"].as_str()).collect();
        assert_eq!((status, kinds), (200, vec!["inference", "attribution", "reversal", "reversal"]), "{story}");
        assert_eq!(story["items"][1]["settlement_id"], json!(release_id));
        let (_, accounts) = running.get(FINANCE_KEY, "/v1/ledger/accounts?limit=500").await;
        for account in ["payable:contributor:ann", "payable:contributor:dan", "held:unattributed:adapter-de", "pool:base:adapter-de"] {
            assert_eq!(balance(&accounts, account), "0", "{account}");
        }

        running.stop().await;
        assert_ledger_replays(&config, database, &bus, 4, "a settlement, its release and both reversals").await;
    }
}

#[tokio::test]
async fn a_deployment_with_minute_periods_closes_each_minute_once_it_has_ended() {
    let (mut config, database) = config(Backend::Sqlite).await;
    config.settlement.period = PeriodLength::Minute;
    config.settlement.close_grace_seconds = 0;
    let running = start(&config).await;
    let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
    register_catalogue(&bus).await;
    let then = chrono::Utc::now() - chrono::Duration::minutes(3);
    for (index, occurred_at) in [then, then, chrono::Utc::now()].into_iter().enumerate() {
        let event = served(&format!("minute-{index}"), "infer", false, "100", None);
        let mut envelope = Envelope::new(&event, "infer");
        envelope.occurred_at = occurred_at;
        bus.publish(&envelope, &event, Expect::NoEvents).await.expect("published");
    }
    running.reconciled(3).await;
    let close = |period: String| {
        let running = &running;
        async move { running.call(reqwest::Method::POST, FINANCE_KEY, &format!("/v1/periods/{period}/close"), None).await }
    };
    let minute = |instant| settle::domain::period::Period::containing(PeriodLength::Minute, instant).id();
    assert_eq!(close(minute(chrono::Utc::now() + chrono::Duration::minutes(1))).await.1["error"]["code"], "period.not_ended");
    // A month is not a period here.
    assert_eq!(
        close(settle::domain::period::Period::containing(PeriodLength::Month, then).id()).await.1["error"]["code"],
        "period.invalid"
    );
    let (status, closed) = close(minute(then)).await;
    assert_eq!((status, closed["settlement_count"].as_u64()), (201, Some(2)), "{closed}");
    assert_eq!(closed["ends_at"].as_str().map(|end| end.ends_with(":00Z")), Some(true), "{closed}");
    assert_eq!(close(minute(then)).await.1["error"]["code"], "period.already_closed");
    // A late inference of the closed minute goes to the next open one.
    let late = served("minute-late", "infer", false, "100", None);
    let mut envelope = Envelope::new(&late, "infer");
    envelope.occurred_at = then;
    bus.publish(&envelope, &late, Expect::NoEvents).await.expect("published");
    running.reconciled(4).await;
    let settlement_id = settle::handlers::settlement_id_for(&envelope.event_id.to_string());
    let (_, settlement) = running.get(FINANCE_KEY, &format!("/v1/settlements/{settlement_id}")).await;
    assert_eq!(settlement["period_id"], json!(minute(then + chrono::Duration::minutes(1))), "{settlement}");
    let metrics = reqwest::get(format!("{}/metrics", running.base_url)).await.expect("answers").text().await.expect("text");
    for family in [
        "settle_inferences_settled_total{currency=\"EUR\"}",
        "bus_events_applied_total{consumer=\"settle-ledger\"}",
        "bus_consumer_pending{consumer=\"settle-inferences\"}",
        "http_requests_total{service=\"settle\",method=\"POST\",route=\"/v1/periods/{period_id}/close\",status=\"201\"}",
        "http_requests_total{service=\"settle\",method=\"POST\",route=\"/v1/periods/{period_id}/close\",status=\"409\"}",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}:\n{metrics}");
    }
    provenant_test_support::prometheus::assert_valid_exposition(&metrics);
    running.stop().await;
    database.drop_database().await.expect("drop");
}

/// The settler looks for an open period and then appends; a close can land in between. Such a
/// settlement must not sit in the closed period after its report's last row (paid out in no
/// report): the ledger books it in the next open period, whose report then holds it.
#[tokio::test]
async fn a_settlement_appended_while_its_period_closes_is_reported_in_the_next_open_period() {
    let (mut config, database) = config(Backend::Sqlite).await;
    config.settlement.period = PeriodLength::Minute;
    config.settlement.close_grace_seconds = 0;
    let running = start(&config).await;
    let bus = Bus::connect(&BusConfig { producer: "settle".into(), ..config.bus.clone() }).await.expect("bus");
    let closing = settle::domain::period::Period::containing(PeriodLength::Minute, chrono::Utc::now() - chrono::Duration::minutes(10));
    let next = closing.next();
    let money = |units: &str| Some(Money { currency: "EUR".into(), exponent: 2, minor_units: units.into() });
    let settled = |request_id: &str| InferenceSettled {
        settlement_id: uuid::Uuid::now_v7().to_string(),
        inference_event_id: uuid::Uuid::now_v7().to_string(),
        request_id: request_id.into(),
        model_id: BASE.into(),
        fee: money("100"),
        revenue_policy_version: 1,
        postings: vec![
            Posting { account: "fees:caller:app".into(), amount: money("-100"), datanet_id: String::new() },
            Posting { account: "payable:protocol".into(), amount: money("100"), datanet_id: String::new() },
        ],
        period_id: closing.id(),
    };
    // Appended after the closer fixed the period's last row, before its close event landed ...
    let before = settled("before-the-close");
    let appended = bus.publish(&Envelope::new(&before, "settle"), &before, Expect::NoEvents).await.expect("published");
    ledger_holds(&running, 1).await;
    let close = SettlementPeriodClosed {
        period_id: closing.id(),
        starts_at: closing.starts_at().to_rfc3339(),
        ends_at: closing.ends_at().to_rfc3339(),
        through_sequence: appended.sequence - 1,
        closed_by: Some(Principal { id: "fin".into(), kind: 4 }),
        ..Default::default()
    };
    bus.publish(&Envelope::new(&close, "settle"), &close, Expect::NoEvents).await.expect("closed");
    // ... and by a settler that looked before the close landed.
    let after = settled("after-the-close");
    bus.publish(&Envelope::new(&after, "settle"), &after, Expect::NoEvents).await.expect("published");
    ledger_holds(&running, 2).await;
    for raced in [&before, &after] {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, view) = running.get(FINANCE_KEY, &format!("/v1/settlements/{}", raced.settlement_id)).await;
            if status == 200 && view["period_id"] == json!(next.id()) {
                break;
            }
            assert!(Instant::now() < deadline, "{} stayed in the closed period: {view}", raced.request_id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (status, closed) = running.call(reqwest::Method::POST, FINANCE_KEY, &format!("/v1/periods/{}/close", next.id()), None).await;
    assert_eq!((status, closed["settlement_count"].as_u64()), (201, Some(2)), "{closed}");
    running.stop().await;
    assert_ledger_replays(&config, database, &bus, 4, "two settlements and two closes").await;
}

/// The settle service's bus and database with the catalogue registered and projected (models,
/// Datanets), for a test that runs the settler itself.
async fn catalogued(config: &Config) -> (Bus, DatabaseConnection) {
    let bus = Bus::connect(&BusConfig { producer: "settle".into(), ..config.bus.clone() }).await.expect("bus");
    bus.declare_streams().await.expect("streams");
    let db = settle::open_database(config.database.url.expose()).await.expect("db");
    register_catalogue(&bus).await;
    Consumer::new(bus.clone(), db.clone(), settle::handlers::ModelProjector::default(), fast_consumer())
        .replay()
        .await
        .expect("models projected");
    Consumer::new(bus.clone(), db.clone(), settle::handlers::DatanetProjector::default(), fast_consumer())
        .replay()
        .await
        .expect("datanets projected");
    (bus, db)
}

#[tokio::test]
async fn a_settler_killed_before_or_after_its_commit_settles_each_inference_exactly_once() {
    for point in [CrashPoint::BeforeCommit, CrashPoint::AfterCommitBeforeAck] {
        let (config, database) = config(Backend::Sqlite).await;
        // The catalogue first, so that the crashing batch holds the inferences.
        let (bus, db) = catalogued(&config).await;
        for index in 0..5 {
            publish(&bus, &served(&format!("req-{index}"), "infer", index % 2 == 1, "100", None)).await;
        }
        let settler = || Settler::new(bus.clone(), config.settlement.clone()).expect("settler");
        let crashing = Consumer::new(bus.clone(), db.clone(), settler(), fast_consumer()).crash_at(point);
        let outcome = crashing.run(std::future::pending()).await;
        assert!(matches!(outcome, Err(provenant_bus::Error::InjectedCrash(_))), "{outcome:?}");
        db.close().await.expect("closed");

        let running = start(&config).await;
        let reconciliation = running.reconciled(5).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await; // past ack_wait: any redelivery has happened
        let again = running.reconciled(5).await;
        assert_eq!(again, reconciliation, "{point:?}: nothing settled twice");
        assert_eq!(again["settled_inferences"], json!(5));
        assert_eq!(again["currencies"][0]["fees_in"], "500");
        running.stop().await;
        database.drop_database().await.expect("drop");
    }
}

/// The settler reads and writes a batch's settlements together (`Settler::prepare`, `flush`):
/// a second, different event for a request settled earlier in the same batch is still refused,
/// and the batch's other settlements stand.
#[tokio::test]
async fn a_batch_holding_two_events_for_one_request_settles_the_first_and_refuses_the_second() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (config, database) = config(backend).await;
        let (bus, db) = catalogued(&config).await;
        let first = publish(&bus, &served("req-twice", "infer", false, "100", None)).await;
        publish(&bus, &served("req-once", "infer", true, "40", None)).await;
        publish(&bus, &served("req-twice", "gateway", false, "5", None)).await;
        let settler = Settler::new(bus.clone(), config.settlement.clone()).expect("settler");
        let replay = Consumer::new(bus.clone(), db.clone(), settler, fast_consumer()).replay().await.expect("settled");
        assert_eq!((replay.stats.applied, replay.stats.dead_lettered), (2, 1), "{backend:?}: {:?}", replay.stats);
        let settled = settle::projections::inferences::find_by_request(&db, "req-twice").await.expect("read").expect("settled");
        assert_eq!(settled.inference_event_id, first.event_id.to_string(), "{backend:?}: the first event stands");
        assert_eq!(settle::projections::inferences::count_settled(&db).await.expect("count"), 2, "{backend:?}");
        assert_eq!(bus.count_messages(provenant_bus::Context::Settlement, "settlement").await.expect("count"), 2, "{backend:?}");
        db.close().await.expect("closed");
        database.drop_database().await.expect("drop");
    }
}

#[tokio::test]
async fn a_builder_sets_a_whole_policy_that_splits_later_fees() {
    let (config, database) = config(Backend::Sqlite).await;
    let running = start(&config).await;
    let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
    register_catalogue(&bus).await;
    let path = format!("/v1/revenue-policies/{BASE}");
    let deadline = Instant::now() + WAIT;
    let (_, current) = loop {
        let (status, body) = running.get(BUILDER_KEY, &path).await;
        if status == 200 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((current["source"].as_str(), current["version"].as_u64()), (Some("default"), Some(0)), "{current}");

    let put = |key: &'static str, parts: Value| {
        let running = &running;
        let path = path.clone();
        async move { running.call(reqwest::Method::PUT, key, &path, Some(json!({ "parts": parts }))).await }
    };
    let whole = json!([{"beneficiary": "protocol", "share_ppb": 50_000_000}, {"beneficiary": "contributors", "share_ppb": 950_000_000}]);
    let (status, body) = put(ANN_KEY, whole.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("auth.not_builder")));
    let (status, body) = put(BUILDER_KEY, json!([{"beneficiary": "protocol", "share_ppb": 50_000_000}])).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("policy.not_whole")));
    let (status, body) = put(BUILDER_KEY, json!([{"beneficiary": "nobody", "share_ppb": 1_000_000_000}])).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("request.invalid_body")));
    let (status, body) = put(BUILDER_KEY, whole.clone()).await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = put(BUILDER_KEY, whole).await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(2)), "{body}");
    assert_eq!(running.get(BUILDER_KEY, "/v1/revenue-policies/unknown").await.0, 404);
    // The adapter has none of its own: its base's applies.
    let (_, adapter) = running.get(BUILDER_KEY, &format!("/v1/revenue-policies/{ADAPTER}")).await;
    assert_eq!((adapter["source"].as_str(), adapter["version"].as_u64()), (Some("base"), Some(2)), "{adapter}");

    publish(&bus, &served("req-1", "infer", false, "1000", None)).await;
    running.reconciled(1).await;
    let (_, accounts) = running.get(FINANCE_KEY, "/v1/ledger/accounts").await;
    assert_eq!(balance(&accounts, "payable:protocol"), "50");
    assert_eq!(balance(&accounts, &format!("held:unattributed:{BASE}")), "950");
    running.stop().await;
    database.drop_database().await.expect("drop");
}

/// The Python that has pandas and pyarrow (`scripts/bootstrap.sh --api-fuzz`).
fn report_python() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/st-venv/bin/python")
}

#[tokio::test]
async fn closing_a_month_issues_a_report_that_replays_byte_for_byte_and_opens_in_pandas() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (config, database) = config(backend).await;
        let running = start(&config).await;
        let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
        register_catalogue(&bus).await;
        // Three inferences served in a month that has ended, one this month.
        let then = chrono::Utc::now() - chrono::Duration::days(40);
        let past = settle::domain::period::Period::containing(PeriodLength::Month, then);
        for (index, (adapter, fee, receipt)) in
            [(false, "1001", Some(receipt())), (true, "3", None), (false, "250", None)].into_iter().enumerate()
        {
            let event = served(&format!("old-{index}"), "infer", adapter, fee, receipt);
            let mut envelope = Envelope::new(&event, "infer");
            envelope.occurred_at = then;
            bus.publish(&envelope, &event, Expect::NoEvents).await.expect("published");
        }
        publish(&bus, &served("now-1", "infer", false, "7", None)).await;
        running.reconciled(4).await;

        let close = |key: &'static str, period: String| {
            let running = &running;
            async move { running.call(reqwest::Method::POST, key, &format!("/v1/periods/{period}/close"), None).await }
        };
        let this_month = settle::domain::period::Period::containing(PeriodLength::Month, chrono::Utc::now()).id();
        assert_eq!(close(FINANCE_KEY, this_month).await.1["error"]["code"], "period.not_ended");
        assert_eq!(close(FINANCE_KEY, "2026-13".into()).await.1["error"]["code"], "period.invalid");
        assert_eq!(close(ANN_KEY, past.id()).await.0, 403);
        let (status, closed) = close(FINANCE_KEY, past.id()).await;
        assert_eq!(status, 201, "{closed}");
        assert_eq!(closed["settlement_count"], json!(3));
        assert_eq!(closed["artifacts"].as_array().map(Vec::len), Some(3));
        let report_sha256 = closed["report_sha256"].as_str().expect("digest").to_owned();
        assert_eq!(close(FINANCE_KEY, past.id()).await.1["error"]["code"], "period.already_closed");
        let (_, periods) = running.get(FINANCE_KEY, "/v1/periods").await;
        assert_eq!(periods["items"][0]["report_sha256"], json!(report_sha256), "{periods}");

        // The JSON is the report the event's digest names; CSV and Parquet carry its evidence.
        let download = |format: &'static str| {
            let running = &running;
            let url = format!("{}/v1/periods/{}/reports/{format}", running.base_url, past.id());
            async move {
                let response = reqwest::Client::new().get(url).bearer_auth(FINANCE_KEY).send().await.expect("answers");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("body")
            }
        };
        let json_bytes = download("json").await;
        assert_eq!(provenant_bus::sha256_hex(&json_bytes), report_sha256);
        let report: Value = serde_json::from_slice(&json_bytes).expect("json");
        assert_eq!(report["currencies"][0]["fees_in"], "1254");
        let ann = report["payouts"].as_array().expect("payouts").iter().find(|payout| payout["account"] == "payable:contributor:ann");
        assert_eq!(ann.map(|payout| payout["amount"].clone()), Some(json!("301")));
        // What olga's Datanet earned: her 100 + 25 as its owner, ann's 301 and dan's 174 through
        // it (old-0, old-2); otto's earned nothing (the adapter's 3 cents left no owner's cent).
        assert_eq!(
            report["datanets"],
            json!([{"datanet_id": "d-en", "currency": "EUR", "exponent": 2, "owner": "125", "contributors": "475", "total": "600", "settlements": 2}])
        );
        let rows: usize =
            report["evidence"].as_array().expect("evidence").iter().map(|item| item["postings"].as_array().map_or(0, Vec::len)).sum();
        let folder = tempfile::tempdir().expect("folder");
        let (csv, parquet, json_path) =
            (folder.path().join("report.csv"), folder.path().join("report.parquet"), folder.path().join("report.json"));
        std::fs::write(&csv, download("csv").await).expect("written");
        std::fs::write(&parquet, download("parquet").await).expect("written");
        std::fs::write(&json_path, &json_bytes).expect("written");
        let opened = std::process::Command::new(report_python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_reports.py"))
            .args([&csv, &parquet])
            .arg(rows.to_string())
            .arg(&json_path)
            .output()
            .expect("python with pandas and pyarrow (scripts/bootstrap.sh --api-fuzz)");
        assert!(opened.status.success(), "{}{}", String::from_utf8_lossy(&opened.stdout), String::from_utf8_lossy(&opened.stderr));

        // A late inference of the closed month goes to the next open month.
        let late = served("old-late", "infer", false, "100", None);
        let mut envelope = Envelope::new(&late, "infer");
        envelope.occurred_at = then;
        bus.publish(&envelope, &late, Expect::NoEvents).await.expect("published");
        running.reconciled(5).await;
        let settlement_id = settle::handlers::settlement_id_for(&envelope.event_id.to_string());
        let (_, settlement) = running.get(FINANCE_KEY, &format!("/v1/settlements/{settlement_id}")).await;
        assert_eq!(settlement["period_id"], json!(past.next().id()), "{settlement}");

        // Replaying the log into an empty database gives the same report, byte for byte.
        running.stop().await;
        let through = closed["through_sequence"].as_i64().expect("through");
        let fresh = database.sibling().await.expect("fresh database");
        let rebuilt = provenant_bus::store::connect(&fresh.url).await.expect("db");
        settle_migration::Migrator::up(&rebuilt, None).await.expect("migrates");
        Consumer::new(bus.clone(), rebuilt.clone(), LedgerProjector::default(), fast_consumer()).replay().await.expect("replays");
        let settled = settle::projections::ledger::period_transactions(&rebuilt, &past.id(), through).await.expect("rows");
        let replayed = settle::reports::build(past, u64::try_from(through).expect("positive"), settled).render().expect("renders");
        assert_eq!(replayed.sha256, report_sha256, "{backend:?}: the report is a function of the log");
        assert_eq!(replayed.json, json_bytes.to_vec());
        fresh.drop_database().await.expect("drop");
        database.drop_database().await.expect("drop");
    }
}

/// An adapter's answer is split by the adapter's own policy where it has one, else by its base's
/// (one lookup per inference, on both databases).
#[tokio::test]
async fn the_governing_policy_is_the_models_own_else_its_bases() {
    use settle::domain::policy::{Beneficiary, RevenuePolicy};
    use settle::projections::policies;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let database = TestDatabase::create(backend).await.expect("database");
        let connection = provenant_bus::store::connect(&database.url).await.expect("db");
        settle_migration::Migrator::up(&connection, None).await.expect("migrates");
        let policy = |version| RevenuePolicy::new(version, [(Beneficiary::Protocol, 1_000_000_000)]).expect("whole");
        let governing = |settled: &'static str| {
            let connection = connection.clone();
            async move { policies::governing(&connection, settled, BASE).await.expect("reads").map(|row| (row.model_id, row.version)) }
        };
        assert_eq!(governing(ADAPTER).await, None, "{backend:?}: no policy yet");
        policies::upsert(&connection, BASE, &policy(3), "bob", 1).await.expect("base policy");
        assert_eq!(governing(ADAPTER).await, Some((BASE.to_owned(), 3)), "{backend:?}: the adapter inherits");
        assert_eq!(governing(BASE).await, Some((BASE.to_owned(), 3)), "{backend:?}: the base's own");
        policies::upsert(&connection, ADAPTER, &policy(1), "bob", 2).await.expect("adapter policy");
        assert_eq!(governing(ADAPTER).await, Some((ADAPTER.to_owned(), 1)), "{backend:?}: the adapter's own comes first");
        assert_eq!(governing(BASE).await, Some((BASE.to_owned(), 3)), "{backend:?}: the base keeps its own");
        database.drop_database().await.expect("drop");
    }
}
