//! auris-audio: the audio front-end of auris, from a file to Whisper log-mel features.
//!
//! Pipeline (tensor-free, plain `Vec<f32>`):
//!
//! 1. [`decode_file`] / [`decode_bytes`]: WAV (8/16/24/32-bit int, 32-bit float), FLAC, MP3,
//!    Ogg Vorbis via symphonia → [`Pcm`], mono (channels averaged) at the file's rate.
//! 2. [`resample`]: rubato windowed sinc to 16 kHz, time-aligned, `ceil(L · to / from)`
//!    samples. [`to_16k`] resamples a [`Pcm`] and validates it (non-empty, finite, at least
//!    one encoder token); [`load_audio_16k`] chains decoding and [`to_16k`].
//!    For long files, [`scan`] measures a file without keeping it and [`WindowReader`] hands
//!    out one 30 s window of 16 kHz samples at a time ([`PcmStream`] decoding packet by packet,
//!    [`StreamResampler`] resampling in fixed chunks): memory bounded by a window, whatever the
//!    length, and the same samples.
//! 3. [`MelExtractor`]: `WhisperFeatureExtractor`'s log-mel, one [`LogMel`] of shape
//!    `(n_mels, 3000)` per 30 s window (`n_mels` 128 for Qwen2-Audio, 80 for older Whisper).
//!    Samples are right-padded with zeros to 480 000; `valid_frames = ceil(min(L, 480000) / 160)`.
//!
//! Length bookkeeping for the Qwen2-Audio encoder (`_get_feat_extract_output_lengths` in
//! transformers' `src/transformers/models/qwen2_audio/modeling_qwen2_audio.py`): `F` valid frames →
//! `T1 =` [`conv_output_len`]`(F)` after the conv stem → `N =` [`pooled_len`]`(T1)` audio
//! tokens ([`audio_token_count`]). 3000 frames → 1500 → 750 tokens (25 per second).

pub mod attention;
pub mod config;
mod decode;
pub mod encoder;
mod error;
mod mel;
pub mod plan;
mod resample;
mod stem;
mod stream;

use std::path::Path;

pub use decode::{decode_bytes, decode_file, Pcm, PcmStream, FORMATS_READ};
pub use error::AudioError;
pub use mel::{LogMel, MelConfig, MelExtractor};
pub use resample::{resample, StreamResampler, RATE_RANGE_HZ};
pub use stream::{scan, scan_stream, window_lengths, AudioInfo, WindowReader};

/// Sample rate of the features, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;
/// FFT size and Hann window length, in samples (25 ms).
pub const N_FFT: usize = 400;
/// Hop between mel frames, in samples (10 ms).
pub const HOP_LENGTH: usize = 160;
/// Samples in one window (30 s at 16 kHz).
pub const CHUNK_SAMPLES: usize = 480_000;
/// Mel frames in one window (`CHUNK_SAMPLES / HOP_LENGTH`).
pub const CHUNK_FRAMES: usize = 3_000;

/// Decodes `path`, averages channels and resamples to [`SAMPLE_RATE`].
///
/// Errors (all naming `path`): unreadable or non-audio file, corrupt or truncated stream,
/// no samples, a NaN/infinite sample, or audio too short for one encoder token
/// ([`AudioError::TooShort`]: 320 samples or fewer at 16 kHz, i.e. `F <= 2`).
pub fn load_audio_16k(path: &Path) -> Result<Vec<f32>, AudioError> {
    to_16k(&decode_file(path)?, path)
}

/// Resamples decoded audio to [`SAMPLE_RATE`] and checks it gives at least one encoder token
/// ([`AudioError::TooShort`] naming `path` otherwise). [`load_audio_16k`] is
/// `to_16k(&decode_file(path)?, path)`; call the two steps yourself to keep the [`Pcm`]'s
/// rate and channel count.
pub fn to_16k(pcm: &Pcm, path: &Path) -> Result<Vec<f32>, AudioError> {
    if pcm.samples.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    if let Some((index, &value)) = pcm.samples.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(AudioError::NonFinite {
            path: path.to_path_buf(),
            index,
            value,
        });
    }
    check_rate(pcm.sample_rate, path)?;
    let samples = resample(&pcm.samples, pcm.sample_rate, SAMPLE_RATE)?;
    check_length(samples.len(), path)?;
    Ok(samples)
}

/// [`AudioError::Unsupported`] naming `path` when `rate` lies outside [`RATE_RANGE_HZ`].
fn check_rate(rate: u32, path: &Path) -> Result<(), AudioError> {
    if RATE_RANGE_HZ.contains(&rate) {
        return Ok(());
    }
    Err(AudioError::Unsupported {
        path: path.to_path_buf(),
        what: format!(
            "sample rate {rate} Hz (auris resamples {}..={} Hz)",
            RATE_RANGE_HZ.start(),
            RATE_RANGE_HZ.end()
        ),
    })
}

/// [`AudioError::TooShort`] naming `path` when `samples` at 16 kHz give no encoder token.
fn check_length(samples: usize, path: &Path) -> Result<(), AudioError> {
    let frames = samples.div_ceil(HOP_LENGTH);
    if audio_token_count(frames) == 0 {
        return Err(AudioError::TooShort {
            path: path.to_path_buf(),
            samples,
            frames,
        });
    }
    Ok(())
}

/// Valid mel frames of one window holding `n_samples` samples at 16 kHz:
/// `ceil(min(n_samples, 480000) / 160)`.
pub fn valid_frames(n_samples: usize) -> usize {
    n_samples.min(CHUNK_SAMPLES).div_ceil(HOP_LENGTH)
}

/// Length after the encoder's conv stem (conv2 has stride 2): `T1 = (F - 1) // 2 + 1`, which
/// equals `ceil(F / 2)` for every `F >= 0` (so `F = 0` gives 0).
pub fn conv_output_len(frames: usize) -> usize {
    frames.div_ceil(2)
}

/// Length after `AvgPool1d(2, 2)`: `N = (T1 - 2) // 2 + 1` with Python floor division, which
/// equals `T1 / 2` (floor) for every `T1 >= 0`; in particular `T1 < 2` gives 0.
pub fn pooled_len(t1: usize) -> usize {
    t1 / 2
}

/// Audio tokens the encoder yields for `frames` valid mel frames:
/// `pooled_len(conv_output_len(frames))`. Zero for `frames <= 2`.
pub fn audio_token_count(frames: usize) -> usize {
    pooled_len(conv_output_len(frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference formula, with Python floor division on signed integers.
    fn reference_lengths(f: i64) -> (i64, i64) {
        let t1 = (f - 1).div_euclid(2) + 1;
        (t1, (t1 - 2).div_euclid(2) + 1)
    }

    #[test]
    fn length_formulas_match_the_reference() {
        assert_eq!(conv_output_len(3000), 1500);
        assert_eq!(audio_token_count(3000), 750);
        assert_eq!((conv_output_len(100), audio_token_count(100)), (50, 25));
        assert_eq!(audio_token_count(1000), 250);
        for f in 0..=2 {
            assert_eq!(audio_token_count(f), 0, "F = {f}");
        }
        assert_eq!(audio_token_count(3), 1);
        for f in 0..=3000usize {
            let (t1, n) = reference_lengths(f as i64);
            assert_eq!(conv_output_len(f) as i64, t1, "F = {f}");
            assert_eq!(pooled_len(conv_output_len(f)) as i64, n.max(0), "F = {f}");
        }
        assert_eq!((pooled_len(0), pooled_len(1), pooled_len(2)), (0, 0, 1));
    }

    #[test]
    fn valid_frames_formula() {
        assert_eq!(valid_frames(0), 0);
        assert_eq!(valid_frames(1), 1);
        assert_eq!(valid_frames(160), 1);
        assert_eq!(valid_frames(161), 2);
        assert_eq!(valid_frames(320), 2);
        assert_eq!(valid_frames(16_000), 100);
        assert_eq!(valid_frames(480_000), CHUNK_FRAMES);
        assert_eq!(valid_frames(10_000_000), CHUNK_FRAMES);
        assert_eq!(MelConfig::whisper(128).n_frames(), CHUNK_FRAMES);
        assert_eq!(CHUNK_SAMPLES / HOP_LENGTH, CHUNK_FRAMES);
    }
}
