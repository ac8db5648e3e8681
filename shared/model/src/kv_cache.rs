//! Incremental decoding: a prompt is run once (a *prefill*) and its keys and values are kept,
//! so that each further token costs one position's work (a *decoding step*) instead of a pass
//! over the whole window.
//!
//! Many sequences share one [`KvCache`], a row each, whatever their lengths: every row writes
//! its next position to the same slot, so a step stores a whole batch's keys with one write
//! per block. That works because positions are learned embeddings added to the input, not
//! properties of a slot: attention only needs to know *which* slots a row may see. Row `r`'s
//! positions fill the slots just before the shared write slot, and the slots before them
//! (left over from a longer row, or from a row that has left) are hidden from it.
//!
//! A sequence that outgrows the context leaves the cache: its window then slides, every
//! position shifts, and it must be prefilled again (see [`Transformer::decode`]).

use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::tokenizer::PAD;
use crate::transformer::{Attend, Deltas, KeysValues, NoDeltas, Transformer};

/// The keys and values of every position of every row, per block.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per block, `[rows, heads, capacity, head_width]`.
    blocks: Vec<KeysValues>,
    /// Positions held per row; row `r`'s are the slots `next - lengths[r] .. next`.
    lengths: Vec<usize>,
    /// The slot every row's next position is written to.
    next: usize,
}

/// Slots added when a cache is full, at least (so that short rows do not grow it every step).
const MIN_GROWTH: usize = 16;

impl KvCache {
    /// Rows in the cache.
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// Positions held per row: the position the row's next token takes.
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// The cache of the rows where `keep` is true, in order; `None` when none is.
    ///
    /// # Panics
    ///
    /// If `keep` does not have one entry per row.
    pub fn retain(self, keep: &[bool]) -> Option<KvCache> {
        assert_eq!(keep.len(), self.rows(), "one keep flag per row");
        if keep.iter().all(|&kept| kept) {
            return Some(self);
        }
        let kept: Vec<i64> = (0..self.rows()).filter(|&row| keep[row]).map(|row| row as i64).collect();
        if kept.is_empty() {
            return None;
        }
        let device = self.blocks[0].keys.device();
        let indices = Tensor::<1, Int>::from_data(TensorData::new(kept.clone(), [kept.len()]), &device);
        let blocks = self
            .blocks
            .into_iter()
            .map(|block| KeysValues { keys: block.keys.select(0, indices.clone()), values: block.values.select(0, indices.clone()) })
            .collect();
        let lengths = kept.iter().map(|&row| self.lengths[row as usize]).collect();
        Some(KvCache { blocks, lengths, next: self.next })
    }

    /// This cache's rows, then `other`'s.
    pub fn append(self, other: KvCache) -> KvCache {
        // Align the write slots, then give both the same spare room after them.
        let next = self.next.max(other.next);
        let spare = (self.capacity() - self.next).max(other.capacity() - other.next);
        let (my_shift, their_shift) = (next - self.next, next - other.next);
        let (mine, theirs) = (self.padded(my_shift, spare), other.padded(their_shift, spare));
        let blocks = mine
            .blocks
            .into_iter()
            .zip(theirs.blocks)
            .map(|(mine, theirs)| KeysValues {
                keys: Tensor::cat(vec![mine.keys, theirs.keys], 0),
                values: Tensor::cat(vec![mine.values, theirs.values], 0),
            })
            .collect();
        KvCache { blocks, lengths: [mine.lengths, theirs.lengths].concat(), next }
    }

    fn capacity(&self) -> usize {
        self.blocks[0].keys.dims()[2]
    }

    /// With `before` empty slots added at the front and room for `spare` more after `next`.
    fn padded(self, before: usize, spare: usize) -> KvCache {
        let after = spare - (self.capacity() - self.next);
        if before == 0 && after == 0 {
            return self;
        }
        let pad = |tensor: Tensor<4>| {
            let [rows, heads, _, width] = tensor.dims();
            let device = tensor.device();
            let mut parts = Vec::with_capacity(3);
            if before > 0 {
                parts.push(Tensor::zeros([rows, heads, before, width], &device));
            }
            parts.push(tensor);
            if after > 0 {
                parts.push(Tensor::zeros([rows, heads, after, width], &device));
            }
            Tensor::cat(parts, 2)
        };
        let blocks = self.blocks.into_iter().map(|block| KeysValues { keys: pad(block.keys), values: pad(block.values) }).collect();
        KvCache { blocks, lengths: self.lengths, next: self.next + before }
    }

    /// Makes `next` a free slot: drops the slots no row sees any more, and grows the cache
    /// when the rows' positions fill more than half of it (so a copy happens every so many steps,
    /// not every step).
    fn reserve_slot(&mut self) {
        let capacity = self.capacity();
        if self.next < capacity {
            return;
        }
        let used = self.lengths.iter().copied().max().unwrap_or(0);
        let start = self.next - used;
        let spare = if 2 * used <= capacity { capacity - used } else { used.max(MIN_GROWTH) };
        for block in &mut self.blocks {
            let keep = |tensor: Tensor<4>| {
                let [rows, heads, _, width] = tensor.dims();
                let device = tensor.device();
                let kept = tensor.slice([0..rows, 0..heads, start..start + used, 0..width]);
                Tensor::cat(vec![kept, Tensor::zeros([rows, heads, spare, width], &device)], 2)
            };
            block.keys = keep(block.keys.clone());
            block.values = keep(block.values.clone());
        }
        self.next = used;
    }

    /// `[rows, 1, 1, capacity]`: true at the slots a row must not see in the coming step (those
    /// before its positions, and those after the write slot).
    fn hidden_slots(&self) -> Tensor<4, Bool> {
        let capacity = self.capacity();
        let mut hidden = Vec::with_capacity(self.rows() * capacity);
        for &length in &self.lengths {
            let first = self.next - length;
            hidden.extend((0..capacity).map(|slot| slot < first || slot > self.next));
        }
        Tensor::from_data(TensorData::new(hidden, [self.rows(), 1, 1, capacity]), &self.blocks[0].keys.device())
    }
}

impl Transformer {
    /// Runs each of `rows` (token windows of any lengths up to the context) and returns the
    /// next-token logits after each row's last token, row-major `[rows, vocab]`, and the cache
    /// to decode further from.
    pub fn prefill(&self, rows: &[&[u32]]) -> Result<(Vec<f32>, KvCache)> {
        self.prefill_with(rows, &NoDeltas)
    }

    /// Feeds `tokens[r]` to row `r` of `cache` at its next position and returns the next-token
    /// logits, row-major `[rows, vocab]`. The cache takes the new positions.
    ///
    /// A row whose next position would be past the context cannot be decoded (its window has
    /// to slide, which moves every position): [`Error::MalformedBatch`]; prefill its window
    /// instead.
    pub fn decode(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.decode_with(tokens, cache, &NoDeltas)
    }

    pub(crate) fn prefill_with(&self, rows: &[&[u32]], deltas: &dyn Deltas) -> Result<(Vec<f32>, KvCache)> {
        let config = self.config();
        let lengths: Vec<usize> = rows.iter().map(|row| row.len()).collect();
        let longest = lengths.iter().copied().max().ok_or_else(|| Error::MalformedBatch("no rows".into()))?;
        if lengths.contains(&0) || longest > config.context_length {
            return Err(Error::MalformedBatch(format!("windows must hold 1 to {} tokens", config.context_length)));
        }
        // Right-padded: causal attention keeps the padding out of every real position.
        let padded: Vec<Vec<u32>> =
            rows.iter().map(|row| row.iter().copied().chain(std::iter::repeat_n(PAD, longest - row.len())).collect()).collect();
        let tokens = crate::token_batch(&padded.iter().map(Vec::as_slice).collect::<Vec<_>>(), config.vocab_size, &self.device())?;
        let positions = Tensor::<1, Int>::arange(0..longest as i64, &self.device()).reshape([1, longest]);
        let mut attend = Attend::Recording(Vec::with_capacity(config.layers));
        let logits = host_logits(self.run(tokens, positions, deltas, &mut attend))?;
        let Attend::Recording(recorded) = attend else { unreachable!("recording stays recording") };
        let vocab = config.vocab_size;
        let last = lengths.iter().enumerate().flat_map(|(row, &length)| {
            let at = (row * longest + length - 1) * vocab;
            logits[at..at + vocab].iter().copied()
        });
        let last = last.collect();
        // The cache wants every row's positions to end at the write slot: shift shorter rows
        // right (the slots before them are hidden, whatever they hold).
        let blocks = if lengths.iter().all(|&length| length == longest) {
            recorded
        } else {
            let [_, heads, _, head_width] = recorded[0].keys.dims();
            let mut sources = Vec::with_capacity(rows.len() * heads * longest * head_width);
            for &length in &lengths {
                let shift = longest - length;
                for _ in 0..heads {
                    for slot in 0..longest {
                        let source = slot.saturating_sub(shift) as i64;
                        sources.extend(std::iter::repeat_n(source, head_width));
                    }
                }
            }
            let index = Tensor::<4, Int>::from_data(TensorData::new(sources, [rows.len(), heads, longest, head_width]), &self.device());
            recorded
                .into_iter()
                .map(|block| KeysValues { keys: block.keys.gather(2, index.clone()), values: block.values.gather(2, index.clone()) })
                .collect()
        };
        Ok((last, KvCache { blocks, lengths, next: longest }))
    }

    pub(crate) fn decode_with(&self, tokens: &[u32], cache: &mut KvCache, deltas: &dyn Deltas) -> Result<Vec<f32>> {
        let config = self.config();
        if tokens.len() != cache.rows() {
            return Err(Error::MalformedBatch(format!("{} tokens for a cache of {} rows", tokens.len(), cache.rows())));
        }
        if cache.lengths.iter().any(|&length| length >= config.context_length) {
            return Err(Error::MalformedBatch(format!("a row is at the context length {}: prefill its window", config.context_length)));
        }
        if cache.blocks.len() != config.layers {
            return Err(Error::MalformedBatch("the cache is of another model".into()));
        }
        let rows = tokens.len();
        let device = self.device();
        let token_rows: Vec<&[u32]> = tokens.chunks(1).collect();
        let tokens = crate::token_batch(&token_rows, config.vocab_size, &device)?;
        let positions: Vec<i64> = cache.lengths.iter().map(|&length| length as i64).collect();
        let positions = Tensor::<2, Int>::from_data(TensorData::new(positions, [rows, 1]), &device);
        cache.reserve_slot();
        let hidden = cache.hidden_slots();
        let mut attend = Attend::Cached {
            blocks: std::mem::take(&mut cache.blocks).into_iter(),
            updated: Vec::with_capacity(config.layers),
            slot: cache.next,
            hidden,
        };
        let logits = self.run(tokens, positions, deltas, &mut attend);
        let Attend::Cached { updated, .. } = attend else { unreachable!("cached stays cached") };
        cache.blocks = updated;
        cache.next += 1;
        for length in &mut cache.lengths {
            *length += 1;
        }
        host_logits(logits)
    }
}

fn host_logits(logits: Tensor<3>) -> Result<Vec<f32>> {
    logits.into_data().try_to_vec::<f32>().map_err(|error| Error::MalformedBatch(format!("logits are not f32: {error:?}")))
}
