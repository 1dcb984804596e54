//! Evaluation harnesses of the `auris` binary (`auris eval ...`): not library API.
//!
//! - [`asr`]: what pruning costs a Whisper model's transcriptions (`auris eval asr-pruning`).
//! - [`report`]: its JSON, markdown and SVG outputs.
//! - [`wer`]: word error rate with Whisper's English text normalisation.

pub(crate) mod asr;
pub(crate) mod report;
pub(crate) mod wer;
