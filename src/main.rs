//! The `riskstream` binary: parse the command line, start logging and the runtime, and
//! hand the subcommand to `cli` (one module per subcommand). Exit codes: 0 ok, 1 runtime
//! failure, 2 bad usage or bad config.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd};
use riskstream::telemetry::logging;

// mimalloc instead of glibc malloc: decoding allocates per event on both cores, and a
// million detector keys allocate on restore (docs/PERFORMANCE.md has the A/B figures).
// Built with `no_thp`: mimalloc otherwise madvises its arenas for transparent huge pages,
// and with the kernel's THP defrag on `madvise` (Debian's default) each fault of a fresh
// huge page may compact memory first: growing a detector map of 28k keys stalled the
// pipeline 34 ms instead of 5 ms, and such stalls were most of the alert p99's tail.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Backtest(_) => logging::init_with(cli.log_format, "warn"),
        _ => logging::init(cli.log_format),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cli::dispatch(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
