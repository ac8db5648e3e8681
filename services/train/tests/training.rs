//! The train service against a real NATS and SQLite: jobs train with Burn on the CPU, register
//! their models with lineage, resume on another worker when theirs dies, and refuse specs
//! that cannot run.

mod common;

use std::time::Duration;

use common::{TestApp, scratch_job, sentences, spawn_app};
use std::collections::HashMap;

use provenant_bus::{Bus, BusConfig, Context, Upcasters};
use provenant_events::proto::training::v1::AttributionIndexBuilt;
use serde_json::{Value, json};
use train::queue::WorkQueue;
use train::worker::{Stores, Worker};

async fn blob(app: &TestApp, bucket: &str, sha256: &str) -> Vec<u8> {
    app.bus.blob_store(bucket).await.expect("bucket").get(sha256).await.expect("read").expect("stored").to_vec()
}

/// The `AttributionIndexBuilt` of a finished job, and its index loaded from the object store.
async fn attribution_index(app: &TestApp, job_id: &str) -> (AttributionIndexBuilt, attribution::Index) {
    let history = app.bus.aggregate_history(Context::Training, "index", &train::worker::index_id_of(job_id)).await.expect("history");
    assert_eq!(history.len(), 1, "one index per job");
    let event: AttributionIndexBuilt = history[0].decode(&Upcasters::contract()).expect("decodes");
    let manifest_bytes = blob(app, "models", &event.manifest.as_ref().expect("manifest").sha256).await;
    let manifest = attribution::Manifest::from_bytes(&manifest_bytes).expect("manifest");
    let mut artifacts = HashMap::new();
    for artifact in manifest.artifacts() {
        artifacts.insert(artifact.sha256.clone(), blob(app, "models", &artifact.sha256).await);
    }
    (event, attribution::Index::assemble(&manifest_bytes, &artifacts).expect("a consistent index"))
}

/// Every job ends with an attribution index whose receipts pay for verbatim reuse.
async fn check_attribution_index(app: &TestApp, job_id: &str, model: &Value) -> attribution::Manifest {
    let (event, index) = attribution_index(app, job_id).await;
    assert_eq!(event.model_id, model["model_id"]);
    assert_eq!(event.model_weights_sha256, model["weights"]["sha256"]);
    assert_eq!(event.index_sha256, attribution::sha256_hex(&index.manifest.to_bytes()));
    let metrics: Value =
        serde_json::from_slice(&blob(app, "models", model["metrics"]["sha256"].as_str().expect("metrics")).await).expect("json");
    assert_eq!(event.example_count, metrics["training_examples"].as_u64().expect("count"));
    assert_eq!(event.phantom_count, metrics["held_out_examples"].as_u64().expect("count"), "held-out examples are the phantoms");
    assert_eq!((event.precision.as_str(), event.projection_dim), ("f16", 6 * 16), "one block of six 4x4 layer sketches");

    // A query that continues a training example verbatim: its founder is paid for the span.
    let config: model::ModelConfig =
        serde_json::from_slice(&blob(app, "models", model["config"]["sha256"].as_str().expect("config")).await).expect("config");
    let weights = blob(app, "models", model["weights"]["sha256"].as_str().expect("weights")).await;
    let served = model::Transformer::from_bytes(&config, &weights, &model::backend::inference_device()).expect("loads");
    let featurizer =
        model::Featurizer::new(&served, index.manifest.projection.seed, index.manifest.projection.per_side).expect("featurizer");
    assert_eq!(train::worker::block_layout(&featurizer), index.manifest.projection.blocks, "a query's projection matches the index's");
    let row = index.table().row(3).clone();
    let stream = index.example_tokens(3).to_vec();
    let prompt = 6;
    let features = featurizer.features(&served, &[model::Sequence::answer(&stream, prompt)]).expect("features");
    let receipt = index.attribute(&features, &stream[prompt..]).expect("attributes");
    let total: u64 = receipt.shares.iter().map(|share| share.share_ppb).sum::<u64>() + receipt.base_pool_ppb;
    assert_eq!(total, attribution::WHOLE_PPB);
    assert_eq!(receipt.shares[0].contributor_id, row.contributor_id, "{receipt:?}");
    // Every example and share names the Datanet of the snapshot it came from.
    assert_eq!(row.datanet_id, "english");
    assert!(receipt.shares.iter().all(|share| share.datanet_id == "english"), "{receipt:?}");
    assert!(receipt.spans.iter().any(|span| span.contribution_id == row.contribution_id), "{receipt:?}");
    assert!(receipt.span_coverage_ppb > 500_000_000, "{receipt:?}");
    assert_eq!(receipt.top_examples.len(), 10);
    index.manifest
}

#[tokio::test]
async fn a_job_registers_its_model_with_lineage_and_the_same_job_twice_gives_the_same_weights() {
    let app = spawn_app(1).await;
    let snapshot = app.sealed_datanet("english", &sentences("en", 60)).await;
    let first = app.submit(&scratch_job("tiny-en", &snapshot, 8, 0)).await;
    let model = app.model_of(&first).await;

    assert_eq!(model["kind"], "base");
    assert_eq!(model["owner_id"], "builder");
    let lineage = &model["lineage"];
    assert_eq!(lineage["job_id"], first);
    assert_eq!(lineage["snapshots"], json!([{"snapshot_id": snapshot.0, "datanet_id": "english", "merkle_root": snapshot.1}]));
    assert_eq!(lineage["seed"], 11);
    assert_eq!(lineage["steps"], 8);
    assert!(lineage["code_version"].as_str().expect("code version").starts_with("provenant-train"));
    assert!(model["held_out_perplexity"].as_f64().expect("perplexity") > 1.0, "{model}");

    // Every artifact is stored under its digest; the example table names each contributor.
    let table = blob(&app, "models", lineage["example_table_sha256"].as_str().expect("digest")).await;
    let rows: Vec<Value> =
        table.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()).map(|line| serde_json::from_slice(line).expect("row")).collect();
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().any(|row| row["split"] == "held_out") && rows.iter().any(|row| row["split"] == "train"));
    assert_eq!(rows[4]["contributor_id"], "contributor-1");
    let metrics: Value =
        serde_json::from_slice(&blob(&app, "models", model["metrics"]["sha256"].as_str().expect("metrics")).await).expect("json");
    assert_eq!(metrics["examples"], 60);
    assert_eq!(metrics["contributors"], 3);
    let weights = blob(&app, "models", model["weights"]["sha256"].as_str().expect("weights")).await;
    assert_eq!(provenant_bus::sha256_hex(&weights), model["weights"]["sha256"]);
    let manifest = check_attribution_index(&app, &first, &model).await;

    // The same spec again: a new job, a new model, the same weights.
    let second = app.submit(&scratch_job("tiny-en", &snapshot, 8, 0)).await;
    let again = app.model_of(&second).await;
    assert_ne!(again["model_id"], model["model_id"]);
    assert_eq!(again["weights"]["sha256"], model["weights"]["sha256"], "training on the CPU is deterministic");
    assert_eq!(again["lineage"]["example_table_sha256"], lineage["example_table_sha256"]);
    let (_, index_again) = attribution_index(&app, &second).await;
    assert_eq!(index_again.manifest.features, manifest.features, "the same job twice gives the same attribution features");
    assert_eq!(index_again.manifest.spans, manifest.spans);

    // Training progress on /metrics, in a form Prometheus reads.
    let metrics = reqwest::get(format!("{}/metrics", app.base_url)).await.expect("answers").text().await.expect("text");
    for family in [
        "train_steps_total",
        "train_loss",
        "train_tokens_per_second",
        "train_jobs_finished_total{outcome=\"completed\"}",
        "http_requests_total{service=\"train\"",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}:\n{metrics}");
    }
    provenant_test_support::prometheus::assert_valid_exposition(&metrics);
}

#[tokio::test]
async fn a_lora_adapter_trains_on_a_registered_base_and_lowers_perplexity_on_its_own_data() {
    let app = spawn_app(1).await;
    let english = app.sealed_datanet("en", &sentences("en", 60)).await;
    let german = app.sealed_datanet("de", &sentences("de", 60)).await;
    let base = app.model_of(&app.submit(&scratch_job("base", &english, 30, 0)).await).await;
    let base_id = base["model_id"].as_str().expect("id").to_owned();

    let adapter_job = json!({
        "name": "de-adapter",
        "base_model_id": base_id,
        "snapshots": [{"snapshot_id": german.0, "merkle_root": german.1}],
        "method": {"type": "lora", "rank": 4, "alpha": 8.0, "targets": ["attention_query", "attention_value", "mlp_up", "mlp_down"]},
        "hyperparameters": {"steps": 30, "batch_size": 4, "sequence_length": 32, "learning_rate": 0.02},
        "seed": 5,
        "held_out_fraction": 0.2
    });
    let adapter = app.model_of(&app.submit(&adapter_job).await).await;
    assert_eq!(adapter["kind"], "adapter");
    assert_eq!(adapter["base_model_id"], base_id);
    assert_eq!(adapter["lora"]["rank"], 4);
    assert_eq!(adapter["lineage"]["base_weights_sha256"], base["weights"]["sha256"]);
    let (status, metrics) = app.get(&format!("/v1/models/{}/metrics", adapter["model_id"].as_str().expect("id"))).await;
    assert_eq!(status, 200, "{metrics}");
    let (tuned, before) =
        (metrics["held_out_perplexity"].as_f64().expect("tuned"), metrics["base_held_out_perplexity"].as_f64().expect("base"));
    assert!(tuned < before, "the adapter should beat its base on held-out German: {tuned} vs {before}");

    // An adapter is not a base, and a rank the base cannot hold is refused.
    let mut on_adapter = adapter_job.clone();
    on_adapter["base_model_id"] = adapter["model_id"].clone();
    let (status, body) = app.post("/v1/training-jobs", &on_adapter).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("job.base_is_adapter")), "{body}");
    let mut too_wide = adapter_job.clone();
    too_wide["method"]["rank"] = json!(64);
    let (status, body) = app.post("/v1/training-jobs", &too_wide).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("job.impossible_rank")), "{body}");
}

/// A worker of its own, on its own NATS connection, as a separate process would have.
async fn standalone_worker(app: &TestApp) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let bus = Bus::connect(&BusConfig { producer: "train".into(), ..app.config.bus.clone() }).await.expect("bus");
    let queue = WorkQueue::declare(&bus).await.expect("queue");
    let stores = Stores::open(&bus).await.expect("stores");
    let worker = Worker::new(bus, queue, stores, app.config.workers.clone());
    tokio::spawn(worker.run(provenant_runtime::Shutdown::new()))
}

#[tokio::test]
async fn a_job_whose_worker_dies_resumes_from_its_checkpoint_on_another_and_ends_with_the_same_weights() {
    let app = spawn_app(0).await;
    let snapshot = app.sealed_datanet("resume", &sentences("en", 60)).await;
    let doomed = standalone_worker(&app).await;
    // Long enough that the worker is still training when the test sees its first checkpoint
    // (24 steps took 0.1 s on an idle machine and finished before the abort).
    let job_id = app.submit(&scratch_job("resumed", &snapshot, 600, 20)).await;
    let path = format!("/v1/training-jobs/{job_id}");
    app.get_until(&path, |job| job["checkpoint_step"].as_i64().is_some_and(|step| step >= 20)).await;
    // The worker dies: no more heartbeats, no ack. Its message returns to the queue after
    // the ack wait and the next worker resumes the job.
    doomed.abort();
    let _ = doomed.await;
    let survivor = standalone_worker(&app).await;
    let resumed = app.model_of(&job_id).await;
    let job = app.finished(&job_id).await;
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(job["step"], 600);

    let straight = app.model_of(&app.submit(&scratch_job("resumed", &snapshot, 600, 20)).await).await;
    assert_eq!(resumed["weights"]["sha256"], straight["weights"]["sha256"], "resuming continues bit for bit");
    survivor.abort();
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_worker_and_registers_nothing() {
    let app = spawn_app(1).await;
    let snapshot = app.sealed_datanet("cancel", &sentences("en", 60)).await;
    let job_id = app.submit(&scratch_job("endless", &snapshot, 100_000, 0)).await;
    let path = format!("/v1/training-jobs/{job_id}");
    app.get_until(&path, |job| job["step"].as_i64().is_some_and(|step| step >= 2)).await;

    let denied = app.contributor.post(format!("{}{path}/cancel", app.base_url)).send().await.expect("request");
    assert_eq!(denied.status().as_u16(), 403);
    let (status, body) = app.post(&format!("{path}/cancel"), &json!({})).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("cancelled")), "{body}");
    let (status, body) = app.post(&format!("{path}/cancel"), &json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("job.finished")));

    // The worker is free again: the next job completes, and the cancelled one never registered.
    let next = app.submit(&scratch_job("after", &snapshot, 2, 0)).await;
    app.model_of(&next).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, models) = app.get("/v1/models").await;
    assert_eq!(models["models"].as_array().expect("models").len(), 1, "{models}");
    assert_eq!(app.finished(&job_id).await["status"], "cancelled");
}

#[tokio::test]
async fn specs_that_cannot_run_are_refused_with_stable_codes() {
    let app = spawn_app(1).await;
    let snapshot = app.sealed_datanet("codes", &sentences("en", 3)).await;
    let refused = |body: &Value| body["error"]["code"].as_str().map(str::to_owned);

    let mut unknown = scratch_job("x", &snapshot, 2, 0);
    unknown["snapshots"][0]["snapshot_id"] = json!("codes-9");
    let (status, body) = app.post("/v1/training-jobs", &unknown).await;
    assert_eq!((status, refused(&body).as_deref()), (422, Some("snapshot.not_found")));

    let mut moved = scratch_job("x", &snapshot, 2, 0);
    moved["snapshots"][0]["merkle_root"] = json!("0".repeat(64));
    let (status, body) = app.post("/v1/training-jobs", &moved).await;
    assert_eq!((status, refused(&body).as_deref()), (422, Some("snapshot.root_mismatch")));

    let mut long = scratch_job("x", &snapshot, 2, 0);
    long["hyperparameters"]["sequence_length"] = json!(64);
    let (status, body) = app.post("/v1/training-jobs", &long).await;
    assert_eq!((status, refused(&body).as_deref()), (422, Some("job.invalid_hyperparameters")));

    let (status, body) = app.post("/v1/training-jobs", &json!({"name": "x"})).await;
    assert_eq!((status, refused(&body).as_deref()), (422, Some("request.invalid_body")));

    let forbidden = app
        .contributor
        .post(format!("{}/v1/training-jobs", app.base_url))
        .json(&scratch_job("x", &snapshot, 2, 0))
        .send()
        .await
        .expect("request");
    assert_eq!(forbidden.status().as_u16(), 403);

    // A valid spec whose data is too small (three sentences, about 110 tokens, against a
    // window of 257) is accepted and then fails at the worker with a stable code.
    let mut greedy = scratch_job("x", &snapshot, 2, 0);
    greedy["architecture"]["context_length"] = json!(256);
    greedy["hyperparameters"]["sequence_length"] = json!(256);
    let job_id = app.submit(&greedy).await;
    let job = app.finished(&job_id).await;
    assert_eq!((job["status"].as_str(), job["error_code"].as_str()), (Some("failed"), Some("data.not_enough_tokens")), "{job}");
}

#[tokio::test]
async fn the_train_projections_rebuilt_from_the_log_equal_the_live_ones_on_sqlite_and_postgres() {
    use sea_orm::EntityTrait as _;
    use sea_orm_migration::MigratorTrait as _;
    use train::projections::{jobs, models, snapshots};

    for backend in provenant_test_support::Backend::ALL {
        let app = common::spawn_app_on(backend, 1).await;
        let snapshot = app.sealed_datanet("rebuild", &sentences("en", 40)).await;
        let completed = app.submit(&scratch_job("kept", &snapshot, 3, 2)).await;
        app.model_of(&completed).await;
        let mut too_long = scratch_job("too long", &snapshot, 2, 0);
        too_long["architecture"]["context_length"] = json!(2048);
        too_long["hyperparameters"]["sequence_length"] = json!(2048);
        let failed = app.submit(&too_long).await;
        assert_eq!(app.finished(&failed).await["status"], "failed");
        let (config, live_database) = app.stop().await;

        let rebuilt_database = live_database.sibling().await.expect("fresh database");
        let rebuilt = provenant_bus::store::connect(&rebuilt_database.url).await.expect("connects");
        train_migration::Migrator::up(&rebuilt, None).await.expect("migrates");
        let bus = Bus::connect(&config.bus).await.expect("bus");
        let queue = WorkQueue::declare(&bus).await.expect("queue");
        let catalog = provenant_bus::Consumer::new(
            bus.clone(),
            rebuilt.clone(),
            train::handlers::CatalogProjector::default(),
            config.consumer.clone(),
        );
        assert_eq!(catalog.replay().await.expect("replays").stats.applied, 2, "one Datanet, one snapshot");
        let jobs_consumer =
            provenant_bus::Consumer::new(bus, rebuilt.clone(), train::handlers::JobProjector::new(queue), config.consumer.clone());
        assert!(jobs_consumer.replay().await.expect("replays").stats.applied >= 8);

        let live = provenant_bus::store::connect(&live_database.url).await.expect("connects");
        let sorted_jobs = |mut rows: Vec<jobs::Model>| {
            rows.sort_by(|left, right| left.job_id.cmp(&right.job_id));
            rows
        };
        let live_jobs = sorted_jobs(jobs::Entity::find().all(&live).await.expect("rows"));
        assert_eq!(live_jobs.len(), 2, "the completed job and the failed one");
        assert_eq!(sorted_jobs(jobs::Entity::find().all(&rebuilt).await.expect("rows")), live_jobs);
        assert_eq!(models::Entity::find().all(&rebuilt).await.expect("rows"), models::Entity::find().all(&live).await.expect("rows"));
        assert_eq!(snapshots::Entity::find().all(&rebuilt).await.expect("rows"), snapshots::Entity::find().all(&live).await.expect("rows"));
        live.close().await.expect("close");
        rebuilt.close().await.expect("close");
        live_database.drop_database().await.expect("drop");
        rebuilt_database.drop_database().await.expect("drop");
    }
}

/// Every job's index records the receipt rules, so rules that cannot work stop the service at
/// boot, with the key named, rather than failing each job at its end.
#[tokio::test]
async fn the_service_refuses_to_start_with_receipt_rules_that_cannot_work() {
    let layers = provenant_config::Layers { directory: "/nonexistent".into(), environment: "test".into() };
    let variables = [("PROVENANT_WORKERS__ATTRIBUTION__RULES__PHRASE_WEIGHT".to_owned(), "1.5".to_owned())];
    let config: train::Config = provenant_config::load_with(train::BASE_YAML, &layers, variables).expect("loads");
    assert_eq!(config.workers.attribution.rules.phrase_weight, 1.5);
    let refused = train::Application::build(config, train::Mode::Service).await.err().expect("refused");
    let message = format!("{refused:#}");
    assert!(message.contains("workers.attribution.rules") && message.contains("phrase_weight 1.5"), "{message}");
}
