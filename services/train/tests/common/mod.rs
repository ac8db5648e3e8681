//! The train service under test: spawned on a free port against the shared NATS and a
//! database of its own, with Datanets and sealed snapshots published as ingest and validate
//! would publish them.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::time::{Duration, Instant};

use provenant_bus::{Bus, BusConfig, ConsumerConfig, Envelope, Expect};
use provenant_config::Secret;
use provenant_events::proto::common::v1::{BlobRef, Principal};
use provenant_events::proto::datanet::v1::{DatanetCreated, DatanetSpec, RecordFormat, SnapshotSealed};
use provenant_events::snapshot::{self, Entry};
use provenant_runtime::Shutdown;
use provenant_runtime::identity::{ApiKeyConfig, Role};
use provenant_test_support::{Backend, TestDatabase};
use serde_json::{Value, json};
use train::{Application, Config, Mode};

pub const BUILDER_KEY: &str = "pvk_test_builder";
pub const CONTRIBUTOR_KEY: &str = "pvk_test_contributor";

fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header"));
    reqwest::Client::builder().default_headers(headers).build().expect("client")
}

fn api_key(principal: &str, roles: Vec<Role>, key: &str) -> ApiKeyConfig {
    ApiKeyConfig { principal: principal.into(), roles, key_sha256: hex::encode(provenant_runtime::identity::hash_key(key)) }
}

pub struct TestApp {
    pub base_url: String,
    /// Authenticated as a model builder.
    pub http: reqwest::Client,
    /// Authenticated as a contributor only.
    pub contributor: reqwest::Client,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub config: Config,
    pub bus: Bus,
    pub database: TestDatabase,
}

/// The service on SQLite with `workers` in-process workers that hand a dead worker's job on
/// after 2 s.
pub async fn spawn_app(workers: usize) -> TestApp {
    spawn_app_on(Backend::Sqlite, workers).await
}

pub async fn spawn_app_on(backend: Backend, workers: usize) -> TestApp {
    provenant_test_support::init_logs();
    provenant_telemetry::install_crypto_provider();
    let database = TestDatabase::create(backend).await.expect("test database");
    let mut config: Config = provenant_config::load_with(
        train::BASE_YAML,
        &provenant_config::Layers { directory: "/nonexistent".into(), environment: "test".into() },
        std::iter::empty(),
    )
    .expect("base configuration loads");
    config.http.port = 0;
    config.bus =
        BusConfig { subject_root: provenant_test_support::unique_root(), ..BusConfig::new(&provenant_test_support::nats_url(), "train") };
    config.database.url = Secret::new(database.url.clone());
    config.identity.api_keys =
        vec![api_key("builder", vec![Role::ModelBuilder], BUILDER_KEY), api_key("carol", vec![Role::Contributor], CONTRIBUTOR_KEY)];
    config.consumer = ConsumerConfig { batch_size: 64, ack_wait_seconds: 2, max_deliver: 4, initial_backoff_ms: 50, max_backoff_ms: 500 };
    config.workers.count = workers;
    config.workers.ack_wait_seconds = 2;
    config.workers.heartbeat_seconds = 1;
    config.workers.progress_interval_ms = 0;
    let app = Application::build(config.clone(), Mode::Service).await.expect("builds");
    let base_url = format!("http://{}", app.address());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let bus = Bus::connect(&BusConfig { producer: "test".into(), ..config.bus.clone() }).await.expect("bus");
    TestApp {
        base_url,
        http: client_with_key(BUILDER_KEY),
        contributor: client_with_key(CONTRIBUTOR_KEY),
        shutdown,
        task,
        config,
        bus,
        database,
    }
}

impl TestApp {
    /// Stops the service (consumers finish their batch) and hands back its configuration and
    /// database.
    pub async fn stop(self) -> (Config, TestDatabase) {
        self.shutdown.cancel();
        self.task.await.expect("joins").expect("stops cleanly");
        (self.config, self.database)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(format!("{}{path}", self.base_url)).json(body).send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.base_url)).send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// Polls a read until `done` is satisfied (at most 120 s: training in a debug build).
    pub async fn get_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{path} never satisfied the test: last {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits a job and returns its id.
    pub async fn submit(&self, job: &Value) -> String {
        let (status, body) = self.post("/v1/training-jobs", job).await;
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().expect("job id").to_owned()
    }

    /// Waits until the job is finished and returns it.
    pub async fn finished(&self, job_id: &str) -> Value {
        self.get_until(&format!("/v1/training-jobs/{job_id}"), |job| {
            matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled"))
        })
        .await
    }

    /// A completed job's registered model.
    pub async fn model_of(&self, job_id: &str) -> Value {
        let job = self.finished(job_id).await;
        assert_eq!(job["status"], "completed", "{job}");
        let model_id = job["model_id"].as_str().expect("model id");
        self.get_until(&format!("/v1/models/{model_id}"), |_| true).await
    }

    /// A plain-text Datanet whose contributions are `records` (one per contributor in turn),
    /// sealed into snapshot `<datanet>-1`; returns the snapshot id and root. The projection
    /// has it when this returns.
    pub async fn sealed_datanet(&self, datanet_id: &str, records: &[String]) -> (String, String) {
        let created = DatanetCreated {
            datanet_id: datanet_id.into(),
            owner: Some(Principal { id: "owner".into(), kind: 2 }),
            spec: Some(DatanetSpec { name: datanet_id.into(), record_format: RecordFormat::PlainText.into(), ..Default::default() }),
        };
        self.bus.publish(&Envelope::new(&created, "ingest"), &created, Expect::NoEvents).await.expect("datanet");
        let contents = self.bus.blob_store("contributions").await.expect("bucket");
        let mut entries = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let stored = contents.put(record.as_bytes()).await.expect("content");
            entries.push(Entry {
                contribution_id: format!("{datanet_id}-c{index}"),
                content_sha256: stored.sha256,
                contributor_id: format!("contributor-{}", index % 3),
                duplicate_cluster_id: format!("{datanet_id}-c{index}"),
            });
        }
        let manifest = snapshot::manifest(&entries);
        let stored = self.bus.blob_store("snapshots").await.expect("bucket").put(&manifest).await.expect("manifest");
        let snapshot_id = format!("{datanet_id}-1");
        let root = hex::encode(snapshot::root(&entries));
        let sealed = SnapshotSealed {
            snapshot_id: snapshot_id.clone(),
            datanet_id: datanet_id.into(),
            ordinal: 1,
            merkle_root: root.clone(),
            entry_count: entries.len() as u64,
            manifest: Some(BlobRef {
                sha256: stored.sha256,
                size_bytes: stored.size_bytes,
                bucket: stored.bucket,
                media_type: "application/x-ndjson".into(),
            }),
            sealed_by: Some(Principal { id: "owner".into(), kind: 2 }),
            previous_snapshot_id: String::new(),
        };
        self.bus.publish(&Envelope::new(&sealed, "validate"), &sealed, Expect::NoEvents).await.expect("sealed");
        // Wait for the projection: a job pinning it is checked against it.
        let probe = json!({"name": "probe", "base_model_id": "none", "snapshots": [{"snapshot_id": snapshot_id, "merkle_root": root}], "method": {"type": "full"},
            "hyperparameters": {"steps": 1, "batch_size": 1, "sequence_length": 8, "learning_rate": 0.001}});
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, body) = self.post("/v1/training-jobs", &probe).await;
            if body["error"]["code"] == "model.not_found" {
                break;
            }
            assert!(Instant::now() < deadline, "the snapshot never reached the projection: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (snapshot_id, root)
    }
}

/// Short sentences in one of a few styles, for tiny training runs.
pub fn sentences(style: &str, count: usize) -> Vec<String> {
    let (subjects, verbs, objects): (&[&str], &[&str], &[&str]) = match style {
        "en" => (
            &["the cat", "a dog", "my friend", "the old man", "our teacher"],
            &["sees", "likes", "finds", "follows"],
            &["the river", "a red ball", "the small house", "an apple"],
        ),
        _ => (
            &["der hund", "die katze", "mein freund", "der alte mann"],
            &["sieht", "mag", "findet", "folgt"],
            &["dem fluss", "einen ball", "das kleine haus", "einen apfel"],
        ),
    };
    (0..count)
        .map(|index| {
            let subject = subjects[index % subjects.len()];
            let verb = verbs[(index / subjects.len()) % verbs.len()];
            let object = objects[(index / 3) % objects.len()];
            format!("{subject} {verb} {object} number {index}.")
        })
        .collect()
}

/// A tiny from-scratch job on `snapshot`.
pub fn scratch_job(name: &str, snapshot: &(String, String), steps: u32, checkpoint_every: u32) -> Value {
    json!({
        "name": name,
        "architecture": {"layers": 1, "heads": 2, "width": 32, "context_length": 32},
        "snapshots": [{"snapshot_id": snapshot.0, "merkle_root": snapshot.1}],
        "method": {"type": "full"},
        "hyperparameters": {"steps": steps, "batch_size": 4, "sequence_length": 32, "learning_rate": 0.01, "warmup_steps": 2, "checkpoint_every": checkpoint_every},
        "seed": 11,
        "held_out_fraction": 0.2
    })
}
