//! `auris eval ...`: asr-pruning (Whisper WER), mmau (multiple-choice accuracy) and captions
//! (CIDEr-D, BLEU-4, ROUGE-L), each swept over pruning strategies and keep ratios.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use auris::checkpoint::ModelSource;
use auris_prune::{Remainder, Strategy};
use clap::Args;
use serde_json::{json, Value};

use super::args::{
    AsrPruningArgs, DtypeArg, FormatArg, ModelArgs, RemainderArg, ScopeArg, StrategyArg,
};
use super::{device_name, load, parse_device, print_line, set_threads, usage};
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
    /// Cap on generated tokens per answer (greedy decoding; the model's repetition penalty
    /// from generation_config.json applies, as in transformers' generate).
    #[arg(long, default_value_t = 64, help_heading = "Sweep")]
    pub(super) max_new_tokens: usize,
    /// Append every prediction to this JSON Lines file (id, strategy, keep, mode, prediction,
    /// correct, timings); a rerun skips what it holds, so a run resumes and can be rescored.
    #[arg(long, value_name = "FILE.jsonl", help_heading = "Output")]
    pub(super) predictions: Option<PathBuf>,
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

/// A task's way to turn predictions into report rows.
type Score<'a> = &'a dyn Fn(&[Config], &[Prediction]) -> Vec<Row>;

/// A task's items and the prompt settings for the report, given the loaded model (the default
/// captioning instruction depends on whether it is a chat model).
type Build<'a> = &'a dyn Fn(&auris::Pipeline) -> (Vec<SweepItem>, Value);

/// One task of the sweep, ready to run.
struct Task<'a> {
    name: &'static str,
    metric: &'static str,
    mode: Mode,
    table_groups: &'static [&'static str],
    build: Build<'a>,
    judge: sweep::Judge<'a>,
    score: Score<'a>,
}

/// Loads the model, runs the sweep, writes the reports and prints the table.
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
    let (items, mut parameters) = (task.build)(p);
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
    let scored = items.len() - run.skipped.len();
    let report = sweep::SweepReport {
        task: task.name.to_string(),
        mode: task.mode.name().to_string(),
        model: model.model.clone(),
        metric: task.metric.to_string(),
        items: items.len(),
        scored,
        results: (task.score)(&configs, &run.predictions),
        skipped: run.skipped,
        resumed: run.resumed,
        parameters,
        runtime_s: sweep::round(run.runtime_s, 1),
        table_groups: task.table_groups.iter().map(|g| g.to_string()).collect(),
    };
    write_reports(
        &report.to_json(),
        &report.markdown(),
        &report.svg()?,
        &args.report,
    )?;
    if !args.report.quiet {
        eprintln!(
            "auris: {scored} items scored in {:.0} s ({} skipped, {} predictions resumed)",
            run.runtime_s,
            report.skipped.len(),
            report.resumed
        );
    }
    if scored == 0 {
        return Err(anyhow::anyhow!(
            "no item could be evaluated ({} skipped)",
            report.skipped.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// What changes a prediction: a predictions file is resumed only under the same values.
fn settings_fingerprint(model: &ModelArgs, args: &SweepArgs, parameters: &Value) -> String {
    let settings = json!({
        "model": model.model,
        "revision": model.revision,
        "dtype": format!("{:?}", model.dtype),
        "quant": model.quant.map(|q| q.format().to_string()),
        "prompt": parameters.get("prompt_template").or_else(|| parameters.get("prompt")),
        "max_new_tokens": args.max_new_tokens,
        "segments": args.segments,
        "segment_remainder": format!("{:?}", args.segment_remainder),
        "seed": args.seed,
    });
    sweep::fingerprint(&settings.to_string())
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
    let mut items = mmau::read_manifest(&args.manifest)?;
    items.truncate(args.sweep.limit.unwrap_or(items.len()));
    let dir = audio_dir(args.audio_dir, &args.manifest);
    let by_id: std::collections::HashMap<String, mmau::MmauItem> =
        items.iter().map(|i| (i.id.clone(), i.clone())).collect();
    let judge = move |item: &SweepItem, prediction: &str| {
        by_id
            .get(&item.id)
            .map(|i| mmau::string_match(&i.answer, prediction, &i.choices))
    };
    let score = |configs: &[Config], preds: &[Prediction]| mmau::rows(configs, &items, preds);
    let task = Task {
        name: "mmau",
        metric: "accuracy",
        table_groups: &["task", "difficulty"],
        mode: if args.score_choices {
            Mode::ScoreChoices
        } else {
            Mode::Generate
        },
        build: &|_| {
            (
                mmau::sweep_items(&items, &template, &dir),
                json!({ "prompt_template": template, "audio_dir": dir }),
            )
        },
        judge: &judge,
        score: &score,
    };
    run_sweep(&args.model, &args.sweep, task)
}

/// Runs `auris eval captions`.
pub(super) fn captions(args: CaptionsArgs) -> Result<ExitCode> {
    let mut items = captions::read_manifest(&args.manifest)?;
    items.truncate(args.sweep.limit.unwrap_or(items.len()));
    let dir = audio_dir(args.audio_dir, &args.manifest);
    let judge = |_: &SweepItem, _: &str| None;
    let score = |configs: &[Config], preds: &[Prediction]| captions::rows(configs, &items, preds);
    let build = |p: &auris::Pipeline| {
        let instruction = args
            .prompt
            .clone()
            .unwrap_or_else(|| p.default_caption_instruction().to_string());
        (
            captions::sweep_items(&items, &instruction, &dir),
            json!({
                "prompt": instruction,
                "audio_dir": dir,
                "tokenisation": "lower-case, punctuation removed, white-space split",
            }),
        )
    };
    let task = Task {
        name: "captions",
        metric: "cider_d",
        table_groups: &[],
        mode: Mode::Generate,
        build: &build,
        judge: &judge,
        score: &score,
    };
    run_sweep(&args.model, &args.sweep, task)
}

/// Runs `auris eval transcribe`.
pub(super) fn transcribe(args: TranscribeArgs) -> Result<ExitCode> {
    let mut entries = transcribe::read_manifest(&args.manifest)?;
    entries.truncate(args.sweep.limit.unwrap_or(entries.len()));
    let judge = |_: &SweepItem, _: &str| None;
    let score =
        |configs: &[Config], preds: &[Prediction]| transcribe::rows(configs, &entries, preds);
    let items = transcribe::sweep_items(&entries, &args.prompt);
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
        name: "transcribe",
        metric: "wer",
        table_groups: &["source"],
        mode: Mode::Generate,
        build: &build,
        judge: &judge,
        score: &score,
    };
    run_sweep(&args.model, &args.sweep, task)
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
    if model.quant.is_some() || !matches!(model.dtype, DtypeArg::Auto | DtypeArg::F32) {
        return Err(usage(
            "the Whisper evaluation computes in f32: --dtype and --quant apply to eval mmau and eval captions",
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
