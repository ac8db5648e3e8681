//! End to end: the real `provenant` binary, with the NATS server it starts itself and SQLite
//! files in its data folder, driven through its public HTTP API.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{INGEST, OWNER_KEY, SERVICES, Suite, config_dir, free_port};

use serde_json::{Value, json};

#[tokio::test]
async fn provenant_up_serves_every_service_and_keeps_its_data_across_a_restart() {
    provenant_telemetry::install_crypto_provider();
    let data_dir = tempfile::tempdir().expect("data dir");
    let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
    let nats_port = free_port();
    let config_dir = config_dir("datanet_owner, contributor");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {OWNER_KEY}").parse().expect("header"));
    let http = reqwest::Client::builder().default_headers(headers).build().expect("client");

    let mut suite = Suite::start(data_dir.path(), config_dir.path(), &ports, nats_port, &[]);
    suite.wait_ready(&http).await;
    for service in 0..SERVICES.len() {
        let metrics = http.get(suite.url(service, "/metrics")).send().await.expect("metrics");
        assert_eq!(metrics.status(), 200);
    }
    let created: Value = http
        .post(suite.url(INGEST, "/v1/datanets"))
        .json(&json!({ "name": "Fortunes", "licence": "CC0-1.0" }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let path = format!("/v1/datanets/{}", created["datanet_id"].as_str().expect("id"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while http.get(suite.url(INGEST, &path)).send().await.expect("get").status() != 200 {
        assert!(Instant::now() < deadline, "the Datanet never reached the read model");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A contribution goes ingest → JetStream → validate → verdict → ingest's read model.
    let submitted: Value = http
        .post(suite.url(INGEST, &format!("{path}/contributions")))
        .header("content-type", "text/plain")
        .body("Your lucky number has been disconnected. Please try again in a few minutes.")
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let status_path = format!("/v1/contributions/{}", submitted["contribution_id"].as_str().expect("contribution id"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view: Value = http.get(suite.url(INGEST, &status_path)).send().await.expect("get").json().await.unwrap_or(Value::Null);
        if view["status"] == "accepted" {
            assert_eq!(view["duplicate_cluster_id"], submitted["contribution_id"]);
            break;
        }
        assert!(Instant::now() < deadline, "the contribution was never accepted: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // provenant datanet import: a fortune-style file, one record per fortune.
    let folder = tempfile::tempdir().expect("import folder");
    std::fs::write(
        folder.path().join("sayings"),
        "He who laughs last thinks slowest, they say.\n%\nTo err is human; to really foul things up requires a computer.\n%\n",
    )
    .expect("write fortunes");
    let import = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args([
            "datanet",
            "import",
            "--ingest-url",
            &suite.url(INGEST, ""),
            "--datanet",
            created["datanet_id"].as_str().expect("id"),
            "--key",
            OWNER_KEY,
        ])
        .arg(folder.path())
        .output()
        .expect("import runs");
    let printed = String::from_utf8_lossy(&import.stdout);
    assert!(import.status.success(), "import failed: {printed} {}", String::from_utf8_lossy(&import.stderr));
    assert!(printed.contains("2 records") && printed.contains("2 submitted (202)"), "{printed}");
    let metrics = http.get(suite.url(INGEST, "/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.lines().any(|line| line.starts_with("bus_events_applied_total{consumer=\"ingest-datanets\"} ")),
        "the projection's counter is exported:\n{metrics}"
    );
    suite.stop();
    assert!(data_dir.path().join("ingest.db").exists());
    assert!(data_dir.path().join("validate.db").exists());
    assert!(data_dir.path().join("nats").is_dir());

    let mut again = Suite::start(data_dir.path(), config_dir.path(), &ports, nats_port, &[]);
    again.wait_ready(&http).await;
    let datanet: Value = http.get(again.url(INGEST, &path)).send().await.expect("get").json().await.expect("json");
    assert_eq!((datanet["name"].as_str(), datanet["owner_id"].as_str()), (Some("Fortunes"), Some("owner")));
    again.stop();
}

/// Something that merely answers on the embedded NATS port must not pass for the server
/// `provenant up` started: ours cannot bind, so `up` stops and says why.
#[test]
fn provenant_up_stops_when_another_process_holds_the_embedded_nats_port() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
    let taken = std::net::TcpListener::bind(("127.0.0.1", free_port())).expect("bind");
    let nats_port = taken.local_addr().expect("address").port();
    let config_dir = config_dir("contributor");
    let mut suite = Suite::start(data_dir.path(), config_dir.path(), &ports, nats_port, &[]);
    let status = suite.wait_for_exit(30);
    assert!(!status.success());
    let stderr = suite.stderr();
    assert!(stderr.contains(&format!("exited (exit status: 1) before listening on port {nats_port}")), "{stderr}");
}

#[test]
fn dump_config_prints_the_effective_configuration_with_secrets_redacted() {
    let output = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["up", "--dump-config"])
        .env("PROVENANT_NATS__URL", "nats://user:hunter2@nats:4222")
        .env("PROVENANT_CONFIG_DIR", "/nonexistent")
        .output()
        .expect("runs");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    let config: Value = serde_json::from_str(&printed).expect("json");
    assert_eq!(config["nats"]["url"], "[redacted]");
    assert!(!printed.contains("hunter2"));
    assert_eq!(config["http"]["ingest_port"], 8081);
}
