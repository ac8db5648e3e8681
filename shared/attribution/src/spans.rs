//! Verbatim reuse: a suffix array over the training token stream, and the maximal spans of an
//! output that occur in it.
//!
//! The array is built by prefix doubling with radix passes (O(n log n), about 9 bytes per
//! token while building). A query walks the array once per output position, narrowing the
//! interval of suffixes that start with the output's next tokens (O(m · L · log n) for an
//! output of m tokens and matches of length L).

use crate::Error;

const MAGIC: &[u8; 4] = b"PVSA";

/// The training token stream and its suffix array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIndex {
    tokens: Vec<u32>,
    suffixes: Vec<u32>,
}

/// One maximal span of the output that occurs in the training stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanHit {
    /// Where the span starts in the output, and its length in tokens.
    pub start: usize,
    pub len: usize,
    /// The suffixes that start with the span: positions `suffixes[first..end]` of the stream.
    pub first: usize,
    pub end: usize,
}

impl SpanIndex {
    /// Builds the suffix array of `tokens`.
    ///
    /// # Errors
    ///
    /// If the stream has 2³² tokens or more (positions are stored as u32).
    pub fn build(tokens: Vec<u32>) -> Result<Self, Error> {
        if u32::try_from(tokens.len()).is_err() {
            return Err(Error::Shape(format!("{} tokens: a span index holds fewer than 2^32", tokens.len())));
        }
        let suffixes = suffix_array(&tokens);
        Ok(Self { tokens, suffixes })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Stream positions where the suffixes `first..end` of a hit start.
    pub fn positions(&self, first: usize, end: usize) -> impl Iterator<Item = usize> + '_ {
        self.suffixes[first..end].iter().map(|&position| position as usize)
    }

    /// Maximal spans of `output` of at least `min_len` tokens that occur in the stream: at
    /// each position the longest match, kept unless it lies inside the previous one.
    pub fn maximal_spans(&self, output: &[u32], min_len: usize) -> Vec<SpanHit> {
        let min_len = min_len.max(1);
        let mut hits: Vec<SpanHit> = Vec::new();
        let mut covered_to = 0;
        for start in 0..output.len() {
            if output.len() - start < min_len {
                break;
            }
            let (len, first, end) = self.longest_match(&output[start..]);
            if len >= min_len && start + len > covered_to {
                covered_to = start + len;
                hits.push(SpanHit { start, len, first, end });
            }
        }
        hits
    }

    /// The longest prefix of `query` found in the stream, with its suffix interval.
    fn longest_match(&self, query: &[u32]) -> (usize, usize, usize) {
        let (mut first, mut end) = (0, self.suffixes.len());
        let mut len = 0;
        while len < query.len() && first < end {
            let token = query[len];
            let at = |index: usize| self.tokens.get(self.suffixes[index] as usize + len).copied();
            // Suffixes in [first, end) share the first `len` tokens; those too short to have a
            // token at `len` sort first.
            let lower =
                first + self.suffixes[first..end].partition_point(|&s| self.tokens.get(s as usize + len).is_none_or(|&t| t < token));
            let upper = lower + self.suffixes[lower..end].partition_point(|&s| self.tokens.get(s as usize + len) == Some(&token));
            if lower == upper {
                break;
            }
            debug_assert_eq!(at(lower), Some(token));
            first = lower;
            end = upper;
            len += 1;
        }
        (len, first, end)
    }

    /// `PVSA`, the token count (u64 LE), the tokens and the suffix array (u32 LE each).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(12 + self.tokens.len() * 8);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.tokens.len() as u64).to_le_bytes());
        for value in self.tokens.iter().chain(&self.suffixes) {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Reads a span index and checks that it is one: the array must be a permutation that
    /// sorts the suffixes (checked pairwise on first tokens; a full check would cost a build).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = |reason: &str| Error::Corrupt { artifact: "span index", reason: reason.to_owned() };
        if bytes.len() < 12 || &bytes[..4] != MAGIC {
            return Err(corrupt("not a span index"));
        }
        let count = usize::try_from(u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"))).map_err(|_| corrupt("too long"))?;
        if count.checked_mul(8) != Some(bytes.len() - 12) || u32::try_from(count).is_err() {
            return Err(corrupt("length does not match the token count"));
        }
        let words: Vec<u32> = bytes[12..].chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let (tokens, suffixes) = words.split_at(count);
        let mut seen = vec![false; count];
        for &position in suffixes {
            let slot = seen.get_mut(position as usize).ok_or_else(|| corrupt("position out of range"))?;
            if std::mem::replace(slot, true) {
                return Err(corrupt("a position appears twice"));
            }
        }
        if suffixes.windows(2).any(|pair| tokens[pair[0] as usize] > tokens[pair[1] as usize]) {
            return Err(corrupt("suffixes out of order"));
        }
        Ok(Self { tokens: tokens.to_vec(), suffixes: suffixes.to_vec() })
    }
}

/// Suffix array by prefix doubling: after round `k`, suffixes are sorted by their first `2^k`
/// tokens; each round is two stable counting sorts on (rank, rank of the suffix `h` later).
fn suffix_array(tokens: &[u32]) -> Vec<u32> {
    let n = tokens.len();
    if n == 0 {
        return Vec::new();
    }
    // Initial ranks: the tokens, compressed to 0..distinct.
    let mut distinct: Vec<u32> = tokens.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut rank: Vec<u32> = tokens.iter().map(|token| distinct.binary_search(token).expect("present") as u32).collect();
    let mut classes = distinct.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by_key(|&i| rank[i as usize]);
    let mut scratch = vec![0u32; n];
    let mut next_rank = vec![0u32; n];
    let mut counts = vec![0usize; n + 1];
    let mut step = 1;
    while classes < n {
        // Sort by the second key: suffixes with no partner `step` later come first (they are
        // shorter), then the others in the order of their partners.
        let mut filled = 0;
        for i in n - step..n {
            scratch[filled] = i as u32;
            filled += 1;
        }
        for &i in &order {
            if i as usize >= step {
                scratch[filled] = i - step as u32;
                filled += 1;
            }
        }
        // Stable counting sort by the first key.
        counts[..=classes].iter_mut().for_each(|count| *count = 0);
        for &i in &scratch {
            counts[rank[i as usize] as usize + 1] += 1;
        }
        for class in 0..classes {
            counts[class + 1] += counts[class];
        }
        for &i in &scratch {
            let slot = &mut counts[rank[i as usize] as usize];
            order[*slot] = i;
            *slot += 1;
        }
        // New ranks: equal pairs share a class.
        let key = |i: u32| (rank[i as usize], rank.get(i as usize + step).map_or(-1i64, |&r| i64::from(r)));
        next_rank[order[0] as usize] = 0;
        let mut class = 0u32;
        for pair in order.windows(2) {
            if key(pair[0]) != key(pair[1]) {
                class += 1;
            }
            next_rank[pair[1] as usize] = class;
        }
        std::mem::swap(&mut rank, &mut next_rank);
        classes = class as usize + 1;
        if step >= n {
            break;
        }
        step *= 2;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(tokens: &[u32]) -> Vec<u32> {
        let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
        order.sort_by(|&a, &b| tokens[a as usize..].cmp(&tokens[b as usize..]));
        order
    }

    proptest! {
        #[test]
        fn the_suffix_array_sorts_every_suffix(tokens in proptest::collection::vec(0u32..4, 0..300)) {
            prop_assert_eq!(suffix_array(&tokens), naive(&tokens));
        }

        #[test]
        fn every_maximal_span_occurs_and_cannot_be_extended(
            stream in proptest::collection::vec(0u32..3, 1..200),
            output in proptest::collection::vec(0u32..3, 1..40),
        ) {
            let index = SpanIndex::build(stream.clone()).expect("builds");
            for hit in index.maximal_spans(&output, 3) {
                let span = &output[hit.start..hit.start + hit.len];
                let occurrences: Vec<usize> = index.positions(hit.first, hit.end).collect();
                prop_assert!(!occurrences.is_empty());
                let expected = (0..stream.len()).filter(|&p| stream[p..].starts_with(span)).count();
                prop_assert_eq!(occurrences.len(), expected, "the interval holds every occurrence");
                for position in occurrences {
                    prop_assert!(stream[position..].starts_with(span));
                }
                if hit.start + hit.len < output.len() {
                    let longer = &output[hit.start..=hit.start + hit.len];
                    prop_assert!(!stream.windows(longer.len()).any(|window| window == longer), "the span is the longest match there");
                }
            }
        }
    }

    #[test]
    fn bytes_round_trip_and_tampering_is_caught() {
        let index = SpanIndex::build(b"abracadabra".iter().map(|&b| u32::from(b)).collect()).expect("builds");
        let bytes = index.to_bytes();
        assert_eq!(SpanIndex::from_bytes(&bytes).expect("reads"), index);
        let mut swapped = bytes.clone();
        // Suffixes 4 ("adabra") and 5 ("bra") start with different tokens.
        let at = 12 + 11 * 4 + 4 * 4;
        let (first, second) = (swapped[at..at + 4].to_vec(), swapped[at + 4..at + 8].to_vec());
        swapped[at..at + 4].copy_from_slice(&second);
        swapped[at + 4..at + 8].copy_from_slice(&first);
        assert!(SpanIndex::from_bytes(&swapped).is_err(), "out of order");
        assert!(SpanIndex::from_bytes(&bytes[..bytes.len() - 4]).is_err());
        let hits = index.maximal_spans(&b"xcadabrax".iter().map(|&b| u32::from(b)).collect::<Vec<_>>(), 3);
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].start, hits[0].len, hits[0].end - hits[0].first), (1, 7, 1));
    }
}
