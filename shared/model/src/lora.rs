//! LoRA adapters on the linear layers of a [`Transformer`], with Burn 0.22's built-in
//! reparameterisation: the adapted weight reads `base + scale · (A @ B)`, with the base frozen.
//!
//! An adapter travels alone (`adapter_to_bytes`): a small header naming its [`LoraSpec`] and
//! the digest of the base weights it was trained on, then a burnpack of the factors. Serving
//! code that batches many adapters reads the factors as plain arrays with [`AdapterWeights`].

use burn::module::{Lora, Module, ModuleMapper, Param, ParamGroup};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Coverage, LORA_PATH};
use crate::config::{LoraSpec, LoraTarget};
use crate::container;
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::transformer::Transformer;

const ADAPTER_MAGIC: &[u8; 4] = b"PVLA";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdapterHeader {
    spec: LoraSpec,
    base_digest: String,
}

impl Transformer {
    /// Attach fresh LoRA adapters to the spec's targets in every block and freeze everything
    /// else (embeddings and LayerNorms included).
    ///
    /// `A` starts as N(0, 1/rank²) drawn from the seed, `B` as zeros, so the adapted model
    /// computes exactly what the base does until the first update.
    pub fn with_lora(self, spec: &LoraSpec, seed: u64) -> Result<Self> {
        spec.validate(self.config())?;
        if self.lora.is_some() {
            return Err(Error::LoraState("the model already carries a LoRA adapter"));
        }
        let targets: Vec<String> = spec.targets.iter().map(|target| format!("{}.weight", target.module_path())).collect();
        let lora = Lora::new(spec.rank, spec.alpha).set_param_group(ParamGroup::from_any_predicates(targets));
        // Burn draws `A` from the backend's process-wide RNG; redraw it from the seed.
        let mut model = self.apply_lora(lora).map(&mut SeededFactors { path: Vec::new(), seed, std: 1.0 / spec.rank as f64 });
        model.lora = Some(spec.clone());
        Ok(model.with_canonical_ids())
    }

    /// The adapter alone: its spec, the digest of the base it adapts, and its factors.
    pub fn adapter_to_bytes(&self) -> Result<Vec<u8>> {
        let spec = self.lora.clone().ok_or(Error::LoraState("the model carries no LoRA adapter"))?;
        let factors = self.clone().into_record_group(ParamGroup::from_predicate(LORA_PATH)).into_bytes()?.to_vec();
        let header = AdapterHeader { spec, base_digest: self.base_weights_digest()? };
        container::write(ADAPTER_MAGIC, &header, &[&factors])
    }

    /// This base model with the adapter of [`adapter_to_bytes`](Self::adapter_to_bytes).
    ///
    /// Refused when the adapter was trained on other base weights.
    pub fn load_adapter(self, bytes: &[u8]) -> Result<Self> {
        // Parsing checks that every factor is a complete f32 pair; a partial load would
        // otherwise leave a missing factor at its fresh value without a word.
        let weights = AdapterWeights::from_bytes(bytes)?;
        let expected = self.config().layers * weights.spec.targets.len();
        if weights.matrices.len() != expected {
            let reason = format!("{} adapted layers, the spec implies {expected}", weights.matrices.len());
            return Err(Error::Corrupt { artifact: "adapter", reason });
        }
        let actual = self.base_weights_digest()?;
        if actual != weights.base_digest {
            return Err(Error::AdapterBaseMismatch { expected: weights.base_digest, actual });
        }
        let (_, factors) = read_adapter(bytes)?;
        self.with_lora(&weights.spec, 0)?.load_weights(factors, Coverage::Part)
    }

    /// Fold the adapter into plain weights: `W ← W + scale · A B` for every adapted layer.
    ///
    /// The result has no adapter and no autodiff (it is for inference; `.train()` it on an
    /// autodiff device to train further). A model without an adapter is returned as it is,
    /// minus autodiff.
    pub fn merge_lora(self) -> Self {
        let mut merged = self.valid().materialize();
        merged.lora = None;
        merged.with_canonical_ids()
    }

    /// The adapter's factors as plain arrays.
    pub fn adapter_weights(&self) -> Result<AdapterWeights> {
        AdapterWeights::from_bytes(&self.adapter_to_bytes()?)
    }
}

fn read_adapter(bytes: &[u8]) -> Result<(AdapterHeader, &[u8])> {
    let (header, sections): (AdapterHeader, _) = container::read("adapter", ADAPTER_MAGIC, bytes)?;
    let [factors] = sections[..] else {
        return Err(Error::Corrupt { artifact: "adapter", reason: format!("expected 1 section, found {}", sections.len()) });
    };
    Ok((header, factors))
}

/// Redraws every LoRA `A` factor from a stream keyed by the seed and the factor's path.
struct SeededFactors {
    path: Vec<String>,
    seed: u64,
    std: f64,
}

impl ModuleMapper for SeededFactors {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        if !path.ends_with(".lora.a") {
            return param;
        }
        let shape = param.lazy_shape();
        let values = SplitMix64::for_stream(self.seed, &format!("lora/{path}")).normal_vec(shape.num_elements(), self.std);
        param.map(|current| {
            let fresh = Tensor::<D>::from_data(TensorData::new(values, shape), &current.device());
            if current.is_require_grad() { fresh.require_grad() } else { fresh }
        })
    }
}

/// A row-major matrix of `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

/// The factors of one adapted linear layer.
///
/// The layer computes `y = x W + b` with `W` of shape `[d_in, d_out]`; the adapter adds
/// `scale · (x A) B` with `A` of shape `[d_in, rank]` and `B` of shape `[rank, d_out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterMatrices {
    /// Block index.
    pub layer: usize,
    pub target: LoraTarget,
    pub a: Matrix,
    pub b: Matrix,
}

/// A LoRA adapter as plain numbers, for serving code that builds its own low-rank path.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterWeights {
    pub spec: LoraSpec,
    /// Digest of the base weights the adapter was trained on.
    pub base_digest: String,
    /// `alpha / rank`.
    pub scale: f32,
    /// Sorted by layer, then target.
    pub matrices: Vec<AdapterMatrices>,
}

impl AdapterWeights {
    /// Read the factors of an adapter straight from its bytes, without building a model.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt { artifact: "adapter", reason };
        let (header, factors) = read_adapter(bytes)?;
        let reader = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(factors.to_vec()))
            .map_err(|error| corrupt(error.to_string()))?;
        let mut halves: std::collections::BTreeMap<(usize, LoraTarget), (Option<Matrix>, Option<Matrix>)> = Default::default();
        for tensor in reader.into_tensors().map_err(|error| corrupt(error.to_string()))? {
            let (layer, target, factor) =
                parse_factor_path(&tensor.name).ok_or_else(|| corrupt(format!("unexpected tensor {}", tensor.name)))?;
            let &[rows, cols] = tensor.shape.as_slice() else {
                return Err(corrupt(format!("{} is not a matrix", tensor.name)));
            };
            if tensor.dtype != burn_pack::DType::F32 {
                return Err(corrupt(format!("{} is {:?}, not f32", tensor.name, tensor.dtype)));
            }
            let raw = tensor.to_bytes().map_err(|error| corrupt(error.to_string()))?;
            let values: Vec<f32> = raw.chunks_exact(4).map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])).collect();
            if values.len() != rows * cols {
                return Err(corrupt(format!("{} holds {} values for {rows}x{cols}", tensor.name, values.len())));
            }
            let entry = halves.entry((layer, target)).or_default();
            let matrix = Some(Matrix { rows, cols, values });
            if factor == 'a' { entry.0 = matrix } else { entry.1 = matrix }
        }
        let matrices = halves
            .into_iter()
            .map(|((layer, target), pair)| match pair {
                (Some(a), Some(b)) if a.cols == header.spec.rank && b.rows == header.spec.rank && header.spec.targets.contains(&target) => {
                    Ok(AdapterMatrices { layer, target, a, b })
                }
                (Some(_), Some(_)) => Err(corrupt(format!("layer {layer} {target:?} does not match the spec"))),
                _ => Err(corrupt(format!("layer {layer} {target:?} lacks a factor"))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { scale: header.spec.scale() as f32, spec: header.spec, base_digest: header.base_digest, matrices })
    }
}

/// `blocks.<layer>.<target path>.weight.lora.<a|b>` → (layer, target, factor).
fn parse_factor_path(path: &str) -> Option<(usize, LoraTarget, char)> {
    let rest = path.strip_prefix("blocks.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, factor) = rest.split_once(".weight.lora.")?;
    let factor = match factor {
        "a" => 'a',
        "b" => 'b',
        _ => return None,
    };
    Some((layer.parse().ok()?, LoraTarget::from_module_path(module)?, factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_paths_parse_to_layer_target_and_factor() {
        assert_eq!(parse_factor_path("blocks.3.attention.value.weight.lora.b"), Some((3, LoraTarget::AttentionValue, 'b')));
        assert_eq!(parse_factor_path("blocks.0.mlp.up.weight.lora.a"), Some((0, LoraTarget::MlpUp, 'a')));
        assert_eq!(parse_factor_path("lm_head.weight.lora.a"), None);
        assert_eq!(parse_factor_path("blocks.0.mlp.up.bias"), None);
    }
}
