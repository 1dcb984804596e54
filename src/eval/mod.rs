//! Evaluation harnesses of the `auris` binary (`auris eval ...`): not library API.
//!
//! One module, four tasks. The shared machinery:
//! - this file: reading manifests (JSON, JSON Lines), resolving their audio paths, the progress
//!   bar, the list of skipped items;
//! - [`sweep`]: the strategy x keep-ratio sweep over a Qwen2-Audio-style pipeline (each clip
//!   decoded and encoded once, every pruning policy run on it), the resumable predictions file
//!   (JSON Lines) and the report (JSON, markdown table, plot);
//! - [`shard`]: a sweep split over machines (`--shard K/N`), each part's run record, and the
//!   merge of the parts into one report (`auris eval report`);
//! - [`plot`]: score against keep ratio, one line per strategy (SVG through `plotters`).
//!
//! The tasks:
//! - [`asr`] with [`report`] and [`wer`]: what pruning costs a Whisper model's transcriptions
//!   (`auris eval asr-pruning`);
//! - [`mmau`]: multiple-choice accuracy on MMAU with its authors' answer matching
//!   (`auris eval mmau`);
//! - [`captions`] with [`caption_metrics`]: CIDEr-D, BLEU-4 and ROUGE-L on Clotho-style
//!   captions (`auris eval captions`);
//! - [`transcribe`] with [`wer`]: an audio-language model's transcriptions, pruned after the
//!   pooler (`auris eval transcribe`).

pub(crate) mod asr;
pub(crate) mod caption_metrics;
pub(crate) mod captions;
pub(crate) mod mmau;
pub(crate) mod plot;
pub(crate) mod report;
pub(crate) mod shard;
pub(crate) mod sweep;
pub(crate) mod transcribe;
pub(crate) mod wer;

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use auris::Error;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Reads a JSON Lines file: one `T` per non-blank line; errors name the line.
pub(crate) fn read_json_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, Error> {
    let file = open(path)?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| io_error(path, source))?;
        if line.trim().is_empty() {
            continue;
        }
        items.push(
            serde_json::from_str(&line)
                .map_err(|e| bad_file(path, format!("line {}: {e}", i + 1)))?,
        );
    }
    Ok(items)
}

/// Reads a JSON file holding one `T` (a manifest's list of items).
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| io_error(path, source))?;
    serde_json::from_str(&text).map_err(|e| bad_file(path, e.to_string()))
}

/// `path` as given when absolute, else under `base`.
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// A manifest that lists nothing is an error, not an empty table.
pub(crate) fn non_empty<T>(path: &Path, items: Vec<T>) -> Result<Vec<T>, Error> {
    if items.is_empty() {
        return Err(bad_file(path, "the manifest lists no items".to_string()));
    }
    Ok(items)
}

/// Every item of a manifest needs an id of its own: the predictions file keys on it.
pub(crate) fn unique_ids<'a>(
    path: &Path,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(bad_file(path, format!("item id {id} appears twice")));
        }
    }
    Ok(())
}

pub(crate) fn open(path: &Path) -> Result<std::fs::File, Error> {
    std::fs::File::open(path).map_err(|source| io_error(path, source))
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn bad_file(path: &Path, reason: String) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        reason,
    }
}

/// An item left out of an evaluation (missing or undecodable audio, too short for the
/// encoder), with the reason; listed in every report, never dropped silently.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Skipped {
    /// The item's id (the audio file name where the manifest has no id).
    pub(crate) id: String,
    /// The audio file.
    pub(crate) audio: PathBuf,
    /// Why it was left out.
    pub(crate) reason: String,
}

/// A progress bar with ETA on stderr; hidden with `--quiet` or when stderr is not a terminal.
pub(crate) fn progress_bar(len: usize, show: bool, unit: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let template =
        format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}, ETA {{eta}} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
