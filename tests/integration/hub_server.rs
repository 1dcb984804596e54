//! A stand-in for the Hugging Face hub on a loopback port, for the download tests.
//!
//! It answers what the hub answers to `hf-hub`'s blocking client, as `huggingface_hub`'s
//! `file_download.py` documents the hub's side:
//! - `GET /{owner}/{name}/resolve/{revision}/{file}`: for a small (git) file the content, with
//!   `etag` (the git blob id), `x-repo-commit` and `Range` support (`206` + `Content-Range`);
//!   for an LFS file (`*.safetensors`) a `302` to a content URL with `x-repo-commit`,
//!   `x-linked-etag` (the sha256 of the content) and `x-linked-size`;
//! - `GET /lfs/{sha256}`: the LFS content, with `Range` support;
//! - `401` without the repository's token (when it has one), `404` for an unknown repository,
//!   revision or file.
//!
//! Faults can be switched on per file while it runs: an HTTP status, a connection dropped after
//! some bytes of the body, content that does not match its announced sha256. Every request is
//! logged so that tests can count them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// One file of a hosted repository.
struct HostedFile {
    content: Vec<u8>,
    sha256: String,
    lfs: bool,
}

/// A repository the server hosts at one commit.
pub(crate) struct HostedRepo {
    pub(crate) id: String,
    pub(crate) commit: String,
    /// Requests must carry `Authorization: Bearer <token>` when set.
    pub(crate) token: Option<String>,
    files: BTreeMap<String, HostedFile>,
}

impl HostedRepo {
    /// Every file of a model folder, as repository `id` at a commit derived from `id`.
    pub(crate) fn from_dir(id: &str, dir: &Path) -> Self {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let content = std::fs::read(&path).unwrap();
            files.insert(
                name.clone(),
                HostedFile {
                    sha256: sha256_hex(&content),
                    lfs: name.ends_with(".safetensors"),
                    content,
                },
            );
        }
        Self {
            id: id.to_string(),
            commit: sha256_hex(id.as_bytes())[..40].to_string(),
            token: None,
            files,
        }
    }

    /// The names of the hosted files.
    pub(crate) fn names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// The sha256 of a hosted file.
    pub(crate) fn sha256(&self, name: &str) -> String {
        self.files[name].sha256.clone()
    }
}

/// What to do wrong when serving a file.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Answer `/resolve/` for the file with this status.
    Status(u16),
    /// Send the headers of the whole range, then this many body bytes, then close; `times`
    /// bodies are cut short this way.
    Drop { after: usize, times: usize },
    /// Serve content that differs from its announced sha256 in one byte.
    Corrupt,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub(crate) path: String,
    pub(crate) range: Option<String>,
}

impl Logged {
    /// A request for content (not the 1-byte probe `hf-hub` sends for the metadata).
    pub(crate) fn is_transfer(&self) -> bool {
        self.range.as_deref() != Some("bytes=0-0")
    }
}

struct State {
    repos: Vec<HostedRepo>,
    faults: BTreeMap<String, Fault>,
    log: Vec<Logged>,
}

/// The running server; stops when dropped.
pub(crate) struct HubServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl HubServer {
    /// Starts serving `repos` on a free loopback port.
    pub(crate) fn start(repos: Vec<HostedRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            repos,
            faults: BTreeMap::new(),
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_stop) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = thread_state.clone();
                std::thread::spawn(move || serve(stream, addr, &state));
            }
        });
        Self { addr, state, stop }
    }

    /// The value for `HF_ENDPOINT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches a fault on for `file` (in every repository).
    pub(crate) fn fault(&self, file: &str, fault: Fault) {
        let mut state = self.state.lock().unwrap();
        state.faults.insert(file.to_string(), fault);
    }

    /// Switches every fault off.
    pub(crate) fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Every request so far.
    pub(crate) fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A response ready to send.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Close the connection after this many body bytes.
    cut: Option<usize>,
}

impl Reply {
    fn status(status: u16) -> Self {
        let body = format!("{{\"error\":\"HTTP {status}\"}}").into_bytes();
        Self {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body,
            cut: None,
        }
    }
}

fn serve(mut stream: TcpStream, addr: SocketAddr, state: &Mutex<State>) {
    let Some((path, headers)) = read_request(&stream) else {
        return;
    };
    let range = headers.get("range").cloned();
    let reply = {
        let mut state = state.lock().unwrap();
        state.log.push(Logged {
            path: path.clone(),
            range: range.clone(),
        });
        route(&mut state, addr, &path, &headers)
    };
    let reason = match reply.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        reply.body.len()
    ));
    let body = &reply.body[..reply.cut.unwrap_or(reply.body.len()).min(reply.body.len())];
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .and_then(|()| stream.flush());
}

/// The request path and its headers (names lower-cased).
fn read_request(stream: &TcpStream) -> Option<(String, BTreeMap<String, String>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Some((path, headers))
}

fn route(
    state: &mut State,
    addr: SocketAddr,
    path: &str,
    headers: &BTreeMap<String, String>,
) -> Reply {
    let range = headers.get("range").map(String::as_str);
    if let Some(sha) = path.strip_prefix("/lfs/") {
        let found = state.repos.iter().find_map(|r| {
            r.files
                .iter()
                .find(|(_, f)| f.lfs && f.sha256 == sha)
                .map(|(name, f)| (name.clone(), f.content.clone()))
        });
        let Some((name, content)) = found else {
            return Reply::status(404);
        };
        return content_reply(state, &name, content, range, vec![]);
    }
    let Some((repo_path, file)) = path.split_once("/resolve/") else {
        return Reply::status(404);
    };
    let Some((revision, file)) = file.split_once('/') else {
        return Reply::status(404);
    };
    let Some(repo) = state
        .repos
        .iter()
        .find(|r| format!("/{}", r.id) == repo_path)
    else {
        // The real hub answers 401 to anonymous requests for a missing repository; a 404 is
        // what it sends with a token, and what a mirror sends.
        return Reply::status(404);
    };
    if let Some(token) = &repo.token {
        if headers.get("authorization") != Some(&format!("Bearer {token}")) {
            return Reply::status(401);
        }
    }
    if revision != "main" && revision != repo.commit {
        return Reply::status(404);
    }
    let Some(hosted) = repo.files.get(file) else {
        return Reply::status(404);
    };
    if let Some(Fault::Status(code)) = state.faults.get(file) {
        return Reply::status(*code);
    }
    let commit = ("x-repo-commit", repo.commit.clone());
    if hosted.lfs {
        return Reply {
            status: 302,
            headers: vec![
                commit,
                ("x-linked-etag", format!("\"{}\"", hosted.sha256)),
                ("x-linked-size", hosted.content.len().to_string()),
                // The git blob id of the LFS pointer file; any id the client ignores will do.
                ("etag", format!("\"{}\"", &hosted.sha256[..40])),
                ("location", format!("http://{addr}/lfs/{}", hosted.sha256)),
            ],
            body: Vec::new(),
            cut: None,
        };
    }
    // Small files get the git blob id as their etag; a prefix of the sha256 stands in for it
    // (40 hex digits, like a git id), which the client only uses as the blob's name.
    let etag = ("etag", format!("\"{}\"", &hosted.sha256[..40]));
    let content = hosted.content.clone();
    content_reply(state, file, content, range, vec![commit, etag])
}

/// The content of `name`, whole or the requested range, with the file's faults applied.
fn content_reply(
    state: &mut State,
    name: &str,
    mut content: Vec<u8>,
    range: Option<&str>,
    mut headers: Vec<(&'static str, String)>,
) -> Reply {
    let mut cut = None;
    match state.faults.get_mut(name) {
        Some(Fault::Corrupt) => {
            let middle = content.len() / 2;
            content[middle] ^= 0xff;
        }
        Some(Fault::Drop { after, times }) if *times > 0 && range != Some("bytes=0-0") => {
            *times -= 1;
            cut = Some(*after);
        }
        _ => {}
    }
    headers.push(("accept-ranges", "bytes".to_string()));
    let total = content.len();
    let Some((start, end)) = range.and_then(|r| parse_range(r, total)) else {
        return Reply {
            status: if range.is_some() { 416 } else { 200 },
            headers,
            body: if range.is_some() { Vec::new() } else { content },
            cut,
        };
    };
    headers.push(("content-range", format!("bytes {start}-{end}/{total}")));
    Reply {
        status: 206,
        headers,
        body: content[start..=end].to_vec(),
        cut,
    }
}

/// `bytes=a-b` or `bytes=a-` within a body of `total` bytes.
fn parse_range(range: &str, total: usize) -> Option<(usize, usize)> {
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = start.parse().ok()?;
    let end = match end {
        "" => total.checked_sub(1)?,
        e => e.parse::<usize>().ok()?.min(total.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
