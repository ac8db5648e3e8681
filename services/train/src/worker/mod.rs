//! Training workers: pull a job from the work queue, train it with Burn, report progress and
//! checkpoints as events, register the result.
//!
//! A worker needs NATS and nothing else (no database), so it runs alone on GPU nodes
//! (`provenant-train --worker`). The invariants:
//! - **The job's history decides.** Before it starts, a worker reads the job's events: a
//!   finished job is skipped, and a job with a checkpoint resumes from it, bit for bit.
//! - **One writer per job.** Every append names the job's last sequence
//!   (`Nats-Expected-Last-Subject-Sequence`). A cancellation, or a second worker that took
//!   the job over, makes the next append fail; the worker then stops without acking, so a
//!   worker that only seemed dead cannot corrupt the job.
//! - **A dead worker's job moves on.** The worker heartbeats its queue message while it
//!   trains; when it dies the heartbeats stop and the server hands the message to another
//!   worker after the ack wait.

mod attribution;
mod data;
mod job;

pub use attribution::block_layout;

pub use job::{index_id_of, model_id_of};

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use futures::StreamExt as _;
use provenant_bus::{BlobStore, Bus};
use provenant_runtime::Shutdown;
use tracing::{Instrument as _, info, info_span, warn};

use crate::configuration::WorkersConfig;
use crate::queue::{WorkOrder, WorkQueue};

/// Why a job could not go on.
#[derive(Debug)]
pub enum JobError {
    /// Can never succeed as specified: the job fails with this stable code.
    Fail { code: &'static str, message: String },
    /// Worth retrying (NATS or the object store unavailable): the message goes back to the queue.
    Transient(anyhow::Error),
}

impl JobError {
    pub fn fail(code: &'static str, message: impl std::fmt::Display) -> JobError {
        JobError::Fail { code, message: message.to_string() }
    }

    pub fn transient(error: impl Into<anyhow::Error>) -> JobError {
        JobError::Transient(error.into())
    }
}

/// The buckets a worker reads and writes.
#[derive(Clone)]
pub struct Stores {
    pub contributions: BlobStore,
    pub manifests: BlobStore,
    /// Weights, tokenizers, configs, metrics and example tables.
    pub models: BlobStore,
    pub checkpoints: BlobStore,
}

impl Stores {
    pub async fn open(bus: &Bus) -> Result<Stores, provenant_bus::Error> {
        Ok(Stores {
            contributions: bus.blob_store("contributions").await?,
            manifests: bus.blob_store("snapshots").await?,
            models: bus.blob_store("models").await?,
            checkpoints: bus.blob_store("checkpoints").await?,
        })
    }
}

/// One worker: pulls one job at a time.
#[derive(Clone)]
pub struct Worker {
    bus: Bus,
    queue: WorkQueue,
    stores: Stores,
    config: WorkersConfig,
    id: String,
}

/// How a job's turn on this worker ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Completed, failed, cancelled or already finished: the message is done with.
    Finished,
    /// Another writer appended to the job: someone else owns it now; leave the message alone.
    Superseded,
    /// Shutdown: checkpointed where it stood; hand the message to another worker now.
    Interrupted,
}

impl Worker {
    pub fn new(bus: Bus, queue: WorkQueue, stores: Stores, config: WorkersConfig) -> Worker {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| bus.producer().to_owned());
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let id = format!("{host}-{}", &unique[unique.len() - 8..]);
        Worker { bus, queue, stores, config, id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Pulls and trains jobs until `shutdown` fires; a job in progress is checkpointed and
    /// handed back to the queue.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let consumer = self.queue.consumer(&self.config).await?;
        info!(worker = %self.id, "training worker ready");
        if !model::backend::allocator_is_tuned() {
            warn!(
                tunables = model::backend::GLIBC_TUNABLES,
                "GLIBC_TUNABLES does not raise glibc's mmap threshold: training steps fault in fresh pages and run slower (the images set it)"
            );
        }
        while !shutdown.is_cancelled() {
            // One message at a time, fetched only when idle: a prefetched job would sit here
            // unheartbeated while another one trains.
            let fetched = tokio::select! {
                () = shutdown.cancelled() => break,
                fetched = consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages() => fetched,
            };
            let mut messages = match fetched {
                Ok(messages) => messages,
                Err(error) => {
                    warn!(%error, "failed to pull from the training queue");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => self.work(message, &shutdown).await,
                    Err(error) => warn!(%error, "failed to receive from the training queue"),
                }
            }
        }
        Ok(())
    }

    async fn work(&self, message: async_nats::jetstream::Message, shutdown: &Shutdown) {
        let order: WorkOrder = match serde_json::from_slice(&message.payload) {
            Ok(order) => order,
            Err(error) => {
                warn!(%error, "dropping an unreadable work order");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        // Heartbeats run inside this future, not in a task of their own, so they stop when
        // the worker does (however it stops): then the server hands the job to another worker.
        let heartbeat = async {
            let every = Duration::from_secs(self.config.heartbeat_seconds.max(1));
            loop {
                tokio::time::sleep(every).await;
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    warn!(%error, "failed to heartbeat a training job");
                }
            }
        };
        let span = info_span!("training_job", job_id = %order.job_id, worker = %self.id, delivered);
        let header = |name: &str| message.headers.as_ref().and_then(|headers| headers.get(name)).map(|value| value.as_str());
        provenant_telemetry::propagation::continue_trace(&span, header("traceparent"), header("tracestate"));
        let outcome = tokio::select! {
            outcome = job::run(self, &order.job_id, delivered, shutdown).instrument(span) => outcome,
            () = heartbeat => unreachable!("the heartbeat loop never ends"),
        };
        let acked = match outcome {
            Ok(Outcome::Finished) => message.ack().await,
            Ok(Outcome::Superseded) => Ok(()),
            Ok(Outcome::Interrupted) => message.ack_with(AckKind::Nak(None)).await,
            Err(error) => {
                warn!(job_id = %order.job_id, error = format!("{error:#}"), "training job hit a transient failure, retrying later");
                message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await
            }
        };
        if let Err(error) = acked {
            warn!(job_id = %order.job_id, %error, "failed to settle a training job's message");
        }
    }
}

/// Runs `count` workers until `shutdown`.
pub async fn run_workers(workers: Vec<Worker>, shutdown: Shutdown) -> anyhow::Result<()> {
    let handles: Vec<_> = workers.into_iter().map(|worker| tokio::spawn(worker.run(shutdown.clone()))).collect();
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

/// Shared by the job runner and the tests: the stop flag a trainer polls between steps.
pub(crate) type StopFlag = Arc<std::sync::atomic::AtomicBool>;
