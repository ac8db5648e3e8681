//! The crate's own random numbers.
//!
//! Initial weights, LoRA factors and the data order come from here rather than from Burn's
//! backend RNG, so they depend only on the seed and the parameter's path: not on the backend,
//! not on which parameter happened to be initialised first, and not on other tests running in
//! the same process.

use sha2::{Digest, Sha256};

/// SplitMix64: tiny, fast, and good enough to draw initial weights and shuffles.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one named stream of a seed, independent of every other name.
    pub(crate) fn for_stream(seed: u64, name: &str) -> Self {
        Self::new(stream_seed(seed, name))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..bound` (Lemire's method would be faster; the modulo bias is below 2^-40
    /// for the bounds used here).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        self.next_u64() % bound
    }

    /// `count` samples of N(0, std²) by Box–Muller.
    pub(crate) fn normal_vec(&mut self, count: usize, std: f64) -> Vec<f32> {
        let mut values = Vec::with_capacity(count);
        while values.len() < count {
            // 1 - u keeps the logarithm's argument in (0, 1].
            let radius = (-2.0 * (1.0 - self.next_f64()).ln()).sqrt();
            let angle = std::f64::consts::TAU * self.next_f64();
            values.push((std * radius * angle.cos()) as f32);
            if values.len() < count {
                values.push((std * radius * angle.sin()) as f32);
            }
        }
        values
    }
}

/// A 64-bit seed derived from a seed and a name.
pub(crate) fn stream_seed(seed: u64, name: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A Fisher–Yates permutation of `0..count`.
pub(crate) fn permutation(count: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    for index in (1..count).rev() {
        let other = rng.below(index as u64 + 1) as usize;
        order.swap(index, other);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_samples_have_the_requested_spread() {
        let values = SplitMix64::new(7).normal_vec(20_000, 0.5);
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        let variance = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((variance.sqrt() - 0.5).abs() < 0.02, "std {}", variance.sqrt());
    }

    #[test]
    fn streams_of_one_seed_differ_and_repeat() {
        assert_eq!(stream_seed(1, "a"), stream_seed(1, "a"));
        assert_ne!(stream_seed(1, "a"), stream_seed(1, "b"));
        assert_ne!(stream_seed(1, "a"), stream_seed(2, "a"));
        let mut order = permutation(100, &mut SplitMix64::new(3));
        order.sort_unstable();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }
}
