//! The strategy x keep-ratio sweep shared by `auris eval mmau` and `auris eval captions`.
//!
//! Each item's clip is decoded and encoded once (with the encoder's attention scores); every
//! configuration (no pruning, then each strategy at each keep ratio below 1) then runs the rest
//! of the pipeline on it through [`Pipeline::run_encoded`]. Every prediction is appended to a
//! JSON Lines file as soon as it is made, so an interrupted run resumes where it stopped and a
//! finished one can be rescored without the model.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use auris::pipeline::AudioInput;
use auris::{Error, Pipeline, PromptSpec, Request, Task};
use auris_audio::encoder::EncoderOutput;
use auris_llm::GenerateOptions;
use auris_prune::{Policy, Strategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::plot::{line_plot, Series};
use super::{io_error, progress_bar, shard, Skipped};

/// The name of the unpruned configuration.
pub(crate) const BASELINE: &str = "none";

/// One column of the sweep: a strategy at a keep ratio.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The strategy's name (`none` for the baseline).
    pub(crate) strategy: String,
    /// The keep ratio (1 for the baseline).
    pub(crate) keep: f32,
    /// What the pipeline applies.
    pub(crate) policy: Policy,
}

/// No pruning first, then every strategy at every keep ratio below 1 (a keep ratio of 1 is
/// the baseline itself).
pub(crate) fn configs(strategies: &[Strategy], keeps: &[f32]) -> Result<Vec<Config>, Error> {
    let mut out = vec![Config {
        strategy: BASELINE.to_string(),
        keep: 1.0,
        policy: Policy {
            strategy: Strategy::None,
            keep: 1.0,
        },
    }];
    for s in strategies {
        for &keep in keeps.iter().filter(|&&k| k < 1.0) {
            out.push(Config {
                strategy: s.name().to_string(),
                keep,
                policy: Policy::new(*s, keep)?,
            });
        }
    }
    Ok(out)
}

/// How an answer is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Greedy generation, then the task's matcher.
    Generate,
    /// The choice with the highest log-likelihood after the prompt (no parsing).
    ScoreChoices,
}

impl Mode {
    /// The name in the predictions file and the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Generate => "generate",
            Mode::ScoreChoices => "score-choices",
        }
    }
}

/// One line of the predictions file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Prediction {
    /// The item's id.
    pub(crate) id: String,
    /// The strategy's name.
    pub(crate) strategy: String,
    /// The keep ratio.
    pub(crate) keep: f32,
    /// `generate` or `score-choices`.
    pub(crate) mode: String,
    /// The generated text, or the chosen choice's text.
    pub(crate) prediction: String,
    /// Whether the prediction is right (multiple-choice tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) correct: Option<bool>,
    /// Audio tokens before pruning.
    pub(crate) n_audio_tokens: usize,
    /// Audio tokens the language model saw.
    pub(crate) n_kept: usize,
    /// Prompt prefill, milliseconds.
    pub(crate) prefill_ms: f64,
    /// Time to the first token: decoding, log-mel, encoder, pruning and projection, prefill
    /// (the first token comes from the prefill's logits), milliseconds.
    #[serde(default)]
    pub(crate) ttft_ms: f64,
    /// What one request takes end to end: decoding, log-mel and encoder (shared by the
    /// configurations of an item, counted in full for each) plus pruning, prefill and
    /// generation, milliseconds.
    pub(crate) end_to_end_ms: f64,
    /// Fingerprint of the settings that made it ([`fingerprint`]): a file is only resumed
    /// with the same model, prompt and generation settings.
    #[serde(default)]
    pub(crate) settings: String,
}

/// The 64-bit FNV-1a hash of `text`: stable across machines, versions and runs.
pub(crate) fn fnv1a(text: impl AsRef<[u8]>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text.as_ref() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// [`fnv1a`] of `text`, in hex: the predictions file's settings fingerprint.
pub(crate) fn fingerprint(text: impl AsRef<[u8]>) -> String {
    format!("{:016x}", fnv1a(text))
}

/// What identifies a prediction: item id, strategy, keep ratio as written, mode.
pub(crate) type Key = (String, String, String, String);

/// The [`Key`] of a prediction.
pub(crate) fn key(id: &str, strategy: &str, keep: f32, mode: &str) -> Key {
    (
        id.to_string(),
        strategy.to_string(),
        format!("{keep}"),
        mode.to_string(),
    )
}

/// The predictions file: what earlier runs made (read back on open), appended to line by line
/// in `FILE.partial` ([`shard::partial_path`]), which [`PredictionLog::finish`] renames to
/// `FILE` once the run is done.
pub(crate) struct PredictionLog {
    path: Option<PathBuf>,
    partial: PathBuf,
    done: HashMap<Key, Prediction>,
    writer: Option<std::fs::File>,
}

impl PredictionLog {
    /// No file: predictions are kept in memory only.
    pub(crate) fn memory() -> Self {
        Self {
            path: None,
            partial: PathBuf::new(),
            done: HashMap::new(),
            writer: None,
        }
    }

    /// Reads the predictions already made (`FILE.partial` of an interrupted run, else `FILE`)
    /// and opens `FILE.partial` for appending. A last line without its newline is an
    /// interrupted write: it is dropped (and its prediction made again) unless it parses.
    pub(crate) fn open(final_path: &Path) -> Result<Self, Error> {
        let mut done = HashMap::new();
        let mut needs_newline = false;
        let partial = shard::partial_path(final_path);
        if !partial.exists() && final_path.exists() {
            std::fs::copy(final_path, &partial).map_err(|e| io_error(&partial, e))?;
        }
        let path = partial.as_path();
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            for (i, line) in text[..complete].lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let p: Prediction = serde_json::from_str(line)
                    .map_err(|e| super::bad_file(path, format!("line {}: {e}", i + 1)))?;
                done.insert(key(&p.id, &p.strategy, p.keep, &p.mode), p);
            }
            let tail = text[complete..].trim();
            if !tail.is_empty() {
                match serde_json::from_str::<Prediction>(tail) {
                    Ok(p) => {
                        done.insert(key(&p.id, &p.strategy, p.keep, &p.mode), p);
                        needs_newline = true;
                    }
                    Err(_) => {
                        eprintln!(
                            "auris: {}: dropping an incomplete last line (an interrupted write)",
                            final_path.display()
                        );
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(|e| io_error(path, e))?;
                        file.set_len(complete as u64)
                            .map_err(|e| io_error(path, e))?;
                    }
                }
            }
        }
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        if needs_newline {
            writeln!(writer).map_err(|e| io_error(path, e))?;
        }
        Ok(Self {
            path: Some(final_path.to_path_buf()),
            partial,
            done,
            writer: Some(writer),
        })
    }

    /// The run is done: `FILE.partial` is flushed to disk and renamed to `FILE`.
    pub(crate) fn finish(self) -> Result<(), Error> {
        let (Some(writer), Some(path)) = (self.writer, self.path) else {
            return Ok(());
        };
        writer.sync_all().map_err(|e| io_error(&self.partial, e))?;
        drop(writer);
        std::fs::rename(&self.partial, &path).map_err(|e| io_error(&path, e))
    }

    /// Predictions read back from earlier runs (before this one added any).
    pub(crate) fn len(&self) -> usize {
        self.done.len()
    }

    /// Refuses a file made with other settings: mixing them would score two different runs
    /// as one.
    fn check_settings(&self, settings: &str) -> Result<(), Error> {
        match self.done.values().find(|p| p.settings != settings) {
            Some(p) => Err(Error::Usage(format!(
                "{} holds predictions made with other settings (model, prompt, generation or \
                 pruning parameters; first: item {}, {} at keep {}); use a new --predictions file",
                self.path.as_deref().unwrap_or(Path::new("")).display(),
                p.id,
                p.strategy,
                p.keep
            ))),
            None => Ok(()),
        }
    }

    fn get(&self, id: &str, config: &Config, mode: Mode) -> Option<&Prediction> {
        self.done
            .get(&key(id, &config.strategy, config.keep, mode.name()))
    }

    fn record(&mut self, p: Prediction) -> Result<(), Error> {
        if let Some(w) = self.writer.as_mut() {
            let path = &self.partial;
            let line =
                serde_json::to_string(&p).map_err(|e| super::bad_file(path, e.to_string()))?;
            writeln!(w, "{line}")
                .and_then(|()| w.flush())
                .map_err(|e| io_error(path, e))?;
        }
        self.done
            .insert(key(&p.id, &p.strategy, p.keep, &p.mode), p);
        Ok(())
    }
}

/// One item of a sweep, in the pipeline's terms.
#[derive(Debug, Clone)]
pub(crate) struct SweepItem {
    /// The id the predictions file keys on.
    pub(crate) id: String,
    /// The clip.
    pub(crate) audio: PathBuf,
    /// The prompt.
    pub(crate) prompt: PromptSpec,
    /// The answer choices ([`Mode::ScoreChoices`] ranks them).
    pub(crate) choices: Vec<String>,
}

/// Items asking the same instruction about each `(id, audio)`.
pub(crate) fn instruction_items(
    clips: impl IntoIterator<Item = (String, PathBuf)>,
    instruction: &str,
) -> Vec<SweepItem> {
    clips
        .into_iter()
        .map(|(id, audio)| SweepItem {
            id,
            audio,
            prompt: PromptSpec::Instruction {
                text: instruction.to_string(),
                system: None,
            },
            choices: Vec::new(),
        })
        .collect()
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct SweepOptions {
    /// The configurations, baseline first.
    pub(crate) configs: Vec<Config>,
    /// How answers are obtained.
    pub(crate) mode: Mode,
    /// Generation settings (greedy).
    pub(crate) generate: GenerateOptions,
    /// Show the progress bar.
    pub(crate) progress: bool,
    /// The settings fingerprint every prediction carries.
    pub(crate) settings: String,
}

/// What a sweep produced: a prediction for every (scored item, configuration).
#[derive(Debug, Clone)]
pub(crate) struct SweepRun {
    /// Predictions of the items that were not skipped, made now or read back.
    pub(crate) predictions: Vec<Prediction>,
    /// Items left out.
    pub(crate) skipped: Vec<Skipped>,
    /// Predictions read back from the file instead of made.
    pub(crate) resumed: usize,
    /// Wall-clock seconds.
    pub(crate) runtime_s: f64,
}

/// Judges a prediction of an item (`None` for tasks scored at corpus level).
pub(crate) type Judge<'a> = &'a dyn Fn(&SweepItem, &str) -> Option<bool>;

/// Runs every configuration on every item, skipping what `log` already holds.
pub(crate) fn run(
    pipeline: &Pipeline,
    items: &[SweepItem],
    opts: &SweepOptions,
    log: &mut PredictionLog,
    judge: Judge<'_>,
) -> anyhow::Result<SweepRun> {
    let start = Instant::now();
    log.check_settings(&opts.settings)?;
    let bar = progress_bar(items.len(), opts.progress, "items");
    let mut out = SweepRun {
        predictions: Vec::new(),
        skipped: Vec::new(),
        resumed: 0,
        runtime_s: 0.0,
    };
    for item in items {
        let pending: Vec<&Config> = opts
            .configs
            .iter()
            .filter(|c| log.get(&item.id, c, opts.mode).is_none())
            .collect();
        out.resumed += opts.configs.len() - pending.len();
        if !pending.is_empty() {
            bar.set_message(item.id.clone());
            let encoded = match encode(pipeline, &item.audio) {
                Ok(e) => e,
                Err(reason) => {
                    bar.suspend(|| {
                        if opts.progress {
                            eprintln!("auris: skipping {}: {reason}", item.id);
                        }
                    });
                    out.skipped.push(Skipped {
                        id: item.id.clone(),
                        audio: item.audio.clone(),
                        reason,
                    });
                    bar.inc(1);
                    continue;
                }
            };
            for config in pending {
                let p =
                    predict(pipeline, item, config, opts, &encoded, judge).with_context(|| {
                        format!(
                            "item {}: {} at keep {}",
                            item.id, config.strategy, config.keep
                        )
                    })?;
                log.record(p)?;
            }
        }
        for config in &opts.configs {
            if let Some(p) = log.get(&item.id, config, opts.mode) {
                out.predictions.push(p.clone());
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.runtime_s = start.elapsed().as_secs_f64();
    Ok(out)
}

/// A clip decoded and encoded once for all configurations.
struct Encoded {
    audio: AudioInput,
    windows: Vec<EncoderOutput>,
    encoder_ms: f64,
}

/// Decodes and encodes a clip; an error is the reason to skip the item.
fn encode(pipeline: &Pipeline, path: &Path) -> Result<Encoded, String> {
    let audio = pipeline.load_audio(path).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let windows = pipeline.encode(&audio, true).map_err(|e| e.to_string())?;
    Ok(Encoded {
        audio,
        windows,
        encoder_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

fn predict(
    pipeline: &Pipeline,
    item: &SweepItem,
    config: &Config,
    opts: &SweepOptions,
    encoded: &Encoded,
    judge: Judge<'_>,
) -> Result<Prediction, Error> {
    let request = Request {
        audio: item.audio.clone(),
        prompt: item.prompt.clone(),
        policy: config.policy,
        generate: opts.generate.clone(),
        task: if opts.mode == Mode::ScoreChoices {
            Task::ScoreChoices(item.choices.clone())
        } else {
            Task::Generate
        },
        // An item too long for the model's context is an error, as in `auris ask`.
        context: Default::default(),
    };
    let start = Instant::now();
    let r = pipeline.run_encoded(
        &request,
        &encoded.audio,
        &encoded.windows,
        encoded.encoder_ms,
        &mut |_| true,
    )?;
    let shared = encoded.audio.decode_ms + encoded.audio.mel_ms + encoded.encoder_ms;
    let end_to_end_ms = shared + start.elapsed().as_secs_f64() * 1e3;
    let prediction = match &r.choice_logprobs {
        Some(lp) => lp
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .and_then(|(i, _)| item.choices.get(i).cloned())
            .unwrap_or_default(),
        None => r.text.trim().to_string(),
    };
    Ok(Prediction {
        correct: judge(item, &prediction),
        id: item.id.clone(),
        strategy: config.strategy.clone(),
        keep: config.keep,
        mode: opts.mode.name().to_string(),
        prediction,
        n_audio_tokens: r.n_audio_tokens,
        n_kept: r.n_kept,
        prefill_ms: round(r.timings.prefill, 3),
        ttft_ms: round(shared + r.timings.projector + r.timings.prefill, 3),
        end_to_end_ms: round(end_to_end_ms, 3),
        settings: opts.settings.clone(),
    })
}

/// The predictions of each configuration, in the configurations' order.
pub(crate) fn by_config<'a>(
    configs: &'a [Config],
    predictions: &'a [Prediction],
) -> Vec<(&'a Config, Vec<&'a Prediction>)> {
    configs
        .iter()
        .map(|c| {
            let ps = predictions
                .iter()
                .filter(|p| {
                    p.strategy == c.strategy && format!("{}", p.keep) == format!("{}", c.keep)
                })
                .collect();
            (c, ps)
        })
        .collect()
}

/// One row of a report: a configuration's scores and timings.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// The strategy (`none`: no pruning).
    pub(crate) strategy: String,
    /// The keep ratio, as written (0.1, not the f32's 0.10000000149).
    pub(crate) keep: f64,
    /// Items scored.
    pub(crate) items: usize,
    /// Scores by metric name.
    pub(crate) metrics: BTreeMap<String, f64>,
    /// Scores per group (e.g. `task` -> `sound` -> accuracy).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) groups: BTreeMap<String, BTreeMap<String, f64>>,
    /// Mean audio tokens the language model saw.
    pub(crate) kept_tokens: f64,
    /// Mean prompt prefill, milliseconds.
    pub(crate) prefill_ms: f64,
    /// Mean time to the first token, milliseconds.
    pub(crate) ttft_ms: f64,
    /// Mean end-to-end time per request, milliseconds.
    pub(crate) end_to_end_ms: f64,
}

impl Row {
    /// A row with the configuration's timings; the task fills in the scores.
    pub(crate) fn new(config: &Config, predictions: &[&Prediction]) -> Self {
        let n = predictions.len().max(1) as f64;
        let mean = |f: fn(&Prediction) -> f64| predictions.iter().map(|p| f(p)).sum::<f64>() / n;
        Self {
            strategy: config.strategy.clone(),
            keep: as_written(config.keep),
            items: predictions.len(),
            metrics: BTreeMap::new(),
            groups: BTreeMap::new(),
            kept_tokens: round(mean(|p| p.n_kept as f64), 1),
            prefill_ms: round(mean(|p| p.prefill_ms), 1),
            ttft_ms: round(mean(|p| p.ttft_ms), 1),
            end_to_end_ms: round(mean(|p| p.end_to_end_ms), 1),
        }
    }
}

/// An f32 as the f64 of its shortest decimal form (what the user wrote).
pub(crate) fn as_written(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(f64::from(x))
}

/// `x` rounded to `digits` decimals (for stable, readable JSON).
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// A sweep's report: the JSON written by `--out`, the markdown table, the plot.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SweepReport {
    /// `mmau` or `captions`.
    pub(crate) task: String,
    /// `generate` or `score-choices`.
    pub(crate) mode: String,
    /// The model, as given.
    pub(crate) model: String,
    /// The headline metric (plotted).
    pub(crate) metric: String,
    /// Items in the manifest (after `--limit`).
    pub(crate) items: usize,
    /// Items scored (not skipped).
    pub(crate) scored: usize,
    /// One row per configuration, baseline first.
    pub(crate) results: Vec<Row>,
    /// Items left out, with the reason.
    pub(crate) skipped: Vec<Skipped>,
    /// Predictions read back from the predictions file instead of made.
    pub(crate) resumed: usize,
    /// The run's settings (prompt, strategies' parameters, generation).
    pub(crate) parameters: Value,
    /// Wall-clock seconds of the sweep.
    pub(crate) runtime_s: f64,
    /// The groups shown in the markdown table (all are in the JSON).
    #[serde(skip)]
    pub(crate) table_groups: Vec<String>,
    /// Whether the reports show what was measured: the timings and the count of resumed
    /// predictions, which differ between two runs of the same sweep. Without them, a single
    /// run's report and the merge of its shards' are the same bytes.
    #[serde(skip)]
    pub(crate) timings: bool,
}

/// The keys of [`SweepReport::to_json`] that hold measurements, left out without timings.
const MEASURED: [&str; 2] = ["resumed", "runtime_s"];
/// The keys of a [`Row`] that hold measurements.
const MEASURED_ROW: [&str; 3] = ["prefill_ms", "ttft_ms", "end_to_end_ms"];

impl SweepReport {
    /// The JSON of `--out`.
    pub(crate) fn to_json(&self) -> Value {
        let mut json = serde_json::to_value(self).unwrap_or(Value::Null);
        if !self.timings {
            if let Value::Object(m) = &mut json {
                for k in MEASURED {
                    m.remove(k);
                }
            }
            if let Some(rows) = json.get_mut("results").and_then(Value::as_array_mut) {
                for row in rows.iter_mut().filter_map(Value::as_object_mut) {
                    for k in MEASURED_ROW {
                        row.remove(k);
                    }
                }
            }
        }
        json
    }

    /// Strategies by keep ratio: every metric, the per-group scores, kept tokens and timings.
    pub(crate) fn markdown(&self) -> String {
        let metrics: Vec<&String> = self
            .results
            .first()
            .map(|r| r.metrics.keys().collect())
            .unwrap_or_default();
        let groups: Vec<(&String, &String)> = self
            .results
            .first()
            .map(|r| {
                self.table_groups
                    .iter()
                    .filter_map(|g| r.groups.get_key_value(g))
                    .flat_map(|(g, m)| m.keys().map(move |k| (g, k)))
                    .collect()
            })
            .unwrap_or_default();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({}) on {} of {} items ({} skipped), {}.\n",
            self.task,
            self.mode,
            self.scored,
            self.items,
            self.skipped.len(),
            self.model
        );
        let _ = write!(s, "| strategy | keep |");
        for m in &metrics {
            let _ = write!(s, " {m} |");
        }
        for (_, k) in &groups {
            let _ = write!(s, " {k} |");
        }
        let _ = write!(s, " audio tokens |");
        if self.timings {
            let _ = write!(s, " prefill ms | TTFT ms | end-to-end ms |");
        }
        let columns = metrics.len() + groups.len() + if self.timings { 4 } else { 1 };
        let _ = writeln!(s, "\n|---|---|{}", "---|".repeat(columns));
        for r in &self.results {
            let _ = write!(s, "| {} | {} |", r.strategy, r.keep);
            for m in &metrics {
                let _ = write!(
                    s,
                    " {:.3} |",
                    r.metrics.get(*m).copied().unwrap_or(f64::NAN)
                );
            }
            for (g, k) in &groups {
                let v = r.groups.get(*g).and_then(|m| m.get(*k)).copied();
                let _ = write!(s, " {:.3} |", v.unwrap_or(f64::NAN));
            }
            let _ = write!(s, " {:.1} |", r.kept_tokens);
            if self.timings {
                let _ = write!(
                    s,
                    " {:.1} | {:.1} | {:.1} |",
                    r.prefill_ms, r.ttft_ms, r.end_to_end_ms
                );
            }
            s.push('\n');
        }
        s
    }

    /// The headline metric against keep ratio, one line per strategy, each starting from the
    /// unpruned score at 1.
    pub(crate) fn svg(&self) -> anyhow::Result<String> {
        let score = |r: &Row| r.metrics.get(&self.metric).copied().unwrap_or(f64::NAN);
        let base = self.results.iter().find(|r| r.strategy == BASELINE);
        let mut series: Vec<Series> = Vec::new();
        for r in self.results.iter().filter(|r| r.strategy != BASELINE) {
            let i = match series.iter().position(|s| s.name == r.strategy) {
                Some(i) => i,
                None => {
                    series.push(Series {
                        name: r.strategy.clone(),
                        points: base.map(|b| vec![(1.0, score(b))]).unwrap_or_default(),
                    });
                    series.len() - 1
                }
            };
            series[i].points.push((r.keep, score(r)));
        }
        line_plot(
            &format!(
                "{} {} vs keep ratio ({} items)",
                self.task, self.metric, self.scored
            ),
            &self.metric,
            &series,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_ratios_are_reported_as_written() {
        assert_eq!(as_written(0.1), 0.1);
        let configs = configs(&[Strategy::TopK], &[1.0, 0.5, 0.1]).unwrap();
        let keeps: Vec<f64> = configs.iter().map(|c| Row::new(c, &[]).keep).collect();
        assert_eq!(keeps, [1.0, 0.5, 0.1], "keep 1 is the baseline only");
        assert_eq!(configs[0].strategy, BASELINE);
    }

    #[test]
    fn fingerprint_is_fnv1a() {
        // FNV-1a 64 of "a", the published test vector.
        assert_eq!(fingerprint("a"), "af63dc4c8601ec8c");
        assert_ne!(fingerprint("{\"seed\":0}"), fingerprint("{\"seed\":1}"));
    }
}
