//! `auris caption`: one caption per audio file.

use super::*;

/// Runs `auris caption`.
pub(super) fn run(audio: &[PathBuf], common: &Common) -> Result<ExitCode> {
    check_prompt_args(common)?;
    let policy = common.prune.policy(common.generation.seed)?;
    let session = load(&common.model, common.prompt.prompt_format, common.quiet)?;
    let p = &session.pipeline;
    let generate = generate_options(p, &common.generation)?;
    let spec = prompt_spec(&common.prompt, p.default_caption_instruction());
    let mut failed = 0;
    for path in audio {
        let request = Request {
            audio: path.clone(),
            prompt: spec.clone(),
            policy,
            generate: generate.clone(),
            task: Task::Generate,
            context: common.prune.context(),
        };
        let result = if common.json {
            p.run(&request, &mut |_| true)
        } else {
            stream_run(p, &request)
        };
        match result {
            Ok(r) => {
                log_done(&session, &r);
                if common.json {
                    print_line(&response_json(&r, &common.prune, &session).to_string())?;
                }
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                failed += 1;
                report_failure(path, &e, common.json)?;
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
