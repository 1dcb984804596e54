//! Loading a Whisper checkpoint (folder or hub id) into an [`auris_whisper::Transcriber`].

use auris_whisper::{Transcriber, WhisperConfig, WhisperGeneration};
use candle_core::{DType, Device};
use tokenizers::Tokenizer;

use crate::checkpoint::{self, read_json, ModelSource, WeightStore};
use crate::Error;

/// Loads a `WhisperForConditionalGeneration` checkpoint in f32 and checks that every tensor in
/// it is used.
pub fn load(source: &ModelSource, device: &Device, progress: bool) -> Result<Transcriber, Error> {
    let files = checkpoint::resolve(source, progress)?;
    let config: WhisperConfig = read_json(&files.config)?;
    let generation: WhisperGeneration = match &files.generation_config {
        Some(path) => read_json(path)?,
        None => WhisperGeneration::default(),
    };
    let mel_config = files.mel_config(config.num_mel_bins)?;
    let tokenizer = Tokenizer::from_file(&files.tokenizer).map_err(|source| Error::Tokenizer {
        context: format!("loading {}", files.tokenizer.display()),
        source,
    })?;
    let store = WeightStore::open_model(&files)?;
    let untied_head = store.names().iter().any(|n| n == "proj_out.weight");
    let transcriber = Transcriber::new(
        &config,
        &generation,
        store.var_builder(DType::F32, device),
        untied_head,
        tokenizer,
        mel_config,
    )?;
    store.check_coverage(&[])?;
    Ok(transcriber)
}
