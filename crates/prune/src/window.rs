//! Multi-window audio: each 30 s window is pruned on its own, then indices are made global.

use crate::{select, Policy, PruneError, Selection, Strategy};

/// One 30 s window's pruning input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowInput<'a> {
    /// The window's `N` valid audio-token scores.
    pub scores: &'a [f32],
    /// The window's encoder output, `(N × d row-major rows, d)`; required by `VisionZip`.
    pub vectors: Option<(&'a [f32], usize)>,
}

impl<'a> WindowInput<'a> {
    /// A window with scores only.
    pub fn new(scores: &'a [f32]) -> Self {
        WindowInput {
            scores,
            vectors: None,
        }
    }

    /// A window with scores and its `N × d` encoder output rows.
    pub fn with_vectors(scores: &'a [f32], rows: &'a [f32], d: usize) -> Self {
        WindowInput {
            scores,
            vectors: Some((rows, d)),
        }
    }
}

/// Prunes every window on its own, with its own `N` and budget `K = budget(N, keep)`:
/// [`select_window`] on each window in turn.
///
/// `Random { seed }` uses `seed + w` (wrapping) for window `w`, so equal-length windows do
/// not all keep the same positions while window 0 matches a single-window [`select`].
///
/// # Errors
/// The first failing window's error, wrapped in [`PruneError::Window`] with its index.
pub fn select_windows(
    policy: &Policy,
    windows: &[WindowInput<'_>],
) -> Result<Vec<Selection>, PruneError> {
    windows
        .iter()
        .enumerate()
        .map(|(w, window)| select_window(policy, w, window))
        .collect()
}

/// Prunes window `w` of a longer input, as [`select_windows`] does for that window: a window's
/// selection depends on its own scores (and vectors) and its index only, so windows can be
/// pruned one at a time as they are encoded, holding one window's data.
///
/// # Errors
/// The window's error, wrapped in [`PruneError::Window`] with its index.
pub fn select_window(
    policy: &Policy,
    w: usize,
    window: &WindowInput<'_>,
) -> Result<Selection, PruneError> {
    let mut policy = *policy;
    if let Strategy::Random { seed } = policy.strategy {
        policy.strategy = Strategy::Random {
            seed: seed.wrapping_add(w as u64),
        };
    }
    select(&policy, window.scores, window.vectors).map_err(|source| PruneError::Window {
        window: w,
        source: Box::new(source),
    })
}

/// Turns per-window selections into indices over the concatenated audio tokens.
///
/// `lengths[w]` is window `w`'s `N`; its kept indices are offset by the sum of the earlier
/// windows' lengths. The result is ascending when every selection is.
///
/// # Errors
/// [`PruneError::WindowCountMismatch`] if the slices differ in length,
/// [`PruneError::IndexOutOfRange`] if a kept index is not below its window's `N`.
pub fn global_indices(
    lengths: &[usize],
    selections: &[Selection],
) -> Result<Vec<usize>, PruneError> {
    if lengths.len() != selections.len() {
        return Err(PruneError::WindowCountMismatch {
            lengths: lengths.len(),
            selections: selections.len(),
        });
    }
    let mut out = Vec::with_capacity(selections.iter().map(Selection::len).sum());
    let mut offset = 0usize;
    for (w, (&len, selection)) in lengths.iter().zip(selections).enumerate() {
        for &index in &selection.indices {
            if index >= len {
                return Err(PruneError::IndexOutOfRange {
                    window: w,
                    index,
                    len,
                });
            }
            out.push(offset.saturating_add(index));
        }
        offset = offset.saturating_add(len);
    }
    Ok(out)
}
