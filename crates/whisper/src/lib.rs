//! auris-whisper: Whisper speech recognition over (possibly pruned) encoder frames, for
//! measuring what pruning costs a real model (`auris eval asr-pruning`).
//!
//! Qwen2-Audio's audio tower is a Whisper encoder with a pool on top, so a Whisper checkpoint
//! (`WhisperForConditionalGeneration`, hub layout) runs through the encoder of `auris-audio`
//! without the pool ([`auris_audio::encoder::WhisperEncoder`]: all 1500 frames, no mask). [`WhisperDecoder`] mirrors transformers' `WhisperDecoder`
//! (`src/transformers/models/whisper/modeling_whisper.py`):
//!
//! ```text
//! ids -> embed_tokens + embed_positions[past..past+t]
//!     -> L x [x + SelfAttn(LN x) (causal, cached); x + CrossAttn(LN x, frames); x + fc2(gelu(fc1(LN x)))]
//!     -> LayerNorm -> logits = x . embed_tokens^T   (proj_out is tied)
//! ```
//! The cross-attention keys and values are computed once per transcription from whatever frames
//! are given, `(n, d_model)`: all 1500, or only the kept ones. [`Transcriber`] decodes greedily
//! with transformers' short-form defaults.
//!
//! Loading files (hub or folder) is the caller's business: [`Transcriber::new`] takes the parsed
//! [`WhisperConfig`], the generation settings, a `VarBuilder` at the checkpoint root and the
//! tokenizer.

mod config;
mod decoder;
mod error;
mod transcriber;

pub use config::{WhisperConfig, WhisperGeneration};
pub use decoder::{DecoderState, WhisperDecoder};
pub use error::WhisperError;
pub use transcriber::{EncodedClip, Transcriber, Transcript};
