//! The attribution index of one trained model: what the `train` service builds at the end of
//! a job and `infer` loads to write receipts.
//!
//! Artifacts, each content-addressed (SHA-256) and named by the manifest:
//! - `features`: the training examples' preconditioned, projected gradients (f16 or int8);
//! - `phantoms`: the same for held-out examples the model never trained on (f32);
//! - `examples`: the example → contribution → contributor → duplicate-cluster table;
//! - `spans`: the training token stream and its suffix array.
//!
//! The manifest is canonical JSON, and the index's digest is the SHA-256 of its bytes.

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::matrix::{FeatureMatrix, Precision};
use crate::precondition::Preconditioner;
use crate::receipt::{Attribution, Evidence, ReceiptRules, attribute, example_weights};
use crate::spans::SpanIndex;
use crate::table::ExampleTable;

pub const FORMAT: &str = "provenant-attribution-index/1";
/// Indexes and their receipts name this method; a change to how scores or shares are computed
/// is a new version. `grad-logra-v2` featurises a training example by the gradient of its
/// summed token losses (v1: their mean), as training weighs it; a query is featurised alike in
/// both. `span-v2` adds phrases, shorter shared spans (`receipt`, rule 4), whose weight the
/// index's rules record (absent, so 0, in `span-v1` indexes).
pub const METHOD: &str = "grad-logra-v2+span-v2";

/// The methods whose receipts this build recomputes: they differ only in what the index
/// stores (features, rules), which a recomputation reads rather than rebuilds.
pub const RECOMPUTABLE_METHODS: [&str; 3] = ["grad-logra-v1+span-v1", "grad-logra-v2+span-v1", METHOD];

/// One block of the feature vector (a layer's sketched gradient).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockLayout {
    /// Which parameter, as the model layer names it (`blocks.0.attention.query/weight`).
    pub name: String,
    pub offset: usize,
    pub len: usize,
}

/// How features were projected: enough to rebuild the projection for a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    pub seed: u64,
    /// Projected width of each side of a layer.
    pub per_side: usize,
    pub dim: usize,
    pub blocks: Vec<BlockLayout>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    pub sha256: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub method: String,
    pub model_id: String,
    /// Digest of the weights the features were computed with (the adapter's, for an adapter).
    pub model_weights_sha256: String,
    /// For an adapter: the base weights it was trained on; empty otherwise.
    pub base_weights_sha256: String,
    pub projection: Projection,
    /// Fisher damping, as a fraction of each block's mean diagonal.
    pub damping: f64,
    /// Stored features are the preconditioned ones times this (it keeps f16 in range).
    pub feature_scale: f64,
    pub precision: Precision,
    pub example_count: u64,
    pub phantom_count: u64,
    pub span_tokens: u64,
    pub rules: ReceiptRules,
    pub features: ArtifactRef,
    pub phantoms: ArtifactRef,
    pub examples: ArtifactRef,
    pub spans: ArtifactRef,
}

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|error| Error::Corrupt { artifact: "index manifest", reason: error.to_string() })?;
        if manifest.format != FORMAT {
            return Err(Error::Corrupt { artifact: "index manifest", reason: format!("format {:?}, expected {FORMAT}", manifest.format) });
        }
        Ok(manifest)
    }

    /// The artifacts to fetch, in a fixed order.
    pub fn artifacts(&self) -> [&ArtifactRef; 4] {
        [&self.features, &self.phantoms, &self.examples, &self.spans]
    }
}

/// Everything a training job knows when it builds the index.
pub struct IndexInput {
    pub model_id: String,
    pub model_weights_sha256: String,
    pub base_weights_sha256: String,
    pub projection: Projection,
    /// Raw (unpreconditioned) features, `examples × dim`, in table order.
    pub features: Vec<f32>,
    /// Raw features of the phantoms, `phantoms × dim`.
    pub phantoms: Vec<f32>,
    pub table: ExampleTable,
    /// The training token stream the table's offsets point into.
    pub tokens: Vec<u32>,
    pub precision: Precision,
    pub damping: f64,
    pub rules: ReceiptRules,
}

/// A built index: its manifest and the bytes of every artifact.
pub struct BuiltIndex {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub index_sha256: String,
    /// `(sha256, bytes)` of each artifact.
    pub artifacts: Vec<(String, Vec<u8>)>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn artifact(bytes: Vec<u8>, artifacts: &mut Vec<(String, Vec<u8>)>) -> ArtifactRef {
    let reference = ArtifactRef { sha256: sha256_hex(&bytes), size_bytes: bytes.len() as u64 };
    artifacts.push((reference.sha256.clone(), bytes));
    reference
}

fn block_ranges(projection: &Projection) -> Result<Vec<Range<usize>>, Error> {
    let mut next = 0;
    let mut ranges = Vec::with_capacity(projection.blocks.len());
    for block in &projection.blocks {
        if block.offset != next || block.len == 0 {
            return Err(Error::Shape(format!("block {} does not follow the previous one", block.name)));
        }
        next += block.len;
        ranges.push(block.offset..next);
    }
    if next != projection.dim {
        return Err(Error::Shape(format!("blocks cover {next} of {} features", projection.dim)));
    }
    Ok(ranges)
}

/// Preconditions, scales, encodes and hashes everything.
pub fn build(input: IndexInput) -> Result<BuiltIndex, Error> {
    let dim = input.projection.dim;
    let ranges = block_ranges(&input.projection)?;
    if input.features.len() != input.table.len() * dim {
        return Err(Error::Shape(format!("{} feature values for {} examples of {dim}", input.features.len(), input.table.len())));
    }
    if !input.phantoms.len().is_multiple_of(dim) {
        return Err(Error::Shape("phantom features do not make whole rows".into()));
    }
    input.rules.check()?;
    let preconditioner = Preconditioner::fit(&input.features, dim, &ranges, input.damping)?;
    let mut features = input.features;
    let mut phantoms = input.phantoms;
    for row in features.chunks_exact_mut(dim).chain(phantoms.chunks_exact_mut(dim)) {
        preconditioner.apply(row);
    }
    // One scale for features and phantoms alike (scores stay comparable): RMS 1.
    let count = features.len().max(1) as f64;
    let rms = (features.iter().map(|&value| f64::from(value).powi(2)).sum::<f64>() / count).sqrt();
    let feature_scale = if rms > 0.0 && rms.is_finite() { 1.0 / rms } else { 1.0 };
    for value in features.iter_mut().chain(phantoms.iter_mut()) {
        *value = (f64::from(*value) * feature_scale) as f32;
    }
    let span_tokens = input.tokens.len() as u64;
    let mut artifacts = Vec::new();
    let features_ref = artifact(FeatureMatrix::encode(&features, dim, input.precision)?.to_bytes(), &mut artifacts);
    let phantoms_ref = artifact(FeatureMatrix::encode(&phantoms, dim, Precision::F32)?.to_bytes(), &mut artifacts);
    let examples_ref = artifact(input.table.to_bytes(), &mut artifacts);
    let spans_ref = artifact(SpanIndex::build(input.tokens)?.to_bytes(), &mut artifacts);
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        method: METHOD.to_owned(),
        model_id: input.model_id,
        model_weights_sha256: input.model_weights_sha256,
        base_weights_sha256: input.base_weights_sha256,
        projection: input.projection,
        damping: input.damping,
        feature_scale,
        precision: input.precision,
        example_count: input.table.len() as u64,
        phantom_count: (phantoms.len() / dim) as u64,
        span_tokens,
        rules: input.rules,
        features: features_ref,
        phantoms: phantoms_ref,
        examples: examples_ref,
        spans: spans_ref,
    };
    let manifest_bytes = manifest.to_bytes();
    Ok(BuiltIndex { index_sha256: sha256_hex(&manifest_bytes), manifest, manifest_bytes, artifacts })
}

/// A loaded index, ready to attribute.
pub struct Index {
    pub manifest: Manifest,
    pub index_sha256: String,
    features: FeatureMatrix,
    phantoms: FeatureMatrix,
    table: ExampleTable,
    spans: SpanIndex,
}

impl Index {
    /// Assembles an index from its manifest bytes and its artifacts (by SHA-256), checking
    /// every digest and that the pieces agree with one another.
    pub fn assemble(manifest_bytes: &[u8], artifacts: &HashMap<String, Vec<u8>>) -> Result<Self, Error> {
        let manifest = Manifest::from_bytes(manifest_bytes)?;
        let fetch = |reference: &ArtifactRef, artifact: &'static str| -> Result<&[u8], Error> {
            let bytes = artifacts.get(&reference.sha256).ok_or_else(|| Error::Missing(reference.sha256.clone()))?;
            if sha256_hex(bytes) != reference.sha256 || bytes.len() as u64 != reference.size_bytes {
                return Err(Error::Corrupt { artifact, reason: "digest or size differs from the manifest".into() });
            }
            Ok(bytes)
        };
        let features = FeatureMatrix::from_bytes(fetch(&manifest.features, "features")?)?;
        let phantoms = FeatureMatrix::from_bytes(fetch(&manifest.phantoms, "phantoms")?)?;
        let table = ExampleTable::from_bytes(fetch(&manifest.examples, "example table")?)?;
        let spans = SpanIndex::from_bytes(fetch(&manifest.spans, "span index")?)?;
        if !table.is_empty() {
            let last = table.row(table.len() - 1);
            if last.token_offset + last.token_count > spans.len() as u64 {
                return Err(Error::Corrupt { artifact: "example table", reason: "rows point past the token stream".into() });
            }
        }
        block_ranges(&manifest.projection)?;
        let dim = manifest.projection.dim;
        let agrees = features.dim() == dim
            && features.rows() == table.len()
            && features.rows() as u64 == manifest.example_count
            && (phantoms.rows() == 0 || phantoms.dim() == dim)
            && phantoms.rows() as u64 == manifest.phantom_count
            && spans.len() as u64 == manifest.span_tokens;
        if !agrees {
            return Err(Error::Corrupt { artifact: "attribution index", reason: "artifacts disagree with the manifest's counts".into() });
        }
        Ok(Self { index_sha256: sha256_hex(manifest_bytes), manifest, features, phantoms, table, spans })
    }

    /// The training token stream's suffix array.
    pub fn spans(&self) -> &SpanIndex {
        &self.spans
    }

    pub fn table(&self) -> &ExampleTable {
        &self.table
    }

    /// The tokens of table row `row`, read from the training stream.
    pub fn example_tokens(&self, row: usize) -> &[u32] {
        let example = self.table.row(row);
        let start = (example.token_offset as usize).min(self.spans.len());
        let end = (start + example.token_count as usize).min(self.spans.len());
        &self.spans.tokens()[start..end]
    }

    /// Scores of every example and every phantom for a query's raw features.
    pub fn scores(&self, query: &[f32]) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let phantoms = if self.phantoms.rows() == 0 { Vec::new() } else { self.phantoms.scores(query)? };
        Ok((self.features.scores(query)?, phantoms))
    }

    /// The attribution of one answer: `query` is the raw feature of (prompt, output), `output`
    /// the output's tokens (for span matching).
    pub fn attribute(&self, query: &[f32], output: &[u32]) -> Result<Attribution, Error> {
        self.with_evidence(query, output, attribute)
    }

    /// Every example's weight in the receipt of one answer ([`crate::receipt::example_weights`]).
    pub fn example_weights(&self, query: &[f32], output: &[u32]) -> Result<Vec<f64>, Error> {
        self.with_evidence(query, output, example_weights)
    }

    fn with_evidence<T>(&self, query: &[f32], output: &[u32], rule: fn(&Evidence<'_>, &ReceiptRules) -> T) -> Result<T, Error> {
        let (scores, phantom_scores) = self.scores(query)?;
        let evidence =
            Evidence { table: &self.table, scores: &scores, phantom_scores: &phantom_scores, spans: Some((&self.spans, output)) };
        Ok(rule(&evidence, &self.manifest.rules))
    }
}
