//! Proof of Attribution (`shared/DESIGN.md`): the attribution index a training job builds —
//! preconditioned projected gradients of every training example, phantom controls, the example
//! table and a suffix array over the training tokens — and the rules that turn a query's
//! scores and verbatim spans into a receipt of contributor shares.
//!
//! The crate holds no model code: `provenant-model`'s `Featurizer` computes the raw gradient
//! features; everything here is plain arithmetic on them, so `train`, `infer` and `settle`
//! (and anyone re-checking a receipt) share one implementation.

pub mod index;
pub mod matrix;
mod precondition;
pub mod receipt;
pub mod spans;
pub mod table;

pub use index::{
    ArtifactRef, BlockLayout, BuiltIndex, Index, IndexInput, METHOD, Manifest, Projection, RECOMPUTABLE_METHODS, build, sha256_hex,
};
pub use matrix::{FeatureMatrix, Precision};
pub use precondition::Preconditioner;
pub use receipt::{Attribution, ExampleScore, Receipt, ReceiptRules, Share, SpanCredit, WHOLE_PPB};
pub use spans::SpanIndex;
pub use table::{ExampleRow, ExampleTable};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Shapes or parameters that cannot work together.
    #[error("{0}")]
    Shape(String),
    /// Bytes that are not the artifact they claim to be.
    #[error("corrupt {artifact}: {reason}")]
    Corrupt { artifact: &'static str, reason: String },
    /// An artifact the manifest names was not handed in.
    #[error("artifact {0} is missing")]
    Missing(String),
}
