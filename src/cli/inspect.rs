//! `auris inspect`: the intermediate tensors of one run, saved to safetensors.

use super::*;

/// Runs `auris inspect`.
pub(super) fn run(audio: PathBuf, out: &std::path::Path, common: &Common) -> Result<ExitCode> {
    check_prompt_args(common)?;
    let policy = common.prune.policy(common.generation.seed)?;
    let session = load(&common.model, common.prompt.prompt_format, common.quiet)?;
    let p = &session.pipeline;
    let request = Request {
        audio,
        prompt: prompt_spec(&common.prompt, p.default_caption_instruction()),
        policy,
        generate: generate_options(p, &common.generation)?,
        task: Task::Inspect { generate: false },
        context: common.prune.context(),
    };
    let Some(r) = run_or_report(p, &request, common.json)? else {
        return Ok(ExitCode::from(1));
    };
    let inspection = r
        .inspection
        .as_ref()
        .context("the pipeline returned no intermediate tensors")?;
    let tensors = HashMap::from([
        (
            "input_features".to_string(),
            inspection.input_features.clone(),
        ),
        ("audio_embeds".to_string(), inspection.audio_embeds.clone()),
        ("audio_scores".to_string(), inspection.audio_scores.clone()),
        ("projected".to_string(), inspection.projected.clone()),
        (
            "prompt_logits".to_string(),
            inspection.prompt_logits.clone(),
        ),
        ("all_logits".to_string(), inspection.all_logits.clone()),
    ]);
    candle_core::safetensors::save(&tensors, out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    if common.json {
        let mut v = response_json(&r, &common.prune, &session);
        v["out"] = json!(out.display().to_string());
        print_line(&v.to_string())?;
    } else {
        print_line(&out.display().to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}
