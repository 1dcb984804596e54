//! `auris eval asr-pruning`: what each pruning strategy costs a real Whisper model on real speech.
//!
//! Each clip of a manifest is encoded once (all 1500 frames, per-frame attention scores from the
//! last layer); the Whisper decoder then transcribes it greedily from all frames and from the
//! frames each strategy keeps at each keep ratio (pruning applies to the frames themselves, no
//! pairing). Word error rates are corpus-level: errors and reference words summed over clips.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use auris_audio::encoder::EncoderOutput;
use auris_prune::{Policy, Strategy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::wer::ErrorCount;
use auris::pipeline::select_tokens;
use auris::Error;
use auris_whisper::Transcriber;

/// One clip of the speech set: a line of the JSON Lines manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct ManifestEntry {
    /// The audio file (relative paths are relative to the manifest's folder).
    pub(crate) audio: PathBuf,
    /// The reference transcript.
    pub(crate) text: String,
    /// Where the clip comes from (reported per source).
    #[serde(default)]
    pub(crate) source: Option<String>,
}

/// Reads a JSON Lines manifest: one `{"audio": ..., "text": ...}` object per line.
pub(crate) fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>, Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut entries = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let mut entry: ManifestEntry = serde_json::from_str(&line).map_err(|e| Error::BadFile {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        if entry.audio.is_relative() {
            entry.audio = base.join(&entry.audio);
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            reason: "the manifest lists no clips".to_string(),
        });
    }
    Ok(entries)
}

/// Which frames a strategy prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PruneScope {
    /// All frames of the 30 s window, padding included (`N` = 1500 for Whisper).
    #[default]
    Window,
    /// Only the frames that cover the audio (`N` = the clip's `T1` conv positions); the padding
    /// frames after them are all kept. Qwen2-Audio likewise prunes only a clip's valid tokens.
    Audio,
}

impl PruneScope {
    /// The name used on the command line and in the JSON.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            PruneScope::Window => "window",
            PruneScope::Audio => "audio",
        }
    }
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct AsrEvalOptions {
    /// Which frames are pruned.
    pub(crate) scope: PruneScope,
    /// Strategies compared against no pruning.
    pub(crate) strategies: Vec<Strategy>,
    /// Keep ratios, each in (0, 1).
    pub(crate) keeps: Vec<f32>,
    /// Evaluate only the first clips.
    pub(crate) limit: Option<usize>,
    /// Cap on generated tokens per transcription (`None`: the model's `max_length`).
    pub(crate) max_new_tokens: Option<usize>,
    /// Write one JSON line per clip (hypotheses and errors per configuration) here.
    pub(crate) details: Option<PathBuf>,
    /// Print a line per clip on stderr.
    pub(crate) progress: bool,
}

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

fn keep_label(keep: f32) -> String {
    format!("{keep}")
}

/// Runs the evaluation over `clips`.
pub(crate) fn asr_pruning(
    model: &Transcriber,
    clips: &[ManifestEntry],
    opts: &AsrEvalOptions,
) -> Result<AsrReport, Error> {
    let start = Instant::now();
    let policies: Vec<(String, String, Policy)> = opts
        .strategies
        .iter()
        .flat_map(|s| {
            opts.keeps
                .iter()
                .map(move |&k| Policy::new(*s, k).map(|p| (s.name().to_string(), keep_label(k), p)))
        })
        .collect::<Result<_, _>>()?;
    let mut details = match &opts.details {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?,
        )),
        None => None,
    };
    let mut report = AsrReport {
        clips: 0,
        words: 0,
        audio_s: 0.0,
        none: ErrorCount::default(),
        pruned: BTreeMap::new(),
        order: opts
            .strategies
            .iter()
            .map(|s| s.name().to_string())
            .collect(),
        keeps: opts.keeps.iter().map(|&k| keep_label(k)).collect(),
        skipped: Vec::new(),
        runtime_s: 0.0,
        parameters: strategy_parameters(&opts.strategies),
    };
    report.parameters["scope"] = json!(opts.scope.name());
    report.parameters["max_new_tokens"] = json!(opts.max_new_tokens);
    let clips = &clips[..opts.limit.unwrap_or(clips.len()).min(clips.len())];
    for (i, clip) in clips.iter().enumerate() {
        let clip_start = Instant::now();
        let (encoded, samples, duration_s) = match model.encode_file(&clip.audio) {
            Ok(e) => {
                let seconds = e.seconds();
                (e.output, e.samples, seconds)
            }
            Err(e) => {
                if opts.progress {
                    eprintln!("[{}/{}] skipped: {e}", i + 1, clips.len());
                }
                report.skipped.push((clip.audio.clone(), e.to_string()));
                continue;
            }
        };
        // All transcriptions of the clip in one batch: one pass over the weights per step.
        let audio_frames = match opts.scope {
            PruneScope::Window => None,
            PruneScope::Audio => Some(audio_positions(samples)),
        };
        let mut frames = vec![encoded.hidden.clone()];
        for (_, _, policy) in &policies {
            frames.push(prune_frames(&encoded, policy, audio_frames)?);
        }
        let mut transcripts = model
            .transcribe_batch(&frames, opts.max_new_tokens)?
            .into_iter();
        let full = transcripts
            .next()
            .ok_or_else(|| Error::Usage("no transcription".to_string()))?;
        let none = ErrorCount::of(&clip.text, &full.text);
        report.none.add(none);
        let mut record = json!({
            "audio": clip.audio,
            "reference": clip.text,
            "none": {"text": full.text, "errors": none.errors},
        });
        for ((name, keep, _), t) in policies.iter().zip(transcripts) {
            let count = ErrorCount::of(&clip.text, &t.text);
            report
                .pruned
                .entry(name.clone())
                .or_default()
                .entry(keep.clone())
                .or_default()
                .add(count);
            record[format!("{name}@{keep}")] = json!({"text": t.text, "errors": count.errors});
        }
        report.clips += 1;
        report.words += none.words;
        report.audio_s += duration_s;
        if let Some(out) = details.as_mut() {
            writeln!(out, "{record}").map_err(|source| Error::Io {
                path: opts.details.clone().unwrap_or_default(),
                source,
            })?;
        }
        if opts.progress {
            eprintln!(
                "[{}/{}] {} ({:.1} s): {:?} ({} errors / {} words); running WER none {:.3}",
                i + 1,
                clips.len(),
                clip.audio.file_name().unwrap_or_default().to_string_lossy(),
                clip_start.elapsed().as_secs_f64(),
                full.text,
                none.errors,
                none.words,
                report.none.rate()
            );
        }
    }
    if let Some(mut out) = details {
        out.flush().map_err(|source| Error::Io {
            path: opts.details.clone().unwrap_or_default(),
            source,
        })?;
    }
    if report.clips == 0 {
        return Err(Error::Usage(format!(
            "no clip could be transcribed ({} skipped)",
            report.skipped.len()
        )));
    }
    report.runtime_s = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The frames a policy keeps (VisionZip: dominant frames plus merged contextual ones).
fn prune_frames(
    encoded: &EncoderOutput,
    policy: &Policy,
    audio_frames: Option<usize>,
) -> Result<candle_core::Tensor, Error> {
    let n = encoded.len();
    match audio_frames {
        Some(a) if a < n => {
            let scores = encoded.scores.as_ref().map(|s| s[..a].to_vec());
            let speech = EncoderOutput {
                hidden: encoded.hidden.narrow(0, 0, a)?,
                scores,
            };
            let kept = select_tokens(std::slice::from_ref(&speech), policy)?.rows;
            Ok(candle_core::Tensor::cat(
                &[&kept, &encoded.hidden.narrow(0, a, n - a)?],
                0,
            )?)
        }
        _ => Ok(select_tokens(std::slice::from_ref(encoded), policy)?.rows),
    }
}

/// Encoder positions covering `samples` of 16 kHz audio (the conv stem's output length).
fn audio_positions(samples: usize) -> usize {
    auris_audio::conv_output_len(auris_audio::valid_frames(samples)).max(1)
}

fn strategy_parameters(strategies: &[Strategy]) -> Value {
    let mut map = Map::new();
    for s in strategies {
        let v = match s {
            Strategy::Segmentwise {
                segments,
                remainder,
            } => json!({"segments": segments, "remainder": remainder.name()}),
            Strategy::Random { seed } => json!({ "seed": seed }),
            Strategy::VisionZip { contextual_share } => {
                // The f32 share as the decimal it was written as (0.18, not 0.18000000715...).
                let share: f64 = format!("{contextual_share}").parse().unwrap_or(0.0);
                json!({ "contextual_share": share })
            }
            _ => continue,
        };
        map.insert(s.name().to_string(), v);
    }
    Value::Object(map)
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
        let mut root = Map::new();
        root.insert("clips".into(), json!(self.clips));
        root.insert("words".into(), json!(self.words));
        root.insert(
            "audio_s".into(),
            json!((self.audio_s * 10.0).round() / 10.0),
        );
        root.insert("none".into(), json!(round6(base)));
        let mut rel = Map::new();
        for name in &self.order {
            let mut per_keep = Map::new();
            let mut rel_keep = Map::new();
            for keep in &self.keeps {
                let count = self.pruned[name][keep];
                per_keep.insert(keep.clone(), json!(round6(count.rate())));
                rel_keep.insert(
                    keep.clone(),
                    json!(relative(count.rate(), base).map(round6)),
                );
            }
            root.insert(name.clone(), Value::Object(per_keep));
            rel.insert(name.clone(), Value::Object(rel_keep));
        }
        root.insert("relative_change".into(), Value::Object(rel));
        root.insert("parameters".into(), self.parameters.clone());
        root.insert(
            "skipped".into(),
            json!(self
                .skipped
                .iter()
                .map(|(p, why)| json!({"audio": p, "reason": why}))
                .collect::<Vec<_>>()),
        );
        root.insert(
            "runtime_s".into(),
            json!((self.runtime_s * 10.0).round() / 10.0),
        );
        Value::Object(root)
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
    pub(crate) fn svg(&self) -> String {
        const W: f64 = 640.0;
        const H: f64 = 400.0;
        const LEFT: f64 = 60.0;
        const RIGHT: f64 = 150.0;
        const TOP: f64 = 30.0;
        const BOTTOM: f64 = 50.0;
        const COLOURS: [&str; 8] = [
            "#d62728", "#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
        ];
        let base = self.none.rate();
        let points: Vec<(&String, Vec<(f64, f64)>)> = self
            .order
            .iter()
            .map(|name| {
                let mut pts: Vec<(f64, f64)> = self
                    .keeps
                    .iter()
                    .filter_map(|k| {
                        let x: f64 = k.parse().ok()?;
                        Some((x, self.pruned[name][k].rate()))
                    })
                    .collect();
                pts.push((1.0, base));
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (name, pts)
            })
            .collect();
        let y_max = points
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .filter(|y| y.is_finite())
            .fold(base, f64::max)
            .max(1e-3);
        let y_top = nice_ceiling(y_max * 1.05);
        let px = |x: f64| LEFT + x * (W - LEFT - RIGHT);
        let py = |y: f64| H - BOTTOM - (y.min(y_top) / y_top) * (H - TOP - BOTTOM);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="18" text-anchor="middle" font-size="14">Whisper-base WER vs keep ratio ({} clips)</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            self.clips
        );
        for i in 0..=5 {
            let y = y_top * i as f64 / 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{0}" y1="{1:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4:.0} %</text>"##,
                W - RIGHT,
                py(y),
                LEFT - 6.0,
                py(y) + 4.0,
                100.0 * y
            );
        }
        for x in [0.0, 0.1, 0.25, 0.5, 0.75, 1.0] {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{x}</text>"##,
                px(x),
                TOP,
                H - BOTTOM,
                H - BOTTOM + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">keep ratio</text><text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">word error rate</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 10.0,
            (TOP + H - BOTTOM) / 2.0,
            (TOP + H - BOTTOM) / 2.0
        );
        for (i, (name, pts)) in points.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                    px(x),
                    py(y)
                );
            }
            let ly = TOP + 10.0 + 20.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{0}" x2="{1}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{2}" y="{3}">{name}</text>"#,
                W - RIGHT + 12.0,
                W - RIGHT + 34.0,
                W - RIGHT + 40.0,
                ly + 4.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `x`.
fn nice_ceiling(x: f64) -> f64 {
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&v| v >= x)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
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
        let svg = r.svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn audio_scope_prunes_only_the_audio_frames() {
        use candle_core::{Device, Tensor};
        // 6 frames, the first 4 cover audio; rows are their own index.
        let hidden = Tensor::from_vec(
            (0..6).map(|i| i as f32).collect::<Vec<_>>(),
            (6, 1),
            &Device::Cpu,
        )
        .unwrap();
        let encoded = EncoderOutput {
            hidden,
            scores: Some(vec![0.1, 0.9, 0.2, 0.8, 0.95, 0.99]),
        };
        let policy = Policy::new(Strategy::TopK, 0.5).unwrap();
        let rows = |t: candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Window scope: the best 3 of all 6 (two of them padding).
        assert_eq!(
            rows(prune_frames(&encoded, &policy, None).unwrap()),
            [1.0, 4.0, 5.0]
        );
        // Audio scope: the best 2 of the 4 audio frames, then every padding frame.
        assert_eq!(
            rows(prune_frames(&encoded, &policy, Some(4)).unwrap()),
            [1.0, 3.0, 4.0, 5.0]
        );
        // 1 s of audio: 100 mel frames, 50 encoder positions.
        assert_eq!(audio_positions(16_000), 50);
    }

    #[test]
    fn nice_axis() {
        assert_eq!(nice_ceiling(0.42), 0.5);
        assert_eq!(nice_ceiling(0.11), 0.2);
        assert_eq!(nice_ceiling(0.021), 0.025);
    }
}
