//! Splitting a sweep over machines and merging the parts.
//!
//! `--shard K/N` keeps the items whose id hashes to slice K: item `id` belongs to shard
//! `FNV-1a-64(id) mod N + 1`. The slice depends only on the item's id, so it is the same on
//! every machine, whatever the order of the manifest's lines, and the N slices cover the
//! manifest exactly once.
//!
//! A run with `--predictions FILE` appends to `FILE.partial` while it works and renames it to
//! `FILE` when it is done, after writing its run record (`FILE` with the extension
//! `.run.json`: the task, the manifest, the sweep's settings, the items it skipped). A
//! scheduler can take the presence of `FILE` as "this shard is done"; an interrupted shard
//! resumes from `FILE.partial`. `auris eval report` reads the run records and predictions
//! files of the shards and builds the report a single run writes.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use auris::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::sweep::{fnv1a, key, Config, Key, Prediction};
use super::{bad_file, io_error, Skipped};

/// One of `count` deterministic slices of a manifest; `index` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    /// Which slice, 1..=count.
    pub(crate) index: u64,
    /// How many slices.
    pub(crate) count: u64,
}

impl Shard {
    /// Whether the item with this id is in this slice.
    pub(crate) fn holds(&self, id: &str) -> bool {
        fnv1a(id) % self.count == self.index - 1
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || format!("expected K/N with 1 <= K <= N (e.g. 2/8), not {s:?}");
        let (k, n) = s.split_once('/').ok_or_else(expected)?;
        let k: u64 = k.trim().parse().map_err(|_| expected())?;
        let n: u64 = n.trim().parse().map_err(|_| expected())?;
        if n == 0 {
            return Err(format!("{s}: the shard count N must be at least 1"));
        }
        if k == 0 || k > n {
            return Err(format!(
                "{s}: the shard index K counts from 1 to N = {n} (a shard of K/N)"
            ));
        }
        Ok(Self { index: k, count: n })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Serialize for Shard {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a predictions file grows until its run is done.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The run record next to a predictions file: `shard-3.jsonl` -> `shard-3.run.json`.
pub(crate) fn record_path(predictions: &Path) -> PathBuf {
    predictions.with_extension("run.json")
}

/// Writes `text` to a temporary file beside `path`, flushes it to disk and renames it over
/// `path`: a reader sees the old file or the new one, never a part.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let tmp = partial_path(path);
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// What a finished run with `--predictions` records beside its file: enough to score its
/// predictions again without the model, and to check that shards belong to one sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// `mmau`, `captions` or `transcribe`.
    pub(crate) task: String,
    /// `generate` or `score-choices`.
    pub(crate) mode: String,
    /// The model, as given.
    pub(crate) model: String,
    /// The manifest as given (made absolute).
    pub(crate) manifest: PathBuf,
    /// FNV-1a-64 of the manifest's bytes: the shards must have read the same file.
    pub(crate) manifest_fingerprint: String,
    /// `--limit`.
    pub(crate) limit: Option<usize>,
    /// `--strategies`, by their command-line names.
    pub(crate) strategies: Vec<String>,
    /// `--keeps`.
    pub(crate) keeps: Vec<f32>,
    /// `--segments`.
    pub(crate) segments: usize,
    /// `--segment-remainder`, by its command-line name.
    pub(crate) segment_remainder: String,
    /// `--seed`.
    pub(crate) seed: u64,
    /// `--shard`, if any.
    pub(crate) shard: Option<Shard>,
    /// The items of this run left out, with the reason.
    pub(crate) skipped: Vec<Skipped>,
    /// The report's `parameters` (prompt, strategies' parameters, settings fingerprint).
    pub(crate) parameters: Value,
}

impl RunRecord {
    /// Reads the run record of a predictions file.
    pub(crate) fn read(predictions: &Path) -> Result<Self, Error> {
        let path = record_path(predictions);
        if !path.exists() {
            let why = if partial_path(predictions).exists() {
                "its run is not finished (the .partial file holds what it made): run that \
                 command again, it resumes"
            } else {
                "no run record beside it (written by auris eval mmau, captions and \
                 transcribe when they finish with --predictions)"
            };
            return Err(bad_file(
                predictions,
                format!("{why}; expected {}", path.display()),
            ));
        }
        super::read_json(&path)
    }

    /// The settings every shard of one sweep shares (all but the shard and its skipped items).
    fn sweep_settings(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            for k in ["shard", "skipped", "manifest"] {
                m.remove(k);
            }
        }
        v
    }

    /// The settings fingerprint of the predictions this run made.
    pub(crate) fn settings(&self) -> &str {
        self.parameters["settings_fingerprint"]
            .as_str()
            .unwrap_or_default()
    }
}

/// Refuses run records that are not parts of one sweep, naming the first difference.
pub(crate) fn check_same_sweep(records: &[(PathBuf, RunRecord)]) -> Result<(), Error> {
    let Some((first_path, first)) = records.first() else {
        return Ok(());
    };
    let want = first.sweep_settings();
    for (path, r) in &records[1..] {
        let got = r.sweep_settings();
        if got != want {
            let field = want
                .as_object()
                .and_then(|w| w.iter().find(|(k, v)| got.get(*k) != Some(*v)))
                .map_or("settings", |(k, _)| k.as_str());
            return Err(Error::Usage(format!(
                "{} and {} come from different sweeps ({field} differs); merge the shards of \
                 one command only",
                first_path.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// The shards' predictions in the order a single run lists them, and the items they skipped.
#[derive(Debug)]
pub(crate) struct Merged {
    /// For every item with all configurations answered, in manifest order, one prediction per
    /// configuration in the configurations' order.
    pub(crate) predictions: Vec<Prediction>,
    /// Items left out by the run that held them, in manifest order.
    pub(crate) skipped: Vec<Skipped>,
}

/// The answer of a prediction: what must agree where two files hold the same prediction.
fn answer(p: &Prediction) -> (&str, Option<bool>, usize) {
    (&p.prediction, p.correct, p.n_kept)
}

/// Merges the predictions of `files` (of mode `mode` made with `settings`) over the manifest's
/// `ids`. Refuses two different answers to one question and names the items no file answers
/// or skips.
pub(crate) fn merge(
    ids: &[String],
    configs: &[Config],
    mode: &str,
    settings: &str,
    files: &[(PathBuf, Vec<Prediction>)],
    skipped: Vec<Skipped>,
) -> Result<Merged, Error> {
    let mut held: HashMap<Key, (&Prediction, &Path)> = HashMap::new();
    for (path, predictions) in files {
        for p in predictions
            .iter()
            .filter(|p| p.mode == mode && p.settings == settings)
        {
            let k = key(&p.id, &p.strategy, p.keep, &p.mode);
            match held.get(&k) {
                Some((q, other)) if answer(q) != answer(p) => {
                    return Err(Error::Usage(format!(
                        "item {} ({} at keep {}) has two different answers: {:?} in {} and {:?} \
                         in {}",
                        p.id,
                        p.strategy,
                        p.keep,
                        q.prediction,
                        other.display(),
                        p.prediction,
                        path.display()
                    )))
                }
                Some(_) => {}
                None => {
                    held.insert(k, (p, path.as_path()));
                }
            }
        }
    }
    let skipped: HashMap<String, Skipped> =
        skipped.into_iter().map(|s| (s.id.clone(), s)).collect();
    let mut out = Merged {
        predictions: Vec::new(),
        skipped: Vec::new(),
    };
    let mut missing = Vec::new();
    for id in ids {
        let found: Vec<&Prediction> = configs
            .iter()
            .filter_map(|c| held.get(&key(id, &c.strategy, c.keep, mode)).map(|h| h.0))
            .collect();
        if found.len() == configs.len() {
            out.predictions.extend(found.into_iter().cloned());
        } else if let Some(s) = skipped.get(id) {
            out.skipped.push(s.clone());
        } else {
            missing.push(format!("{id} ({} of {})", found.len(), configs.len()));
        }
    }
    if !missing.is_empty() {
        let shown = missing.iter().take(10).cloned().collect::<Vec<_>>();
        return Err(Error::Usage(format!(
            "{} of {} items are missing from these files (predictions found of those \
             configured): {}{}; run the shards that hold them",
            missing.len(),
            ids.len(),
            shown.join(", "),
            if missing.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_spec_is_checked() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1/0", "x", "1/", "/3", "1/3/4", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!("0/3".parse::<Shard>().unwrap_err().contains("from 1 to N"));
        assert!("1/0".parse::<Shard>().unwrap_err().contains("at least 1"));
    }

    #[test]
    fn shards_cover_every_id_once() {
        let ids: Vec<String> = (0..500).map(|i| format!("item-{i}")).collect();
        let n = 7;
        let mut sizes = vec![0; n as usize];
        for id in &ids {
            let owners: Vec<u64> = (1..=n)
                .filter(|&k| Shard { index: k, count: n }.holds(id))
                .collect();
            assert_eq!(owners.len(), 1, "{id}");
            sizes[(owners[0] - 1) as usize] += 1;
        }
        assert!(sizes.iter().all(|&s| s > 40), "{sizes:?}");
        // The slice depends on the id alone (FNV-1a-64 of "a" mod 3 is 1: shard 2 of 3).
        assert!(Shard { index: 2, count: 3 }.holds("a"));
    }

    #[test]
    fn sidecar_paths() {
        assert_eq!(
            record_path(Path::new("out/s-3.jsonl")),
            Path::new("out/s-3.run.json")
        );
        assert_eq!(
            partial_path(Path::new("out/s-3.jsonl")),
            Path::new("out/s-3.jsonl.partial")
        );
    }
}
