//! `attribution-bench`: what a receipt costs.
//!
//! - Scoring one query over 10⁴ and 10⁵ indexed examples, f16 and int8, beside a plain read of
//!   the same number of bytes (the memory-bandwidth floor scoring cannot beat) in the same run.
//! - The whole receipt for a 256-token answer on a demo-sized model (forward and backward with
//!   probes, scoring over 10⁵ examples, span matching, shares), and its parts.
//! - Span matching over a 10⁷-token training stream (and the suffix array's build time).
//!
//! Features are seeded random numbers of the model's real feature width: scoring cost depends on
//! sizes, not values. The token stream is seeded word salad over a 5,000-word Zipf vocabulary,
//! and the 256-token answer is copied from it, so span matching does real work.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use attribution::receipt::{Evidence, attribute};
use attribution::{BlockLayout, ExampleRow, ExampleTable, FeatureMatrix, Index, IndexInput, Precision, Projection, ReceiptRules};
use clap::Parser;
use infer::attribution::AttributedModel;
use model::backend::inference_device;
use model::{Featurizer, ModelConfig, Transformer};
use provenant_load_tests::{median, peak_rss_mib};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Attribution scoring, receipts and span matching (JSON report)")]
struct Arguments {
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Examples in the receipt's index (and the largest scoring case).
    #[arg(long, default_value_t = 100_000)]
    examples: usize,
    /// Tokens in the span index.
    #[arg(long, default_value_t = 10_000_000)]
    stream_tokens: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 128)]
    width: usize,
    /// Projected width per side of each layer (the index's `per_side`).
    #[arg(long, default_value_t = 4)]
    per_side: usize,
    #[arg(long, default_value_t = 256)]
    output_tokens: usize,
    #[arg(long, default_value = "target/bench/attribution.json")]
    output: std::path::PathBuf,
}

fn seconds(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

/// Median milliseconds of `rounds` calls (after one untimed call).
fn time_ms(rounds: usize, mut work: impl FnMut()) -> (f64, Vec<f64>) {
    work();
    let runs: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            work();
            seconds(started) * 1e3
        })
        .collect();
    (median(&runs), runs)
}

fn random_features(rng: &mut StdRng, count: usize) -> Vec<f32> {
    (0..count).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Seeded word salad: Zipf-distributed words from a fixed vocabulary, as bytes.
fn word_salad(rng: &mut StdRng, tokens: usize) -> Vec<u32> {
    let vocabulary: Vec<Vec<u8>> = (0..5_000)
        .map(|_| {
            let len = rng.random_range(2..9);
            (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect()
        })
        .collect();
    // Zipf by inverse transform over harmonic weights.
    let weights: Vec<f64> = (1..=vocabulary.len()).map(|rank| 1.0 / rank as f64).collect();
    let total: f64 = weights.iter().sum();
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |sum, weight| {
            *sum += weight / total;
            Some(*sum)
        })
        .collect();
    let mut stream = Vec::with_capacity(tokens + 16);
    while stream.len() < tokens {
        let draw: f64 = rng.random();
        let word = &vocabulary[cumulative.partition_point(|&edge| edge < draw).min(vocabulary.len() - 1)];
        stream.extend(word.iter().map(|&byte| u32::from(byte)));
        stream.push(u32::from(b' '));
    }
    stream.truncate(tokens);
    stream
}

#[allow(clippy::print_stdout, reason = "progress of a long benchmark")]
fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let load_before = provenant_load_tests::load_average();
    let mut rng = StdRng::seed_from_u64(7);
    let config = ModelConfig::new(259, arguments.layers, arguments.heads, arguments.width, arguments.output_tokens + 32);
    let model = Transformer::new(&config, 1, &inference_device())?;
    let featurizer = Featurizer::new(&model, 3, arguments.per_side)?;
    let dim = featurizer.dim();
    println!("feature width {dim} ({} layers x 6 x {}²)", arguments.layers, arguments.per_side);

    // 1. Scoring beside a plain read of the same bytes.
    let query = random_features(&mut rng, dim);
    let mut scoring = Vec::new();
    for examples in [10_000usize, arguments.examples] {
        let values = random_features(&mut rng, examples * dim);
        for precision in [Precision::F16, Precision::Int8] {
            let matrix = FeatureMatrix::encode(&values, dim, precision)?;
            let bytes = matrix.to_bytes().len();
            let (score_ms, score_runs) = time_ms(arguments.rounds, || {
                black_box(matrix.scores(black_box(&query)).expect("scores"));
            });
            // The floor: summing as many bytes as the matrix holds, as u64 words.
            let plain: Vec<u64> = (0..bytes / 8).map(|index| index as u64).collect();
            let (read_ms, read_runs) = time_ms(arguments.rounds, || {
                black_box(black_box(&plain).iter().fold(0u64, |sum, &word| sum.wrapping_add(word)));
            });
            println!("{examples} examples {}: scoring {score_ms:.2} ms, plain read {read_ms:.2} ms", precision.name());
            scoring.push(json!({
                "examples": examples,
                "precision": precision.name(),
                "matrix_bytes": bytes,
                "score_ms_median": score_ms,
                "score_ms_runs": score_runs,
                "plain_read_ms_median": read_ms,
                "plain_read_ms_runs": read_runs,
                "score_gb_per_s": bytes as f64 / score_ms / 1e6,
                "plain_read_gb_per_s": bytes as f64 / read_ms / 1e6,
                "ratio_score_to_read": score_ms / read_ms,
            }));
        }
    }

    // 2. Span index over the stream.
    // The salad's last output's worth is left out of the index: an answer in the stream's words
    // that the stream does not hold, which shares many short phrases with it.
    let mut stream = word_salad(&mut rng, arguments.stream_tokens + arguments.output_tokens);
    let unseen = stream.split_off(arguments.stream_tokens);
    let started = Instant::now();
    let spans = attribution::SpanIndex::build(stream.clone())?;
    let suffix_array_seconds = seconds(started);
    println!("suffix array over {} tokens: {suffix_array_seconds:.1} s", stream.len());
    let start = stream.len() / 3;
    let answer: Vec<u32> = stream[start..start + arguments.output_tokens].to_vec();
    let rules = ReceiptRules::default();
    let (span_ms, span_runs) = time_ms(arguments.rounds, || {
        black_box(spans.maximal_spans(black_box(&answer), rules.min_span_tokens));
    });
    let novel: Vec<u32> = word_salad(&mut StdRng::seed_from_u64(99), arguments.output_tokens);
    let (novel_span_ms, _) = time_ms(arguments.rounds, || {
        black_box(spans.maximal_spans(black_box(&novel), rules.min_span_tokens));
    });
    let (phrase_ms, _) = time_ms(arguments.rounds, || {
        black_box(spans.maximal_spans(black_box(&unseen), rules.min_phrase_tokens));
    });
    println!(
        "span matching, 256 copied tokens: {span_ms:.2} ms; 256 novel tokens: {novel_span_ms:.2} ms; phrases of 256 unseen tokens: {phrase_ms:.2} ms"
    );
    drop(spans);

    // 3. The whole receipt over an index of `examples` rows, its stream split evenly.
    let per_example = (stream.len() / arguments.examples).max(1) as u64;
    let rows: Vec<ExampleRow> = (0..arguments.examples as u64)
        .map(|example| ExampleRow {
            example,
            contribution_id: format!("contribution-{example}"),
            contributor_id: format!("contributor-{}", example % 100),
            duplicate_cluster_id: format!("contribution-{example}"),
            token_offset: example * per_example,
            token_count: per_example,
            datanet_id: String::new(),
        })
        .collect();
    let blocks: Vec<BlockLayout> =
        featurizer.blocks().iter().map(|block| BlockLayout { name: block.name(), offset: block.offset, len: block.len }).collect();
    let started = Instant::now();
    let built = attribution::build(IndexInput {
        model_id: "bench".into(),
        model_weights_sha256: String::new(),
        base_weights_sha256: String::new(),
        projection: Projection { seed: 3, per_side: arguments.per_side, dim, blocks },
        features: random_features(&mut rng, arguments.examples * dim),
        phantoms: random_features(&mut rng, 256 * dim),
        table: ExampleTable::new(rows)?,
        tokens: stream,
        precision: Precision::F16,
        damping: 0.1,
        rules: rules.clone(),
    })?;
    let build_seconds = seconds(started);
    let artifacts: HashMap<String, Vec<u8>> = built.artifacts.into_iter().collect();
    let index = Index::assemble(&built.manifest_bytes, &artifacts)?;
    drop(artifacts);
    // The receipt rules alone (verbatim spans, phrases, shares) for the unseen answer, and the
    // same without phrases: what phrases add to a receipt.
    let (scores, phantom_scores) = index.scores(&random_features(&mut rng, dim))?;
    let evidence =
        Evidence { table: index.table(), scores: &scores, phantom_scores: &phantom_scores, spans: Some((index.spans(), &unseen)) };
    let without_phrases = ReceiptRules { phrase_weight: 0.0, ..rules.clone() };
    let (rules_ms, _) = time_ms(arguments.rounds, || {
        black_box(attribute(black_box(&evidence), &rules));
    });
    let (rules_without_phrases_ms, _) = time_ms(arguments.rounds, || {
        black_box(attribute(black_box(&evidence), &without_phrases));
    });
    let phrase_coverage = attribute(&evidence, &rules).phrase_coverage_ppb as f64 / 1e9;
    println!(
        "receipt rules for the unseen answer: {rules_ms:.2} ms, {rules_without_phrases_ms:.2} ms without phrases (phrase coverage {phrase_coverage:.2})"
    );
    let attributed = AttributedModel::new(index, model.clone())?;
    let prompt = infer::generation::prompt_tokens("Tell me something: ");
    let (receipt_ms, receipt_runs) = time_ms(arguments.rounds, || {
        black_box(attributed.attribute(black_box(&prompt), black_box(&answer)).expect("attributes"));
    });
    let (unseen_receipt_ms, unseen_receipt_runs) = time_ms(arguments.rounds, || {
        black_box(attributed.attribute(black_box(&prompt), black_box(&unseen)).expect("attributes"));
    });
    let mut sequence = prompt.clone();
    sequence.extend_from_slice(&answer);
    let (featurise_ms, _) = time_ms(arguments.rounds, || {
        let sequence = model::Sequence::answer(&sequence, prompt.len());
        black_box(featurizer.features(&model, &[sequence]).expect("features"));
    });
    println!(
        "receipt for {} output tokens over {} examples: {receipt_ms:.1} ms copied, {unseen_receipt_ms:.1} ms unseen (featurise {featurise_ms:.1} ms)",
        answer.len(),
        arguments.examples
    );

    let f16_at_largest = scoring
        .iter()
        .find(|case| case["examples"] == arguments.examples && case["precision"] == "f16")
        .and_then(|case| case["score_ms_median"].as_f64())
        .unwrap_or(f64::NAN);
    let report: Value = json!({
        "benchmark": "attribution-bench",
        "machine": provenant_load_tests::machine_load(&load_before),
        "model": {"layers": arguments.layers, "heads": arguments.heads, "width": arguments.width, "context": config.context_length, "feature_dim": dim},
        "scoring": scoring,
        "receipt": {
            "output_tokens": answer.len(),
            "indexed_examples": arguments.examples,
            "receipt_ms_median": receipt_ms,
            "receipt_ms_runs": receipt_runs,
            // An answer the stream does not hold, in its words: phrases, few verbatim spans.
            "unseen_receipt_ms_median": unseen_receipt_ms,
            "unseen_receipt_ms_runs": unseen_receipt_runs,
            "unseen_rules_ms_median": rules_ms,
            "unseen_rules_without_phrases_ms_median": rules_without_phrases_ms,
            "unseen_phrase_coverage": phrase_coverage,
            "featurise_ms_median": featurise_ms,
            "index_build_seconds": build_seconds,
        },
        "spans": {
            "stream_tokens": arguments.stream_tokens,
            "suffix_array_build_seconds": suffix_array_seconds,
            "match_copied_ms_median": span_ms,
            "match_copied_ms_runs": span_runs,
            "match_novel_ms_median": novel_span_ms,
            "match_phrases_unseen_ms_median": phrase_ms,
        },
        "peak_rss_mib": peak_rss_mib(),
        "targets": {
            "scoring_ms_at_1e5_f16": {"target": 20.0, "measured": f16_at_largest, "met": f16_at_largest <= 20.0},
            "receipt_ms": {"target": 150.0, "measured": receipt_ms.max(unseen_receipt_ms), "met": receipt_ms.max(unseen_receipt_ms) <= 150.0},
        },
    });
    provenant_load_tests::write_report(&arguments.output, &report, "targets")
}
