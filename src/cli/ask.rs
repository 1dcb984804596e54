//! `auris ask`: a question about an audio file, open or multiple-choice.

use super::*;

/// Runs `auris ask`.
pub(super) fn run(
    audio: PathBuf,
    question: &str,
    choices: &[String],
    score_choices: bool,
    common: &Common,
) -> Result<ExitCode> {
    check_prompt_args(common)?;
    if common.prompt.prompt.is_some() {
        return Err(usage(
            "ask takes its instruction from --question, not --prompt",
        ));
    }
    let policy = common.prune.policy(common.generation.seed)?;
    let session = load(&common.model, common.prompt.prompt_format, common.quiet)?;
    let p = &session.pipeline;
    let text = if choices.is_empty() {
        question.to_string()
    } else {
        multiple_choice(question, choices)
    };
    let spec = match &common.prompt.raw_prompt {
        Some(raw) => PromptSpec::Raw(raw.clone()),
        None => PromptSpec::Instruction {
            text,
            system: common.prompt.system.clone(),
        },
    };
    let request = Request {
        audio,
        prompt: spec,
        policy,
        generate: generate_options(p, &common.generation)?,
        task: if score_choices {
            Task::ScoreChoices(choices.to_vec())
        } else {
            Task::Generate
        },
        context: common.prune.context(),
    };
    let Some(r) = run_or_report(p, &request, common.json)? else {
        return Ok(ExitCode::from(1));
    };
    log_done(&session, &r);
    let answer = match &r.choice_logprobs {
        Some(lp) => lp
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i),
        None if !choices.is_empty() => parse_choice(&r.text, choices),
        None => None,
    };
    let letter = answer.map(|i| choice_letter(i).to_string());
    if common.json {
        let mut v = response_json(&r, &common.prune, &session);
        if !choices.is_empty() {
            v["choices"] = json!(choices);
            v["answer"] = json!(letter);
            v["answer_text"] = json!(answer.map(|i| choices[i].clone()));
        }
        if let Some(lp) = &r.choice_logprobs {
            v["choice_logprobs"] = json!(lp);
        }
        print_line(&v.to_string())?;
    } else {
        match (answer, &r.choice_logprobs) {
            (Some(i), _) => print_line(&format!("({}) {}", choice_letter(i), choices[i]))?,
            (None, Some(_)) => print_line("")?,
            (None, None) => print_line(r.text.trim())?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
