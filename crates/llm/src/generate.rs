//! Autoregressive generation with transformers' `generate` semantics: [`generate`] and
//! [`generate_from_logits`] are loops over one [`Sequence`]'s steps.

use candle_core::Tensor;

use crate::sampling::Sampler;
use crate::{KvCache, LlmError, Qwen2Decoder, SamplingParams, Sequence};

/// Options of one [`generate`] call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerateOptions {
    /// Upper bound on generated tokens, a produced stop id included (as transformers counts).
    pub max_new_tokens: usize,
    /// Generation ends when one of these is produced (from `generation_config.json` or the
    /// tokenizer; never hard-coded).
    pub stop_ids: Vec<u32>,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Generation {
    /// The generated tokens, without the stop id that ended generation.
    pub tokens: Vec<u32>,
    /// The stop id that ended generation, if one did (transformers would append it to the
    /// output ids).
    pub stopped_on: Option<u32>,
    /// Per step (one per token in `tokens`, plus one for the stop id if any): the highest
    /// minus the second-highest logit after the repetition penalty, before temperature.
    pub margins: Vec<f32>,
}

/// Generates up to `opts.max_new_tokens` tokens after `prompt_embeds` `(1, seq, hidden)`.
///
/// `cache` holds whatever precedes the prompt (usually nothing); on return it holds the prompt
/// and every emitted token except the last one (which was never fed back). `context_ids` are
/// the prompt's token ids (placeholders included, as transformers sees `input_ids`), used by
/// the repetition penalty together with the generated ids.
///
/// Each step: logits in f32 → repetition penalty → (when sampling) temperature → top-k →
/// top-p → argmax or a draw from `candle_transformers::generation::LogitsProcessor` seeded
/// with `sampling.seed`. Greedy ties go to the lowest token id, like `torch.argmax`.
/// `on_token` sees every emitted non-stop token; returning `false` stops after that token.
/// The same as [`Sequence::prefill`] followed by [`Sequence::step`] until it returns `None`.
pub fn generate(
    model: &Qwen2Decoder,
    cache: &mut KvCache,
    prompt_embeds: &Tensor,
    context_ids: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation, LlmError> {
    check_prompt(model, prompt_embeds)?;
    if opts.max_new_tokens == 0 {
        return Ok(Generation::default());
    }
    let logits = model.forward_embeds(prompt_embeds, cache)?;
    generate_from_logits(model, cache, &logits, context_ids, opts, on_token)
}

/// Continues generation from the logits of a prefill that already ran on `cache`.
///
/// `first_logits` is `(1, vocab)`, the output of [`Qwen2Decoder::forward_embeds`] on the prompt;
/// the caller times or inspects the prefill separately. Otherwise the same as [`generate`]
/// (and as [`Sequence::from_logits`] stepped to the end).
pub fn generate_from_logits(
    model: &Qwen2Decoder,
    cache: &mut KvCache,
    first_logits: &Tensor,
    context_ids: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation, LlmError> {
    // Checked before the sequence takes the cache, so a bad parameter leaves it in place.
    Sampler::new(&opts.sampling)?;
    // The sequence owns the cache while it runs; the caller's comes back filled, error or not.
    let taken = std::mem::replace(cache, KvCache::new(cache.num_layers()));
    let mut seq = Sequence::from_logits(taken, first_logits, context_ids, opts)?;
    let run = run_to_end(&mut seq, model, on_token);
    let (taken, generation) = seq.into_parts();
    *cache = taken;
    run.map(|()| generation)
}

fn run_to_end(
    seq: &mut Sequence,
    model: &Qwen2Decoder,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(), LlmError> {
    while let Some(token) = seq.step(model)? {
        if !on_token(token) {
            seq.cancel();
        }
    }
    Ok(())
}

/// [`LlmError::BadInput`] unless `prompt_embeds` holds one sequence.
pub(crate) fn check_prompt(model: &Qwen2Decoder, prompt_embeds: &Tensor) -> Result<(), LlmError> {
    if prompt_embeds.dims().first() == Some(&1) {
        return Ok(());
    }
    Err(LlmError::BadInput {
        what: "prompt_embeds",
        expected: format!("(1, seq, {})", model.config().hidden_size),
        actual: prompt_embeds.dims().to_vec(),
        dtype: prompt_embeds.dtype(),
    })
}
