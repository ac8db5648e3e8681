//! `attribution-eval` (`make attribution-eval`): how good the receipts are, on real text, next
//! to baselines. Outside CI: it trains dozens of small models.
//!
//! Data: short English fortunes (Debian's `fortunes` package), one contributor per file; the
//! LoRA case fine-tunes on German fortunes (`fortunes-de`) on top of an English base.
//!
//! - **LDS** (linear datamodeling score): models retrained on random 50 % subsets of the
//!   training examples, each with two seeds. For every held-out query, the Spearman correlation
//!   over subsets between the predicted effect (the sum of the query's attribution scores over
//!   the subset) and the measured one (minus the query's loss under the subset's model); the
//!   mean over queries. The **noise ceiling** is the same correlation between the two seeds'
//!   losses: how well one retraining predicts another. It is not a bound on LDS: a method that
//!   predicted the expected loss exactly would reach about its square root.
//! - **Canary recall@10**: canary sentences planted, one per contributor, then queried
//!   verbatim and paraphrased; is the canary among the ten best-scored examples?
//! - **Gaming**: a contributor copying another's data (duplicates join the founder's cluster),
//!   one contributor split into ten identities, and 10 % spam; each contributor's mean share.
//!
//! Every figure is computed for Provenant's receipt (each example's weight in it: the
//! Fisher-preconditioned projected gradients, verbatim spans and phrases, mixed as receipts mix
//! them), for its gradient channel alone, and for baselines: random scores, the plain gradient
//! dot product (the same projected features, no preconditioning), BM25 over the bytes' words,
//! and the gradients of method v1, whose training features were gradients of each example's
//! mean token loss rather than of their sum. `--phrase-weights` measures the receipt's LDS
//! under other phrase weights over the same retrained subsets.

use std::collections::{HashMap, HashSet};

use attribution::receipt::{Evidence, attribute, example_weights};
use attribution::{BlockLayout, ExampleRow, ExampleTable, Index, IndexInput, Precision, Projection, ReceiptRules, SpanIndex};
use clap::Parser;
use model::backend::training_device;
use model::{
    Control, Featurizer, LoraSpec, LoraTarget, ModelConfig, Reduction, Sequence, StepReport, Tokenizer, TrainConfig, Trainer, Transformer,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Attribution quality: LDS, canary recall, gaming tests, beside baselines (JSON report)")]
struct Arguments {
    /// Where Debian's fortune files are.
    #[arg(long, default_value = "/usr/share/games/fortunes")]
    fortunes: std::path::PathBuf,
    /// Training examples per contributor (file).
    #[arg(long, default_value_t = 30)]
    per_contributor: usize,
    /// Random 50 % subsets retrained for LDS (each twice, with two seeds).
    #[arg(long, default_value_t = 32)]
    subsets: usize,
    /// Projected width per side of each layer (the index's `per_side`).
    #[arg(long, default_value_t = 4)]
    per_side: usize,
    /// Fisher damping, as a fraction of each block's mean diagonal.
    #[arg(long, default_value_t = 0.1)]
    damping: f64,
    #[arg(long, default_value_t = 300)]
    steps: u64,
    #[arg(long, default_value_t = 200)]
    lora_steps: u64,
    /// The LoRA case's fortune files (German by default), one contributor each.
    #[arg(long, value_delimiter = ',', default_values_t = GERMAN.map(str::to_owned))]
    lora_files: Vec<String>,
    /// The LoRA case's training examples per file, at most.
    #[arg(long, default_value_t = 20)]
    lora_per_contributor: usize,
    /// The LoRA case's held-out fortunes per file, half of them queries, half phantoms.
    #[arg(long, default_value_t = 6)]
    lora_held_out: usize,
    /// Checkpoints, evenly spaced over training, whose gradient scores the checkpoint-ensemble
    /// experiment sums (TracIn-CP style; the last is the trained model). 1 leaves it out.
    #[arg(long, default_value_t = 4)]
    checkpoints: u64,
    /// Measure only the LoRA case's LDS (no canaries, from-scratch LDS or gaming tests): for
    /// quick experiments; the report's other sections are null.
    #[arg(long)]
    lora_only: bool,
    /// Held-out queries for LDS.
    #[arg(long, default_value_t = 32)]
    queries: usize,
    /// Other index knobs whose LDS is measured over the same retrained subsets, as
    /// `per_side:damping` (for example `4:0.01,8:0.1`): what a different
    /// `workers.attribution` setting would reach, without retraining the subsets for it.
    #[arg(long, value_delimiter = ',', value_parser = parse_knobs)]
    sweep: Vec<Knobs>,
    /// Other `phrase_weight`s whose receipts' LDS is measured over the same retrained subsets.
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 0.25, 0.5, 0.75, 1.0])]
    phrase_weights: Vec<f64>,
    /// The shortest span, in byte tokens, of the short-span experiment (receipts ask for 24).
    #[arg(long, default_value_t = 6)]
    experiment_span_tokens: usize,
    #[arg(long, default_value = "target/bench/attribution-eval.json")]
    output: std::path::PathBuf,
}

const ENGLISH: [&str; 8] = ["art", "computers", "food", "science", "education", "love", "law", "literature"];
const GERMAN: [&str; 6] = ["de/computer", "de/anekdoten", "de/wusstensie", "de/sprichworte", "de/zitate", "de/mathematiker"];

/// One example: who contributed it and its text.
#[derive(Debug, Clone)]
struct Example {
    contributor: String,
    text: String,
}

fn fortunes(folder: &std::path::Path, file: &str, skip: usize, take: usize) -> Vec<String> {
    let raw = std::fs::read(folder.join(file)).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .split("\n%\n")
        .map(str::trim)
        .filter(|text| text.len() > 20 && text.len() <= 160)
        .skip(skip)
        .take(take)
        .map(str::to_owned)
        .collect()
}

fn model_config() -> ModelConfig {
    ModelConfig::new(259, 2, 2, 64, 128)
}

fn train_config(steps: u64, seed: u64, learning_rate: f64) -> TrainConfig {
    TrainConfig { learning_rate, weight_decay: 0.01, batch_size: 8, sequence_length: 64, steps, seed, warmup_steps: 20 }
}

fn tokens_of(examples: &[&Example]) -> Vec<u32> {
    let tokenizer = Tokenizer::byte_level();
    examples.iter().flat_map(|example| tokenizer.encode_document(&example.text)).collect()
}

fn full_trainer(examples: &[&Example], steps: u64, seed: u64) -> anyhow::Result<Trainer> {
    Ok(Trainer::full(&model_config(), train_config(steps, seed, 3e-3), tokens_of(examples), &training_device())?)
}

fn train_full(examples: &[&Example], steps: u64, seed: u64) -> anyhow::Result<Transformer> {
    trained(full_trainer(examples, steps, seed)?)
}

fn trained(mut trainer: Trainer) -> anyhow::Result<Transformer> {
    trainer.run(&mut |_: &StepReport| Control::Continue)?;
    Ok(trainer.into_model())
}

fn lora_spec() -> LoraSpec {
    LoraSpec { rank: 4, alpha: 8.0, targets: LoraTarget::ALL.to_vec() }
}

fn lora_trainer(base: &Transformer, examples: &[&Example], steps: u64, seed: u64) -> anyhow::Result<Trainer> {
    Ok(Trainer::lora(base.clone(), &lora_spec(), train_config(steps, seed, 1e-2), tokens_of(examples))?)
}

fn train_lora(base: &Transformer, examples: &[&Example], steps: u64, seed: u64) -> anyhow::Result<Transformer> {
    trained(lora_trainer(base, examples, steps, seed)?)
}

/// The model at `count` evenly spaced steps of one training run, the trained model last.
fn checkpoints_of(mut trainer: Trainer, count: u64) -> anyhow::Result<Vec<Transformer>> {
    let steps = trainer.config().steps;
    let count = count.clamp(1, steps.max(1));
    let mut models = Vec::new();
    for number in 1..=count {
        let until = steps * number / count;
        trainer.run(&mut |report: &StepReport| if report.step >= until { Control::Stop } else { Control::Continue })?;
        models.push(trainer.model().clone());
    }
    Ok(models)
}

/// Mean next-token loss of each text under `model`.
fn losses(model: &Transformer, texts: &[String]) -> anyhow::Result<Vec<f64>> {
    let frozen = model.inference();
    let tokenizer = Tokenizer::byte_level();
    texts
        .iter()
        .map(|text| {
            let tokens = tokenizer.encode_document(text);
            Ok(model::evaluate(&frozen, &tokens)?.mean_loss)
        })
        .collect()
}

/// Raw projected gradient features of `texts` as training examples, row-major; `reduction`
/// says how each one's token losses make its loss (the index's `Sum`, or v1's `Mean`).
fn features(featurizer: &Featurizer, model: &Transformer, texts: &[String], reduction: Reduction) -> anyhow::Result<Vec<f32>> {
    let frozen = model.inference();
    let tokenizer = Tokenizer::byte_level();
    let encoded: Vec<Vec<u32>> = texts.iter().map(|text| tokenizer.encode_document(text)).collect();
    let mut features = Vec::new();
    for chunk in encoded.chunks(16) {
        let sequences: Vec<Sequence<'_>> = chunk.iter().map(|tokens| Sequence { reduction, ..Sequence::trained(tokens) }).collect();
        features.extend(featurizer.features(&frozen, &sequences)?);
    }
    Ok(features)
}

/// Everything scoring needs for one trained model.
struct Scored {
    index: Index,
    /// The same index from per-example mean-loss features (method v1), to show what summing
    /// each example's token losses (v2) changed.
    index_v1: Index,
    /// Raw (unpreconditioned) training features, for the dot-product baseline.
    raw: Vec<f32>,
    /// The training token stream's suffix array, for the short-span experiment.
    spans: SpanIndex,
    featurizer: Featurizer,
    model: Transformer,
    /// The same run's earlier checkpoints, indexed alike, for the checkpoint-ensemble
    /// experiment (empty where it is not run).
    earlier: Vec<Scored>,
}

fn table_of(examples: &[&Example], clusters: &[String]) -> anyhow::Result<(ExampleTable, Vec<u32>)> {
    let tokenizer = Tokenizer::byte_level();
    let mut stream = Vec::new();
    let mut rows = Vec::new();
    for (number, (example, cluster)) in examples.iter().zip(clusters).enumerate() {
        let tokens = tokenizer.encode_document(&example.text);
        rows.push(ExampleRow {
            example: number as u64,
            contribution_id: format!("c{number}"),
            contributor_id: example.contributor.clone(),
            duplicate_cluster_id: cluster.clone(),
            token_offset: stream.len() as u64,
            token_count: tokens.len() as u64,
            datanet_id: String::new(),
        });
        stream.extend(tokens);
    }
    Ok((ExampleTable::new(rows)?, stream))
}

fn own_clusters(count: usize) -> Vec<String> {
    (0..count).map(|number| format!("c{number}")).collect()
}

/// How the index is built: the knobs `workers.attribution` sets in the train service.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    per_side: usize,
    damping: f64,
}

fn parse_knobs(text: &str) -> Result<Knobs, String> {
    let (per_side, damping) = text.split_once(':').ok_or_else(|| format!("{text:?} is not per_side:damping"))?;
    let per_side = per_side.parse().map_err(|error| format!("per_side {per_side:?}: {error}"))?;
    let damping = damping.parse().map_err(|error| format!("damping {damping:?}: {error}"))?;
    Ok(Knobs { per_side, damping })
}

fn score_model(
    model: Transformer,
    examples: &[&Example],
    clusters: &[String],
    phantoms: &[String],
    knobs: Knobs,
) -> anyhow::Result<Scored> {
    let featurizer = Featurizer::new(&model, 11, knobs.per_side)?;
    let texts: Vec<String> = examples.iter().map(|example| example.text.clone()).collect();
    let (table, stream) = table_of(examples, clusters)?;
    let index = |reduction: Reduction| -> anyhow::Result<(Index, Vec<f32>)> {
        let raw = features(&featurizer, &model, &texts, reduction)?;
        let phantom_features = features(&featurizer, &model, phantoms, reduction)?;
        let blocks =
            featurizer.blocks().iter().map(|block| BlockLayout { name: block.name(), offset: block.offset, len: block.len }).collect();
        let built = attribution::build(IndexInput {
            model_id: "eval".into(),
            model_weights_sha256: String::new(),
            base_weights_sha256: String::new(),
            projection: Projection { seed: 11, per_side: knobs.per_side, dim: featurizer.dim(), blocks },
            features: raw.clone(),
            phantoms: phantom_features,
            table: table.clone(),
            tokens: stream.clone(),
            precision: Precision::F16,
            damping: knobs.damping,
            rules: ReceiptRules::default(),
        })?;
        let artifacts: HashMap<String, Vec<u8>> = built.artifacts.into_iter().collect();
        Ok((Index::assemble(&built.manifest_bytes, &artifacts)?, raw))
    };
    let (index_v1, _) = index(Reduction::Mean)?;
    let (index, raw) = index(Reduction::Sum)?;
    let spans = SpanIndex::build(stream)?;
    Ok(Scored { index, index_v1, raw, spans, featurizer, model, earlier: Vec::new() })
}

/// A run's checkpoints (the trained model last) indexed: the trained model's `Scored`, the
/// earlier checkpoints in its `earlier`.
fn score_run(mut models: Vec<Transformer>, examples: &[&Example], phantoms: &[String], knobs: Knobs) -> anyhow::Result<Scored> {
    let clusters = own_clusters(examples.len());
    let last = models.pop().ok_or_else(|| anyhow::anyhow!("a run has at least one checkpoint"))?;
    let mut scored = score_model(last, examples, &clusters, phantoms, knobs)?;
    scored.earlier =
        models.into_iter().map(|model| score_model(model, examples, &clusters, phantoms, knobs)).collect::<anyhow::Result<_>>()?;
    Ok(scored)
}

/// How a method scores every training example for one query.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    /// Each example's weight in the receipt: the gradient channel, verbatim spans and phrases,
    /// mixed as receipts mix them (`attribution::receipt::example_weights`).
    Provenant,
    /// The receipt's gradient channel alone (Fisher-preconditioned projected gradients).
    ProvenantGradients,
    /// The receipt with another `phrase_weight` (in thousandths), for `--phrase-weights`.
    PhraseWeight(u16),
    /// An experiment, not what receipts pay: Provenant's scores and BM25's, each standardised
    /// over the training examples, summed. Does lexical overlap add to the gradients?
    ProvenantPlusBm25,
    /// An experiment, not what receipts pay: the receipt's span rule (length × rarity, split
    /// among the examples holding a span) over spans of `--experiment-span-tokens` tokens or
    /// more (6 by default: about a word), where receipts ask for 24.
    ShortSpans,
    /// An experiment, not what receipts pay: the gradient channel's scores summed over the
    /// training run's checkpoints (`--checkpoints`), each with its own index and query
    /// features, as TracIn-CP sums over checkpoints. Where only the trained model was indexed
    /// it is the gradient channel alone.
    CheckpointEnsemble,
    /// An experiment: as `CheckpointEnsemble`, but the query is featurised at the trained
    /// model only (each checkpoint's index scores the trained model's query features): what
    /// receipts could afford, one probe per answer.
    CheckpointTrainingSide,
    ProvenantV1,
    DotProduct,
    Bm25,
    Random,
}

const METHODS: [Method; 10] = [
    Method::Provenant,
    Method::ProvenantGradients,
    Method::ProvenantPlusBm25,
    Method::ShortSpans,
    Method::CheckpointEnsemble,
    Method::CheckpointTrainingSide,
    Method::ProvenantV1,
    Method::DotProduct,
    Method::Bm25,
    Method::Random,
];

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Provenant => "provenant (the receipt: gradients, verbatim spans and phrases)",
            Method::ProvenantGradients => "provenant gradients alone (preconditioned projected gradients)",
            Method::PhraseWeight(_) => "provenant with another phrase weight",
            Method::ProvenantPlusBm25 => "experiment: provenant + bm25, standardised and summed (receipts do not use it)",
            Method::ShortSpans => "experiment: the span rule over short spans (--experiment-span-tokens; receipts ask for 24)",
            Method::CheckpointEnsemble => "experiment: gradients summed over the run's checkpoints (--checkpoints; receipts use the last)",
            Method::CheckpointTrainingSide => "experiment: checkpoints' training gradients against the trained model's query gradient",
            Method::ProvenantV1 => "provenant v1 gradients alone (per-example mean-loss features)",
            Method::DotProduct => "gradient dot product",
            Method::Bm25 => "bm25",
            Method::Random => "random",
        }
    }
}

struct Query {
    /// Query features (prompt, answer) for the gradient methods.
    features: Vec<f32>,
    prompt: String,
    text: String,
    /// The answer's tokens, which receipts match spans and phrases in.
    answer: Vec<u32>,
}

fn query(scored: &Scored, prompt: &str, answer: &str) -> anyhow::Result<Query> {
    let mut tokens = Tokenizer::byte_level().encode_document(prompt);
    // `encode_document` ends with EOS: the answer continues the prompt's bytes instead.
    tokens.pop();
    let prompt_len = tokens.len();
    tokens.extend(answer.bytes().map(u32::from));
    let features = scored.featurizer.features(&scored.model.inference(), &[Sequence::answer(&tokens, prompt_len)])?;
    Ok(Query { features, prompt: prompt.to_owned(), text: format!("{prompt}{answer}"), answer: answer.bytes().map(u32::from).collect() })
}

fn scores(method: Method, scored: &Scored, bm25: &Bm25, query: &Query, rng: &mut StdRng) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    Ok(match method {
        Method::Provenant => (receipt_weights(scored, query, &ReceiptRules::default())?, Vec::new()),
        Method::PhraseWeight(permille) => {
            let rules = ReceiptRules { phrase_weight: f64::from(permille) / 1000.0, ..ReceiptRules::default() };
            (receipt_weights(scored, query, &rules)?, Vec::new())
        }
        Method::ProvenantGradients => scored.index.scores(&query.features)?,
        Method::CheckpointEnsemble | Method::CheckpointTrainingSide => {
            let (mut sum, _) = scored.index.scores(&query.features)?;
            let answer = &query.text[query.prompt.len()..];
            for earlier in &scored.earlier {
                let features = match method {
                    Method::CheckpointEnsemble => self::query(earlier, &query.prompt, answer)?.features,
                    _ => query.features.clone(),
                };
                for (total, score) in sum.iter_mut().zip(earlier.index.scores(&features)?.0) {
                    *total += score;
                }
            }
            (sum, Vec::new())
        }
        Method::ProvenantV1 => scored.index_v1.scores(&query.features)?,
        Method::ProvenantPlusBm25 => {
            let (gradient, _) = scored.index.scores(&query.features)?;
            let lexical = bm25.scores(&query.text);
            (standardised(&gradient).zip(standardised(&lexical)).map(|(left, right)| left + right).collect(), Vec::new())
        }
        Method::DotProduct => {
            let scores = scored
                .raw
                .chunks_exact(scored.featurizer.dim())
                .map(|row| row.iter().zip(&query.features).map(|(a, b)| a * b).sum())
                .collect();
            (scores, Vec::new())
        }
        Method::Bm25 => (bm25.scores(&query.text), Vec::new()),
        Method::ShortSpans => {
            let min_tokens = *SHORT_SPAN_TOKENS.get().unwrap_or(&6);
            (short_span_scores(&scored.spans, scored.index.table(), &query.text, min_tokens), Vec::new())
        }
        Method::Random => ((0..scored.index.table().len()).map(|_| rng.random_range(-1.0f32..1.0)).collect(), Vec::new()),
    })
}

/// Each example's weight in the receipt of `query` under `rules` (the index records the
/// defaults).
fn receipt_weights(scored: &Scored, query: &Query, rules: &ReceiptRules) -> anyhow::Result<Vec<f32>> {
    let (scores, phantom_scores) = scored.index.scores(&query.features)?;
    let evidence = Evidence {
        table: scored.index.table(),
        scores: &scores,
        phantom_scores: &phantom_scores,
        spans: Some((&scored.spans, &query.answer)),
    };
    Ok(example_weights(&evidence, rules).into_iter().map(|weight| weight as f32).collect())
}

/// `--experiment-span-tokens`, set once by `main`.
static SHORT_SPAN_TOKENS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Each training example's credit for the maximal spans of at least `min_tokens` that it shares
/// with `text`: the span's length times `ln(1 + examples / examples holding it)`, split among
/// the examples holding it (the receipt's rule, `attribution::receipt`).
fn short_span_scores(spans: &SpanIndex, table: &ExampleTable, text: &str, min_tokens: usize) -> Vec<f32> {
    let output: Vec<u32> = text.bytes().map(u32::from).collect();
    let mut scores = vec![0.0f32; table.len()];
    for hit in spans.maximal_spans(&output, min_tokens) {
        let mut rows: Vec<usize> = spans
            .positions(hit.first, hit.end)
            .filter_map(|position| {
                let row = table.row_at(position as u64)?;
                let example = table.row(row);
                // A span across two examples' boundary is neither's text.
                (position as u64 + hit.len as u64 <= example.token_offset + example.token_count).then_some(row)
            })
            .collect();
        rows.sort_unstable();
        rows.dedup();
        if rows.is_empty() {
            continue;
        }
        let rarity = (1.0 + table.len() as f64 / rows.len() as f64).ln();
        let each = (hit.len as f64 * rarity / rows.len() as f64) as f32;
        for row in rows {
            scores[row] += each;
        }
    }
    scores
}

/// `values` less their mean, over their standard deviation.
fn standardised(values: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let count = values.len().max(1) as f32;
    let center = values.iter().sum::<f32>() / count;
    let spread = (values.iter().map(|value| (value - center).powi(2)).sum::<f32>() / count).sqrt().max(f32::MIN_POSITIVE);
    values.iter().map(move |value| (value - center) / spread)
}

/// BM25 over lower-cased words.
struct Bm25 {
    documents: Vec<HashMap<String, f32>>,
    lengths: Vec<f32>,
    document_frequency: HashMap<String, f32>,
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase).collect()
}

impl Bm25 {
    fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut documents = Vec::new();
        let mut lengths = Vec::new();
        let mut document_frequency: HashMap<String, f32> = HashMap::new();
        for text in texts {
            let words = words(text);
            lengths.push(words.len() as f32);
            let mut counts: HashMap<String, f32> = HashMap::new();
            for word in words {
                *counts.entry(word).or_default() += 1.0;
            }
            for word in counts.keys() {
                *document_frequency.entry(word.clone()).or_default() += 1.0;
            }
            documents.push(counts);
        }
        Self { documents, lengths, document_frequency }
    }

    fn scores(&self, query: &str) -> Vec<f32> {
        let (k1, b) = (1.2f32, 0.75f32);
        let count = self.documents.len() as f32;
        let average = self.lengths.iter().sum::<f32>() / count.max(1.0);
        let terms: HashSet<String> = words(query).into_iter().collect();
        self.documents
            .iter()
            .zip(&self.lengths)
            .map(|(counts, &length)| {
                terms
                    .iter()
                    .filter_map(|term| {
                        let frequency = *counts.get(term)?;
                        let df = self.document_frequency.get(term).copied().unwrap_or(0.0);
                        let idf = ((count - df + 0.5) / (df + 0.5) + 1.0).ln();
                        Some(idf * frequency * (k1 + 1.0) / (frequency + k1 * (1.0 - b + b * length / average)))
                    })
                    .sum()
            })
            .collect()
    }
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && values[order[end + 1]] == values[order[start]] {
            end += 1;
        }
        let rank = (start + end) as f64 / 2.0;
        for &index in &order[start..=end] {
            ranks[index] = rank;
        }
        start = end + 1;
    }
    ranks
}

fn spearman(left: &[f64], right: &[f64]) -> f64 {
    let (left, right) = (ranks(left), ranks(right));
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let (ml, mr) = (mean(&left), mean(&right));
    let covariance: f64 = left.iter().zip(&right).map(|(l, r)| (l - ml) * (r - mr)).sum();
    let spread = |values: &[f64], m: f64| values.iter().map(|v| (v - m).powi(2)).sum::<f64>().sqrt();
    let denominator = spread(&left, ml) * spread(&right, mr);
    if denominator == 0.0 { 0.0 } else { covariance / denominator }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}

/// The standard error of `values`' mean: how far apart two methods' LDS must be, over these
/// queries, before the difference means anything.
fn standard_error(values: &[f64]) -> f64 {
    let center = mean(values);
    let variance = values.iter().map(|value| (value - center).powi(2)).sum::<f64>() / (values.len().max(2) - 1) as f64;
    (variance / values.len() as f64).sqrt()
}

/// LDS for every method, and the two-seed noise ceiling.
#[allow(clippy::too_many_arguments, reason = "one experiment's inputs")]
fn lds(
    label: &str,
    scored: &Scored,
    variants: &[(Knobs, Scored)],
    train: &[&Example],
    queries: &[String],
    subsets: usize,
    phrase_weights: &[f64],
    retrain: &dyn Fn(&[&Example], u64) -> anyhow::Result<Transformer>,
    rng: &mut StdRng,
) -> anyhow::Result<Value> {
    let bm25 = Bm25::new(train.iter().map(|example| example.text.as_str()));
    // Subset masks and each subset's losses on every query, for two seeds.
    let mut masks = Vec::new();
    let mut losses_by_seed = [Vec::new(), Vec::new()];
    for subset in 0..subsets {
        let mut chosen: Vec<usize> = (0..train.len()).collect();
        chosen.shuffle(rng);
        chosen.truncate(train.len() / 2);
        let mask: HashSet<usize> = chosen.iter().copied().collect();
        let members: Vec<&Example> = (0..train.len()).filter(|index| mask.contains(index)).map(|index| train[index]).collect();
        for (seed, losses_of_seed) in losses_by_seed.iter_mut().enumerate() {
            let model = retrain(&members, 100 + seed as u64)?;
            losses_of_seed.push(losses(&model, queries)?);
        }
        masks.push(mask);
        eprintln!("  {label}: subset {}/{subsets} retrained twice", subset + 1);
    }
    // A method's LDS: against the first seed's losses (the reported figure), and against the
    // mean of both seeds' (a less noisy estimate of the expected loss that LDS is defined on).
    let mut correlate = |method: Method, scored: &Scored| -> anyhow::Result<(Vec<f64>, f64)> {
        let (mut first_seed, mut both_seeds) = (Vec::new(), Vec::new());
        for (number, text) in queries.iter().enumerate() {
            let query = query(scored, "", text)?;
            let (scores, _) = scores(method, scored, &bm25, &query, rng)?;
            let predicted: Vec<f64> = masks.iter().map(|mask| mask.iter().map(|&index| f64::from(scores[index])).sum()).collect();
            let actual: Vec<f64> = losses_by_seed[0].iter().map(|losses| -losses[number]).collect();
            let mean_actual: Vec<f64> =
                losses_by_seed[0].iter().zip(&losses_by_seed[1]).map(|(first, second)| -(first[number] + second[number]) / 2.0).collect();
            first_seed.push(spearman(&predicted, &actual));
            both_seeds.push(spearman(&predicted, &mean_actual));
        }
        Ok((first_seed, mean(&both_seeds)))
    };
    let mut results = serde_json::Map::new();
    let mut standard_errors = serde_json::Map::new();
    let mut against_mean = serde_json::Map::new();
    for method in METHODS {
        let (per_query, both_seeds) = correlate(method, scored)?;
        results.insert(method.name().to_owned(), json!(mean(&per_query)));
        standard_errors.insert(method.name().to_owned(), json!(standard_error(&per_query)));
        against_mean.insert(method.name().to_owned(), json!(both_seeds));
    }
    let mut sweep = Vec::new();
    for (knobs, variant) in variants {
        let (provenant, provenant_mean) = correlate(Method::Provenant, variant)?;
        let (gradients, _) = correlate(Method::ProvenantGradients, variant)?;
        let (dot_product, _) = correlate(Method::DotProduct, variant)?;
        sweep.push(json!({
            "per_side": knobs.per_side,
            "damping": knobs.damping,
            "dim": variant.featurizer.dim(),
            "provenant": mean(&provenant),
            "provenant_standard_error": standard_error(&provenant),
            "provenant_against_two_seed_mean": provenant_mean,
            "provenant_gradients_alone": mean(&gradients),
            "gradient_dot_product": mean(&dot_product),
        }));
    }
    let mut phrase_sweep = Vec::new();
    for &weight in phrase_weights {
        let (per_query, both_seeds) = correlate(Method::PhraseWeight((weight.clamp(0.0, 1.0) * 1000.0).round() as u16), scored)?;
        phrase_sweep.push(json!({
            "phrase_weight": weight,
            "lds": mean(&per_query),
            "standard_error": standard_error(&per_query),
            "against_two_seed_mean": both_seeds,
        }));
    }
    let ceiling: Vec<f64> = (0..queries.len())
        .map(|number| {
            let first: Vec<f64> = losses_by_seed[0].iter().map(|losses| losses[number]).collect();
            let second: Vec<f64> = losses_by_seed[1].iter().map(|losses| losses[number]).collect();
            spearman(&first, &second)
        })
        .collect();
    Ok(json!({
        "subsets": subsets,
        "queries": queries.len(),
        "lds": results,
        "lds_standard_error": standard_errors,
        "lds_against_two_seed_mean": against_mean,
        "noise_ceiling": mean(&ceiling),
        "sweep": sweep,
        "phrase_weights": phrase_sweep,
    }))
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Mean share (ppb) per contributor over `queries` (each a whole answer). Provenant's figure
/// is its real receipt (phantom noise margin, verbatim spans); a baseline's scores go through
/// the same share rules, without phantoms or spans (it has neither).
fn mean_shares(scored: &Scored, bm25: &Bm25, queries: &[String], method: Method, rng: &mut StdRng) -> anyhow::Result<HashMap<String, f64>> {
    let mut totals: HashMap<String, f64> = HashMap::new();
    for text in queries {
        let query = query(scored, "", text)?;
        let attribution = match method {
            Method::Provenant => scored.index.attribute(&query.features, &text.bytes().map(u32::from).collect::<Vec<_>>())?,
            // The gradient channel alone: phantom margins, no spans.
            Method::ProvenantGradients | Method::ProvenantV1 => {
                let index = if method == Method::ProvenantV1 { &scored.index_v1 } else { &scored.index };
                let (scores, phantom_scores) = index.scores(&query.features)?;
                attribute(
                    &Evidence { table: index.table(), scores: &scores, phantom_scores: &phantom_scores, spans: None },
                    &ReceiptRules::default(),
                )
            }
            _ => {
                let (scores, _) = scores(method, scored, bm25, &query, rng)?;
                attribute(
                    &Evidence { table: scored.index.table(), scores: &scores, phantom_scores: &[], spans: None },
                    &ReceiptRules::default(),
                )
            }
        };
        for share in attribution.shares {
            *totals.entry(share.contributor_id).or_default() += share.share_ppb as f64 / queries.len() as f64;
        }
    }
    Ok(totals)
}

#[allow(clippy::print_stderr, reason = "progress of a long evaluation")]
fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let mut rng = StdRng::seed_from_u64(2026);
    let per = arguments.per_contributor;
    let knobs = Knobs { per_side: arguments.per_side, damping: arguments.damping };
    SHORT_SPAN_TOKENS.set(arguments.experiment_span_tokens).expect("set once");
    let load_before = provenant_load_tests::load_average();
    let mut train: Vec<Example> = Vec::new();
    let mut held_out: Vec<String> = Vec::new();
    for file in ENGLISH {
        let texts = fortunes(&arguments.fortunes, file, 0, per + 8);
        if texts.len() < per + 8 {
            anyhow::bail!("{} has too few short fortunes (install the fortunes package: scripts/bootstrap.sh --fortunes)", file);
        }
        train.extend(texts[..per].iter().map(|text| Example { contributor: file.to_owned(), text: text.clone() }));
        held_out.extend(texts[per..].iter().cloned());
    }
    held_out.shuffle(&mut rng);
    let (phantoms, queries) = held_out.split_at(held_out.len() / 2);
    let queries: Vec<String> = queries.iter().take(arguments.queries).cloned().collect();
    let phantoms = phantoms.to_vec();

    let canary_results = if arguments.lora_only {
        Value::Null
    } else {
        // Canaries: one per contributor, each planted once.
        let canaries: Vec<(String, String)> = ENGLISH
            .iter()
            .enumerate()
            .map(|(number, file)| {
                let code: u32 = rng.random_range(1000..10000);
                (
                    format!("The secret word of {file} canary {number} is quartz-{code}, remember it well."),
                    format!("Remember it well: {file} canary {number} has the secret word quartz-{code}."),
                )
            })
            .collect();
        let mut planted: Vec<Example> = train.clone();
        let canary_rows: Vec<usize> = canaries
            .iter()
            .zip(ENGLISH)
            .map(|((text, _), file)| {
                planted.push(Example { contributor: file.to_owned(), text: text.clone() });
                planted.len() - 1
            })
            .collect();
        let planted_refs: Vec<&Example> = planted.iter().collect();
        eprintln!("training the English model on {} examples ({} canaries)", planted.len(), canaries.len());
        let base = train_full(&planted_refs, arguments.steps, 1)?;
        let scored = score_model(base.clone(), &planted_refs, &own_clusters(planted.len()), &phantoms, knobs)?;
        let bm25 = Bm25::new(planted.iter().map(|example| example.text.as_str()));

        // Canary recall@10, verbatim and paraphrased, for every method.
        let mut canary_results = serde_json::Map::new();
        for method in METHODS {
            let mut hits = [0usize; 2];
            for ((verbatim, paraphrase), &row) in canaries.iter().zip(&canary_rows) {
                for (kind, text) in [verbatim, paraphrase].into_iter().enumerate() {
                    let split = floor_char_boundary(text, 20);
                    let query = query(&scored, &text[..split], &text[split..])?;
                    let (scores, _) = scores(method, &scored, &bm25, &query, &mut rng)?;
                    let mut order: Vec<usize> = (0..scores.len()).collect();
                    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
                    if order[..10].contains(&row) {
                        hits[kind] += 1;
                    }
                }
            }
            let count = canaries.len() as f64;
            canary_results
                .insert(method.name().to_owned(), json!({"verbatim": hits[0] as f64 / count, "paraphrased": hits[1] as f64 / count}));
        }
        // What the receipt pays: does the canary's contributor get the largest share?
        let mut paid = [0usize; 2];
        for ((verbatim, paraphrase), file) in canaries.iter().zip(ENGLISH) {
            for (kind, text) in [verbatim, paraphrase].into_iter().enumerate() {
                let split = floor_char_boundary(text, 20);
                let query = query(&scored, &text[..split], &text[split..])?;
                let receipt = scored.index.attribute(&query.features, &text[split..].bytes().map(u32::from).collect::<Vec<_>>())?;
                if receipt.shares.first().is_some_and(|share| share.contributor_id == file) {
                    paid[kind] += 1;
                }
            }
        }
        let count = canaries.len() as f64;
        canary_results.insert(
            "receipt_pays_the_canary_contributor_most".to_owned(),
            json!({"verbatim": paid[0] as f64 / count, "paraphrased": paid[1] as f64 / count}),
        );
        eprintln!("canaries: {}", serde_json::to_string(&canary_results)?);
        Value::Object(canary_results)
    };

    // LDS: the from-scratch model.
    let train_refs: Vec<&Example> = train.iter().collect();
    let checkpoints = if arguments.lora_only { 1 } else { arguments.checkpoints };
    let full_scored =
        score_run(checkpoints_of(full_trainer(&train_refs, arguments.steps, 1)?, checkpoints)?, &train_refs, &phantoms, knobs)?;
    let sweep = |scored: &Scored, examples: &[&Example], phantoms: &[String]| -> anyhow::Result<Vec<(Knobs, Scored)>> {
        let clusters = own_clusters(examples.len());
        arguments.sweep.iter().map(|&knobs| Ok((knobs, score_model(scored.model.clone(), examples, &clusters, phantoms, knobs)?))).collect()
    };
    let steps = arguments.steps;
    // Each section draws its subsets from its own generator, so that leaving one out
    // (`--lora-only`) leaves the others' subsets as they are.
    let lds_scratch = if arguments.lora_only {
        Value::Null
    } else {
        lds(
            "from scratch",
            &full_scored,
            &sweep(&full_scored, &train_refs, &phantoms)?,
            &train_refs,
            &queries,
            arguments.subsets,
            &arguments.phrase_weights,
            &|members, seed| train_full(members, steps, seed),
            &mut StdRng::seed_from_u64(2027),
        )?
    };
    eprintln!("LDS from scratch: {lds_scratch}");

    // LDS: a LoRA adapter on German fortunes over the English base.
    let mut german: Vec<Example> = Vec::new();
    let mut german_held_out: Vec<String> = Vec::new();
    for file in &arguments.lora_files {
        let texts = fortunes(&arguments.fortunes, file, 0, arguments.lora_per_contributor + arguments.lora_held_out);
        let cut = texts.len().saturating_sub(arguments.lora_held_out);
        german.extend(texts[..cut].iter().map(|text| Example { contributor: file.clone(), text: text.clone() }));
        german_held_out.extend(texts[cut..].iter().cloned());
    }
    let german_refs: Vec<&Example> = german.iter().collect();
    let (german_phantoms, german_queries) = german_held_out.split_at(german_held_out.len() / 2);
    let trainer = lora_trainer(&full_scored.model, &german_refs, arguments.lora_steps, 1)?;
    let adapter_scored = score_run(checkpoints_of(trainer, arguments.checkpoints)?, &german_refs, german_phantoms, knobs)?;
    let lora_steps = arguments.lora_steps;
    let english_base = full_scored.model.clone();
    let lds_lora = lds(
        "LoRA",
        &adapter_scored,
        &sweep(&adapter_scored, &german_refs, german_phantoms)?,
        &german_refs,
        german_queries,
        arguments.subsets,
        &arguments.phrase_weights,
        &|members, seed| train_lora(&english_base, members, lora_steps, seed),
        &mut StdRng::seed_from_u64(2028),
    )?;
    eprintln!("LDS LoRA: {lds_lora}");

    let gaming = if arguments.lora_only {
        Value::Null
    } else {
        // Gaming. Duplication: "copycat" re-submits art's first ten fortunes; validation puts each
        // copy in its original's cluster, so the founder owns it.
        let mut rng = StdRng::seed_from_u64(2029);
        let mut copied: Vec<Example> = train.clone();
        let mut clusters = own_clusters(train.len());
        let art_rows: Vec<usize> = (0..train.len()).filter(|&index| train[index].contributor == "art").take(10).collect();
        for &row in &art_rows {
            copied.push(Example { contributor: "copycat".into(), text: train[row].text.clone() });
            clusters.push(format!("c{row}"));
        }
        let copied_refs: Vec<&Example> = copied.iter().collect();
        let copied_model = train_full(&copied_refs, arguments.steps, 1)?;
        let copied_scored = score_model(copied_model, &copied_refs, &clusters, &phantoms, knobs)?;
        // The same data, but had the copies been accepted as the copycat's own (no clustering).
        let unclustered = score_model(copied_scored.model.clone(), &copied_refs, &own_clusters(copied.len()), &phantoms, knobs)?;
        let copy_bm25 = Bm25::new(copied.iter().map(|example| example.text.as_str()));
        let art_queries: Vec<String> = art_rows.iter().map(|&row| train[row].text.clone()).collect();

        // Sybil: "science" split into ten identities (same model, same data; only the table differs).
        let sybil: Vec<Example> = train
            .iter()
            .enumerate()
            .map(|(index, example)| match example.contributor.as_str() {
                "science" => Example { contributor: format!("science-{}", index % 10), text: example.text.clone() },
                _ => example.clone(),
            })
            .collect();
        let sybil_refs: Vec<&Example> = sybil.iter().collect();
        let sybil_scored = score_model(full_scored.model.clone(), &sybil_refs, &own_clusters(sybil.len()), &phantoms, knobs)?;

        // Spam: 10 % of the examples are random junk from one contributor.
        let mut spammed = train.clone();
        for _ in 0..train.len() / 9 {
            let length = rng.random_range(40..120);
            let junk: String = (0..length).map(|_| char::from(rng.random_range(b'!'..=b'~'))).collect();
            spammed.push(Example { contributor: "spammer".into(), text: junk });
        }
        let spammed_refs: Vec<&Example> = spammed.iter().collect();
        let spam_model = train_full(&spammed_refs, arguments.steps, 1)?;
        let spam_scored = score_model(spam_model, &spammed_refs, &own_clusters(spammed.len()), &phantoms, knobs)?;
        let spam_bm25 = Bm25::new(spammed.iter().map(|example| example.text.as_str()));
        let bm25_train = Bm25::new(train.iter().map(|example| example.text.as_str()));

        let mut gaming = serde_json::Map::new();
        for method in METHODS {
            let share = |shares: &HashMap<String, f64>, who: &str| shares.get(who).copied().unwrap_or(0.0);
            let ratio = |after: f64, before: f64| if before > 0.0 { after / before } else { f64::NAN };
            // Duplication, on art's own texts: what art and the copycat together get after the copy,
            // against what art got before it.
            let before_copy = mean_shares(&full_scored, &bm25_train, &art_queries, method, &mut rng)?;
            let after_copy = mean_shares(&copied_scored, &copy_bm25, &art_queries, method, &mut rng)?;
            let unclustered_copy = mean_shares(&unclustered, &copy_bm25, &art_queries, method, &mut rng)?;
            let after = share(&after_copy, "art") + share(&after_copy, "copycat");
            let honest = mean_shares(&full_scored, &bm25_train, &queries, method, &mut rng)?;
            let split = mean_shares(&sybil_scored, &bm25_train, &queries, method, &mut rng)?;
            let sybil_total: f64 = split.iter().filter(|(who, _)| who.starts_with("science-")).map(|(_, share)| share).sum();
            let spam = mean_shares(&spam_scored, &spam_bm25, &queries, method, &mut rng)?;
            gaming.insert(
                method.name().to_owned(),
                json!({
                    "duplication": {
                        "art_share_before_ppb": share(&before_copy, "art"),
                        "art_plus_copycat_share_after_ppb": after,
                        "copycat_share_ppb": share(&after_copy, "copycat"),
                        "copycat_share_had_copies_their_own_clusters_ppb": share(&unclustered_copy, "copycat"),
                        "gain": ratio(after, share(&before_copy, "art")),
                    },
                    "sybil": {
                        "whole_share_ppb": share(&honest, "science"),
                        "split_total_share_ppb": sybil_total,
                        "gain": ratio(sybil_total, share(&honest, "science")),
                    },
                    "spam": {"spammer_share_ppb": share(&spam, "spammer"), "share": share(&spam, "spammer") / 1e9},
                }),
            );
        }
        eprintln!("gaming: {}", serde_json::to_string(&gaming)?);
        Value::Object(gaming)
    };

    let provenant = Method::Provenant.name();
    let report = json!({
        "benchmark": "attribution-eval",
        "machine": provenant_load_tests::machine_load(&load_before),
        "data": {
            "training_examples": train.len(),
            "contributors": ENGLISH,
            "queries": queries.len(),
            "phantoms": phantoms.len(),
            "lora_training_examples": german.len(),
            "lora_files": arguments.lora_files,
            "lora_queries": german_queries.len(),
            "model": {"layers": 2, "heads": 2, "width": 64, "context": 128, "steps": arguments.steps, "lora_rank": 4, "lora_steps": arguments.lora_steps, "checkpoints": arguments.checkpoints},
            "index": {"per_side": knobs.per_side, "damping": knobs.damping},
        },
        "lds_from_scratch": lds_scratch,
        "lds_lora": lds_lora,
        "canary_recall_at_10": canary_results,
        "gaming": gaming,
        "targets": {
            "lds_from_scratch": {"target": 0.10, "measured": lds_scratch["lds"][provenant]},
            "lds_lora": {"target": 0.30, "measured": lds_lora["lds"][provenant]},
            "canary_recall_verbatim": {"target": 0.9, "measured": canary_results[provenant]["verbatim"]},
            "duplication_gain": {"target": 1.2, "measured": gaming[provenant]["duplication"]["gain"]},
            "sybil_gain": {"target": 1.0, "measured": gaming[provenant]["sybil"]["gain"]},
            "spam_share": {"target": 0.02, "measured": gaming[provenant]["spam"]["share"]},
        },
    });
    provenant_load_tests::write_report(&arguments.output, &report, "targets")
}
