//! The error type of the `auris` library.

use std::path::PathBuf;

use crate::memory;

/// Everything that can go wrong between a model folder, an audio file and generated text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--model` names a path that is not a model folder.
    #[error("model folder {path}: {reason}")]
    NotAModelFolder {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file every checkpoint needs is absent.
    #[error("model {model} has no {file}")]
    MissingFile {
        /// The model folder.
        model: String,
        /// The missing file.
        file: String,
    },
    /// `HF_HUB_OFFLINE=1` and the hub cache lacks a file.
    #[error("{file} of {id} is not in the hub cache and HF_HUB_OFFLINE is set")]
    OfflineMissing {
        /// Hub id.
        id: String,
        /// The missing file.
        file: String,
    },
    /// The hub could not deliver a file.
    #[error("hub download of {file} from {id} failed: {failure}")]
    Hub {
        /// Hub id.
        id: String,
        /// The file being fetched (empty when the client could not start).
        file: String,
        /// What went wrong.
        failure: crate::hub::HubFailure,
    },
    /// A downloaded file does not hash to the sha256 the hub announced (it was removed; boxed:
    /// four strings would make every `Error` larger).
    #[error("{0}")]
    Checksum(Box<crate::hub::Corrupt>),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was read but its content is not what a checkpoint holds.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// Dotted field name, e.g. `text_config.hidden_size`.
        field: String,
        /// The offending value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The checkpoint holds tensors no stage reads (a prefix mistake or a different model).
    #[error("checkpoint has {count} tensor(s) the model does not use, e.g. {examples}")]
    UnusedTensors {
        /// How many.
        count: usize,
        /// The first few names.
        examples: String,
    },
    /// The tokenizer could not load or encode.
    #[error("tokenizer: {context}")]
    Tokenizer {
        /// What was being done: the file loaded, or the text encoded or decoded.
        context: String,
        /// The tokenizer's error.
        #[source]
        source: tokenizers::Error,
    },
    /// A token the prompt format needs is not in the tokenizer.
    #[error("the tokenizer has no {token} token")]
    MissingToken {
        /// The token string.
        token: String,
    },
    /// The chat template failed to render.
    #[error("chat template: {context}")]
    Template {
        /// The step that failed: parsing or rendering.
        context: &'static str,
        /// The template engine's error.
        #[source]
        source: minijinja::Error,
    },
    /// The prompt's audio placeholders do not match the audio given.
    #[error("the prompt has {placeholders} {token} placeholder(s) but {audios} audio input(s) were given")]
    PlaceholderCount {
        /// Placeholders found in the prompt.
        placeholders: usize,
        /// Audio inputs given.
        audios: usize,
        /// The placeholder string.
        token: String,
    },
    /// The number of audio rows does not match the placeholder positions.
    #[error("audio features and audio tokens do not match: {tokens} placeholder tokens, {rows} audio rows")]
    AudioRowMismatch {
        /// Placeholder tokens in the expanded prompt.
        tokens: usize,
        /// Audio rows produced by the encoder (after pruning).
        rows: usize,
    },
    /// The model would not fit the memory available (checked before any weight is read).
    #[error("{0}")]
    InsufficientMemory(Box<memory::Shortfall>),
    /// One sequence fits the memory available, but not as many as were asked to be served at
    /// the same time (checked before any weight is read).
    #[error("{0}")]
    TooManySequences(Box<memory::SequenceShortfall>),
    /// The prompt an audio file produces does not fit the model's positions.
    #[error("{0}")]
    ContextOverflow(Box<crate::budget::Overflow>),
    /// A bad request parameter.
    #[error("{0}")]
    Usage(String),
    /// A stage broke an invariant the next stage relies on (a bug, not bad input).
    #[error("internal error: {0}")]
    Invariant(&'static str),
    /// The audio front-end or encoder failed.
    #[error(transparent)]
    Audio(#[from] auris_audio::AudioError),
    /// The projector failed.
    #[error(transparent)]
    Projector(#[from] auris_projector::ProjectorError),
    /// The language model failed.
    #[error(transparent)]
    Llm(#[from] auris_llm::LlmError),
    /// The Whisper model failed (boxed: it holds an audio error, and `Error` stays small).
    #[error(transparent)]
    Whisper(Box<auris_whisper::WhisperError>),
    /// Token selection failed.
    #[error(transparent)]
    Prune(#[from] auris_prune::PruneError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<auris_whisper::WhisperError> for Error {
    fn from(e: auris_whisper::WhisperError) -> Self {
        Error::Whisper(Box::new(e))
    }
}
