//! The model thread: takes jobs from the bounded queue one at a time and sends each one's text
//! back as it is generated.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::Receiver;

use auris::budget::ContextFit;
use auris::pipeline::{AudioRequest, AudioSource, PromptSpec, Task, TextStream};
use auris::{Error, Pipeline, Response};
use auris_llm::{GenerateOptions, StopStrings};
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

/// Runs jobs until every sender is gone.
pub(super) fn serve_jobs(p: &Pipeline, base: &GenerateOptions, jobs: Receiver<Job>) {
    let context = p.config().text_config.max_position_embeddings;
    while let Ok(mut job) = jobs.recv() {
        if job.events.is_closed() {
            continue;
        }
        job.admission.start();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| run_job(p, base, &job)))
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the model thread panicked on this request",
                ))
            });
        job.admission.finish(&result, context);
        let _ = job.events.send(Event::Done(result));
    }
}

fn run_job(p: &Pipeline, base: &GenerateOptions, job: &Job) -> Result<Box<Outcome>, ApiError> {
    let params = &job.params;
    let mut generate = base.clone();
    generate.max_new_tokens = params.max_tokens;
    if let Some(t) = params.temperature {
        generate.sampling.temperature = (t > 0.0).then_some(t);
    }
    if let Some(top_p) = params.top_p {
        generate.sampling.top_p = (top_p < 1.0).then_some(top_p);
    }
    generate.sampling.seed = params.seed;
    // The same core as `auris ask`: each upload is read one window at a time, and a request
    // that overflows the context is a 400 naming the numbers, as the command line words them
    // (the keep ratio is not lowered to fit: that is per command line, not per request).
    let request = AudioRequest {
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
    };
    let mut text = TextStream::new(p.tokenizer());
    let mut stops = StopStrings::new(params.stop.iter().cloned());
    let response = p
        .execute(&request, &mut |id| {
            if let Ok(Some(piece)) = text.push(id) {
                let out = stops.push(&piece);
                if !out.is_empty() {
                    let _ = job.events.send(Event::Delta(out));
                }
            }
            !stops.hit() && !job.events.is_closed()
        })
        .map_err(api_error)?;
    if job.events.is_closed() {
        tracing::info!(
            "request cancelled after {} tokens: the client went away",
            response.output_token_ids.len()
        );
    }
    // The stream holds back a trailing partial character; the full decode has it (as U+FFFD).
    if let Some(tail) = response.text.strip_prefix(stops.text()) {
        let out = stops.push(tail);
        if !out.is_empty() {
            let _ = job.events.send(Event::Delta(out));
        }
    }
    let rest = stops.finish();
    if !rest.is_empty() {
        let _ = job.events.send(Event::Delta(rest));
    }
    let finish_reason = if stops.hit() || response.stopped_on.is_some() {
        "stop"
    } else if response.output_token_ids.len() >= params.max_tokens {
        "length"
    } else {
        "stop"
    };
    Ok(Box::new(Outcome {
        text: stops.into_text(),
        response,
        finish_reason,
    }))
}

/// The HTTP status of a pipeline error: what the request asked for is a 400, the rest a 500.
fn api_error(e: Error) -> ApiError {
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
