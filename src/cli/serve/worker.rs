//! What the model thread takes and sends back: the [`Job`] of a request, its [`Event`]s, and
//! the pieces the scheduler (`scheduler`) builds them from.

use auris::budget::ContextFit;
use auris::pipeline::{AudioRequest, AudioSource, PromptSpec, Task};
use auris::{Error, Response};
use auris_llm::{GenerateOptions, Sequence};
use axum::http::StatusCode;
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Admission;
use super::request::Params;
use super::wire::ApiError;

/// A request waiting for the model.
pub(super) struct Job {
    pub(super) params: Params,
    /// Where the text goes; closed when the client went away, which stops generation.
    pub(super) events: UnboundedSender<Event>,
    /// The request's place in the metrics and in the drain's count, until it is dropped.
    pub(super) admission: Admission,
}

/// What the model thread reports for a job.
pub(super) enum Event {
    /// New text (never a partial UTF-8 character, never a started stop string).
    Delta(String),
    /// The end: the answer, or why there is none.
    Done(Result<Box<Outcome>, ApiError>),
}

/// A finished generation.
pub(super) struct Outcome {
    pub(super) response: Response,
    /// The answer's text, cut before a stop string.
    pub(super) text: String,
    pub(super) finish_reason: &'static str,
}

/// The decoding options of a request: the server's, with the request's own limits, sampling
/// and seed.
pub(super) fn generate_options(base: &GenerateOptions, params: &Params) -> GenerateOptions {
    let mut generate = base.clone();
    generate.max_new_tokens = params.max_tokens;
    if let Some(t) = params.temperature {
        generate.sampling.temperature = (t > 0.0).then_some(t);
    }
    if let Some(top_p) = params.top_p {
        generate.sampling.top_p = (top_p < 1.0).then_some(top_p);
    }
    generate.sampling.seed = params.seed;
    generate
}

/// The request core's request for a chat request: the same as `auris ask`'s, each upload read
/// one window at a time, and a request that overflows the context is a 400 naming the numbers
/// as the command line words them (the keep ratio is not lowered to fit: that is per command
/// line, not per request).
pub(super) fn audio_request(params: &Params, generate: GenerateOptions) -> AudioRequest<'static> {
    AudioRequest {
        inputs: params
            .audio
            .iter()
            .map(|a| AudioSource::Bytes {
                bytes: a.bytes.clone(),
                format: a.format.clone(),
                name: a.name.clone(),
            })
            .collect(),
        prompt: PromptSpec::Chat(params.messages.clone()),
        policy: params.policy,
        generate,
        task: Task::Generate,
        context: ContextFit::default(),
    }
}

/// The outcome of a finished sequence whose `response` is complete: the text the stop strings
/// held back is sent to the client, and the finish reason named.
pub(super) fn outcome(job: &Job, seq: &mut Sequence, response: Response) -> Box<Outcome> {
    // The stream holds back a trailing partial character; the full decode has it (as U+FFFD).
    if let Some(tail) = response.text.strip_prefix(seq.stop_strings().text()) {
        let out = seq.push_text(tail);
        if !out.is_empty() {
            let _ = job.events.send(Event::Delta(out));
        }
    }
    let rest = seq.finish_text();
    if !rest.is_empty() {
        let _ = job.events.send(Event::Delta(rest));
    }
    let finish_reason = if seq.stop_strings().hit() || response.stopped_on.is_some() {
        "stop"
    } else if response.output_token_ids.len() >= job.params.max_tokens {
        "length"
    } else {
        "stop"
    };
    Box::new(Outcome {
        text: seq.stop_strings().text().to_string(),
        response,
        finish_reason,
    })
}

/// The HTTP status of a pipeline error: what the request asked for is a 400, the rest a 500.
pub(super) fn api_error(e: Error) -> ApiError {
    use auris_audio::AudioError;
    match e {
        Error::Audio(AudioError::Candle(_) | AudioError::ShapeMismatch { .. }) => {
            ApiError::bad("messages", format!("could not use the audio: {e}"))
        }
        Error::Audio(_) => ApiError::bad("messages", format!("could not decode the audio: {e}")),
        // The command line's message, with its numbers; the text and max_tokens alone
        // overflowing is max_tokens' fault, else the audio's.
        Error::ContextOverflow(o) => {
            let u = &o.usage;
            let param = if u.text_tokens + u.max_new_tokens > u.max_positions {
                "max_tokens"
            } else {
                "messages"
            };
            ApiError::bad(param, crate::cli::error_message(&Error::ContextOverflow(o)))
        }
        Error::PlaceholderCount { .. } | Error::Template { .. } | Error::Usage(_) => {
            ApiError::bad("messages", e.to_string())
        }
        Error::Prune(_) => ApiError::bad("prune", e.to_string()),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
