//! `auris eval asr-pruning`: what each pruning strategy costs a real Whisper model on real speech.
//!
//! Each clip of a manifest is encoded once (all 1500 frames, per-frame attention scores from the
//! last layer); the Whisper decoder then transcribes it greedily from all frames and from the
//! frames each strategy keeps at each keep ratio (pruning applies to the frames themselves, no
//! pairing). Word error rates are corpus-level: errors and reference words summed over clips.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use auris_audio::encoder::EncoderOutput;
use auris_prune::{Policy, Strategy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::report::AsrReport;
use super::wer::ErrorCount;
use auris::family::SelectionScope;
use auris::pipeline::select_tokens;
use auris::Error;
use auris_whisper::{EncodedClip, Transcriber};

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

/// Reads a JSON Lines manifest: one `{"audio": ..., "text": ...}` object per line; relative
/// audio paths are relative to the manifest's folder.
pub(crate) fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>, Error> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut entries: Vec<ManifestEntry> = super::read_json_lines(path)?;
    for entry in &mut entries {
        entry.audio = super::resolve(base, &entry.audio);
    }
    super::non_empty(path, entries)
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

fn keep_label(keep: f32) -> String {
    format!("{keep}")
}

/// A policy with the strategy name and keep label it is reported under.
type Labelled = (String, String, Policy);

/// Every strategy at every keep ratio.
fn policy_grid(opts: &AsrEvalOptions) -> Result<Vec<Labelled>, Error> {
    Ok(opts
        .strategies
        .iter()
        .flat_map(|s| {
            opts.keeps
                .iter()
                .map(move |&k| Policy::new(*s, k).map(|p| (s.name().to_string(), keep_label(k), p)))
        })
        .collect::<Result<_, _>>()?)
}

/// A report with no clip counted yet.
fn empty_report(opts: &AsrEvalOptions) -> AsrReport {
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
    report
}

/// The per-clip JSON Lines file of `--details`.
struct Details {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl Details {
    /// Creates the file at `path`, when there is one.
    fn create(path: Option<&Path>) -> Result<Option<Self>, Error> {
        let Some(path) = path else {
            return Ok(None);
        };
        let file = std::fs::File::create(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Some(Self {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
        }))
    }

    /// Writes one clip's record as a line.
    fn write(&mut self, record: &Value) -> Result<(), Error> {
        writeln!(self.out, "{record}").map_err(|source| self.io_error(source))
    }

    /// Flushes what is still buffered.
    fn finish(mut self) -> Result<(), Error> {
        self.out.flush().map_err(|source| self.io_error(source))
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Runs the evaluation over `clips`.
pub(crate) fn asr_pruning(
    model: &Transcriber,
    clips: &[ManifestEntry],
    opts: &AsrEvalOptions,
) -> Result<AsrReport, Error> {
    let start = Instant::now();
    let policies = policy_grid(opts)?;
    let mut details = Details::create(opts.details.as_deref())?;
    let mut report = empty_report(opts);
    let clips = &clips[..opts.limit.unwrap_or(clips.len()).min(clips.len())];
    let bar = super::progress_bar(clips.len(), opts.progress, "clips");
    for clip in clips {
        bar.inc(1);
        let encoded = match model.encode_file(&clip.audio) {
            Ok(e) => e,
            Err(e) => {
                if opts.progress {
                    bar.suspend(|| eprintln!("auris: skipping {}: {e}", clip.audio.display()));
                }
                report.skipped.push((clip.audio.clone(), e.to_string()));
                continue;
            }
        };
        let record = transcribe_clip(model, clip, &encoded, &policies, opts, &mut report)?;
        if let Some(details) = details.as_mut() {
            details.write(&record)?;
        }
        bar.set_message(format!("running WER none {:.3}", report.none.rate()));
    }
    bar.finish_and_clear();
    if let Some(details) = details {
        details.finish()?;
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

/// Transcribes one encoded clip from all its frames and from those each policy keeps, adds
/// the errors to `report` and returns the clip's record for `--details`.
fn transcribe_clip(
    model: &Transcriber,
    clip: &ManifestEntry,
    encoded: &EncodedClip,
    policies: &[Labelled],
    opts: &AsrEvalOptions,
    report: &mut AsrReport,
) -> Result<Value, Error> {
    // All transcriptions of the clip in one batch: one pass over the weights per step.
    let audio_frames = match opts.scope {
        PruneScope::Window => None,
        PruneScope::Audio => Some(audio_positions(encoded.samples)),
    };
    let mut frames = vec![encoded.output.hidden.clone()];
    for (_, _, policy) in policies {
        frames.push(prune_frames(&encoded.output, policy, audio_frames)?);
    }
    let mut transcripts = model
        .transcribe_batch(&frames, opts.max_new_tokens)?
        .into_iter();
    let full = transcripts.next().ok_or(Error::Invariant(
        "a batch of transcriptions came back empty",
    ))?;
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
    report.audio_s += encoded.seconds();
    Ok(record)
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
            let kept = select_tokens(std::slice::from_ref(&speech), policy, ONE_WINDOW)?.rows;
            Ok(candle_core::Tensor::cat(
                &[&kept, &encoded.hidden.narrow(0, a, n - a)?],
                0,
            )?)
        }
        _ => Ok(select_tokens(std::slice::from_ref(encoded), policy, ONE_WINDOW)?.rows),
    }
}

/// Whisper clips are one window, where both selection scopes select the same.
const ONE_WINDOW: SelectionScope = SelectionScope::PerWindow;

/// Encoder positions covering `samples` of 16 kHz audio (the conv stem's output length).
fn audio_positions(samples: usize) -> usize {
    auris_audio::conv_output_len(auris_audio::valid_frames(samples)).max(1)
}

/// The strategies' parameters, for the record: `{"<name>": {...}}`.
pub(crate) fn strategy_parameters(strategies: &[Strategy]) -> Value {
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
                json!({ "contextual_share": super::sweep::as_written(*contextual_share) })
            }
            _ => continue,
        };
        map.insert(s.name().to_string(), v);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
