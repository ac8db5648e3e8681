//! One job's turn on a worker: read its history, start (or resume), train while reporting,
//! register the result.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use model::backend::Backend;
use model::{Checkpoint, Control, Observer, StepReport, Tokenizer, Trainer, Transformer};
use provenant_bus::{Context, Envelope, Event, Expect, Upcasters};
use provenant_events::proto::common::v1::{BlobRef, Principal, PrincipalKind};
use provenant_events::proto::training::v1::{
    self as proto, ModelKind, ModelRegistered, TrainingJobCancelled, TrainingJobCheckpointed, TrainingJobCompleted, TrainingJobFailed,
    TrainingJobProgressed, TrainingJobRequested, TrainingJobStarted,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{JobError, Outcome, StopFlag, Worker, data};
use crate::domain::examples::{self, Dataset, Split};
use crate::domain::spec::{Base, JobSpec, architecture_to_proto, lora_to_proto};

/// What the job's events say so far.
struct History {
    last_sequence: u64,
    requested: Option<(Envelope, TrainingJobRequested)>,
    finished: bool,
    attempts: u32,
    checkpoint: Option<BlobRef>,
}

async fn read_history(worker: &Worker, job_id: &str) -> Result<History, JobError> {
    let deliveries = worker.bus.aggregate_history(Context::Training, "job", job_id).await.map_err(JobError::transient)?;
    let upcasters = Upcasters::contract();
    let mut history = History { last_sequence: 0, requested: None, finished: false, attempts: 0, checkpoint: None };
    for delivery in deliveries {
        history.last_sequence = delivery.stream_sequence;
        match delivery.envelope.event_type.as_str() {
            TrainingJobRequested::TYPE => {
                let event = delivery.decode(&upcasters).map_err(|error| JobError::fail("job.invalid_event", error))?;
                history.requested = Some((delivery.envelope.clone(), event));
            }
            TrainingJobStarted::TYPE => history.attempts += 1,
            TrainingJobCheckpointed::TYPE => {
                let event: TrainingJobCheckpointed =
                    delivery.decode(&upcasters).map_err(|error| JobError::fail("job.invalid_event", error))?;
                history.checkpoint = event.state;
            }
            TrainingJobCompleted::TYPE | TrainingJobFailed::TYPE | TrainingJobCancelled::TYPE => history.finished = true,
            _ => {}
        }
    }
    Ok(history)
}

/// Appends to the job with the sequence check that makes this worker its only writer.
struct JobWriter<'a> {
    worker: &'a Worker,
    cause: Envelope,
    last_sequence: u64,
}

enum Appended {
    Yes,
    /// Someone else appended first (a cancellation, or a worker that took the job over).
    Conflict,
}

impl JobWriter<'_> {
    async fn append<E: Event>(&mut self, event: &E, event_id: Option<uuid::Uuid>) -> Result<Appended, JobError> {
        let mut envelope = Envelope::new(event, self.worker.bus.producer()).caused_by(&self.cause);
        if let Some(event_id) = event_id {
            envelope.event_id = event_id;
        }
        match self.worker.bus.publish(&envelope, event, Expect::LastSequence(self.last_sequence)).await {
            Ok(published) => {
                self.last_sequence = published.sequence;
                Ok(Appended::Yes)
            }
            Err(provenant_bus::Error::Conflict { .. }) => Ok(Appended::Conflict),
            Err(error) => Err(JobError::transient(error)),
        }
    }
}

/// A stable id derived from the job, so that a retried append is recognised as a duplicate.
pub(super) fn derived_id(job_id: &str, purpose: &str) -> uuid::Uuid {
    let digest = Sha256::digest(format!("provenant/{purpose}/{job_id}").as_bytes());
    uuid::Uuid::new_v8(digest[..16].try_into().expect("16 bytes"))
}

/// The id of the model a job registers.
pub fn model_id_of(job_id: &str) -> String {
    derived_id(job_id, "model").to_string()
}

/// Appends the first event of a new aggregate with an id derived from the job; a retry that
/// finds its own event there goes on, anyone else's fails the job with `taken_code`.
pub(super) async fn create_once<E: Event>(
    worker: &Worker,
    cause: &Envelope,
    event: &E,
    event_id: uuid::Uuid,
    taken_code: &'static str,
) -> Result<(), JobError> {
    let mut envelope = Envelope::new(event, worker.bus.producer()).caused_by(cause);
    envelope.event_id = event_id;
    match worker.bus.publish(&envelope, event, Expect::NoEvents).await {
        Ok(_) => Ok(()),
        Err(provenant_bus::Error::Conflict { .. }) => {
            let aggregate_id = event.aggregate_id();
            let existing = worker.bus.last_event(E::CONTEXT, E::AGGREGATE, aggregate_id).await.map_err(JobError::transient)?;
            match existing.and_then(|(_, id)| id) == Some(event_id.to_string()) {
                true => Ok(()),
                false => Err(JobError::fail(taken_code, format!("{} {aggregate_id} was written by someone else", E::AGGREGATE))),
            }
        }
        Err(error) => Err(JobError::transient(error)),
    }
}

/// The id of the attribution index a job builds.
pub fn index_id_of(job_id: &str) -> String {
    derived_id(job_id, "attribution-index").to_string()
}

/// Which code trained a model: the service version and the backend (CPU and GPU runs of the
/// same job give different digests).
fn code_version() -> String {
    format!("provenant-train {} (burn 0.22.1, {:?})", env!("CARGO_PKG_VERSION"), Backend::preferred())
}

pub(super) async fn run(worker: &Worker, job_id: &str, delivered: i64, shutdown: &provenant_runtime::Shutdown) -> anyhow::Result<Outcome> {
    let history = match read_history(worker, job_id).await {
        Ok(history) => history,
        Err(JobError::Transient(error)) => return Err(error),
        Err(JobError::Fail { code, message }) => {
            warn!(job_id, code, message, "job history is unreadable, dropping the work order");
            return Ok(Outcome::Finished);
        }
    };
    if history.finished {
        info!(job_id, "job already finished, skipping");
        return Ok(Outcome::Finished);
    }
    let Some((cause, requested)) = history.requested.clone() else {
        warn!(job_id, "work order for a job that was never requested, dropping it");
        return Ok(Outcome::Finished);
    };
    let mut writer = JobWriter { worker, cause, last_sequence: history.last_sequence };
    let result = if delivered > i64::from(worker.config.max_attempts) {
        Err(JobError::fail("worker.attempts_exhausted", format!("the job was handed to a worker {delivered} times without finishing")))
    } else {
        train(worker, &mut writer, &history, &requested, shutdown).await
    };
    match result {
        // Cancelled while it trained: the message is done with. Taken over by another worker:
        // the message is theirs now.
        Ok(Outcome::Superseded) => match read_history(worker, job_id).await {
            Ok(now) if now.finished => Ok(Outcome::Finished),
            _ => Ok(Outcome::Superseded),
        },
        Ok(outcome) => Ok(outcome),
        Err(JobError::Transient(error)) => Err(error),
        Err(JobError::Fail { code, message }) => {
            warn!(job_id, code, message, "training job failed");
            let event = TrainingJobFailed { job_id: job_id.to_owned(), code: code.to_owned(), message };
            match writer.append(&event, None).await {
                Ok(Appended::Yes) => {
                    metrics::counter!("train_jobs_finished_total", "outcome" => "failed").increment(1);
                    Ok(Outcome::Finished)
                }
                Ok(Appended::Conflict) => Ok(Outcome::Superseded),
                Err(JobError::Transient(error)) => Err(error),
                Err(JobError::Fail { .. }) => unreachable!("appending only fails transiently"),
            }
        }
    }
}

/// What the training thread tells the job's task.
enum Report {
    Step(StepReport),
    Checkpoint { step: u64, bytes: Vec<u8> },
}

/// The trainer's observer: forwards progress at most every `interval` (and the last step),
/// serialises checkpoints, and stops when told to or when nobody listens any more.
struct Bridge {
    sender: mpsc::UnboundedSender<Report>,
    stop: StopFlag,
    interval: Duration,
    last_sent: Option<Instant>,
    total_steps: u64,
}

impl Bridge {
    fn control(&self) -> Control {
        if self.stop.load(Ordering::SeqCst) || self.sender.is_closed() { Control::Stop } else { Control::Continue }
    }
}

impl Observer for Bridge {
    fn on_step(&mut self, report: &StepReport) -> Control {
        let due = self.last_sent.is_none_or(|sent| sent.elapsed() >= self.interval) || report.step == self.total_steps;
        if due {
            self.last_sent = Some(Instant::now());
            let _ = self.sender.send(Report::Step(report.clone()));
        }
        self.control()
    }

    fn on_checkpoint(&mut self, checkpoint: Checkpoint) -> Control {
        match checkpoint.to_bytes() {
            Ok(bytes) => {
                let _ = self.sender.send(Report::Checkpoint { step: checkpoint.step, bytes });
            }
            Err(error) => warn!(%error, "failed to serialise a checkpoint"),
        }
        self.control()
    }
}

#[derive(Serialize)]
struct Metrics {
    held_out_perplexity: Option<f64>,
    held_out_mean_loss: Option<f64>,
    held_out_tokens: u64,
    /// The base model's held-out perplexity on the same tokens (adapters and fine-tunes).
    base_held_out_perplexity: Option<f64>,
    final_training_loss: Option<f32>,
    steps: u64,
    training_tokens: u64,
    examples: u64,
    training_examples: u64,
    held_out_examples: u64,
    contributors: u64,
    backend: String,
}

async fn train(
    worker: &Worker,
    writer: &mut JobWriter<'_>,
    history: &History,
    requested: &TrainingJobRequested,
    shutdown: &provenant_runtime::Shutdown,
) -> Result<Outcome, JobError> {
    let job_id = requested.job_id.clone();
    let spec_proto = requested.spec.as_ref().ok_or_else(|| JobError::fail("job.invalid_event", "no spec"))?;
    let spec = JobSpec::from_proto(spec_proto).map_err(|error| JobError::Fail { code: error.code, message: error.message })?;
    let started = TrainingJobStarted {
        job_id: job_id.clone(),
        worker_id: worker.id.clone(),
        resumed_from_checkpoint: history.checkpoint.as_ref().map(|blob| blob.sha256.clone()).unwrap_or_default(),
        attempt: history.attempts + 1,
    };
    if let Appended::Conflict = writer.append(&started, None).await? {
        return Ok(Outcome::Superseded);
    }
    info!(job_id, attempt = started.attempt, resumed = !started.resumed_from_checkpoint.is_empty(), "training job started");

    let device = Backend::preferred().training_device();
    let base = match &spec.base {
        Base::Registered { model_id } => Some(data::base_model(&worker.bus, &worker.stores.models, model_id, &device).await?),
        Base::Scratch(_) => None,
    };
    let model_config = match (&spec.base, &base) {
        (Base::Scratch(config), _) => config.clone(),
        (_, Some((model, _))) => model.config().clone(),
        (Base::Registered { .. }, None) => unreachable!("a registered base was loaded above"),
    };
    spec.check_against(&model_config).map_err(|error| JobError::Fail { code: error.code, message: error.message })?;

    let (snapshots, pins) = data::snapshots(&worker.bus, &worker.stores.manifests, &spec.snapshots).await?;
    let contents = data::contents(&worker.stores.contributions, &snapshots).await?;
    let tokenizer = Tokenizer::byte_level();
    let dataset = examples::assemble(&snapshots, &contents, &tokenizer, spec.train.seed, spec.held_out_ppm)
        .map_err(|error| JobError::Fail { code: error.code(), message: error.to_string() })?;
    let needed = spec.train.sequence_length + 1;
    if dataset.train_tokens.len() < needed {
        return Err(JobError::fail(
            "data.not_enough_tokens",
            format!("the training split has {} tokens; one window needs {needed}", dataset.train_tokens.len()),
        ));
    }
    let table = dataset.table_bytes();
    let table_blob = worker.stores.models.put(&table).await.map_err(JobError::transient)?;

    let checkpoint = match &history.checkpoint {
        Some(blob) => {
            let bytes = worker
                .stores
                .checkpoints
                .get(&blob.sha256)
                .await
                .map_err(JobError::transient)?
                .ok_or_else(|| JobError::fail("checkpoint.missing", format!("checkpoint {} is not stored", blob.sha256)))?;
            Some(Checkpoint::from_bytes(&bytes).map_err(|error| JobError::fail("checkpoint.unreadable", error))?)
        }
        None => None,
    };
    let base_weights_sha256 = match &base {
        Some((model, _)) => model.weights_digest().map_err(|error| JobError::fail("model.unreadable", error))?,
        None => String::new(),
    };
    // The trainer takes its own copy; the base stays for its held-out perplexity.
    let trainer = build_trainer(
        &spec,
        model_config,
        base.as_ref().map(|(model, _)| model.clone()),
        checkpoint,
        dataset.train_tokens.clone(),
        &device,
    )
    .map_err(|error| JobError::fail("job.invalid_spec", error))?;

    let stop: StopFlag = Default::default();
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let mut bridge = Bridge {
        sender,
        stop: stop.clone(),
        interval: Duration::from_millis(worker.config.progress_interval_ms),
        last_sent: None,
        total_steps: spec.train.steps,
    };
    let training = tokio::task::spawn_blocking(move || {
        let mut trainer = trainer;
        let outcome = trainer.run(&mut bridge);
        // A stop (shutdown) leaves the trainer consistent: checkpoint exactly where it stood.
        let last_checkpoint = match &outcome {
            Ok(run) if run.stopped => trainer.checkpoint().and_then(|checkpoint| checkpoint.to_bytes()).ok(),
            _ => None,
        };
        (trainer, outcome, last_checkpoint)
    });

    let mut superseded = false;
    let mut last_loss = None;
    loop {
        let report = tokio::select! {
            report = receiver.recv() => report,
            () = shutdown.cancelled(), if !stop.load(Ordering::SeqCst) => {
                stop.store(true, Ordering::SeqCst);
                continue;
            }
        };
        let Some(report) = report else { break };
        let appended = match report {
            Report::Step(step) => {
                last_loss = Some(step.loss);
                metrics::counter!("train_steps_total").increment(1);
                metrics::gauge!("train_loss").set(f64::from(step.loss));
                metrics::gauge!("train_tokens_per_second").set(step.tokens_per_second);
                let event = TrainingJobProgressed {
                    job_id: job_id.clone(),
                    step: step.step,
                    total_steps: spec.train.steps,
                    loss_micro: (f64::from(step.loss.max(0.0)) * 1e6).round() as u64,
                    tokens_per_second: step.tokens_per_second.round() as u64,
                };
                writer.append(&event, None).await
            }
            Report::Checkpoint { step, bytes } => publish_checkpoint(worker, writer, &job_id, step, &bytes).await,
        };
        match appended {
            Ok(Appended::Yes) => {}
            Ok(Appended::Conflict) => {
                superseded = true;
                stop.store(true, Ordering::SeqCst);
            }
            Err(error) => {
                stop.store(true, Ordering::SeqCst);
                drop(receiver);
                let _ = training.await;
                return Err(error);
            }
        }
    }
    let (trainer, outcome, last_checkpoint) =
        training.await.map_err(|error| JobError::transient(anyhow::anyhow!("training thread failed: {error}")))?;
    let outcome = outcome.map_err(|error| JobError::fail("training.failed", error))?;
    if superseded {
        info!(job_id, "another writer appended to the job (cancelled or taken over), stopping");
        return Ok(Outcome::Superseded);
    }
    if outcome.stopped {
        if let Some(bytes) = last_checkpoint {
            publish_checkpoint(worker, writer, &job_id, trainer.step(), &bytes).await?;
        }
        info!(job_id, step = trainer.step(), "job interrupted by shutdown, checkpointed for another worker");
        return Ok(Outcome::Interrupted);
    }

    let model = trainer.into_model();
    register(
        worker,
        writer,
        &spec,
        requested,
        &model,
        base.as_ref().map(|(model, registered)| (model, registered)),
        &dataset,
        Registration { pins, table_blob, base_weights_sha256, last_loss: last_loss.or(outcome.last_loss) },
    )
    .await
}

fn build_trainer(
    spec: &JobSpec,
    model_config: model::ModelConfig,
    base: Option<Transformer>,
    checkpoint: Option<Checkpoint>,
    tokens: Vec<u32>,
    device: &model::Device,
) -> model::Result<Trainer> {
    let trainer = match (checkpoint, base, &spec.lora) {
        (Some(checkpoint), _, _) => Trainer::resume(&checkpoint, tokens, device)?,
        (None, None, _) => Trainer::full(&model_config, spec.train.clone(), tokens, device)?,
        (None, Some(base), None) => Trainer::new(base, spec.train.clone(), tokens)?,
        (None, Some(base), Some(lora)) => Trainer::lora(base, lora, spec.train.clone(), tokens)?,
    };
    Ok(trainer.checkpoint_every(spec.checkpoint_every))
}

async fn publish_checkpoint(
    worker: &Worker,
    writer: &mut JobWriter<'_>,
    job_id: &str,
    step: u64,
    bytes: &[u8],
) -> Result<Appended, JobError> {
    let stored = worker.stores.checkpoints.put(bytes).await.map_err(JobError::transient)?;
    let event = TrainingJobCheckpointed {
        job_id: job_id.to_owned(),
        step,
        checkpoint_id: stored.sha256.clone(),
        state: Some(blob_ref(stored, "application/vnd.provenant.checkpoint")),
    };
    writer.append(&event, None).await
}

pub(super) fn blob_ref(stored: provenant_bus::StoredBlob, media_type: &str) -> BlobRef {
    BlobRef { sha256: stored.sha256, size_bytes: stored.size_bytes, bucket: stored.bucket, media_type: media_type.to_owned() }
}

struct Registration {
    pins: Vec<proto::SnapshotPin>,
    table_blob: provenant_bus::StoredBlob,
    base_weights_sha256: String,
    last_loss: Option<f32>,
}

fn perplexity_of(model: &Transformer, tokens: &[u32]) -> Result<Option<model::Evaluation>, JobError> {
    if tokens.len() < 2 {
        return Ok(None);
    }
    model::evaluate(model, tokens).map(Some).map_err(|error| JobError::fail("evaluation.failed", error))
}

#[allow(clippy::too_many_arguments, reason = "one call site; the pieces are all different")]
async fn register(
    worker: &Worker,
    writer: &mut JobWriter<'_>,
    spec: &JobSpec,
    requested: &TrainingJobRequested,
    model: &Transformer,
    base: Option<(&Transformer, &ModelRegistered)>,
    dataset: &Dataset,
    registration: Registration,
) -> Result<Outcome, JobError> {
    let job_id = requested.job_id.clone();
    let held_out = perplexity_of(model, &dataset.held_out_tokens)?;
    let base_held_out = match base {
        Some((base, _)) => perplexity_of(base, &dataset.held_out_tokens)?,
        None => None,
    };
    let count = |split: Split| dataset.examples.iter().filter(|example| example.split == split).count() as u64;
    let metrics = Metrics {
        held_out_perplexity: held_out.map(|evaluation| evaluation.perplexity),
        held_out_mean_loss: held_out.map(|evaluation| evaluation.mean_loss),
        held_out_tokens: dataset.held_out_tokens.len() as u64,
        base_held_out_perplexity: base_held_out.map(|evaluation| evaluation.perplexity),
        final_training_loss: registration.last_loss,
        steps: spec.train.steps,
        training_tokens: dataset.train_tokens.len() as u64,
        examples: dataset.examples.len() as u64,
        training_examples: count(Split::Train),
        held_out_examples: count(Split::HeldOut),
        contributors: dataset.trained_contributors().len() as u64,
        backend: format!("{:?}", Backend::preferred()),
    };
    let failed = |error: model::Error| JobError::fail("model.unserialisable", error);
    let (kind, weights, media_type) = match &spec.lora {
        Some(_) => (ModelKind::Adapter, model.adapter_to_bytes().map_err(failed)?, "application/vnd.provenant.adapter"),
        None => (ModelKind::Base, model.to_bytes().map_err(failed)?, "application/vnd.burn.burnpack"),
    };
    let store = |bytes: Vec<u8>, media_type: &'static str| async move {
        worker.stores.models.put(&bytes).await.map(|stored| blob_ref(stored, media_type)).map_err(JobError::transient)
    };
    let weights = store(weights, media_type).await?;
    let weights_sha256 = weights.sha256.clone();
    let tokenizer = store(Tokenizer::byte_level().to_json().into_bytes(), "application/json").await?;
    let config_json = serde_json::to_vec(model.config()).map_err(|error| JobError::fail("model.unserialisable", error))?;
    let config = store(config_json, "application/json").await?;
    let metrics_json = serde_json::to_vec_pretty(&metrics).map_err(|error| JobError::fail("model.unserialisable", error))?;
    let metrics_blob = store(metrics_json, "application/json").await?;
    let spec_proto = requested.spec.clone().unwrap_or_default();
    let model_id = model_id_of(&job_id);
    let architecture = Some(architecture_to_proto(model.config()));
    let event = ModelRegistered {
        model_id: model_id.clone(),
        name: spec.name.clone(),
        kind: kind.into(),
        base_model_id: base.map(|(_, registered)| registered.model_id.clone()).unwrap_or_default(),
        architecture,
        lora: spec.lora.as_ref().map(lora_to_proto),
        weights: Some(weights),
        tokenizer: Some(tokenizer),
        config: Some(config),
        metrics: Some(metrics_blob),
        lineage: Some(proto::Lineage {
            snapshots: registration.pins,
            example_table_sha256: registration.table_blob.sha256.clone(),
            example_table: Some(blob_ref(registration.table_blob, "application/x-ndjson")),
            hyperparameters: spec_proto.hyperparameters,
            seed: spec.train.seed,
            code_version: code_version(),
            base_weights_sha256: registration.base_weights_sha256.clone(),
            job_id: job_id.clone(),
        }),
        held_out_perplexity_milli: held_out.map(|evaluation| (evaluation.perplexity * 1_000.0).round() as u64).unwrap_or(0),
        owner: Some(Principal {
            id: requested.requested_by.as_ref().map(|principal| principal.id.clone()).unwrap_or_default(),
            kind: PrincipalKind::ModelBuilder.into(),
        }),
    };
    // The model is its own aggregate, created once: a worker that registered it and died
    // before completing the job finds it there (same derived event id) and goes on.
    let event_id = derived_id(&job_id, "model-registered");
    create_once(worker, &writer.cause, &event, event_id, "model.id_taken").await?;
    let subject = super::attribution::Subject {
        model: model.clone(),
        model_id: model_id.clone(),
        model_weights_sha256: weights_sha256,
        base_weights_sha256: registration.base_weights_sha256.clone(),
        seed: spec.train.seed,
    };
    let (dataset_copy, config) = (dataset.clone(), worker.config.attribution.clone());
    let built = tokio::task::spawn_blocking(move || super::attribution::build(&subject, dataset_copy, &config))
        .await
        .map_err(|error| JobError::transient(anyhow::anyhow!("attribution thread failed: {error}")))??;
    super::attribution::publish(worker, &writer.cause, &job_id, built).await?;
    info!(
        job_id,
        model_id,
        held_out_perplexity = metrics.held_out_perplexity,
        base_held_out_perplexity = metrics.base_held_out_perplexity,
        "model registered"
    );
    let completed = TrainingJobCompleted { job_id: job_id.clone(), model_id, steps: spec.train.steps };
    match writer.append(&completed, Some(derived_id(&job_id, "completed"))).await? {
        Appended::Yes => {
            metrics::counter!("train_jobs_finished_total", "outcome" => "completed").increment(1);
            Ok(Outcome::Finished)
        }
        Appended::Conflict => Ok(Outcome::Superseded),
    }
}
