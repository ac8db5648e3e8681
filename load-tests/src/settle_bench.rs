//! `settle-bench`: settlement throughput and period reports, JSON out.
//!
//! - `settled`: per database (a SQLite file; PostgreSQL when `--postgres-url` or
//!   `PV_TEST_POSTGRES_URL` is given), `--events` `InferenceServed` (each with a receipt naming
//!   eight contributors) are published first; then the settler and the ledger projector run as
//!   in the service, and the clock runs until the ledger holds every settlement (check, split,
//!   append `InferenceSettled`, book the balanced transaction). Beside it, in the same run, a
//!   raw JetStream consume of the same messages (durable pull consumer, every message acked):
//!   the ceiling of any consumer.
//! - `report`: a period of `--report-settlements` settlements (six postings each) written
//!   straight into a SQLite ledger, then what closing it costs: reading the period's rows,
//!   building the report, rendering canonical JSON, CSV and Parquet; with the peak resident set.
//!
//! Needs a NATS server: `--nats-url`, or `PV_TEST_NATS_URL` (what `make bench` provides).

#![allow(clippy::print_stdout, reason = "a benchmark reports on standard output")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use clap::Parser;
use futures::StreamExt as _;
use provenant_bus::{Bus, Consumer, Envelope, Expect};
use provenant_events::proto::common::v1::{BlobRef, Money, Principal};
use provenant_events::proto::datanet::v1::DatanetCreated;
use provenant_events::proto::inference::v1::{AttributionReceipt, ContributorShare, InferenceServed};
use provenant_events::proto::training::v1::{AttributionIndexBuilt, Lineage, ModelKind, ModelRegistered, SnapshotPin};
use provenant_load_tests::{AckBatcher, fresh_bus, machine_load, median, peak_rss_mib, write_report};
use provenant_runtime::Shutdown;
use sea_orm::{ActiveValue::Set, ConnectionTrait as _, EntityTrait as _, TransactionTrait as _};
use serde_json::{Value, json};
use settle::domain::period::{Period, PeriodLength};
use settle::handlers::{DatanetProjector, IndexProjector, LedgerProjector, ModelProjector, Settler};
use settle::projections::ledger::{self, postings, transactions};

/// The allocator of the settle service, so that the consumers timed here allocate as they do there.
#[global_allocator]
static ALLOCATOR: provenant_runtime::allocator::ServiceAllocator = provenant_runtime::allocator::SERVICE_ALLOCATOR;

#[derive(Parser)]
struct Arguments {
    #[arg(long, env = "PV_TEST_NATS_URL")]
    nats_url: String,
    /// PostgreSQL server URL (its database is only used to create the benchmark's own).
    #[arg(long, env = "PV_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Inference events per throughput run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Settlements in the period whose report is timed.
    #[arg(long, default_value_t = 1_000_000)]
    report_settlements: usize,
    #[arg(long)]
    output: Option<PathBuf>,
}

const BASE: &str = "bench-base";

fn digest(seed: char) -> String {
    seed.to_string().repeat(64)
}

/// One Datanet, one base model, and `events` inference events with receipts.
async fn publish_events(bus: &Bus, events: usize) -> anyhow::Result<()> {
    let datanet = DatanetCreated { datanet_id: "bench-datanet".into(), owner: Some(Principal { id: "owner".into(), kind: 2 }), spec: None };
    bus.publish(&Envelope::new(&datanet, "ingest"), &datanet, Expect::NoEvents).await?;
    let model = ModelRegistered {
        model_id: BASE.into(),
        name: BASE.into(),
        kind: ModelKind::Base.into(),
        weights: Some(BlobRef { sha256: digest('a'), size_bytes: 1, bucket: "models".into(), media_type: String::new() }),
        lineage: Some(Lineage {
            snapshots: vec![SnapshotPin { snapshot_id: "s".into(), datanet_id: "bench-datanet".into(), merkle_root: digest('0') }],
            ..Default::default()
        }),
        owner: Some(Principal { id: "builder".into(), kind: 3 }),
        ..Default::default()
    };
    bus.publish(&Envelope::new(&model, "train"), &model, Expect::NoEvents).await?;
    let index =
        AttributionIndexBuilt { index_id: "bench-index".into(), model_id: BASE.into(), index_sha256: digest('e'), ..Default::default() };
    bus.publish(&Envelope::new(&index, "train"), &index, Expect::NoEvents).await?;
    let receipt = AttributionReceipt {
        shares: (0..8)
            .map(|index| ContributorShare {
                contributor_id: format!("contributor-{index}"),
                share_ppb: 100_000_000,
                datanet_id: "bench-datanet".into(),
            })
            .collect(),
        base_pool_ppb: 200_000_000,
        noise_floor_ppb: 1_000_000,
        model_weights_sha256: digest('a'),
        index_sha256: digest('e'),
        ..Default::default()
    };
    let mut acks = AckBatcher::new(256);
    for index in 0..events {
        let event = InferenceServed {
            request_id: format!("request-{index}"),
            producer: "infer".into(),
            caller: Some(Principal { id: format!("caller-{}", index % 50), kind: 0 }),
            model_id: BASE.into(),
            base_weights_sha256: digest('a'),
            prompt_sha256: digest('b'),
            output_sha256: digest('c'),
            prompt_tokens: 40,
            output_tokens: 120,
            fee: Some(Money { currency: "EUR".into(), exponent: 2, minor_units: (1_000 + index % 997).to_string() }),
            pricing_policy_version: 1,
            receipt: Some(receipt.clone()),
            ..Default::default()
        };
        acks.push(bus.send(&Envelope::new(&event, "infer"), &event, Expect::Any).await?).await?;
    }
    acks.flush().await
}

async fn database_url(postgres: Option<&str>, folder: &std::path::Path, label: &str) -> anyhow::Result<String> {
    let name = format!("settle_bench_{label}_{}", uuid::Uuid::now_v7().simple());
    match postgres {
        None => Ok(format!("sqlite://{}?mode=rwc", folder.join(format!("{name}.db")).display())),
        Some(admin_url) => {
            let admin = sea_orm::Database::connect(admin_url).await?;
            admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
            admin.close().await?;
            let (base, _) = admin_url.rsplit_once('/').context("the PostgreSQL URL has no database path")?;
            Ok(format!("{base}/{name}"))
        }
    }
}

/// Settlements per second from published events to booked ledger transactions.
async fn settle_run(arguments: &Arguments, config: &settle::Config, database_url: &str) -> anyhow::Result<f64> {
    let consumer_config = || config.consumer.clone();
    let bus = fresh_bus(&arguments.nats_url, "settle").await?;
    publish_events(&bus, arguments.events).await?;
    // The service's stores: on SQLite, the ledger's file beside the settler's.
    let mut config = config.clone();
    config.database.url = provenant_config::Secret::new(database_url.to_owned());
    let settle::Databases { settler: database, ledger: ledger_database } = settle::open_databases(&config).await?;
    Consumer::new(bus.clone(), database.clone(), ModelProjector::default(), consumer_config()).replay().await?;
    Consumer::new(bus.clone(), database.clone(), DatanetProjector::default(), consumer_config()).replay().await?;
    Consumer::new(bus.clone(), database.clone(), IndexProjector::default(), consumer_config()).replay().await?;
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let settler = Consumer::new(bus.clone(), database.clone(), Settler::new(bus.clone(), config.settlement.clone())?, consumer_config());
    let ledger_projector = Consumer::new(bus.clone(), ledger_database.clone(), LedgerProjector::default(), consumer_config());
    let booked = ledger_projector.progress();
    let settler = tokio::spawn(provenant_bus::run_until_stopped(settler, shutdown.clone()));
    let ledger_projector = tokio::spawn(provenant_bus::run_until_stopped(ledger_projector, shutdown.clone()));
    let expected = arguments.events as u64;
    // The ledger's projector reports each batch it commits; the settlement stream of this fresh
    // namespace holds only these settlements, so once it has handled sequence `expected` the
    // ledger should hold them all, which one count then confirms. The count is not polled:
    // SQLite's store has one connection, and a `COUNT(*)` over a growing table every few
    // milliseconds took that connection from the projector being timed.
    loop {
        if booked.reached(expected, Duration::from_millis(20)).await {
            if ledger::count_transactions(&ledger_database).await? >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(1_800), "the ledger never reached {expected} settlements");
    }
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    settler.await??;
    ledger_projector.await??;
    settle::Databases { settler: database, ledger: ledger_database }.close().await?;
    Ok(arguments.events as f64 / elapsed)
}

/// Messages per second a durable pull consumer reads and acks from the same kind of stream.
async fn raw_consume(arguments: &Arguments) -> anyhow::Result<f64> {
    let bus = fresh_bus(&arguments.nats_url, "rawc").await?;
    publish_events(&bus, arguments.events).await?;
    let stream = bus.jetstream().get_stream(bus.namespace().stream(provenant_bus::Context::Inference)).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: AckPolicy::Explicit,
            filter_subject: bus.namespace().aggregate_filter(provenant_bus::Context::Inference, "request"),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer.messages().await?.take(arguments.events);
    while let Some(message) = messages.next().await {
        message.map_err(|error| anyhow::anyhow!("{error}"))?.ack().await.map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    Ok(arguments.events as f64 / started.elapsed().as_secs_f64())
}

/// Writes `count` settlements of one period straight into the ledger.
async fn fill_period(database: &sea_orm::DatabaseConnection, period: Period, count: usize) -> anyhow::Result<()> {
    let accounts =
        ["payable:protocol", "payable:model_builder:builder", "payable:datanet_owner:owner", "payable:contributor:a", "pool:base:m"];
    for start in (0..count).step_by(2_000) {
        let transaction = database.begin().await?;
        let end = (start + 2_000).min(count);
        let mut rows = Vec::with_capacity(end - start);
        let mut lines = Vec::with_capacity((end - start) * 6);
        for index in start..end {
            let id = format!("settlement-{index:09}");
            let stream_sequence = i64::try_from(index).unwrap_or(i64::MAX) + 1;
            rows.push(transactions::ActiveModel {
                settlement_id: Set(id),
                kind: Set("inference".into()),
                inference_event_id: Set(format!("event-{index:09}")),
                request_id: Set(format!("request-{index:09}")),
                model_id: Set("m".into()),
                period_id: Set(period.id()),
                currency: Set("EUR".into()),
                exponent: Set(2),
                fee: Set("1000".into()),
                policy_version: Set(0),
                occurred_at: Set("2026-10-15T12:00:00.000000Z".into()),
                stream_sequence: Set(stream_sequence),
            });
            let amounts = ["-1000", "100", "200", "100", "480", "120"];
            for (line, (account, amount)) in std::iter::once("fees:caller:c").chain(accounts).zip(amounts).enumerate() {
                lines.push(postings::ActiveModel {
                    stream_sequence: Set(stream_sequence),
                    line: Set(i32::try_from(line).unwrap_or(0)),
                    account: Set(account.into()),
                    currency: Set("EUR".into()),
                    exponent: Set(2),
                    amount: Set(amount.into()),
                    datanet_id: Set(if account.starts_with("payable:datanet_owner:") || account.starts_with("payable:contributor:") {
                        "bench-datanet".into()
                    } else {
                        String::new()
                    }),
                });
            }
        }
        transactions::Entity::insert_many(rows).exec_without_returning(&transaction).await?;
        // 7 columns × 4,000 rows stays under SQLite's 32,766 bound parameters per statement.
        for chunk in lines.chunks(4_000) {
            postings::Entity::insert_many(chunk.to_vec()).exec_without_returning(&transaction).await?;
        }
        transaction.commit().await?;
    }
    Ok(())
}

async fn report_run(arguments: &Arguments, folder: &std::path::Path) -> anyhow::Result<Value> {
    let url = database_url(None, folder, "report").await?;
    let database = provenant_bus::store::connect(&url).await?;
    <settle_migration::Migrator as sea_orm_migration::MigratorTrait>::up(&database, None).await?;
    let period = Period::parse(PeriodLength::Month, "2026-10")?;
    let filled = Instant::now();
    fill_period(&database, period, arguments.report_settlements).await?;
    let fill_seconds = filled.elapsed().as_secs_f64();
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let settled = ledger::period_transactions(&database, &period.id(), i64::MAX).await?;
    let read_seconds = started.elapsed().as_secs_f64();
    let report = settle::reports::build(period, u64::MAX, settled);
    let built_seconds = started.elapsed().as_secs_f64();
    let rendered = report.render()?;
    let total_seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "settlements": arguments.report_settlements,
        "postings": arguments.report_settlements * 6,
        "fill_seconds": fill_seconds,
        "read_rows_seconds": read_seconds,
        "build_seconds": built_seconds - read_seconds,
        "render_seconds": total_seconds - built_seconds,
        "close_total_seconds": total_seconds,
        "json_bytes": rendered.json.len(),
        "csv_bytes": rendered.csv.len(),
        "parquet_bytes": rendered.parquet.len(),
        "peak_rss_mib_before": rss_before,
        "peak_rss_mib_after": peak_rss_mib(),
        "target_seconds": 60,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    // The services' warnings and errors (RUST_LOG overrides), so that a stall explains itself.
    let telemetry_config = provenant_telemetry::TelemetryConfig { log_filter: "warn".into(), ..Default::default() };
    let _telemetry = provenant_telemetry::init("settle-bench", &telemetry_config)?;
    let layers = provenant_config::Layers { directory: "/nonexistent".into(), environment: "bench".into() };
    // The service's own settings (its consumers' batch size among them), which
    // `PROVENANT_<SECTION>__<KEY>` variables override as they do for the service.
    let config: settle::Config = provenant_config::load_with(settle::BASE_YAML, &layers, std::env::vars())?;
    let folder = tempfile::tempdir()?;
    let load_before = provenant_load_tests::load_average();
    let mut backends = vec![("sqlite", None)];
    if let Some(url) = arguments.postgres_url.as_deref() {
        backends.push(("postgres", Some(url)));
    }
    let mut settled = serde_json::Map::new();
    let mut raw_runs = Vec::new();
    let mut runs: std::collections::BTreeMap<&str, Vec<f64>> = std::collections::BTreeMap::new();
    for repeat in 0..arguments.repeats {
        eprintln!("round {}: raw consume of {} messages", repeat + 1, arguments.events);
        raw_runs.push(raw_consume(&arguments).await?);
        for (name, postgres) in &backends {
            eprintln!("round {}: {} events settled into {name}", repeat + 1, arguments.events);
            let url = database_url(*postgres, folder.path(), name).await?;
            runs.entry(name).or_default().push(settle_run(&arguments, &config, &url).await?);
        }
    }
    let raw_median = median(&raw_runs);
    for (name, values) in &runs {
        let value = median(values);
        settled.insert(
            (*name).to_owned(),
            json!({"runs_per_second": values, "median_per_second": value, "vs_raw_consume": value / raw_median, "target_per_second": 10_000}),
        );
    }
    eprintln!("report: {} settlements", arguments.report_settlements);
    let report = report_run(&arguments, folder.path()).await?;
    let headline = format!(
        "settled/s (median): {} vs raw consume {raw_median:.0}/s; report of {} settlements closed in {:.1} s",
        runs.iter().map(|(name, values)| format!("{name} {:.0}", median(values))).collect::<Vec<_>>().join(", "),
        arguments.report_settlements,
        report["close_total_seconds"].as_f64().unwrap_or(f64::NAN),
    );
    let output = json!({
        "benchmark": "settle",
        "machine": machine_load(&load_before),
        "events_per_run": arguments.events,
        "consumer": config.consumer,
        "allocator": std::any::type_name::<provenant_runtime::allocator::ServiceAllocator>(),
        "repeats": arguments.repeats,
        "raw_consume": {"runs_per_second": raw_runs, "median_per_second": raw_median},
        "settled": settled,
        "report": report,
        "headline": headline,
    });
    match &arguments.output {
        Some(path) => write_report(path, &output, "headline")?,
        None => println!("{}", serde_json::to_string_pretty(&output)?),
    }
    Ok(())
}
