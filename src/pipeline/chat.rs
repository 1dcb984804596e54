//! Chat requests: a conversation with any number of audio inputs, in order, rendered through
//! the model's chat template (what `auris serve` runs for `/v1/chat/completions`).

use auris_prune::Strategy;

use super::*;

/// A conversation to answer. Each [`Part::Audio`] of `messages`, in order, stands for the
/// audio input of the same index in `audios`.
pub struct ChatRequest<'a> {
    /// The conversation.
    pub messages: &'a [Message],
    /// The decoded audio inputs, in the order of the audio parts.
    pub audios: &'a [AudioInput],
    /// Which audio tokens the language model sees (applied to each input).
    pub policy: Policy,
    /// Decoding options.
    pub generate: GenerateOptions,
}

/// The answer to a [`ChatRequest`].
#[derive(Debug, Clone)]
pub struct ChatResponse {
    /// The expanded prompt's ids.
    pub prompt_token_ids: Vec<u32>,
    /// The generated ids (the stop id excluded).
    pub output_token_ids: Vec<u32>,
    /// The generated text, special tokens skipped.
    pub text: String,
    /// The stop id that ended generation, if one did.
    pub stopped_on: Option<u32>,
    /// Audio tokens before pruning, all inputs together.
    pub n_audio_tokens: usize,
    /// Audio tokens the language model saw, all inputs together.
    pub n_kept: usize,
    /// Seconds of audio, all inputs together.
    pub duration_s: f64,
    /// Stage timings in milliseconds (audio stages summed over the inputs).
    pub timings: Timings,
}

impl Pipeline {
    /// Decodes, resamples and cuts an audio file held in memory into log-mel windows;
    /// `format` is a container hint such as `wav` and `name` labels errors.
    pub fn audio_from_bytes(
        &self,
        bytes: Vec<u8>,
        format: Option<&str>,
        name: &str,
    ) -> Result<AudioInput, Error> {
        let start = Instant::now();
        let pcm = auris_audio::decode_bytes(bytes, format, name)?;
        self.audio_input(&pcm, PathBuf::from(name), start)
    }

    /// The language model's context length in tokens.
    pub fn context_length(&self) -> usize {
        self.config.text_config.max_position_embeddings
    }

    /// Runs a conversation end to end; `on_token` sees each new token id and may return
    /// `false` to stop.
    pub fn run_chat(
        &self,
        request: &ChatRequest<'_>,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<ChatResponse, Error> {
        request.policy.validate()?;
        let template = self.chat_template.as_ref().ok_or_else(|| {
            Error::Usage("this model has no chat template, so it takes no chat request".into())
        })?;
        let mut timings = Timings::default();
        let mut rows = Vec::with_capacity(request.audios.len());
        let (mut n_audio_tokens, mut duration_s) = (0, 0.0);
        let want_scores = !matches!(request.policy.strategy, Strategy::None);
        for audio in request.audios {
            timings.decode_audio += audio.decode_ms;
            timings.mel += audio.mel_ms;
            duration_s += audio.duration_s();
            let start = Instant::now();
            let encoded = self.encode(audio, want_scores)?;
            timings.encoder += ms(start);
            let start = Instant::now();
            let tokens = self.select(&encoded, &request.policy)?;
            n_audio_tokens += tokens.n_audio_tokens;
            rows.push(self.project(&tokens)?);
            timings.projector += ms(start);
        }
        let prompt_text = template.render(request.messages, true)?;
        let ids = prompt::tokenize(&self.tokenizer, &prompt_text)?;
        let counts: Vec<usize> = rows.iter().map(|r| r.dim(0)).collect::<Result<_, _>>()?;
        let expanded = prompt::expand(&ids, &counts, &self.special)?;
        let context = self.context_length();
        let max_new = request.generate.max_new_tokens;
        if expanded.ids.len() + max_new > context {
            return Err(Error::ContextExceeded {
                prompt: expanded.ids.len(),
                max_new,
                context,
            });
        }
        let embeds = self.merge_spans(&expanded, &rows)?;

        let start = Instant::now();
        let mut cache = self.decoder.new_cache();
        let logits = self.decoder.forward_embeds(&embeds, &mut cache)?;
        timings.prefill = ms(start);

        let generation = self.generate(
            &mut cache,
            &logits,
            &expanded.ids,
            &request.generate,
            on_token,
            &mut timings,
        )?;
        Ok(ChatResponse {
            text: self.decode(&generation.tokens)?,
            prompt_token_ids: expanded.ids,
            output_token_ids: generation.tokens,
            stopped_on: generation.stopped_on,
            n_audio_tokens,
            n_kept: counts.iter().sum(),
            duration_s,
            timings,
        })
    }

    /// Embeds the prompt's ids and writes each input's audio rows into its placeholder span.
    fn merge_spans(
        &self,
        expanded: &prompt::ExpandedPrompt,
        rows: &[Tensor],
    ) -> Result<Tensor, Error> {
        let ids = &expanded.ids;
        let ids_t = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let text = self.decoder.embed_tokens(&ids_t)?.squeeze(0)?;
        let mut parts = Vec::with_capacity(2 * rows.len() + 1);
        let mut at = 0;
        for (span, audio) in expanded.audio_spans.iter().zip(rows) {
            if audio.dim(0)? != span.len() {
                return Err(Error::AudioRowMismatch {
                    tokens: span.len(),
                    rows: audio.dim(0)?,
                });
            }
            if span.start > at {
                parts.push(text.narrow(0, at, span.start - at)?);
            }
            if !span.is_empty() {
                parts.push(audio.to_dtype(text.dtype())?);
            }
            at = span.end;
        }
        if at < ids.len() {
            parts.push(text.narrow(0, at, ids.len() - at)?);
        }
        Ok(Tensor::cat(&parts, 0)?.unsqueeze(0)?)
    }
}
