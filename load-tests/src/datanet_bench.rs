//! `datanet-bench`: Datanet ingestion and validation, end to end, JSON out.
//!
//! - `end_to_end`: the ingest and validate services run in this process on SQLite files, on the
//!   benchmark's NATS server; `--contributions` unique ~1 KiB texts are submitted over HTTP by
//!   `--concurrency` clients; the clock runs from the first request until ingest's read model
//!   shows every one of them accepted (HTTP submit → object store → `ContributionSubmitted` →
//!   validation → `ContributionAccepted` → projection). Beside it, in the same run, raw
//!   JetStream publishes of 1 KiB payloads: the ceiling of anything that goes through the bus.
//! - `near_duplicate_lookup`: the cost, per contribution, of the validator's near-duplicate
//!   lookup (LSH band keys → candidates from the database → MinHash similarity) with 10^5 and
//!   10^6 contributions indexed in one Datanet on SQLite, next to the same lookup in the
//!   in-memory index. Indexed signatures are random (their band keys spread as distinct texts'
//!   do); queries are real texts, half of them near duplicates of indexed ones.
//! - memory: the peak resident set of this process (both services, their SQLite caches and the
//!   clients), after each part.
//!
//! Needs a NATS server: `--nats-url`, or `PV_TEST_NATS_URL` (what `make bench` provides).

#![allow(clippy::print_stdout, reason = "a benchmark reports on standard output")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use provenant_bus::BusConfig;
use provenant_load_tests::{Machine, Series, fresh_bus, fresh_root, median, peak_rss_mib, quantile, raw_publish, series};
use provenant_runtime::Shutdown;
use provenant_runtime::identity::{ApiKeyConfig, Role, hash_key};
use rand::SeedableRng as _;
use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
use sea_orm_migration::MigratorTrait as _;
use serde::Serialize;
use serde_json::{Value, json};
use validate::domain::near_duplicates::{NearDuplicateIndex, SIGNATURE_LENGTH, Signature};
use validate::projections::accepted;

/// The allocator of the ingest and validate services, so that the consumers timed here allocate as they do there.
#[global_allocator]
static ALLOCATOR: provenant_runtime::allocator::ServiceAllocator = provenant_runtime::allocator::SERVICE_ALLOCATOR;

const KEY: &str = "pvk_datanet_bench";

#[derive(Parser)]
struct Arguments {
    #[arg(long, env = "PV_TEST_NATS_URL")]
    nats_url: String,
    /// Contributions per end-to-end run.
    #[arg(long, default_value_t = 5_000)]
    contributions: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Whether each submission waits for ingest's read model (read-your-writes, the default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    await_read_model: bool,
    /// Indexed contributions at which the near-duplicate lookup is measured.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000])]
    index_sizes: Vec<usize>,
    /// Lookups measured at each size.
    #[arg(long, default_value_t = 400)]
    lookups: usize,
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    text_bytes: usize,
    concurrency: usize,
    await_read_model: bool,
    repeats: usize,
    raw_publish: Series,
    end_to_end_accepted: Series,
    end_to_end_vs_raw_ratio: f64,
    submit_latency_ms: Latency,
    peak_rss_mib_after_end_to_end: f64,
    near_duplicate_lookup: Vec<Lookup>,
    peak_rss_mib_at_end: f64,
    targets: Targets,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
}

#[derive(Serialize)]
struct Lookup {
    indexed: usize,
    lookups: usize,
    database_ms_per_lookup_median: f64,
    database_ms_per_lookup_p99: f64,
    in_memory_ms_per_lookup_median: f64,
    near_duplicates_found: usize,
    build_seconds: f64,
    database_mib: f64,
}

#[derive(Serialize)]
struct Targets {
    accepted_per_second_at_least: f64,
    accepted_met: bool,
    lookup_ms_at_1e6_at_most: f64,
    lookup_met: Option<bool>,
}

/// A ~1 KiB text of real-looking words, different for every `(run, index)`.
fn text(rng: &mut impl rand::Rng, words: &[&str]) -> String {
    let mut text = String::with_capacity(1100);
    while text.len() < 1000 {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(words[rng.random_range(0..words.len())]);
    }
    text.push('.');
    text
}

const WORDS: &str = "the quick brown fox jumps over lazy dog while seven bright stars watch quiet river flow \
    past old stone bridge where children once played games of chance and fortune under summer rain many \
    travellers came from distant lands carrying stories about kings queens merchants sailors thieves poets \
    every story changed a little with each telling until nobody remembered which parts were true";

async fn end_to_end(arguments: &Arguments, run: usize) -> anyhow::Result<(f64, Vec<f64>)> {
    let folder = tempfile::tempdir()?;
    let root = fresh_root("e2e");
    let layers = provenant_config::Layers { directory: "/nonexistent".into(), environment: "bench".into() };
    let identity = vec![ApiKeyConfig {
        principal: "bench".into(),
        roles: vec![Role::Contributor, Role::DatanetOwner],
        key_sha256: hex::encode(hash_key(KEY)),
    }];

    let mut ingest_config: ingest::Config = provenant_config::load_with(ingest::configuration::BASE_YAML, &layers, std::iter::empty())?;
    ingest_config.http.port = 0;
    ingest_config.bus = BusConfig { subject_root: root.clone(), ..BusConfig::new(&arguments.nats_url, "ingest") };
    ingest_config.database.url = provenant_config::Secret::new(format!("sqlite://{}?mode=rwc", folder.path().join("ingest.db").display()));
    ingest_config.identity.api_keys = identity.clone();
    ingest_config.contributions.daily_items_per_contributor = u64::MAX / 2;
    ingest_config.contributions.daily_bytes_per_contributor = u64::MAX / 2;
    ingest_config.contributions.await_read_model = arguments.await_read_model;

    let mut validate_config: validate::Config = provenant_config::load_with(validate::BASE_YAML, &layers, std::iter::empty())?;
    validate_config.http.port = 0;
    validate_config.bus = BusConfig { subject_root: root, ..BusConfig::new(&arguments.nats_url, "validate") };
    validate_config.database.url =
        provenant_config::Secret::new(format!("sqlite://{}?mode=rwc", folder.path().join("validate.db").display()));
    validate_config.identity.api_keys = identity;

    let shutdown = Shutdown::new();
    let ingest_app = ingest::Application::build(ingest_config).await?;
    let base = format!("http://{}", ingest_app.address());
    let validate_app = validate::Application::build(validate_config).await?;
    let ingest_task = tokio::spawn(ingest_app.run_until_stopped(shutdown.clone()));
    let validate_task = tokio::spawn(validate_app.run_until_stopped(shutdown.clone()));

    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {KEY}").parse()?);
    let http = reqwest::Client::builder().default_headers(headers).pool_max_idle_per_host(arguments.concurrency).build()?;
    let created: Value = http
        .post(format!("{base}/v1/datanets"))
        .json(&json!({ "name": format!("bench {run}"), "licence": "CC0-1.0" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let datanet_id = created["datanet_id"].as_str().context("no datanet id")?.to_owned();

    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(run as u64);
    let texts: Arc<Vec<String>> = Arc::new((0..arguments.contributions).map(|_| text(&mut rng, &words)).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..arguments.concurrency {
        let (http, texts, next, url) =
            (http.clone(), texts.clone(), next.clone(), format!("{base}/v1/datanets/{datanet_id}/contributions"));
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(text) = texts.get(index) else { return Ok::<_, anyhow::Error>(latencies) };
                let sent = Instant::now();
                let response = http.post(&url).header("content-type", "text/plain").body(text.clone()).send().await?;
                if response.status().as_u16() != 202 {
                    bail!("submission {index}: {} {}", response.status(), response.text().await.unwrap_or_default());
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1_000.0);
            }
        }));
    }
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await??);
    }
    eprintln!("  {} submitted in {:.1} s; waiting for the verdicts", arguments.contributions, started.elapsed().as_secs_f64());
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut reported = Instant::now();
    loop {
        let stats: Value = http.get(format!("{base}/v1/datanets/{datanet_id}/stats")).send().await?.json().await?;
        let accepted = stats["accepted"].as_u64().unwrap_or(0) as usize;
        if accepted >= arguments.contributions {
            break;
        }
        if stats["rejected"].as_u64().unwrap_or(0) > 0 {
            let mine: Value = http.get(format!("{base}/v1/contributions?limit=500")).send().await?.json().await?;
            let rejected = mine["contributions"].as_array().and_then(|all| all.iter().find(|one| one["status"] == "rejected")).cloned();
            bail!("the benchmark's texts must all be accepted; {stats}; for example {rejected:?}");
        }
        if reported.elapsed() > Duration::from_secs(10) {
            eprintln!("  {stats}");
            reported = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("only {accepted} of {} accepted after 10 minutes: {stats}", arguments.contributions);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = arguments.contributions as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    ingest_task.await??;
    validate_task.await??;
    Ok((rate, latencies))
}

fn random_signature(rng: &mut impl rand::Rng) -> Signature {
    let mut values = [0u64; SIGNATURE_LENGTH];
    rng.fill(&mut values[..]);
    Signature(values)
}

/// Indexes `size` contributions in one Datanet (database and in-memory), then times lookups.
async fn near_duplicate_lookup(size: usize, lookups: usize) -> anyhow::Result<Lookup> {
    let folder = tempfile::tempdir()?;
    let path = folder.path().join("validate.db");
    let database = provenant_bus::store::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?;
    validate_migration::Migrator::up(&database, None).await?;
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(size as u64);
    let mut memory = NearDuplicateIndex::new();
    // Real texts at the front of the index, so that near-duplicate queries have something to find.
    let originals: Vec<String> = (0..lookups / 2).map(|_| text(&mut rng, &words)).collect();

    let build = Instant::now();
    let mut index = 0;
    while index < size {
        let mut rows = Vec::new();
        for _ in 0..10_000.min(size - index) {
            let signature = match originals.get(index) {
                Some(original) => Signature::of(original).context("a signature")?,
                None => random_signature(&mut rng),
            };
            let id = format!("c{index:08}");
            let row = accepted::Model {
                contribution_id: id.clone(),
                datanet_id: "bench".into(),
                contributor_id: "bench".into(),
                content_sha256: format!("{index:064x}"),
                cluster_id: id.clone(),
                signature: None,
                accepted_sequence: index as i64,
            };
            rows.push(accepted::with_signature(row, Some(&signature)));
            memory.insert(&id, signature);
            index += 1;
        }
        let transaction = database.begin().await?;
        accepted::insert_all(&transaction, &rows).await?;
        transaction.commit().await?;
    }
    database.execute_unprepared("ANALYZE").await?;
    let build_seconds = build.elapsed().as_secs_f64();

    // Queries: near duplicates of the originals (one word changed) and fresh texts.
    let queries: Vec<Signature> = (0..lookups)
        .map(|query| {
            let text = match originals.get(query / 2).filter(|_| query % 2 == 0) {
                Some(original) => original.replacen("the", "a", 1),
                None => text(&mut rng, &words),
            };
            Signature::of(&text).expect("a signature")
        })
        .collect();
    let (mut database_ms, mut memory_ms, mut found) = (Vec::new(), Vec::new(), 0);
    for query in &queries {
        let keys: Vec<u64> = query.band_keys().collect();
        let started = Instant::now();
        let best = accepted::sharing_bands(&database, &["bench".to_owned()], &keys)
            .await?
            .into_iter()
            .filter_map(|row| Some((query.similarity(&accepted::signature_of(&row)?), row.contribution_id)))
            .filter(|(similarity, _)| *similarity >= 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        database_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
        let started = Instant::now();
        let in_memory = memory.find(query, 0.8).map(|found| found.id);
        memory_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
        if best.map(|(_, id)| id) != in_memory {
            bail!("the database and in-memory lookups disagree");
        }
        found += usize::from(in_memory.is_some());
    }
    database.close().await?;
    let database_mib = std::fs::metadata(&path).map(|metadata| metadata.len() as f64 / (1024.0 * 1024.0)).unwrap_or(f64::NAN);
    Ok(Lookup {
        indexed: size,
        lookups,
        database_ms_per_lookup_median: median(&database_ms),
        database_ms_per_lookup_p99: quantile(&database_ms, 0.99),
        in_memory_ms_per_lookup_median: median(&memory_ms),
        near_duplicates_found: found,
        build_seconds,
        database_mib,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    // The services' warnings and errors (RUST_LOG overrides), so that a stall explains itself.
    let telemetry_config = provenant_telemetry::TelemetryConfig { log_filter: "warn".into(), ..Default::default() };
    let _telemetry = provenant_telemetry::init("datanet-bench", &telemetry_config)?;
    let machine = Machine::probe(&fresh_bus(&arguments.nats_url, "probe").await?);
    let (mut raw, mut accepted, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..arguments.repeats {
        raw.push(raw_publish(&arguments.nats_url, 20_000, 1_000).await?);
        let (rate, run_latencies) = end_to_end(&arguments, run).await?;
        accepted.push(rate);
        latencies.extend(run_latencies);
        eprintln!("run {}: raw publish {:.0}/s, accepted end to end {:.0}/s", run + 1, raw[run], accepted[run]);
    }
    let peak_after_end_to_end = peak_rss_mib();
    let mut lookups = Vec::new();
    for size in &arguments.index_sizes {
        let lookup = near_duplicate_lookup(*size, arguments.lookups).await?;
        eprintln!(
            "near-duplicate lookup at {size}: {:.3} ms (database), {:.4} ms (in memory); built in {:.0} s",
            lookup.database_ms_per_lookup_median, lookup.in_memory_ms_per_lookup_median, lookup.build_seconds
        );
        lookups.push(lookup);
    }
    let raw = series("async-nats acked publish, 1 KiB payload, acks every 1,000", 20_000, raw);
    let accepted = series(
        "HTTP submit of unique ~1 KiB texts until ingest's read model shows all accepted (ingest + validate on SQLite)",
        arguments.contributions,
        accepted,
    );
    let lookup_at_million =
        lookups.iter().find(|lookup| lookup.indexed == 1_000_000).map(|lookup| lookup.database_ms_per_lookup_median < 1.0);
    let report = Report {
        benchmark: "datanet-ingestion",
        machine,
        text_bytes: 1_000,
        concurrency: arguments.concurrency,
        await_read_model: arguments.await_read_model,
        repeats: arguments.repeats,
        end_to_end_vs_raw_ratio: accepted.median_per_second / raw.median_per_second,
        targets: Targets {
            accepted_per_second_at_least: 2_000.0,
            accepted_met: accepted.median_per_second >= 2_000.0,
            lookup_ms_at_1e6_at_most: 1.0,
            lookup_met: lookup_at_million,
        },
        raw_publish: raw,
        end_to_end_accepted: accepted,
        submit_latency_ms: Latency { p50: quantile(&latencies, 0.5), p99: quantile(&latencies, 0.99) },
        peak_rss_mib_after_end_to_end: peak_after_end_to_end,
        near_duplicate_lookup: lookups,
        peak_rss_mib_at_end: peak_rss_mib(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(output) = &arguments.output {
        std::fs::write(output, &json).with_context(|| format!("cannot write {}", output.display()))?;
    }
    println!("{json}");
    Ok(())
}
