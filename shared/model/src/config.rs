//! Sizes of a model, of a LoRA adapter and of a training run.
//!
//! Each configuration validates itself when parsed from JSON, and every constructor that takes
//! one validates it again, so an impossible configuration fails before any tensor exists.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The nonlinearity between the two MLP projections.
///
/// Exact GELU needs `erf`, which Burn's `flex` backend runs as a slow scalar loop; the tanh
/// approximation and ReLU both train faster there (see the crate's throughput example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(0, x)`: the cheapest on CPU backends.
    #[default]
    Relu,
    /// GPT-2's GELU, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    GeluTanh,
}

/// The shape of a decoder-only transformer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawModelConfig")]
pub struct ModelConfig {
    /// Number of distinct tokens (259 for the byte-level tokenizer).
    pub vocab_size: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block; must divide `width`.
    pub heads: usize,
    /// Width of the residual stream.
    pub width: usize,
    /// Longest sequence the learned position embedding covers.
    pub context_length: usize,
    /// Hidden width of the MLP as a multiple of `width`.
    pub mlp_ratio: usize,
    /// The MLP's nonlinearity.
    pub activation: Activation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelConfig {
    vocab_size: usize,
    layers: usize,
    heads: usize,
    width: usize,
    context_length: usize,
    #[serde(default = "default_mlp_ratio")]
    mlp_ratio: usize,
    #[serde(default)]
    activation: Activation,
}

fn default_mlp_ratio() -> usize {
    4
}

impl TryFrom<RawModelConfig> for ModelConfig {
    type Error = Error;

    fn try_from(raw: RawModelConfig) -> Result<Self> {
        let config = ModelConfig {
            vocab_size: raw.vocab_size,
            layers: raw.layers,
            heads: raw.heads,
            width: raw.width,
            context_length: raw.context_length,
            mlp_ratio: raw.mlp_ratio,
            activation: raw.activation,
        };
        config.validate()?;
        Ok(config)
    }
}

impl ModelConfig {
    /// A configuration with the default MLP ratio (4) and activation.
    pub fn new(vocab_size: usize, layers: usize, heads: usize, width: usize, context_length: usize) -> Self {
        Self { vocab_size, layers, heads, width, context_length, mlp_ratio: default_mlp_ratio(), activation: Activation::default() }
    }

    /// Refuse sizes that cannot build a model.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("layers", self.layers),
            ("heads", self.heads),
            ("width", self.width),
            ("context_length", self.context_length),
            ("mlp_ratio", self.mlp_ratio),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, value)| *value == 0) {
            return Err(Error::InvalidConfig(format!("{name} must be greater than zero")));
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(Error::InvalidConfig(format!("width {} is not a multiple of heads {}", self.width, self.heads)));
        }
        // Token ids travel as u32 and are stored as i32 by some backends.
        if self.vocab_size > i32::MAX as usize {
            return Err(Error::InvalidConfig(format!("vocab_size {} does not fit an i32 token id", self.vocab_size)));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_width(&self) -> usize {
        self.width / self.heads
    }

    /// Hidden width of the MLP.
    pub fn mlp_width(&self) -> usize {
        self.width * self.mlp_ratio
    }

    /// The `[rows, columns]` of a targeted weight, as Burn stores it (`[d_in, d_out]`).
    pub fn target_shape(&self, target: LoraTarget) -> [usize; 2] {
        match target {
            LoraTarget::AttentionQuery | LoraTarget::AttentionKey | LoraTarget::AttentionValue | LoraTarget::AttentionOutput => {
                [self.width, self.width]
            }
            LoraTarget::MlpUp => [self.width, self.mlp_width()],
            LoraTarget::MlpDown => [self.mlp_width(), self.width],
        }
    }
}

/// A linear layer of every block that a LoRA adapter can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    AttentionQuery,
    AttentionKey,
    AttentionValue,
    AttentionOutput,
    MlpUp,
    MlpDown,
}

impl LoraTarget {
    /// Every target, in the order adapters are listed.
    pub const ALL: [LoraTarget; 6] = [
        LoraTarget::AttentionQuery,
        LoraTarget::AttentionKey,
        LoraTarget::AttentionValue,
        LoraTarget::AttentionOutput,
        LoraTarget::MlpUp,
        LoraTarget::MlpDown,
    ];

    /// The module path of the target's linear layer inside a block.
    pub(crate) fn module_path(self) -> &'static str {
        match self {
            LoraTarget::AttentionQuery => "attention.query",
            LoraTarget::AttentionKey => "attention.key",
            LoraTarget::AttentionValue => "attention.value",
            LoraTarget::AttentionOutput => "attention.output",
            LoraTarget::MlpUp => "mlp.up",
            LoraTarget::MlpDown => "mlp.down",
        }
    }

    pub(crate) fn from_module_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|target| target.module_path() == path)
    }
}

/// Rank, strength and placement of a LoRA adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Inner dimension of the low-rank factors.
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Which linear layers of every block get an adapter.
    pub targets: Vec<LoraTarget>,
}

impl LoraSpec {
    /// Refuse a spec that cannot be applied to a model of this shape.
    pub fn validate(&self, model: &ModelConfig) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::InvalidConfig("LoRA rank must be at least 1".into()));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::InvalidConfig(format!("LoRA alpha must be positive and finite, not {}", self.alpha)));
        }
        if self.targets.is_empty() {
            return Err(Error::InvalidConfig("LoRA needs at least one target".into()));
        }
        let mut seen = self.targets.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.targets.len() {
            return Err(Error::InvalidConfig("LoRA targets must not repeat".into()));
        }
        for &target in &self.targets {
            let [rows, cols] = model.target_shape(target);
            let max = rows.min(cols);
            if self.rank > max {
                return Err(Error::ImpossibleRank { rank: self.rank, target, max, rows, cols });
            }
        }
        Ok(())
    }

    /// The factor Burn multiplies the low-rank product by.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// Hyperparameters of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Peak AdamW learning rate, reached after `warmup_steps`.
    pub learning_rate: f64,
    /// Decoupled weight decay, applied to matrices only (not to biases or LayerNorm).
    pub weight_decay: f64,
    /// Windows per step.
    pub batch_size: usize,
    /// Tokens per window the model predicts (each window holds one more token, the last target).
    pub sequence_length: usize,
    /// Optimizer steps in the whole run.
    pub steps: u64,
    /// Seeds the model initialisation, the LoRA factors and the data order.
    pub seed: u64,
    /// Steps of linear warmup from zero to `learning_rate`.
    pub warmup_steps: u64,
}

impl TrainConfig {
    /// Refuse a run that cannot start on a model of this shape.
    pub fn validate(&self, model: &ModelConfig) -> Result<()> {
        if !self.learning_rate.is_finite() || self.learning_rate <= 0.0 {
            return Err(Error::InvalidConfig(format!("learning_rate must be positive and finite, not {}", self.learning_rate)));
        }
        if !self.weight_decay.is_finite() || self.weight_decay < 0.0 {
            return Err(Error::InvalidConfig(format!("weight_decay must be non-negative and finite, not {}", self.weight_decay)));
        }
        if self.batch_size == 0 || self.sequence_length == 0 || self.steps == 0 {
            return Err(Error::InvalidConfig("batch_size, sequence_length and steps must be greater than zero".into()));
        }
        if self.sequence_length > model.context_length {
            return Err(Error::InvalidConfig(format!(
                "sequence_length {} exceeds the model's context_length {}",
                self.sequence_length, model.context_length
            )));
        }
        Ok(())
    }

    /// The learning rate of step `step` (counted from zero): linear warmup, then constant.
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps { self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64 } else { self.learning_rate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        ModelConfig::new(259, 2, 2, 32, 32)
    }

    #[test]
    fn a_model_config_parses_with_default_mlp_ratio_and_refuses_bad_sizes() {
        let parsed: ModelConfig =
            serde_json::from_str(r#"{"vocab_size":259,"layers":2,"heads":2,"width":32,"context_length":32}"#).expect("valid config");
        assert_eq!(parsed, tiny());
        assert_eq!(parsed.mlp_ratio, 4);

        let odd = serde_json::from_str::<ModelConfig>(r#"{"vocab_size":259,"layers":2,"heads":3,"width":32,"context_length":32}"#);
        assert!(odd.is_err(), "width 32 with 3 heads must be refused");
        let zero = ModelConfig { layers: 0, ..tiny() };
        assert!(matches!(zero.validate(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn lora_targets_serialise_in_snake_case() {
        let spec = LoraSpec { rank: 4, alpha: 8.0, targets: vec![LoraTarget::AttentionQuery, LoraTarget::MlpDown] };
        let json = serde_json::to_string(&spec).expect("serialisable");
        assert_eq!(json, r#"{"rank":4,"alpha":8.0,"targets":["attention_query","mlp_down"]}"#);
    }

    #[test]
    fn a_rank_above_the_smallest_side_of_a_target_is_impossible() {
        let spec = LoraSpec { rank: 33, alpha: 1.0, targets: vec![LoraTarget::MlpUp] };
        match spec.validate(&tiny()) {
            Err(Error::ImpossibleRank { rank: 33, target: LoraTarget::MlpUp, max: 32, rows: 32, cols: 128 }) => {}
            other => panic!("expected an impossible rank, got {other:?}"),
        }
        let zero = LoraSpec { rank: 0, ..spec.clone() };
        assert!(matches!(zero.validate(&tiny()), Err(Error::InvalidConfig(_))));
        let fits = LoraSpec { rank: 32, ..spec };
        assert!(fits.validate(&tiny()).is_ok());
    }

    #[test]
    fn warmup_rises_linearly_then_holds() {
        let config =
            TrainConfig { learning_rate: 1e-3, weight_decay: 0.0, batch_size: 1, sequence_length: 8, steps: 10, seed: 0, warmup_steps: 4 };
        let expected = [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3];
        for (step, expected) in expected.into_iter().enumerate() {
            let rate = config.learning_rate_at(step as u64);
            assert!((rate - expected).abs() < 1e-12, "step {step}: {rate} != {expected}");
        }
    }
}
