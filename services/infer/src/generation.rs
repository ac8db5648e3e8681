//! Decoding: sampling next tokens from a model, stop sequences, and text that streams in
//! whole characters.
//!
//! Prompts are framed as training documents were (BOS, then the text's bytes); the model's
//! EOS ends an answer. A prompt must fit the context; an answer may run past it, the model then
//! seeing the last `context_length` tokens (a sliding window), so `max_tokens` is bounded by
//! configuration rather than by the context.
//!
//! The same model, prompt, parameters and seed give the same answer, token for token: the
//! sampler draws from SplitMix64 seeded by the request, and nothing else is random.

use model::tokenizer::{BOS, EOS, PAD};
use model::{KvCache, Transformer};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 picks the most likely token (greedy); higher flattens the distribution.
    pub temperature: f64,
    /// Nucleus sampling: draw only among the most likely tokens whose probabilities sum to
    /// at least this.
    pub top_p: f64,
    pub seed: u64,
}

/// One decoding job.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Token ids, BOS first.
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    /// Byte strings that end the answer; the answer excludes them.
    pub stop: Vec<Vec<u8>>,
    pub sampling: Sampling,
}

/// Why decoding ended, as OpenAI's `finish_reason` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS, or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The caller went away (a closed stream); what was generated is still billed.
    Abandoned,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Abandoned => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A finished answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The answer's text: exactly the concatenation of what was streamed.
    pub text: String,
    /// Tokens sampled, EOS and stop-sequence tokens included (each cost a forward pass).
    pub output_tokens: u32,
    pub finish: FinishReason,
}

/// The prompt's tokens, framed as a training document's start.
pub fn prompt_tokens(prompt: &str) -> Vec<u32> {
    let mut tokens = Vec::with_capacity(prompt.len() + 1);
    tokens.push(BOS);
    tokens.extend(prompt.bytes().map(u32::from));
    tokens
}

/// One sequence being decoded: its tokens so far, what it has shown, its random stream.
/// [`generate`] drives one alone; the batcher drives many through one forward pass.
#[derive(Debug)]
pub struct Decoder {
    request: GenerationRequest,
    tokens: Vec<u32>,
    output: Vec<u8>,
    streamer: Streamer,
    random: SplitMix64,
    sampled: u32,
}

impl Decoder {
    pub fn new(request: GenerationRequest) -> Decoder {
        let random = SplitMix64(request.sampling.seed);
        Decoder { tokens: request.prompt.clone(), request, output: Vec::new(), streamer: Streamer::default(), random, sampled: 0 }
    }

    /// The tokens the model sees next: the last `context` ones.
    pub fn window(&self, context: usize) -> &[u32] {
        &self.tokens[self.tokens.len().saturating_sub(context)..]
    }

    /// The token a decoding step feeds next: the last one sampled, or the prompt's last.
    pub fn last_token(&self) -> u32 {
        *self.tokens.last().expect("a prompt holds BOS at least")
    }

    /// Whether the next token's position is inside the context, so that a cache of the
    /// positions before it can take it. Past the context the window slides, every position
    /// moves, and the window has to be run whole (prefilled) each step.
    pub fn continues_in_cache(&self, context: usize) -> bool {
        self.tokens.len() <= context
    }

    /// Samples the next token from the logits at the window's last position and shows what
    /// became showable; `Some` when the sequence is finished.
    pub fn step(&mut self, logits: &[f32], on_text: &mut dyn FnMut(&str) -> bool) -> Option<FinishReason> {
        let next = sample(logits, self.request.sampling, &mut self.random);
        self.sampled += 1;
        if next == EOS {
            return Some(FinishReason::Stop);
        }
        self.tokens.push(next);
        self.output.push(u8::try_from(next).expect("BOS and PAD are never sampled, EOS ended the sequence"));
        if let Some(stop) = self.request.stop.iter().find(|stop| self.output.ends_with(stop)) {
            self.output.truncate(self.output.len() - stop.len());
            return Some(FinishReason::Stop);
        }
        let held_back = longest_stop_prefix(&self.output, &self.request.stop);
        if !self.streamer.emit(&self.output[..self.output.len() - held_back], false, on_text) {
            return Some(FinishReason::Abandoned);
        }
        (self.sampled as usize >= self.request.max_tokens).then_some(FinishReason::Length)
    }

    /// Shows the rest (a held-back stop prefix that never completed, a cut-off character) and
    /// returns the answer.
    pub fn finish(mut self, finish: FinishReason, on_text: &mut dyn FnMut(&str) -> bool) -> Generated {
        self.streamer.emit(&self.output, true, on_text);
        Generated { text: self.streamer.text, output_tokens: self.sampled, finish }
    }
}

/// Decodes `request` on `model` alone, handing text to `on_text` as soon as it is whole
/// characters that cannot be the start of a stop sequence; `on_text` returns false when nobody
/// listens any more, which ends decoding. The reference the batcher is tested against.
///
/// The prompt is prefilled once and each further token is one decoding step on the cache,
/// until the window slides past the context; from then on every step prefills the window.
pub fn generate(model: &Transformer, request: &GenerationRequest, on_text: &mut dyn FnMut(&str) -> bool) -> model::Result<Generated> {
    let context = model.config().context_length;
    let mut decoder = Decoder::new(request.clone());
    let mut cache: Option<KvCache> = None;
    loop {
        let logits = match cache.as_mut() {
            Some(cache) if decoder.continues_in_cache(context) => model.decode(&[decoder.last_token()], cache)?,
            _ => {
                let (logits, fresh) = model.prefill(&[decoder.window(context)])?;
                cache = Some(fresh);
                logits
            }
        };
        if let Some(finish) = decoder.step(&logits, on_text) {
            return Ok(decoder.finish(finish, on_text));
        }
    }
}

/// The longest tail of `output` that is a proper prefix of a stop sequence: those bytes may
/// yet turn out to be a stop sequence and must not be shown.
fn longest_stop_prefix(output: &[u8], stops: &[Vec<u8>]) -> usize {
    stops.iter().flat_map(|stop| (1..stop.len()).rev().filter(move |&length| output.ends_with(&stop[..length]))).max().unwrap_or(0)
}

/// Turns a growing byte string into text in whole characters. An invalid sequence becomes
/// U+FFFD, as `String::from_utf8_lossy` would make it.
#[derive(Debug, Default)]
struct Streamer {
    consumed: usize,
    text: String,
}

impl Streamer {
    /// Emits the new text of `bytes` (a prefix of the output); `last` flushes an incomplete
    /// character too. Returns false when `on_text` does.
    fn emit(&mut self, bytes: &[u8], last: bool, on_text: &mut dyn FnMut(&str) -> bool) -> bool {
        let mut piece = String::new();
        while self.consumed < bytes.len() {
            let pending = &bytes[self.consumed..];
            match std::str::from_utf8(pending) {
                Ok(valid) => {
                    piece.push_str(valid);
                    self.consumed = bytes.len();
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    piece.push_str(std::str::from_utf8(&pending[..valid]).expect("checked valid"));
                    self.consumed += valid;
                    match error.error_len() {
                        Some(invalid) => {
                            piece.push(char::REPLACEMENT_CHARACTER);
                            self.consumed += invalid;
                        }
                        None if last => {
                            piece.push(char::REPLACEMENT_CHARACTER);
                            self.consumed = bytes.len();
                        }
                        // An incomplete character at the end: wait for its other bytes.
                        None => break,
                    }
                }
            }
        }
        if piece.is_empty() {
            return true;
        }
        self.text.push_str(&piece);
        on_text(&piece)
    }
}

/// Picks the next token from one position's logits. BOS and PAD are never picked.
fn sample(logits: &[f32], sampling: Sampling, random: &mut SplitMix64) -> u32 {
    let allowed = |token: usize| token != BOS as usize && token != PAD as usize;
    if sampling.temperature <= 0.0 {
        let best = (0..logits.len()).filter(|&token| allowed(token)).fold(None::<usize>, |best, token| match best {
            Some(current) if logits[current] >= logits[token] => Some(current),
            _ => Some(token),
        });
        return u32::try_from(best.expect("the vocabulary has ordinary tokens")).expect("a small vocabulary");
    }
    let scaled: Vec<(usize, f64)> =
        (0..logits.len()).filter(|&token| allowed(token)).map(|token| (token, f64::from(logits[token]) / sampling.temperature)).collect();
    let peak = scaled.iter().map(|&(_, value)| value).fold(f64::NEG_INFINITY, f64::max);
    let mut weights: Vec<(usize, f64)> = scaled.into_iter().map(|(token, value)| (token, (value - peak).exp())).collect();
    let total: f64 = weights.iter().map(|&(_, weight)| weight).sum();
    if sampling.top_p < 1.0 {
        // Most likely first; ties by token id, so the order (and the draw) is reproducible.
        weights.sort_by(|left, right| right.1.total_cmp(&left.1).then(left.0.cmp(&right.0)));
        let mut mass = 0.0;
        let keep = weights
            .iter()
            .position(|&(_, weight)| {
                mass += weight / total;
                mass >= sampling.top_p
            })
            .map_or(weights.len(), |index| index + 1);
        weights.truncate(keep);
    }
    let kept: f64 = weights.iter().map(|&(_, weight)| weight).sum();
    let mut threshold = random.next_unit() * kept;
    for &(token, weight) in &weights {
        if threshold < weight {
            return u32::try_from(token).expect("a small vocabulary");
        }
        threshold -= weight;
    }
    u32::try_from(weights.last().expect("at least one token is kept").0).expect("a small vocabulary")
}

/// SplitMix64: a small, fast generator whose stream depends only on its seed.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(bytes: &[&[u8]], stops: &[&[u8]]) -> (Vec<String>, String) {
        let stops: Vec<Vec<u8>> = stops.iter().map(|stop| stop.to_vec()).collect();
        let mut streamer = Streamer::default();
        let mut pieces = Vec::new();
        let mut output = Vec::new();
        for chunk in bytes {
            output.extend_from_slice(chunk);
            let held = longest_stop_prefix(&output, &stops);
            streamer.emit(&output[..output.len() - held], false, &mut |piece| {
                pieces.push(piece.to_owned());
                true
            });
        }
        streamer.emit(&output, true, &mut |piece| {
            pieces.push(piece.to_owned());
            true
        });
        (pieces, streamer.text)
    }

    #[test]
    fn streamed_pieces_are_whole_characters_and_add_up_to_the_text() {
        let euro = "€".as_bytes();
        let (pieces, text) = collect(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"], &[]);
        assert_eq!(pieces, ["a", "€", "b"]);
        assert_eq!(text, "a€b");
        let (pieces, text) = collect(&[b"x", &[0xFF], &euro[..2]], &[]);
        assert_eq!(pieces.concat(), text);
        assert_eq!(text, "x\u{FFFD}\u{FFFD}", "an invalid byte and a cut-off character both become U+FFFD");
    }

    #[test]
    fn a_possible_stop_sequence_is_held_back() {
        let stops = [b"\n\n".to_vec(), b"END".to_vec()];
        assert_eq!(longest_stop_prefix(b"abc\n", &stops), 1);
        assert_eq!(longest_stop_prefix(b"abcEN", &stops), 2);
        assert_eq!(longest_stop_prefix(b"abcE", &stops), 1);
        assert_eq!(longest_stop_prefix(b"abc", &stops), 0);
    }

    #[test]
    fn greedy_sampling_takes_the_largest_logit_and_never_a_special_token() {
        let mut logits = vec![0.0f32; 259];
        logits[BOS as usize] = 100.0;
        logits[PAD as usize] = 100.0;
        logits[b'q' as usize] = 5.0;
        let greedy = Sampling { temperature: 0.0, top_p: 1.0, seed: 0 };
        assert_eq!(sample(&logits, greedy, &mut SplitMix64(1)), u32::from(b'q'));
        let nucleus = Sampling { temperature: 1.0, top_p: 0.5, seed: 0 };
        assert_eq!(sample(&logits, nucleus, &mut SplitMix64(1)), u32::from(b'q'), "q alone holds over half the mass");
    }

    #[test]
    fn one_seed_draws_one_sequence() {
        let logits: Vec<f32> = (0..259).map(|token| (token % 7) as f32).collect();
        let sampling = Sampling { temperature: 1.0, top_p: 0.9, seed: 0 };
        let draw = |seed| {
            let mut random = SplitMix64(seed);
            (0..20).map(|_| sample(&logits, sampling, &mut random)).collect::<Vec<u32>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
