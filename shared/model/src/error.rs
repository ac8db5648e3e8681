use crate::config::LoraTarget;

/// Everything that can go wrong in the model layer.
///
/// Configuration problems are reported before any tensor is allocated, so a job that cannot
/// run is refused at submission rather than minutes into training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model, LoRA or training configuration that can never work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A LoRA rank larger than the smallest side of a targeted weight matrix: the low-rank
    /// factorisation would not be low rank, and the adapter would carry more parameters than
    /// the weight it adapts.
    #[error("impossible rank {rank} for LoRA target {target:?}: at most {max} for a {rows}x{cols} weight")]
    ImpossibleRank { rank: usize, target: LoraTarget, max: usize, rows: usize, cols: usize },

    /// The token stream is too short to cut even one training window from it.
    #[error("not enough tokens: a window needs {needed}, the stream has {available}")]
    NotEnoughTokens { needed: usize, available: usize },

    /// A token id outside the model's vocabulary.
    #[error("token {token} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange { token: u32, vocab_size: usize },

    /// Rows of a batch with different lengths, or an empty batch.
    #[error("malformed batch: {0}")]
    MalformedBatch(String),

    /// The operation needs a LoRA adapter and the model has none, or the reverse.
    #[error("{0}")]
    LoraState(&'static str),

    /// An adapter trained on different base weights than the ones it is being loaded onto.
    #[error("adapter was trained on base {expected}, not on {actual}")]
    AdapterBaseMismatch { expected: String, actual: String },

    /// Bytes that are not a valid artifact of the expected kind (weights, adapter, checkpoint).
    #[error("corrupt {artifact}: {reason}")]
    Corrupt { artifact: &'static str, reason: String },

    /// Burn refused a record (missing or unexpected tensors, shape mismatch, I/O).
    #[error("record: {0}")]
    Record(String),

    /// JSON (de)serialisation of a configuration or header.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<burn::store::RecordError> for Error {
    fn from(error: burn::store::RecordError) -> Self {
        Self::Record(error.to_string())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
