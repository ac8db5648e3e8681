//! Continuous batching across adapters: one decoding thread per base model runs every active
//! request, whatever its adapter, through one forward pass of the base per step
//! ([`model::AdapterBank`]: a gathered low-rank product per row). Requests join between steps
//! and leave when they finish, so a short answer never waits for a long one.
//!
//! Each row decodes exactly as it would alone: rows are right-padded to the longest window,
//! causal attention keeps padding out of every real position, and each row samples from its
//! own seeded stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

use model::tokenizer::PAD;
use model::{AdapterBank, AdapterWeights, Transformer, token_batch};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::generation::{Decoder, FinishReason, Generated, GenerationRequest};

/// One request for the batcher.
pub struct Job {
    pub request: GenerationRequest,
    /// The adapter's model id and factors; `None` for the base alone.
    pub adapter: Option<(String, Arc<AdapterWeights>)>,
    /// Where streamed pieces go; a dropped receiver ends the request (billed as generated).
    pub pieces: Option<mpsc::UnboundedSender<String>>,
    pub done: oneshot::Sender<model::Result<Generated>>,
}

/// The decoding thread is gone (it only ends when its handles are dropped, so: shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the decoding thread has stopped")]
pub struct DecoderStopped;

/// The handle of one base model's decoding thread.
#[derive(Clone)]
pub struct Batcher {
    jobs: Sender<Job>,
    counters: Arc<Counters>,
}

/// Forward passes and the rows they carried.
#[derive(Debug, Default)]
struct Counters {
    steps: AtomicU64,
    rows: AtomicU64,
    largest: AtomicU64,
}

/// What a decoding thread has done, for `/v1/adapters` and metrics.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct BatchStats {
    /// Forward passes of the base.
    pub steps: u64,
    /// Rows over all passes: tokens decoded.
    pub rows: u64,
    /// The most rows one pass carried.
    pub largest_batch: u64,
}

impl Batcher {
    /// Starts the decoding thread of `base` (the plain base, weights digest `base_digest`),
    /// running at most `max_rows` requests per forward pass. The thread ends when every
    /// handle is dropped and its last request is done.
    pub fn start(base: Arc<Transformer>, base_digest: String, max_rows: usize) -> std::io::Result<Batcher> {
        let (jobs, receiver) = channel();
        let counters = Arc::new(Counters::default());
        let counted = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("decode".to_owned())
            .spawn(move || run(&base, &base_digest, max_rows.max(1), &receiver, &counted))?;
        Ok(Batcher { jobs, counters })
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            steps: self.counters.steps.load(Ordering::Relaxed),
            rows: self.counters.rows.load(Ordering::Relaxed),
            largest_batch: self.counters.largest.load(Ordering::Relaxed),
        }
    }

    /// Queues `job`; its answer arrives on `job.done`.
    pub fn submit(&self, job: Job) -> Result<(), DecoderStopped> {
        self.jobs.send(job).map_err(|_| DecoderStopped)
    }
}

struct Row {
    decoder: Decoder,
    adapter: Option<String>,
    pieces: Option<mpsc::UnboundedSender<String>>,
    done: oneshot::Sender<model::Result<Generated>>,
}

impl Row {
    fn show(pieces: &Option<mpsc::UnboundedSender<String>>) -> impl FnMut(&str) -> bool + '_ {
        move |piece: &str| pieces.as_ref().is_none_or(|pieces| pieces.send(piece.to_owned()).is_ok())
    }
}

fn run(base: &Transformer, base_digest: &str, max_rows: usize, jobs: &Receiver<Job>, counters: &Counters) {
    let mut rows: Vec<Row> = Vec::new();
    let mut adapters: BTreeMap<String, Arc<AdapterWeights>> = BTreeMap::new();
    let mut bank: Option<(Vec<String>, AdapterBank)> = None;
    loop {
        if rows.is_empty() {
            match jobs.recv() {
                Ok(job) => admit(job, &mut rows, &mut adapters),
                Err(_) => return,
            }
        }
        while rows.len() < max_rows {
            match jobs.try_recv() {
                Ok(job) => admit(job, &mut rows, &mut adapters),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        counters.steps.fetch_add(1, Ordering::Relaxed);
        counters.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        counters.largest.fetch_max(rows.len() as u64, Ordering::Relaxed);
        metrics::histogram!("infer_batch_rows").record(rows.len() as f64);
        if let Err(error) = step(base, base_digest, &mut rows, &adapters, &mut bank) {
            warn!(%error, rows = rows.len(), "a decoding step failed; its requests fail");
            for row in rows.drain(..) {
                let _ = row.done.send(Err(model::Error::MalformedBatch(error.to_string())));
            }
        }
        adapters.retain(|id, _| rows.iter().any(|row| row.adapter.as_deref() == Some(id.as_str())));
    }
}

fn admit(job: Job, rows: &mut Vec<Row>, adapters: &mut BTreeMap<String, Arc<AdapterWeights>>) {
    let adapter = job.adapter.map(|(id, weights)| {
        adapters.insert(id.clone(), weights);
        id
    });
    rows.push(Row { decoder: Decoder::new(job.request), adapter, pieces: job.pieces, done: job.done });
}

/// One forward pass for every row; finished rows answer and leave.
fn step(
    base: &Transformer,
    base_digest: &str,
    rows: &mut Vec<Row>,
    adapters: &BTreeMap<String, Arc<AdapterWeights>>,
    bank: &mut Option<(Vec<String>, AdapterBank)>,
) -> model::Result<()> {
    let config = base.config();
    // The bank holds the adapters of the rows in flight, rebuilt only when that set changes.
    let wanted: Vec<String> = adapters.keys().cloned().collect();
    if bank.as_ref().is_none_or(|(ids, _)| *ids != wanted) {
        let weights: Vec<&AdapterWeights> = adapters.values().map(Arc::as_ref).collect();
        *bank = Some((wanted.clone(), AdapterBank::new(base, base_digest, &weights)?));
    }
    let (ids, bank) = bank.as_ref().expect("built above");
    let slots: Vec<usize> = rows
        .iter()
        .map(|row| row.adapter.as_ref().map_or(0, |id| ids.iter().position(|known| known == id).map_or(0, |index| index + 1)))
        .collect();
    // Rows right-padded to the longest window; `lengths` says where each row's last token is.
    let lengths: Vec<usize> = rows.iter().map(|row| row.decoder.window(config.context_length).len()).collect();
    let longest = lengths.iter().copied().max().unwrap_or(1);
    let padded: Vec<Vec<u32>> = rows
        .iter()
        .map(|row| {
            row.decoder.window(config.context_length).iter().copied().chain(std::iter::repeat_n(PAD, longest)).take(longest).collect()
        })
        .collect();
    let batch: Vec<&[u32]> = padded.iter().map(Vec::as_slice).collect();
    let logits = base
        .forward_with_adapters(token_batch(&batch, config.vocab_size, &base.device())?, bank, &slots)?
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|error| model::Error::MalformedBatch(format!("logits are not f32: {error:?}")))?;
    let vocab = config.vocab_size;
    let mut finished: Vec<(usize, FinishReason)> = Vec::new();
    for (index, (row, length)) in rows.iter_mut().zip(&lengths).enumerate() {
        let at = (index * longest + length - 1) * vocab;
        if let Some(finish) = row.decoder.step(&logits[at..at + vocab], &mut Row::show(&row.pieces)) {
            finished.push((index, finish));
        }
    }
    for (index, finish) in finished.into_iter().rev() {
        let Row { decoder, pieces, done, .. } = rows.remove(index);
        let _ = done.send(Ok(decoder.finish(finish, &mut Row::show(&pieces))));
    }
    Ok(())
}
