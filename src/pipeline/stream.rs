//! Long audio in bounded memory: decode, resample, log-mel, encode and prune one 30 s window
//! at a time, keeping only the kept encoder rows.
//!
//! Under [`crate::family::SelectionScope::PerWindow`] (Qwen2-Audio) every pruning strategy
//! selects inside each window on its own ([`auris_prune::select_window`]), so a window's unkept
//! rows can go as soon as it is encoded. Under [`crate::family::SelectionScope::WholeInput`]
//! (Audio Flamingo 3, as its reference) the selection ranks every window's tokens together, so
//! the input's encoder rows are all held until its last window is encoded (`d_audio` floats a
//! token: 3.8 MB per 30 s window for `d_model` 1280 in `f32`), then the unkept ones go; the
//! samples, log-mel and encoder working tensors are still one window's. What a request holds
//! per window, besides
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
//! The file (or upload) is decoded twice: [`auris_audio::scan_stream`] first measures it (the
//! token count of every window, which the context budget needs before the keep ratio is
//! chosen) without keeping any sample, then [`auris_audio::WindowReader`] reads it window by
//! window.

use super::*;

impl Pipeline {
    /// Audio tokens of every window of a file `samples_16k` samples long at 16 kHz.
    pub(super) fn window_token_counts(&self, samples_16k: usize) -> Vec<usize> {
        let mel = self.mel.config();
        auris_audio::window_lengths(samples_16k, mel.n_samples)
            .map(|len| self.family.window_tokens(mel.valid_frames(len)))
            .collect()
    }

    /// Audio tokens of each 30 s window of the file at `path`, measured without keeping its
    /// samples.
    pub fn file_window_tokens(&self, path: &Path) -> Result<Vec<usize>, Error> {
        let info = auris_audio::scan(path)?;
        Ok(self.window_token_counts(info.samples_16k))
    }

    /// Reads `pcm` one log-mel window of samples at a time.
    pub(super) fn window_reader(&self, pcm: auris_audio::PcmStream) -> auris_audio::WindowReader {
        auris_audio::WindowReader::from_stream(pcm, self.mel.config().n_samples)
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
        let reader = self.window_reader(auris_audio::PcmStream::open(path)?);
        self.stream_tokens(reader, policy, scores, timings)
    }

    /// [`Pipeline::encode_streamed`] from an opened reader.
    pub(super) fn stream_tokens(
        &self,
        mut reader: auris_audio::WindowReader,
        policy: &Policy,
        scores: bool,
        timings: &mut Timings,
    ) -> Result<AudioTokens, Error> {
        let mut gatherer = TokenGatherer::new(*policy, self.family.selection_scope());
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
