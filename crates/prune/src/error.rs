//! The crate's error type.

use crate::policy::STRATEGY_NAMES;

/// Everything that can go wrong when validating a [`Policy`](crate::Policy) or selecting tokens.
///
/// Every variant carries the offending value, so the message alone says what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PruneError {
    /// The keep ratio is not in `(0, 1]` (NaN included).
    #[error("keep ratio must be in (0, 1], got {value}")]
    InvalidKeep {
        /// The rejected ratio.
        value: f32,
    },
    /// The segmentwise segment count is zero.
    #[error("segments must be >= 1, got {value}")]
    InvalidSegments {
        /// The rejected segment count.
        value: usize,
    },
    /// The VisionZip contextual share is not in `[0, 1)` (NaN included).
    #[error("contextual_share must be in [0, 1), got {value}")]
    InvalidContextualShare {
        /// The rejected share.
        value: f32,
    },
    /// A strategy name that [`Strategy::from_str`](crate::Strategy) does not know.
    #[error("unknown pruning strategy {name:?}; valid names: {}", STRATEGY_NAMES.join(", "))]
    UnknownStrategy {
        /// The rejected name.
        name: String,
    },
    /// The window has no valid audio tokens (`N = 0`).
    #[error("cannot prune an empty window: N = 0 audio-token scores")]
    EmptyWindow,
    /// A score is NaN, so the ranking is undefined.
    #[error("audio-token score at position {position} is NaN")]
    NanScore {
        /// Index of the first NaN score.
        position: usize,
    },
    /// `Segmentwise` with [`Remainder::Drop`](crate::Remainder::Drop) and `K < S` keeps nothing.
    #[error(
        "segmentwise with remainder=drop keeps nothing: budget K = {budget} < segments S = \
         {segments} (floor(K/S) = 0); use remainder=spread or fewer segments"
    )]
    DropKeepsNothing {
        /// The token budget `K`.
        budget: usize,
        /// The segment count `S`.
        segments: usize,
    },
    /// The strategy needs the encoder output vectors and none were given.
    #[error("strategy {strategy} needs the encoder output vectors, but none were given")]
    MissingVectors {
        /// Name of the strategy that needs them.
        strategy: &'static str,
    },
    /// The vector dimension `d` is zero.
    #[error("encoder output vectors have dimension d = 0")]
    ZeroDimension,
    /// The vector buffer is not `N × d` floats.
    #[error(
        "encoder output vectors hold {actual} floats, expected N × d = {n} × {d} = {expected}"
    )]
    VectorShape {
        /// Number of scores `N`.
        n: usize,
        /// Row dimension `d`.
        d: usize,
        /// `N × d` (saturating).
        expected: usize,
        /// Length of the given buffer.
        actual: usize,
    },
    /// An encoder output vector holds NaN or an infinity, so cosine similarity is undefined.
    #[error("encoder output vector row {row}, column {column} is not finite: {value}")]
    NonFiniteVector {
        /// Row (token index).
        row: usize,
        /// Column within the row.
        column: usize,
        /// The offending value.
        value: f32,
    },
    /// Pruning one window of a multi-window input failed.
    #[error("window {window}: {source}")]
    Window {
        /// Index of the failing window.
        window: usize,
        /// What went wrong in it.
        source: Box<PruneError>,
    },
    /// [`global_indices`](crate::global_indices) got different numbers of lengths and selections.
    #[error("{lengths} window lengths but {selections} selections")]
    WindowCountMismatch {
        /// Number of window lengths.
        lengths: usize,
        /// Number of selections.
        selections: usize,
    },
    /// A selection refers to a token outside its window.
    #[error("window {window}: kept index {index} is out of range for N = {len}")]
    IndexOutOfRange {
        /// Index of the window.
        window: usize,
        /// The out-of-range kept index.
        index: usize,
        /// The window's token count.
        len: usize,
    },
}
