//! One sequence's decoding state, advanced a token at a time (vLLM's per-request state,
//! mistral.rs' per-sequence offsets): what a scheduler holds for each request it serves.

use candle_core::Tensor;

use crate::generate::check_prompt;
use crate::sampling::Sampler;
use crate::{
    GenerateOptions, Generation, KvCache, LlmError, Qwen2Decoder, SequenceInput, StopStrings,
};

/// Why a [`Sequence`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// One of [`GenerateOptions::stop_ids`] was chosen ([`Generation::stopped_on`]).
    StopId(u32),
    /// [`GenerateOptions::max_new_tokens`] tokens were emitted.
    Length,
    /// A stop string appeared in the text fed to [`Sequence::push_text`].
    StopString,
    /// The caller ended it ([`Sequence::cancel`]).
    Cancelled,
}

/// What the next step starts from.
#[derive(Debug)]
enum Next {
    /// Logits `(1, vocab)` to choose the next token from.
    Choose(Tensor),
    /// The token chosen last, not yet fed to the model.
    Feed(u32),
    /// Nothing: the sequence ended before its first token (`max_new_tokens == 0`).
    Nothing,
}

/// One sequence being generated, with everything that is its own: its KV cache (and so its
/// position), its sampler and seed, the ids the repetition penalty looks at, its token limit,
/// stop ids and stop strings, and what it produced so far.
///
/// [`Sequence::prefill`] runs the prompt (or [`Sequence::from_logits`] takes over after a
/// prefill the caller ran), and each [`Sequence::step`] emits one token. A step first feeds
/// the token the previous step chose, so, as with [`crate::generate`], the cache never holds
/// the last emitted token. Sequences share nothing but the model: a scheduler holds many, each
/// at its own [`Sequence::position`], and advances them one at a time or together
/// ([`step_many`]); a sequence's tokens do not depend on which others run beside it.
#[derive(Debug)]
pub struct Sequence {
    cache: KvCache,
    sampler: Sampler,
    /// The prompt's ids, then the generated ones.
    seen: Vec<u32>,
    stop_ids: Vec<u32>,
    max_new_tokens: usize,
    next: Next,
    out: Generation,
    finish: Option<Finish>,
    stop_strings: StopStrings,
}

impl Sequence {
    /// Runs `prompt_embeds` `(1, seq, hidden)` after whatever `cache` holds (usually
    /// nothing) and returns the sequence, ready to [`Sequence::step`].
    ///
    /// `context_ids` and `opts` mean what they mean for [`crate::generate`]. Bad sampling
    /// parameters are an [`LlmError::InvalidSampling`]; with `opts.max_new_tokens == 0` the
    /// prompt is not run and the sequence is finished at once ([`Finish::Length`]).
    pub fn prefill(
        model: &Qwen2Decoder,
        mut cache: KvCache,
        prompt_embeds: &Tensor,
        context_ids: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Self, LlmError> {
        check_prompt(model, prompt_embeds)?;
        let sampler = Sampler::new(&opts.sampling)?;
        let next = if opts.max_new_tokens == 0 {
            Next::Nothing
        } else {
            Next::Choose(model.forward_embeds(prompt_embeds, &mut cache)?)
        };
        Ok(Self::start(cache, sampler, next, context_ids, opts))
    }

    /// Takes over after a prefill the caller ran on `cache` (to time or inspect it):
    /// `first_logits` `(1, vocab)` is what [`Qwen2Decoder::forward_embeds`] returned for the
    /// prompt. Otherwise as [`Sequence::prefill`].
    pub fn from_logits(
        cache: KvCache,
        first_logits: &Tensor,
        context_ids: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Self, LlmError> {
        let sampler = Sampler::new(&opts.sampling)?;
        let next = Next::Choose(first_logits.clone());
        Ok(Self::start(cache, sampler, next, context_ids, opts))
    }

    fn start(
        cache: KvCache,
        sampler: Sampler,
        next: Next,
        context_ids: &[u32],
        opts: &GenerateOptions,
    ) -> Self {
        Self {
            cache,
            sampler,
            seen: context_ids.to_vec(),
            stop_ids: opts.stop_ids.clone(),
            max_new_tokens: opts.max_new_tokens,
            next,
            out: Generation::default(),
            finish: (opts.max_new_tokens == 0).then_some(Finish::Length),
            stop_strings: StopStrings::default(),
        }
    }

    /// Cuts the text fed to [`Sequence::push_text`] at the first of `stops`.
    pub fn with_stop_strings(mut self, stops: StopStrings) -> Self {
        self.stop_strings = stops;
        self
    }

    /// Emits the next token: feeds the previous one (if any) to `model`, which must be the
    /// model that made the cache, then chooses from the new logits. `None` once the sequence
    /// is finished, which includes choosing a stop id (recorded in
    /// [`Generation::stopped_on`], never emitted). After an error the sequence is as before
    /// the call.
    pub fn step(&mut self, model: &Qwen2Decoder) -> Result<Option<u32>, LlmError> {
        if let Some(token) = self.input() {
            let logits = model.forward_embeds(&embed_one(model, token)?, &mut self.cache)?;
            self.next = Next::Choose(logits);
        }
        self.choose()
    }

    /// The token the next step feeds to the model before choosing: `None` right after the
    /// prefill (the prompt's logits are pending) and once finished.
    pub fn input(&self) -> Option<u32> {
        match self.next {
            Next::Feed(token) if self.finish.is_none() => Some(token),
            _ => None,
        }
    }

    /// Chooses from the pending logits; [`Sequence::step`] and [`step_many`] feed first.
    fn choose(&mut self) -> Result<Option<u32>, LlmError> {
        let logits = match (&self.next, self.finish) {
            (Next::Choose(logits), None) => logits,
            _ => return Ok(None),
        };
        let (token, margin) = self.sampler.next(logits, &self.seen)?;
        self.out.margins.push(margin);
        if self.stop_ids.contains(&token) {
            self.out.stopped_on = Some(token);
            self.finish = Some(Finish::StopId(token));
            return Ok(None);
        }
        self.out.tokens.push(token);
        self.seen.push(token);
        self.next = Next::Feed(token);
        if self.out.tokens.len() >= self.max_new_tokens {
            self.finish = Some(Finish::Length);
        }
        Ok(Some(token))
    }

    /// Ends the sequence after the tokens emitted so far (a callback said stop, the client
    /// went away). Does nothing to a finished sequence.
    pub fn cancel(&mut self) {
        self.finish.get_or_insert(Finish::Cancelled);
    }

    /// Why the sequence ended, once it has.
    pub fn finished(&self) -> Option<Finish> {
        self.finish
    }

    /// Number of positions in the cache: the RoPE position the next fed token takes.
    pub fn position(&self) -> usize {
        self.cache.len()
    }

    /// The sequence's cache: the prompt and every emitted token but the last.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// What was generated so far.
    pub fn generation(&self) -> &Generation {
        &self.out
    }

    /// Feeds the text of the emitted tokens, piece by piece in order, to the stop strings
    /// ([`Sequence::with_stop_strings`]) and returns the text safe to send
    /// ([`StopStrings::push`]). When a stop string appears the sequence ends with
    /// [`Finish::StopString`] (also when the last piece came after [`Finish::Length`]).
    pub fn push_text(&mut self, piece: &str) -> String {
        let out = self.stop_strings.push(piece);
        if self.stop_strings.hit() && matches!(self.finish, None | Some(Finish::Length)) {
            self.finish = Some(Finish::StopString);
        }
        out
    }

    /// The stop-string state: the text so far, cut before a stop string.
    pub fn stop_strings(&self) -> &StopStrings {
        &self.stop_strings
    }

    /// Releases the text held back by the stop strings ([`StopStrings::finish`]).
    pub fn finish_text(&mut self) -> String {
        self.stop_strings.finish()
    }

    /// The cache and the generation, to reuse the one and return the other.
    pub fn into_parts(self) -> (KvCache, Generation) {
        (self.cache, self.out)
    }
}

/// `token` as a `(1, 1, hidden)` embedding.
fn embed_one(model: &Qwen2Decoder, token: u32) -> Result<Tensor, LlmError> {
    model.embed_tokens(&Tensor::new(&[[token]], model.device())?)
}

/// Advances every unfinished sequence of `seqs` by one token, running their forward passes
/// together ([`Qwen2Decoder::forward_batch`]: each sequence at its own position, on its own
/// cache, their new positions stacked into one product per linear layer, which reads each
/// weight once for all of them). Returns what [`Sequence::step`] would have returned for each, in order; each
/// sequence's tokens are those of stepping it alone. After an error in the forward pass no
/// sequence has advanced.
pub fn step_many(
    model: &Qwen2Decoder,
    seqs: &mut [&mut Sequence],
) -> Result<Vec<Option<u32>>, LlmError> {
    let embeds = seqs
        .iter()
        .map(|s| s.input().map(|t| embed_one(model, t)).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let mut inputs: Vec<SequenceInput<'_>> = seqs
        .iter_mut()
        .zip(&embeds)
        .filter_map(|(s, e)| {
            e.as_ref().map(|embeds| SequenceInput {
                embeds,
                cache: &mut s.cache,
            })
        })
        .collect();
    let mut logits = model.forward_batch(&mut inputs)?.into_iter();
    drop(inputs);
    let mut out = Vec::with_capacity(seqs.len());
    for (seq, fed) in seqs.iter_mut().zip(&embeds) {
        if fed.is_some() {
            if let Some(l) = logits.next() {
                seq.next = Next::Choose(l);
            }
        }
        out.push(seq.choose()?);
    }
    Ok(out)
}
