//! Checks a chat completions body and turns it into a [`Job`] for the model thread.

use std::path::{Path, PathBuf};

use auris::prompt::{Message, Part};
use auris_prune::{Policy, Strategy};
use base64::Engine;
use serde_json::Value;

use super::wire::{ApiError, ChatCompletionRequest, Content, ContentPart, Stop, WireMessage};
use crate::cli::args::{describe_pruning, with_parameters, ServeArgs};

/// An audio input as sent: its bytes and a container hint.
pub(super) struct AudioBlob {
    pub(super) bytes: Vec<u8>,
    pub(super) format: Option<String>,
    pub(super) name: String,
}

/// Everything the model thread needs for one request, checked.
pub(super) struct Params {
    pub(super) messages: Vec<Message>,
    pub(super) audio: Vec<AudioBlob>,
    pub(super) max_tokens: usize,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) seed: u64,
    pub(super) stop: Vec<String>,
    pub(super) policy: Policy,
    /// The pruning applied, echoed in the response.
    pub(super) prune: Value,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
}

/// Parses and checks a request body against the server's defaults.
pub(super) fn parse(body: &[u8], args: &ServeArgs) -> Result<Params, ApiError> {
    let mut req: ChatCompletionRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("invalid request body: {e}")))?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("n", "only n=1 is supported"));
    }
    if req.logprobs {
        return Err(ApiError::bad("logprobs", "logprobs are not supported"));
    }
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(args.generation.max_new_tokens);
    if max_tokens == 0 {
        return Err(ApiError::bad("max_tokens", "max_tokens must be at least 1"));
    }
    let temperature = req.temperature.or(args.generation.temperature);
    if let Some(t) = temperature {
        if !(t.is_finite() && t >= 0.0) {
            return Err(ApiError::bad("temperature", "temperature must be >= 0"));
        }
    }
    let top_p = req.top_p.or(args.generation.top_p);
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::bad("top_p", "top_p must be in (0, 1]"));
        }
    }
    let seed = req.seed.unwrap_or(args.generation.seed);
    let stop = match req.stop.take() {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.iter().any(String::is_empty) || stop.len() > 4 {
        return Err(ApiError::bad(
            "stop",
            "stop takes up to 4 non-empty strings",
        ));
    }
    let (policy, prune) = pruning(&req, args, seed)?;
    let mut audio = Vec::new();
    let messages = req
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m, &mut audio, args.allowed_local_media_path.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    if messages.is_empty() {
        return Err(ApiError::bad("messages", "messages must not be empty"));
    }
    Ok(Params {
        messages,
        audio,
        max_tokens,
        temperature: if args.generation.greedy && req.temperature.is_none() {
            Some(0.0)
        } else {
            temperature
        },
        top_p,
        seed,
        stop,
        policy,
        prune,
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// The request's pruning policy (server defaults for fields it leaves out) and its echo.
fn pruning(
    req: &ChatCompletionRequest,
    args: &ServeArgs,
    seed: u64,
) -> Result<(Policy, Value), ApiError> {
    if req.keep.is_some_and(|k| !(k > 0.0 && k <= 1.0)) {
        return Err(ApiError::bad("keep", "keep must be in (0, 1]"));
    }
    if req.segments == Some(0) {
        return Err(ApiError::bad("segments", "segments must be at least 1"));
    }
    let strategy = match &req.prune {
        Some(name) => name.to_lowercase().parse::<Strategy>().map_err(|_| {
            ApiError::bad(
                "prune",
                format!(
                    "unknown prune strategy {name:?}: expected one of {}",
                    auris_prune::STRATEGY_NAMES.join(", ")
                ),
            )
        })?,
        None => {
            args.prune
                .policy(seed)
                .map_err(|e| ApiError::bad("prune", e.to_string()))?
                .strategy
        }
    };
    let asked_keep = req.keep.unwrap_or(args.prune.keep);
    let segments = req.segments.unwrap_or(args.prune.segments);
    let remainder = args.prune.segment_remainder.remainder();
    let strategy = with_parameters(strategy, segments, remainder, seed);
    let keep = if matches!(strategy, Strategy::None) {
        1.0
    } else {
        asked_keep
    };
    let policy = Policy::new(strategy, keep).map_err(|e| {
        let param = if req.keep.is_some() { "keep" } else { "prune" };
        ApiError::bad(param, e.to_string())
    })?;
    let echo = describe_pruning(strategy, asked_keep, segments, remainder);
    Ok((policy, echo))
}

fn message(
    index: usize,
    m: WireMessage,
    audio: &mut Vec<AudioBlob>,
    allowed: Option<&Path>,
) -> Result<Message, ApiError> {
    let param = format!("messages[{index}]");
    if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
        return Err(ApiError::bad(
            &param,
            format!(
                "unsupported role {:?}: expected system, user or assistant",
                m.role
            ),
        ));
    }
    let content = match m.content {
        None => Vec::new(),
        Some(Content::Text(text)) => vec![Part::Text { text }],
        Some(Content::Parts(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, p)| part(&format!("{param}.content[{j}]"), p, audio, allowed))
            .collect::<Result<_, _>>()?,
    };
    Ok(Message {
        role: m.role,
        content,
    })
}

fn part(
    param: &str,
    p: ContentPart,
    audio: &mut Vec<AudioBlob>,
    allowed: Option<&Path>,
) -> Result<Part, ApiError> {
    let blob = match p {
        ContentPart::Text { text } => return Ok(Part::Text { text }),
        ContentPart::InputAudio { input_audio } => {
            let format = input_audio.format.to_lowercase();
            if !matches!(format.as_str(), "wav" | "mp3" | "flac" | "ogg") {
                return Err(ApiError::bad(
                    &format!("{param}.input_audio.format"),
                    format!(
                        "unsupported audio format {:?}: expected wav, mp3, flac or ogg",
                        input_audio.format
                    ),
                ));
            }
            (base64_bytes(param, &input_audio.data)?, Some(format))
        }
        ContentPart::AudioUrl { audio_url } => url_bytes(param, &audio_url.url, allowed)?,
    };
    let name = format!("audio {}", audio.len() + 1);
    audio.push(AudioBlob {
        bytes: blob.0,
        format: blob.1,
        name: name.clone(),
    });
    Ok(Part::Audio { audio_url: name })
}

fn base64_bytes(param: &str, data: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ApiError::bad(param, format!("audio data is not valid base64: {e}")))
}

/// The bytes behind a `data:` or allowed `file://` URL, with a container hint.
fn url_bytes(
    param: &str,
    url: &str,
    allowed: Option<&Path>,
) -> Result<(Vec<u8>, Option<String>), ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| ApiError::bad(param, "a data: URL needs a ',' before its data"))?;
        let Some(mime) = meta.strip_suffix(";base64") else {
            return Err(ApiError::bad(param, "only base64 data: URLs are supported"));
        };
        let format = mime.strip_prefix("audio/").map(|sub| {
            match sub.trim_start_matches("x-") {
                "mpeg" => "mp3",
                "wave" => "wav",
                other => other,
            }
            .to_string()
        });
        return Ok((base64_bytes(param, data)?, format));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return local_file(param, Path::new(path), allowed);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(ApiError::bad(
            param,
            "auris serve does not fetch http(s) URLs; send the audio inline (input_audio or a data: URL)",
        ));
    }
    Err(ApiError::bad(
        param,
        "unsupported audio URL: expected a data: URL or a file:// URL",
    ))
}

fn local_file(
    param: &str,
    path: &Path,
    allowed: Option<&Path>,
) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let Some(allowed) = allowed else {
        return Err(ApiError::bad(
            param,
            "file:// URLs need the server to be started with --allowed-local-media-path",
        ));
    };
    let refused = || {
        ApiError::bad(
            param,
            format!(
                "{} is not a file under the allowed local media path",
                path.display()
            ),
        )
    };
    let real: PathBuf = path.canonicalize().map_err(|_| refused())?;
    if !real.starts_with(allowed) || !real.is_file() {
        return Err(refused());
    }
    let bytes = std::fs::read(&real).map_err(|_| refused())?;
    let ext = real
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_string);
    Ok((bytes, ext))
}
