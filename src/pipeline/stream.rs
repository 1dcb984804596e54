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

use auris_prune::Strategy;

use super::*;

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
