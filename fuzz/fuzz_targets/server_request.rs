//! Arbitrary bytes as the body of `POST /v1/chat/completions`, through the server's own request
//! parser: JSON, message roles and content parts, base64 `input_audio`, `data:` URLs, `file://` (in an
//! allowed directory or not) and `http(s)://` URLs, sampling and pruning fields.
//!
//! The parser lives in the `auris` binary, not the library, so its source files
//! (`src/cli/serve/request.rs`, `src/cli/serve/wire.rs` and the argument types of
//! `src/cli/args.rs`) are compiled in here unchanged, in the same module layout; only the
//! `auris eval` argument types that `args.rs` names are stand-ins.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "server_request/cli.rs"]
mod cli;

fuzz_target!(|data: &[u8]| cli::serve::fuzz(data));
