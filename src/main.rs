//! The `auris` command line: parse arguments, call the pipeline, print results.

mod cli;
mod eval;

use std::io::Write;
use std::process::ExitCode;

/// mimalloc keeps freed pages for reuse. With the system allocator every large tensor (an
/// encoder layer's attention probabilities are 100 MB) is a fresh `mmap`, page-faulted and zeroed
/// by the kernel on first touch: a fifth of the CPU time went to the kernel before.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let usage = err.downcast_ref::<cli::UsageError>().is_some();
            let mut stderr = std::io::stderr().lock();
            let messages = cli::chain_messages(&err);
            for (i, message) in messages.iter().enumerate() {
                let lead = if i == 0 { "error:" } else { "  caused by:" };
                let _ = writeln!(stderr, "{lead} {message}");
            }
            if let Some(hint) = cli::hint_for(&err) {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
