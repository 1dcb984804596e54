//! `auris serve`: OpenAI's chat completions API over HTTP (axum on tokio). The model runs on
//! its own thread; requests reach it through a bounded queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::*;

mod request;
mod stream_out;
mod wire;
mod worker;

use wire::ApiError;
use worker::{Event, Job, Outcome};

/// What every handler shares.
struct AppState {
    args: ServeArgs,
    jobs: SyncSender<Job>,
    ready: AtomicBool,
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
    let limit = args.max_request_mb * 1024 * 1024;
    let state = Arc::new(AppState {
        args,
        jobs,
        ready: AtomicBool::new(false),
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
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
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
    let loaded = load(&args.model, args.prompt_format, args.quiet).and_then(|session| {
        let base = generate_options(&session.pipeline, &args.generation)?;
        Ok((session, base))
    });
    let (session, base) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
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
    tracing::info!(load_ms = session.load_ms as u64, "model loaded, ready");
    state.ready.store(true, Ordering::SeqCst);
    // Only the queue's receiver is needed from here; the state's sender must not keep the
    // queue open at shutdown.
    drop(state);
    worker::serve_jobs(&session.pipeline, &base, queue);
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

async fn chat(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let start = Instant::now();
    let result = submit(&state, body).await;
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

/// Checks the body and queues its job.
async fn submit(
    state: &Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> std::result::Result<(Summary, UnboundedReceiver<Event>), ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
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
    let job = Job { params, events: tx };
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
