//! `GET /metrics`: Prometheus' text format with vLLM's metric names and meanings
//! (vLLM's `docs/design/metrics.md`), so that dashboards, autoscalers and routers made for
//! vLLM read an auris replica as they read a vLLM one.
//!
//! - `vllm:num_requests_running`, `vllm:num_requests_waiting` (gauges): requests in the model
//!   thread's batch (their audio being prepared, their prompt prefilled, or generating),
//!   requests admitted and waiting in the queue for a slot.
//! - `vllm:request_queue_time_seconds`: arrival to the model thread taking the request into
//!   the batch.
//! - `vllm:time_to_first_token_seconds`: arrival to the first generated token (the queue
//!   time, the audio stages, the prefill and the steps it shared with the batch).
//! - `vllm:request_time_per_output_token_seconds`: a request's generation time over its
//!   generated tokens after the first.
//! - `vllm:e2e_request_latency_seconds`: arrival to the answer.
//! - `vllm:prompt_tokens_total`, `vllm:generation_tokens_total`,
//!   `vllm:request_success_total{finished_reason}` (counters).
//! - `vllm:kv_cache_usage_perc` (gauge, 0 to 1): the positions the KV caches of the batch hold
//!   over what `--parallel` sequences of the model's whole context would hold (each sequence's
//!   cache grows with it), after each step.
//!
//! Every metric carries the label `model_name`, as vLLM's do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ::metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::wire::ApiError;
use super::worker::Outcome;

const RUNNING: &str = "vllm:num_requests_running";
const WAITING: &str = "vllm:num_requests_waiting";
const QUEUE_TIME: &str = "vllm:request_queue_time_seconds";
const TTFT: &str = "vllm:time_to_first_token_seconds";
const TPOT: &str = "vllm:request_time_per_output_token_seconds";
const E2E: &str = "vllm:e2e_request_latency_seconds";
const PROMPT_TOKENS: &str = "vllm:prompt_tokens_total";
const GENERATION_TOKENS: &str = "vllm:generation_tokens_total";
const SUCCESS: &str = "vllm:request_success_total";
const KV_USAGE: &str = "vllm:kv_cache_usage_perc";

/// vLLM's buckets for the time to first token, seconds.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's buckets for the time per output token, seconds.
const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's buckets for request latencies (end to end, queue), seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Installs the process' metrics recorder; the handle renders `GET /metrics`.
pub(super) fn install(model: &str) -> anyhow::Result<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .add_global_label("model_name", model)
        .set_buckets_for_metric(Matcher::Full(TTFT.into()), TTFT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(TPOT.into()), TPOT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(E2E.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(QUEUE_TIME.into()), LATENCY_BUCKETS)?;
    let handle = builder.install_recorder()?;
    // Present from the first scrape, before any request.
    gauge!(RUNNING).set(0.0);
    gauge!(WAITING).set(0.0);
    gauge!(KV_USAGE).set(0.0);
    counter!(PROMPT_TOKENS).absolute(0);
    counter!(GENERATION_TOKENS).absolute(0);
    Ok(handle)
}

/// An admitted request, from its arrival until the model thread is done with it: it keeps the
/// waiting and running gauges and the server's count of unfinished requests (what a drain waits
/// for) right however the request ends, as it is dropped.
pub(super) struct Admission {
    arrived: Instant,
    started: Option<Instant>,
    first_token: Option<Instant>,
    unfinished: Arc<AtomicUsize>,
}

impl Admission {
    /// A request that arrived at `arrived` joins the queue.
    pub(super) fn new(arrived: Instant, unfinished: &Arc<AtomicUsize>) -> Self {
        unfinished.fetch_add(1, Ordering::SeqCst);
        gauge!(WAITING).increment(1.0);
        Self {
            arrived,
            started: None,
            first_token: None,
            unfinished: unfinished.clone(),
        }
    }

    /// The model thread takes the request.
    pub(super) fn start(&mut self) {
        if self.started.is_none() {
            let now = Instant::now();
            histogram!(QUEUE_TIME).record((now - self.arrived).as_secs_f64());
            gauge!(WAITING).decrement(1.0);
            gauge!(RUNNING).increment(1.0);
            self.started = Some(now);
        }
    }

    /// The request's first token was generated.
    pub(super) fn first_token(&mut self) {
        if self.first_token.is_none() {
            let now = Instant::now();
            histogram!(TTFT).record((now - self.arrived).as_secs_f64());
            self.first_token = Some(now);
        }
    }

    /// The model thread is done with the request.
    pub(super) fn finish(&self, result: &Result<Box<Outcome>, ApiError>) {
        let Ok(o) = result else {
            return;
        };
        let r = &o.response;
        let t = &r.timings;
        let generated = r.output_token_ids.len();
        if generated > 1 {
            histogram!(TPOT).record(t.generate / 1e3 / (generated - 1) as f64);
        }
        histogram!(E2E).record(self.arrived.elapsed().as_secs_f64());
        counter!(PROMPT_TOKENS).increment(r.prompt_token_ids.len() as u64);
        counter!(GENERATION_TOKENS).increment(generated as u64);
        counter!(SUCCESS, "finished_reason" => o.finish_reason).increment(1);
    }
}

/// The batch's KV caches hold `used` positions of `capacity`.
pub(super) fn kv_usage(used: usize, capacity: usize) {
    gauge!(KV_USAGE).set((used as f64 / capacity.max(1) as f64).min(1.0));
}

impl Drop for Admission {
    fn drop(&mut self) {
        let gauge = if self.started.is_some() {
            RUNNING
        } else {
            WAITING
        };
        gauge!(gauge).decrement(1.0);
        self.unfinished.fetch_sub(1, Ordering::SeqCst);
    }
}
