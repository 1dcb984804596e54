//! The crate's error type.

/// Everything that can go wrong in this crate.
///
/// Configuration problems name the `config.json` field and its value; loading problems name
/// the full tensor path; shape problems give the expected and the actual shape.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A configuration value is out of range or inconsistent with another one.
    #[error("invalid config: `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The `config.json` field (dotted for nested objects).
        field: &'static str,
        /// The offending value, as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A configuration value is valid for transformers but not implemented here.
    #[error("unsupported config: `{field}` = {value}: {reason}")]
    Unsupported {
        /// The `config.json` field (dotted for nested objects).
        field: &'static str,
        /// The offending value, as written.
        value: String,
        /// What is not supported.
        reason: String,
    },

    /// A tensor the model needs is not in the checkpoint.
    #[error("missing tensor `{name}` in the checkpoint")]
    MissingTensor {
        /// Full tensor path, including the `VarBuilder` prefix.
        name: String,
    },

    /// A tensor exists but could not be read (wrong shape, dtype conversion, I/O).
    #[error("cannot load tensor `{name}`: {source}")]
    Load {
        /// Full tensor path, including the `VarBuilder` prefix.
        name: String,
        /// The underlying candle error.
        #[source]
        source: candle_core::Error,
    },

    /// An input tensor has the wrong shape or dtype.
    #[error("{what}: expected {expected}, got shape {actual:?} ({dtype:?})")]
    BadInput {
        /// Which argument.
        what: &'static str,
        /// The expected shape, in words.
        expected: String,
        /// The actual shape.
        actual: Vec<usize>,
        /// The actual dtype.
        dtype: candle_core::DType,
    },

    /// A token id is not below `vocab_size`.
    #[error("token id {id} is out of range for vocab_size {vocab_size}")]
    TokenOutOfRange {
        /// The offending id.
        id: i64,
        /// The model's vocabulary size.
        vocab_size: usize,
    },

    /// The KV cache does not belong to this model or to this batch.
    #[error("KV cache mismatch: {reason}")]
    CacheMismatch {
        /// What does not match.
        reason: String,
    },

    /// A sampling parameter is out of range.
    #[error("invalid sampling parameter: `{field}` = {value}: {reason}")]
    InvalidSampling {
        /// The [`crate::SamplingParams`] field.
        field: &'static str,
        /// The offending value.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },

    /// An option value (e.g. a weight format name) is not one of the accepted values.
    #[error("invalid `{option}`: {value:?}, expected {expected}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
