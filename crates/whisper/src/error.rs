//! Errors of the Whisper crate.

/// What can go wrong building or running a Whisper model.
#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    /// A `config.json` field holds a value this crate cannot run.
    #[error("config field {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field, as named in `config.json`.
        field: String,
        /// Its value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The tokenizer lacks a token the prompt needs.
    #[error("the tokenizer has no {token} token")]
    MissingToken {
        /// The token.
        token: String,
    },
    /// The audio is longer than the one 30 s window Whisper transcribes here.
    #[error("{seconds:.1} s of audio; Whisper transcription here takes at most 30 s")]
    TooLong {
        /// Duration of the audio in seconds.
        seconds: f64,
    },
    /// The tokenizer failed to decode ids.
    #[error("decoding token ids")]
    Tokenizer(#[source] tokenizers::Error),
    /// The front end or the encoder failed.
    #[error(transparent)]
    Audio(#[from] auris_audio::AudioError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
