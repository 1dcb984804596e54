//! The binary's `cli` module as far as the request parser needs it: `src/cli/args.rs` compiled
//! in unchanged, the `auris eval` argument types it names as stand-ins.
//!
//! (A `#[path]` inside an inline module is resolved under a directory named after the module,
//! which must exist; in this file, an outline module, paths are relative to this directory.)
#![allow(dead_code, unused_imports)]

#[path = "../../../src/cli/args.rs"]
mod args;

/// `src/cli/mod.rs`'s usage error, reduced to its message.
fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::anyhow!(msg.into())
}

/// Stand-ins for the `auris eval` arguments `args.rs` refers to.
mod eval {
    #[derive(Debug, clap::Args)]
    pub(super) struct MmauArgs {}
    #[derive(Debug, clap::Args)]
    pub(super) struct CaptionsArgs {}
    #[derive(Debug, clap::Args)]
    pub(super) struct ReportArgs {}
    #[derive(Debug, clap::Args)]
    pub(super) struct TranscribeArgs {}
}

#[path = "serve.rs"]
pub(crate) mod serve;
