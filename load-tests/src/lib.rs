//! What the benchmarks share: medians, JSON series, fresh namespaces on one NATS server, and
//! the raw JetStream publish every benchmark reports beside its own figures.

use std::time::Instant;

use bytes::Bytes;
use provenant_bus::{Bus, BusConfig};
use serde::Serialize;

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.is_empty() {
        return f64::NAN;
    }
    if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 }
}

/// The `q`-quantile (0..=1) of `values`, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "an index within the slice")]
    let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[derive(Debug, Serialize)]
pub struct Series {
    pub description: &'static str,
    pub messages: usize,
    pub runs_per_second: Vec<f64>,
    pub median_per_second: f64,
}

pub fn series(description: &'static str, messages: usize, runs: Vec<f64>) -> Series {
    Series { description, messages, median_per_second: median(&runs), runs_per_second: runs }
}

/// The machine as the benchmark found it.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub load_average_before: String,
    pub nats_server: String,
}

impl Machine {
    pub fn probe(bus: &Bus) -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            load_average_before: std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned(),
            nats_server: bus.client().server_info().version.clone(),
        }
    }
}

/// The CPU benchmarks' `machine` block: cores, and the load average before and after.
pub fn machine_load(load_before: &str) -> serde_json::Value {
    serde_json::json!({
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    })
}

/// `/proc/loadavg`, trimmed.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

/// Writes `report` as pretty JSON to `path` (creating its folder) and prints its `headline`
/// field and the path.
#[allow(clippy::print_stdout, reason = "the headline and the report path are a benchmark's output")]
pub fn write_report(path: &std::path::Path, report: &serde_json::Value, headline: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    println!("{}", serde_json::to_string_pretty(&report[headline])?);
    println!("report: {}", path.display());
    Ok(())
}

/// Peak resident memory of this process so far (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// A bus on its own subject root (and so its own streams) on the benchmark's NATS server.
pub async fn fresh_bus(url: &str, label: &str) -> anyhow::Result<Bus> {
    let mut config = BusConfig::new(url, "bench");
    config.subject_root = fresh_root(label);
    let bus = Bus::connect(&config).await?;
    bus.declare_streams().await?;
    Ok(bus)
}

pub fn fresh_root(label: &str) -> String {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    format!("b{label}_{}", &unique[unique.len() - 12..])
}

/// Awaits acknowledgements `every` at a time, as a producer at full speed does (one publish
/// at a time is ~25x slower, see shared/DESIGN.md).
pub struct AckBatcher<F> {
    pending: Vec<F>,
    every: usize,
}

impl<F, T, E> AckBatcher<F>
where
    F: std::future::IntoFuture<Output = Result<T, E>>,
    anyhow::Error: From<E>,
{
    pub fn new(every: usize) -> AckBatcher<F> {
        AckBatcher { pending: Vec::with_capacity(every), every }
    }

    pub async fn push(&mut self, pending: F) -> anyhow::Result<()> {
        self.pending.push(pending);
        if self.pending.len() >= self.every {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        for ack in self.pending.drain(..) {
            ack.await?;
        }
        Ok(())
    }
}

/// async-nats acked publishes of 1 KiB payloads, acks awaited `ack_every` at a time: messages/s.
pub async fn raw_publish(url: &str, messages: usize, ack_every: usize) -> anyhow::Result<f64> {
    let bus = fresh_bus(url, "raw").await?;
    let payload = Bytes::from(vec![b'x'; 1024]);
    let root = bus.namespace().root().to_owned();
    let started = Instant::now();
    let mut acks = AckBatcher::new(ack_every);
    for index in 0..messages {
        acks.push(bus.jetstream().publish(format!("{root}.datanet.datanet.raw-{index}"), payload.clone()).await?).await?;
    }
    acks.flush().await?;
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}
