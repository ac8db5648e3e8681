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
//! 4. Phrases (method `span-v2`), shorter shared spans of `min_phrase_tokens` up to
//!    `min_span_tokens`, credit the distinct clusters holding them by the same length × rarity
//!    rule (a phrase found at more than `max_phrase_occurrences` positions credits nobody).
//!    Phrase credit is exact evidence, not an estimate, so it takes no noise margin: it is the
//!    same for one identity or ten, and a copy joins its founder's cluster. On retrained subsets
//!    it predicts a small model's loss better than its gradients do (`make attribution-eval`).
//! 5. The channels are mixed by coverage: verbatim spans pay the fraction of output tokens they
//!    cover (an answer copied verbatim is paid by its spans); phrases `phrase_weight` times the
//!    fraction of the remaining tokens they cover, out of what is left; the gradients the rest
//!    (a novel answer is paid by its gradients).
//! 6. Parts per billion come from one largest-remainder allocation (ties broken by id), so the
//!    shares and the base pool sum to exactly 10⁹.

use std::collections::BTreeMap;

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
    /// Shortest shared phrase that counts, in tokens (rule 4); shorter than `min_span_tokens`.
    pub min_phrase_tokens: usize,
    /// A phrase found at more positions than this is common text.
    pub max_phrase_occurrences: usize,
    /// The most of the non-verbatim part phrases may pay, reached when they cover every
    /// non-verbatim token. Absent from indexes built before phrases (method `span-v1`): there
    /// it is 0, so their receipts recompute as they were issued.
    #[serde(default)]
    pub phrase_weight: f64,
}

impl Default for ReceiptRules {
    fn default() -> Self {
        Self {
            top_examples: 10,
            noise_z: 2.0,
            min_span_tokens: 24,
            max_span_occurrences: 256,
            min_phrase_tokens: 6,
            max_phrase_occurrences: 256,
            phrase_weight: DEFAULT_PHRASE_WEIGHT,
        }
    }
}

impl ReceiptRules {
    /// Refuses rules that cannot mean what they say: a negative or non-finite margin, spans or
    /// phrases of no tokens, phrases no shorter than spans, or a phrase weight outside [0, 1].
    ///
    /// # Errors
    ///
    /// [`Error::Shape`](crate::Error::Shape), naming the rule.
    pub fn check(&self) -> Result<(), crate::Error> {
        let problem = if !(self.noise_z.is_finite() && self.noise_z >= 0.0) {
            Some(format!("noise_z {} is not a finite number ≥ 0", self.noise_z))
        } else if self.min_span_tokens == 0 || self.min_phrase_tokens == 0 {
            Some("min_span_tokens and min_phrase_tokens must be at least 1".to_owned())
        } else if self.phrase_weight > 0.0 && self.min_phrase_tokens >= self.min_span_tokens {
            Some(format!("min_phrase_tokens {} must be shorter than min_span_tokens {}", self.min_phrase_tokens, self.min_span_tokens))
        } else if !(0.0..=1.0).contains(&self.phrase_weight) {
            Some(format!("phrase_weight {} is not between 0 and 1", self.phrase_weight))
        } else {
            None
        };
        problem.map_or(Ok(()), |problem| Err(crate::Error::Shape(format!("receipt rules: {problem}"))))
    }
}

/// `phrase_weight` of new indexes: chosen on `make attribution-eval` (README, "Attribution").
pub const DEFAULT_PHRASE_WEIGHT: f64 = 0.5;

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
    /// Fraction of the output tokens outside verbatim spans that credited phrases cover, in
    /// parts per billion (rule 5); 0 when the index's rules have no phrases.
    #[serde(default)]
    pub phrase_coverage_ppb: u64,
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

/// What each channel found in one answer, and the part of the whole each pays (rules 1–5).
struct Channels {
    /// Per owner: the signed sum of gradient scores less its noise margin, clipped at 0.
    gradient_weights: Vec<f64>,
    /// The owners' positive gradient sums, before margins: what the gradient part is split by.
    positive_mass: f64,
    sigma: f64,
    verbatim: Credit,
    phrases: Credit,
    /// Fractions of the whole that verbatim spans, phrases and gradients pay: they sum to 1.
    verbatim_part: f64,
    phrase_part: f64,
    gradient_part: f64,
}

impl Channels {
    fn of(evidence: &Evidence<'_>, rules: &ReceiptRules) -> Self {
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
            (evidence.phantom_scores.iter().map(|&score| f64::from(score).powi(2)).sum::<f64>() / evidence.phantom_scores.len() as f64)
                .sqrt()
        };
        let positive_mass: f64 = sums.iter().map(|&sum| sum.max(0.0)).sum();
        let gradient_weights: Vec<f64> =
            sums.iter().zip(&counts).map(|(&sum, &count)| (sum - rules.noise_z * sigma * (count as f64).sqrt()).max(0.0)).collect();

        // 3. Verbatim spans, and 4. phrases (over the tokens the spans leave).
        let (verbatim, phrases) = match evidence.spans {
            Some((index, output)) => {
                let long = index.maximal_spans(output, rules.min_span_tokens);
                let verbatim = span_credit(table, index, long, rules.max_span_occurrences, output.len(), None);
                let phrases = if rules.phrase_weight > 0.0 {
                    let short =
                        index.maximal_spans(output, rules.min_phrase_tokens).into_iter().filter(|hit| hit.len < rules.min_span_tokens);
                    span_credit(table, index, short, rules.max_phrase_occurrences, output.len(), Some(&verbatim.covered))
                } else {
                    Credit::none(owners.len(), table.len())
                };
                (verbatim, phrases)
            }
            None => (Credit::none(owners.len(), table.len()), Credit::none(owners.len(), table.len())),
        };

        // 5. The parts: spans by their coverage, phrases by theirs out of what is left.
        let verbatim_part = if verbatim.total > 0.0 { verbatim.coverage } else { 0.0 };
        let phrase_share = if phrases.total > 0.0 { rules.phrase_weight.clamp(0.0, 1.0) * phrases.coverage } else { 0.0 };
        Channels {
            gradient_weights,
            positive_mass,
            sigma,
            verbatim,
            phrases,
            verbatim_part,
            phrase_part: (1.0 - verbatim_part) * phrase_share,
            gradient_part: (1.0 - verbatim_part) * (1.0 - phrase_share),
        }
    }
}

/// Each training example's weight in one answer's receipt, as a fraction of the whole: its
/// gradient score's part of the gradient channel (signed, before its owner's noise margin), and
/// its cluster's credit in the span and phrase channels. Summed over a set of examples, it
/// predicts how much that set shaped the answer: `make attribution-eval` correlates it with
/// retraining.
pub fn example_weights(evidence: &Evidence<'_>, rules: &ReceiptRules) -> Vec<f64> {
    let channels = Channels::of(evidence, rules);
    let part = |weight: f64, total: f64| if total > 0.0 { weight / total } else { 0.0 };
    evidence
        .scores
        .iter()
        .enumerate()
        .map(|(row, &score)| {
            channels.gradient_part * part(f64::from(score), channels.positive_mass)
                + channels.verbatim_part * part(channels.verbatim.per_row[row], channels.verbatim.total)
                + channels.phrase_part * part(channels.phrases.per_row[row], channels.phrases.total)
        })
        .collect()
}

pub fn attribute(evidence: &Evidence<'_>, rules: &ReceiptRules) -> Attribution {
    let table = evidence.table;
    let owners = table.owners();
    let channels = Channels::of(evidence, rules);
    let (positive_mass, gradient_part) = (channels.positive_mass, channels.gradient_part);
    let explained: f64 = channels.gradient_weights.iter().sum();

    // Fractions of the whole for every owner and the base pool.
    let mut fractions = vec![0.0f64; owners.len()];
    let mut base = gradient_part;
    if positive_mass > 0.0 {
        for (fraction, weight) in fractions.iter_mut().zip(&channels.gradient_weights) {
            *fraction += gradient_part * weight / positive_mass;
        }
        base = gradient_part * (1.0 - explained / positive_mass);
    }
    for (credit, part) in [(&channels.verbatim, channels.verbatim_part), (&channels.phrases, channels.phrase_part)] {
        if credit.total > 0.0 {
            for (fraction, weight) in fractions.iter_mut().zip(&credit.per_owner) {
                *fraction += part * weight / credit.total;
            }
        }
    }
    // 6. Parts per billion.
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
        ((rules.noise_z * channels.sigma * gradient_part / positive_mass) * WHOLE_PPB as f64).clamp(0.0, WHOLE_PPB as f64).round() as u64
    } else {
        0
    };
    let phrase_coverage = if channels.phrases.total > 0.0 { channels.phrases.coverage } else { 0.0 };
    Attribution {
        top_examples: top_examples(table, evidence.scores, rules.top_examples),
        shares,
        base_pool_ppb,
        noise_floor_ppb,
        span_coverage_ppb: (channels.verbatim_part * WHOLE_PPB as f64).round() as u64,
        phrase_coverage_ppb: (phrase_coverage * WHOLE_PPB as f64).round() as u64,
        spans: channels.verbatim.spans,
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

/// What one span channel (verbatim spans or phrases) credits in an answer.
struct Credit {
    per_owner: Vec<f64>,
    /// Per table row: the credit of the cluster the row is the first of.
    per_row: Vec<f64>,
    total: f64,
    /// The credited spans, listed in the receipt (verbatim spans only: phrases are many).
    spans: Vec<SpanCredit>,
    /// Output tokens inside a credited span.
    covered: Vec<bool>,
    /// The fraction of the output's tokens, those not `excluded`, that credited spans cover.
    coverage: f64,
}

impl Credit {
    fn none(owners: usize, rows: usize) -> Self {
        Credit { per_owner: vec![0.0; owners], per_row: vec![0.0; rows], total: 0.0, spans: Vec::new(), covered: Vec::new(), coverage: 0.0 }
    }
}

/// Credit for `hits`: each span held by at most `max_occurrences` positions credits the distinct
/// clusters holding it, `length × ln(1 + clusters / clusters holding it)` split among them, each
/// through the cluster's first row. Coverage counts the output tokens not in `excluded`.
fn span_credit(
    table: &ExampleTable,
    index: &SpanIndex,
    hits: impl IntoIterator<Item = SpanHit>,
    max_occurrences: usize,
    output_len: usize,
    excluded: Option<&[bool]>,
) -> Credit {
    let mut credit = Credit::none(table.owners().len(), table.len());
    let listed = excluded.is_none();
    credit.covered = vec![false; output_len];
    for SpanHit { start, len, first, end } in hits {
        if end - first > max_occurrences {
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
        for &row in clusters.values() {
            credit.per_owner[table.owner_of(row)] += each;
            credit.per_row[row] += each;
            if listed {
                let example = table.row(row);
                credit.spans.push(SpanCredit {
                    contribution_id: example.contribution_id.clone(),
                    duplicate_cluster_id: example.duplicate_cluster_id.clone(),
                    output_token_start: start as u32,
                    length_tokens: len as u32,
                });
            }
        }
        credit.covered[start..start + len].iter_mut().for_each(|slot| *slot = true);
    }
    credit.total = credit.per_owner.iter().sum();
    let counted = |at: usize| excluded.is_none_or(|excluded| !excluded.get(at).copied().unwrap_or(false));
    let eligible = (0..output_len).filter(|&at| counted(at)).count();
    let covered = (0..output_len).filter(|&at| counted(at) && credit.covered[at]).count();
    credit.coverage = if eligible == 0 { 0.0 } else { covered as f64 / eligible as f64 };
    credit
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

    /// Ten tokens per row: alice 0..10, bob 100..110, carol 200..210 (and more rows after).
    fn stream_of(rows: usize) -> SpanIndex {
        SpanIndex::build((0..rows as u32).flat_map(|row| row * 100..row * 100 + 10).collect()).expect("builds")
    }

    #[test]
    fn phrases_pay_the_clusters_sharing_short_spans_by_how_much_of_the_answer_they_cover() {
        let table = table(&[("alice", "a"), ("bob", "b"), ("carol", "c")]);
        let index = stream_of(3);
        // Eight of bob's tokens, seven of alice's, five of its own: no verbatim span (24).
        let output: Vec<u32> = (100..108).chain(0..7).chain(900..905).collect();
        let evidence = Evidence { table: &table, scores: &[0.0, 0.0, 0.0], phantom_scores: &[], spans: Some((&index, &output)) };
        let attribution = attribute(&evidence, &ReceiptRules::default());
        assert_eq!((attribution.span_coverage_ppb, attribution.phrase_coverage_ppb), (0, 750_000_000));
        assert!(attribution.spans.is_empty(), "phrases are not listed");
        // Phrases pay 0.5 × 0.75 of the whole, by length (equal rarity); no gradient evidence,
        // so the rest is the base pool's.
        assert_eq!((share(&attribution, "bob"), share(&attribution, "alice"), share(&attribution, "carol")), (200_000_000, 175_000_000, 0));
        assert_eq!(attribution.base_pool_ppb, 625_000_000);
        let weights = example_weights(&evidence, &ReceiptRules::default());
        assert!((weights[1] - 0.2).abs() < 1e-12 && (weights[0] - 0.175).abs() < 1e-12 && weights[2] == 0.0, "{weights:?}");

        let off = ReceiptRules { phrase_weight: 0.0, ..ReceiptRules::default() };
        let without = attribute(&evidence, &off);
        assert_eq!((without.base_pool_ppb, without.phrase_coverage_ppb), (WHOLE_PPB, 0));
    }

    #[test]
    fn phrases_credit_a_copy_to_its_founder_and_a_sybil_split_gains_nothing() {
        let index = stream_of(10);
        // The answer shares a seven-token phrase with each of the ten rows.
        let output: Vec<u32> = (0..10u32).flat_map(|row| row * 100..row * 100 + 7).collect();
        let scores = [1.0f32; 10];
        let phantoms = [0.3, -0.3];
        let names = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"];
        let one = table(&(0..10).map(|i| ("dave", names[i])).collect::<Vec<_>>());
        let split = table(&(0..10).map(|i| (names[i], names[i])).collect::<Vec<_>>());
        let attribute_with = |table: &ExampleTable| {
            attribute(
                &Evidence { table, scores: &scores, phantom_scores: &phantoms, spans: Some((&index, &output)) },
                &ReceiptRules::default(),
            )
        };
        let (whole, sybils) = (attribute_with(&one), attribute_with(&split));
        assert_eq!(whole.phrase_coverage_ppb, WHOLE_PPB);
        let sybil_total: u64 = sybils.shares.iter().map(|share| share.share_ppb).sum();
        assert!(sybil_total <= share(&whole, "dave"), "split {sybil_total} vs whole {}", share(&whole, "dave"));

        // Mallory re-submits alice's row: it joins alice's cluster, and alice is paid for it.
        let copied = table(&[("alice", "a"), ("bob", "b"), ("mallory", "a")]);
        let index = SpanIndex::build((0..10).chain(100..110).chain(0..10).collect()).expect("builds");
        let output: Vec<u32> = (0..8).chain(100..107).collect();
        let attribution = attribute(
            &Evidence { table: &copied, scores: &[0.0; 3], phantom_scores: &[], spans: Some((&index, &output)) },
            &ReceiptRules::default(),
        );
        assert_eq!(share(&attribution, "mallory"), 0);
        assert!(share(&attribution, "alice") > share(&attribution, "bob"), "{attribution:?}");
    }

    #[test]
    fn rules_that_cannot_work_are_refused() {
        assert!(ReceiptRules::default().check().is_ok());
        let refused = [
            ReceiptRules { phrase_weight: 1.5, ..ReceiptRules::default() },
            ReceiptRules { phrase_weight: f64::NAN, ..ReceiptRules::default() },
            ReceiptRules { min_phrase_tokens: 24, ..ReceiptRules::default() },
            ReceiptRules { min_span_tokens: 0, ..ReceiptRules::default() },
            ReceiptRules { noise_z: -1.0, ..ReceiptRules::default() },
        ];
        for rules in refused {
            assert!(rules.check().is_err(), "{rules:?}");
        }
        // Without phrases, their length does not matter.
        assert!(ReceiptRules { min_span_tokens: 4, phrase_weight: 0.0, ..ReceiptRules::default() }.check().is_ok());
    }

    #[test]
    fn rules_recorded_before_phrases_recompute_without_them() {
        let recorded = r#"{"top_examples": 10, "noise_z": 2.0, "min_span_tokens": 24, "max_span_occurrences": 256}"#;
        let rules: ReceiptRules = serde_json::from_str(recorded).expect("reads");
        assert_eq!(rules.phrase_weight, 0.0);
        let table = table(&[("alice", "a"), ("bob", "b")]);
        let index = stream_of(2);
        let output: Vec<u32> = (100..110).chain(0..3).collect();
        let evidence = Evidence { table: &table, scores: &[2.0, 1.0], phantom_scores: &[0.1, -0.1], spans: Some((&index, &output)) };
        let attribution = attribute(&evidence, &rules);
        assert_eq!(attribution.phrase_coverage_ppb, 0);
        // Gradients alone: (2 − 0.2) and (1 − 0.2) of 3.
        assert!(share(&attribution, "alice").abs_diff(600_000_000) <= 1 && share(&attribution, "bob").abs_diff(266_666_667) <= 1);
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

        #[test]
        fn example_weights_add_up_to_the_shares_when_no_margin_applies(
            scores in proptest::collection::vec(0.0f32..10.0, 4..24),
            output in proptest::collection::vec(0u32..2, 0..40),
        ) {
            // Rows of ten tokens over a two-letter alphabet share many phrases with the output.
            let rows: Vec<(&str, &str)> = (0..scores.len()).map(|i| (["a", "b", "c"][i % 3], ["a", "b", "c"][i % 3])).collect();
            let table = table(&rows);
            let stream: Vec<u32> = (0..scores.len() * 10).map(|at| ((at * 7 + at / 3) % 2) as u32).collect();
            let index = SpanIndex::build(stream).expect("builds");
            let evidence = Evidence { table: &table, scores: &scores, phantom_scores: &[], spans: Some((&index, &output)) };
            let rules = ReceiptRules { min_span_tokens: 9, min_phrase_tokens: 4, max_span_occurrences: 1_000, max_phrase_occurrences: 1_000, ..ReceiptRules::default() };
            let attribution = attribute(&evidence, &rules);
            prop_assert_eq!(total(&attribution), WHOLE_PPB);
            let weights = example_weights(&evidence, &rules);
            for owner in ["a", "b", "c"] {
                let summed: f64 = (0..rows.len()).filter(|&row| rows[row].0 == owner).map(|row| weights[row]).sum();
                let paid = share(&attribution, owner) as f64 / WHOLE_PPB as f64;
                prop_assert!((summed - paid).abs() < 1e-8, "{} weights {} vs share {}", owner, summed, paid);
            }
        }
    }
}
