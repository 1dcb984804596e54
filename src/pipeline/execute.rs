//! The request core: [`Pipeline::execute`] runs an [`AudioRequest`] of any number of audio
//! inputs in four steps, whoever asks (see the [module docs](super) for the picture):
//!
//! 1. measure each input: the audio tokens of each of its windows ([`Measured`]), by scanning
//!    a file or upload without keeping its samples, or from audio already decoded;
//! 2. plan: render and tokenize the prompt, and fit all inputs' windows to the model's context
//!    with one [`crate::budget::plan`] (the policy it returns is applied to every input),
//!    counting kept tokens per selection in the family's [`crate::family::SelectionScope`];
//! 3. gather each input's kept audio tokens, streaming window by window (decode, log-mel,
//!    encoder, selection per window or once at the input's end) unless the input was encoded beforehand or is kept for an inspection;
//! 4. project, merge every input into its placeholder span ([`Pipeline::merge_embeddings`]),
//!    prefill, and answer as the [`Task`] asks.
//!
//! [`Pipeline::prepare`] is steps 1 to 4 up to the merged prompt embeddings ([`Prepared`]);
//! [`Pipeline::execute`] prefills them and answers. A caller that runs the decoder itself
//! (`auris serve`, stepping many sequences together) prepares, prefills in chunks of
//! [`auris_llm::PREFILL_CHUNK`] positions as [`auris_llm::Qwen2Decoder::forward_embeds`] does,
//! and completes the response with [`Pipeline::complete`].

use auris_audio::AudioInfo;
use auris_prune::Strategy;

use super::*;

/// One input after step 1: its windows' token counts, and how its tokens are made.
enum Measured<'a> {
    /// A file or upload, read again window by window in step 3.
    Stream {
        source: &'a AudioSource<'a>,
        info: AudioInfo,
        counts: Vec<usize>,
    },
    /// Decoded whole, for an inspection (which reports the audio and the encoder output).
    Whole(AudioInput),
    /// Decoded and encoded by the caller.
    Encoded {
        audio: &'a AudioInput,
        windows: &'a [EncoderOutput],
        encoder_ms: f64,
    },
}

impl Measured<'_> {
    fn counts(&self, family: &dyn Family) -> Vec<usize> {
        match self {
            Measured::Stream { counts, .. } => counts.clone(),
            Measured::Whole(audio) => audio_token_counts(family, audio),
            Measured::Encoded { audio, .. } => audio_token_counts(family, audio),
        }
    }

    fn summary(&self) -> AudioSummary {
        let whole = |audio: &AudioInput| AudioSummary {
            duration_s: audio.duration_s(),
            sample_rate: audio.sample_rate,
        };
        match self {
            Measured::Stream { info, .. } => AudioSummary {
                duration_s: info.duration_s(),
                sample_rate: info.sample_rate,
            },
            Measured::Whole(audio) => whole(audio),
            Measured::Encoded { audio, .. } => whole(audio),
        }
    }
}

/// The kept tokens of every input (step 3), with what an inspection needs of the one input.
struct Gathered<'a> {
    tokens: Vec<AudioTokens>,
    audio: AudioSummary,
    inspect: Option<Kept<'a>>,
}

/// The audio and encoder output an inspection reports.
enum Kept<'a> {
    Owned(AudioInput, Vec<EncoderOutput>),
    Borrowed(&'a AudioInput, &'a [EncoderOutput]),
}

impl Kept<'_> {
    fn parts(&self) -> (&AudioInput, &[EncoderOutput]) {
        match self {
            Kept::Owned(audio, windows) => (audio, windows),
            Kept::Borrowed(audio, windows) => (audio, windows),
        }
    }
}

/// A request prepared up to the decoder ([`Pipeline::prepare`], steps 1 to 4 up to the
/// merge): the prompt embeddings with every input's kept audio rows in their spans, and the
/// [`Response`] without its answer.
pub struct Prepared<'a> {
    embeds: Tensor,
    response: Response,
    /// What an inspection reports besides the prompt logits (`Task::Inspect` only).
    inspect: Option<InspectParts<'a>>,
}

/// The tensors an inspection keeps from the preparation.
struct InspectParts<'a> {
    kept: Option<Kept<'a>>,
    projected: Vec<Tensor>,
    scores: Option<Vec<f32>>,
}

impl Prepared<'_> {
    /// The prompt embeddings, `(1, prompt tokens, hidden)`: what the decoder's prefill takes.
    pub fn embeds(&self) -> &Tensor {
        &self.embeds
    }

    /// The response so far: the prompt and its ids after expansion, the audio counts, the
    /// policy, the context use and the audio stages' timings; no answer yet.
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// The embeddings and the response, for a caller that runs the decoder itself (a server
    /// stepping many sequences together) and completes the response with
    /// [`Pipeline::complete`].
    pub fn into_parts(self) -> (Tensor, Response) {
        (self.embeds, self.response)
    }
}

impl Pipeline {
    /// Runs one request of the core end to end; `on_token` sees each new token id as it is
    /// generated and may return `false` to stop. The same as [`Pipeline::prepare`], a prefill
    /// of its embeddings, then the [`Task`].
    pub fn execute(
        &self,
        request: &AudioRequest<'_>,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        let prepared = self.prepare(request)?;
        self.finish(request, prepared, on_token)
    }

    /// Steps 1 to 4 of a request up to the merged prompt embeddings: measure, plan (a prompt
    /// that overflows the context is an [`Error::ContextOverflow`]), gather, project, merge.
    pub fn prepare<'r>(&self, request: &'r AudioRequest<'_>) -> Result<Prepared<'r>, Error> {
        request.policy.validate()?;
        if request.task.inspects() && request.inputs.len() != 1 {
            return Err(Error::Usage(
                "an inspection takes exactly one audio input".to_string(),
            ));
        }
        let mut timings = Timings::default();
        let measured = request
            .inputs
            .iter()
            .map(|s| self.measure(s, request.task.inspects(), &mut timings))
            .collect::<Result<Vec<_>, _>>()?;
        let counts: Vec<Vec<usize>> = measured.iter().map(|m| m.counts(self.family)).collect();
        let plan = self.plan(request, &counts)?;
        let gathered = self.gather(measured, &counts, &plan.policy, &mut timings)?;
        self.merge(request, plan, gathered, timings)
    }

    /// Step 1 for one input; `whole` decodes a file or upload whole instead of scanning it.
    fn measure<'a>(
        &self,
        source: &'a AudioSource<'a>,
        whole: bool,
        timings: &mut Timings,
    ) -> Result<Measured<'a>, Error> {
        let start = Instant::now();
        let measured = match source {
            AudioSource::Encoded {
                audio,
                windows,
                encoder_ms,
            } => {
                return Ok(Measured::Encoded {
                    audio,
                    windows,
                    encoder_ms: *encoder_ms,
                })
            }
            AudioSource::File(path) if whole => Measured::Whole(self.load_audio(path)?),
            AudioSource::Bytes {
                bytes,
                format,
                name,
            } if whole => {
                Measured::Whole(self.audio_from_bytes(bytes.clone(), format.as_deref(), name)?)
            }
            _ => {
                let info = auris_audio::scan_stream(open_stream(source)?)?;
                Measured::Stream {
                    source,
                    info,
                    counts: self.window_token_counts(info.samples_16k),
                }
            }
        };
        match &measured {
            Measured::Whole(audio) => {
                timings.decode_audio += audio.decode_ms;
                timings.mel += audio.mel_ms;
            }
            _ => timings.decode_audio += ms(start),
        }
        Ok(measured)
    }

    /// Step 2: the prompt of `request` and the pruning policy that fits the model's context
    /// for inputs of `counts[i]` tokens per window.
    fn plan(&self, request: &AudioRequest<'_>, counts: &[Vec<usize>]) -> Result<Plan, Error> {
        let prompt_text = self.request_prompt(&request.prompt, &request.inputs)?;
        let ids = prompt::tokenize(&self.tokenizer, &prompt_text)?;
        // Each placeholder becomes its audio, in its span's tokens if the family marks one.
        let text = prompt::expand(&ids, &vec![0; counts.len()], &self.special)?
            .ids
            .len();
        // The budget counts kept tokens per selection: per window, or per whole input.
        let scope = self.family.selection_scope();
        let lengths: Vec<usize> = counts
            .iter()
            .flat_map(|c| scope.selection_lengths(c))
            .collect();
        let (policy, context) = crate::budget::plan(
            &lengths,
            text,
            request.generate.max_new_tokens,
            self.context_length(),
            &request.policy,
            &request.context,
        )?;
        Ok(Plan {
            prompt_text,
            ids,
            policy,
            context,
        })
    }

    /// The prompt text of a request before expansion: a conversation through the chat
    /// template, else the one input's prompt ([`Pipeline::render_prompt`]).
    fn request_prompt(
        &self,
        spec: &PromptSpec,
        inputs: &[AudioSource<'_>],
    ) -> Result<String, Error> {
        match (spec, inputs) {
            (PromptSpec::Chat(_), _) | (_, [_]) => {
                let label = inputs.first().map_or(Path::new(""), AudioSource::label);
                self.render_prompt(spec, label)
            }
            _ => Err(Error::Usage(format!(
                "an instruction or a raw prompt takes one audio input, not {}",
                inputs.len()
            ))),
        }
    }

    /// Step 3: every input's kept tokens under `policy`; `counts` are step 1's.
    fn gather<'a>(
        &self,
        measured: Vec<Measured<'a>>,
        counts: &[Vec<usize>],
        policy: &Policy,
        timings: &mut Timings,
    ) -> Result<Gathered<'a>, Error> {
        let mut gathered = Gathered {
            tokens: Vec::with_capacity(measured.len()),
            audio: AudioSummary {
                duration_s: 0.0,
                sample_rate: measured.first().map_or(0, |m| m.summary().sample_rate),
            },
            inspect: None,
        };
        let scores = !matches!(policy.strategy, Strategy::None);
        for (input, counts) in measured.into_iter().zip(counts) {
            gathered.audio.duration_s += input.summary().duration_s;
            let tokens = match input {
                Measured::Stream { source, .. } => {
                    let reader = self.window_reader(open_stream(source)?);
                    let tokens = self.stream_tokens(reader, policy, scores, timings)?;
                    check_unchanged(source, counts, &tokens)?;
                    tokens
                }
                Measured::Whole(audio) => {
                    let start = Instant::now();
                    let windows = self.encode(&audio, true)?;
                    timings.encoder += ms(start);
                    let tokens = self.timed_select(&windows, policy, timings)?;
                    gathered.inspect = Some(Kept::Owned(audio, windows));
                    tokens
                }
                Measured::Encoded {
                    audio,
                    windows,
                    encoder_ms,
                } => {
                    timings.decode_audio += audio.decode_ms;
                    timings.mel += audio.mel_ms;
                    timings.encoder += encoder_ms;
                    gathered.inspect = Some(Kept::Borrowed(audio, windows));
                    self.timed_select(windows, policy, timings)?
                }
            };
            gathered.tokens.push(tokens);
        }
        Ok(gathered)
    }

    /// [`Pipeline::select`], its time added to `timings.projector`.
    fn timed_select(
        &self,
        windows: &[EncoderOutput],
        policy: &Policy,
        timings: &mut Timings,
    ) -> Result<AudioTokens, Error> {
        let start = Instant::now();
        let tokens = self.select(windows, policy)?;
        timings.projector += ms(start);
        Ok(tokens)
    }

    /// Step 4 up to the decoder: projection and the prompt merge.
    fn merge<'a>(
        &self,
        request: &AudioRequest<'_>,
        plan: Plan,
        gathered: Gathered<'a>,
        mut timings: Timings,
    ) -> Result<Prepared<'a>, Error> {
        let Plan {
            prompt_text,
            ids,
            policy,
            context,
        } = plan;
        let start = Instant::now();
        let projected = gathered
            .tokens
            .iter()
            .map(|t| self.project(t))
            .collect::<Result<Vec<_>, _>>()?;
        let joined = join_tokens(gathered.tokens);
        timings.projector += ms(start);

        let expanded = prompt::expand(&ids, &joined.kept_per_input, &self.special)?;
        let embeds = self.merge_embeddings(&expanded.ids, &expanded.audio_spans, &projected)?;
        // On long audio the projected rows are hundreds of MB: only an inspection keeps them.
        let inspect = request.task.inspects().then(|| InspectParts {
            kept: gathered.inspect,
            projected,
            scores: joined.scores,
        });
        let first = request.inputs.first();
        let response = Response {
            audio: first.map(|s| s.label().to_path_buf()).unwrap_or_default(),
            duration_s: gathered.audio.duration_s,
            sample_rate: gathered.audio.sample_rate,
            n_audio_tokens: joined.n_audio_tokens,
            n_kept: joined.kept_indices.len(),
            kept_indices: joined.kept_indices,
            prompt: prompt_text,
            prompt_token_ids: expanded.ids,
            output_token_ids: Vec::new(),
            text: String::new(),
            stopped_on: None,
            choice_logprobs: None,
            timings,
            inspection: None,
            policy,
            context,
        };
        Ok(Prepared {
            embeds,
            response,
            inspect,
        })
    }

    /// The prefill of a prepared request and the answer its [`Task`] asks for.
    fn finish(
        &self,
        request: &AudioRequest<'_>,
        prepared: Prepared<'_>,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        let Prepared {
            embeds,
            mut response,
            inspect,
        } = prepared;
        let start = Instant::now();
        let mut cache = self.decoder.new_cache();
        let (logits, all_logits) = self.prefill(&embeds, &mut cache, request.task.inspects())?;
        // The prompt embeddings are hundreds of MB on long audio: gone before generation.
        drop(embeds);
        response.timings.prefill = ms(start);
        response.inspection = all_logits
            .map(|all| self.inspect_one(inspect, &all))
            .transpose()?;
        self.answer(
            &request.task,
            &request.generate,
            response,
            &mut cache,
            &logits,
            on_token,
        )
    }

    /// The inspection of a run of one input: its audio, encoder output, projected rows and
    /// prompt logits.
    fn inspect_one(
        &self,
        parts: Option<InspectParts<'_>>,
        logits: &Tensor,
    ) -> Result<Inspection, Error> {
        let Some(InspectParts {
            kept: Some(kept),
            projected,
            scores,
        }) = parts
        else {
            return Err(Error::Invariant(
                "inspect needs the audio windows and their encoder output",
            ));
        };
        let [projected] = projected.as_slice() else {
            return Err(Error::Invariant("inspect needs one input's projected rows"));
        };
        let (audio, windows) = kept.parts();
        self.inspection(audio, windows, scores, projected, logits)
    }
}

/// The kept tokens of all inputs as one sequence, their rows gone (projected already).
struct Joined {
    n_audio_tokens: usize,
    kept_indices: Vec<usize>,
    kept_per_input: Vec<usize>,
    scores: Option<Vec<f32>>,
}

/// Joins the inputs' tokens in order: kept indices count the tokens of the inputs before.
fn join_tokens(tokens: Vec<AudioTokens>) -> Joined {
    let mut joined = Joined {
        n_audio_tokens: 0,
        kept_indices: Vec::new(),
        kept_per_input: Vec::with_capacity(tokens.len()),
        scores: Some(Vec::new()),
    };
    for t in tokens {
        let offset = joined.n_audio_tokens;
        joined.kept_per_input.push(t.kept_indices.len());
        joined
            .kept_indices
            .extend(t.kept_indices.iter().map(|&i| offset + i));
        joined.n_audio_tokens += t.n_audio_tokens;
        joined.scores = match (joined.scores, t.scores) {
            (Some(mut all), Some(s)) => {
                all.extend(s);
                Some(all)
            }
            _ => None,
        };
    }
    joined
}

/// The stream a file or upload is read from (twice: measured, then read window by window).
fn open_stream(source: &AudioSource<'_>) -> Result<auris_audio::PcmStream, Error> {
    Ok(match source {
        AudioSource::File(path) => auris_audio::PcmStream::open(path)?,
        AudioSource::Bytes {
            bytes,
            format,
            name,
        } => auris_audio::PcmStream::from_bytes(bytes.clone(), format.as_deref(), name)?,
        AudioSource::Encoded { .. } => {
            return Err(Error::Invariant("encoded audio has no stream to read"))
        }
    })
}

/// The second read of a file must give the tokens the first one counted.
fn check_unchanged(
    source: &AudioSource<'_>,
    counts: &[usize],
    tokens: &AudioTokens,
) -> Result<(), Error> {
    let counted: usize = counts.iter().sum();
    if tokens.n_audio_tokens == counted {
        return Ok(());
    }
    Err(Error::BadFile {
        path: source.label().to_path_buf(),
        reason: format!(
            "the file changed while it was read: {counted} audio tokens, then {}",
            tokens.n_audio_tokens
        ),
    })
}
