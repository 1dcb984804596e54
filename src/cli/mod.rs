//! Argument parsing and output for the `auris` binary.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use auris::checkpoint::ModelSource;
use auris::pipeline::{Response, Sequences};
use auris::prompt::{choice_letter, multiple_choice, parse_choice, PromptFormat};
use auris::{Error, LoadOptions, Pipeline, PromptSpec, Request, Task, Weights};
use auris_llm::WeightFormat;
use candle_core::{DType, Device};
use clap::Parser;
use serde_json::{json, Value};

mod args;
mod ask;
mod bench;
mod caption;
mod download;
mod eval;
mod inspect;
mod serve;

use args::*;

/// An error in how auris was called (exit status 2), with the hint line printed after it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct UsageError {
    message: String,
    hint: Option<String>,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError {
        message: msg.into(),
        hint: None,
    }
    .into()
}

fn usage_with_hint(msg: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    UsageError {
        message: msg.into(),
        hint: Some(hint.into()),
    }
    .into()
}

fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_lowercase();
    let device = match spec.as_str() {
        "cpu" => Device::Cpu,
        // The first GPU that opens, else the CPU: a CUDA build on a machine without a GPU
        // still runs.
        "auto" => Device::new_cuda(0)
            .or_else(|_| Device::new_metal(0))
            .unwrap_or(Device::Cpu),
        "metal" => open_metal()?,
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| usage(format!("invalid --device {spec}: expected cuda:N")))?,
                None => 0,
            };
            open_cuda(ordinal)?
        }
        _ => {
            return Err(usage(format!(
                "invalid --device {spec}: expected auto, cpu, cuda, cuda:N or metal"
            )))
        }
    };
    Ok(device)
}

/// CUDA device `ordinal`, or a usage error that says whether the build or the machine lacks it.
fn open_cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(usage_with_hint(
            "--device cuda: this auris was built without CUDA support",
            "rebuild with `cargo build --release --features cuda` \
             (scripts/build_cuda.sh does it on a machine without a CUDA toolkit)",
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        usage_with_hint(
            format!(
                "--device cuda:{ordinal}: no CUDA device found ({})",
                first_line(&e)
            ),
            "check the GPU and its driver with nvidia-smi, or run on the CPU with --device cpu",
        )
    })
}

/// The first line of candle's message: with `RUST_BACKTRACE` set it appends a backtrace.
fn first_line(e: &candle_core::Error) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// The Metal device, or a usage error that says whether the build or the machine lacks it.
fn open_metal() -> Result<Device> {
    if !candle_core::utils::metal_is_available() {
        return Err(usage_with_hint(
            "--device metal: this auris was built without Metal support",
            "rebuild on macOS with `cargo build --release --features metal`",
        ));
    }
    Device::new_metal(0).map_err(|e| {
        usage_with_hint(
            format!("--device metal: no Metal device found ({})", first_line(&e)),
            "run on the CPU with --device cpu",
        )
    })
}

/// The compute dtype and the language model's weight storage the options ask for.
fn pick_precision(args: &ModelArgs, device: &Device) -> Result<(DType, Weights)> {
    check_compute(args, device)?;
    if let Some(quant) = args.quant {
        if !device.is_cpu() {
            return Err(usage(format!(
                "--quant {} runs on the CPU only; use --device cpu, or --dtype on a GPU",
                quant.format()
            )));
        }
        if args.dtype != DtypeArg::Auto {
            return Err(usage(
                "--quant chooses how the weights are stored; leave --dtype at auto with it",
            ));
        }
        return Ok((DType::F32, Weights::Format(quant.format())));
    }
    if device.is_cpu() {
        return Ok(match args.dtype {
            DtypeArg::Auto => (DType::F32, Weights::Checkpoint),
            DtypeArg::F32 => (DType::F32, Weights::Compute),
            DtypeArg::Bf16 => (DType::F32, Weights::Format(WeightFormat::Bf16)),
            DtypeArg::F16 => (DType::F32, Weights::Format(WeightFormat::F16)),
        });
    }
    let dtype = match (args.dtype, device) {
        (DtypeArg::F32, _) => DType::F32,
        (DtypeArg::F16, _) | (DtypeArg::Auto, Device::Metal(_)) => DType::F16,
        (DtypeArg::Bf16 | DtypeArg::Auto, _) => DType::BF16,
    };
    Ok((dtype, Weights::Compute))
}

/// `--compute` is for the CPU, and bf16 compute multiplies bf16 weights.
fn check_compute(args: &ModelArgs, device: &Device) -> Result<()> {
    if args.compute == ComputeArg::Auto {
        return Ok(());
    }
    if !device.is_cpu() {
        return Err(usage(
            "--compute is for the CPU; on a GPU --dtype picks the compute precision",
        ));
    }
    if args.compute == ComputeArg::Bf16 && matches!(args.dtype, DtypeArg::F32 | DtypeArg::F16) {
        return Err(usage_with_hint(
            "--compute bf16 multiplies bf16 weights; --dtype f32 and --dtype f16 keep others",
            "leave --dtype at auto (or bf16) with --compute bf16, or use --compute f32",
        ));
    }
    Ok(())
}

fn device_name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

struct Session {
    pipeline: Pipeline,
    load_ms: f64,
    quiet: bool,
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(threads) = threads {
        if threads == 0 {
            return Err(usage("--threads must be at least 1"));
        }
        // Candle's CPU kernels size their thread pools from this variable; it is read once,
        // before any tensor work starts, and nothing else runs yet.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    Ok(())
}

fn load(args: &ModelArgs, format: FormatArg, quiet: bool) -> Result<Session> {
    load_for(args, format, quiet, Sequences::Exactly(1))
}

/// [`load`] for a model that serves `sequences` sequences at the same time.
fn load_for(
    args: &ModelArgs,
    format: FormatArg,
    quiet: bool,
    sequences: Sequences,
) -> Result<Session> {
    set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let (dtype, weights) = pick_precision(args, &device)?;
    let source = ModelSource::parse(&args.model, args.revision.as_deref())?;
    if !quiet {
        let storage = match weights {
            Weights::Compute => String::new(),
            Weights::Checkpoint => ", weights as in the checkpoint".to_string(),
            Weights::Format(f) => format!(", weights in {f}"),
        };
        eprintln!(
            "auris: loading {} on {} ({dtype:?}{storage})",
            source.display(),
            device_name(&device)
        );
    }
    let start = Instant::now();
    let pipeline = Pipeline::load(
        &source,
        &LoadOptions {
            device,
            dtype,
            weights,
            memory_check: !args.no_memory_check,
            context: auris::pipeline::DEFAULT_CONTEXT,
            sequences,
            compute: args.compute.choice(),
            progress: !quiet,
            prompt_format: match format {
                FormatArg::Auto => PromptFormat::Auto,
                FormatArg::Chat => PromptFormat::Chat,
                FormatArg::Base => PromptFormat::Base,
            },
        },
    )?;
    if !quiet {
        let compute = pipeline.compute();
        eprintln!("auris: compute {} ({})", compute.name, compute.reason);
    }
    Ok(Session {
        pipeline,
        load_ms: start.elapsed().as_secs_f64() * 1e3,
        quiet,
    })
}

fn prompt_spec(args: &PromptArgs, default_instruction: &str) -> PromptSpec {
    match &args.raw_prompt {
        Some(raw) => PromptSpec::Raw(raw.clone()),
        None => PromptSpec::Instruction {
            text: args
                .prompt
                .clone()
                .unwrap_or_else(|| default_instruction.to_string()),
            system: args.system.clone(),
        },
    }
}

fn generate_options(
    pipeline: &Pipeline,
    args: &GenerationArgs,
) -> Result<auris_llm::GenerateOptions> {
    let mut opts = pipeline.default_generate_options(args.max_new_tokens);
    if args.max_new_tokens == 0 {
        return Err(usage("--max-new-tokens must be at least 1"));
    }
    let s = &mut opts.sampling;
    if let Some(t) = args.temperature {
        if !(t >= 0.0 && t.is_finite()) {
            return Err(usage(format!("invalid --temperature {t}: must be >= 0")));
        }
        s.temperature = (t > 0.0).then_some(t);
    }
    if let Some(k) = args.top_k {
        s.top_k = (k > 0).then_some(k);
    }
    if let Some(p) = args.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(usage(format!("invalid --top-p {p}: must be in (0, 1]")));
        }
        s.top_p = (p < 1.0).then_some(p);
    }
    if let Some(r) = args.repetition_penalty {
        if !(r > 0.0 && r.is_finite()) {
            return Err(usage(format!(
                "invalid --repetition-penalty {r}: must be > 0"
            )));
        }
        s.repetition_penalty = r;
    }
    if args.greedy {
        s.temperature = None;
    }
    s.seed = args.seed;
    Ok(opts)
}

fn response_json(r: &Response, prune: &PruneArgs, session: &Session) -> Value {
    let t = &r.timings;
    let load_ms = session.load_ms;
    json!({
        "audio": r.audio.display().to_string(),
        "duration_s": r.duration_s,
        "sample_rate": r.sample_rate,
        "n_audio_tokens": r.n_audio_tokens,
        "n_kept": r.n_kept,
        "kept_indices": r.kept_indices,
        "prune": prune_json(prune, r),
        "context": r.context,
        "prompt": r.prompt,
        "prompt_token_ids": r.prompt_token_ids,
        "output_token_ids": r.output_token_ids,
        "text": r.text,
        "timings_ms": timings_json(t, Some(load_ms)),
        "tokens_per_s": t.tokens_per_s,
        "compute": session.pipeline.compute().name,
    })
}

/// The pruning options as given, with the keep ratio and strategy actually applied when the
/// context budget lowered them.
fn prune_json(prune: &PruneArgs, r: &Response) -> Value {
    let mut v = prune.describe();
    if r.context.fitted {
        v["strategy"] = json!(r.policy.strategy.name());
        v["keep"] = json!(r.context.keep);
        v["keep_requested"] = json!(prune.keep);
        if let auris_prune::Strategy::Segmentwise {
            segments,
            remainder,
        } = r.policy.strategy
        {
            v["segments"] = json!(segments);
            v["segment_remainder"] = json!(remainder.name());
        }
    }
    v
}

/// Stage timings in milliseconds, with the model load when given.
fn timings_json(t: &auris::pipeline::Timings, load_ms: Option<f64>) -> Value {
    let mut v = json!({
        "decode_audio": t.decode_audio,
        "mel": t.mel,
        "encoder": t.encoder,
        "projector": t.projector,
        "prefill": t.prefill,
        "generate": t.generate,
    });
    if let Some(load) = load_ms {
        v["load"] = json!(load);
    }
    v
}

fn print_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn log_done(session: &Session, r: &Response) {
    if session.quiet {
        return;
    }
    eprintln!(
        "auris: {}: {:.1} s audio, {} audio tokens (kept {}), {} new tokens, encoder {:.0} ms, prefill {:.0} ms, {:.1} tok/s",
        r.audio.display(),
        r.duration_s,
        r.n_audio_tokens,
        r.n_kept,
        r.output_token_ids.len(),
        r.timings.encoder,
        r.timings.prefill,
        r.timings.tokens_per_s
    );
}

/// Runs the command line; the exit status reflects failed inputs.
pub(crate) fn main() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            e.print()?;
            return Ok(ExitCode::from(code as u8));
        }
    };
    match cli.command {
        Command::Caption { audio, common } => caption::run(&audio, &common),
        Command::Ask {
            audio,
            question,
            choices,
            score_choices,
            common,
        } => ask::run(audio, &question, &choices, score_choices, &common),
        Command::Inspect { audio, out, common } => inspect::run(audio, &out, &common),
        Command::Bench(args) => bench::run(args),
        Command::Download(args) => download::run(&args),
        Command::Eval(EvalCommand::AsrPruning(args)) => eval::asr_pruning(args),
        Command::Eval(EvalCommand::Mmau(args)) => eval::mmau(args),
        Command::Eval(EvalCommand::Captions(args)) => eval::captions(args),
        Command::Eval(EvalCommand::Transcribe(args)) => eval::transcribe(args),
        Command::Eval(EvalCommand::Report(args)) => eval::report(args),
        Command::Serve(args) => serve::run(args),
    }
}

/// A raw prompt must hold some family's audio placeholder (the model, not loaded yet, then
/// checks that it is its own, exactly once).
fn check_prompt_args(common: &Common) -> Result<()> {
    if let Some(raw) = &common.prompt.raw_prompt {
        let markups = auris::family::FAMILIES.map(|f| f.markup(&Default::default()));
        if !markups.iter().any(|m| raw.contains(&m.placeholder)) {
            let names: Vec<String> = markups.iter().map(|m| m.placeholder.clone()).collect();
            return Err(usage(format!(
                "--raw-prompt must contain the audio placeholder {}",
                names.join(" or ")
            )));
        }
    }
    Ok(())
}

/// Runs a request, printing the text to stdout as it is generated (leading white space
/// dropped), then a newline.
fn stream_run(p: &Pipeline, request: &Request) -> std::result::Result<Response, Error> {
    let mut stream = auris::pipeline::TextStream::new(p.tokenizer());
    let mut started = false;
    let mut write_error: Option<std::io::Error> = None;
    let mut stdout = std::io::stdout();
    let result = p.run(request, &mut |id| {
        let piece = match stream.push(id) {
            Ok(Some(piece)) => piece,
            Ok(None) | Err(_) => return true,
        };
        let piece = if started {
            piece.as_str()
        } else {
            piece.trim_start()
        };
        if piece.is_empty() {
            return true;
        }
        started = true;
        match stdout
            .write_all(piece.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    });
    if let Some(e) = write_error {
        return Err(Error::Io {
            path: "<stdout>".into(),
            source: e,
        });
    }
    if result.is_ok() {
        let _ = writeln!(stdout);
    }
    result
}

/// Runs `request` to the end; a failure is reported as [`report_failure`] does and gives
/// `None`.
fn run_or_report(p: &Pipeline, request: &Request, json: bool) -> Result<Option<Response>> {
    match p.run(request, &mut |_| true) {
        Ok(r) => Ok(Some(r)),
        Err(e) => report_failure(&request.audio, &e, json).map(|()| None),
    }
}

fn report_failure(path: &std::path::Path, err: &Error, json: bool) -> Result<()> {
    let message = error_message(err);
    // Audio errors name the file themselves.
    if message.contains(&path.display().to_string()) {
        eprintln!("error: {message}");
    } else {
        eprintln!("error: {}: {message}", path.display());
    }
    if let Some(hint) = hint_for_error(err) {
        eprintln!("hint: {hint}");
    }
    if json {
        print_line(&json!({ "audio": path.display().to_string(), "error": message }).to_string())?;
    }
    Ok(())
}

fn hint_for_error(err: &Error) -> Option<String> {
    Some(match err {
        Error::NotAModelFolder { .. } | Error::MissingFile { .. } => {
            "--model takes a folder with config.json, tokenizer.json and safetensors weights, or a hub id such as Qwen/Qwen2-Audio-7B-Instruct".to_string()
        }
        Error::OfflineMissing { id, .. } => format!(
            "unset HF_HUB_OFFLINE to download {id}, or fetch it beforehand on a connected machine with `auris download --model {id}` (same HF_HOME)"
        ),
        Error::Hub { failure, .. } => download::hint(failure),
        Error::Checksum(_) => {
            "the damaged file was removed from the cache; run again to download it anew".to_string()
        }
        Error::PlaceholderCount { token, .. } => {
            format!("a prompt needs exactly one {token} placeholder per audio file")
        }
        Error::Audio(auris_audio::AudioError::TooShort { .. }) => {
            "the encoder needs at least 3 mel frames (about 0.02 s of audio)".to_string()
        }
        Error::Audio(_) => {
            "auris reads WAV, FLAC, MP3 and Ogg Vorbis files".to_string()
        }
        Error::ContextOverflow(o) => match &o.fits {
            Some(fits) => format!(
                "{} fits; --fit-context chooses the largest keep ratio that fits for each file",
                fitting_flags(fits)
            ),
            None => "shorten the audio, the prompt or --max-new-tokens".to_string(),
        },
        Error::TooManySequences(short) => format!(
            "--parallel {} fits; --no-memory-check loads anyway",
            short.fit
        ),
        Error::InsufficientMemory(short) if short.fits.is_empty() => {
            "no weight mode fits; free memory, or pass --no-memory-check to try anyway".to_string()
        }
        Error::InsufficientMemory(short) => {
            let options: Vec<String> = short
                .fits
                .iter()
                .map(|&(w, bytes)| format!("{} ({})", weights_flag(w), auris::memory::gb(bytes)))
                .collect();
            format!(
                "{} fits; --no-memory-check loads anyway",
                options.join(" or ")
            )
        }
        _ => return None,
    })
}

/// The message of a pipeline error as the command line words it: the options it names are
/// spelled as flags.
pub(crate) fn error_message(err: &Error) -> String {
    match err {
        Error::ContextOverflow(o) => o.describe("--max-audio-tokens"),
        Error::InsufficientMemory(short) => short.describe(&weights_flag(short.mode)),
        Error::TooManySequences(short) => short.describe(&format!("--parallel {}", short.asked)),
        e => e.to_string(),
    }
}

/// [`error_message`] of each error in an `anyhow` chain, outermost first.
pub(crate) fn chain_messages(err: &anyhow::Error) -> Vec<String> {
    err.chain()
        .map(|cause| match cause.downcast_ref::<Error>() {
            Some(e) => error_message(e),
            None => cause.to_string(),
        })
        .collect()
}

/// The options a user would type for a weight storage (`--dtype bf16`, `--quant q8_0`).
fn weights_flag(weights: Weights) -> String {
    match weights {
        Weights::Compute => "--dtype f32".to_string(),
        Weights::Checkpoint => "--dtype auto".to_string(),
        Weights::Format(f) if f.is_quantized() => format!("--quant {f}"),
        Weights::Format(f) => format!("--dtype {f}"),
    }
}

/// The options a user would type for a policy that fits the context
/// (`--prune segmentwise --keep 0.45`, or `--keep 0.45` keeping the strategy).
fn fitting_flags(fits: &auris::budget::Fitting) -> String {
    let keep = fits.policy.keep;
    if fits.strategy_changed {
        format!("--prune {} --keep {keep}", fits.policy.strategy.name())
    } else {
        format!("--keep {keep}")
    }
}

/// A hint line for an error that ended the whole run.
pub(crate) fn hint_for(err: &anyhow::Error) -> Option<String> {
    if let Some(e) = err.downcast_ref::<Error>() {
        return hint_for_error(e);
    }
    if let Some(e) = err.downcast_ref::<UsageError>() {
        return Some(
            e.hint
                .clone()
                .unwrap_or_else(|| "run auris <COMMAND> --help for the options".to_string()),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use auris_prune::Remainder;
    use clap::ValueEnum;

    use super::*;

    /// Typed ways out of an overflow or a memory shortfall become the flags that select them.
    #[test]
    fn typed_options_are_spelled_as_flags() {
        let fits = |strategy, strategy_changed| auris::budget::Fitting {
            policy: auris_prune::Policy {
                strategy,
                keep: 0.45,
            },
            strategy_changed,
        };
        assert_eq!(
            fitting_flags(&fits(auris_prune::Strategy::default(), true)),
            "--prune segmentwise --keep 0.45"
        );
        assert_eq!(
            fitting_flags(&fits(auris_prune::Strategy::TopK, false)),
            "--keep 0.45"
        );
        let flags = [
            Weights::Compute,
            Weights::Checkpoint,
            Weights::Format(WeightFormat::Bf16),
            Weights::Format(WeightFormat::Q8_0),
            Weights::Format(WeightFormat::Q4K),
        ]
        .map(weights_flag);
        assert_eq!(
            flags,
            [
                "--dtype f32",
                "--dtype auto",
                "--dtype bf16",
                "--quant q8_0",
                "--quant q4_k"
            ]
        );
    }

    /// The `--prune` values are the prune crate's strategy names, in its order.
    #[test]
    fn strategy_values_are_the_prune_crates_names() {
        let names: Vec<String> = StrategyArg::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(names, auris_prune::STRATEGY_NAMES);
        for v in StrategyArg::value_variants() {
            let s = v.strategy(auris_prune::DEFAULT_SEGMENTS, Remainder::Spread, 0);
            assert!(s.is_ok(), "{v:?}");
        }
    }
}
