//! `auris bench`: stage timings of the pipeline on one clip.

use std::process::ExitCode;

use anyhow::Result;
use auris::Error;
use auris_prune::Remainder;

use super::args::BenchArgs;
use super::{load, print_line, prompt_spec, usage};

/// Times the stages at each keep ratio and prints the report (markdown or JSON).
pub(super) fn run(args: BenchArgs) -> Result<ExitCode> {
    let BenchArgs {
        audio,
        repeat,
        warmup,
        new_tokens,
        keeps,
        quick,
        model,
        prompt,
        prune,
        segments,
        json,
        quiet,
        decode_batch,
    } = args;
    let strategy = prune.strategy(segments, Remainder::Spread, 0)?;
    let session = load(&model, prompt.prompt_format, quiet)?;
    let p = &session.pipeline;
    let (warmup, repeat, new_tokens) = if quick {
        (0, 1, 8)
    } else {
        (warmup, repeat, new_tokens)
    };
    if repeat == 0 {
        return Err(usage("--repeat must be at least 1"));
    }
    if decode_batch.contains(&0) {
        return Err(usage("--decode-batch sizes must be at least 1"));
    }
    let opts = auris::bench::BenchOptions {
        audio,
        warmup,
        repeat,
        new_tokens,
        strategy,
        keeps,
        prompt: prompt_spec(&prompt, p.default_caption_instruction()),
    };
    let mut report = auris::bench::run(p, &opts, &mut |line| {
        if !quiet {
            eprintln!("{line}");
        }
    })
    .map_err(|e| match e {
        Error::Prune(e) => usage(e.to_string()),
        other => other.into(),
    })?;
    report.load_ms = session.load_ms;
    if !decode_batch.is_empty() {
        let mut log = |line: &str| {
            if !quiet {
                eprintln!("{line}");
            }
        };
        report.decode_batch =
            auris::bench::decode_batches(p.decoder(), &decode_batch, new_tokens, repeat, &mut log)
                .map_err(|e| match e {
                    Error::Usage(e) => usage(e),
                    other => other.into(),
                })?;
    }
    if json {
        print_line(&serde_json::to_string(&report)?)?;
    } else {
        print_line(auris::bench::markdown(&report).trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}
