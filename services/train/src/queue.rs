//! The training work queue: a JetStream stream with work-queue retention from which workers
//! pull jobs. It is plumbing, not provenance (the job's events are the record): a message
//! names only the job, and a worker reads everything else from the job's history.
//!
//! A worker holds a job's message while it trains and heartbeats it (`+WPI`, "in progress");
//! when the worker dies the heartbeats stop, the server redelivers the message after the
//! ack wait, and another worker resumes the job from its last checkpoint.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream;
use provenant_bus::{Bus, Error};
use serde::{Deserialize, Serialize};

use crate::configuration::WorkersConfig;

/// Durable consumer shared by every worker.
pub const CONSUMER: &str = "training-workers";

/// What a queue message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrder {
    pub job_id: String,
}

#[derive(Clone)]
pub struct WorkQueue {
    bus: Bus,
    stream: String,
}

impl WorkQueue {
    /// Declares the queue stream (idempotent): `<ROOT>_TRAINING_QUEUE` on `<root>.queue.training.*`.
    pub async fn declare(bus: &Bus) -> Result<WorkQueue, Error> {
        let root = bus.namespace().root();
        let name = format!("{}_TRAINING_QUEUE", root.to_uppercase());
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{root}.queue.training.*")],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            // Replicated like the event streams: a queued job must survive a server's loss.
            num_replicas: bus.replicas(),
            duplicate_window: bus.duplicate_window(),
            ..Default::default()
        };
        bus.jetstream()
            .create_or_update_stream(config)
            .await
            .map_err(|error| Error::Stream { stream: name.clone(), reason: error.to_string() })?;
        Ok(WorkQueue { bus: bus.clone(), stream: name })
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Queues a job. The message id is the job's, so queueing it again within the duplicate
    /// window (a projection replaying its events) stores nothing; a later duplicate is
    /// harmless, since a worker skips a job whose history is finished.
    pub async fn enqueue(&self, job_id: &str) -> Result<(), Error> {
        let subject = format!("{}.queue.training.{job_id}", self.bus.namespace().root());
        let payload = serde_json::to_vec(&WorkOrder { job_id: job_id.to_owned() }).expect("a work order always serialises");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("job-{job_id}").as_str());
        // The worker's span continues the trace of whatever queued the job (its submission).
        provenant_telemetry::propagation::inject_current(|name, value| headers.insert(name, value.as_str()));
        let ack = self
            .bus
            .jetstream()
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|source| Error::Publish { subject: subject.clone(), source })?;
        ack.await.map_err(|source| Error::Publish { subject, source })?;
        Ok(())
    }

    /// The workers' durable pull consumer.
    pub async fn consumer(&self, config: &WorkersConfig) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, Error> {
        let failed = |error: String| Error::Consumer { consumer: CONSUMER.into(), reason: error };
        let stream = self.bus.jetstream().get_stream(&self.stream).await.map_err(|error| failed(error.to_string()))?;
        stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(config.ack_wait_seconds),
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| failed(error.to_string()))
    }
}
