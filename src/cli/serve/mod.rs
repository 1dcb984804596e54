//! `auris serve`: OpenAI's chat completions API over HTTP (axum on tokio). The model runs on
//! its own thread; requests reach it through a bounded queue, and its scheduler decodes up to
//! `--parallel` of them together (continuous batching, see [`scheduler`]). A request's tokens
//! are those it gets alone, whoever else is served beside it.
//!
//! For a load balancer or an orchestrator: `GET /health` (liveness: 200 once loaded),
//! `GET /ready` (readiness: 200 once loaded, 503 while loading or draining), `GET /metrics`
//! (Prometheus, vLLM's names; see [`metrics`]). On SIGTERM or Ctrl-C the server drains: it
//! stops admitting (readiness and new requests get 503), finishes every admitted request,
//! running or queued, then exits 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::*;

mod metrics;
mod request;
mod scheduler;
mod stream_out;
mod wire;
mod worker;

use wire::ApiError;
use worker::{Event, Job, Outcome};

/// Sequences decoded together when `--parallel` is not given, if that many fit in memory
/// (vLLM's `max_num_seqs`): a decode step reads the weights once for all its rows, and each
/// row adds its own compute and attention to every running request's time per token.
const DEFAULT_PARALLEL: usize = 8;

/// What every handler shares.
struct AppState {
    args: ServeArgs,
    jobs: SyncSender<Job>,
    /// The model is loaded.
    ready: AtomicBool,
    /// A shutdown was asked for: nothing new is admitted.
    draining: AtomicBool,
    /// Requests admitted and not finished (queued or running).
    unfinished: Arc<AtomicUsize>,
    metrics: PrometheusHandle,
    created: u64,
}

/// Runs `auris serve` until Ctrl-C or SIGTERM.
pub(super) fn run(args: ServeArgs) -> Result<ExitCode> {
    if args.max_queue == 0 {
        return Err(usage("--max-queue must be at least 1"));
    }
    if args.max_request_mb == 0 {
        return Err(usage("--max-request-mb must be at least 1"));
    }
    if args.parallel == Some(0) {
        return Err(usage("--parallel must be at least 1"));
    }
    let mut args = args;
    if let Some(dir) = &args.allowed_local_media_path {
        let real = dir
            .canonicalize()
            .map_err(|e| usage(format!("--allowed-local-media-path {}: {e}", dir.display())))?;
        args.allowed_local_media_path = Some(real);
    }
    args.prune.policy(args.generation.seed)?;
    if !args.quiet {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_target(false)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local: SocketAddr = listener.local_addr()?;
    eprintln!("auris: listening on http://{local}");
    let (jobs, queue) = sync_channel::<Job>(args.max_queue);
    let metrics = metrics::install(&args.model.model)?;
    let state = Arc::new(AppState {
        args,
        jobs,
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        unfinished: Arc::new(AtomicUsize::new(0)),
        metrics,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let model_state = state.clone();
    let model_thread = std::thread::Builder::new()
        .name("auris-model".into())
        .spawn(move || model_main(model_state, queue))?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .fallback(not_found)
        .with_state(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(drain(state))
        .await?;
    tracing::info!("shutting down");
    // The router (and with it the queue's sender) is gone: the model thread ends after the
    // jobs it holds.
    let _ = model_thread.join();
    Ok(ExitCode::SUCCESS)
}

/// Loads the model, then runs jobs; a model that does not load ends the process.
fn model_main(state: Arc<AppState>, queue: std::sync::mpsc::Receiver<Job>) {
    let args = &state.args;
    let sequences = match args.parallel {
        Some(n) => Sequences::Exactly(n),
        None => Sequences::UpTo(DEFAULT_PARALLEL),
    };
    let loaded =
        load_for(&args.model, args.prompt_format, args.quiet, sequences).and_then(|session| {
            let base = generate_options(&session.pipeline, &args.generation)?;
            Ok((session, base))
        });
    let (session, base) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}", chain_messages(&e).join(": "));
            if let Some(hint) = hint_for(&e) {
                eprintln!("hint: {hint}");
            }
            std::process::exit(1);
        }
    };
    if !session.pipeline.is_chat() {
        eprintln!(
            "error: {} has no chat template; auris serve answers chat requests only",
            args.model.model
        );
        std::process::exit(1);
    }
    let parallel = session.pipeline.sequences();
    tracing::info!(
        load_ms = session.load_ms as u64,
        parallel,
        "model loaded, ready"
    );
    state.ready.store(true, Ordering::SeqCst);
    // Only the queue's receiver is needed from here; the state's sender must not keep the
    // queue open at shutdown.
    drop(state);
    scheduler::run(&session.pipeline, &base, queue, parallel);
}

/// Waits for SIGTERM or Ctrl-C, then drains: readiness and new requests answer 503 while the
/// admitted requests finish. The server then closes (axum waits for the open responses).
async fn drain(state: Arc<AppState>) {
    shutdown_signal().await;
    state.draining.store(true, Ordering::SeqCst);
    let left = state.unfinished.load(Ordering::SeqCst);
    tracing::info!("draining: {left} admitted requests to finish, no new ones");
    while state.unfinished.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let linger = std::time::Duration::from_millis(state.args.drain_linger_ms);
    tracing::info!("drained; closing in {} ms", linger.as_millis());
    tokio::time::sleep(linger).await;
    drop(state);
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading").into_response()
    }
}

/// Readiness: 200 when requests are admitted, 503 while the model loads or the server drains.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is draining").into_response()
    } else if state.ready.load(Ordering::SeqCst) {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading").into_response()
    }
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.args.model.model,
            "object": "model",
            "created": state.created,
            "owned_by": "auris",
        }],
    }))
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let err = ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {uri}"),
    );
    log_request(&method, uri.path(), err.status, None, Instant::now());
    err.into_response()
}

/// One log line per request.
fn log_request(
    method: &Method,
    path: &str,
    status: StatusCode,
    outcome: Option<&Outcome>,
    start: Instant,
) {
    let ms = start.elapsed().as_secs_f64() * 1e3;
    match outcome {
        Some(o) => tracing::info!(
            "{method} {path} {} audio_s={:.2} prompt_tokens={} completion_tokens={} ms={ms:.0}",
            status.as_u16(),
            o.response.duration_s,
            o.response.prompt_token_ids.len(),
            o.response.output_token_ids.len(),
        ),
        None => tracing::info!("{method} {path} {} ms={ms:.0}", status.as_u16()),
    }
}

const CHAT_PATH: &str = "/v1/chat/completions";

async fn chat(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let limit = state.args.max_request_mb * 1024 * 1024;
    let result = match read_body(&headers, body, limit).await {
        Ok(body) => submit(&state, body, start).await,
        Err(e) => Err(e),
    };
    let (params, mut events) = match result {
        Ok(x) => x,
        Err(e) => {
            log_request(&Method::POST, CHAT_PATH, e.status, None, start);
            return e.into_response();
        }
    };
    let id = format!("chatcmpl-{:x}", rand_id());
    let model = state.args.model.model.clone();
    // The first event comes after the prompt was run: an error until then is the request's.
    let first = match events.recv().await {
        Some(Event::Done(Err(e))) => {
            log_request(&Method::POST, CHAT_PATH, e.status, None, start);
            return e.into_response();
        }
        None => return thread_gone(start),
        Some(ev) => ev,
    };
    let head = stream_out::Head {
        id,
        model,
        created: now_s(),
        prune: params.prune.clone(),
        include_usage: params.include_usage,
        start,
    };
    if params.stream {
        return Sse::new(sse_stream(head, first, events)).into_response();
    }
    let mut ev = Some(first);
    while let Some(e) = ev {
        if let Event::Done(done) = e {
            return match done {
                Ok(o) => {
                    log_request(&Method::POST, CHAT_PATH, StatusCode::OK, Some(&o), start);
                    Json(head.completion(&o)).into_response()
                }
                Err(e) => {
                    log_request(&Method::POST, CHAT_PATH, e.status, None, start);
                    e.into_response()
                }
            };
        }
        ev = events.recv().await;
    }
    thread_gone(start)
}

fn thread_gone(start: Instant) -> Response {
    let e = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the model thread ended");
    log_request(&Method::POST, CHAT_PATH, e.status, None, start);
    e.into_response()
}

/// What the HTTP side keeps of a queued request.
struct Summary {
    stream: bool,
    include_usage: bool,
    prune: Value,
}

/// How much of a body over the limit is read (and thrown away) before the 413 answer.
fn drain_bound(limit: usize) -> u64 {
    (4 * limit as u64).max(256 << 20)
}

/// Reads a request body of at most `limit` bytes. The rest of a longer one is read and thrown
/// away (up to [`drain_bound`]) before the 413 answer: Python's urllib, requests and httpx
/// send the whole body before they read a response, and a connection closed under them ends
/// in a broken pipe instead of the 413. A client that waits for `100 Continue` is answered at
/// once, and sends nothing.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the server's limit of {} MiB (--max-request-mb)",
                limit >> 20
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let over = declared.is_some_and(|n| n > limit as u64);
    if over && headers.contains_key(header::EXPECT) {
        return Err(too_large());
    }
    let mut data = Vec::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    let mut seen = 0u64;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
        })?;
        seen += chunk.len() as u64;
        if seen <= limit as u64 {
            data.extend_from_slice(&chunk);
        } else if seen > drain_bound(limit) {
            break;
        } else if !data.is_empty() {
            data = Vec::new();
        }
    }
    if over || seen > limit as u64 {
        return Err(too_large());
    }
    Ok(Bytes::from(data))
}

/// Checks the body and queues its job.
async fn submit(
    state: &Arc<AppState>,
    body: Bytes,
    arrived: Instant,
) -> std::result::Result<(Summary, UnboundedReceiver<Event>), ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is draining (shutting down); send the request to another replica",
        ));
    }
    if !state.ready.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is loading; retry when GET /health answers 200",
        ));
    }
    let st = state.clone();
    let params = tokio::task::spawn_blocking(move || request::parse(&body, &st.args))
        .await
        .map_err(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "request parsing failed")
        })??;
    let (tx, rx) = unbounded_channel();
    let stream = params.stream;
    let include_usage = params.include_usage;
    let prune = params.prune.clone();
    let job = Job {
        params,
        events: tx,
        admission: metrics::Admission::new(arrived, &state.unfinished),
    };
    match state.jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the queue is full ({} requests wait); retry later",
                    state.args.max_queue
                ),
            ))
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ))
        }
    }
    Ok((
        Summary {
            stream,
            include_usage,
            prune,
        },
        rx,
    ))
}

fn sse_stream(
    head: stream_out::Head,
    first: Event,
    events: UnboundedReceiver<Event>,
) -> impl Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>> {
    let chunks = stream_out::Chunks::new(head, first, events);
    stream::unfold(chunks, |mut c| async move {
        c.next()
            .await
            .map(|data| (Ok(SseEvent::default().data(data)), c))
    })
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A request id: the clock's nanoseconds mixed with a counter (unique within a server run).
fn rand_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t.rotate_left(17) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
