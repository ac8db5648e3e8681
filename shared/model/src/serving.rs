//! Serving many LoRA adapters of one base in one forward pass.
//!
//! Burn's own LoRA folds `W + scale · A B` into each adapted weight on every forward pass,
//! which serves one adapter per batch. Here the base stays plain and an [`AdapterBank`] holds
//! every adapter's factors stacked: `A` as `[slots, d_in, rank]` and `scale · B` as
//! `[slots, rank, d_out]` for each (block, target). A batch names one slot per row; each
//! adapted layer gathers its rows' factors and adds `(x A_row) B_row` through two batched
//! matrix products of rank width, so rows of different adapters (and rows of the base alone,
//! slot 0, whose factors are zero) share every dense product of the base.
//!
//! Adapters of different ranks share a bank: smaller ones are padded with zero columns of `A`
//! and zero rows of `B`, which adds nothing. A target an adapter does not adapt is zeros too.

use std::collections::BTreeMap;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::LoraTarget;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::lora::AdapterWeights;
use crate::transformer::{Deltas, Transformer};

/// Stacked factors of every adapter in the bank, per adapted layer.
#[derive(Debug, Clone)]
struct Factors {
    /// `[slots, d_in, rank]`.
    a: Tensor<3>,
    /// `[slots, rank, d_out]`, already multiplied by each adapter's scale.
    b: Tensor<3>,
}

/// The adapters one batch may draw on: slot 0 is the base alone, slot `i + 1` is `adapters[i]`
/// of [`AdapterBank::new`].
#[derive(Debug, Clone)]
pub struct AdapterBank {
    slots: usize,
    factors: BTreeMap<(usize, LoraTarget), Factors>,
}

impl AdapterBank {
    /// Stacks `adapters` for `base` (the plain base: no adapter attached), whose weights
    /// digest is `base_digest`. Every adapter must have been trained on that base.
    pub fn new(base: &Transformer, base_digest: &str, adapters: &[&AdapterWeights]) -> Result<AdapterBank> {
        if base.lora_spec().is_some() {
            return Err(Error::LoraState("an adapter bank stacks onto the plain base, not onto a model with an adapter attached"));
        }
        for adapter in adapters {
            if adapter.base_digest != base_digest {
                return Err(Error::AdapterBaseMismatch { expected: adapter.base_digest.clone(), actual: base_digest.to_owned() });
            }
        }
        let config = base.config();
        let slots = adapters.len() + 1;
        let rank = adapters.iter().map(|adapter| adapter.spec.rank).max().unwrap_or(0);
        let device = base.device();
        let mut factors = BTreeMap::new();
        if rank == 0 {
            return Ok(AdapterBank { slots, factors });
        }
        for layer in 0..config.layers {
            for target in LoraTarget::ALL {
                if !adapters.iter().any(|adapter| adapter.spec.targets.contains(&target)) {
                    continue;
                }
                let [d_in, d_out] = config.target_shape(target);
                let mut a = vec![0.0f32; slots * d_in * rank];
                let mut b = vec![0.0f32; slots * rank * d_out];
                for (index, adapter) in adapters.iter().enumerate() {
                    let slot = index + 1;
                    let Some(pair) = adapter.matrices.iter().find(|pair| pair.layer == layer && pair.target == target) else { continue };
                    let own_rank = pair.a.cols;
                    if (pair.a.rows, pair.b.rows, pair.b.cols) != (d_in, own_rank, d_out) {
                        return Err(Error::Corrupt {
                            artifact: "adapter",
                            reason: format!("layer {layer} {target:?} has the wrong shape for this base"),
                        });
                    }
                    for row in 0..d_in {
                        let into = slot * d_in * rank + row * rank;
                        a[into..into + own_rank].copy_from_slice(&pair.a.values[row * own_rank..(row + 1) * own_rank]);
                    }
                    for row in 0..own_rank {
                        let into = slot * rank * d_out + row * d_out;
                        for (value, source) in b[into..into + d_out].iter_mut().zip(&pair.b.values[row * d_out..(row + 1) * d_out]) {
                            *value = source * adapter.scale;
                        }
                    }
                }
                let a = Tensor::<3>::from_data(TensorData::new(a, [slots, d_in, rank]), &device);
                let b = Tensor::<3>::from_data(TensorData::new(b, [slots, rank, d_out]), &device);
                factors.insert((layer, target), Factors { a, b });
            }
        }
        Ok(AdapterBank { slots, factors })
    }

    /// Slots in the bank, the base's included.
    pub fn slots(&self) -> usize {
        self.slots
    }
}

/// Each batch row's adapter factors, gathered from an [`AdapterBank`] for one list of slots.
///
/// Gathering copies every row's factors, so a decoding loop keeps one while its rows stay the
/// same rather than gathering again for every token.
#[derive(Debug, Clone)]
pub struct RowAdapters {
    slots: Vec<usize>,
    /// Per adapted layer: `A` as `[rows, d_in, rank]`, `scale · B` as `[rows, rank, d_out]`.
    factors: BTreeMap<(usize, LoraTarget), Factors>,
}

impl AdapterBank {
    /// The factors of the adapter in `slots[i]` for row `i` (0: the base alone).
    pub fn gather(&self, slots: &[usize], device: &Device) -> Result<RowAdapters> {
        if slots.is_empty() {
            return Err(Error::MalformedBatch("no rows".into()));
        }
        if let Some(&slot) = slots.iter().find(|&&slot| slot >= self.slots) {
            return Err(Error::MalformedBatch(format!("slot {slot} is not in a bank of {}", self.slots)));
        }
        let indices: Vec<i64> = slots.iter().map(|&slot| slot as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(indices, [slots.len()]), device);
        let factors = self
            .factors
            .iter()
            .map(|(&key, factors)| {
                (key, Factors { a: factors.a.clone().select(0, rows.clone()), b: factors.b.clone().select(0, rows.clone()) })
            })
            .collect();
        Ok(RowAdapters { slots: slots.to_vec(), factors })
    }
}

impl RowAdapters {
    /// The bank slot of each row.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }

    fn check_rows(&self, rows: usize) -> Result<&Self> {
        if rows != self.slots.len() {
            return Err(Error::MalformedBatch(format!("{} slots for {rows} rows", self.slots.len())));
        }
        Ok(self)
    }
}

impl Deltas for RowAdapters {
    fn delta(&self, layer: usize, target: LoraTarget, input: &Tensor<3>) -> Option<Tensor<3>> {
        let factors = self.factors.get(&(layer, target))?;
        Some(input.clone().matmul(factors.a.clone()).matmul(factors.b.clone()))
    }
}

impl Transformer {
    /// Next-token logits `[batch, time, vocab]` where row `i` runs with the adapter in
    /// `slots[i]` of `bank` (0: the base alone).
    pub fn forward_with_adapters(&self, tokens: Tensor<2, Int>, bank: &AdapterBank, slots: &[usize]) -> Result<Tensor<3>> {
        let [batch, _] = tokens.dims();
        let adapters = bank.gather(slots, &self.device())?;
        Ok(self.forward_with(tokens, adapters.check_rows(batch)?))
    }

    /// [`prefill`](Self::prefill) where each row runs with its adapter in `adapters`.
    pub fn prefill_with_adapters(&self, rows: &[&[u32]], adapters: &RowAdapters) -> Result<(Vec<f32>, KvCache)> {
        self.prefill_with(rows, adapters.check_rows(rows.len())?)
    }

    /// [`decode`](Self::decode) where each row runs with its adapter in `adapters` (the one its
    /// cache row was prefilled with).
    pub fn decode_with_adapters(&self, tokens: &[u32], cache: &mut KvCache, adapters: &RowAdapters) -> Result<Vec<f32>> {
        self.decode_with(tokens, cache, adapters.check_rows(tokens.len())?)
    }
}
