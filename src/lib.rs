//! auris: audio-language inference for Qwen2-Audio-style models (Qwen2-Audio, Audio Flamingo 3)
//! on Candle, with segmentwise audio-token pruning.
//!
//! The stages live in their own crates (`auris-audio`: decoding, log-mel and the encoder;
//! `auris-projector`; `auris-prune`: token selection; `auris-llm`: the Qwen2 decoder). This
//! crate loads checkpoints ([`checkpoint`], [`config`]), knows what differs between model
//! families ([`family`]), builds prompts ([`prompt`]) and chains
//! the stages ([`pipeline`]).
//!
//! ```no_run
//! let caption = auris::caption("models/tiny-chat", "tests/fixtures/audio/tone_440_16k.wav", None)?;
//! println!("{}", caption.text);
//! # Ok::<(), auris::Error>(())
//! ```

pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod config;
mod error;
pub mod family;
pub mod hub;
pub mod memory;
pub mod pipeline;
pub mod prompt;
pub mod shards;
pub mod whisper;

use std::path::Path;

pub use error::Error;
pub use pipeline::{
    ComputeChoice, ComputeMode, LoadOptions, Pipeline, PromptSpec, Request, Response, Task, Weights,
};

/// Default cap on generated tokens.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

/// Captions one audio file with greedy decoding and no pruning, on the CPU in f32.
///
/// `model` is a model folder or a hub id; `prompt` replaces the default instruction.
pub fn caption(
    model: impl AsRef<str>,
    audio: impl AsRef<Path>,
    prompt: Option<&str>,
) -> Result<Response, Error> {
    let source = checkpoint::ModelSource::parse(model.as_ref(), None)?;
    let pipeline = Pipeline::load(&source, &LoadOptions::default())?;
    let text = prompt
        .unwrap_or(pipeline.default_caption_instruction())
        .to_string();
    let mut generate = pipeline.default_generate_options(DEFAULT_MAX_NEW_TOKENS);
    generate.sampling.temperature = None;
    let request = Request {
        audio: audio.as_ref().to_path_buf(),
        prompt: PromptSpec::Instruction { text, system: None },
        policy: auris_prune::Policy {
            strategy: auris_prune::Strategy::None,
            keep: 1.0,
        },
        generate,
        task: pipeline::Task::Generate,
        context: budget::ContextFit::default(),
    };
    pipeline.run(&request, &mut |_| true)
}
