//! Training a [`Transformer`] (every weight, or a LoRA adapter) on a token stream, and
//! evaluating one on held-out tokens.
//!
//! A run is a pure function of the model's initial weights, the [`TrainConfig`] and the token
//! stream: data order, initialisation and LoRA factors all come from the seed, the backend's
//! RNG is never used, and a [`Checkpoint`] captures every piece of state that changes from one
//! step to the next. Resuming from a checkpoint therefore continues bit for bit on the same
//! backend.

use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Bytes, Device};

use crate::backend::Backend;
use crate::checkpoint::{Checkpoint, DataState, sha256_hex};
use crate::config::{LoraSpec, ModelConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::rng::{SplitMix64, permutation};
use crate::tokenizer::PAD;
use crate::transformer::{Transformer, token_batch};

/// Whether training goes on after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Stop after the step just reported; the trainer stays consistent, so a checkpoint taken
    /// now resumes exactly here.
    Stop,
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Steps completed, this one included (1 for the first step).
    pub step: u64,
    /// Mean training loss of the step's batch, before the update.
    pub loss: f32,
    /// The learning rate the update used.
    pub learning_rate: f64,
    /// Input tokens of the batch per second of wall-clock time for the whole step.
    pub tokens_per_second: f64,
}

/// Receives progress and checkpoints from [`Trainer::run`].
pub trait Observer {
    /// Called after every step; [`Control::Stop`] cancels the run.
    fn on_step(&mut self, report: &StepReport) -> Control;

    /// Called every [`Trainer::checkpoint_every`] steps, after `on_step`.
    fn on_checkpoint(&mut self, checkpoint: Checkpoint) -> Control {
        let _ = checkpoint;
        Control::Continue
    }
}

impl<F: FnMut(&StepReport) -> Control> Observer for F {
    fn on_step(&mut self, report: &StepReport) -> Control {
        self(report)
    }
}

/// How a call to [`Trainer::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// Steps completed over the whole run, earlier calls and resumed checkpoints included.
    pub steps_completed: u64,
    /// Whether an observer stopped the run before `steps`.
    pub stopped: bool,
    /// Loss of the last step this call ran, if it ran any.
    pub last_loss: Option<f32>,
}

/// Trains a model with AdamW, linear warmup, and a seeded data order.
pub struct Trainer {
    /// Absent only while a step moves it through the optimizer.
    model: Option<Transformer>,
    optimizer: ModuleOptimizer,
    config: TrainConfig,
    step: u64,
    tokens: Vec<u32>,
    stream_digest: String,
    data: DataOrder,
    checkpoint_every: Option<u64>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Trainer")
            .field("config", &self.config)
            .field("step", &self.step)
            .field("lora", &self.model().lora_spec())
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// Train `model` as it is: every weight, or only its adapter when it carries one.
    ///
    /// The model must live on an autodiff device ([`crate::backend::training_device`]).
    pub fn new(model: Transformer, config: TrainConfig, tokens: Vec<u32>) -> Result<Self> {
        config.validate(model.config())?;
        if !model.device().is_autodiff() {
            return Err(Error::InvalidConfig("training needs a model on an autodiff device (backend::training_device())".into()));
        }
        check_tokens(&tokens, model.config().vocab_size)?;
        let data = DataOrder::new(config.seed, config.sequence_length, tokens.len(), 0)?;
        let stream_digest = stream_digest(&tokens);
        Ok(Self { optimizer: optimizer(&config), model: Some(model), config, step: 0, tokens, stream_digest, data, checkpoint_every: None })
    }

    /// Train a fresh model of shape `model`, initialised from `config.seed`.
    pub fn full(model: &ModelConfig, config: TrainConfig, tokens: Vec<u32>, device: &Device) -> Result<Self> {
        let model = Transformer::new(model, config.seed, device)?;
        Self::new(model, config, tokens)
    }

    /// Train a fresh LoRA adapter (factors drawn from `config.seed`) on a frozen `base`.
    pub fn lora(base: Transformer, spec: &LoraSpec, config: TrainConfig, tokens: Vec<u32>) -> Result<Self> {
        let model = base.with_lora(spec, config.seed)?;
        Self::new(model, config, tokens)
    }

    /// Continue the run a checkpoint was taken from, on `device` (which must have autodiff),
    /// with the same token stream.
    pub fn resume(checkpoint: &Checkpoint, tokens: Vec<u32>, device: &Device) -> Result<Self> {
        if !device.is_autodiff() {
            return Err(Error::InvalidConfig("training needs an autodiff device (backend::training_device())".into()));
        }
        let stream_digest = stream_digest(&tokens);
        if stream_digest != checkpoint.data.stream_digest {
            return Err(Error::InvalidConfig("the token stream differs from the one the checkpoint was trained on".into()));
        }
        check_tokens(&tokens, checkpoint.model.vocab_size)?;
        let model = checkpoint.model(device)?;
        let optimizer = optimizer(&checkpoint.train).from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer.clone()))?;
        let data = DataOrder::new(checkpoint.train.seed, checkpoint.train.sequence_length, tokens.len(), checkpoint.data.windows_consumed)?;
        Ok(Self {
            model: Some(model),
            optimizer,
            config: checkpoint.train.clone(),
            step: checkpoint.step,
            tokens,
            stream_digest,
            data,
            checkpoint_every: None,
        })
    }

    /// Hand a checkpoint to [`Observer::on_checkpoint`] every `steps` steps (never, for 0).
    pub fn checkpoint_every(mut self, steps: u64) -> Self {
        self.checkpoint_every = (steps > 0).then_some(steps);
        self
    }

    /// The model as trained so far.
    pub fn model(&self) -> &Transformer {
        self.model.as_ref().expect("the model is only absent during a step")
    }

    /// The trained model.
    pub fn into_model(self) -> Transformer {
        self.model.expect("the model is only absent during a step")
    }

    /// Steps completed so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The run's hyperparameters.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Train until `config.steps` or until an observer says stop.
    pub fn run(&mut self, observer: &mut impl Observer) -> Result<RunOutcome> {
        let mut last_loss = None;
        while self.step < self.config.steps {
            let report = self.train_step()?;
            last_loss = Some(report.loss);
            let mut control = observer.on_step(&report);
            if let Some(every) = self.checkpoint_every
                && self.step.is_multiple_of(every)
                && observer.on_checkpoint(self.checkpoint()?) == Control::Stop
            {
                control = Control::Stop;
            }
            if control == Control::Stop {
                return Ok(RunOutcome { steps_completed: self.step, stopped: true, last_loss });
            }
        }
        Ok(RunOutcome { steps_completed: self.step, stopped: false, last_loss })
    }

    /// Everything needed to resume from here.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let model = self.model();
        Ok(Checkpoint {
            step: self.step,
            model: model.config().clone(),
            train: self.config.clone(),
            lora: model.lora_spec().cloned(),
            data: DataState { windows_consumed: self.data.consumed, stream_digest: self.stream_digest.clone() },
            weights: model.to_bytes()?,
            optimizer: canonical_optimizer_bytes(&self.optimizer)?,
        })
    }

    /// One optimizer step. On a CPU the batch is split into [`CPU_SHARDS`] shards whose
    /// forward and backward passes run on their own threads, each on a fork of the model (its
    /// own autodiff graph, the same parameter ids), and their gradients are summed in shard
    /// order: the gradient of the whole batch's mean loss, computed the same way on any
    /// machine.
    fn train_step(&mut self) -> Result<StepReport> {
        let started = Instant::now();
        let length = self.config.sequence_length;
        let starts: Vec<usize> = (0..self.config.batch_size).map(|_| self.data.next_start()).collect();
        let windows: Vec<Window<'_>> =
            starts.iter().map(|&start| (&self.tokens[start..start + length], &self.tokens[start + 1..start + length + 1])).collect();
        // Every shard divides by the whole batch's count, so the shards' losses sum to its mean.
        let predicted = windows.iter().flat_map(|(_, targets)| targets.iter()).filter(|&&token| token != PAD).count().max(1);
        let model = self.model.take().expect("the model is only absent during a step");
        let (loss_value, gradients) = match batch_gradients(&model, &windows, predicted, shards_on(&model.device())) {
            Ok(computed) => computed,
            Err(error) => {
                self.model = Some(model);
                return Err(error);
            }
        };
        let learning_rate = self.config.learning_rate_at(self.step);
        self.model = Some(self.optimizer.step(learning_rate, model, gradients));
        self.step += 1;

        let seconds = started.elapsed().as_secs_f64();
        let tokens = (self.config.batch_size * length) as f64;
        Ok(StepReport { step: self.step, loss: loss_value, learning_rate, tokens_per_second: tokens / seconds.max(1e-9) })
    }
}

/// An input window and its targets (the same tokens shifted by one).
type Window<'a> = (&'a [u32], &'a [u32]);

/// How many shards a training step on `device` splits its batch into. Burn's CPU backends run
/// each operation on one core, so a step used one core of many; two shards use two. The count
/// is fixed, not the machine's core count, because it changes the order floating-point sums
/// are taken in, and a job must give the same weights on any machine (with one core the
/// shards take turns). A GPU runs a whole batch at once: one shard.
pub const CPU_SHARDS: usize = 2;

fn shards_on(device: &Device) -> usize {
    let on_cpu = Backend::available().into_iter().any(|backend| !backend.is_gpu() && backend.training_device() == *device);
    if on_cpu { CPU_SHARDS } else { 1 }
}

/// The batch's mean loss over its `predicted` targets and its gradients, from `shards` shards
/// run on threads of their own (the first on this one), summed in shard order.
fn batch_gradients(model: &Transformer, windows: &[Window<'_>], predicted: usize, shards: usize) -> Result<(f32, GradientsParams)> {
    let device = model.device();
    let shards: Vec<&[Window<'_>]> = windows.chunks(windows.len().div_ceil(shards).max(1)).collect();
    let forks: Vec<Transformer> = shards[1..].iter().map(|_| model.clone().fork(&device)).collect();
    let results = std::thread::scope(|scope| {
        let others: Vec<_> = forks
            .into_iter()
            .zip(&shards[1..])
            .map(|(fork, shard)| scope.spawn(move || shard_gradients(&fork, shard, predicted)))
            .collect();
        let mut results = vec![shard_gradients(model, shards[0], predicted)];
        results.extend(others.into_iter().map(|other| other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))));
        results
    });
    let mut loss = 0.0;
    let mut accumulator = GradientsAccumulator::<Transformer>::new();
    for result in results {
        let (shard_loss, gradients) = result?;
        loss += shard_loss;
        accumulator.accumulate(model, gradients);
    }
    Ok((loss, accumulator.grads()))
}

/// One shard's share of the batch loss (its summed cross-entropy over the batch's `predicted`
/// targets) and that share's gradients.
fn shard_gradients(model: &Transformer, windows: &[Window<'_>], predicted: usize) -> Result<(f32, GradientsParams)> {
    let device = model.device();
    let vocab_size = model.config().vocab_size;
    let inputs: Vec<&[u32]> = windows.iter().map(|(inputs, _)| *inputs).collect();
    let targets: Vec<&[u32]> = windows.iter().map(|(_, targets)| *targets).collect();
    let (inputs, targets) = (token_batch(&inputs, vocab_size, &device)?, token_batch(&targets, vocab_size, &device)?);
    let (sum, _) = model.loss_sum(inputs, targets);
    let loss = sum / predicted as f32;
    let value = loss.clone().into_scalar::<f32>();
    Ok((value, GradientsParams::from_grads(loss.backward(), model)))
}

/// AdamW with decoupled weight decay on matrices and embeddings, none on biases and LayerNorm.
fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    let undecayed = ParamGroup::from_any_predicates(vec![".bias", ".gamma", ".beta"]);
    AdamWConfig::new().with_weight_decay(config.weight_decay as f32).init().with_group(
        undecayed,
        AdamWConfig::new().with_weight_decay(0.0).build(),
        None,
    )
}

/// The optimizer's record with its tensors in name order.
///
/// Burn collects optimizer state from a hash map, so its record lists tensors in a different
/// order in every process; sorting makes equal state give equal bytes.
fn canonical_optimizer_bytes(optimizer: &ModuleOptimizer) -> Result<Vec<u8>> {
    let pack = |error: burn_pack::Error| Error::Record(error.to_string());
    let reader = burn_pack::Reader::from_bytes(optimizer.into_bytes()?).map_err(pack)?;
    let scalars = reader.scalars().clone();
    let metadata = reader.metadata().clone();
    let mut tensors = reader.into_tensors().map_err(pack)?;
    tensors.sort_by(|left, right| left.name.cmp(&right.name));
    let mut writer = burn_pack::Writer::new(tensors);
    for (key, value) in scalars {
        writer = writer.with_scalar(&key, value);
    }
    for (key, value) in metadata {
        writer = writer.with_metadata(&key, &value);
    }
    Ok(writer.into_bytes().map_err(pack)?.to_vec())
}

fn stream_digest(tokens: &[u32]) -> String {
    let bytes: Vec<u8> = tokens.iter().flat_map(|token| token.to_le_bytes()).collect();
    sha256_hex(&bytes)
}

fn check_tokens(tokens: &[u32], vocab_size: usize) -> Result<()> {
    match tokens.iter().find(|&&token| token as usize >= vocab_size) {
        Some(&token) => Err(Error::TokenOutOfRange { token, vocab_size }),
        None => Ok(()),
    }
}

/// The seeded order in which training windows are drawn.
///
/// Window `k` holds tokens `k·L ..= k·L + L` (L inputs and, shifted by one, L targets), so
/// consecutive windows share one token and every token is a target once per epoch. Each epoch
/// visits every window once, in a permutation drawn from the seed and the epoch number; the
/// whole state is the count of windows drawn.
#[derive(Debug)]
struct DataOrder {
    seed: u64,
    stride: usize,
    window_count: u64,
    consumed: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl DataOrder {
    fn new(seed: u64, sequence_length: usize, stream_length: usize, consumed: u64) -> Result<Self> {
        let window_count = stream_length.saturating_sub(1) / sequence_length;
        if window_count == 0 {
            return Err(Error::NotEnoughTokens { needed: sequence_length + 1, available: stream_length });
        }
        Ok(Self { seed, stride: sequence_length, window_count: window_count as u64, consumed, epoch: None })
    }

    fn next_start(&mut self) -> usize {
        let epoch = self.consumed / self.window_count;
        let index = (self.consumed % self.window_count) as usize;
        self.consumed += 1;
        let (_, order) = match self.epoch.take() {
            Some((cached, order)) if cached == epoch => self.epoch.insert((cached, order)),
            _ => {
                let mut rng = SplitMix64::for_stream(self.seed, &format!("data/epoch/{epoch}"));
                self.epoch.insert((epoch, permutation(self.window_count as usize, &mut rng)))
            }
        };
        order[index] * self.stride
    }
}

/// Loss of a model on held-out tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy per predicted token, in nats.
    pub mean_loss: f64,
    /// `exp(mean_loss)`.
    pub perplexity: f64,
    /// How many tokens were predicted.
    pub predicted_tokens: u64,
}

/// Windows evaluated per forward pass.
const EVALUATION_BATCH: usize = 16;

/// Cross-entropy of `model` on `tokens`, cut into consecutive context-length windows (each
/// token after the first is predicted exactly once, from at most a context of preceding tokens
/// in its window). Runs without autodiff.
pub fn evaluate(model: &Transformer, tokens: &[u32]) -> Result<Evaluation> {
    check_tokens(tokens, model.config().vocab_size)?;
    if tokens.len() < 2 {
        return Err(Error::NotEnoughTokens { needed: 2, available: tokens.len() });
    }
    let model = model.valid();
    let device = model.device();
    let context = model.config().context_length;
    let windows: Vec<&[u32]> =
        (0..tokens.len() - 1).step_by(context).map(|start| &tokens[start..(start + context + 1).min(tokens.len())]).collect();
    let (mut loss_sum, mut count) = (0.0f64, 0.0f64);
    // Full windows share a length and batch together; only the last can be shorter.
    let mut batch: Vec<&[u32]> = Vec::with_capacity(EVALUATION_BATCH);
    let mut flush = |batch: &mut Vec<&[u32]>| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let vocab_size = model.config().vocab_size;
        let inputs: Vec<&[u32]> = batch.iter().map(|window| &window[..window.len() - 1]).collect();
        let targets: Vec<&[u32]> = batch.iter().map(|window| &window[1..]).collect();
        let (sum, predicted) = model.loss_sum(token_batch(&inputs, vocab_size, &device)?, token_batch(&targets, vocab_size, &device)?);
        loss_sum += f64::from(sum.into_scalar::<f32>());
        count += f64::from(predicted.into_scalar::<f32>());
        batch.clear();
        Ok(())
    };
    for window in windows {
        if batch.len() == EVALUATION_BATCH || batch.first().is_some_and(|first| first.len() != window.len()) {
            flush(&mut batch)?;
        }
        batch.push(window);
    }
    flush(&mut batch)?;
    if count == 0.0 {
        return Err(Error::NotEnoughTokens { needed: 2, available: 0 });
    }
    let mean_loss = loss_sum / count;
    Ok(Evaluation { mean_loss, perplexity: mean_loss.exp(), predicted_tokens: count as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;

    /// Every gradient of `model`'s parameters, in visiting order.
    fn flattened(model: &Transformer, gradients: &GradientsParams) -> Vec<Vec<f32>> {
        struct Collect<'a>(&'a GradientsParams, Vec<Vec<f32>>);
        impl ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(gradient) = self.0.get::<D>(param.id) {
                    self.1.push(gradient.into_data().try_to_vec::<f32>().expect("f32"));
                }
            }
        }
        let mut collect = Collect(gradients, Vec::new());
        model.visit(&mut collect);
        collect.1
    }

    #[test]
    fn shards_on_their_threads_give_the_whole_batchs_loss_and_gradients() {
        let device = Backend::preferred().training_device();
        let model = Transformer::new(&ModelConfig::new(259, 2, 2, 32, 16), 5, &device).expect("model");
        let tokens: Vec<u32> = (0..200u32).map(|index| (index * 37 + 11) % 259).collect();
        // Five windows: shards of three and two; one target is PAD, which no shard counts.
        let mut windows: Vec<Window<'_>> = (0..5).map(|k| (&tokens[k * 16..k * 16 + 16], &tokens[k * 16 + 1..k * 16 + 17])).collect();
        let padded: Vec<u32> = tokens[97..113].iter().copied().chain([PAD]).skip(1).collect();
        windows[4].1 = &padded;
        let predicted = windows.iter().flat_map(|window| window.1.iter()).filter(|&&token| token != PAD).count();
        assert!(predicted < 5 * 16);
        let (whole_loss, whole) = batch_gradients(&model, &windows, predicted, 1).expect("one shard");
        let (sharded_loss, sharded) = batch_gradients(&model, &windows, predicted, 2).expect("two shards");
        assert!((whole_loss - sharded_loss).abs() < 1e-5, "{whole_loss} vs {sharded_loss}");
        let expected = model.loss(
            token_batch(&windows.iter().map(|window| window.0).collect::<Vec<_>>(), 259, &device).expect("inputs"),
            token_batch(&windows.iter().map(|window| window.1).collect::<Vec<_>>(), 259, &device).expect("targets"),
        );
        assert!((expected.into_scalar::<f32>() - whole_loss).abs() < 1e-5, "the mean over non-PAD targets");
        let (whole, sharded) = (flattened(&model, &whole), flattened(&model, &sharded));
        assert_eq!(whole.len(), sharded.len());
        assert!(!whole.is_empty());
        for (left, right) in whole.iter().zip(&sharded) {
            let difference = left.iter().zip(right).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(difference < 1e-5, "a gradient differs by {difference}");
        }
        // Sharded twice: the same bits.
        let (_, again) = batch_gradients(&model, &windows, predicted, 2).expect("two shards");
        assert_eq!(flattened(&model, &again), sharded);
    }

    #[test]
    fn every_window_is_drawn_once_per_epoch_in_a_seeded_order() {
        let mut order = DataOrder::new(9, 4, 41, 0).expect("enough tokens");
        assert_eq!(order.window_count, 10);
        let first: Vec<usize> = (0..10).map(|_| order.next_start()).collect();
        let second: Vec<usize> = (0..10).map(|_| order.next_start()).collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).map(|k| k * 4).collect::<Vec<_>>());
        assert_ne!(first, second, "each epoch has its own permutation");

        let mut resumed = DataOrder::new(9, 4, 41, 10).expect("enough tokens");
        let again: Vec<usize> = (0..10).map(|_| resumed.next_start()).collect();
        assert_eq!(again, second, "the count of windows drawn is the whole state");
        assert!(matches!(DataOrder::new(9, 4, 4, 0), Err(Error::NotEnoughTokens { needed: 5, available: 4 })));
    }
}
