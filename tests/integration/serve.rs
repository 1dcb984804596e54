//! `auris serve` on a free loopback port with `models/tiny-chat`: OpenAI's chat completions
//! API, streaming, errors, disconnects, and concurrent clients decoded together (continuous
//! batching) each getting the answer it gets alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{auris, fixture, run};

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        Self::start_model(std::path::Path::new("models/tiny-chat"), extra)
    }

    fn start_model(model: &std::path::Path, extra: &[&str]) -> Self {
        let mut child = auris()
            .args(["serve", "--model"])
            .arg(model)
            .args(["--device", "cpu"])
            .args(["--port", "0", "--max-new-tokens", "8"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("auris: listening on http://") {
                    let _ = tx.send(addr.to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server address");
        let server = Self { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/health").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "server not ready: {:?}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn get(&self, path: &str) -> (u16, String) {
        answer(ureq::get(&self.url(path)).call())
    }

    fn post(&self, body: &str) -> (u16, String) {
        answer(
            ureq::post(&self.url("/v1/chat/completions"))
                .set("content-type", "application/json")
                .send_string(body),
        )
    }

    fn post_json(&self, body: &Value) -> (u16, Value) {
        let (status, text) = self.post(&body.to_string());
        (status, serde_json::from_str(&text).unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap()),
        Err(e) => panic!("request failed: {e}"),
    }
}

fn b64(clip: &str) -> String {
    let bytes = std::fs::read(fixture(&format!("audio/{clip}"))).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A user turn: the clip as `input_audio`, then the question.
fn ask_body(clip: &str, question: &str) -> Value {
    json!({
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": b64(clip), "format": "wav"}},
            {"type": "text", "text": question},
        ]}],
        "temperature": 0,
        "max_tokens": 8,
    })
}

/// `auris ask --json` on a fixture clip with greedy decoding.
fn ask_greedy(clip: &str, question: &str, max_new_tokens: usize, extra: &[&str]) -> Value {
    let ask = run(auris()
        .arg("ask")
        .arg(fixture(&format!("audio/{clip}")))
        .args(["--question", question, "--model", "models/tiny-chat"])
        .args(["--device", "cpu", "--greedy", "--json", "--quiet"])
        .args(["--max-new-tokens", &max_new_tokens.to_string()])
        .args(extra));
    assert_eq!(ask.code, 0, "{}", ask.stderr);
    serde_json::from_str(&ask.stdout).unwrap()
}

/// The data lines of a streamed answer.
fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn answers_equal_auris_ask_greedy_streamed_or_not() {
    let server = Server::start(&[]);
    let ask = ask_greedy("tone_440_16k.wav", "What is this?", 8, &[]);
    let n_out = ask["output_token_ids"].as_array().unwrap().len();

    let body = ask_body("tone_440_16k.wav", "What is this?");
    let (status, v) = server.post_json(&body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], ask["text"]);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["completion_tokens"], n_out);
    let n_prompt = ask["prompt_token_ids"].as_array().unwrap().len();
    assert_eq!(v["usage"]["prompt_tokens"], n_prompt);
    assert_eq!(v["usage"]["total_tokens"], n_prompt + n_out);
    assert_eq!(v["usage"]["audio_tokens"], ask["n_audio_tokens"]);
    let finish = if n_out == 8 { "length" } else { "stop" };
    assert_eq!(v["choices"][0]["finish_reason"], finish);

    let chunks = stream_chunks(&server, &body);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, ask["text"].as_str().unwrap());
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], finish);
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], n_out);
}

#[test]
fn several_audio_parts_urls_and_pruning_per_request() {
    let dir = fixture("audio");
    let server = Server::start(&["--allowed-local-media-path", dir.to_str().unwrap()]);
    let one = server
        .post_json(&ask_body("tone_440_16k.wav", "Compare."))
        .1;
    let file_url = format!("file://{}", dir.join("tone_440_16k.wav").display());
    let data_url = format!("data:audio/wav;base64,{}", b64("tone_440_16k.wav"));
    let mut two = ask_body("tone_440_16k.wav", "Compare.");
    let parts = two["messages"][0]["content"].as_array_mut().unwrap();
    parts.insert(
        1,
        json!({"type": "audio_url", "audio_url": {"url": file_url}}),
    );
    parts.insert(
        2,
        json!({"type": "audio_url", "audio_url": {"url": data_url}}),
    );
    let (status, v) = server.post_json(&two);
    assert_eq!(status, 200, "{v}");
    let audio = |v: &Value| v["usage"]["audio_tokens"].as_u64().unwrap();
    assert_eq!(audio(&v), 3 * audio(&one));
    assert_eq!(v["usage"]["audio_seconds"], 6.0);

    let mut pruned = ask_body("tone_440_16k.wav", "Compare.");
    pruned["prune"] = json!("segmentwise");
    pruned["keep"] = json!(0.5);
    pruned["segments"] = json!(5);
    let (status, v) = server.post_json(&pruned);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["prune"]["strategy"], "segmentwise");
    assert_eq!(v["prune"]["segments"], 5);
    assert_eq!(v["usage"]["audio_tokens"], audio(&one));
    assert_eq!(v["usage"]["audio_tokens_kept"], audio(&one) / 2);
    let kept = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(kept(&one) - kept(&v), audio(&one) / 2);
}

/// Checks one error answer: its status and OpenAI's error object.
fn expect_error(server: &Server, body: &str, status: u16, param: Option<&str>) {
    let (got, text) = server.post(body);
    assert_eq!(got, status, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let err = &v["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(err["type"].is_string(), "{v}");
    assert_eq!(err["code"], status, "{v}");
    if let Some(param) = param {
        assert!(err["param"].as_str().unwrap().starts_with(param), "{v}");
    }
}

#[test]
fn bad_requests_get_openai_errors() {
    let server = Server::start(&["--max-request-mb", "1"]);
    expect_error(&server, "{not json", 400, Some("body"));
    let base = ask_body("tone_440_16k.wav", "What?");
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b.to_string()
    };
    expect_error(&server, &with("n", json!(2)), 400, Some("n"));
    expect_error(&server, &with("prune", json!("bogus")), 400, Some("prune"));
    expect_error(&server, &with("keep", json!(1.5)), 400, Some("keep"));
    expect_error(&server, &with("top_p", json!(0)), 400, Some("top_p"));
    expect_error(
        &server,
        &with("max_tokens", json!(10_000_000)),
        400,
        Some("max_tokens"),
    );
    let audio_part = |part: Value| {
        json!({"messages": [{"role": "user", "content": [part, {"type": "text", "text": "?"}]}]})
            .to_string()
    };
    let url = |u: &str| audio_part(json!({"type": "audio_url", "audio_url": {"url": u}}));
    expect_error(
        &server,
        &url("https://example.com/a.wav"),
        400,
        Some("messages[0]"),
    );
    expect_error(
        &server,
        &url("file:///etc/passwd"),
        400,
        Some("messages[0]"),
    );
    let garbage = base64::engine::general_purpose::STANDARD.encode(b"not audio at all");
    let bad_audio =
        json!({"type": "input_audio", "input_audio": {"data": garbage, "format": "wav"}});
    expect_error(&server, &audio_part(bad_audio), 400, Some("messages"));
    // A client that sends its whole body before reading (as Python's urllib does) gets the 413
    // and its error object, not a connection closed under it.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let size = 2 * 1024 * 1024;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&vec![b' '; size]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], 413, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--max-request-mb"));
    // A client that waits for 100 Continue is answered before it sends anything.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\nexpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = String::new();
    BufReader::new(s).read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let (status, text) = server.get("/v1/nothing");
    assert_eq!(status, 404, "{text}");
    // Still serving after all of that.
    assert_eq!(server.post(&base.to_string()).0, 200);
}

/// A streamed request on a raw socket that has read its first content chunk.
fn open_stream(server: &Server, body: &Value) -> TcpStream {
    let body = body.to_string();
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"") || seen.len() < 2000 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

/// A request that generates for seconds on the tiny model (it emits no stop id on this clip).
fn long_body() -> Value {
    let mut body = ask_body("long_42s_16k.wav", "Describe it.");
    body["max_tokens"] = json!(4000);
    body["stream"] = json!(true);
    body
}

#[test]
fn a_client_that_disconnects_stops_its_generation() {
    let server = Server::start(&[]);
    let start = Instant::now();
    let s = open_stream(&server, &long_body());
    drop(s);
    let (status, text) = server.post(&ask_body("tone_440_16k.wav", "What?").to_string());
    assert_eq!(status, 200, "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().iter().any(|l| l.contains("cancelled")) {
        assert!(Instant::now() < deadline, "{:?}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = server
        .log()
        .into_iter()
        .find(|l| l.contains("cancelled"))
        .unwrap();
    let tokens: usize = line
        .split("after ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(tokens < 4000, "{line}");
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_full_queue_gets_429_and_the_queued_request_is_served() {
    let server = Arc::new(Server::start(&["--max-queue", "1", "--parallel", "1"]));
    // The model thread's one slot is busy with this stream until it is dropped.
    let busy = open_stream(&server, &long_body());
    let queued = {
        let server = server.clone();
        std::thread::spawn(move || server.post(&ask_body("tone_440_16k.wav", "One?").to_string()))
    };
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = server.post(&ask_body("tone_440_16k.wav", "Two?").to_string());
        if status == 429 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], 429);
            break;
        }
        assert!(Instant::now() < deadline, "no 429: {status} {text}");
    }
    drop(busy);
    let (status, text) = queued.join().unwrap();
    assert_eq!(status, 200, "{text}");
}

#[test]
fn two_concurrent_clients_are_both_served() {
    let server = Arc::new(Server::start(&[]));
    let clients: Vec<_> = (0..2)
        .map(|i| {
            let server = server.clone();
            std::thread::spawn(move || {
                server.post(&ask_body("tone_440_16k.wav", &format!("Client {i}?")).to_string())
            })
        })
        .collect();
    for c in clients {
        let (status, text) = c.join().unwrap();
        assert_eq!(status, 200, "{text}");
    }
}

/// The value of the first sample of `name` (any labels) in Prometheus' text format.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn ready_and_metrics_in_vllm_terms() {
    let server = Server::start(&[]);
    let (status, text) = server.get("/ready");
    assert_eq!(status, 200, "{text}");
    // Without --parallel: 8 sequences, which fit with room to spare on the tiny model.
    assert!(
        server.log().iter().any(|l| l.ends_with("parallel=8")),
        "{:?}",
        server.log()
    );
    let (status, before) = server.get("/metrics");
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        sample(&before, "vllm:num_requests_running"),
        Some(0.0),
        "{before}"
    );
    assert_eq!(
        sample(&before, "vllm:num_requests_waiting"),
        Some(0.0),
        "{before}"
    );
    assert!(
        before.contains("model_name=\"models/tiny-chat\""),
        "{before}"
    );
    let (status, answer) = server.post_json(&ask_body("tone_440_16k.wav", "What?"));
    assert_eq!(status, 200, "{answer}");
    let (_, after) = server.get("/metrics");
    let usage = &answer["usage"];
    assert_eq!(
        sample(&after, "vllm:prompt_tokens_total"),
        usage["prompt_tokens"].as_f64(),
        "{after}"
    );
    assert_eq!(
        sample(&after, "vllm:generation_tokens_total"),
        usage["completion_tokens"].as_f64(),
        "{after}"
    );
    assert_eq!(
        sample(&after, "vllm:request_success_total"),
        Some(1.0),
        "{after}"
    );
    for histogram in [
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
    ] {
        assert!(
            after.contains(&format!("# TYPE {histogram} histogram")),
            "{after}"
        );
        assert_eq!(
            sample(&after, &format!("{histogram}_count")),
            Some(1.0),
            "{after}"
        );
        assert!(after.contains(&format!("{histogram}_bucket{{")), "{after}");
    }
    let e2e = sample(&after, "vllm:e2e_request_latency_seconds_sum").unwrap();
    let ttft = sample(&after, "vllm:time_to_first_token_seconds_sum").unwrap();
    assert!(0.0 < ttft && ttft <= e2e, "{after}");
    // The request's cache is gone with it (usage during a load: the concurrent test).
    assert_eq!(
        sample(&after, "vllm:kv_cache_usage_perc"),
        Some(0.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "vllm:num_requests_running"),
        Some(0.0),
        "{after}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_drains_admitted_requests_and_exits_0() {
    // Two slots: two streams run together, a third request waits for a slot.
    let server = Arc::new(Server::start(&["--parallel", "2"]));
    let mut body = long_body();
    body["max_tokens"] = json!(300);
    let mut other = long_body();
    other["max_tokens"] = json!(200);
    let streams = [open_stream(&server, &body), open_stream(&server, &other)];
    // Admitted behind the running streams, waiting in the queue.
    let queued = {
        let server = server.clone();
        std::thread::spawn(move || {
            server.post(&ask_body("tone_440_16k.wav", "Queued?").to_string())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = server.get("/metrics").1;
        let running = sample(&metrics, "vllm:num_requests_running");
        let waiting = sample(&metrics, "vllm:num_requests_waiting");
        if (running, waiting) == (Some(2.0), Some(1.0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not two running and one waiting: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Draining: not ready, nothing new admitted, still alive.
    while server.get("/ready").0 != 503 {
        assert!(Instant::now() < deadline, "/ready stayed 200 after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, text) = server.post(&ask_body("tone_440_16k.wav", "New?").to_string());
    assert_eq!(status, 503, "{text}");
    assert_eq!(server.get("/health").0, 200);
    for s in streams {
        let mut rest = String::new();
        BufReader::new(s).read_to_string(&mut rest).unwrap();
        assert!(rest.contains("data: [DONE]"), "{rest}");
        assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    }
    let (status, text) = queued.join().unwrap();
    assert_eq!(status, 200, "the queued request is served: {text}");
    let mut server = Arc::into_inner(server).unwrap();
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A chat request too long for the model's context is refused with the message `auris ask`
/// gives for the same audio and question: the budget's numbers.
#[test]
fn an_overlong_chat_request_gets_the_command_lines_context_error() {
    let model = crate::context::short_context_model(600, "ctx-serve");
    let clip = fixture("audio/long_42s_16k.wav");
    let ask = run(auris()
        .arg("ask")
        .arg(&clip)
        .args(["--question", "What is this?", "--device", "cpu"])
        .args(["--max-new-tokens", "8", "--quiet", "--model"])
        .arg(&model));
    assert_eq!(ask.code, 1, "{}", ask.stderr);
    let prefix = format!("error: {}: ", clip.display());
    let message = ask
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no error line in {}", ask.stderr));
    assert!(message.contains("1050 audio tokens"), "{message}");

    let server = Server::start_model(&model, &[]);
    let (status, v) = server.post_json(&ask_body("long_42s_16k.wav", "What is this?"));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "messages", "{v}");
    assert_eq!(v["error"]["message"], message, "{v}");
}

/// `scripts/replicas_check.sh` with this build: three replicas behind HAProxy, one drained
/// with SIGTERM under load; no request may fail. Prints the figures.
#[test]
#[ignore = "opt-in: needs HAProxy (the script installs Debian's with apt-get when missing)"]
fn replicas_behind_haproxy_lose_no_request() {
    let out = run(std::process::Command::new("scripts/replicas_check.sh")
        .current_dir(crate::common::root())
        .arg(env!("CARGO_BIN_EXE_auris")));
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("replicas check: ok"), "{}", out.stdout);
}

/// What a streamed answer says.
#[derive(Debug, PartialEq)]
struct Streamed {
    text: String,
    finish_reason: String,
    completion_tokens: u64,
}

/// Sends `body` streamed with the usage chunk: the chunks before `[DONE]`.
fn stream_chunks(server: &Server, body: &Value) -> Vec<Value> {
    let mut body = body.clone();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, text) = server.post(&body.to_string());
    assert_eq!(status, 200, "{text}");
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Sends `body` streamed (with the usage chunk) and reads the whole answer.
fn streamed(server: &Server, body: &Value) -> Streamed {
    let chunks = stream_chunks(server, body);
    let choice = |c: &Value| c["choices"][0].clone();
    Streamed {
        text: chunks
            .iter()
            .filter_map(|c| choice(c)["delta"]["content"].as_str().map(str::to_string))
            .collect(),
        finish_reason: chunks
            .iter()
            .find_map(|c| choice(c)["finish_reason"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no finish_reason: {chunks:?}")),
        completion_tokens: chunks
            .last()
            .and_then(|c| c["usage"]["completion_tokens"].as_u64())
            .unwrap_or_else(|| panic!("no usage: {chunks:?}")),
    }
}

/// Seven requests unlike each other: audio from 0.2 s to 42 s (a prompt of three prefill
/// chunks), greedy and sampled with their own seeds, temperatures and top_p, different
/// max_tokens.
fn mixed_requests() -> Vec<Value> {
    let cases = [
        ("long_42s_16k.wav", 24, None),
        ("tone_440_16k.wav", 40, Some((0.9, 0.8, 7))),
        ("librivox_0880_16k.wav", 60, None),
        ("short_0p2s_16k.wav", 9, Some((1.3, 1.0, 11))),
        ("noise_burst_16k.wav", 33, None),
        ("librivox_0930_16k.wav", 50, Some((0.7, 0.95, 3))),
        ("stereo_44k1_24bit.wav", 17, None),
    ];
    cases
        .iter()
        .map(|&(clip, max_tokens, sampling)| {
            let mut body = ask_body(clip, "Describe the sound.");
            body["max_tokens"] = json!(max_tokens);
            if let Some((temperature, top_p, seed)) = sampling {
                body["temperature"] = json!(temperature);
                body["top_p"] = json!(top_p);
                body["seed"] = json!(seed);
            }
            body
        })
        .collect()
}

/// The largest values of the running gauge and the KV cache usage seen while `busy` holds.
fn watch_metrics(
    server: Arc<Server>,
    busy: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(f64, f64)> {
    std::thread::spawn(move || {
        let (mut running, mut kv) = (0.0f64, 0.0f64);
        while busy.load(Ordering::SeqCst) {
            let metrics = server.get("/metrics").1;
            running = running.max(sample(&metrics, "vllm:num_requests_running").unwrap());
            kv = kv.max(sample(&metrics, "vllm:kv_cache_usage_perc").unwrap());
            std::thread::sleep(Duration::from_millis(5));
        }
        (running, kv)
    })
}

/// Eight clients at once, arriving a little apart, one of them leaving mid-stream (and a ninth
/// with undecodable audio, answered its 400): each of the seven others gets exactly the tokens
/// and text it gets alone (the decode of every row is
/// independent of the others in its batch, and a prompt's prefill chunks are the same), and
/// the greedy one with the longest prompt what `auris ask` answers.
#[test]
fn eight_concurrent_streams_each_get_the_answer_they_get_alone() {
    eight_concurrent_streams(&[]);
}

/// The same with q8_0 weights: the decode rows go through the quantised kernels together.
#[test]
fn eight_concurrent_streams_with_q8_0_weights_each_get_the_answer_they_get_alone() {
    eight_concurrent_streams(&["--quant", "q8_0"]);
}

/// Eight concurrent clients against a server loading the model with `weights` flags.
fn eight_concurrent_streams(weights: &[&str]) {
    let server = Arc::new(Server::start(&[&["--parallel", "8"], weights].concat()));
    let mut requests = mixed_requests();
    // A stop string taken from the middle of one answer, so that it ends on it.
    let plain = streamed(&server, &requests[2]).text;
    let chars: Vec<char> = plain.chars().collect();
    let middle: String = chars[chars.len() / 2..]
        .windows(2)
        .find(|w| !w.contains(&char::REPLACEMENT_CHARACTER))
        .unwrap_or_else(|| panic!("{plain:?}"))
        .iter()
        .collect();
    requests[2]["stop"] = json!([middle]);
    let alone: Vec<Streamed> = requests.iter().map(|b| streamed(&server, b)).collect();
    assert_eq!(alone[2].finish_reason, "stop", "{alone:?}");
    assert!(plain.starts_with(&alone[2].text) && alone[2].text.len() < plain.len());

    let busy = Arc::new(AtomicBool::new(true));
    let watcher = watch_metrics(server.clone(), busy.clone());
    let leaver = {
        let server = server.clone();
        std::thread::spawn(move || {
            let s = open_stream(&server, &long_body());
            std::thread::sleep(Duration::from_millis(300));
            drop(s);
        })
    };
    let clients: Vec<_> = requests
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (server, body) = (server.clone(), body.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(40 * i as u64));
                streamed(&server, &body)
            })
        })
        .collect();
    // Undecodable audio arriving in the middle of the load is that request's 400 only.
    let garbage = base64::engine::general_purpose::STANDARD.encode(b"not audio at all");
    let mut bad = ask_body("tone_440_16k.wav", "What?");
    bad["messages"][0]["content"][0]["input_audio"]["data"] = json!(garbage);
    std::thread::sleep(Duration::from_millis(100));
    expect_error(&server, &bad.to_string(), 400, Some("messages"));
    let together: Vec<Streamed> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    leaver.join().unwrap();
    busy.store(false, Ordering::SeqCst);
    let (running, kv) = watcher.join().unwrap();
    for (i, (got, want)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(got, want, "request {i}: {}", requests[i]);
    }
    assert!(running > 1.0, "never more than one running: {running}");
    assert!(0.0 < kv && kv <= 1.0, "{kv}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().iter().any(|l| l.contains("cancelled")) {
        assert!(Instant::now() < deadline, "{:?}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    // The long prompt (1050 audio tokens: three prefill chunks) greedy, as `auris ask` runs it.
    let ask = ask_greedy("long_42s_16k.wav", "Describe the sound.", 24, weights);
    assert_eq!(together[0].text, ask["text"].as_str().unwrap());
    assert_eq!(
        together[0].completion_tokens,
        ask["output_token_ids"].as_array().unwrap().len() as u64
    );
}

/// `--parallel` beyond what the memory holds is refused before the weights are read, naming
/// the number of sequences that fit.
#[test]
fn a_parallel_count_beyond_memory_is_refused_with_the_number_that_fits() {
    let out = run(auris()
        .args(["serve", "--model", "models/tiny-chat", "--device", "cpu"])
        .args(["--port", "0", "--parallel", "1000000000000"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(error.contains("--parallel 1000000000000"), "{error}");
    let fit: u64 = error
        .strip_suffix(" sequences fit")
        .and_then(|e| e.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{error}"));
    assert!((1..1_000_000_000_000).contains(&fit), "{error}");
    assert!(
        out.stderr.contains(&format!("hint: --parallel {fit} fits")),
        "{}",
        out.stderr
    );
    let zero = run(auris().args(["serve", "--model", "models/tiny-chat", "--parallel", "0"]));
    assert_eq!(zero.code, 2, "{}", zero.stderr);
    assert!(
        zero.stderr.contains("--parallel must be at least 1"),
        "{}",
        zero.stderr
    );
}
