//! `auris serve`'s `GET /metrics` scraped by a real Prometheus server.

use crate::common::run;

/// `scripts/prometheus_check.sh` with this build: Prometheus scrapes the server during a load of
/// 8 requests and its query API must give the request, token and latency counts of the answers,
/// the target up and the running/waiting gauges back at 0. Prints the values.
#[test]
#[ignore = "opt-in: needs Prometheus (the script installs Debian's with apt-get when missing)"]
fn prometheus_scrapes_the_vllm_metrics() {
    let out = run(std::process::Command::new("scripts/prometheus_check.sh")
        .current_dir(crate::common::root())
        .arg(env!("CARGO_BIN_EXE_auris")));
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("prometheus check: ok"),
        "{}",
        out.stdout
    );
}
