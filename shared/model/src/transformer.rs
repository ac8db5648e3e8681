//! A decoder-only GPT: token and learned position embeddings, pre-LayerNorm blocks of causal
//! multi-head self-attention and an MLP, a final LayerNorm and a linear LM head.
//!
//! Burn 0.22 tensors carry their backend in their [`Device`], not in a type parameter, so the
//! same [`Transformer`] runs on every backend the crate is built with; see [`crate::backend`].

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu_approximate, log_softmax, relu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::config::{Activation, LoraSpec, LoraTarget, ModelConfig};
use crate::error::{Error, Result};
use crate::rng::{SplitMix64, stream_seed};
use crate::tokenizer::PAD;

/// Standard deviation of every initial weight matrix and embedding (GPT-2's).
const INIT_STD: f64 = 0.02;

/// A decoder-only transformer language model.
///
/// Parameter paths (what records, LoRA targets and optimizer groups match on) read
/// `blocks.<i>.attention.{query,key,value,output}.{weight,bias}`, `blocks.<i>.mlp.{up,down}.*`,
/// `blocks.<i>.{attention_norm,mlp_norm}.{gamma,beta}`, `token_embedding.weight`,
/// `position_embedding.weight`, `final_norm.*` and `lm_head.*`; a LoRA factor adds
/// `.lora.a` / `.lora.b` to the path of the weight it adapts.
#[derive(Module, Debug)]
pub struct Transformer {
    token_embedding: Embedding,
    position_embedding: Embedding,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    lm_head: Linear,
    #[module(skip)]
    config: ModelConfig,
    /// The adapter attached by [`Transformer::with_lora`], if any.
    #[module(skip)]
    pub(crate) lora: Option<LoraSpec>,
}

#[derive(Module, Debug)]
struct Block {
    attention_norm: LayerNorm,
    attention: Attention,
    mlp_norm: LayerNorm,
    mlp: Mlp,
}

#[derive(Module, Debug)]
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    heads: usize,
}

#[derive(Module, Debug)]
struct Mlp {
    up: Linear,
    down: Linear,
    #[module(skip)]
    activation: Activation,
}

impl Transformer {
    /// A freshly initialised model.
    ///
    /// Every parameter is drawn eagerly from a stream keyed by the seed and the parameter's
    /// path, so the same seed gives bit-identical weights on every backend and in any order of
    /// first use (Burn's own initialisers are lazy and draw from a process-wide RNG).
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let init = Init { seed, device };
        // Residual projections are scaled down so the residual stream's variance does not grow
        // with depth (GPT-2, section 2.3).
        let residual_std = INIT_STD / ((2 * config.layers) as f64).sqrt();
        let blocks = (0..config.layers)
            .map(|index| {
                let path = format!("blocks.{index}");
                Block {
                    attention_norm: init.layer_norm(config.width),
                    attention: Attention {
                        query: init.linear(&format!("{path}.attention.query"), config.width, config.width, INIT_STD),
                        key: init.linear(&format!("{path}.attention.key"), config.width, config.width, INIT_STD),
                        value: init.linear(&format!("{path}.attention.value"), config.width, config.width, INIT_STD),
                        output: init.linear(&format!("{path}.attention.output"), config.width, config.width, residual_std),
                        heads: config.heads,
                    },
                    mlp_norm: init.layer_norm(config.width),
                    mlp: Mlp {
                        up: init.linear(&format!("{path}.mlp.up"), config.width, config.mlp_width(), INIT_STD),
                        down: init.linear(&format!("{path}.mlp.down"), config.mlp_width(), config.width, residual_std),
                        activation: config.activation,
                    },
                }
            })
            .collect();
        let model = Self {
            token_embedding: Embedding { weight: init.normal("token_embedding.weight", [config.vocab_size, config.width], INIT_STD) },
            position_embedding: Embedding {
                weight: init.normal("position_embedding.weight", [config.context_length, config.width], INIT_STD),
            },
            blocks,
            final_norm: init.layer_norm(config.width),
            lm_head: init.linear("lm_head", config.width, config.vocab_size, INIT_STD),
            config: config.clone(),
            lora: None,
        };
        Ok(model.with_canonical_ids())
    }

    /// The model's shape.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The LoRA adapter attached to this model, if any.
    pub fn lora_spec(&self) -> Option<&LoraSpec> {
        self.lora.as_ref()
    }

    /// A copy without autodiff (and without gradient bookkeeping) for inference and evaluation.
    /// An adapter stays attached; [`merge_lora`](Self::merge_lora) folds it in.
    pub fn inference(&self) -> Self {
        self.valid()
    }

    /// The device the model's parameters live on.
    pub fn device(&self) -> Device {
        self.lm_head.weight.lazy_device()
    }

    /// Next-token logits `[batch, time, vocab]` for tokens `[batch, time]`.
    ///
    /// # Panics
    ///
    /// If `time` exceeds the context length (there is no position embedding for it).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.forward_with(tokens, &NoDeltas)
    }

    /// [`forward`](Self::forward) with `deltas` added to the outputs of the adaptable linear
    /// layers: how many adapters are served in one pass (see [`crate::serving`]).
    pub(crate) fn forward_with(&self, tokens: Tensor<2, Int>, deltas: &dyn Deltas) -> Tensor<3> {
        let [batch, time] = tokens.dims();
        assert!(time <= self.config.context_length, "sequence of {time} tokens exceeds the context length {}", self.config.context_length);
        let positions = Tensor::<1, Int>::arange(0..time as i64, &tokens.device()).reshape([1, time]);
        let logits = self.run(tokens, positions, deltas, &mut Attend::Causal);
        debug_assert_eq!(logits.dims(), [batch, time, self.config.vocab_size]);
        logits
    }

    /// Logits `[batch, time, vocab]` of `tokens` at `positions` (`[1, time]` shared by every
    /// row, or `[batch, time]`), each block's attention seeing what `attend` says.
    pub(crate) fn run(&self, tokens: Tensor<2, Int>, positions: Tensor<2, Int>, deltas: &dyn Deltas, attend: &mut Attend) -> Tensor<3> {
        let mut hidden = self.token_embedding.forward(tokens) + self.position_embedding.forward(positions);
        for (layer, block) in self.blocks.iter().enumerate() {
            hidden = block.forward(hidden, layer, deltas, attend);
        }
        self.lm_head.forward(self.final_norm.forward(hidden))
    }

    /// Mean cross-entropy of predicting `targets` from `tokens` (both `[batch, time]`), over
    /// the targets that are not [`PAD`]; a shape `[1]` tensor.
    pub fn loss(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let (sum, count) = self.loss_sum(tokens, targets);
        sum / count.clamp_min(1.0)
    }

    /// Summed cross-entropy and the number of non-PAD targets it covers.
    pub(crate) fn loss_sum(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> (Tensor<1>, Tensor<1>) {
        let logits = self.forward(tokens);
        let [batch, time, vocab] = logits.dims();
        let rows = batch * time;
        let log_probs = log_softmax(logits.reshape([rows, vocab]), 1);
        let targets = targets.reshape([rows]);
        let padding = targets.clone().equal_elem(PAD as i64);
        let keep = padding.clone().bool_not().float();
        // Gather a harmless index at padded positions; they are masked out below.
        let indices = targets.mask_fill(padding, 0).reshape([rows, 1]);
        let picked = log_probs.gather(1, indices).reshape([rows]);
        ((picked * keep.clone()).sum().neg(), keep.sum())
    }

    /// The linear layer `target` of block `layer`.
    pub(crate) fn linear(&self, layer: usize, target: LoraTarget) -> &Linear {
        let block = &self.blocks[layer];
        match target {
            LoraTarget::AttentionQuery => &block.attention.query,
            LoraTarget::AttentionKey => &block.attention.key,
            LoraTarget::AttentionValue => &block.attention.value,
            LoraTarget::AttentionOutput => &block.attention.output,
            LoraTarget::MlpUp => &block.mlp.up,
            LoraTarget::MlpDown => &block.mlp.down,
        }
    }

    /// Give every parameter an id derived from its path.
    ///
    /// Burn draws parameter ids at random, and they are written into records and key the
    /// optimizer state; derived ids make the same weights serialise to the same bytes, and let
    /// a checkpoint's optimizer state find its parameters in another process.
    pub(crate) fn with_canonical_ids(self) -> Self {
        self.map(&mut CanonicalIds::default())
    }
}

/// Terms added to the outputs of a block's adaptable linear layers, per batch row.
pub(crate) trait Deltas {
    /// What to add to `target`'s output in block `layer` for `input` `[batch, time, d_in]`.
    fn delta(&self, layer: usize, target: LoraTarget, input: &Tensor<3>) -> Option<Tensor<3>>;
}

/// The plain model: nothing added.
pub(crate) struct NoDeltas;

impl Deltas for NoDeltas {
    fn delta(&self, _layer: usize, _target: LoraTarget, _input: &Tensor<3>) -> Option<Tensor<3>> {
        None
    }
}

/// `linear(input)`, plus the delta for `target` if there is one.
fn adapted(linear: &Linear, input: Tensor<3>, layer: usize, target: LoraTarget, deltas: &dyn Deltas) -> Tensor<3> {
    match deltas.delta(layer, target, &input) {
        Some(delta) => linear.forward(input) + delta,
        None => linear.forward(input),
    }
}

/// One block's keys and values, `[rows, heads, slots, head_width]`.
#[derive(Debug, Clone)]
pub(crate) struct KeysValues {
    pub(crate) keys: Tensor<4>,
    pub(crate) values: Tensor<4>,
}

/// What each block's attention sees.
#[allow(clippy::large_enum_variant, reason = "one lives on the stack for the length of a forward pass")]
pub(crate) enum Attend {
    /// Causal attention within the input (training, scoring, recomputing a window).
    Causal,
    /// Causal attention within the input, keeping each block's keys and values (a prefill).
    Recording(Vec<KeysValues>),
    /// One new position per row (a decoding step): its key and value are written at `slot` of
    /// the block's cache (taken from `blocks`, the updated one pushed to `updated`), and its
    /// query attends to the cache's slots except the `hidden` ones (`[rows, 1, 1, slots]`).
    Cached { blocks: std::vec::IntoIter<KeysValues>, updated: Vec<KeysValues>, slot: usize, hidden: Tensor<4, Bool> },
}

impl Block {
    fn forward(&self, input: Tensor<3>, layer: usize, deltas: &dyn Deltas, attend: &mut Attend) -> Tensor<3> {
        let hidden = input.clone() + self.attention.forward(self.attention_norm.forward(input), layer, deltas, attend);
        hidden.clone() + self.mlp.forward(self.mlp_norm.forward(hidden), layer, deltas)
    }
}

impl Attention {
    fn forward(&self, input: Tensor<3>, layer: usize, deltas: &dyn Deltas, attend: &mut Attend) -> Tensor<3> {
        let [batch, time, width] = input.dims();
        let head_width = width / self.heads;
        let split = |projection: &Linear, target| {
            adapted(projection, input.clone(), layer, target, deltas).reshape([batch, time, self.heads, head_width]).swap_dims(1, 2)
        };
        let query = split(&self.query, LoraTarget::AttentionQuery);
        let key = split(&self.key, LoraTarget::AttentionKey);
        let value = split(&self.value, LoraTarget::AttentionValue);
        let causal = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let attended = match attend {
            Attend::Causal => attention(query, key, value, None, None, causal),
            Attend::Recording(blocks) => {
                blocks.push(KeysValues { keys: key.clone(), values: value.clone() });
                attention(query, key, value, None, None, causal)
            }
            Attend::Cached { blocks, updated, slot, hidden } => {
                let cache = blocks.next().expect("a cache per block");
                // The cache is owned here alone, so Burn writes the slot in place.
                let at = [0..batch, 0..self.heads, *slot..*slot + 1, 0..head_width];
                let keys = cache.keys.slice_assign(at.clone(), key);
                let values = cache.values.slice_assign(at, value);
                let options = AttentionModuleOptions { is_causal: false, ..causal };
                let attended = attention(query, keys.clone(), values.clone(), Some(hidden.clone()), None, options);
                updated.push(KeysValues { keys, values });
                attended
            }
        };
        adapted(&self.output, attended.swap_dims(1, 2).reshape([batch, time, width]), layer, LoraTarget::AttentionOutput, deltas)
    }
}

impl Mlp {
    fn forward(&self, input: Tensor<3>, layer: usize, deltas: &dyn Deltas) -> Tensor<3> {
        let hidden = adapted(&self.up, input, layer, LoraTarget::MlpUp, deltas);
        let hidden = match self.activation {
            Activation::Relu => relu(hidden),
            Activation::GeluTanh => gelu_approximate(hidden),
        };
        adapted(&self.down, hidden, layer, LoraTarget::MlpDown, deltas)
    }
}

/// Eager, path-keyed parameter initialisation.
struct Init<'a> {
    seed: u64,
    device: &'a Device,
}

impl Init<'_> {
    fn normal<const D: usize>(&self, path: &str, shape: [usize; D], std: f64) -> Param<Tensor<D>> {
        let count = shape.iter().product();
        let values = SplitMix64::for_stream(self.seed, &format!("init/{path}")).normal_vec(count, std);
        Param::from_data(TensorData::new(values, shape), self.device)
    }

    fn constant<const D: usize>(&self, shape: [usize; D], value: f32) -> Param<Tensor<D>> {
        let count = shape.iter().product();
        Param::from_data(TensorData::new(vec![value; count], shape), self.device)
    }

    fn linear(&self, path: &str, d_input: usize, d_output: usize, std: f64) -> Linear {
        Linear { weight: self.normal(&format!("{path}.weight"), [d_input, d_output], std), bias: Some(self.constant([d_output], 0.0)) }
    }

    fn layer_norm(&self, width: usize) -> LayerNorm {
        // LayerNorm's epsilon is private, so take Burn's module and replace its (lazy) parameters
        // with eager ones.
        let mut norm = LayerNormConfig::new(width).init(self.device);
        norm.gamma = self.constant([width], 1.0);
        norm.beta = Some(self.constant([width], 0.0));
        norm
    }
}

/// The id of the parameter at `path`: the first eight bytes of a SHA-256 of the path.
pub(crate) fn canonical_id(path: &str) -> ParamId {
    ParamId::from(stream_seed(0, &format!("param/{path}")))
}

#[derive(Default)]
struct CanonicalIds {
    path: Vec<String>,
}

impl ModuleMapper for CanonicalIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.id = canonical_id(&self.path.join("."));
        param
    }
}

/// A `[rows, time]` token tensor from equally long rows.
pub fn token_batch(rows: &[&[u32]], vocab_size: usize, device: &Device) -> Result<Tensor<2, Int>> {
    let time = rows.first().map(|row| row.len()).ok_or_else(|| Error::MalformedBatch("no rows".into()))?;
    if time == 0 || rows.iter().any(|row| row.len() != time) {
        return Err(Error::MalformedBatch("rows must be non-empty and equally long".into()));
    }
    let mut values = Vec::with_capacity(rows.len() * time);
    for &token in rows.iter().flat_map(|row| row.iter()) {
        if token as usize >= vocab_size {
            return Err(Error::TokenOutOfRange { token, vocab_size });
        }
        values.push(i64::from(token));
    }
    Ok(Tensor::from_data(TensorData::new(values, [rows.len(), time]), device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;

    fn tiny() -> ModelConfig {
        ModelConfig::new(259, 2, 2, 32, 32)
    }

    fn logits(model: &Transformer, rows: &[&[u32]]) -> Vec<f32> {
        let tokens = token_batch(rows, 259, &model.device()).expect("valid batch");
        model.forward(tokens).into_data().try_to_vec::<f32>().expect("f32 logits")
    }

    #[test]
    fn forward_gives_one_row_of_logits_per_position() {
        let device = backend::inference_device();
        let model = Transformer::new(&tiny(), 1, &device).expect("valid config");
        let tokens = token_batch(&[&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]], 259, &device).expect("valid batch");
        assert_eq!(model.forward(tokens).dims(), [2, 5, 259]);
    }

    #[test]
    fn a_later_token_never_changes_an_earlier_prediction() {
        let device = backend::inference_device();
        let model = Transformer::new(&tiny(), 2, &device).expect("valid config");
        let first = logits(&model, &[&[10, 20, 30, 40, 50, 60]]);
        let second = logits(&model, &[&[10, 20, 30, 41, 99, 7]]);
        let per_position = 259;
        let prefix = 3 * per_position;
        assert_eq!(first[..prefix], second[..prefix], "positions 0..3 only see tokens 0..3");
        let fourth = prefix..prefix + per_position;
        assert_ne!(first[fourth.clone()], second[fourth], "position 3 sees the changed token");
    }

    #[test]
    fn the_same_seed_gives_the_same_weights_on_first_use_in_any_order() {
        let device = backend::inference_device();
        let first = Transformer::new(&tiny(), 3, &device).expect("valid config");
        let second = Transformer::new(&tiny(), 3, &device).expect("valid config");
        // Touch the parameters in opposite orders: eager initialisation makes order irrelevant.
        let late = second.lm_head.weight.val().into_data();
        let early = first.lm_head.weight.val().into_data();
        assert_eq!(early, late);
        let other = Transformer::new(&tiny(), 4, &device).expect("valid config");
        assert_ne!(other.lm_head.weight.val().into_data(), early);
    }

    #[test]
    fn padded_targets_do_not_count_in_the_loss() {
        let device = backend::inference_device();
        let model = Transformer::new(&tiny(), 5, &device).expect("valid config");
        let batch = |rows: &[&[u32]]| token_batch(rows, 259, &device).expect("valid batch");
        let short = model.loss(batch(&[&[1, 2, 3]]), batch(&[&[2, 3, 4]])).into_scalar::<f32>();
        let padded = model.loss(batch(&[&[1, 2, 3, PAD]]), batch(&[&[2, 3, 4, PAD]])).into_scalar::<f32>();
        assert!((short - padded).abs() < 1e-5, "{short} vs {padded}");
        // An untrained model is close to uniform over 259 tokens.
        assert!((short - (259f32).ln()).abs() < 0.2, "initial loss {short}");
    }
}
