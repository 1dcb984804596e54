//! Greedy transcription with transformers' short-form defaults (`WhisperGenerationMixin.generate`
//! in `src/transformers/models/whisper/generation_whisper.py`): prompt
//! `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>` (English-only models:
//! `<|startoftranscript|><|notimestamps|>`), `suppress_tokens` masked at every step,
//! `begin_suppress_tokens` at the first, stop at `<|endoftext|>` or `max_length` tokens in all.

use std::path::Path;

use auris_audio::encoder::{EncoderOutput, FrameOptions, WhisperEncoder};
use auris_audio::{MelConfig, MelExtractor, SAMPLE_RATE};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use crate::config::invalid;
use crate::{WhisperConfig, WhisperDecoder, WhisperError, WhisperGeneration};

/// One clip through the encoder: every frame of its window, with per-frame scores.
#[derive(Debug, Clone)]
pub struct EncodedClip {
    /// The encoder's output: `(max_source_positions, d_model)` frames and their scores.
    pub output: EncoderOutput,
    /// Samples of the clip at 16 kHz.
    pub samples: usize,
}

impl EncodedClip {
    /// The clip's duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples as f64 / f64::from(SAMPLE_RATE)
    }
}

/// A loaded Whisper model: log-mel front-end, encoder, text decoder and tokenizer.
pub struct Transcriber {
    mel: MelExtractor,
    encoder: WhisperEncoder,
    decoder: WhisperDecoder,
    tokenizer: Tokenizer,
    prompt: Vec<u32>,
    eos: u32,
    suppress: Vec<u32>,
    begin_suppress: Vec<u32>,
    max_length: usize,
    device: Device,
}

/// One transcription: the generated ids (prompt and end token excluded) and their text.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Generated token ids.
    pub ids: Vec<u32>,
    /// The ids decoded with special tokens skipped.
    pub text: String,
}

impl Transcriber {
    /// Builds a transcriber from a parsed checkpoint: `vb` points at the checkpoint root
    /// (`model.encoder`, `model.decoder`, and `proj_out` when `untied_head`), in f32.
    pub fn new(
        cfg: &WhisperConfig,
        generation: &WhisperGeneration,
        vb: VarBuilder,
        untied_head: bool,
        tokenizer: Tokenizer,
        mel_config: MelConfig,
    ) -> Result<Self, WhisperError> {
        cfg.validate()?;
        if mel_config.n_mels != cfg.num_mel_bins {
            return Err(invalid(
                "num_mel_bins",
                &cfg.num_mel_bins,
                &format!("the feature extractor makes {} bins", mel_config.n_mels),
            ));
        }
        let id = |token: &str| tokenizer.token_to_id(token);
        let need = |token: &str| {
            id(token).ok_or_else(|| WhisperError::MissingToken {
                token: token.to_string(),
            })
        };
        let sot = need("<|startoftranscript|>")?;
        let eos = need("<|endoftext|>")?;
        let no_timestamps = need("<|notimestamps|>")?;
        // A multilingual model is told the language and the task; English-only models have
        // neither token.
        let prompt = match (id("<|en|>"), id("<|transcribe|>")) {
            (Some(en), Some(transcribe)) => vec![sot, en, transcribe, no_timestamps],
            _ => vec![sot, no_timestamps],
        };
        let encoder = WhisperEncoder::load(&cfg.encoder_config(), vb.pp("model.encoder"))?;
        let head = if untied_head {
            Some(vb.get((cfg.vocab_size, cfg.d_model), "proj_out.weight")?)
        } else {
            None
        };
        let decoder = WhisperDecoder::load(cfg, vb.pp("model.decoder"), head)?;
        let max_length = generation
            .max_length
            .unwrap_or(cfg.max_target_positions)
            .min(cfg.max_target_positions);
        let pick = |a: &Option<Vec<u32>>, b: &Option<Vec<u32>>| {
            a.clone().or_else(|| b.clone()).unwrap_or_default()
        };
        Ok(Self {
            mel: MelExtractor::new(mel_config)?,
            encoder,
            decoder,
            prompt,
            eos,
            suppress: pick(&generation.suppress_tokens, &cfg.suppress_tokens),
            begin_suppress: pick(
                &generation.begin_suppress_tokens,
                &cfg.begin_suppress_tokens,
            ),
            max_length,
            tokenizer,
            device: vb.device().clone(),
        })
    }

    /// The decoder prompt (`<|startoftranscript|>` ... `<|notimestamps|>`).
    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    /// The encoder.
    pub fn encoder(&self) -> &WhisperEncoder {
        &self.encoder
    }

    /// Decodes an audio file and encodes it: all frames of its one 30 s window, with per-frame
    /// attention scores. Longer audio is an error (Whisper transcribes 30 s at a time).
    pub fn encode_file(&self, path: &Path) -> Result<EncodedClip, WhisperError> {
        let samples = auris_audio::load_audio_16k(path)?;
        let mut windows = self.mel.windows(&samples)?;
        if windows.len() != 1 {
            return Err(WhisperError::TooLong {
                seconds: samples.len() as f64 / f64::from(SAMPLE_RATE),
            });
        }
        let window = windows.remove(0);
        let output = self
            .encoder
            .forward(&window, FrameOptions { scores: true })?;
        Ok(EncodedClip {
            output,
            samples: samples.len(),
        })
    }

    /// Greedy transcription from encoder frames `(n, d)`: all of them or a pruned subset.
    ///
    /// Stops at the end token, at the model's `max_length` (prompt included, as transformers
    /// does) or after `max_new_tokens` tokens when given.
    pub fn transcribe(
        &self,
        frames: &Tensor,
        max_new_tokens: Option<usize>,
    ) -> Result<Transcript, WhisperError> {
        let mut out = self.transcribe_batch(std::slice::from_ref(frames), max_new_tokens)?;
        Ok(out.remove(0))
    }

    /// Greedy transcriptions of several frame sets (any numbers of frames), decoded in lockstep
    /// (one pass over the weights per step for all of them); a transcription leaves the batch
    /// when it ends. Each result is what [`Transcriber::transcribe`] gives up to
    /// float rounding (the products are computed for several rows at once).
    pub fn transcribe_batch(
        &self,
        frames: &[Tensor],
        max_new_tokens: Option<usize>,
    ) -> Result<Vec<Transcript>, WhisperError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let max_length = match max_new_tokens {
            Some(n) => self.max_length.min(self.prompt.len() + n),
            None => self.max_length,
        };
        let frames = frames
            .iter()
            .map(|f| f.to_device(&self.device)?.to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut state = self.decoder.start(&frames)?;
        let prompt: Vec<u32> = frames.iter().flat_map(|_| self.prompt.clone()).collect();
        let mut logits = self.decoder.step(&mut state, &prompt)?;
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); frames.len()];
        // Batch row -> transcription index.
        let mut active: Vec<usize> = (0..frames.len()).collect();
        while !active.is_empty() {
            let table = logits.to_vec2::<f32>()?;
            let mut keep_rows = Vec::with_capacity(active.len());
            let mut next_ids = Vec::with_capacity(active.len());
            for (row, mut scores) in table.into_iter().enumerate() {
                let which = active[row];
                let first = ids[which].is_empty();
                for &t in self
                    .suppress
                    .iter()
                    .chain(first.then_some(&self.begin_suppress).into_iter().flatten())
                {
                    if let Some(v) = scores.get_mut(t as usize) {
                        *v = f32::NEG_INFINITY;
                    }
                }
                let next = argmax(&scores);
                if next == self.eos {
                    continue;
                }
                ids[which].push(next);
                // The sequence (prompt + generated) has reached max_length.
                if state.len() + 1 >= max_length {
                    continue;
                }
                keep_rows.push(row);
                next_ids.push(next);
            }
            if keep_rows.is_empty() {
                break;
            }
            state.retain(&keep_rows)?;
            active = keep_rows.iter().map(|&r| active[r]).collect();
            logits = self.decoder.step(&mut state, &next_ids)?;
        }
        ids.into_iter()
            .map(|ids| {
                let text = self
                    .tokenizer
                    .decode(&ids, true)
                    .map_err(WhisperError::Tokenizer)?;
                Ok(Transcript {
                    ids,
                    text: text.trim().to_string(),
                })
            })
            .collect()
    }
}

/// Index of the largest value; the first one on ties (like `torch.argmax`).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}
