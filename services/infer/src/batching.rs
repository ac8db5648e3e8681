//! Continuous batching across adapters: a decoding thread of a base model runs every request it
//! holds, whatever its adapter, through one forward pass of the base per step
//! ([`model::AdapterBank`]: a gathered low-rank product per row). Requests join between steps
//! and leave when they finish, so a short answer never waits for a long one. A base has one
//! such thread per core on a CPU (each request stays on the thread it joined), one on a GPU.
//!
//! Rows share one [`KvCache`]: a request's prompt is prefilled when it joins, and from then on
//! each step feeds every row one token. A row whose window slides past the context leaves the
//! cache and is prefilled whole each step, as it would be alone.
//!
//! Each row decodes exactly as it would alone: prefilled rows are right-padded, causal
//! attention keeps padding out of every real position, a decoding row sees only its own
//! positions in the cache, and each row samples from its own seeded stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

use model::{AdapterBank, AdapterWeights, KvCache, RowAdapters, Transformer};
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

/// The decoding threads are gone (they only end when their handles are dropped, so: shutting
/// down).
#[derive(Debug, thiserror::Error)]
#[error("the decoding thread has stopped")]
pub struct DecoderStopped;

/// The handle of one base model's decoding threads.
///
/// Each thread batches its own rows; a request goes to the thread with the fewest in flight and
/// stays there. On a CPU one thread per core is what uses the machine (Burn's CPU backend runs
/// an operation on one core); on a GPU one thread keeps every row in one pass.
#[derive(Clone)]
pub struct Batcher {
    lanes: Arc<[Lane]>,
    counters: Arc<Counters>,
}

/// One decoding thread: where its jobs go, and how many it has in flight.
struct Lane {
    jobs: Sender<Job>,
    in_flight: Arc<AtomicUsize>,
}

/// Forward passes and the rows they carried.
#[derive(Debug, Default)]
struct Counters {
    steps: AtomicU64,
    rows: AtomicU64,
    largest: AtomicU64,
}

/// What a base's decoding threads have done, for `/v1/adapters` and metrics.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct BatchStats {
    /// Forward passes of the base.
    pub steps: u64,
    /// Rows over all passes: tokens decoded.
    pub rows: u64,
    /// The most rows one pass carried.
    pub largest_batch: u64,
    /// Decoding threads, each running its own passes.
    pub threads: usize,
}

impl Batcher {
    /// Starts `threads` decoding threads for `base` (the plain base, weights digest
    /// `base_digest`), each running at most `max_rows` requests per forward pass. The threads
    /// end when every handle is dropped and their last request is done.
    pub fn start(base: Arc<Transformer>, base_digest: String, max_rows: usize, threads: usize) -> std::io::Result<Batcher> {
        let counters = Arc::new(Counters::default());
        let mut lanes = Vec::with_capacity(threads.max(1));
        for index in 0..threads.max(1) {
            let (jobs, receiver) = channel();
            let in_flight = Arc::new(AtomicUsize::new(0));
            let (base, base_digest, counted, finished) =
                (Arc::clone(&base), base_digest.clone(), Arc::clone(&counters), Arc::clone(&in_flight));
            std::thread::Builder::new()
                .name(format!("decode-{index}"))
                .spawn(move || run(&base, &base_digest, max_rows.max(1), &receiver, &counted, &finished))?;
            lanes.push(Lane { jobs, in_flight });
        }
        Ok(Batcher { lanes: lanes.into(), counters })
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            steps: self.counters.steps.load(Ordering::Relaxed),
            rows: self.counters.rows.load(Ordering::Relaxed),
            largest_batch: self.counters.largest.load(Ordering::Relaxed),
            threads: self.lanes.len(),
        }
    }

    /// Queues `job` on the least busy thread; its answer arrives on `job.done`.
    pub fn submit(&self, job: Job) -> Result<(), DecoderStopped> {
        let lane = self.lanes.iter().min_by_key(|lane| lane.in_flight.load(Ordering::Relaxed)).expect("at least one thread");
        lane.in_flight.fetch_add(1, Ordering::Relaxed);
        lane.jobs.send(job).map_err(|_| {
            lane.in_flight.fetch_sub(1, Ordering::Relaxed);
            DecoderStopped
        })
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

/// What a decoding thread holds between steps.
#[derive(Default)]
struct InFlight {
    rows: Vec<Row>,
    /// The keys and values of the first rows of `rows`, in order; rows after them are
    /// prefilled next.
    cache: Option<KvCache>,
    /// The adapters of `rows`, by model id.
    adapters: BTreeMap<String, Arc<AdapterWeights>>,
    /// Those adapters stacked, with their ids in slot order.
    bank: Option<(Vec<String>, AdapterBank)>,
    /// The cached rows' factors, gathered from `bank`.
    gathered: Option<RowAdapters>,
}

fn run(base: &Transformer, base_digest: &str, max_rows: usize, jobs: &Receiver<Job>, counters: &Counters, in_flight: &AtomicUsize) {
    let mut state = InFlight::default();
    loop {
        if state.rows.is_empty() {
            match jobs.recv() {
                Ok(job) => state.admit(job),
                Err(_) => return,
            }
        }
        while state.rows.len() < max_rows {
            match jobs.try_recv() {
                Ok(job) => state.admit(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let rows = state.rows.len();
        counters.steps.fetch_add(1, Ordering::Relaxed);
        counters.rows.fetch_add(rows as u64, Ordering::Relaxed);
        counters.largest.fetch_max(rows as u64, Ordering::Relaxed);
        metrics::histogram!("infer_batch_rows").record(rows as f64);
        if let Err(error) = state.step(base, base_digest) {
            warn!(%error, rows, "a decoding step failed; its requests fail");
            state.cache = None;
            for row in state.rows.drain(..) {
                let _ = row.done.send(Err(model::Error::MalformedBatch(error.to_string())));
            }
        }
        in_flight.fetch_sub(rows - state.rows.len(), Ordering::Relaxed);
        let InFlight { rows, adapters, .. } = &mut state;
        adapters.retain(|id, _| rows.iter().any(|row| row.adapter.as_deref() == Some(id.as_str())));
    }
}

impl InFlight {
    fn admit(&mut self, job: Job) {
        let adapter = job.adapter.map(|(id, weights)| {
            self.adapters.insert(id.clone(), weights);
            id
        });
        self.rows.push(Row { decoder: Decoder::new(job.request), adapter, pieces: job.pieces, done: job.done });
    }

    /// One token for every row: a decoding step for the cached rows and a prefill for the
    /// others (new rows, and rows past the context); finished rows answer and leave.
    fn step(&mut self, base: &Transformer, base_digest: &str) -> model::Result<()> {
        let InFlight { rows, cache, adapters, bank, gathered } = self;
        let context = base.config().context_length;
        // The bank holds the adapters of the rows in flight, rebuilt only when that set changes.
        let wanted: Vec<String> = adapters.keys().cloned().collect();
        if bank.as_ref().is_none_or(|(ids, _)| *ids != wanted) {
            let weights: Vec<&AdapterWeights> = adapters.values().map(Arc::as_ref).collect();
            *bank = Some((wanted.clone(), AdapterBank::new(base, base_digest, &weights)?));
            *gathered = None;
        }
        let (ids, bank) = bank.as_ref().expect("built above");

        // Rows whose window now slides leave the cache, and move behind the rows that stay.
        let cached = cache.as_ref().map_or(0, KvCache::rows);
        let stays: Vec<bool> = rows[..cached].iter().map(|row| row.decoder.continues_in_cache(context)).collect();
        if stays.contains(&false) {
            *cache = cache.take().and_then(|kept| kept.retain(&stays));
            let newcomers = rows.split_off(cached);
            let mut flags = stays.iter();
            let (staying, sliding): (Vec<Row>, Vec<Row>) = rows.drain(..).partition(|_| *flags.next().expect("a flag per cached row"));
            rows.extend(staying.into_iter().chain(sliding));
            rows.extend(newcomers);
        }
        let cached = cache.as_ref().map_or(0, KvCache::rows);

        let slots: Vec<usize> = rows
            .iter()
            .map(|row| row.adapter.as_ref().map_or(0, |id| ids.iter().position(|known| known == id).map_or(0, |index| index + 1)))
            .collect();
        let device = base.device();
        let mut logits = Vec::with_capacity(rows.len() * base.config().vocab_size);
        if let Some(cache) = cache.as_mut() {
            // The cached rows' factors, gathered again only when those rows (or the bank) change.
            if gathered.as_ref().is_none_or(|adapters| adapters.slots() != &slots[..cached]) {
                *gathered = Some(bank.gather(&slots[..cached], &device)?);
            }
            let tokens: Vec<u32> = rows[..cached].iter().map(|row| row.decoder.last_token()).collect();
            logits.extend(base.decode_with_adapters(&tokens, cache, gathered.as_ref().expect("gathered above"))?);
        }
        if cached < rows.len() {
            let windows: Vec<&[u32]> = rows[cached..].iter().map(|row| row.decoder.window(context)).collect();
            let (prefilled, fresh) = base.prefill_with_adapters(&windows, &bank.gather(&slots[cached..], &device)?)?;
            logits.extend(prefilled);
            *cache = Some(match cache.take() {
                Some(earlier) => earlier.append(fresh),
                None => fresh,
            });
        }

        let vocab = base.config().vocab_size;
        let mut finished: Vec<(usize, FinishReason)> = Vec::new();
        for (index, (row, logits)) in rows.iter_mut().zip(logits.chunks(vocab)).enumerate() {
            if let Some(finish) = row.decoder.step(logits, &mut Row::show(&row.pieces)) {
                finished.push((index, finish));
            }
        }
        if !finished.is_empty() {
            let keep: Vec<bool> = (0..rows.len()).map(|index| !finished.iter().any(|&(done, _)| done == index)).collect();
            *cache = cache.take().and_then(|kept| kept.retain(&keep));
        }
        for (index, finish) in finished.into_iter().rev() {
            let Row { decoder, pieces, done, .. } = rows.remove(index);
            let _ = done.send(Ok(decoder.finish(finish, &mut Row::show(&pieces))));
        }
        Ok(())
    }
}
