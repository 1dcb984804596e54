//! Hub downloads end to end: the `auris` binary against the local hub stand-in of
//! `hub_server.rs` (`HF_ENDPOINT`), with a fresh `HF_HOME` per test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{auris, fixture, model_dir, run, Run};
use crate::hub_server::{Fault, HostedRepo, HubServer};

const ID: &str = "auris-test/tiny-chat";
const SHARD: &str = "model-00002-of-00004.safetensors";

struct Hub {
    server: HubServer,
    home: PathBuf,
    commit: String,
    repo: HostedRepo,
}

impl Hub {
    fn start(tag: &str) -> Self {
        Self::with_repos(tag, Vec::new())
    }

    fn with_repos(tag: &str, extra: Vec<HostedRepo>) -> Self {
        let home = std::env::temp_dir().join(format!("auris-hub-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let mut repos = vec![HostedRepo::from_dir(ID, &model_dir("tiny-chat"))];
        repos.extend(extra);
        // A copy for the assertions; the server owns the first.
        let repo = HostedRepo::from_dir(ID, &model_dir("tiny-chat"));
        Self {
            commit: repo.commit.clone(),
            server: HubServer::start(repos),
            home,
            repo,
        }
    }

    /// `auris` pointed at the stand-in, with its own cache and no token.
    fn auris(&self) -> Command {
        let mut cmd = auris();
        cmd.env("HF_ENDPOINT", self.server.endpoint())
            .env("HF_HOME", &self.home)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_TOKEN");
        // ureq 2 (under hf-hub) takes a proxy from these and has no NO_PROXY: a CI proxy would
        // otherwise receive the requests meant for the loopback server.
        for proxy in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY"] {
            cmd.env_remove(proxy).env_remove(proxy.to_ascii_lowercase());
        }
        cmd
    }

    fn download(&self, model: &str, extra: &[&str]) -> Run {
        run(self
            .auris()
            .args(["download", "--model", model])
            .args(extra))
    }

    fn caption(&self, cmd: &mut Command) -> Run {
        run(cmd
            .args(["caption", "--max-new-tokens", "2", "--model", ID])
            .arg(fixture("audio/tone_440_16k.wav")))
    }

    /// `$HF_HOME/hub/models--auris-test--tiny-chat`.
    fn repo_dir(&self) -> PathBuf {
        self.home.join("hub/models--auris-test--tiny-chat")
    }

    fn snapshot(&self, file: &str) -> PathBuf {
        self.repo_dir()
            .join("snapshots")
            .join(&self.commit)
            .join(file)
    }

    /// The `Range` headers of the content requests for the LFS file `file`, in order.
    fn transfers_of(&self, file: &str) -> Vec<Option<String>> {
        let path = format!("/lfs/{}", self.repo.sha256(file));
        self.server
            .log()
            .into_iter()
            .filter(|l| l.path == path && l.is_transfer())
            .map(|l| l.range)
            .collect()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn assert_ok(out: &Run) {
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// Exit 1, exactly one `error:` line containing `needle`, and one `hint:` line containing
/// `hint`.
fn assert_one_line_failure(out: &Run, needle: &str, hint: &str) {
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(!out.stderr.contains("caused by"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    for (prefix, wanted) in [("error:", needle), ("hint:", hint)] {
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect();
        assert_eq!(lines.len(), 1, "one {prefix} line in: {}", out.stderr);
        assert!(
            lines[0].contains(wanted),
            "expected {wanted:?} in {}",
            lines[0]
        );
    }
}

fn assert_same_bytes(cached: &Path, file: &str) {
    assert_eq!(
        std::fs::read(cached).unwrap(),
        std::fs::read(model_dir("tiny-chat").join(file)).unwrap(),
        "{}",
        cached.display()
    );
}

#[test]
fn hub_model_downloads_runs_then_reuses_the_cache_and_runs_offline() {
    let hub = Hub::start("cache");
    let local = run(auris()
        .args(["caption", "--max-new-tokens", "2", "--model"])
        .arg(model_dir("tiny-chat"))
        .arg(fixture("audio/tone_440_16k.wav")));
    assert_ok(&local);

    let first = hub.caption(&mut hub.auris());
    assert_ok(&first);
    assert_eq!(first.stdout, local.stdout);
    // stderr is a pipe here: no progress bars.
    assert!(!first.stderr.contains("B/s"), "{}", first.stderr);
    for file in hub.repo.names() {
        assert_same_bytes(&hub.snapshot(&file), &file);
    }
    for shard in (1..=4).map(|i| format!("model-0000{i}-of-00004.safetensors")) {
        assert_eq!(hub.transfers_of(&shard).len(), 1, "{shard}");
    }

    let requests = hub.server.log().len();
    let second = hub.caption(&mut hub.auris());
    assert_ok(&second);
    assert_eq!(second.stdout, local.stdout);
    assert_eq!(
        hub.server.log().len(),
        requests,
        "second run made requests: {:?}",
        &hub.server.log()[requests..]
    );

    let offline = hub.caption(hub.auris().env("HF_HUB_OFFLINE", "1"));
    assert_ok(&offline);
    assert_eq!(offline.stdout, local.stdout);
    assert_eq!(hub.server.log().len(), requests);

    std::fs::remove_file(hub.snapshot(SHARD)).unwrap();
    let missing = hub.caption(hub.auris().env("HF_HUB_OFFLINE", "1"));
    assert_one_line_failure(&missing, SHARD, "HF_HUB_OFFLINE");
    assert!(missing.stderr.contains("not in the hub cache"));
    assert_eq!(hub.server.log().len(), requests);
}

#[test]
fn download_command_fetches_a_pinned_revision() {
    let hub = Hub::start("revision");
    let out = hub.download(ID, &["--revision", &hub.commit.clone()]);
    assert_ok(&out);
    let folder = hub.repo_dir().join("snapshots").join(&hub.commit);
    let bytes: u64 = hub
        .repo
        .names()
        .iter()
        .map(|n| {
            std::fs::metadata(model_dir("tiny-chat").join(n))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(
        out.stdout.trim(),
        format!(
            "{}\t{} files, {:.1} kB ({bytes} bytes)",
            folder.display(),
            hub.repo.names().len(),
            bytes as f64 / 1e3
        )
    );
    let resolves: Vec<String> = hub
        .server
        .log()
        .into_iter()
        .filter(|l| l.path.contains("/resolve/"))
        .map(|l| l.path)
        .collect();
    assert!(!resolves.is_empty());
    for path in &resolves {
        assert!(
            path.contains(&format!("/resolve/{}/", hub.commit)),
            "{path}"
        );
    }
    assert!(hub.repo_dir().join("refs").join(&hub.commit).is_file());
    assert!(!hub.repo_dir().join("refs/main").exists());

    let unknown = hub.download(ID, &["--revision", "v9"]);
    assert_one_line_failure(&unknown, "HTTP 404", "--revision");
}

#[test]
fn dropped_connection_resumes_with_a_range_request() {
    let hub = Hub::start("resume");
    hub.server.fault(
        SHARD,
        Fault::Drop {
            after: 100_000,
            times: 1,
        },
    );
    let out = hub.download(ID, &["--quiet"]);
    assert_ok(&out);
    assert_eq!(
        hub.transfers_of(SHARD),
        [
            Some("bytes=0-".to_string()),
            Some("bytes=100000-".to_string())
        ]
    );
    assert_same_bytes(&hub.snapshot(SHARD), SHARD);
}

#[test]
fn interrupted_run_resumes_on_the_next_run() {
    let hub = Hub::start("rerun");
    hub.server.fault(
        SHARD,
        Fault::Drop {
            after: 30_000,
            times: usize::MAX,
        },
    );
    let first = hub.download(ID, &["--quiet"]);
    assert_one_line_failure(&first, "broke off", "again");
    assert!(first.stderr.contains(SHARD), "{}", first.stderr);
    let part = hub
        .repo_dir()
        .join("blobs")
        .join(format!("{}.part", hub.repo.sha256(SHARD)));
    // One try and three retries, each continuing where the last one broke off.
    let ranges: Vec<Option<String>> = (0..4)
        .map(|i| Some(format!("bytes={}-", i * 30_000)))
        .collect();
    assert_eq!(hub.transfers_of(SHARD), ranges);
    let kept = std::fs::metadata(&part).unwrap().len();
    assert_eq!(kept, 4 * 30_000);
    assert!(!hub.snapshot(SHARD).exists());

    hub.server.clear_faults();
    let before = hub.transfers_of(SHARD).len();
    let second = hub.download(ID, &["--quiet"]);
    assert_ok(&second);
    assert_eq!(
        hub.transfers_of(SHARD)[before..],
        [Some(format!("bytes={kept}-"))]
    );
    assert_same_bytes(&hub.snapshot(SHARD), SHARD);
    assert!(!part.exists());
}

#[test]
fn corrupt_weights_are_an_error_and_leave_no_cached_file() {
    let hub = Hub::start("corrupt");
    let shard = "model-00003-of-00004.safetensors";
    hub.server.fault(shard, Fault::Corrupt);
    let out = hub.caption(&mut hub.auris());
    assert_one_line_failure(&out, shard, "run again");
    assert!(
        out.stderr.contains(&hub.repo.sha256(shard)),
        "{}",
        out.stderr
    );
    assert!(!hub.snapshot(shard).exists());
    assert!(!hub
        .repo_dir()
        .join("blobs")
        .join(hub.repo.sha256(shard))
        .exists());

    hub.server.clear_faults();
    assert_ok(&hub.download(ID, &["--quiet"]));
    assert_same_bytes(&hub.snapshot(shard), shard);
}

#[test]
fn hub_failures_give_one_error_line_and_a_hint() {
    let mut private = HostedRepo::from_dir("auris-test/private", &model_dir("tiny-chat"));
    private.token = Some("hf_test_token".to_string());
    let hub = Hub::with_repos("errors", vec![private]);

    let missing = hub.download("auris-test/no-such-model", &[]);
    assert_one_line_failure(&missing, "not found (HTTP 404)", "hub id");

    let denied = hub.download("auris-test/private", &[]);
    assert_one_line_failure(&denied, "HTTP 401", "HF_TOKEN");
    let allowed = run(hub.auris().env("HF_TOKEN", "hf_test_token").args([
        "download",
        "--quiet",
        "--model",
        "auris-test/private",
    ]));
    assert_ok(&allowed);

    hub.server.fault("config.json", Fault::Status(500));
    let broken = hub.download(ID, &[]);
    assert_one_line_failure(&broken, "HTTP 500", "try again");

    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let unreachable = run(hub
        .auris()
        .env("HF_ENDPOINT", &dead)
        .args(["download", "--model", ID]));
    assert_one_line_failure(&unreachable, "cannot reach", "HF_ENDPOINT");
}

#[test]
fn download_command_checks_a_local_folder() {
    let out = run(auris()
        .args(["download", "--quiet", "--model"])
        .arg(model_dir("tiny-chat")));
    assert_ok(&out);
    let (folder, summary) = out.stdout.trim().split_once('\t').unwrap();
    assert_eq!(Path::new(folder), model_dir("tiny-chat"));
    assert!(summary.starts_with("11 files, "), "{summary}");
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}
