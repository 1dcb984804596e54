//! End-to-end tests of the auris pipeline and binary on the committed fixture checkpoints.
//!
//! Every expected value comes from `scripts/make_fixtures.sh`, which runs transformers itself on
//! the same checkpoints and audio (see `tests/fixtures/README.md`).

mod af3;
mod asr;
mod checkpoint_faults;
mod cli;
mod common;
mod compute;
mod context;
mod errors;
mod eval;
mod hub;
mod hub_server;
mod parity;
mod prometheus;
mod real_mini;
mod serve;
mod streaming;
mod weights;
