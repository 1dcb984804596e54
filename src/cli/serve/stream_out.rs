//! Response bodies: the `chat.completion` object, and the `chat.completion.chunk` events of a
//! streamed answer (OpenAI's streaming format: a first delta with the role, content deltas, a
//! last chunk with `finish_reason`, an optional usage chunk, then `[DONE]`).

use std::collections::VecDeque;
use std::time::Instant;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::worker::{Event, Outcome};
use super::{log_request, CHAT_PATH};

/// What every chunk of one answer repeats.
pub(super) struct Head {
    pub(super) id: String,
    pub(super) model: String,
    pub(super) created: u64,
    pub(super) prune: Value,
    pub(super) include_usage: bool,
    pub(super) start: Instant,
}

impl Head {
    /// The `usage` object, with auris' audio token counts and stage timings.
    fn usage(&self, o: &Outcome) -> Value {
        let r = &o.response;
        let t = &r.timings;
        let prompt = r.prompt_token_ids.len();
        let completion = r.output_token_ids.len();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "audio_seconds": r.duration_s,
            "audio_tokens": r.n_audio_tokens,
            "audio_tokens_kept": r.n_kept,
            "timings_ms": super::timings_json(t, None),
        })
    }

    /// The non-streamed answer.
    pub(super) fn completion(&self, o: &Outcome) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": o.text },
                "logprobs": null,
                "finish_reason": o.finish_reason,
            }],
            "usage": self.usage(o),
            "prune": self.prune,
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        })
        .to_string()
    }
}

/// The data lines of a streamed answer, produced as the model thread sends text.
pub(super) struct Chunks {
    head: Head,
    ready: VecDeque<String>,
    events: UnboundedReceiver<Event>,
    done: bool,
}

impl Chunks {
    pub(super) fn new(head: Head, first: Event, events: UnboundedReceiver<Event>) -> Self {
        let role = head.chunk(json!({ "role": "assistant", "content": "" }), None);
        let mut c = Self {
            head,
            ready: VecDeque::from([role]),
            events,
            done: false,
        };
        c.take(first);
        c
    }

    fn take(&mut self, ev: Event) {
        match ev {
            Event::Delta(text) => {
                let chunk = self.head.chunk(json!({ "content": text }), None);
                self.ready.push_back(chunk);
            }
            Event::Done(Ok(o)) => {
                let last = self.head.chunk(json!({}), Some(o.finish_reason));
                self.ready.push_back(last);
                if self.head.include_usage {
                    let usage = json!({
                        "id": self.head.id,
                        "object": "chat.completion.chunk",
                        "created": self.head.created,
                        "model": self.head.model,
                        "choices": [],
                        "usage": self.head.usage(&o),
                        "prune": self.head.prune,
                    });
                    self.ready.push_back(usage.to_string());
                }
                self.finish(StatusCode::OK, Some(&o));
            }
            Event::Done(Err(e)) => {
                self.ready.push_back(e.body().to_string());
                self.finish(e.status, None);
            }
        }
    }

    fn finish(&mut self, status: StatusCode, o: Option<&Outcome>) {
        self.ready.push_back("[DONE]".to_string());
        self.done = true;
        log_request(&Method::POST, CHAT_PATH, status, o, self.head.start);
    }

    /// The next data line; `None` at the end.
    pub(super) async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            match self.events.recv().await {
                Some(ev) => self.take(ev),
                None => {
                    let e = super::ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the model thread ended",
                    );
                    self.take(Event::Done(Err(e)));
                }
            }
        }
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        if !self.done {
            tracing::info!(
                "POST {CHAT_PATH} 200 client disconnected mid-stream, generation stopped ms={:.0}",
                self.head.start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
