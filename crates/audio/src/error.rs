//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong between an audio file and its log-mel features.
///
/// Variants about a file carry its `path`; for in-memory input
/// ([`decode_bytes`](crate::decode_bytes)) the `path` holds the caller's name for it, and for
/// raw samples handed to the mel extractor it is `<samples>`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The input is not audio we can decode: unknown container, no audio track, or a codec
    /// that is not compiled in (WAV/PCM, ADPCM, FLAC, MP3, Ogg Vorbis are).
    #[error("{path}: unsupported audio format: {what} (auris reads {formats})", formats = crate::decode::FORMATS_READ)]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What was not recognised or is not supported.
        what: String,
    },

    /// The file's framing is malformed before any container is read (e.g. an ID3v2 tag
    /// longer than the file).
    #[error("{path}: malformed audio file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The container or codec reported malformed data while decoding.
    #[error("{path}: corrupt audio data: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: symphonia::core::errors::Error,
    },

    /// The stream ended before the length its header declares (a cut-off WAV or FLAC file).
    #[error("{path}: truncated audio: header declares {expected_frames} frames, only {decoded_frames} could be decoded")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Frames (samples per channel) declared by the header.
        expected_frames: u64,
        /// Frames actually decoded.
        decoded_frames: u64,
    },

    /// The input decodes to zero samples.
    #[error("{path}: contains no audio samples")]
    Empty {
        /// The file.
        path: PathBuf,
    },

    /// A sample is NaN or infinite.
    #[error("{path}: non-finite sample {value} at index {index}")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Index of the first offending sample (in frames, i.e. per channel).
        index: usize,
        /// The offending value.
        value: f32,
    },

    /// The audio is shorter than one encoder token: `frames = ceil(samples / 160) <= 2` at
    /// 16 kHz (320 samples, 20 ms, or fewer).
    #[error("{path}: audio too short: {samples} samples at 16 kHz give {frames} mel frames, at least 3 are needed for one audio token")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Number of samples after resampling to 16 kHz.
        samples: usize,
        /// Number of valid mel frames they give.
        frames: usize,
    },

    /// A configuration value (a config file field or a function argument) is invalid.
    #[error("invalid {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field or argument, named as in the config file it comes from
        /// (e.g. `feature_size` in `preprocessor_config.json`).
        field: String,
        /// The rejected value, formatted.
        value: String,
        /// Why it is rejected.
        reason: String,
    },

    /// `preprocessor_config.json` is not valid JSON of the expected shape.
    #[error("cannot parse {path}: {source}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// An input's shape does not match what the model expects.
    #[error("{what}: expected {expected}, got {actual}")]
    ShapeMismatch {
        /// The input.
        what: String,
        /// The expected shape or size.
        expected: String,
        /// The shape or size received.
        actual: String,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The resampler could not be built or failed while running.
    #[error("resampling {from_hz} Hz -> {to_hz} Hz failed: {source}")]
    Resample {
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
        /// The resampler's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
