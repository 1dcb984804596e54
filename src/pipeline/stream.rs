//! Long audio in bounded memory: decode, resample, log-mel, encode and prune one 30 s window
//! at a time, keeping only the kept encoder rows.
//!
//! Every pruning strategy selects inside each window on its own ([`auris_prune::select_window`]),
//! so a window's unkept rows can go as soon as it is encoded. What a request holds, besides
//! the model: one window of samples (480 000 `f32`), its log-mel and the encoder's working
//! tensors, one score per audio token of the whole file (4 bytes a token, the
//! [`AudioTokens::scores`] a response reports) and the kept rows. Per strategy:
//!
//! - `none`: every row (nothing is dropped, so this is the one strategy whose memory grows
//!   with the full length: `d_audio` floats a token; use `--fit-context` on long audio);
//! - `segmentwise`, `topk`, `bottomk`: the window's scores while selecting, then the kept rows;
//! - `random`, `uniform`: the same (their indices depend only on the window's length, the
//!   scores are computed for the response);
//! - `visionzip`: the window's rows once more as `f32` vectors and its merged rows while
//!   selecting, then the kept rows.
//!
//! The file is decoded twice: [`auris_audio::scan`] first measures it (the token count of every
//! window, which the context budget needs before the keep ratio is chosen) without keeping
//! any sample, then [`auris_audio::WindowReader`] reads it window by window.

use super::*;

/// Kept audio tokens gathered one encoded window at a time: selects inside the window, keeps
/// its kept rows and drops the rest. [`select_tokens`] is this over windows encoded up front.
pub struct TokenGatherer {
    policy: Policy,
    windows: usize,
    n_audio_tokens: usize,
    rows: Vec<Tensor>,
    kept_indices: Vec<usize>,
    scores: Option<Vec<f32>>,
}

impl TokenGatherer {
    /// A gatherer applying `policy` to each window.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            windows: 0,
            n_audio_tokens: 0,
            rows: Vec::new(),
            kept_indices: Vec::new(),
            scores: Some(Vec::new()),
        }
    }

    /// Selects the kept tokens of the next window and keeps their rows.
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
        } else {
            let selection = self.select(window)?;
            let local = auris_prune::global_indices(&[n], std::slice::from_ref(&selection))?;
            self.kept_indices.extend(local.iter().map(|&i| offset + i));
            self.rows.push(gather_rows(window, &selection)?);
        }
        self.n_audio_tokens += n;
        self.windows += 1;
        Ok(())
    }

    fn select(&self, window: &EncoderOutput) -> Result<auris_prune::Selection, Error> {
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
        Ok(auris_prune::select_window(
            &self.policy,
            self.windows,
            &input,
        )?)
    }

    /// The kept rows of every window pushed, in time order.
    pub fn finish(self) -> Result<AudioTokens, Error> {
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

impl Pipeline {
    /// Audio tokens of every window of a file `samples_16k` samples long at 16 kHz.
    fn window_token_counts(&self, samples_16k: usize) -> Vec<usize> {
        let mel = self.mel.config();
        auris_audio::window_lengths(samples_16k, mel.n_samples)
            .map(|len| auris_audio::audio_token_count(mel.valid_frames(len)))
            .collect()
    }

    /// [`Pipeline::run`] holding one window at a time (see the [module docs](self)).
    pub(super) fn run_streamed(
        &self,
        request: &Request,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        let start = Instant::now();
        let info = auris_audio::scan(&request.audio)?;
        let mut timings = Timings {
            decode_audio: ms(start),
            ..Timings::default()
        };
        let counts = self.window_token_counts(info.samples_16k);
        let plan = self.plan(request, &counts)?;
        let scores = !matches!(plan.policy.strategy, Strategy::None);
        let tokens = self.encode_streamed(&request.audio, &plan.policy, scores, &mut timings)?;
        if tokens.n_audio_tokens != counts.iter().sum::<usize>() {
            return Err(Error::BadFile {
                path: request.audio.clone(),
                reason: format!(
                    "the file changed while it was read: {} audio tokens, then {}",
                    counts.iter().sum::<usize>(),
                    tokens.n_audio_tokens
                ),
            });
        }
        let selected = Selected {
            audio: AudioSummary {
                duration_s: info.duration_s(),
                sample_rate: info.sample_rate,
            },
            tokens,
            timings,
        };
        self.run_selected(request, selected, plan, None, on_token)
    }

    /// Decodes `path` and computes the log-mel of, encodes and prunes with `policy` one
    /// window at a time; `scores` asks the encoder for the attention scores (pruning needs
    /// them). The stage times are added to `timings` (pruning to `projector`).
    pub fn encode_streamed(
        &self,
        path: &Path,
        policy: &Policy,
        scores: bool,
        timings: &mut Timings,
    ) -> Result<AudioTokens, Error> {
        let mut reader = auris_audio::WindowReader::open(path, self.mel.config().n_samples)?;
        let mut gatherer = TokenGatherer::new(*policy);
        loop {
            let start = Instant::now();
            let Some(samples) = reader.next_window()? else {
                break;
            };
            timings.decode_audio += ms(start);
            let start = Instant::now();
            let mel = self.mel.window(&samples)?;
            drop(samples);
            timings.mel += ms(start);
            let start = Instant::now();
            let encoded = self.encode_window(&mel, scores)?;
            timings.encoder += ms(start);
            let start = Instant::now();
            gatherer.push(&encoded)?;
            timings.projector += ms(start);
        }
        gatherer.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auris_prune::{Remainder, Selection};

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
        let mut gatherer = TokenGatherer::new(*policy);
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
            let windows: Vec<EncoderOutput> = lengths
                .iter()
                .enumerate()
                .map(|(w, &n)| window(n, 6, w))
                .collect();
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
