//! The wire format of OpenAI's chat completions API (the parts auris reads and writes), and
//! its error object.
//!
//! Request and chunk fields follow the API reference at
//! <https://platform.openai.com/docs/api-reference/chat>; `audio_url` parts are vLLM's form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

/// A `POST /v1/chat/completions` body. Fields auris does not use (`user`, `modalities`, ...)
/// are ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
pub(super) struct ChatCompletionRequest {
    pub(super) messages: Vec<WireMessage>,
    pub(super) max_tokens: Option<usize>,
    pub(super) max_completion_tokens: Option<usize>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) seed: Option<u64>,
    pub(super) stop: Option<Stop>,
    pub(super) n: Option<usize>,
    #[serde(default)]
    pub(super) stream: bool,
    pub(super) stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub(super) logprobs: bool,
    /// auris: pruning strategy name (`none`, `segmentwise`, ...).
    pub(super) prune: Option<String>,
    /// auris: fraction of audio tokens kept.
    pub(super) keep: Option<f32>,
    /// auris: time segments of segmentwise pruning.
    pub(super) segments: Option<usize>,
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamOptions {
    #[serde(default)]
    pub(super) include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct WireMessage {
    pub(super) role: String,
    #[serde(default)]
    pub(super) content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ContentPart {
    Text { text: String },
    InputAudio { input_audio: InputAudio },
    AudioUrl { audio_url: AudioUrl },
}

#[derive(Debug, Deserialize)]
pub(super) struct InputAudio {
    pub(super) data: String,
    pub(super) format: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct AudioUrl {
    pub(super) url: String,
}

/// An error answered with OpenAI's error object `{"error": {message, type, param, code}}`.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) param: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 about request field `param`.
    pub(super) fn bad(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    pub(super) fn body(&self) -> Value {
        let kind = match self.status.as_u16() {
            400 | 413 | 404 | 405 => "invalid_request_error",
            429 | 503 => "server_busy_error",
            _ => "server_error",
        };
        json!({ "error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.status.as_u16(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
