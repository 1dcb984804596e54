//! Fetching checkpoint files from the Hugging Face hub into its cache, and reading them back
//! offline.
//!
//! Downloads go through `hf-hub`'s blocking client, which keeps the cache layout the Python
//! `huggingface_hub` uses (`$HF_HOME/hub/models--owner--name/{blobs,snapshots,refs}`), writes to
//! `blobs/<etag>.part` and resumes from that file with a `Range` request, within a run and on
//! the next run. Around it, this module adds what `hf-hub` 0.4 leaves out:
//!
//! - `HF_TOKEN` (the client reads only `$HF_HOME/token`); the variable wins, as in
//!   `huggingface_hub`'s `get_token`;
//! - retries after a dropped connection, each continuing from the bytes already in the `.part`
//!   file (the client's own retry loop, off by default, restarts from byte 0 when the first
//!   attempt of a run fails before writing, appending a whole copy to the partial file);
//! - a sha256 check of every LFS file against the etag the hub announced (the client stores the
//!   bytes without looking at them): a mismatch removes the blob and its snapshot link, so a bad
//!   file never counts as cached;
//! - `.no_exist/<commit>/<file>` markers for optional files the repository lacks (the layout of
//!   `huggingface_hub`'s `file_download.py`), so that a second run needs no request at all;
//! - HTTP statuses and transport failures as a typed [`HubFailure`].

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use crate::checkpoint::FileSource;
use crate::Error;

/// Extra attempts after a transfer breaks off; each one continues from the last byte received.
const RETRIES: u32 = 3;
/// The wait before the first retry; it doubles for each further one.
const RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Why the hub could not deliver a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubFailure {
    /// HTTP 404: no such repository, revision or file.
    NotFound,
    /// HTTP 401 or 403: a private or gated repository, or a token without access.
    Denied {
        /// The HTTP status.
        status: u16,
    },
    /// Any other HTTP error status (5xx: trouble on the server's side).
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The endpoint could not be reached (name lookup, refused connection, TLS).
    Unreachable {
        /// What the client said.
        message: String,
    },
    /// The transfer broke off and the retries ran out; the partial file stays for the next run.
    Interrupted {
        /// What the client said.
        message: String,
    },
    /// Anything else the client reported (a missing header, a cache file it could not write).
    Client {
        /// What the client said.
        message: String,
    },
}

impl std::fmt::Display for HubFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => write!(
                f,
                "not found (HTTP 404): no such repository, revision or file"
            ),
            Self::Denied { status } => write!(f, "access denied (HTTP {status})"),
            Self::Status { status } => write!(f, "the server answered HTTP {status}"),
            Self::Unreachable { message } => write!(f, "cannot reach the hub: {message}"),
            Self::Interrupted { message } => write!(f, "the transfer broke off: {message}"),
            Self::Client { message } => write!(f, "{message}"),
        }
    }
}

impl HubFailure {
    fn from_api(err: ApiError) -> Self {
        match err {
            ApiError::TooManyRetries(inner) => match Self::from_api(*inner) {
                Self::Client { message } => Self::Interrupted { message },
                other => other,
            },
            ApiError::RequestError(e) => match *e {
                ureq::Error::Status(404, _) => Self::NotFound,
                ureq::Error::Status(status @ (401 | 403), _) => Self::Denied { status },
                ureq::Error::Status(status, _) => Self::Status { status },
                ureq::Error::Transport(t) => Self::Unreachable {
                    message: t.to_string(),
                },
            },
            ApiError::IoError(e) if is_transfer_break(&e) => Self::Interrupted {
                message: e.to_string(),
            },
            other => Self::Client {
                message: other.to_string(),
            },
        }
    }
}

/// An I/O error of a transfer (not of the local disk).
fn is_transfer_break(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut | Interrupted
    )
}

/// `HF_HUB_OFFLINE` set to a true value (`1`, `true`, `yes`, `on`, any case).
pub(crate) fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The files of `id` at `revision`: from the cache only when `HF_HUB_OFFLINE` is set, else from
/// the cache or the hub (`HF_ENDPOINT`, default `https://huggingface.co`). `progress` draws one
/// bar per downloaded file on stderr when stderr is a terminal.
pub(crate) fn source(
    id: &str,
    revision: &str,
    progress: bool,
) -> Result<Box<dyn FileSource>, Error> {
    let repo = Repo::with_revision(id.to_string(), RepoType::Model, revision.to_string());
    let cache = Cache::from_env();
    let local = CachedRepo {
        dir: cache.path().join(repo.folder_name()),
        cache: cache.repo(repo.clone()),
        revision: revision.to_string(),
        id: id.to_string(),
    };
    if offline() {
        return Ok(Box::new(local));
    }
    let mut builder =
        ApiBuilder::from_env().with_progress(progress && std::io::stderr().is_terminal());
    if let Some(token) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    let api = builder.build().map_err(|e| Error::Hub {
        id: id.to_string(),
        file: String::new(),
        failure: HubFailure::from_api(e),
    })?;
    Ok(Box::new(HubRepo {
        remote: api.repo(repo),
        local,
    }))
}

/// The cached files of one revision.
struct CachedRepo {
    /// `$HF_HOME/hub/models--owner--name`.
    dir: PathBuf,
    cache: hf_hub::CacheRepo,
    revision: String,
    id: String,
}

impl CachedRepo {
    /// Where the commit the revision resolved to records a file the repository lacks.
    fn no_exist_marker(&self, name: &str) -> Option<PathBuf> {
        let commit = std::fs::read_to_string(self.dir.join("refs").join(&self.revision)).ok()?;
        Some(self.dir.join(".no_exist").join(commit.trim()).join(name))
    }

    fn known_absent(&self, name: &str) -> bool {
        self.no_exist_marker(name).is_some_and(|p| p.is_file())
    }
}

impl FileSource for CachedRepo {
    fn optional(&self, name: &str) -> Result<Option<PathBuf>, Error> {
        Ok(self.cache.get(name))
    }

    fn missing(&self, name: &str) -> Error {
        Error::OfflineMissing {
            id: self.id.clone(),
            file: name.to_string(),
        }
    }
}

struct HubRepo {
    remote: ApiRepo,
    local: CachedRepo,
}

impl HubRepo {
    /// Downloads `name`; a transfer that breaks off is retried, and each try continues from
    /// the length of the `.part` file the last one left.
    fn download(&self, name: &str) -> Result<PathBuf, ApiError> {
        let mut attempt = 0;
        loop {
            match self.remote.download(name) {
                Err(ApiError::IoError(e)) if attempt < RETRIES && is_transfer_break(&e) => {
                    std::thread::sleep(RETRY_WAIT * 2u32.pow(attempt));
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn error(&self, name: &str, failure: HubFailure) -> Error {
        Error::Hub {
            id: self.local.id.clone(),
            file: name.to_string(),
            failure,
        }
    }
}

impl FileSource for HubRepo {
    fn optional(&self, name: &str) -> Result<Option<PathBuf>, Error> {
        if let Some(path) = self.local.cache.get(name) {
            return Ok(Some(path));
        }
        if self.local.known_absent(name) {
            return Ok(None);
        }
        match self.download(name) {
            Ok(path) => {
                verify_lfs(&path).map_err(|e| e.into_error(&self.local.id, name))?;
                Ok(Some(path))
            }
            Err(e) => match HubFailure::from_api(e) {
                HubFailure::NotFound => {
                    // Only once the revision resolved (an earlier file came down) is there a
                    // commit to file the marker under; a failure to write it costs a request.
                    if let Some(marker) = self.local.no_exist_marker(name) {
                        if let Some(dir) = marker.parent() {
                            let _ = std::fs::create_dir_all(dir)
                                .and_then(|()| std::fs::write(&marker, b""));
                        }
                    }
                    Ok(None)
                }
                failure => Err(self.error(name, failure)),
            },
        }
    }

    fn missing(&self, name: &str) -> Error {
        self.error(name, HubFailure::NotFound)
    }
}

/// A downloaded file whose bytes do not hash to what the hub announced.
struct Mismatch {
    expected: String,
    actual: String,
}

impl Mismatch {
    fn into_error(self, id: &str, file: &str) -> Error {
        Error::Checksum(Box::new(Corrupt {
            id: id.to_string(),
            file: file.to_string(),
            expected: self.expected,
            actual: self.actual,
        }))
    }
}

/// A downloaded weight file that failed its sha256 check (and was removed from the cache).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} of {id} is corrupt: sha256 {actual}, the hub announced {expected}")]
pub struct Corrupt {
    /// Hub id.
    pub id: String,
    /// The file.
    pub file: String,
    /// The sha256 the hub sent as the file's etag.
    pub expected: String,
    /// The sha256 of the bytes received.
    pub actual: String,
}

/// Checks a freshly downloaded file against its blob name. `hf-hub` names each blob after the
/// etag the hub sent: for LFS files (the weights) that is the sha256 of the content
/// (`x-linked-etag`), for small git files the git blob id, which is not a plain content hash
/// and is left alone. On a mismatch the blob and the snapshot link go, so the next run
/// downloads the file anew instead of loading it.
fn verify_lfs(pointer: &Path) -> Result<(), Mismatch> {
    // On systems without symlinks hf-hub renames the blob into the snapshot; there is then no
    // etag left to check against.
    let Ok(target) = std::fs::read_link(pointer) else {
        return Ok(());
    };
    let Some(expected) = target.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let expected = expected.to_ascii_lowercase();
    let blob = pointer.parent().map(|dir| dir.join(&target));
    let actual = match sha256_file(pointer) {
        Ok(digest) if digest == expected => return Ok(()),
        Ok(digest) => digest,
        Err(e) => format!("unreadable ({e})"),
    };
    if let Some(blob) = blob {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(pointer);
    Err(Mismatch { expected, actual })
}

/// The sha256 of a file's content, lower-case hex.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_failures() {
        let status = |code: u16| {
            let response = ureq::Response::new(code, "x", "").unwrap();
            HubFailure::from_api(ApiError::RequestError(Box::new(ureq::Error::Status(
                code, response,
            ))))
        };
        assert_eq!(status(404), HubFailure::NotFound);
        assert_eq!(status(401), HubFailure::Denied { status: 401 });
        assert_eq!(status(403), HubFailure::Denied { status: 403 });
        assert_eq!(status(502), HubFailure::Status { status: 502 });
        let broken = ApiError::TooManyRetries(Box::new(ApiError::IoError(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        ))));
        assert!(matches!(
            HubFailure::from_api(broken),
            HubFailure::Interrupted { .. }
        ));
    }

    #[cfg(unix)]
    #[test]
    fn verify_removes_a_bad_blob_and_its_link() {
        let dir = std::env::temp_dir().join(format!("auris-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::create_dir_all(dir.join("snapshots/c")).unwrap();
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; // "abc"
        for (name, content) in [("good", "abc"), ("bad", "abd")] {
            std::fs::write(dir.join("blobs").join(good), content).unwrap();
            let link = dir.join("snapshots/c").join(name);
            std::os::unix::fs::symlink(format!("../../blobs/{good}"), &link).unwrap();
            let result = verify_lfs(&link);
            assert_eq!(result.is_ok(), name == "good", "{name}");
            assert_eq!(link.exists(), name == "good", "{name}");
            let _ = std::fs::remove_file(&link);
        }
        assert!(!dir.join("blobs").join(good).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
