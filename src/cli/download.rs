//! `auris download`: fetch a checkpoint into the hub cache without loading it.

use std::process::ExitCode;

use anyhow::Result;
use auris::checkpoint::{resolve, ModelSource};
use auris::hub::HubFailure;

use super::args::DownloadArgs;
use super::print_line;

/// Resolves every file the model needs (downloading what the cache lacks) and prints the
/// snapshot folder, the file count and the total size on stdout.
pub(super) fn run(args: &DownloadArgs) -> Result<ExitCode> {
    let source = ModelSource::parse(&args.model, args.revision.as_deref())?;
    if !args.quiet {
        eprintln!("auris: fetching {}", source.display());
    }
    let files = resolve(&source, !args.quiet)?;
    let paths = files.paths();
    let mut bytes = 0u64;
    for path in &paths {
        bytes += std::fs::metadata(path)
            .map_err(|e| auris::Error::Io {
                path: path.to_path_buf(),
                source: e,
            })?
            .len();
    }
    let folder = files.config.parent().unwrap_or(&files.config);
    print_line(&format!(
        "{}\t{} files, {} ({bytes} bytes)",
        folder.display(),
        paths.len(),
        size(bytes)
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// A byte count in the largest decimal unit that keeps it at 1 or more.
fn size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// What to do about a failed hub download.
pub(super) fn hint(failure: &HubFailure) -> String {
    match failure {
        HubFailure::NotFound => {
            "check the hub id (owner/name) and --revision; hub ids look like Qwen/Qwen2-Audio-7B-Instruct"
        }
        HubFailure::Denied { .. } => {
            "the repository is private or gated: accept its terms on the hub, then set HF_TOKEN to an access token (or save one in $HF_HOME/token)"
        }
        HubFailure::Status { .. } => "the hub had trouble on its side; try again later",
        HubFailure::Unreachable { .. } => {
            "check the network and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to run from the cache"
        }
        HubFailure::Interrupted { .. } => {
            "run the same command again: the download continues where it stopped"
        }
        HubFailure::Client { .. } => {
            "check that HF_HOME is writable, or pass a local model folder with --model"
        }
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(712_000), "712.0 kB");
        assert_eq!(size(16_800_000_000), "16.8 GB");
    }
}
