//! `bus-bench`: JetStream throughput, side by side in one run, JSON out.
//!
//! Three measurements with the same ~1 KiB messages, interleaved (A B C A B C …) so that
//! machine noise hits each alike, medians reported:
//! - `raw_publish`: async-nats directly, acked publishes, acks awaited every `--ack-every`;
//! - `bus_publish`: the same through `provenant_bus` (envelope headers, event id as
//!   `Nats-Msg-Id`, trace context), same ack batching;
//! - `publish_to_projection_sqlite`: events published through the bus while the ingest
//!   service's real Datanet projection consumes them into a fresh SQLite file; the clock stops
//!   when the last row is committed.
//!
//! Needs a NATS server: `--nats-url`, or `PV_TEST_NATS_URL` (what `make bench` provides).

#![allow(clippy::print_stdout, reason = "a benchmark reports on standard output")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use provenant_bus::{Bus, Consumer, ConsumerConfig, Envelope, Expect};
use provenant_events::proto::datanet::v1::{DatanetCreated, DatanetSpec};
use provenant_load_tests::{AckBatcher, Machine, Series, fresh_bus, raw_publish, series};
use sea_orm::{EntityTrait as _, PaginatorTrait as _};
use sea_orm_migration::MigratorTrait as _;
use serde::Serialize;

#[derive(Parser)]
struct Arguments {
    #[arg(long, env = "PV_TEST_NATS_URL")]
    nats_url: String,
    /// Messages per publish run.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Events per publish-to-projection run.
    #[arg(long, default_value_t = 50_000)]
    projection_events: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, default_value_t = 1_000)]
    ack_every: usize,
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    message_bytes: MessageBytes,
    ack_every: usize,
    repeats: usize,
    raw_publish: Series,
    raw_same_wire: Series,
    bus_publish: Series,
    publish_to_projection_sqlite: Series,
    bus_vs_raw_ratio: f64,
    bus_vs_raw_same_wire_ratio: f64,
    targets: Targets,
}

#[derive(Serialize)]
struct MessageBytes {
    raw_payload: usize,
    bus_payload: usize,
    bus_headers: usize,
}

#[derive(Serialize)]
struct Targets {
    bus_vs_raw_at_least: f64,
    bus_vs_raw_met: bool,
    projection_per_second_at_least: f64,
    projection_met: bool,
}

fn event(index: usize, run: usize) -> DatanetCreated {
    // Padded so the encoded event is about 1 KiB, like the raw payload.
    DatanetCreated {
        datanet_id: format!("bench-{run}-{index}"),
        owner: Some(provenant_events::proto::common::v1::Principal { id: "bench-owner".into(), kind: 2 }),
        spec: Some(DatanetSpec {
            name: format!("Datanet {index}"),
            description: "x".repeat(930),
            tags: vec!["bench".into()],
            licence_spdx: "CC0-1.0".into(),
            modality: 1,
            record_format: 1,
            visibility: 1,
            contribution_policy: 1,
            ..Default::default()
        }),
    }
}

async fn raw_same_wire(url: &str, messages: usize, ack_every: usize, run: usize) -> anyhow::Result<f64> {
    let bus = fresh_bus(url, "wire").await?;
    let prepared: Vec<(String, async_nats::HeaderMap, Bytes)> = (0..messages)
        .map(|index| {
            let event = event(index, run);
            let envelope = Envelope::new(&event, "bench");
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in envelope.headers() {
                headers.insert(name, value.as_str());
            }
            headers.insert("Nats-Msg-Id", envelope.event_id.to_string().as_str());
            let subject = bus.namespace().subject_of(&event).expect("valid subject");
            (subject, headers, Bytes::from(prost::Message::encode_to_vec(&event)))
        })
        .collect();
    let started = Instant::now();
    let mut acks = AckBatcher::new(ack_every);
    for (subject, headers, payload) in prepared {
        acks.push(bus.jetstream().publish_with_headers(subject, headers, payload).await?).await?;
    }
    acks.flush().await?;
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}

async fn publish_through_bus(bus: &Bus, messages: usize, ack_every: usize, run: usize) -> anyhow::Result<Duration> {
    let events: Vec<(Envelope, DatanetCreated)> = (0..messages)
        .map(|index| {
            let event = event(index, run);
            (Envelope::new(&event, "bench"), event)
        })
        .collect();
    let started = Instant::now();
    let mut acks = AckBatcher::new(ack_every);
    for (envelope, event) in &events {
        acks.push(bus.send(envelope, event, Expect::Any).await?).await?;
    }
    acks.flush().await?;
    Ok(started.elapsed())
}

async fn bus_publish(url: &str, messages: usize, ack_every: usize, run: usize) -> anyhow::Result<f64> {
    let bus = fresh_bus(url, "bus").await?;
    let elapsed = publish_through_bus(&bus, messages, ack_every, run).await?;
    Ok(messages as f64 / elapsed.as_secs_f64())
}

async fn publish_to_projection(url: &str, events: usize, ack_every: usize, run: usize) -> anyhow::Result<f64> {
    let bus = fresh_bus(url, "projection").await?;
    let folder = tempfile::tempdir()?;
    let database_url = format!("sqlite://{}?mode=rwc", folder.path().join("ingest.db").display());
    let database = provenant_bus::store::connect(&database_url).await?;
    ingest_migration::Migrator::up(&database, None).await?;
    let consumer = Consumer::new(bus.clone(), database.clone(), ingest::handlers::DatanetProjector::new(), ConsumerConfig::default());
    let shutdown = provenant_runtime::Shutdown::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { consumer.run(async move { stop.cancelled().await }).await });

    let started = Instant::now();
    publish_through_bus(&bus, events, ack_every, run).await?;
    loop {
        let rows = ingest::projections::datanets::Entity::find().count(&database).await?;
        if rows as usize >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    task.await?.context("projection consumer failed")?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let machine = Machine::probe(&fresh_bus(&arguments.nats_url, "probe").await?);
    let sample = event(0, 0);
    let sample_headers: usize = Envelope::new(&sample, "bench").headers().iter().map(|(name, value)| name.len() + value.len() + 4).sum();

    let (mut raw, mut wire, mut bus, mut projection) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..arguments.repeats {
        raw.push(raw_publish(&arguments.nats_url, arguments.messages, arguments.ack_every).await?);
        wire.push(raw_same_wire(&arguments.nats_url, arguments.messages, arguments.ack_every, run).await?);
        bus.push(bus_publish(&arguments.nats_url, arguments.messages, arguments.ack_every, run).await?);
        projection.push(publish_to_projection(&arguments.nats_url, arguments.projection_events, arguments.ack_every, run).await?);
        eprintln!(
            "run {}: raw {:.0}/s, raw same wire {:.0}/s, bus {:.0}/s, publish-to-projection {:.0}/s",
            run + 1,
            raw[run],
            wire[run],
            bus[run],
            projection[run]
        );
    }
    let raw = series("async-nats acked publish, 1 KiB payload, no headers", arguments.messages, raw);
    let wire = series("async-nats acked publish of the bus's exact bytes: payload, envelope headers, message id", arguments.messages, wire);
    let bus = series("provenant_bus publish of a ~1 KiB event with its envelope headers", arguments.messages, bus);
    let projection = series(
        "publish through the bus while the ingest Datanet projection consumes into SQLite; until the last row commits",
        arguments.projection_events,
        projection,
    );
    let ratio = bus.median_per_second / raw.median_per_second;
    let wire_ratio = bus.median_per_second / wire.median_per_second;
    let report = Report {
        benchmark: "bus-throughput",
        machine,
        message_bytes: MessageBytes {
            raw_payload: 1024,
            bus_payload: prost::Message::encoded_len(&sample),
            bus_headers: sample_headers + 40,
        },
        ack_every: arguments.ack_every,
        repeats: arguments.repeats,
        targets: Targets {
            bus_vs_raw_at_least: 0.9,
            bus_vs_raw_met: ratio >= 0.9,
            projection_per_second_at_least: 20_000.0,
            projection_met: projection.median_per_second >= 20_000.0,
        },
        raw_publish: raw,
        raw_same_wire: wire,
        bus_publish: bus,
        publish_to_projection_sqlite: projection,
        bus_vs_raw_ratio: ratio,
        bus_vs_raw_same_wire_ratio: wire_ratio,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(output) = &arguments.output {
        std::fs::write(output, &json).with_context(|| format!("cannot write {}", output.display()))?;
    }
    println!("{json}");
    Ok(())
}
