//! `auris eval asr-pruning`: what pruning costs a Whisper model's transcriptions.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use auris::checkpoint::ModelSource;
use auris_prune::Remainder;

use super::args::{AsrPruningArgs, ScopeArg, StrategyArg};
use super::{device_name, parse_device, print_line, set_threads, usage};
use crate::eval::report::AsrReport;

/// Checks the options, loads the Whisper model, runs the evaluation and writes the reports.
pub(super) fn asr_pruning(args: AsrPruningArgs) -> Result<ExitCode> {
    let AsrPruningArgs {
        model,
        revision,
        manifest,
        strategies,
        keeps,
        segments,
        scope,
        seed,
        limit,
        every,
        max_new_tokens,
        out,
        markdown,
        plot,
        details,
        quiet,
        device,
        threads,
    } = args;
    let mut resolved = Vec::with_capacity(strategies.len());
    for s in strategies {
        if s == StrategyArg::None {
            return Err(usage(
                "--strategies: none is always measured; list pruning strategies only",
            ));
        }
        resolved.push(s.strategy(segments, Remainder::Spread, seed)?);
    }
    for &keep in &keeps {
        auris_prune::validate_keep(keep).map_err(|e| usage(e.to_string()))?;
    }
    set_threads(threads)?;
    let device = parse_device(&device)?;
    if every == 0 {
        return Err(usage("--every must be at least 1"));
    }
    let clips: Vec<_> = crate::eval::asr::read_manifest(&manifest)?
        .into_iter()
        .step_by(every)
        .collect();
    let source = ModelSource::parse(&model, revision.as_deref())?;
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
    let table = write_reports(&report, out.as_ref(), markdown.as_ref(), plot.as_ref())?;
    if !quiet {
        eprintln!(
            "auris: {} clips in {:.0} s ({} skipped)",
            report.clips,
            report.runtime_s,
            report.skipped.len()
        );
    }
    print_line(table.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the JSON, markdown and SVG reports where asked; returns the markdown table.
fn write_reports(
    report: &AsrReport,
    out: Option<&PathBuf>,
    markdown: Option<&PathBuf>,
    plot: Option<&PathBuf>,
) -> Result<String> {
    let table = report.markdown();
    let write = |path: &PathBuf, text: &str| {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    if let Some(path) = out {
        write(path, &format!("{:#}\n", report.to_json()))?;
    }
    if let Some(path) = markdown {
        write(path, &table)?;
    }
    if let Some(path) = plot {
        write(path, &report.svg())?;
    }
    Ok(table)
}
