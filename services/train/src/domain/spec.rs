//! A training job's specification: what the model builder asks for over HTTP
//! ([`JobRequest`]), the validated [`JobSpec`] the service works with, and its protobuf form in
//! `TrainingJobRequested`.
//!
//! Everything that decides a run's weights travels in the event, at the precision the event
//! holds (learning rates in millionths, LoRA alpha in thousandths): the API rounds first, so
//! the job that runs is exactly the one the log records.

use model::{LoraSpec, LoraTarget, ModelConfig, TrainConfig};
use provenant_events::proto::training::v1 as proto;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::configuration::Limits;

/// Why a spec cannot run; `code` is the stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub code: &'static str,
    pub message: String,
}

impl SpecError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SpecError {
        SpecError { code, message: message.into() }
    }
}

/// A model shape to train from scratch (byte-level tokenizer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    pub layers: u32,
    pub heads: u32,
    pub width: u32,
    pub context_length: u32,
}

/// A sealed snapshot, named by id and by the Merkle root the builder expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub snapshot_id: String,
    /// Hex SHA-256 root from `SnapshotSealed`: a job never trains on "latest".
    pub merkle_root: String,
}

/// Full training, or a LoRA adapter on a frozen registered base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    Full,
    Lora {
        rank: u32,
        alpha: f64,
        /// Linear layers of every block: attention_query, attention_key, attention_value,
        /// attention_output, mlp_up, mlp_down.
        #[schema(value_type = Vec<String>)]
        targets: Vec<LoraTarget>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    pub steps: u32,
    pub batch_size: u32,
    pub sequence_length: u32,
    /// Peak AdamW learning rate (kept to millionths).
    pub learning_rate: f64,
    #[serde(default)]
    pub warmup_steps: u32,
    /// Kept to millionths.
    #[serde(default)]
    pub weight_decay: f64,
    /// Steps between checkpoints (a job resumes from its last one); 0 for none.
    #[serde(default)]
    pub checkpoint_every: u32,
}

/// What a model builder submits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub name: String,
    /// Train on top of this registered base model (required for LoRA).
    #[serde(default)]
    pub base_model_id: Option<String>,
    /// Train a new model of this shape from scratch (full training only).
    #[serde(default)]
    pub architecture: Option<Architecture>,
    pub snapshots: Vec<Pin>,
    pub method: Method,
    pub hyperparameters: Hyperparameters,
    #[serde(default)]
    pub seed: u64,
    /// Share of duplicate clusters held out for perplexity, in [0, 0.5].
    #[serde(default = "default_held_out_fraction")]
    pub held_out_fraction: f64,
}

fn default_held_out_fraction() -> f64 {
    0.1
}

/// Where the model's starting weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    Scratch(ModelConfig),
    Registered { model_id: String },
}

/// A job spec that parsed: every number in range, at the precision of the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub base: Base,
    pub snapshots: Vec<Pin>,
    pub lora: Option<LoraSpec>,
    pub train: TrainConfig,
    pub checkpoint_every: u64,
    pub held_out_ppm: u32,
}

const MICRO: f64 = 1_000_000.0;
const MILLI: f64 = 1_000.0;

fn to_micro(value: f64, what: &str) -> Result<u32, SpecError> {
    let scaled = (value * MICRO).round();
    if !value.is_finite() || !(0.0..=f64::from(u32::MAX)).contains(&scaled) {
        return Err(SpecError::new("job.invalid_hyperparameters", format!("{what} {value} is out of range")));
    }
    Ok(scaled as u32)
}

fn is_hex_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

impl JobRequest {
    /// Checks everything that does not need the registry and rounds to the event's precision.
    /// A registered base's shape is checked later, with [`JobSpec::check_against`].
    pub fn parse(self, limits: &Limits) -> Result<JobSpec, SpecError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.len() > 128 {
            return Err(SpecError::new("job.invalid_name", "name must be 1 to 128 characters"));
        }
        let base = match (self.base_model_id, self.architecture) {
            (Some(model_id), None) => {
                provenant_runtime::identity::parse_principal_id(&model_id)
                    .map_err(|reason| SpecError::new("job.invalid_base", format!("base_model_id: {reason}")))?;
                Base::Registered { model_id }
            }
            (None, Some(shape)) => {
                let too_large = shape.layers as usize > limits.max_layers
                    || shape.width as usize > limits.max_width
                    || shape.context_length as usize > limits.max_context_length;
                if too_large {
                    return Err(SpecError::new("job.too_large", "the architecture exceeds this service's limits"));
                }
                let config = ModelConfig::new(
                    model::tokenizer::BYTE_VOCAB_SIZE,
                    shape.layers as usize,
                    shape.heads as usize,
                    shape.width as usize,
                    shape.context_length as usize,
                );
                config.validate().map_err(|error| SpecError::new("job.invalid_architecture", error.to_string()))?;
                Base::Scratch(config)
            }
            _ => return Err(SpecError::new("job.invalid_base", "give exactly one of base_model_id and architecture")),
        };
        if self.snapshots.is_empty() {
            return Err(SpecError::new("job.no_snapshots", "pin at least one sealed snapshot"));
        }
        if self.snapshots.len() > limits.max_snapshots {
            return Err(SpecError::new("job.too_large", format!("at most {} snapshots", limits.max_snapshots)));
        }
        for (index, pin) in self.snapshots.iter().enumerate() {
            if pin.snapshot_id.is_empty() || pin.snapshot_id.len() > 128 || !is_hex_sha256(&pin.merkle_root) {
                return Err(SpecError::new("job.invalid_pin", format!("snapshot {index}: an id and a lowercase hex SHA-256 root")));
            }
            if self.snapshots[..index].iter().any(|earlier| earlier.snapshot_id == pin.snapshot_id) {
                return Err(SpecError::new("job.invalid_pin", format!("snapshot {} is pinned twice", pin.snapshot_id)));
            }
        }
        let lora = match self.method {
            Method::Full => None,
            Method::Lora { rank, alpha, targets } => {
                if matches!(base, Base::Scratch(_)) {
                    return Err(SpecError::new("job.lora_needs_base", "a LoRA adapter trains on a registered base model"));
                }
                let alpha_milli = (alpha * MILLI).round();
                if !alpha.is_finite() || !(1.0..=f64::from(u32::MAX)).contains(&alpha_milli) {
                    return Err(SpecError::new("job.invalid_lora", format!("alpha {alpha} is out of range")));
                }
                let spec = LoraSpec { rank: rank as usize, alpha: alpha_milli / MILLI, targets };
                if spec.rank == 0 || spec.targets.is_empty() {
                    return Err(SpecError::new("job.invalid_lora", "rank must be at least 1 and targets not empty"));
                }
                Some(spec)
            }
        };
        let hyper = self.hyperparameters;
        if u64::from(hyper.steps) > limits.max_steps || hyper.batch_size as usize > limits.max_batch_size {
            return Err(SpecError::new("job.too_large", "steps or batch_size exceed this service's limits"));
        }
        if !(0.0..=0.5).contains(&self.held_out_fraction) {
            return Err(SpecError::new("job.invalid_held_out", "held_out_fraction must be within [0, 0.5]"));
        }
        let train = TrainConfig {
            learning_rate: f64::from(to_micro(hyper.learning_rate, "learning_rate")?) / MICRO,
            weight_decay: f64::from(to_micro(hyper.weight_decay, "weight_decay")?) / MICRO,
            batch_size: hyper.batch_size as usize,
            sequence_length: hyper.sequence_length as usize,
            steps: u64::from(hyper.steps),
            seed: self.seed,
            warmup_steps: u64::from(hyper.warmup_steps),
        };
        let spec = JobSpec {
            name,
            base,
            snapshots: self.snapshots,
            lora,
            train,
            checkpoint_every: u64::from(hyper.checkpoint_every),
            held_out_ppm: (self.held_out_fraction * MICRO).round() as u32,
        };
        if let Base::Scratch(config) = &spec.base {
            spec.check_against(config)?;
        }
        Ok(spec)
    }
}

impl JobSpec {
    /// Refuses a spec that cannot run on a model of shape `model`: an impossible rank, a
    /// sequence longer than the context, a zero batch.
    pub fn check_against(&self, model: &ModelConfig) -> Result<(), SpecError> {
        if let Some(lora) = &self.lora {
            lora.validate(model).map_err(|error| match error {
                model::Error::ImpossibleRank { .. } => SpecError::new("job.impossible_rank", error.to_string()),
                other => SpecError::new("job.invalid_lora", other.to_string()),
            })?;
        }
        self.train.validate(model).map_err(|error| SpecError::new("job.invalid_hyperparameters", error.to_string()))
    }

    pub fn to_proto(&self) -> proto::TrainingJobSpec {
        let (base_model_id, architecture) = match &self.base {
            Base::Registered { model_id } => (model_id.clone(), None),
            Base::Scratch(config) => (String::new(), Some(architecture_to_proto(config))),
        };
        let method = match &self.lora {
            None => proto::training_job_spec::Method::Full(proto::FullFineTune {}),
            Some(lora) => proto::training_job_spec::Method::Lora(lora_to_proto(lora)),
        };
        proto::TrainingJobSpec {
            name: self.name.clone(),
            base_model_id,
            snapshots: self
                .snapshots
                .iter()
                .map(|pin| proto::SnapshotPin {
                    snapshot_id: pin.snapshot_id.clone(),
                    datanet_id: String::new(),
                    merkle_root: pin.merkle_root.clone(),
                })
                .collect(),
            architecture,
            method: Some(method),
            hyperparameters: Some(proto::Hyperparameters {
                steps: u32::try_from(self.train.steps).unwrap_or(u32::MAX),
                batch_size: self.train.batch_size as u32,
                sequence_length: self.train.sequence_length as u32,
                learning_rate_micro: (self.train.learning_rate * MICRO).round() as u32,
                warmup_steps: u32::try_from(self.train.warmup_steps).unwrap_or(u32::MAX),
                weight_decay_micro: (self.train.weight_decay * MICRO).round() as u32,
                checkpoint_every: u32::try_from(self.checkpoint_every).unwrap_or(u32::MAX),
            }),
            seed: self.train.seed,
            held_out_ppm: self.held_out_ppm,
        }
    }

    /// The spec of a `TrainingJobRequested`, whoever published it; refused when the event
    /// names something impossible.
    pub fn from_proto(spec: &proto::TrainingJobSpec) -> Result<JobSpec, SpecError> {
        let invalid = |message: &str| SpecError::new("job.invalid_event", message.to_owned());
        let hyper = spec.hyperparameters.as_ref().ok_or_else(|| invalid("no hyperparameters"))?;
        let base = match (&spec.architecture, spec.base_model_id.is_empty()) {
            (Some(shape), true) => {
                let config = ModelConfig::new(
                    shape.vocab_size as usize,
                    shape.layers as usize,
                    shape.heads as usize,
                    shape.width as usize,
                    shape.context_length as usize,
                );
                config.validate().map_err(|error| SpecError::new("job.invalid_architecture", error.to_string()))?;
                Base::Scratch(config)
            }
            (None, false) => Base::Registered { model_id: spec.base_model_id.clone() },
            _ => return Err(invalid("exactly one of base_model_id and architecture")),
        };
        let lora = match &spec.method {
            Some(proto::training_job_spec::Method::Full(_)) => None,
            Some(proto::training_job_spec::Method::Lora(lora)) => Some(lora_from_proto(lora)?),
            None => return Err(invalid("no method")),
        };
        Ok(JobSpec {
            name: spec.name.clone(),
            base,
            snapshots: spec
                .snapshots
                .iter()
                .map(|pin| Pin { snapshot_id: pin.snapshot_id.clone(), merkle_root: pin.merkle_root.clone() })
                .collect(),
            lora,
            train: TrainConfig {
                learning_rate: f64::from(hyper.learning_rate_micro) / MICRO,
                weight_decay: f64::from(hyper.weight_decay_micro) / MICRO,
                batch_size: hyper.batch_size as usize,
                sequence_length: hyper.sequence_length as usize,
                steps: u64::from(hyper.steps),
                seed: spec.seed,
                warmup_steps: u64::from(hyper.warmup_steps),
            },
            checkpoint_every: u64::from(hyper.checkpoint_every),
            held_out_ppm: spec.held_out_ppm,
        })
    }

    /// The spec as the API shows it (the request's shape, after rounding).
    pub fn to_request(&self) -> JobRequest {
        let (base_model_id, architecture) = match &self.base {
            Base::Registered { model_id } => (Some(model_id.clone()), None),
            Base::Scratch(config) => (
                None,
                Some(Architecture {
                    layers: config.layers as u32,
                    heads: config.heads as u32,
                    width: config.width as u32,
                    context_length: config.context_length as u32,
                }),
            ),
        };
        JobRequest {
            name: self.name.clone(),
            base_model_id,
            architecture,
            snapshots: self.snapshots.clone(),
            method: match &self.lora {
                None => Method::Full,
                Some(lora) => Method::Lora { rank: lora.rank as u32, alpha: lora.alpha, targets: lora.targets.clone() },
            },
            hyperparameters: Hyperparameters {
                steps: u32::try_from(self.train.steps).unwrap_or(u32::MAX),
                batch_size: self.train.batch_size as u32,
                sequence_length: self.train.sequence_length as u32,
                learning_rate: self.train.learning_rate,
                warmup_steps: u32::try_from(self.train.warmup_steps).unwrap_or(u32::MAX),
                weight_decay: self.train.weight_decay,
                checkpoint_every: u32::try_from(self.checkpoint_every).unwrap_or(u32::MAX),
            },
            seed: self.train.seed,
            held_out_fraction: f64::from(self.held_out_ppm) / MICRO,
        }
    }
}

pub fn architecture_to_proto(config: &ModelConfig) -> proto::ModelArchitecture {
    proto::ModelArchitecture {
        vocab_size: config.vocab_size as u32,
        layers: config.layers as u32,
        heads: config.heads as u32,
        width: config.width as u32,
        context_length: config.context_length as u32,
        tokenizer: "byte_level".into(),
    }
}

fn target_name(target: LoraTarget) -> String {
    serde_json::to_value(target).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

pub fn lora_to_proto(lora: &LoraSpec) -> proto::LoraSpec {
    proto::LoraSpec {
        rank: lora.rank as u32,
        alpha_milli: (lora.alpha * MILLI).round() as u32,
        targets: lora.targets.iter().copied().map(target_name).collect(),
    }
}

fn lora_from_proto(lora: &proto::LoraSpec) -> Result<LoraSpec, SpecError> {
    let targets = lora
        .targets
        .iter()
        .map(|name| {
            serde_json::from_value(serde_json::Value::String(name.clone()))
                .map_err(|_| SpecError::new("job.invalid_lora", format!("unknown LoRA target {name:?}")))
        })
        .collect::<Result<Vec<LoraTarget>, _>>()?;
    Ok(LoraSpec { rank: lora.rank as usize, alpha: f64::from(lora.alpha_milli) / MILLI, targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_steps: 1000, max_layers: 8, max_width: 512, max_context_length: 512, max_batch_size: 64, max_snapshots: 4 }
    }

    fn request() -> JobRequest {
        serde_json::from_value(serde_json::json!({
            "name": "tiny",
            "architecture": {"layers": 1, "heads": 2, "width": 16, "context_length": 16},
            "snapshots": [{"snapshot_id": "d-1", "merkle_root": "ab".repeat(32)}],
            "method": {"type": "full"},
            "hyperparameters": {"steps": 10, "batch_size": 2, "sequence_length": 16, "learning_rate": 0.0030000004},
            "seed": 7
        }))
        .expect("a valid request")
    }

    #[test]
    fn a_spec_survives_its_event_exactly_after_rounding() {
        let spec = request().parse(&limits()).expect("valid");
        assert_eq!(spec.train.learning_rate, 0.003, "rounded to the event's millionths");
        assert_eq!(spec.held_out_ppm, 100_000);
        assert_eq!(JobSpec::from_proto(&spec.to_proto()), Ok(spec.clone()));
        assert_eq!(spec.to_request().parse(&limits()), Ok(spec));
    }

    #[test]
    fn impossible_specs_get_stable_codes() {
        let code = |edit: &dyn Fn(&mut JobRequest)| {
            let mut request = request();
            edit(&mut request);
            request.parse(&limits()).expect_err("refused").code
        };
        assert_eq!(code(&|request| request.snapshots.clear()), "job.no_snapshots");
        assert_eq!(code(&|request| request.base_model_id = Some("m".into())), "job.invalid_base");
        assert_eq!(code(&|request| request.hyperparameters.sequence_length = 17), "job.invalid_hyperparameters");
        assert_eq!(code(&|request| request.hyperparameters.steps = 0), "job.invalid_hyperparameters");
        assert_eq!(code(&|request| request.hyperparameters.steps = 5000), "job.too_large");
        assert_eq!(code(&|request| request.held_out_fraction = 0.9), "job.invalid_held_out");
        assert_eq!(code(&|request| request.snapshots[0].merkle_root = "xyz".into()), "job.invalid_pin");
        assert_eq!(
            code(&|request| request.method = Method::Lora { rank: 4, alpha: 8.0, targets: vec![LoraTarget::AttentionQuery] }),
            "job.lora_needs_base"
        );
        let mut lora = request();
        lora.architecture = None;
        lora.base_model_id = Some("base-1".into());
        lora.method = Method::Lora { rank: 64, alpha: 8.0, targets: vec![LoraTarget::AttentionQuery] };
        let spec = lora.parse(&limits()).expect("the base's shape is checked later");
        let base = ModelConfig::new(259, 1, 2, 16, 16);
        assert_eq!(spec.check_against(&base).expect_err("rank 64 on a 16x16 weight").code, "job.impossible_rank");
    }
}
