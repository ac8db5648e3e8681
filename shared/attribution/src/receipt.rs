//! From example scores and verbatim spans to a receipt: contributor shares in parts per
//! billion, a base pool for what no contributor explains, and a noise floor.
//!
//! The rules (`shared/DESIGN.md`, "Proof of Attribution"):
//! 1. Scores are summed *signed* per cluster owner (a duplicate's score goes to whoever founded
//!    its cluster); clipping happens after the sum, so noise cancels instead of paying.
//! 2. Phantom examples (never trained) give the noise scale σ of a single example's score. An
//!    owner of `n` examples keeps `max(S − z σ √n, 0)` of their sum `S`; the rest of their
//!    positive mass is unexplained and goes to the base pool. Splitting one identity into ten
//!    raises the total margin (`Σ z σ √(n/10) > z σ √n`), so sybils lose, never gain.
//! 3. Verbatim spans credit the owners of the distinct clusters that hold them, weighted by
//!    length and rarity (`ln(1 + clusters / clusters holding the span)`); a span held by more
//!    than `max_span_occurrences` positions is common text and credits nobody.
//! 4. The gradient and span shares are mixed by the fraction of output tokens the spans cover:
//!    an answer copied verbatim is paid by its spans, a novel one by its gradients.
//! 5. Parts per billion come from one largest-remainder allocation (ties broken by id), so the
//!    shares and the base pool sum to exactly 10⁹.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::spans::{SpanHit, SpanIndex};
use crate::table::{ExampleTable, Owner};

pub const WHOLE_PPB: u64 = 1_000_000_000;

/// Knobs of the receipt rules; recorded in the index manifest so a receipt can be recomputed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptRules {
    /// Examples listed in a receipt, by absolute score.
    pub top_examples: usize,
    /// Margin, in phantom standard deviations, an owner's summed score must clear.
    pub noise_z: f64,
    /// Shortest verbatim span that counts, in tokens.
    pub min_span_tokens: usize,
    /// A span found at more positions than this is common text.
    pub max_span_occurrences: usize,
}

impl Default for ReceiptRules {
    fn default() -> Self {
        Self { top_examples: 10, noise_z: 2.0, min_span_tokens: 24, max_span_occurrences: 256 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExampleScore {
    pub example: u64,
    pub contribution_id: String,
    pub contributor_id: String,
    /// Signed score in parts per billion of the total absolute score.
    pub score_ppb: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub contributor_id: String,
    pub share_ppb: u64,
    /// The Datanet the share was earned through (see [`Owner`](crate::table::Owner)); absent
    /// when the index's table names none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub datanet_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanCredit {
    pub contribution_id: String,
    pub duplicate_cluster_id: String,
    pub output_token_start: u32,
    pub length_tokens: u32,
}

/// What the scoring says about one answer, before the receipt's identity fields are added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub top_examples: Vec<ExampleScore>,
    /// One per contributor and Datanet, largest first; zero shares are left out.
    pub shares: Vec<Share>,
    pub base_pool_ppb: u64,
    pub noise_floor_ppb: u64,
    pub spans: Vec<SpanCredit>,
    /// Fraction of output tokens inside a credited span, in parts per billion.
    pub span_coverage_ppb: u64,
}

/// A receipt: the attribution of one answer and what it was computed from, so that anyone
/// holding the model and the index can recompute it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub receipt_id: String,
    pub method: String,
    /// The base model's weights.
    pub model_weights_sha256: String,
    /// The adapter's weights; empty when the base answered alone.
    pub adapter_weights_sha256: String,
    pub index_sha256: String,
    #[serde(flatten)]
    pub attribution: Attribution,
}

impl Receipt {
    /// The receipt as `InferenceServed` carries it.
    pub fn to_proto(&self) -> provenant_events::proto::inference::v1::AttributionReceipt {
        use provenant_events::proto::inference::v1 as proto;
        let attribution = &self.attribution;
        proto::AttributionReceipt {
            receipt_id: self.receipt_id.clone(),
            model_weights_sha256: self.model_weights_sha256.clone(),
            adapter_weights_sha256: self.adapter_weights_sha256.clone(),
            index_sha256: self.index_sha256.clone(),
            method: self.method.clone(),
            top_examples: attribution
                .top_examples
                .iter()
                .map(|example| proto::ExampleScore {
                    example_id: example.example.to_string(),
                    contribution_id: example.contribution_id.clone(),
                    contributor_id: example.contributor_id.clone(),
                    score_ppb: example.score_ppb,
                })
                .collect(),
            shares: attribution
                .shares
                .iter()
                .map(|share| proto::ContributorShare {
                    contributor_id: share.contributor_id.clone(),
                    share_ppb: share.share_ppb,
                    datanet_id: share.datanet_id.clone(),
                })
                .collect(),
            base_pool_ppb: attribution.base_pool_ppb,
            spans: attribution
                .spans
                .iter()
                .map(|span| proto::SpanMatch {
                    contribution_id: span.contribution_id.clone(),
                    duplicate_cluster_id: span.duplicate_cluster_id.clone(),
                    output_token_start: span.output_token_start,
                    length_tokens: span.length_tokens,
                })
                .collect(),
            noise_floor_ppb: attribution.noise_floor_ppb,
        }
    }
}

/// Inputs of one attribution.
pub struct Evidence<'a> {
    pub table: &'a ExampleTable,
    /// One per table row.
    pub scores: &'a [f32],
    /// One per phantom.
    pub phantom_scores: &'a [f32],
    pub spans: Option<(&'a SpanIndex, &'a [u32])>,
}

pub fn attribute(evidence: &Evidence<'_>, rules: &ReceiptRules) -> Attribution {
    let table = evidence.table;
    let owners = table.owners();
    // 1. Signed sums per owner.
    let mut sums = vec![0.0f64; owners.len()];
    let mut counts = vec![0usize; owners.len()];
    for (row, &score) in evidence.scores.iter().enumerate() {
        sums[table.owner_of(row)] += f64::from(score);
        counts[table.owner_of(row)] += 1;
    }
    // 2. Noise margin from the phantoms.
    let sigma = if evidence.phantom_scores.is_empty() {
        0.0
    } else {
        (evidence.phantom_scores.iter().map(|&score| f64::from(score).powi(2)).sum::<f64>() / evidence.phantom_scores.len() as f64).sqrt()
    };
    let positive_mass: f64 = sums.iter().map(|&sum| sum.max(0.0)).sum();
    let gradient_weights: Vec<f64> =
        sums.iter().zip(&counts).map(|(&sum, &count)| (sum - rules.noise_z * sigma * (count as f64).sqrt()).max(0.0)).collect();
    let explained: f64 = gradient_weights.iter().sum();

    // 3. Spans.
    let (span_weights, spans, coverage) = match evidence.spans {
        Some((index, output)) => span_credit(table, index, output, rules),
        None => (vec![0.0; owners.len()], Vec::new(), 0.0),
    };
    let span_total: f64 = span_weights.iter().sum();
    let coverage = if span_total > 0.0 { coverage } else { 0.0 };

    // 4. Mix: fractions of the whole for every owner and the base pool.
    let mut fractions = vec![0.0f64; owners.len()];
    let mut base = 1.0 - coverage;
    if positive_mass > 0.0 {
        for (fraction, weight) in fractions.iter_mut().zip(&gradient_weights) {
            *fraction += (1.0 - coverage) * weight / positive_mass;
        }
        base = (1.0 - coverage) * (1.0 - explained / positive_mass);
    }
    if span_total > 0.0 {
        for (fraction, weight) in fractions.iter_mut().zip(&span_weights) {
            *fraction += coverage * weight / span_total;
        }
    }
    // 5. Parts per billion.
    let base_pool = Owner { contributor_id: String::new(), datanet_id: String::new() };
    let mut parties: Vec<(&Owner, f64)> = vec![(&base_pool, base.max(0.0))];
    parties.extend(owners.iter().zip(fractions.iter().copied()));
    let allocated = largest_remainder(&parties);
    let base_pool_ppb = allocated[0];
    let mut shares: Vec<Share> = owners
        .iter()
        .zip(&allocated[1..])
        .filter(|(_, ppb)| **ppb > 0)
        .map(|(owner, &share_ppb)| Share { contributor_id: owner.contributor_id.clone(), share_ppb, datanet_id: owner.datanet_id.clone() })
        .collect();
    shares.sort_by(|a, b| {
        b.share_ppb.cmp(&a.share_ppb).then_with(|| (&a.contributor_id, &a.datanet_id).cmp(&(&b.contributor_id, &b.datanet_id)))
    });

    // A one-example owner at the noise margin, as a share of the whole.
    let noise_floor_ppb = if positive_mass > 0.0 {
        ((rules.noise_z * sigma * (1.0 - coverage) / positive_mass) * WHOLE_PPB as f64).clamp(0.0, WHOLE_PPB as f64).round() as u64
    } else {
        0
    };
    Attribution {
        top_examples: top_examples(table, evidence.scores, rules.top_examples),
        shares,
        base_pool_ppb,
        noise_floor_ppb,
        spans,
        span_coverage_ppb: (coverage * WHOLE_PPB as f64).round() as u64,
    }
}

fn top_examples(table: &ExampleTable, scores: &[f32], count: usize) -> Vec<ExampleScore> {
    let total: f64 = scores.iter().map(|&score| f64::from(score).abs()).sum();
    if total == 0.0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].abs().total_cmp(&scores[a].abs()).then(a.cmp(&b)));
    order
        .into_iter()
        .take(count)
        .map(|index| {
            let row = table.row(index);
            ExampleScore {
                example: row.example,
                contribution_id: row.contribution_id.clone(),
                contributor_id: row.contributor_id.clone(),
                score_ppb: (f64::from(scores[index]) / total * WHOLE_PPB as f64).round() as i64,
            }
        })
        .collect()
}

/// Per-owner span weights, the credited spans, and the fraction of output tokens they cover.
fn span_credit(table: &ExampleTable, index: &SpanIndex, output: &[u32], rules: &ReceiptRules) -> (Vec<f64>, Vec<SpanCredit>, f64) {
    let mut weights = vec![0.0f64; table.owners().len()];
    let mut credits = Vec::new();
    let mut covered = vec![false; output.len()];
    for SpanHit { start, len, first, end } in index.maximal_spans(output, rules.min_span_tokens) {
        if end - first > rules.max_span_occurrences {
            continue;
        }
        // Distinct clusters holding the span, each with the first row that shows it.
        let mut clusters: BTreeMap<usize, usize> = BTreeMap::new();
        for position in index.positions(first, end) {
            // A span that runs across two examples' boundary is not one example's text.
            let Some(row) = table.row_at(position as u64) else { continue };
            let example = table.row(row);
            if position as u64 + len as u64 > example.token_offset + example.token_count {
                continue;
            }
            clusters.entry(table.cluster_of(row)).and_modify(|first_row| *first_row = (*first_row).min(row)).or_insert(row);
        }
        if clusters.is_empty() {
            continue;
        }
        let rarity = (1.0 + table.cluster_count() as f64 / clusters.len() as f64).ln();
        let each = len as f64 * rarity / clusters.len() as f64;
        let owners: BTreeSet<usize> = clusters.values().map(|&row| table.owner_of(row)).collect();
        for &row in clusters.values() {
            weights[table.owner_of(row)] += each;
            let example = table.row(row);
            credits.push(SpanCredit {
                contribution_id: example.contribution_id.clone(),
                duplicate_cluster_id: example.duplicate_cluster_id.clone(),
                output_token_start: start as u32,
                length_tokens: len as u32,
            });
        }
        debug_assert!(!owners.is_empty());
        covered[start..start + len].iter_mut().for_each(|slot| *slot = true);
    }
    let coverage = if output.is_empty() { 0.0 } else { covered.iter().filter(|&&slot| slot).count() as f64 / output.len() as f64 };
    (weights, credits, coverage)
}

/// Splits 10⁹ over non-negative weights: floors, then the remaining units to the largest
/// fractional parts, ties to the smaller id. Sums to exactly 10⁹ unless every weight is zero,
/// when the first party (the base pool) takes all.
fn largest_remainder<K: Ord>(parties: &[(K, f64)]) -> Vec<u64> {
    let total: f64 = parties.iter().map(|(_, weight)| weight.max(0.0)).sum();
    let mut allocated = vec![0u64; parties.len()];
    if total <= 0.0 || !total.is_finite() {
        allocated[0] = WHOLE_PPB;
        return allocated;
    }
    let mut remainders = Vec::with_capacity(parties.len());
    let mut given = 0u64;
    for (slot, (id, weight)) in parties.iter().enumerate() {
        let quota = weight.max(0.0) / total * WHOLE_PPB as f64;
        let floor = quota.floor().min(WHOLE_PPB as f64) as u64;
        allocated[slot] = floor;
        given += floor;
        remainders.push((quota - floor as f64, id, slot));
    }
    remainders.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut left = WHOLE_PPB.saturating_sub(given);
    for (_, _, slot) in remainders.iter().cycle() {
        if left == 0 {
            break;
        }
        allocated[*slot] += 1;
        left -= 1;
    }
    allocated
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ExampleRow;
    use proptest::prelude::*;

    fn table(owners: &[(&str, &str)]) -> ExampleTable {
        // (contributor, cluster) per row, ten tokens each.
        ExampleTable::new(
            owners
                .iter()
                .enumerate()
                .map(|(index, (contributor, cluster))| ExampleRow {
                    example: index as u64,
                    contribution_id: format!("{contributor}-{index}"),
                    contributor_id: (*contributor).into(),
                    duplicate_cluster_id: (*cluster).into(),
                    token_offset: index as u64 * 10,
                    token_count: 10,
                    datanet_id: String::new(),
                })
                .collect(),
        )
        .expect("valid")
    }

    fn share(attribution: &Attribution, contributor: &str) -> u64 {
        attribution.shares.iter().find(|share| share.contributor_id == contributor).map_or(0, |share| share.share_ppb)
    }

    fn total(attribution: &Attribution) -> u64 {
        attribution.shares.iter().map(|share| share.share_ppb).sum::<u64>() + attribution.base_pool_ppb
    }

    #[test]
    fn signed_sums_cancel_noise_and_the_base_pool_takes_the_unexplained() {
        let table = table(&[("alice", "a1"), ("alice", "a2"), ("bob", "b1"), ("bob", "b2"), ("carol", "c1")]);
        // Bob's two examples cancel; carol is inside the noise margin.
        let scores = [5.0, 3.0, 2.0, -2.0, 0.1];
        let phantoms = [0.2, -0.2, 0.2, -0.2];
        let attribution =
            attribute(&Evidence { table: &table, scores: &scores, phantom_scores: &phantoms, spans: None }, &ReceiptRules::default());
        assert_eq!(total(&attribution), WHOLE_PPB);
        assert_eq!(share(&attribution, "bob"), 0);
        assert_eq!(share(&attribution, "carol"), 0);
        // Alice: (8 − 2·0.2·√2) / 8.1 of the whole.
        let (sigma, carol) = (f64::from(0.2f32), f64::from(0.1f32));
        let expected = (8.0 - 2.0 * sigma * 2f64.sqrt()) / (8.0 + carol) * 1e9;
        assert!((share(&attribution, "alice") as f64 - expected).abs() <= 1.0, "{} vs {expected}", share(&attribution, "alice"));
        assert_eq!(attribution.top_examples[0].contributor_id, "alice");
        assert!(attribution.noise_floor_ppb > 0);
    }

    #[test]
    fn a_copier_joins_the_founders_cluster_and_a_sybil_split_never_gains() {
        // Mallory copies alice's text: same cluster, so the score goes to alice.
        let copied = table(&[("alice", "a"), ("mallory", "a"), ("bob", "b")]);
        let attribution = attribute(
            &Evidence { table: &copied, scores: &[1.0, 1.0, 1.0], phantom_scores: &[0.1, -0.1], spans: None },
            &ReceiptRules::default(),
        );
        assert_eq!(share(&attribution, "mallory"), 0);
        assert!(share(&attribution, "alice") > share(&attribution, "bob"));

        let scores = [1.0f32; 10];
        let phantoms = [0.3, -0.3];
        let one = table(&(0..10).map(|i| ("dave", ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"][i])).collect::<Vec<_>>());
        let names = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"];
        let split = table(&(0..10).map(|i| (names[i], names[i])).collect::<Vec<_>>());
        let whole = attribute(&Evidence { table: &one, scores: &scores, phantom_scores: &phantoms, spans: None }, &ReceiptRules::default());
        let sybils =
            attribute(&Evidence { table: &split, scores: &scores, phantom_scores: &phantoms, spans: None }, &ReceiptRules::default());
        let sybil_total: u64 = sybils.shares.iter().map(|share| share.share_ppb).sum();
        assert!(sybil_total <= share(&whole, "dave"), "split {sybil_total} vs whole {}", share(&whole, "dave"));
    }

    #[test]
    fn verbatim_spans_pay_the_clusters_that_hold_them() {
        let table = table(&[("alice", "a"), ("bob", "b"), ("carol", "c")]);
        let mut stream: Vec<u32> = (0..10).collect();
        stream.extend(100..110);
        stream.extend(200..210);
        let index = SpanIndex::build(stream).expect("builds");
        // The output copies bob's ten tokens and adds five of its own.
        let output: Vec<u32> = (100..110).chain(900..905).collect();
        let rules = ReceiptRules { min_span_tokens: 4, ..ReceiptRules::default() };
        let attribution =
            attribute(&Evidence { table: &table, scores: &[0.0, 0.0, 0.0], phantom_scores: &[], spans: Some((&index, &output)) }, &rules);
        assert_eq!(attribution.span_coverage_ppb, 666_666_667);
        assert_eq!(share(&attribution, "bob"), 666_666_667);
        assert_eq!(attribution.base_pool_ppb, 333_333_333);
        assert_eq!(attribution.spans.len(), 1);
        assert_eq!(attribution.spans[0].length_tokens, 10);
    }

    proptest! {
        #[test]
        fn shares_always_sum_to_the_whole_and_ignore_row_order(
            scores in proptest::collection::vec(-10.0f32..10.0, 1..30),
            phantoms in proptest::collection::vec(-1.0f32..1.0, 0..5),
        ) {
            let names = ["a", "b", "c", "d"];
            // Each cluster is founded by its namesake, so ownership does not depend on row order.
            let rows: Vec<(&str, &str)> = (0..scores.len()).map(|i| (names[i % 4], names[i % 4])).collect();
            let attribution = attribute(&Evidence { table: &table(&rows), scores: &scores, phantom_scores: &phantoms, spans: None }, &ReceiptRules::default());
            prop_assert_eq!(total(&attribution), WHOLE_PPB);
            let mut reversed_rows = rows.clone();
            reversed_rows.reverse();
            let mut reversed_scores = scores.clone();
            reversed_scores.reverse();
            let reversed = attribute(
                &Evidence { table: &table(&reversed_rows), scores: &reversed_scores, phantom_scores: &phantoms, spans: None },
                &ReceiptRules::default(),
            );
            // Sums in another order can differ in the last float bit: allow one ppb per party.
            for share in &attribution.shares {
                let other = reversed.shares.iter().find(|s| s.contributor_id == share.contributor_id).map_or(0, |s| s.share_ppb);
                prop_assert!(share.share_ppb.abs_diff(other) <= 4, "{} {} vs {}", share.contributor_id, share.share_ppb, other);
            }
        }
    }
}
