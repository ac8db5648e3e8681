//! Record quality heuristics and personal-data flags.
//!
//! [`assess`] gives every record a quality score in parts per million, the problems that make
//! it unacceptable (stable codes), and flags for content that looks personal or secret. What a
//! flag leads to (reject, or accept with the flag) is the Datanet's policy, not decided here.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// Limits a Datanet can tighten; these are the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_chars: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { min_chars: 8, max_bytes: 64 * 1024 }
    }
}

/// Content that looks like it should not be in a training set as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    Email,
    Phone,
    Secret,
}

impl Flag {
    pub fn code(self) -> &'static str {
        match self {
            Flag::Email => "personal_data.email",
            Flag::Phone => "personal_data.phone",
            Flag::Secret => "secret.key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// 0 (useless) to 1,000,000 (clean prose).
    pub score_ppm: u32,
    /// Stable codes of what makes the record unacceptable; empty when it is acceptable.
    pub problems: Vec<&'static str>,
    pub flags: Vec<Flag>,
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b").expect("valid pattern"));
/// Phone numbers: an optional `+`, then 9 to 15 digits with common separators.
static PHONE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?:\+|\b)\d(?:[ .\-()]?\d){8,14}\b").expect("valid pattern"));
static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"|\bAKIA[0-9A-Z]{16}\b",
        r"|\bsk-[A-Za-z0-9_\-]{20,}",
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b",
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}",
        r"|\b[0-9a-fA-F]{40,}\b",
    ))
    .expect("valid pattern")
});

pub fn assess(record: &str, limits: Limits) -> Assessment {
    let mut problems = Vec::new();
    let trimmed = record.trim();
    if trimmed.is_empty() {
        return Assessment { score_ppm: 0, problems: vec!["record.empty"], flags: Vec::new() };
    }
    if record.len() > limits.max_bytes {
        problems.push("record.too_large");
    }
    if trimmed.chars().count() < limits.min_chars {
        problems.push("quality.too_short");
    }
    let characters = trimmed.chars().filter(|c| !c.is_whitespace()).count().max(1);
    let letters = trimmed.chars().filter(|c| c.is_alphabetic()).count();
    let letter_ratio = letters as f64 / characters as f64;
    if letter_ratio < 0.5 {
        problems.push("quality.mostly_symbols");
    }
    let control = trimmed.chars().filter(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')).count();
    if control > 0 {
        problems.push("record.control_characters");
    }
    let repetition = repetition(trimmed);
    if repetition > 0.5 {
        problems.push("quality.repetitive");
    }

    let mut flags = Vec::new();
    if EMAIL.is_match(record) {
        flags.push(Flag::Email);
    }
    if PHONE.is_match(record) {
        flags.push(Flag::Phone);
    }
    if SECRET.is_match(record) {
        flags.push(Flag::Secret);
    }

    // Letters and variety raise the score; repetition lowers it. Problems cap it low.
    let score = (letter_ratio.min(1.0) * 0.6 + (1.0 - repetition) * 0.4) * if problems.is_empty() { 1.0 } else { 0.25 };
    Assessment { score_ppm: (score.clamp(0.0, 1.0) * 1_000_000.0).round() as u32, problems, flags }
}

/// The share of a record that repeats itself: repeated lines, or (for one long line) how much
/// of the text its most frequent word takes.
fn repetition(text: &str) -> f64 {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    if lines.len() >= 4 {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for line in &lines {
            *seen.entry(line).or_default() += 1;
        }
        let repeated: usize = seen.values().filter(|count| **count > 1).map(|count| count - 1).sum();
        return repeated as f64 / lines.len() as f64;
    }
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    if words.len() < 12 {
        return 0.0;
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in &words {
        *counts.entry(word).or_default() += 1;
    }
    let most = counts.values().copied().max().unwrap_or(0);
    // Common function words make up to ~10 % of prose; only far more than that is spam.
    ((most as f64 / words.len() as f64) - 0.15).max(0.0) / 0.85
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(record: &str) -> Vec<&'static str> {
        assess(record, Limits::default()).problems
    }

    #[test]
    fn ordinary_prose_is_acceptable_and_scores_high() {
        let fortune = "Don't tell me what you dreamed last night for I've been reading Freud.";
        let assessment = assess(fortune, Limits::default());
        assert!(assessment.problems.is_empty(), "{assessment:?}");
        assert!(assessment.flags.is_empty());
        assert!(assessment.score_ppm > 800_000, "{assessment:?}");
    }

    #[test]
    fn each_kind_of_bad_record_has_its_code() {
        assert_eq!(codes("   \n "), ["record.empty"]);
        assert_eq!(codes("Hi!"), ["quality.too_short"]);
        assert_eq!(codes("#### $$$ 1234 5678 %%%% ^^^^"), ["quality.mostly_symbols"]);
        assert_eq!(codes(&"buy cheap pills now\n".repeat(10)), ["quality.repetitive"]);
        assert_eq!(codes(&"spam ".repeat(40)), ["quality.repetitive"]);
        assert!(codes(&"x".repeat(70 * 1024)).contains(&"record.too_large"));
        assert_eq!(codes("a bell rings \u{7} here"), ["record.control_characters"]);
    }

    #[test]
    fn personal_data_and_secrets_are_flagged_not_judged() {
        let flags = |record: &str| assess(record, Limits::default()).flags;
        assert_eq!(flags("Write to jane.doe@example.org for a copy of the newsletter."), [Flag::Email]);
        assert_eq!(flags("Call me at +49 30 1234 5678 after six in the evening."), [Flag::Phone]);
        assert_eq!(flags("the key is AKIAIOSFODNN7EXAMPLE, keep it safe please"), [Flag::Secret]);
        assert_eq!(flags("-----BEGIN RSA PRIVATE KEY----- and then the usual lines"), [Flag::Secret]);
        assert!(flags("In 1984 there were 365 days and 12 months, as usual.").is_empty());
        assert_eq!(Flag::Email.code(), "personal_data.email");
    }
}
