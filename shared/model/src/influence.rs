//! Per-example loss gradients, randomly projected per linear layer: the features that Proof of
//! Attribution scores (LoGra-style factored projection, see `shared/DESIGN.md`).
//!
//! For a linear layer `y = x W + b` the gradient of one example's loss is
//! `∂L/∂W = Σ_t x_tᵀ g_t`, with `g_t = ∂L/∂y_t`. Projecting both sides with seeded Gaussian
//! matrices `P_in` (`d_in × k`) and `P_out` (`d_out × k`) gives the `k × k` sketch
//! `P_inᵀ (∂L/∂W) P_out = Σ_t (x_t P_in)ᵀ (g_t P_out)`, which needs only the layer's inputs and
//! output gradients. Burn cannot read the gradient of an intermediate tensor, so every probed
//! layer's output gets a zero "probe" leaf added; the probe's gradient is `g`, for every example
//! of the batch at once, from one backward pass.
//!
//! On a model with a LoRA adapter the features are the adapter's own gradients, sketched the
//! same way: `∂L/∂A = s Σ_t x_tᵀ (g_t Bᵀ)` (`d_in × r`, input side projected) and
//! `∂L/∂B = s Σ_t (x_t A)ᵀ g_t` (`r × d_out`, output side projected), for the adapted layers only.
//!
//! [`Featurizer::features_by_parameters`] computes the same numbers from Burn's parameter
//! gradients, one example at a time: the test oracle for the batched probe path.

use std::cell::RefCell;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::LoraTarget;
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::tokenizer::PAD;
use crate::transformer::{Deltas, Transformer};

/// Which gradient a block of the feature vector sketches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// The full weight `W` (`k × k`).
    Weight,
    /// A LoRA adapter's `A` (`k × rank`).
    LoraA,
    /// A LoRA adapter's `B` (`rank × k`).
    LoraB,
}

/// One block of the feature vector: a sketched gradient of one parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureBlock {
    pub layer: usize,
    pub target: LoraTarget,
    pub factor: Factor,
    /// Where the block starts in the feature vector, and its length.
    pub offset: usize,
    pub len: usize,
}

impl FeatureBlock {
    /// The block's stable name, as indexes record it: `blocks.<layer>.<target>/<factor>`.
    pub fn name(&self) -> String {
        let snake = |value: serde_json::Value| value.as_str().map(str::to_owned).unwrap_or_default();
        format!("blocks.{}.{}/{}", self.layer, snake(serde_json::json!(self.target)), snake(serde_json::json!(self.factor)))
    }
}

/// One example to featurise: its tokens, from which target position its loss counts, and how
/// its token losses make one loss.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    pub tokens: &'a [u32],
    /// 0 for a training example; the prompt's length for a (prompt, output) query, so that
    /// only the output is explained.
    pub loss_from: usize,
    pub reduction: Reduction,
}

/// How a sequence's next-token losses are reduced to the one loss whose gradient is its feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Their sum: what a training example weighs in training, where a batch's summed token
    /// losses are divided by a count that does not depend on the example, so a long example
    /// moves the weights in proportion to its length. (On short fortunes this raised the LDS
    /// by 28 to 42 % against per-example means, in the same run: `make attribution-eval`.)
    Sum,
    /// Their mean: a query's loss per token of the answer it explains. A query's scale
    /// multiplies every score alike, so this only keeps queries of any length comparable.
    Mean,
}

impl<'a> Sequence<'a> {
    /// A training example (or a phantom control, weighed as one would be): every next-token
    /// prediction counts, summed.
    pub fn trained(tokens: &'a [u32]) -> Self {
        Self { tokens, loss_from: 0, reduction: Reduction::Sum }
    }

    /// A query: `tokens` is the prompt then the answer, and only the answer's predictions (from
    /// position `prompt_len` on) count, averaged.
    pub fn answer(tokens: &'a [u32], prompt_len: usize) -> Self {
        Self { tokens, loss_from: prompt_len, reduction: Reduction::Mean }
    }
}

/// The projections of one probed layer.
struct Projection {
    layer: usize,
    target: LoraTarget,
    input: Tensor<2>,
    output: Tensor<2>,
    /// `(A, B, scale)` when the layer carries a LoRA adapter.
    lora: Option<(Tensor<2>, Tensor<2>, f32)>,
}

/// Turns examples into projected, per-example gradient features for one model.
///
/// The projections are a pure function of the seed, the per-side dimension and the model's
/// shape, so an index and a later query agree as long as they name the same three.
pub struct Featurizer {
    projections: Vec<Projection>,
    blocks: Vec<FeatureBlock>,
    dim: usize,
}

impl Featurizer {
    /// The featurizer for `model`: every adaptable linear layer of every block for a plain
    /// model; the adapted layers' factors for a model with a LoRA adapter.
    pub fn new(model: &Transformer, seed: u64, per_side: usize) -> Result<Self> {
        if per_side == 0 {
            return Err(Error::InvalidConfig("the projection needs at least one dimension per side".into()));
        }
        // Projections and adapter factors are constants: keep them off the autodiff graph.
        let device = model.device().inner();
        let config = model.config();
        let adapter = match model.lora_spec() {
            Some(_) => Some(model.adapter_weights()?),
            None => None,
        };
        let targets: Vec<LoraTarget> = match model.lora_spec() {
            Some(spec) => LoraTarget::ALL.into_iter().filter(|target| spec.targets.contains(target)).collect(),
            None => LoraTarget::ALL.to_vec(),
        };
        let mut projections = Vec::new();
        let mut blocks = Vec::new();
        let mut offset = 0;
        for layer in 0..config.layers {
            for &target in &targets {
                let [d_in, d_out] = config.target_shape(target);
                let draw = |side: &str, rows: usize| {
                    let name = format!("influence/{layer}/{target:?}/{side}");
                    // N(0, 1/k): the sketch preserves inner products in expectation.
                    let values = SplitMix64::for_stream(seed, &name).normal_vec(rows * per_side, 1.0 / (per_side as f64).sqrt());
                    Tensor::<2>::from_data(TensorData::new(values, [rows, per_side]), &device)
                };
                let lora = adapter.as_ref().map(|weights| {
                    let matrices = weights
                        .matrices
                        .iter()
                        .find(|matrices| matrices.layer == layer && matrices.target == target)
                        .expect("an adapter holds every targeted layer (checked when it was read)");
                    let tensor = |matrix: &crate::lora::Matrix| {
                        Tensor::<2>::from_data(TensorData::new(matrix.values.clone(), [matrix.rows, matrix.cols]), &device)
                    };
                    (tensor(&matrices.a), tensor(&matrices.b), weights.scale)
                });
                let mut push = |factor, len| {
                    blocks.push(FeatureBlock { layer, target, factor, offset, len });
                    offset += len;
                };
                match &lora {
                    None => push(Factor::Weight, per_side * per_side),
                    Some((a, _, _)) => {
                        let rank = a.dims()[1];
                        push(Factor::LoraA, per_side * rank);
                        push(Factor::LoraB, rank * per_side);
                    }
                }
                projections.push(Projection { layer, target, input: draw("in", d_in), output: draw("out", d_out), lora });
            }
        }
        Ok(Self { projections, blocks, dim: offset })
    }

    /// Length of one feature vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The layout of a feature vector.
    pub fn blocks(&self) -> &[FeatureBlock] {
        &self.blocks
    }

    /// Features of a batch of sequences, row-major `[sequences, dim]`, from one forward and one
    /// backward pass with probes. Rows shorter than the longest are padded (padding carries no
    /// loss and so no gradient); a sequence longer than the context is cut to its first window.
    ///
    /// Each sequence's loss is its next-token cross-entropy over the counted targets, summed or
    /// averaged as its [`Reduction`] says.
    pub fn features(&self, model: &Transformer, sequences: &[Sequence<'_>]) -> Result<Vec<f32>> {
        let device = model.device().autodiff();
        let (tokens, targets) = batch(model, sequences, &device)?;
        let probes = Probes::new(self, model);
        let logits = model.forward_with(tokens, &probes);
        let loss = per_sequence_loss(logits, targets, sequences);
        let gradients = loss.backward();
        let records = probes.records.into_inner();
        let mut parts = Vec::with_capacity(self.blocks.len());
        for (projection, record) in self.projections.iter().zip(records) {
            let Some(record) = record else {
                return Err(Error::InvalidConfig(format!("layer {} {:?} was never probed", projection.layer, projection.target)));
            };
            // A layer whose output does not reach the loss has a zero gradient.
            let output_gradient =
                record.probe.grad(&gradients).unwrap_or_else(|| Tensor::zeros(record.probe.dims(), &record.input.device()));
            let input = record.input;
            let [rows, time, _] = input.dims();
            let sketch = |left: Tensor<3>, right: Tensor<3>| {
                let [_, _, left_width] = left.dims();
                let [_, _, right_width] = right.dims();
                left.swap_dims(1, 2).matmul(right).reshape([rows, left_width * right_width])
            };
            let times = |tensor: Tensor<3>, matrix: &Tensor<2>| {
                let [_, _, width] = tensor.dims();
                let [_, columns] = matrix.dims();
                tensor.reshape([rows * time, width]).matmul(matrix.clone()).reshape([rows, time, columns])
            };
            match &projection.lora {
                None => parts.push(sketch(times(input, &projection.input), times(output_gradient, &projection.output))),
                Some((a, b, scale)) => {
                    let scaled_gradient = output_gradient.mul_scalar(*scale);
                    parts.push(sketch(times(input.clone(), &projection.input), times(scaled_gradient.clone(), &b.clone().transpose())));
                    parts.push(sketch(times(input, a), times(scaled_gradient, &projection.output)));
                }
            }
        }
        let features = Tensor::cat(parts, 1);
        features.into_data().try_to_vec::<f32>().map_err(|error| Error::Corrupt { artifact: "features", reason: format!("{error:?}") })
    }

    /// The same features as [`features`](Self::features) for one sequence, from the gradients
    /// Burn computes for the parameters themselves. Slow (a full backward per example, and the
    /// model must live on an autodiff device); it exists to check the probe path.
    pub fn features_by_parameters(&self, model: &Transformer, sequence: Sequence<'_>) -> Result<Vec<f32>> {
        let device = model.device();
        if !device.is_autodiff() {
            return Err(Error::InvalidConfig("parameter gradients need a model on an autodiff device".into()));
        }
        let (tokens, targets) = batch(model, &[sequence], &device)?;
        let loss = per_sequence_loss(model.forward(tokens), targets, &[sequence]);
        let gradients = loss.backward();
        let missing = |what: &str| Error::InvalidConfig(format!("no gradient for {what}"));
        let mut features = Vec::with_capacity(self.dim);
        for projection in &self.projections {
            let weight = model.linear(projection.layer, projection.target);
            let p_in = projection.input.clone();
            let p_out = projection.output.clone();
            let sketches: Vec<Tensor<2>> = match weight.weight.adapter() {
                None => {
                    let gradient = weight.weight.val().grad(&gradients).ok_or_else(|| missing("a weight"))?;
                    vec![p_in.transpose().matmul(gradient).matmul(p_out)]
                }
                Some(adapter) => {
                    let gradient_a = adapter.a.val().grad(&gradients).ok_or_else(|| missing("a LoRA A factor"))?;
                    let gradient_b = adapter.b.val().grad(&gradients).ok_or_else(|| missing("a LoRA B factor"))?;
                    vec![p_in.transpose().matmul(gradient_a), gradient_b.matmul(p_out)]
                }
            };
            for sketch in sketches {
                let values = sketch
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|error| Error::Corrupt { artifact: "features", reason: format!("{error:?}") })?;
                features.extend(values);
            }
        }
        Ok(features)
    }
}

/// Token and target tensors for a batch, padded to the longest row.
fn batch(model: &Transformer, sequences: &[Sequence<'_>], device: &Device) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
    let context = model.config().context_length;
    let vocab = model.config().vocab_size;
    let windows: Vec<&[u32]> = sequences.iter().map(|sequence| &sequence.tokens[..sequence.tokens.len().min(context + 1)]).collect();
    let time = windows.iter().map(|window| window.len().saturating_sub(1)).max().unwrap_or(0);
    if time == 0 {
        return Err(Error::MalformedBatch("every sequence needs at least two tokens".into()));
    }
    let mut inputs = Vec::with_capacity(sequences.len() * time);
    let mut targets = Vec::with_capacity(sequences.len() * time);
    for (window, sequence) in windows.iter().zip(sequences) {
        if let Some(&token) = window.iter().find(|&&token| token as usize >= vocab) {
            return Err(Error::TokenOutOfRange { token, vocab_size: vocab });
        }
        for position in 0..time {
            // Position p predicts token p + 1; only predictions of tokens from `loss_from` on count.
            let counted = position + 1 < window.len() && position + 1 >= sequence.loss_from;
            inputs.push(i64::from(window.get(position).copied().unwrap_or(PAD)));
            targets.push(i64::from(if counted { window[position + 1] } else { PAD }));
        }
    }
    let shape = [sequences.len(), time];
    Ok((Tensor::from_data(TensorData::new(inputs, shape), device), Tensor::from_data(TensorData::new(targets, shape), device)))
}

/// The sum over sequences of each one's cross-entropy over its non-PAD targets, reduced as the
/// sequence says (a mean divides by its count of targets).
fn per_sequence_loss(logits: Tensor<3>, targets: Tensor<2, Int>, sequences: &[Sequence<'_>]) -> Tensor<1> {
    let [rows, time, vocab] = logits.dims();
    let device = logits.device();
    let log_probs = log_softmax(logits.reshape([rows * time, vocab]), 1);
    let flat = targets.reshape([rows * time]);
    let padding = flat.clone().equal_elem(PAD as i64);
    let keep = padding.clone().bool_not().float().reshape([rows, time]);
    let picked = log_probs.gather(1, flat.mask_fill(padding, 0).reshape([rows * time, 1])).reshape([rows, time]);
    let sums = (picked * keep.clone()).sum_dim(1);
    let counts = keep.sum_dim(1).clamp_min(1.0);
    // A summed sequence divides by 1, an averaged one by its count.
    let summed: Vec<bool> = sequences.iter().map(|sequence| sequence.reduction == Reduction::Sum).collect();
    let divisors = counts.mask_fill(Tensor::<2, Bool>::from_data(TensorData::new(summed, [rows, 1]), &device), 1.0);
    (sums / divisors).sum().neg()
}

/// What one probed layer saw: its input (detached) and the zero leaf added to its output.
struct Record {
    input: Tensor<3>,
    probe: Tensor<3>,
}

/// The [`Deltas`] that adds a probe to every layer the featurizer sketches.
struct Probes<'a> {
    featurizer: &'a Featurizer,
    widths: Vec<usize>,
    records: RefCell<Vec<Option<Record>>>,
}

impl<'a> Probes<'a> {
    fn new(featurizer: &'a Featurizer, model: &Transformer) -> Self {
        let widths = featurizer.projections.iter().map(|projection| model.config().target_shape(projection.target)[1]).collect();
        Self { featurizer, widths, records: RefCell::new((0..featurizer.projections.len()).map(|_| None).collect()) }
    }
}

impl Deltas for Probes<'_> {
    fn delta(&self, layer: usize, target: LoraTarget, input: &Tensor<3>) -> Option<Tensor<3>> {
        let index = self.featurizer.projections.iter().position(|projection| projection.layer == layer && projection.target == target)?;
        let [rows, time, _] = input.dims();
        let device = input.device();
        let probe = Tensor::<3>::zeros([rows, time, self.widths[index]], &device.clone().autodiff()).require_grad();
        self.records.borrow_mut()[index] = Some(Record { input: input.clone().inner(), probe: probe.clone() });
        Some(probe)
    }
}
