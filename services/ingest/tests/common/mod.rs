//! The ingest service under test: spawned on a free port against the shared NATS and a
//! database of its own, with API keys for alice (Datanet owner) and bob (contributor).

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::time::{Duration, Instant};

use ingest::{Application, Config};
use provenant_bus::{BusConfig, ConsumerConfig};
use provenant_config::Secret;
use provenant_runtime::Shutdown;
use provenant_runtime::identity::{ApiKeyConfig, Role};
use provenant_test_support::{Backend, TestDatabase};
use serde_json::Value;

pub const ALICE_KEY: &str = "pvk_test_alice_owner";
pub const BOB_KEY: &str = "pvk_test_bob_contributor";

/// A client that sends `key` as its bearer token on every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header"));
    reqwest::Client::builder().default_headers(headers).build().expect("client")
}

pub fn api_key(principal: &str, roles: Vec<Role>, key: &str) -> ApiKeyConfig {
    ApiKeyConfig { principal: principal.into(), roles, key_sha256: hex::encode(provenant_runtime::identity::hash_key(key)) }
}

pub struct TestApp {
    pub base_url: String,
    /// Authenticated as alice (contributor and Datanet owner).
    pub http: reqwest::Client,
    /// Authenticated as bob (contributor only).
    pub bob: reqwest::Client,
    pub anonymous: reqwest::Client,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub config: Config,
    pub database: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// [`spawn_app`] with a last word on the configuration.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    provenant_test_support::init_logs();
    provenant_telemetry::install_crypto_provider();
    let database = TestDatabase::create(backend).await.expect("test database");
    let mut config: Config = provenant_config::load_with(
        ingest::configuration::BASE_YAML,
        &provenant_config::Layers { directory: "/nonexistent".into(), environment: "test".into() },
        std::iter::empty(),
    )
    .expect("base configuration loads");
    config.http.port = 0;
    config.bus =
        BusConfig { subject_root: provenant_test_support::unique_root(), ..BusConfig::new(&provenant_test_support::nats_url(), "ingest") };
    config.database.url = Secret::new(database.url.clone());
    config.identity.api_keys =
        vec![api_key("alice", vec![Role::Contributor, Role::DatanetOwner], ALICE_KEY), api_key("bob", vec![Role::Contributor], BOB_KEY)];
    config.contributions.max_bytes = 64 * 1024;
    config.consumer = ConsumerConfig { batch_size: 64, ack_wait_seconds: 2, max_deliver: 4, initial_backoff_ms: 50, max_backoff_ms: 500 };
    adjust(&mut config);
    let app = Application::build(config.clone()).await.expect("builds");
    let base_url = format!("http://{}", app.address());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        base_url,
        http: client_with_key(ALICE_KEY),
        bob: client_with_key(BOB_KEY),
        anonymous: reqwest::Client::new(),
        shutdown,
        task,
        config,
        database,
    }
}

impl TestApp {
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(format!("{}{path}", self.base_url)).json(body).send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.base_url)).send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// Polls a read until the projection shows what `done` wants.
    pub async fn get_until(&self, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = self.get(path).await;
            if done(status, &body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{path} never satisfied the test: last {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) -> (Config, TestDatabase) {
        self.shutdown.cancel();
        self.task.await.expect("service task").expect("service stopped cleanly");
        (self.config, self.database)
    }
}
