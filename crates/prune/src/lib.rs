//! Audio-token selection for auris: scores in, kept indices out.
//!
//! This crate is pure: no tensors and no model code. It sits between the audio encoder
//! (which produces one score per pooled audio token: attention received, last layer) and the
//! projector. The method is Segmentwise Top-K from *Segmentwise Pruning in Audio-Language
//! Models* (arXiv 2511.14293); the other strategies are the paper's baselines and ablations.
//!
//! # Contract
//!
//! One call to [`select`] prunes one 30 s window:
//!
//! - **In:** `N` valid audio-token scores `scores: &[f32]` (shape `(N,)`), optionally the
//!   encoder output vectors as an `(N, d)` row-major `&[f32]` plus `d`, and a [`Policy`]
//!   (a [`Strategy`] and a keep ratio `r` in `(0, 1]`).
//! - **Out:** a [`Selection`]: kept indices, **ascending, unique, each `< N`**, and for
//!   VisionZip the `(kept, d)` rows to use in place of gathering the encoder output.
//! - Deterministic: the same input gives the same output (`Random` too, for a given seed).
//! - Errors ([`PruneError`]) instead of panics: `N = 0`, a NaN score (naming its position),
//!   an invalid policy (naming the parameter and value), bad or missing vectors.
//!
//! Long audio is cut into 30 s windows, each pruned on its own with its own `N` and `K`:
//! [`select_windows`], then [`global_indices`] to index the concatenated token sequence.
//! Since no selection looks past its window, [`select_window`] prunes the windows one at a
//! time as they arrive (what auris does for long audio, holding one window at a time).
//!
//! # Definitions
//!
//! - **Budget:** `K = clamp(floor(r * N + 0.5), 1, N)` ([`budget`]); `r` is read as the
//!   decimal the `f32` prints as and the arithmetic is `f64`, matching a Python reference.
//! - **Ties:** between equal scores the lower index always wins (`-0.0 == 0.0`).
//! - **`none`:** all `N` tokens.
//! - **`segmentwise`** (Segmentwise Top-K, `S` segments, default 10): segment `s` covers
//!   `[floor(s*N/S), floor((s+1)*N/S))` for `s` in `0..S` (`S > N` is allowed and gives empty
//!   segments). Each segment keeps its `floor(K/S)` highest-scoring tokens (every segment has
//!   at least `floor(N/S) >= floor(K/S)` tokens, so the quota always fits).
//!   - [`Remainder::Spread`] (default): the `K - S*floor(K/S)` leftover slots go to the
//!     highest-scoring tokens not yet kept, over the whole window; exactly `K` are kept.
//!   - [`Remainder::Drop`]: the paper's literal budget, `S*floor(K/S)` tokens. When `K < S`
//!     that is 0 and [`select`] returns [`PruneError::DropKeepsNothing`].
//! - **`topk`:** the `K` highest scores. **`bottomk`:** the `K` lowest.
//! - **`random`:** `K` tokens uniformly at random without replacement, from
//!   `rand::rngs::StdRng::seed_from_u64(seed)` and `rand::seq::index::sample`. Reproducible
//!   within auris (same `rand` version), **not** across implementations: a Python reference
//!   draws different tokens.
//! - **`uniform`:** indices `floor((i + 0.5) * N / K)` for `i` in `0..K`, in exact integer
//!   arithmetic.
//! - **`visionzip`** (contextual share `c`, default 0.18):
//!   - `C = round(c * K)` with Python's round-half-to-even (`c` read as its decimal, `f64`),
//!     so selections agree with the reference script; `K - C` **dominant** tokens are the
//!     highest-scoring ones.
//!   - The `M = N - K + C` non-dominant tokens, in ascending index order, supply `C`
//!     **targets** at list positions `floor((j + 0.5) * M / C)` for `j` in `0..C` (`M >= C`
//!     always, so targets are distinct).
//!   - Every other non-dominant token joins its most cosine-similar target (cosine of the
//!     encoder output rows, in `f64`; ties go to the lower target; a zero-norm row has
//!     similarity 0 to everything, so it joins the first target).
//!   - Each target's row becomes the mean of its group (itself plus its joiners).
//!   - Output: dominant and target indices ascending, with [`Selection::merged`] holding
//!     the dominant rows copied and the target rows merged. `C = 0` gives the `topk` indices
//!     (and `merged` is then just the gathered rows).
//!   - Requires the vectors (else [`PruneError::MissingVectors`]), finite, with `d >= 1`.
//!
//! Other strategies accept vectors but only check their shape.
//!
//! # Example
//!
//! ```
//! use auris_prune::{select, Policy, Remainder, Strategy};
//!
//! let scores = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.1, 0.1, 0.5, 0.4, 0.6, 0.0];
//! let strategy = Strategy::Segmentwise { segments: 3, remainder: Remainder::Spread };
//! let policy = Policy::new(strategy, 0.5)?;
//! // K = 6: the two best of each segment [0,4) [4,8) [8,12).
//! assert_eq!(select(&policy, &scores, None)?.indices, [0, 1, 4, 5, 8, 10]);
//! # Ok::<(), auris_prune::PruneError>(())
//! ```

mod error;
mod policy;
mod select;
mod window;

pub use error::PruneError;
pub use policy::{
    validate_keep, Policy, Remainder, Strategy, DEFAULT_CONTEXTUAL_SHARE, DEFAULT_SEED,
    DEFAULT_SEGMENTS, STRATEGY_NAMES,
};
pub use select::{budget, select, Selection};
pub use window::{global_indices, select_window, select_windows, WindowInput};
