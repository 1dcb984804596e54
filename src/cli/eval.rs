//! `auris eval ...`: asr-pruning (Whisper WER), mmau (multiple-choice accuracy) and captions
//! (CIDEr-D, BLEU-4, ROUGE-L), each swept over pruning strategies and keep ratios.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use auris::checkpoint::ModelSource;
use auris_prune::{Remainder, Strategy};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::args::{
    AsrPruningArgs, ComputeArg, DtypeArg, FormatArg, ModelArgs, RemainderArg, ScopeArg, StrategyArg,
};
use super::{device_name, load, parse_device, print_line, set_threads, usage};
use crate::eval::asr::ManifestEntry;
use crate::eval::shard::{self, RunRecord, Shard};
use crate::eval::sweep::{self, Config, Mode, Prediction, PredictionLog, Row, SweepItem};
use crate::eval::{captions, mmau, transcribe};

/// What `eval mmau` and `eval captions` share: the sweep, generation and outputs.
#[derive(Debug, Args)]
pub(super) struct SweepArgs {
    /// Strategies compared with no pruning (the paper's three by default).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "segmentwise,topk,visionzip",
        help_heading = "Sweep"
    )]
    pub(super) strategies: Vec<StrategyArg>,
    /// Keep ratios in (0, 1]; 1 is the unpruned baseline, which is always run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.5,0.25,0.1",
        help_heading = "Sweep"
    )]
    pub(super) keeps: Vec<f32>,
    /// Number of time segments for segmentwise.
    #[arg(long, default_value_t = auris_prune::DEFAULT_SEGMENTS, help_heading = "Sweep")]
    pub(super) segments: usize,
    /// What segmentwise does with the budget left after the per-segment quotas. drop keeps
    /// S * floor(K/S) tokens as the paper does, and fails on a clip whose budget K is below
    /// the segment count S (about 1.6 s of audio at keep 0.25 with S = 10).
    #[arg(long, value_enum, default_value_t = RemainderArg::Spread, help_heading = "Sweep")]
    pub(super) segment_remainder: RemainderArg,
    /// Seed of the random strategy.
    #[arg(long, default_value_t = 0, help_heading = "Sweep")]
    pub(super) seed: u64,
    /// Only the first N items of the manifest.
    #[arg(long, value_name = "N", help_heading = "Sweep")]
    pub(super) limit: Option<usize>,
    /// Run only the K-th of N slices of the manifest (K from 1 to N), e.g. one per machine or
    /// per job of a Kubernetes Indexed Job or Slurm array. Item `id` belongs to slice
    /// FNV-1a-64(id) mod N + 1: the slices do not depend on the order of the manifest and
    /// cover it exactly once. Give each slice its own --predictions file, then merge them
    /// with `auris eval report`.
    #[arg(long, value_name = "K/N", help_heading = "Sweep")]
    pub(super) shard: Option<Shard>,
    /// Cap on generated tokens per answer (greedy decoding; the model's repetition penalty
    /// from generation_config.json applies, as in transformers' generate).
    #[arg(long, default_value_t = 64, help_heading = "Sweep")]
    pub(super) max_new_tokens: usize,
    /// Append every prediction to this JSON Lines file (id, strategy, keep, mode, prediction,
    /// correct, timings); a rerun skips what it holds, so a run resumes and can be rescored.
    /// The run writes FILE.partial and renames it to FILE when it is done, after writing its
    /// run record FILE.run.json (what `auris eval report` merges).
    #[arg(long, value_name = "FILE.jsonl", help_heading = "Output")]
    pub(super) predictions: Option<PathBuf>,
    /// Leave what is measured out of the reports (timings, wall-clock seconds, resumed
    /// predictions): two runs of the same sweep, or a run and the merge of its shards, then
    /// write the same bytes.
    #[arg(long, help_heading = "Output")]
    pub(super) no_timings: bool,
    #[command(flatten)]
    pub(super) report: ReportArgs,
}

/// The outputs every `auris eval` command writes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub(super) struct ReportArgs {
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub(super) out: Option<PathBuf>,
    /// Write the markdown table to a file too.
    #[arg(long, value_name = "FILE.md")]
    pub(super) markdown: Option<PathBuf>,
    /// Write an SVG plot of the score against keep ratio, one line per strategy.
    #[arg(long, value_name = "FILE.svg")]
    pub(super) plot: Option<PathBuf>,
    /// Print nothing on stderr but errors (no progress bar).
    #[arg(long)]
    pub(super) quiet: bool,
}

/// `auris eval report`.
#[derive(Debug, Args)]
pub(super) struct MergeArgs {
    /// The predictions files to merge: the shards of one `auris eval mmau`, `captions` or
    /// `transcribe` command, each with the run record (FILE.run.json) its run wrote beside it.
    #[arg(long, value_name = "FILE.jsonl", num_args = 1.., required = true)]
    pub(super) predictions: Vec<PathBuf>,
    /// The manifest, where it is no longer at the path the runs recorded (it must have the
    /// same content).
    #[arg(long, value_name = "FILE")]
    pub(super) manifest: Option<PathBuf>,
    /// Leave what is measured out of the reports (timings, wall-clock seconds, resumed
    /// predictions), as the sweep's --no-timings.
    #[arg(long, help_heading = "Output")]
    pub(super) no_timings: bool,
    #[command(flatten)]
    pub(super) report: ReportArgs,
}

/// `auris eval mmau`.
#[derive(Debug, Args)]
pub(super) struct MmauArgs {
    /// MMAU's JSON manifest (e.g. mmau-test-mini.json): a list of {id, audio_id, question,
    /// choices, answer, task, category, sub-category, difficulty}.
    #[arg(long, value_name = "FILE.json")]
    pub(super) manifest: PathBuf,
    /// The folder the items' audio_id paths are relative to [default: the manifest's folder].
    #[arg(long, value_name = "DIR")]
    pub(super) audio_dir: Option<PathBuf>,
    /// The instruction, with {question} and {choices} (one choice per line) filled in
    /// [default: "{question} Select one option from the provided choices.\n{choices}", the
    /// MMAU authors' prompt].
    #[arg(long, value_name = "TEMPLATE")]
    pub(super) prompt_template: Option<String>,
    /// Rank the choices by log-likelihood instead of generating and matching an answer
    /// (reported as its own mode).
    #[arg(long)]
    pub(super) score_choices: bool,
    #[command(flatten)]
    pub(super) sweep: SweepArgs,
    #[command(flatten)]
    pub(super) model: ModelArgs,
}

/// `auris eval captions`.
#[derive(Debug, Args)]
pub(super) struct CaptionsArgs {
    /// The references: Clotho's CSV (file_name, caption_1 .. caption_5) or JSON Lines with one
    /// {"audio": PATH, "captions": [...]} per line (optional "id").
    #[arg(long, value_name = "FILE.csv|FILE.jsonl")]
    pub(super) manifest: PathBuf,
    /// The folder the audio paths are relative to [default: the manifest's folder].
    #[arg(long, value_name = "DIR")]
    pub(super) audio_dir: Option<PathBuf>,
    /// The captioning instruction [default: the model's, as `auris caption`: "Describe the
    /// audio in one sentence." on chat models, "Generate the caption in English:" on base
    /// models].
    #[arg(long)]
    pub(super) prompt: Option<String>,
    #[command(flatten)]
    pub(super) sweep: SweepArgs,
    #[command(flatten)]
    pub(super) model: ModelArgs,
}

/// `auris eval transcribe`.
#[derive(Debug, Args)]
pub(super) struct TranscribeArgs {
    /// The clips: JSON Lines, one {"audio": PATH, "text": REFERENCE, "source": NAME} per line
    /// (relative paths are relative to the manifest; the manifest of `eval asr-pruning`).
    #[arg(long, value_name = "FILE.jsonl")]
    pub(super) manifest: PathBuf,
    /// The instruction after the audio.
    #[arg(long, default_value = transcribe::DEFAULT_INSTRUCTION)]
    pub(super) prompt: String,
    #[command(flatten)]
    pub(super) sweep: SweepArgs,
    #[command(flatten)]
    pub(super) model: ModelArgs,
}

/// The strategies named on the command line; `none` is the baseline and always measured.
fn strategies(
    names: &[StrategyArg],
    segments: usize,
    remainder: Remainder,
    seed: u64,
    keeps: &[f32],
) -> Result<Vec<Strategy>> {
    for &keep in keeps {
        auris_prune::validate_keep(keep).map_err(|e| usage(format!("--keeps: {e}")))?;
    }
    names
        .iter()
        .map(|&s| {
            if s == StrategyArg::None {
                return Err(usage(
                    "--strategies: none is always measured; list pruning strategies only",
                ));
            }
            s.strategy(segments, remainder, seed)
        })
        .collect()
}

/// The manifest's folder, where `--audio-dir` is not given.
fn audio_dir(given: Option<PathBuf>, manifest: &Path) -> PathBuf {
    given.unwrap_or_else(|| manifest.parent().unwrap_or(Path::new(".")).to_path_buf())
}

/// A task's manifest: its items, how their predictions are scored and how the report names
/// the task.
enum Manifest {
    Mmau(Vec<mmau::MmauItem>),
    Captions(Vec<captions::CaptionItem>),
    Transcribe(Vec<ManifestEntry>),
}

impl Manifest {
    /// Reads the manifest of the task named `task` (as in the report), its first `limit` items.
    fn read(task: &str, path: &Path, limit: Option<usize>) -> Result<Self> {
        let mut m = match task {
            "mmau" => Self::Mmau(mmau::read_manifest(path)?),
            "captions" => Self::Captions(captions::read_manifest(path)?),
            "transcribe" => Self::Transcribe(transcribe::read_manifest(path)?),
            other => anyhow::bail!("{}: unknown task {other}", path.display()),
        };
        if let Some(n) = limit {
            match &mut m {
                Self::Mmau(v) => v.truncate(n),
                Self::Captions(v) => v.truncate(n),
                Self::Transcribe(v) => v.truncate(n),
            }
        }
        Ok(m)
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Mmau(_) => "mmau",
            Self::Captions(_) => "captions",
            Self::Transcribe(_) => "transcribe",
        }
    }

    /// The headline metric (plotted).
    fn metric(&self) -> &'static str {
        match self {
            Self::Mmau(_) => "accuracy",
            Self::Captions(_) => "cider_d",
            Self::Transcribe(_) => "wer",
        }
    }

    /// The groups of the markdown table.
    fn table_groups(&self) -> &'static [&'static str] {
        match self {
            Self::Mmau(_) => &["task", "difficulty"],
            Self::Captions(_) => &[],
            Self::Transcribe(_) => &["source"],
        }
    }

    /// The items' ids, in the manifest's order.
    fn ids(&self) -> Vec<String> {
        match self {
            Self::Mmau(v) => v.iter().map(|i| i.id.clone()).collect(),
            Self::Captions(v) => v.iter().map(|i| i.id.clone()).collect(),
            Self::Transcribe(v) => v.iter().map(transcribe::item_id).collect(),
        }
    }

    /// The report's rows: the task's scores per configuration.
    fn rows(&self, configs: &[Config], predictions: &[Prediction]) -> Vec<Row> {
        match self {
            Self::Mmau(v) => mmau::rows(configs, v, predictions),
            Self::Captions(v) => captions::rows(configs, v, predictions),
            Self::Transcribe(v) => transcribe::rows(configs, v, predictions),
        }
    }
}

/// A task's items and the prompt settings for the report, given the loaded model (the default
/// captioning instruction depends on whether it is a chat model).
type Build<'a> = &'a dyn Fn(&auris::Pipeline) -> (Vec<SweepItem>, Value);

/// One task of the sweep, ready to run.
struct Task<'a> {
    manifest: &'a Manifest,
    /// Where the manifest was read from.
    path: &'a Path,
    mode: Mode,
    build: Build<'a>,
    judge: sweep::Judge<'a>,
}

/// Loads the model, runs the sweep (the `--shard` slice of it), records the run beside its
/// predictions file, writes the reports and prints the table.
fn run_sweep(model: &ModelArgs, args: &SweepArgs, task: Task<'_>) -> Result<ExitCode> {
    let remainder = args.segment_remainder.remainder();
    let strategies = strategies(
        &args.strategies,
        args.segments,
        remainder,
        args.seed,
        &args.keeps,
    )?;
    let configs = sweep::configs(&strategies, &args.keeps)?;
    if args.max_new_tokens == 0 {
        return Err(usage("--max-new-tokens must be at least 1"));
    }
    let mut log = match &args.predictions {
        Some(path) => PredictionLog::open(path)?,
        None => PredictionLog::memory(),
    };
    let session = load(model, FormatArg::Auto, args.report.quiet)?;
    let p = &session.pipeline;
    let mut generate = p.default_generate_options(args.max_new_tokens);
    generate.sampling.temperature = None;
    let (mut items, mut parameters) = (task.build)(p);
    if let Some(shard) = args.shard {
        items.retain(|i| shard.holds(&i.id));
    }
    if !args.report.quiet {
        eprintln!(
            "auris: {} items x {} configurations ({} predictions already in the file)",
            items.len(),
            configs.len(),
            log.len()
        );
    }
    let opts = sweep::SweepOptions {
        configs: configs.clone(),
        mode: task.mode,
        generate,
        progress: !args.report.quiet,
        settings: settings_fingerprint(model, args, &parameters),
    };
    let run = sweep::run(p, &items, &opts, &mut log, task.judge)?;
    parameters["strategies"] = strategy_parameters(&strategies);
    parameters["max_new_tokens"] = json!(args.max_new_tokens);
    parameters["repetition_penalty"] = json!(opts.generate.sampling.repetition_penalty);
    parameters["settings_fingerprint"] = json!(opts.settings);
    if let Some(path) = &args.predictions {
        let record = run_record(model, args, &task, &run.skipped, &parameters)?;
        let text = serde_json::to_string_pretty(&record)?;
        shard::write_atomic(&shard::record_path(path), &format!("{text}\n"))?;
    }
    log.finish()?;
    let summary = RunSummary {
        model: model.model.clone(),
        mode: task.mode.name().to_string(),
        items: items.len(),
        resumed: run.resumed,
        runtime_s: run.runtime_s,
        timings: !args.no_timings,
    };
    let report = sweep_report(
        task.manifest,
        summary,
        &configs,
        &run.predictions,
        run.skipped,
        parameters,
    );
    // A slice may hold only items that cannot be evaluated: the merge judges the whole sweep.
    finish_report(&report, &args.report, args.shard.is_none())
}

/// What a run (or a merge) contributes to its report besides the predictions.
struct RunSummary {
    model: String,
    mode: String,
    items: usize,
    resumed: usize,
    runtime_s: f64,
    timings: bool,
}

fn sweep_report(
    manifest: &Manifest,
    run: RunSummary,
    configs: &[Config],
    predictions: &[Prediction],
    skipped: Vec<crate::eval::Skipped>,
    parameters: Value,
) -> sweep::SweepReport {
    sweep::SweepReport {
        task: manifest.name().to_string(),
        mode: run.mode,
        model: run.model,
        metric: manifest.metric().to_string(),
        items: run.items,
        scored: run.items - skipped.len(),
        results: manifest.rows(configs, predictions),
        skipped,
        resumed: run.resumed,
        parameters,
        runtime_s: sweep::round(run.runtime_s, 1),
        table_groups: manifest
            .table_groups()
            .iter()
            .map(|g| g.to_string())
            .collect(),
        timings: run.timings,
    }
}

/// Writes the reports, prints the table and, when `need_items`, fails on a sweep that could
/// evaluate nothing.
fn finish_report(
    report: &sweep::SweepReport,
    args: &ReportArgs,
    need_items: bool,
) -> Result<ExitCode> {
    write_reports(&report.to_json(), &report.markdown(), &report.svg()?, args)?;
    if !args.quiet {
        eprintln!(
            "auris: {} items scored in {:.0} s ({} skipped, {} predictions resumed)",
            report.scored,
            report.runtime_s,
            report.skipped.len(),
            report.resumed
        );
    }
    if need_items && report.scored == 0 {
        return Err(anyhow::anyhow!(
            "no item could be evaluated ({} skipped)",
            report.skipped.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The command-line name of a value of a `ValueEnum`.
fn value_name(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// The record a finished run leaves beside its predictions file for `auris eval report`.
fn run_record(
    model: &ModelArgs,
    args: &SweepArgs,
    task: &Task<'_>,
    skipped: &[crate::eval::Skipped],
    parameters: &Value,
) -> Result<RunRecord> {
    let bytes =
        std::fs::read(task.path).with_context(|| format!("cannot read {}", task.path.display()))?;
    Ok(RunRecord {
        task: task.manifest.name().to_string(),
        mode: task.mode.name().to_string(),
        model: model.model.clone(),
        manifest: std::path::absolute(task.path)?,
        manifest_fingerprint: sweep::fingerprint(&bytes),
        limit: args.limit,
        strategies: args.strategies.iter().map(value_name).collect(),
        keeps: args.keeps.clone(),
        segments: args.segments,
        segment_remainder: value_name(&args.segment_remainder),
        seed: args.seed,
        shard: args.shard,
        skipped: skipped.to_vec(),
        parameters: parameters.clone(),
    })
}

/// What changes a prediction: a predictions file is resumed only under the same values.
fn settings_fingerprint(model: &ModelArgs, args: &SweepArgs, parameters: &Value) -> String {
    let settings = json!({
        "model": model.model,
        "revision": model.revision,
        "dtype": format!("{:?}", model.dtype),
        "quant": model.quant.map(|q| q.format().to_string()),
        "compute": format!("{:?}", model.compute),
        "prompt": parameters.get("prompt_template").or_else(|| parameters.get("prompt")),
        "max_new_tokens": args.max_new_tokens,
        "segments": args.segments,
        "segment_remainder": format!("{:?}", args.segment_remainder),
        "seed": args.seed,
    });
    sweep::fingerprint(settings.to_string())
}

/// Runs `auris eval mmau`.
pub(super) fn mmau(args: MmauArgs) -> Result<ExitCode> {
    let template = args
        .prompt_template
        .unwrap_or_else(|| mmau::DEFAULT_TEMPLATE.to_string());
    if !template.contains("{question}") || !template.contains("{choices}") {
        return Err(usage(
            "--prompt-template must contain {question} and {choices}",
        ));
    }
    let manifest = Manifest::read("mmau", &args.manifest, args.sweep.limit)?;
    let Manifest::Mmau(items) = &manifest else {
        unreachable!("an mmau manifest was read");
    };
    let dir = audio_dir(args.audio_dir, &args.manifest);
    let by_id: std::collections::HashMap<&str, &mmau::MmauItem> =
        items.iter().map(|i| (i.id.as_str(), i)).collect();
    let judge = move |item: &SweepItem, prediction: &str| {
        by_id
            .get(item.id.as_str())
            .map(|i| mmau::string_match(&i.answer, prediction, &i.choices))
    };
    let task = Task {
        manifest: &manifest,
        path: &args.manifest,
        mode: if args.score_choices {
            Mode::ScoreChoices
        } else {
            Mode::Generate
        },
        build: &|_| {
            (
                mmau::sweep_items(items, &template, &dir),
                json!({ "prompt_template": template, "audio_dir": dir }),
            )
        },
        judge: &judge,
    };
    run_sweep(&args.model, &args.sweep, task)
}

/// Runs `auris eval captions`.
pub(super) fn captions(args: CaptionsArgs) -> Result<ExitCode> {
    let manifest = Manifest::read("captions", &args.manifest, args.sweep.limit)?;
    let Manifest::Captions(items) = &manifest else {
        unreachable!("a captions manifest was read");
    };
    let dir = audio_dir(args.audio_dir, &args.manifest);
    let judge = |_: &SweepItem, _: &str| None;
    let build = |p: &auris::Pipeline| {
        let instruction = args
            .prompt
            .clone()
            .unwrap_or_else(|| p.default_caption_instruction().to_string());
        (
            captions::sweep_items(items, &instruction, &dir),
            json!({
                "prompt": instruction,
                "audio_dir": dir,
                "tokenisation": "lower-case, punctuation removed, white-space split",
            }),
        )
    };
    let task = Task {
        manifest: &manifest,
        path: &args.manifest,
        mode: Mode::Generate,
        build: &build,
        judge: &judge,
    };
    run_sweep(&args.model, &args.sweep, task)
}

/// Runs `auris eval transcribe`.
pub(super) fn transcribe(args: TranscribeArgs) -> Result<ExitCode> {
    let manifest = Manifest::read("transcribe", &args.manifest, args.sweep.limit)?;
    let Manifest::Transcribe(entries) = &manifest else {
        unreachable!("a transcribe manifest was read");
    };
    let judge = |_: &SweepItem, _: &str| None;
    let items = transcribe::sweep_items(entries, &args.prompt);
    let build = |_: &auris::Pipeline| {
        (
            items.clone(),
            json!({
                "prompt": args.prompt,
                "normalisation": "lower case, punctuation removed, digits spelled out (as eval asr-pruning)",
            }),
        )
    };
    let task = Task {
        manifest: &manifest,
        path: &args.manifest,
        mode: Mode::Generate,
        build: &build,
        judge: &judge,
    };
    run_sweep(&args.model, &args.sweep, task)
}

/// Runs `auris eval report`: the report of a sweep from its shards' predictions files.
pub(super) fn report(args: MergeArgs) -> Result<ExitCode> {
    let start = std::time::Instant::now();
    let records = args
        .predictions
        .iter()
        .map(|p| Ok((p.clone(), RunRecord::read(p)?)))
        .collect::<Result<Vec<_>>>()?;
    shard::check_same_sweep(&records)?;
    let Some((_, first)) = records.first() else {
        return Err(usage("--predictions: give the files to merge"));
    };
    let path = args.manifest.as_ref().unwrap_or(&first.manifest);
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if sweep::fingerprint(&bytes) != first.manifest_fingerprint {
        return Err(usage(format!(
            "{} is not the manifest the shards read (its content differs)",
            path.display()
        )));
    }
    let manifest = Manifest::read(&first.task, path, first.limit)?;
    let configs = recorded_configs(first)?;
    let files = args
        .predictions
        .iter()
        .map(|p| Ok((p.clone(), crate::eval::read_json_lines::<Prediction>(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let skipped = records
        .iter()
        .flat_map(|(_, r)| r.skipped.clone())
        .collect();
    let ids = manifest.ids();
    let merged = shard::merge(
        &ids,
        &configs,
        &first.mode,
        first.settings(),
        &files,
        skipped,
    )?;
    let summary = RunSummary {
        model: first.model.clone(),
        mode: first.mode.clone(),
        items: ids.len(),
        resumed: merged.predictions.len(),
        runtime_s: start.elapsed().as_secs_f64(),
        timings: !args.no_timings,
    };
    let report = sweep_report(
        &manifest,
        summary,
        &configs,
        &merged.predictions,
        merged.skipped,
        first.parameters.clone(),
    );
    finish_report(&report, &args.report, true)
}

/// The configurations of a recorded run, rebuilt from its command-line values.
fn recorded_configs(r: &RunRecord) -> Result<Vec<Config>> {
    let names = r
        .strategies
        .iter()
        .map(|n| StrategyArg::from_str(n, false).map_err(|e| anyhow::anyhow!("run record: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let remainder = RemainderArg::from_str(&r.segment_remainder, false)
        .map_err(|e| anyhow::anyhow!("run record: {e}"))?;
    let strategies = strategies(&names, r.segments, remainder.remainder(), r.seed, &r.keeps)?;
    Ok(sweep::configs(&strategies, &r.keeps)?)
}

fn strategy_parameters(strategies: &[Strategy]) -> Value {
    crate::eval::asr::strategy_parameters(strategies)
}

/// Writes the JSON, markdown and SVG reports where asked, then prints the table.
fn write_reports(json: &Value, table: &str, svg: &str, args: &ReportArgs) -> Result<()> {
    let write = |path: &PathBuf, text: &str| {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    if let Some(path) = &args.out {
        write(path, &format!("{json:#}\n"))?;
    }
    if let Some(path) = &args.markdown {
        write(path, table)?;
    }
    if let Some(path) = &args.plot {
        write(path, svg)?;
    }
    print_line(table.trim_end())
}

/// Checks the options, loads the Whisper model, runs the evaluation and writes the reports.
pub(super) fn asr_pruning(args: AsrPruningArgs) -> Result<ExitCode> {
    let AsrPruningArgs {
        manifest,
        strategies: names,
        keeps,
        segments,
        scope,
        seed,
        limit,
        every,
        max_new_tokens,
        details,
        report: outputs,
        model,
    } = args;
    let quiet = outputs.quiet;
    if model.quant.is_some()
        || !matches!(model.dtype, DtypeArg::Auto | DtypeArg::F32)
        || model.compute == ComputeArg::Bf16
    {
        return Err(usage(
            "the Whisper evaluation computes in f32: --dtype, --quant and --compute apply to eval mmau and eval captions",
        ));
    }
    let resolved = strategies(&names, segments, Remainder::Spread, seed, &keeps)?;
    set_threads(model.threads)?;
    let device = parse_device(&model.device)?;
    if every == 0 {
        return Err(usage("--every must be at least 1"));
    }
    let clips: Vec<_> = crate::eval::asr::read_manifest(&manifest)?
        .into_iter()
        .step_by(every)
        .collect();
    let source = ModelSource::parse(&model.model, model.revision.as_deref())?;
    if !quiet {
        eprintln!(
            "auris: loading {} on {}; {} clips",
            source.display(),
            device_name(&device),
            limit.unwrap_or(clips.len()).min(clips.len())
        );
    }
    let transcriber = auris::whisper::load(&source, &device, !quiet)?;
    let opts = crate::eval::asr::AsrEvalOptions {
        scope: match scope {
            ScopeArg::Window => crate::eval::asr::PruneScope::Window,
            ScopeArg::Audio => crate::eval::asr::PruneScope::Audio,
        },
        strategies: resolved,
        keeps,
        limit,
        max_new_tokens: (max_new_tokens > 0).then_some(max_new_tokens),
        details,
        progress: !quiet,
    };
    let report = crate::eval::asr::asr_pruning(&transcriber, &clips, &opts)?;
    if !quiet {
        eprintln!(
            "auris: {} clips in {:.0} s ({} skipped)",
            report.clips,
            report.runtime_s,
            report.skipped.len()
        );
    }
    write_reports(
        &report.to_json(),
        &report.markdown(),
        &report.svg()?,
        &outputs,
    )?;
    Ok(ExitCode::SUCCESS)
}
