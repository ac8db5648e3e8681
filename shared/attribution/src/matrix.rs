//! Feature matrices as stored in the index: `rows × dim`, row-major, in f16 (the default),
//! int8 with one scale per row, or f32 (phantoms, tests). Scoring a query is one matrix–vector
//! product over the stored rows.

use half::f16;
use half::slice::HalfFloatSliceExt;
use serde::{Deserialize, Serialize};

use crate::Error;

const MAGIC: &[u8; 4] = b"PVFM";

/// How stored features are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F16,
    Int8,
    F32,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
            Precision::F32 => "f32",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Precision::F16 => 1,
            Precision::Int8 => 2,
            Precision::F32 => 3,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        [Precision::F16, Precision::Int8, Precision::F32].into_iter().find(|precision| precision.tag() == tag)
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        [Precision::F16, Precision::Int8, Precision::F32]
            .into_iter()
            .find(|precision| precision.name() == name)
            .ok_or_else(|| Error::Shape(format!("unknown precision {name:?} (f16, int8 or f32)")))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Values {
    F16(Vec<f16>),
    Int8 { values: Vec<i8>, scales: Vec<f32> },
    F32(Vec<f32>),
}

/// A stored feature matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    rows: usize,
    dim: usize,
    values: Values,
}

/// Rows converted to f32 at a time while scoring f16: small enough to stay in cache.
const CHUNK_ROWS: usize = 64;

impl FeatureMatrix {
    /// Encodes `values` (`rows × dim`, row-major) at `precision`.
    pub fn encode(values: &[f32], dim: usize, precision: Precision) -> Result<Self, Error> {
        if dim == 0 || !values.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!("{} values do not make rows of {dim}", values.len())));
        }
        if values.iter().any(|value| !value.is_finite()) {
            return Err(Error::Shape("features must be finite".into()));
        }
        let rows = values.len() / dim;
        let values = match precision {
            Precision::F32 => Values::F32(values.to_vec()),
            Precision::F16 => {
                let mut halves = vec![f16::ZERO; values.len()];
                halves.convert_from_f32_slice(values);
                Values::F16(halves)
            }
            Precision::Int8 => {
                let mut scales = Vec::with_capacity(rows);
                let mut quantised = Vec::with_capacity(values.len());
                for row in values.chunks_exact(dim) {
                    let largest = row.iter().fold(0.0f32, |largest, value| largest.max(value.abs()));
                    let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
                    scales.push(scale);
                    quantised.extend(row.iter().map(|value| (value / scale).round().clamp(-127.0, 127.0) as i8));
                }
                Values::Int8 { values: quantised, scales }
            }
        };
        Ok(Self { rows, dim, values })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn precision(&self) -> Precision {
        match self.values {
            Values::F16(_) => Precision::F16,
            Values::Int8 { .. } => Precision::Int8,
            Values::F32(_) => Precision::F32,
        }
    }

    /// One row, decoded.
    pub fn row(&self, index: usize) -> Vec<f32> {
        let range = index * self.dim..(index + 1) * self.dim;
        match &self.values {
            Values::F32(values) => values[range].to_vec(),
            Values::F16(values) => values[range].to_f32_vec(),
            Values::Int8 { values, scales } => values[range].iter().map(|&value| f32::from(value) * scales[index]).collect(),
        }
    }

    /// `self · query`: one score per row.
    ///
    /// The loop is compiled once per x86-64 level (`pulp` dispatches at run time), so on AVX2
    /// and AVX-512 machines the f16 and int8 widening and the dot product run in 256- or
    /// 512-bit lanes without a build for one CPU and without `unsafe` here. Every level computes
    /// the same operations in the same order (widening is exact, and Rust fuses no
    /// multiply-adds), so scores are the same to the bit on every machine and as before this
    /// loop was dispatched, which recomputing a receipt relies on.
    pub fn scores(&self, query: &[f32]) -> Result<Vec<f32>, Error> {
        if query.len() != self.dim {
            return Err(Error::Shape(format!("a query of {} features against rows of {}", query.len(), self.dim)));
        }
        Ok(pulp::Arch::new().dispatch(Scoring { matrix: self, query }))
    }

    /// `PVFM`, a precision tag, rows and dim (u64 LE), then the values (int8: the per-row f32
    /// scales first).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(21 + self.rows * self.dim * 4);
        bytes.extend_from_slice(MAGIC);
        bytes.push(self.precision().tag());
        bytes.extend_from_slice(&(self.rows as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        match &self.values {
            Values::F32(values) => values.iter().for_each(|value| bytes.extend_from_slice(&value.to_le_bytes())),
            Values::F16(values) => values.iter().for_each(|value| bytes.extend_from_slice(&value.to_le_bytes())),
            Values::Int8 { values, scales } => {
                scales.iter().for_each(|scale| bytes.extend_from_slice(&scale.to_le_bytes()));
                bytes.extend(values.iter().map(|&value| value as u8));
            }
        }
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = |reason: &str| Error::Corrupt { artifact: "feature matrix", reason: reason.to_owned() };
        if bytes.len() < 21 || &bytes[..4] != MAGIC {
            return Err(corrupt("not a feature matrix"));
        }
        let precision = Precision::from_tag(bytes[4]).ok_or_else(|| corrupt("unknown precision"))?;
        let read_u64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (rows, dim) = (usize::try_from(read_u64(5)), usize::try_from(read_u64(13)));
        let (Ok(rows), Ok(dim)) = (rows, dim) else { return Err(corrupt("dimensions overflow")) };
        let count = rows.checked_mul(dim).ok_or_else(|| corrupt("dimensions overflow"))?;
        let body = &bytes[21..];
        let expected = match precision {
            Precision::F32 => count.checked_mul(4),
            Precision::F16 => count.checked_mul(2),
            Precision::Int8 => rows.checked_mul(4).and_then(|scales| scales.checked_add(count)),
        };
        if expected != Some(body.len()) || dim == 0 {
            return Err(corrupt("length does not match the dimensions"));
        }
        let values = match precision {
            Precision::F32 => Values::F32(body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
            Precision::F16 => Values::F16(body.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect()),
            Precision::Int8 => {
                let (scales, values) = body.split_at(rows * 4);
                Values::Int8 {
                    scales: scales.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                    values: values.iter().map(|&value| value as i8).collect(),
                }
            }
        };
        // Scores must be finite for receipts to mean anything: `encode` refuses non-finite
        // features, so a stored matrix holding one was not written by it.
        let finite = match &values {
            Values::F32(values) => values.iter().all(|value| value.is_finite()),
            Values::F16(values) => values.iter().all(|value| value.is_finite()),
            Values::Int8 { scales, .. } => scales.iter().all(|scale| scale.is_finite()),
        };
        if !finite {
            return Err(corrupt("a value is not finite"));
        }
        Ok(Self { rows, dim, values })
    }
}

/// One query scored against every row of a matrix, at whatever SIMD level `with_simd` is
/// compiled for. Everything here is `#[inline(always)]` so that it is compiled inside the
/// dispatched function and gets its target features.
struct Scoring<'a> {
    matrix: &'a FeatureMatrix,
    query: &'a [f32],
}

impl pulp::WithSimd for Scoring<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<f32> {
        let Self { matrix, query } = self;
        let dim = matrix.dim;
        let mut scores = Vec::with_capacity(matrix.rows);
        match &matrix.values {
            Values::F32(values) => score_rows(values, query, &mut scores),
            Values::F16(values) => {
                // Widen a chunk of rows to f32 first: the widening and the dot product then
                // both vectorise. `half`'s own conversion calls an F16C routine per eight values,
                // which cost three times the dot product.
                let mut buffer = vec![0.0f32; CHUNK_ROWS * dim];
                for chunk in values.reinterpret_cast().chunks(CHUNK_ROWS * dim) {
                    let decoded = &mut buffer[..chunk.len()];
                    for (slot, &bits) in decoded.iter_mut().zip(chunk) {
                        *slot = widen_half(bits);
                    }
                    score_rows(decoded, query, &mut scores);
                }
            }
            Values::Int8 { values, scales } => {
                // As for f16 (converting inside the dot product did not vectorise, 2x slower).
                let mut buffer = vec![0.0f32; CHUNK_ROWS * dim];
                for (chunk, chunk_scales) in values.chunks(CHUNK_ROWS * dim).zip(scales.chunks(CHUNK_ROWS)) {
                    let decoded = &mut buffer[..chunk.len()];
                    for (slot, &value) in decoded.iter_mut().zip(chunk) {
                        *slot = f32::from(value);
                    }
                    let first = scores.len();
                    score_rows(decoded, query, &mut scores);
                    for (score, scale) in scores[first..].iter_mut().zip(chunk_scales) {
                        *score *= scale;
                    }
                }
            }
        }
        scores
    }
}

/// An IEEE half (its bits) widened to f32, exactly, without branches so that a loop of it
/// vectorises: the exponent is rebiased, and zeros and subnormals are normalised by one f32
/// subtraction. NaNs stay NaNs (their payload is not quietened as F16C would).
#[inline(always)]
fn widen_half(bits: u16) -> f32 {
    const EXPONENT: u32 = 0x7c00 << 13;
    let bits = u32::from(bits);
    let sign = (bits & 0x8000) << 16;
    let magnitude = (bits & 0x7fff) << 13;
    let exponent = magnitude & EXPONENT;
    let normal = magnitude + ((127 - 15) << 23);
    let infinite_or_nan = normal + ((128 - 16) << 23);
    // 2^-14 × 1.m minus 2^-14 is 2^-14 × 0.m, the subnormal's value (and +0 for zero).
    let subnormal = (f32::from_bits(normal + (1 << 23)) - f32::from_bits(113 << 23)).to_bits();
    let widened = if exponent == EXPONENT {
        infinite_or_nan
    } else if exponent == 0 {
        subnormal
    } else {
        normal
    };
    f32::from_bits(widened | sign)
}

/// Appends `row · query` for each row of `rows` (rows of `query.len()`).
#[inline(always)]
fn score_rows(rows: &[f32], query: &[f32], scores: &mut Vec<f32>) {
    for row in rows.chunks_exact(query.len()) {
        scores.push(dot(row, query));
    }
}

/// A dot product written so the compiler vectorises it (eight independent accumulators).
#[inline(always)]
pub(crate) fn dot(left: &[f32], right: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = left.len() / 8 * 8;
    for (l, r) in left[..chunks].chunks_exact(8).zip(right[..chunks].chunks_exact(8)) {
        for lane in 0..8 {
            lanes[lane] += l[lane] * r[lane];
        }
    }
    let tail: f32 = left[chunks..].iter().zip(&right[chunks..]).map(|(l, r)| l * r).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<f32>, usize) {
        let dim = 19;
        ((0..5 * dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect(), dim)
    }

    #[test]
    fn every_precision_round_trips_and_scores_close_to_exact() {
        let (values, dim) = sample();
        let query: Vec<f32> = (0..dim).map(|i| (i as f32 - 9.0) / 5.0).collect();
        let exact: Vec<f32> = values.chunks_exact(dim).map(|row| row.iter().zip(&query).map(|(a, b)| a * b).sum()).collect();
        for (precision, tolerance) in [(Precision::F32, 1e-5), (Precision::F16, 5e-3), (Precision::Int8, 3e-2)] {
            let matrix = FeatureMatrix::encode(&values, dim, precision).expect("encodes");
            let again = FeatureMatrix::from_bytes(&matrix.to_bytes()).expect("decodes");
            assert_eq!(again, matrix);
            let scores = again.scores(&query).expect("scores");
            for (score, exact) in scores.iter().zip(&exact) {
                let scale = exact.abs().max(1.0);
                assert!((score - exact).abs() / scale < tolerance, "{precision:?}: {score} vs {exact}");
            }
        }
    }

    #[test]
    fn widening_a_half_is_exact_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let expected = f16::from_bits(bits).to_f32();
            let widened = widen_half(bits);
            if expected.is_nan() {
                assert!(widened.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(widened.to_bits(), expected.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn dispatched_scores_are_bit_for_bit_the_portable_ones() {
        // 303 rows: whole chunks of 64 rows, then a short one.
        let dim = 37;
        let values: Vec<f32> = (0..303 * dim).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0).collect();
        let query: Vec<f32> = (0..dim).map(|i| (i as f32 - 18.0) / 7.0).collect();
        for precision in [Precision::F32, Precision::F16, Precision::Int8] {
            let matrix = FeatureMatrix::encode(&values, dim, precision).expect("encodes");
            let portable = pulp::WithSimd::with_simd(Scoring { matrix: &matrix, query: &query }, pulp::Scalar::new());
            let dispatched = matrix.scores(&query).expect("scores");
            let bits = |scores: &[f32]| scores.iter().map(|score| score.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dispatched), bits(&portable), "{precision:?}");
        }
    }

    #[test]
    fn malformed_bytes_and_shapes_are_refused() {
        let (values, dim) = sample();
        let bytes = FeatureMatrix::encode(&values, dim, Precision::F16).expect("encodes").to_bytes();
        assert!(FeatureMatrix::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(FeatureMatrix::from_bytes(b"PVFM").is_err());
        let mut huge = bytes.clone();
        huge[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(FeatureMatrix::from_bytes(&huge).is_err());
        assert!(FeatureMatrix::encode(&values[..7], dim, Precision::F16).is_err());
        assert!(FeatureMatrix::encode(&[f32::INFINITY; 19], dim, Precision::F16).is_err());
        let matrix = FeatureMatrix::from_bytes(&bytes).expect("decodes");
        assert!(matrix.scores(&[0.0; 3]).is_err());
        // A stored NaN (f16 0x7e00, little-endian) is refused on loading, not scored.
        let mut poisoned = bytes.clone();
        poisoned[21..23].copy_from_slice(&[0x00, 0x7e]);
        assert!(matches!(FeatureMatrix::from_bytes(&poisoned), Err(Error::Corrupt { .. })));
        let mut infinite_scale = FeatureMatrix::encode(&values, dim, Precision::Int8).expect("encodes").to_bytes();
        infinite_scale[21..25].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(FeatureMatrix::from_bytes(&infinite_scale).is_err());
    }
}
