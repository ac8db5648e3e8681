//! Text to token ids and back.
//!
//! The tokenizer is an artifact like the weights: its canonical JSON is content-addressed by
//! SHA-256, and a model's config names the digest of the tokenizer it was trained with.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;

/// Vocabulary size of the byte-level tokenizer: 256 bytes and three special tokens.
pub const BYTE_VOCAB_SIZE: usize = 259;
/// Beginning of a document.
pub const BOS: u32 = 256;
/// End of a document.
pub const EOS: u32 = 257;
/// Padding; ignored by the loss.
pub const PAD: u32 = 258;

/// What a tokenizer is, as stored: a kind tag and the kind's own parameters.
///
/// Only the byte-level kind exists; a trained BPE will be another variant, and old artifacts
/// keep parsing because the tag says which one they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSpec {
    /// Every UTF-8 byte is a token; ids 256, 257 and 258 are BOS, EOS and PAD.
    ByteLevel,
}

/// Turns text into token ids and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenizer {
    spec: TokenizerSpec,
}

impl Tokenizer {
    /// The byte-level tokenizer.
    pub fn byte_level() -> Self {
        Self { spec: TokenizerSpec::ByteLevel }
    }

    /// Build the tokenizer a spec describes.
    pub fn from_spec(spec: TokenizerSpec) -> Self {
        Self { spec }
    }

    /// Parse a tokenizer from its JSON form.
    pub fn from_json(json: &str) -> Result<Self> {
        Ok(Self::from_spec(serde_json::from_str(json)?))
    }

    /// What this tokenizer is.
    pub fn spec(&self) -> &TokenizerSpec {
        &self.spec
    }

    /// Canonical JSON: fields in declaration order, no whitespace, so equal tokenizers give
    /// equal bytes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.spec).expect("a tokenizer spec holds only strings and numbers, which always serialise")
    }

    /// SHA-256 hex of the canonical JSON.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.to_json().as_bytes()))
    }

    /// Number of distinct token ids.
    pub fn vocab_size(&self) -> usize {
        match self.spec {
            TokenizerSpec::ByteLevel => BYTE_VOCAB_SIZE,
        }
    }

    /// The padding id, which the loss ignores.
    pub fn pad(&self) -> u32 {
        PAD
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self.spec {
            TokenizerSpec::ByteLevel => text.bytes().map(u32::from).collect(),
        }
    }

    /// Token ids of `text` framed as one document: BOS, the text, EOS.
    pub fn encode_document(&self, text: &str) -> Vec<u32> {
        let mut tokens = Vec::with_capacity(text.len() + 2);
        tokens.push(BOS);
        tokens.extend(self.encode(text));
        tokens.push(EOS);
        tokens
    }

    /// Text of `tokens`. Special and out-of-range ids are skipped, and byte sequences that are
    /// not valid UTF-8 (a model can generate those) become U+FFFD.
    pub fn decode(&self, tokens: &[u32]) -> String {
        match self.spec {
            TokenizerSpec::ByteLevel => {
                let bytes: Vec<u8> = tokens.iter().filter_map(|&token| u8::try_from(token).ok()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_text_with_german_and_spanish_round_trips() {
        let tokenizer = Tokenizer::byte_level();
        let text = "Grüße aus Köln, das Gebäude ist groß. ¿Dónde está el niño? ¡Mañana, señor!";
        let tokens = tokenizer.encode(text);
        assert_eq!(tokens.len(), text.len(), "one token per UTF-8 byte");
        assert!(tokens.iter().any(|&token| token >= 128), "non-ASCII text must produce high bytes");
        assert_eq!(tokenizer.decode(&tokens), text);

        let document = tokenizer.encode_document(text);
        assert_eq!((document[0], document[document.len() - 1]), (BOS, EOS));
        assert_eq!(tokenizer.decode(&document), text, "special tokens decode to nothing");
    }

    #[test]
    fn decoding_a_broken_utf8_sequence_is_lossy_not_an_error() {
        let tokenizer = Tokenizer::byte_level();
        // "ü" is 0xC3 0xBC; its first byte alone is not valid UTF-8.
        assert_eq!(tokenizer.decode(&[u32::from(b'a'), 0xC3, u32::from(b'b'), PAD]), "a\u{FFFD}b");
    }

    #[test]
    fn the_spec_round_trips_through_canonical_json_with_a_stable_digest() {
        let tokenizer = Tokenizer::byte_level();
        assert_eq!(tokenizer.to_json(), r#"{"kind":"byte_level"}"#);
        let parsed = Tokenizer::from_json(&tokenizer.to_json()).expect("own json parses");
        assert_eq!(parsed, tokenizer);
        assert_eq!(parsed.digest(), tokenizer.digest());
        assert_eq!(tokenizer.digest().len(), 64);
        assert_eq!(tokenizer.vocab_size(), 259);
        assert!(Tokenizer::from_json(r#"{"kind":"bpe"}"#).is_err(), "an unknown kind is refused");
    }
}
