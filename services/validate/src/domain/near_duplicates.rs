//! Near-duplicate detection: MinHash signatures over word shingles, banded locality-sensitive
//! hashing to find candidates, and the signature estimate of Jaccard similarity to confirm.
//!
//! Everything is deterministic and portable (our own hash functions with fixed seeds, no
//! `std` hasher whose output may change between Rust releases), because signatures are
//! stored and compared across deployments. A duplicate joins the cluster of the earliest
//! record it matches, so [`NearDuplicateIndex::find`] prefers the earliest on ties.

use std::collections::HashMap;

/// Words per shingle. Fortunes and similar records are short; three-word shingles keep small
/// edits from hiding a copy while two unrelated texts rarely share many.
pub const SHINGLE_WORDS: usize = 3;
/// Bands × rows = hashes per signature. With 20 bands of 6 rows a pair at Jaccard 0.8 becomes
/// a candidate with probability 1 - (1 - 0.8^6)^20 ≈ 0.998; at 0.5, ≈ 0.27 (then rejected by
/// the estimate).
pub const BANDS: usize = 20;
pub const ROWS: usize = 6;
pub const SIGNATURE_LENGTH: usize = BANDS * ROWS;
/// Default similarity at which a record counts as a near duplicate.
pub const DEFAULT_THRESHOLD: f64 = 0.8;

/// FNV-1a, 64-bit: stable across platforms and releases.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a_continue(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(FNV_OFFSET, bytes)
}

/// SplitMix64 finaliser: a strong 64-bit mixer, used to derive per-row hash functions.
const fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// Lower-cased alphanumeric words.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase).collect()
}

/// FNV-1a of `words` joined by single spaces, without building the joined string.
fn fnv1a_joined(words: &[String]) -> u64 {
    let mut hash = FNV_OFFSET;
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            hash = fnv1a_continue(hash, b" ");
        }
        hash = fnv1a_continue(hash, word.as_bytes());
    }
    hash
}

/// Hashes of the distinct word shingles of `text` (the whole word list when it is shorter than
/// a shingle). Empty for a text without words.
pub fn shingles(text: &str) -> Vec<u64> {
    let words = words(text);
    let mut hashes: Vec<u64> = if words.len() < SHINGLE_WORDS {
        if words.is_empty() { Vec::new() } else { vec![fnv1a_joined(&words)] }
    } else {
        words.windows(SHINGLE_WORDS).map(fnv1a_joined).collect()
    };
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// Row `r`'s hash function is `mix(shingle ^ ROW_SEEDS[r])`, with `ROW_SEEDS[r] = mix(r + 1)`:
/// computed once, not per shingle.
const ROW_SEEDS: [u64; SIGNATURE_LENGTH] = {
    let mut seeds = [0u64; SIGNATURE_LENGTH];
    let mut row = 0;
    while row < SIGNATURE_LENGTH {
        seeds[row] = mix(row as u64 + 1);
        row += 1;
    }
    seeds
};

/// A MinHash signature: for each of the hash functions, the minimum over the shingles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature(pub [u64; SIGNATURE_LENGTH]);

impl Signature {
    /// `None` for a text without words (nothing to compare).
    pub fn of(text: &str) -> Option<Signature> {
        let shingles = shingles(text);
        if shingles.is_empty() {
            return None;
        }
        let minimums = ROW_SEEDS.map(|seed| shingles.iter().fold(u64::MAX, |minimum, shingle| minimum.min(mix(shingle ^ seed))));
        Some(Signature(minimums))
    }

    /// The fraction of agreeing rows: an unbiased estimate of the shingle sets' Jaccard similarity.
    pub fn similarity(&self, other: &Signature) -> f64 {
        let agreeing = self.0.iter().zip(other.0.iter()).filter(|(left, right)| left == right).count();
        agreeing as f64 / SIGNATURE_LENGTH as f64
    }

    pub fn band_keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.chunks(ROWS).enumerate().map(|(band, rows)| rows.iter().fold(mix(band as u64), |key, row| mix(key ^ row)))
    }
}

/// The records seen so far, findable by near-duplicate signature.
#[derive(Debug, Default)]
pub struct NearDuplicateIndex {
    bands: Vec<HashMap<u64, Vec<u32>>>,
    signatures: Vec<Signature>,
    ids: Vec<String>,
}

/// The record a new one duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub id: String,
    pub similarity: f64,
}

impl NearDuplicateIndex {
    pub fn new() -> NearDuplicateIndex {
        NearDuplicateIndex { bands: vec![HashMap::new(); BANDS], signatures: Vec::new(), ids: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds a record; records must be inserted in submission order.
    pub fn insert(&mut self, id: &str, signature: Signature) {
        let position = u32::try_from(self.ids.len()).expect("fewer than 2^32 records per index");
        for (band, key) in signature.band_keys().enumerate() {
            self.bands[band].entry(key).or_default().push(position);
        }
        self.signatures.push(signature);
        self.ids.push(id.to_owned());
    }

    /// The most similar earlier record at or above `threshold`; on equal similarity the
    /// earliest, whose submitter owns the cluster.
    pub fn find(&self, signature: &Signature, threshold: f64) -> Option<Match> {
        let mut candidates: Vec<u32> =
            signature.band_keys().enumerate().filter_map(|(band, key)| self.bands[band].get(&key)).flatten().copied().collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut best: Option<(u32, f64)> = None;
        for candidate in candidates {
            let similarity = signature.similarity(&self.signatures[candidate as usize]);
            if similarity >= threshold && best.is_none_or(|(_, best_similarity)| similarity > best_similarity) {
                best = Some((candidate, similarity));
            }
        }
        best.map(|(position, similarity)| Match { id: self.ids[position as usize].clone(), similarity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORTUNE: &str = "A day for firm decisions!!!!!  Or is it?  Everything you have ever wanted is sitting right there on the other side of fear, waiting for you to make the first move.";

    fn exact_jaccard(left: &str, right: &str) -> f64 {
        let (left, right) = (shingles(left), shingles(right));
        let intersection = left.iter().filter(|hash| right.binary_search(hash).is_ok()).count();
        intersection as f64 / (left.len() + right.len() - intersection) as f64
    }

    #[test]
    fn a_lightly_edited_copy_is_found_and_an_unrelated_text_is_not() {
        let mut index = NearDuplicateIndex::new();
        index.insert("original", Signature::of(FORTUNE).expect("words"));
        index.insert("other", Signature::of("The only thing we have to fear is fear itself, and spiders, and taxes.").expect("words"));

        let edited = FORTUNE.replace("firm", "FIRM").replace("!!!!!", "!");
        let found = index.find(&Signature::of(&edited).expect("words"), DEFAULT_THRESHOLD).expect("a near duplicate");
        assert_eq!(found.id, "original");
        let unrelated = "Q: How many programmers does it take to change a light bulb? A: None, that is a hardware problem.";
        assert_eq!(index.find(&Signature::of(unrelated).expect("words"), DEFAULT_THRESHOLD), None);
    }

    #[test]
    fn the_estimate_tracks_the_exact_jaccard_similarity() {
        let base: Vec<String> = (0..120).map(|index| format!("word{index}")).collect();
        for changed in [0usize, 6, 12, 24, 60] {
            let mut edited = base.clone();
            for word in edited.iter_mut().take(changed) {
                *word = format!("{word}x");
            }
            let (left, right) = (base.join(" "), edited.join(" "));
            let estimate = Signature::of(&left).expect("words").similarity(&Signature::of(&right).expect("words"));
            let exact = exact_jaccard(&left, &right);
            assert!((estimate - exact).abs() < 0.15, "changed {changed}: estimate {estimate:.3}, exact {exact:.3}");
        }
    }

    #[test]
    fn ties_go_to_the_earliest_record() {
        let mut index = NearDuplicateIndex::new();
        let signature = Signature::of(FORTUNE).expect("words");
        index.insert("first", signature.clone());
        index.insert("second", signature.clone());
        assert_eq!(index.find(&signature, DEFAULT_THRESHOLD).expect("match").id, "first");
    }

    /// The signature as first written: one string per shingle, each row's seed mixed anew.
    fn signature_as_first_written(text: &str) -> Option<Signature> {
        let words = words(text);
        let mut hashes: Vec<u64> = if words.len() < SHINGLE_WORDS {
            if words.is_empty() { Vec::new() } else { vec![fnv1a(words.join(" ").as_bytes())] }
        } else {
            words.windows(SHINGLE_WORDS).map(|window| fnv1a(window.join(" ").as_bytes())).collect()
        };
        hashes.sort_unstable();
        hashes.dedup();
        if hashes.is_empty() {
            return None;
        }
        let mut minimums = [u64::MAX; SIGNATURE_LENGTH];
        for shingle in hashes {
            for (row, minimum) in minimums.iter_mut().enumerate() {
                *minimum = (*minimum).min(mix(shingle ^ mix(row as u64 + 1)));
            }
        }
        Some(Signature(minimums))
    }

    #[test]
    fn signatures_equal_those_of_the_first_implementation() {
        let texts = [FORTUNE, "one", "two words", "Grüße aus Köln, ÄRGER und Ärger", "  ", "a b c d e f g h i j k l m n o p"];
        for text in texts {
            assert_eq!(Signature::of(text), signature_as_first_written(text), "{text:?}");
        }
    }

    #[test]
    fn texts_without_words_have_no_signature_and_signatures_are_stable() {
        assert_eq!(Signature::of("  ... !!! "), None);
        // Signatures are stored: the hash functions must never change silently (golden values).
        let signature = Signature::of("stable across releases").expect("words");
        assert_eq!((signature.0[0], signature.0[1], signature.0[119]), (9983544490653537015, 12836103911940922659, 2393637540786899345));
        assert_eq!(signature, Signature::of("Stable, across releases!").expect("words"));
        assert_eq!(shingles("stable across releases"), vec![fnv1a(b"stable across releases")]);
    }
}
