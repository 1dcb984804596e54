//! The ASR evaluation's report: JSON (`bench/asr_pruning.json`), a markdown table and an SVG
//! plot of WER against the keep ratio (through [`super::plot`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::plot::{line_plot, Series};
use super::wer::ErrorCount;

/// The evaluation's result; [`AsrReport::to_json`] gives the `bench/asr_pruning.json` layout.
#[derive(Debug, Clone)]
pub(crate) struct AsrReport {
    /// Clips transcribed.
    pub(crate) clips: usize,
    /// Reference words over those clips.
    pub(crate) words: usize,
    /// Total audio, seconds.
    pub(crate) audio_s: f64,
    /// Without pruning.
    pub(crate) none: ErrorCount,
    /// Per strategy name, per keep ratio (as written, e.g. `"0.25"`).
    pub(crate) pruned: BTreeMap<String, BTreeMap<String, ErrorCount>>,
    /// Strategy names in the order given.
    pub(crate) order: Vec<String>,
    /// Keep ratios in the order given.
    pub(crate) keeps: Vec<String>,
    /// Clips left out, with the reason.
    pub(crate) skipped: Vec<(PathBuf, String)>,
    /// Wall-clock seconds for the whole evaluation.
    pub(crate) runtime_s: f64,
    /// Strategy parameters, for the record.
    pub(crate) parameters: Value,
}

/// The JSON layout of [`AsrReport::to_json`].
#[derive(Serialize)]
struct JsonReport<'a> {
    clips: usize,
    words: usize,
    audio_s: f64,
    none: f64,
    /// WER per strategy, per keep ratio: one top-level key per strategy.
    #[serde(flatten)]
    rates: BTreeMap<String, BTreeMap<String, f64>>,
    relative_change: BTreeMap<String, BTreeMap<String, Option<f64>>>,
    parameters: &'a Value,
    skipped: Vec<Skipped<'a>>,
    runtime_s: f64,
}

/// A clip left out of the evaluation.
#[derive(Serialize)]
struct Skipped<'a> {
    audio: &'a Path,
    reason: &'a str,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Relative change of `wer` against `base`, e.g. `0.25` for 25 % more errors.
fn relative(wer: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| wer / base - 1.0)
}

impl AsrReport {
    /// `{"clips": n, "none": wer, "<strategy>": {"<keep>": wer, ...}, ...}` plus the relative
    /// changes, counts and run facts under their own keys.
    pub(crate) fn to_json(&self) -> Value {
        let base = self.none.rate();
        let mut rates = BTreeMap::new();
        let mut relative_change = BTreeMap::new();
        for name in &self.order {
            let counts = &self.pruned[name];
            let rate = |keep: &String| counts[keep].rate();
            rates.insert(
                name.clone(),
                self.keeps
                    .iter()
                    .map(|k| (k.clone(), round6(rate(k))))
                    .collect(),
            );
            relative_change.insert(
                name.clone(),
                self.keeps
                    .iter()
                    .map(|k| (k.clone(), relative(rate(k), base).map(round6)))
                    .collect(),
            );
        }
        let json = JsonReport {
            clips: self.clips,
            words: self.words,
            audio_s: round1(self.audio_s),
            none: round6(base),
            rates,
            relative_change,
            parameters: &self.parameters,
            skipped: self
                .skipped
                .iter()
                .map(|(audio, reason)| Skipped { audio, reason })
                .collect(),
            runtime_s: round1(self.runtime_s),
        };
        // Through `Value`, whose keys are sorted: the file's layout does not depend on the
        // order of the fields here.
        serde_json::to_value(json).unwrap_or(Value::Null)
    }

    /// A markdown table: strategies by keep ratio, WER with the relative change.
    pub(crate) fn markdown(&self) -> String {
        let base = self.none.rate();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "WER on {} clips ({} reference words, {:.1} min of speech), pruning {}; no pruning: **{:.2} %**.\n",
            self.clips,
            self.words,
            self.audio_s / 60.0,
            match self.parameters["scope"].as_str() {
                Some("audio") => "the frames covering the audio",
                _ => "the whole 30 s window",
            },
            100.0 * base
        );
        let _ = write!(s, "| strategy |");
        for keep in &self.keeps {
            let _ = write!(s, " keep {keep} |");
        }
        let _ = write!(s, "\n|---|");
        for _ in &self.keeps {
            let _ = write!(s, "---|");
        }
        s.push('\n');
        for name in &self.order {
            let _ = write!(s, "| {name} |");
            for keep in &self.keeps {
                let wer = self.pruned[name][keep].rate();
                match relative(wer, base) {
                    Some(r) => {
                        let _ = write!(s, " {:.2} % ({:+.0} %) |", 100.0 * wer, 100.0 * r);
                    }
                    None => {
                        let _ = write!(s, " {:.2} % |", 100.0 * wer);
                    }
                }
            }
            s.push('\n');
        }
        s
    }

    /// An SVG line plot of WER against keep ratio, one line per strategy (no pruning at 1.0).
    pub(crate) fn svg(&self) -> anyhow::Result<String> {
        let base = self.none.rate();
        let series: Vec<Series> = self
            .order
            .iter()
            .map(|name| {
                let mut points: Vec<(f64, f64)> = self
                    .keeps
                    .iter()
                    .filter_map(|k| Some((k.parse().ok()?, self.pruned[name][k].rate())))
                    .collect();
                points.push((1.0, base));
                Series {
                    name: name.clone(),
                    points,
                }
            })
            .collect();
        line_plot(
            &format!("Whisper WER vs keep ratio ({} clips)", self.clips),
            "word error rate",
            &series,
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report() -> AsrReport {
        let c = |errors, words| ErrorCount { errors, words };
        let mut pruned = BTreeMap::new();
        for (name, a, b) in [
            ("segmentwise", c(12, 100), c(30, 100)),
            ("topk", c(15, 100), c(50, 100)),
        ] {
            let mut m = BTreeMap::new();
            m.insert("0.5".to_string(), a);
            m.insert("0.1".to_string(), b);
            pruned.insert(name.to_string(), m);
        }
        AsrReport {
            clips: 3,
            words: 100,
            audio_s: 12.0,
            none: c(10, 100),
            pruned,
            order: vec!["segmentwise".into(), "topk".into()],
            keeps: vec!["0.5".into(), "0.1".into()],
            skipped: vec![],
            runtime_s: 1.0,
            parameters: json!({}),
        }
    }

    #[test]
    fn json_layout_and_relative_change() {
        let j = report().to_json();
        assert_eq!(j["clips"], 3);
        assert_eq!(j["none"], 0.1);
        assert_eq!(j["segmentwise"]["0.5"], 0.12);
        assert_eq!(j["topk"]["0.1"], 0.5);
        assert_eq!(j["relative_change"]["segmentwise"]["0.5"], 0.2);
        assert_eq!(j["relative_change"]["topk"]["0.1"], 4.0);
    }

    #[test]
    fn markdown_and_plot() {
        let r = report();
        let md = r.markdown();
        assert!(
            md.contains("| segmentwise | 12.00 % (+20 %) | 30.00 % (+200 %) |"),
            "{md}"
        );
        let svg = r.svg().unwrap();
        // Two strategies, each at two keep ratios plus no pruning at 1.
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(
            svg.contains("\nsegmentwise\n") && svg.contains("\ntopk\n"),
            "{svg}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
