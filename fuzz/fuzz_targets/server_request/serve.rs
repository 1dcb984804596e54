//! `src/cli/serve/request.rs` and `wire.rs` compiled in unchanged, and the fuzz entry point.

#[path = "../../../src/cli/serve/request.rs"]
mod request;
#[path = "../../../src/cli/serve/wire.rs"]
mod wire;

use clap::Parser;

use super::args::{Cli, Command, ServeArgs};

/// One input, against the server's defaults.
pub(crate) fn fuzz(body: &[u8]) {
    thread_local! {
        static ARGS: ServeArgs = defaults();
    }
    ARGS.with(|args| check(body, args));
}

/// The server's defaults: `auris serve` with no option but a media directory (holding
/// `clip.wav`) for `file://` URLs.
fn defaults() -> ServeArgs {
    let media = std::env::temp_dir().join("auris-fuzz-media");
    std::fs::create_dir_all(&media).expect("media dir");
    std::fs::write(media.join("clip.wav"), b"RIFF\x24\0\0\0WAVE").expect("media file");
    let media = media.canonicalize().expect("media dir");
    let media = media.to_str().expect("a UTF-8 temp dir");
    match Cli::try_parse_from(["auris", "serve", "--allowed-local-media-path", media]) {
        Ok(Cli {
            command: Command::Serve(args),
        }) => args,
        other => panic!("`auris serve` did not parse: {other:?}"),
    }
}

/// Parses `body`; an accepted request has one audio blob per audio part, a refused
/// one an error body naming a parameter.
fn check(body: &[u8], args: &ServeArgs) {
    match request::parse(body, args) {
        Ok(params) => {
            let parts = params
                .messages
                .iter()
                .flat_map(|m| &m.content)
                .filter(|p| matches!(p, auris::prompt::Part::Audio { .. }))
                .count();
            assert_eq!(parts, params.audio.len());
            assert!(params.max_tokens >= 1);
            assert!(params.policy.validate().is_ok());
        }
        Err(err) => {
            let body = err.body();
            assert!(body["error"]["message"].is_string());
        }
    }
}
    
