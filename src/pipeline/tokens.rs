//! From the encoder's output and attention scores to the audio tokens the language model
//! sees: each window pruned on its own with [`auris_prune::select_window`], or every window of
//! the input together (the family's [`SelectionScope`]), the kept rows gathered in time order.

use auris_audio::encoder::EncoderOutput;
use auris_prune::{Policy, Strategy, WindowInput};
use candle_core::{DType, Tensor};

use crate::family::SelectionScope;
use crate::Error;

/// The audio tokens handed to the language model, after pruning.
#[derive(Debug, Clone)]
pub struct AudioTokens {
    /// `(n_kept, d_audio)` encoder rows in time order.
    pub rows: Tensor,
    /// Tokens the encoder produced over all windows.
    pub n_audio_tokens: usize,
    /// Indices of the kept tokens, counted across windows.
    pub kept_indices: Vec<usize>,
    /// Attention scores of every token (all windows), when computed.
    pub scores: Option<Vec<f32>>,
}

/// Applies `policy` to the windows of one input in `scope` (each window on its own, or all
/// together) and gathers the kept encoder rows in time order; kept indices count tokens
/// across windows.
pub fn select_tokens(
    encoded: &[EncoderOutput],
    policy: &Policy,
    scope: SelectionScope,
) -> Result<AudioTokens, Error> {
    let mut gatherer = TokenGatherer::new(*policy, scope);
    for window in encoded {
        gatherer.push(window)?;
    }
    gatherer.finish()
}

/// Kept audio tokens gathered one encoded window at a time. Per window, it selects inside the
/// window, keeps its kept rows and drops the rest; over the whole input, it keeps every
/// window's rows until [`TokenGatherer::finish`] selects once over their concatenation.
/// [`select_tokens`] is this over windows encoded up front.
pub struct TokenGatherer {
    policy: Policy,
    scope: SelectionScope,
    windows: usize,
    n_audio_tokens: usize,
    rows: Vec<Tensor>,
    /// Under [`SelectionScope::WholeInput`] with pruning: every window's rows, unselected.
    pending: Vec<Tensor>,
    kept_indices: Vec<usize>,
    scores: Option<Vec<f32>>,
}

impl TokenGatherer {
    /// A gatherer applying `policy` in `scope`.
    pub fn new(policy: Policy, scope: SelectionScope) -> Self {
        Self {
            policy,
            scope,
            windows: 0,
            n_audio_tokens: 0,
            rows: Vec::new(),
            pending: Vec::new(),
            kept_indices: Vec::new(),
            scores: Some(Vec::new()),
        }
    }

    /// Selects the kept tokens of the next window and keeps their rows (or, selecting over the
    /// whole input, keeps all its rows for [`TokenGatherer::finish`]).
    pub fn push(&mut self, window: &EncoderOutput) -> Result<(), Error> {
        let n = window.len();
        match (&mut self.scores, &window.scores) {
            (Some(all), Some(scores)) => all.extend_from_slice(scores),
            _ => self.scores = None,
        }
        let offset = self.n_audio_tokens;
        if n == 0 {
            // A last window of 320 samples or fewer yields no token (and the context budget
            // counts none for it); there is nothing to select.
            self.windows += 1;
            return Ok(());
        }
        if matches!(self.policy.strategy, Strategy::None) {
            self.rows.push(window.hidden.clone());
            self.kept_indices.extend(offset..offset + n);
        } else if self.scope == SelectionScope::WholeInput {
            self.pending.push(window.hidden.clone());
        } else {
            let selection = self.select(window, self.windows)?;
            let local = auris_prune::global_indices(&[n], std::slice::from_ref(&selection))?;
            self.kept_indices.extend(local.iter().map(|&i| offset + i));
            self.rows.push(gather_rows(window, &selection)?);
        }
        self.n_audio_tokens += n;
        self.windows += 1;
        Ok(())
    }

    /// `policy`'s selection in `window`, the input's window `w` (which seeds `Random`).
    fn select(&self, window: &EncoderOutput, w: usize) -> Result<auris_prune::Selection, Error> {
        let scores = window.scores.as_deref().ok_or(Error::Invariant(
            "pruning needs the encoder's attention scores",
        ))?;
        let vectors = match self.policy.strategy {
            Strategy::VisionZip { .. } => Some(
                window
                    .hidden
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            ),
            _ => None,
        };
        let input = match &vectors {
            Some(v) => WindowInput::with_vectors(scores, v, window.hidden.dim(1)?),
            None => WindowInput::new(scores),
        };
        Ok(auris_prune::select_window(&self.policy, w, &input)?)
    }

    /// The kept rows of every window pushed, in time order; over the whole input, the one
    /// selection over every window's tokens (as window 0 of a one-window input).
    pub fn finish(mut self) -> Result<AudioTokens, Error> {
        if !self.pending.is_empty() {
            let whole = EncoderOutput {
                hidden: Tensor::cat(&self.pending, 0)?,
                scores: self.scores.clone(),
            };
            self.pending.clear();
            let selection = self.select(&whole, 0)?;
            self.kept_indices =
                auris_prune::global_indices(&[whole.len()], std::slice::from_ref(&selection))?;
            self.rows.push(gather_rows(&whole, &selection)?);
        }
        Ok(AudioTokens {
            rows: Tensor::cat(&self.rows, 0)?,
            n_audio_tokens: self.n_audio_tokens,
            kept_indices: self.kept_indices,
            scores: self.scores,
        })
    }
}

/// The rows `selection` keeps of `window`: VisionZip's merged rows, else the kept rows
/// gathered.
fn gather_rows(
    window: &EncoderOutput,
    selection: &auris_prune::Selection,
) -> Result<Tensor, Error> {
    let hidden = &window.hidden;
    Ok(match &selection.merged {
        Some(merged) => {
            Tensor::from_slice(merged, (selection.len(), hidden.dim(1)?), hidden.device())?
                .to_dtype(hidden.dtype())?
        }
        None => {
            let idx: Vec<u32> = selection.indices.iter().map(|&i| i as u32).collect();
            let idx = Tensor::from_vec(idx, selection.len(), hidden.device())?;
            hidden.index_select(&idx, 0)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use auris_prune::{Remainder, Selection};
    use candle_core::Device;

    /// Window `w` of `n` tokens of width `d`: scores on a coarse grid (so many tie), rows
    /// from a hash of the position.
    fn window(n: usize, d: usize, w: usize) -> EncoderOutput {
        let hash = |i: usize| ((i * 2_654_435_761 + w * 40_503) % 1_000_003) as f32 / 1_000_003.0;
        let scores: Vec<f32> = (0..n).map(|i| (hash(i) * 7.0).floor() / 7.0).collect();
        let rows: Vec<f32> = (0..n * d).map(|i| hash(i + 17) - 0.5).collect();
        EncoderOutput {
            hidden: Tensor::from_vec(rows, (n, d), &Device::Cpu).unwrap(),
            scores: Some(scores),
        }
    }

    /// Windows of `lengths` tokens of width 6.
    fn windows_of(lengths: &[usize]) -> Vec<EncoderOutput> {
        lengths
            .iter()
            .enumerate()
            .map(|(w, &n)| window(n, 6, w))
            .collect()
    }

    /// The prune crate's batch selection over all windows at once, and the rows it keeps.
    fn batch(policy: &Policy, windows: &[EncoderOutput]) -> Result<(Vec<usize>, Vec<f32>), Error> {
        let vectors: Vec<Vec<f32>> = windows
            .iter()
            .map(|w| w.hidden.flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let inputs: Vec<WindowInput<'_>> = windows
            .iter()
            .zip(&vectors)
            .map(|(w, v)| {
                WindowInput::with_vectors(w.scores.as_deref().unwrap(), v, w.hidden.dim(1).unwrap())
            })
            .collect();
        let selections: Vec<Selection> = auris_prune::select_windows(policy, &inputs)?;
        let lengths: Vec<usize> = windows.iter().map(EncoderOutput::len).collect();
        let kept = auris_prune::global_indices(&lengths, &selections)?;
        let mut rows = Vec::new();
        for ((selection, v), w) in selections.iter().zip(&vectors).zip(windows) {
            let d = w.hidden.dim(1)?;
            match &selection.merged {
                Some(merged) => rows.extend_from_slice(merged),
                None => {
                    for &i in &selection.indices {
                        rows.extend_from_slice(&v[i * d..(i + 1) * d]);
                    }
                }
            }
        }
        Ok((kept, rows))
    }

    fn streamed(policy: &Policy, windows: &[EncoderOutput]) -> Result<AudioTokens, Error> {
        let mut gatherer = TokenGatherer::new(*policy, SelectionScope::PerWindow);
        for w in windows {
            gatherer.push(w)?;
        }
        gatherer.finish()
    }

    #[test]
    fn streamed_selection_equals_the_prune_crates_batch_selection() {
        let strategies = [
            Strategy::None,
            Strategy::default(),
            Strategy::Segmentwise {
                segments: 3,
                remainder: Remainder::Drop,
            },
            Strategy::TopK,
            Strategy::BottomK,
            Strategy::Random { seed: 5 },
            Strategy::Uniform,
            Strategy::VisionZip {
                contextual_share: 0.18,
            },
        ];
        let layouts: [&[usize]; 4] = [&[750], &[750, 750, 12], &[3, 750, 1, 400], &[40; 7]];
        let mut compared = 0;
        for lengths in layouts {
            let windows = windows_of(lengths);
            for strategy in strategies {
                for keep in [1.0, 0.5, 0.25, 0.013] {
                    let policy = Policy::new(strategy, keep).unwrap();
                    let what = format!("{strategy:?} keep {keep} windows {lengths:?}");
                    match (batch(&policy, &windows), streamed(&policy, &windows)) {
                        (Ok((kept, rows)), Ok(tokens)) => {
                            assert_eq!(tokens.kept_indices, kept, "{what}");
                            let got: Vec<f32> =
                                tokens.rows.flatten_all().unwrap().to_vec1().unwrap();
                            assert!(
                                got.len() == rows.len()
                                    && got
                                        .iter()
                                        .zip(&rows)
                                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{what}"
                            );
                            assert_eq!(tokens.n_audio_tokens, lengths.iter().sum::<usize>());
                            compared += 1;
                        }
                        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{what}"),
                        (a, b) => panic!("{what}: batch {:?}, streamed {:?}", a.err(), b.err()),
                    }
                }
            }
        }
        assert!(compared > 100, "only {compared} selections compared");
    }

    /// Over the whole input, the gatherer's one selection equals the prune crate's selection
    /// over the windows' concatenated scores (and rows), as one window.
    #[test]
    fn whole_input_selection_equals_one_selection_over_the_concatenation() {
        let strategies = [
            Strategy::default(),
            Strategy::TopK,
            Strategy::Random { seed: 5 },
            Strategy::VisionZip {
                contextual_share: 0.18,
            },
        ];
        let layouts: [&[usize]; 3] = [&[750, 300], &[3, 750, 0, 400], &[40; 7]];
        for lengths in layouts {
            let windows = windows_of(lengths);
            let hidden: Vec<&Tensor> = windows.iter().map(|w| &w.hidden).collect();
            let whole = EncoderOutput {
                hidden: Tensor::cat(&hidden, 0).unwrap(),
                scores: Some(
                    windows
                        .iter()
                        .flat_map(|w| w.scores.clone().unwrap())
                        .collect(),
                ),
            };
            for strategy in strategies {
                let policy = Policy::new(strategy, 0.25).unwrap();
                let what = format!("{strategy:?} windows {lengths:?}");
                let (kept, rows) = batch(&policy, std::slice::from_ref(&whole)).unwrap();
                let tokens = select_tokens(&windows, &policy, SelectionScope::WholeInput).unwrap();
                assert_eq!(tokens.kept_indices, kept, "{what}");
                let got: Vec<f32> = tokens.rows.flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(got, rows, "{what}");
                assert_eq!(tokens.n_audio_tokens, whole.len(), "{what}");
                let per_window = select_tokens(&windows, &policy, SelectionScope::PerWindow);
                if lengths.len() > 1 && !matches!(strategy, Strategy::Random { .. }) {
                    assert_ne!(per_window.unwrap().kept_indices, kept, "{what}");
                }
            }
        }
    }

    #[test]
    fn a_last_window_without_tokens_is_skipped() {
        // 30 s and 10 ms: the second window has 1 mel frame and no token.
        let empty = EncoderOutput {
            hidden: Tensor::zeros((0, 6), DType::F32, &Device::Cpu).unwrap(),
            scores: Some(Vec::new()),
        };
        let windows = [window(750, 6, 0), empty];
        for strategy in [Strategy::default(), Strategy::None, Strategy::TopK] {
            let policy = Policy::new(strategy, 0.5).unwrap();
            let tokens = streamed(&policy, &windows).unwrap();
            let (kept, _) = batch(&policy, &windows[..1]).unwrap();
            assert_eq!(tokens.kept_indices, kept, "{strategy:?}");
            assert_eq!(tokens.n_audio_tokens, 750);
        }
    }
}
