//! The binary's command line: the `Cli` parser, the list of subcommands, and `dispatch`,
//! which loads the config and hands each subcommand to its own module. Owns exit codes:
//! 0 ok, 1 runtime failure (an `Err` here), 2 bad usage or bad config (returned as
//! `Ok(ExitCode::from(2))` after printing the problem). `anyhow` stays in this binary.

mod backtest;
mod check_config;
mod producer;
mod replay;
mod run;
mod score;
mod simulate;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use riskstream::config::{self, Config};
use riskstream::decode::Stream;
use riskstream::telemetry::logging;

/// Risk early-warning stream processor: reads incidents, industrial sensor readings and
/// fraud reports from Kafka, scores them with rolling statistical detectors, and publishes
/// alert episodes (blue/yellow/orange/red) routed to the city's command centers.
#[derive(Parser)]
#[command(name = "riskstream", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    pub log_format: logging::LogFormat,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Every subcommand; each one's flags and body live in the module of the same name.
#[derive(Subcommand)]
pub enum Cmd {
    /// The service: Kafka in, alerts out, metrics on /metrics. Stops cleanly on SIGTERM or
    /// ctrl-c (finishes in-flight work, commits offsets, exits 0).
    Run(run::Args),
    /// The same pipeline over NDJSON files (`-` = stdin); alerts as NDJSON on stdout.
    Replay(replay::Args),
    /// Validates a config; prints every problem with its path and exits 2 on any.
    CheckConfig(check_config::Args),
    /// One CSV line per input event, in input order: `ts,key,score`, where score in [0,1]
    /// is the strongest normalized anomaly score of the enabled detectors (0.5 = firing).
    Score(score::Args),
    /// Replays labelled data through the real pipeline and scores the alert episodes.
    /// `simulate` (default): a `simulate --out` directory; precision, recall, false alerts
    /// per 10k events and detection delay per stream and detector. `skab` and `csv`:
    /// labelled recorded series, a fresh pipeline per file; anomalies caught, false
    /// episodes per 10k readings, delays, alert messages, and SKAB's per-row F1/FAR/MAR.
    /// A table, or JSON with --json.
    Backtest(backtest::Args),
    /// A generated city's three streams with labelled injected anomalies (gas leaks and
    /// steps, drift, stuck and offline sensors, site events, incident surges and a
    /// county-wide rise, fraud bursts, a spreading account, a scheme spike: one round per
    /// simulated day), streamed to NDJSON files plus labels.jsonl, or to the input topics.
    /// Plant realism that is not a hazard is labelled too, with `"hazard": false` and
    /// `"expected_level": "none"`: quantized, heavy-tailed (Student-t) and daily-cycling
    /// sensors (whole run), maintenance level shifts of 3-5 sigma for hours, 10-20 minute
    /// gaps, and a site's 2-hour late upload arriving behind the watermark. backtest counts
    /// an alert above blue inside one as a false alarm (docs/DETECTORS.md).
    Simulate(simulate::Args),
}

/// Runs one subcommand. Every subcommand but `check-config` loads its config first; a bad
/// config prints every problem and exits 2 before anything else happens.
pub async fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::CheckConfig(args) => Ok(check_config::main(args)),
        Cmd::Run(args) => match load(&args.config) {
            Ok(cfg) => run::main(cfg).await,
            Err(code) => Ok(code),
        },
        Cmd::Replay(args) => match load(&args.config) {
            Ok(cfg) => replay::main(&cfg, args).await,
            Err(code) => Ok(code),
        },
        Cmd::Score(args) => match load(&args.config) {
            Ok(cfg) => score::main(&cfg, args).await,
            Err(code) => Ok(code),
        },
        Cmd::Backtest(args) => match load(&args.config) {
            Ok(cfg) => backtest::main(&cfg, args).await,
            Err(code) => Ok(code),
        },
        Cmd::Simulate(args) => match load(&args.config) {
            Ok(cfg) => simulate::main(&cfg, args).await,
            Err(code) => Ok(code),
        },
    }
}

/// Loads a config or prints every problem and returns exit code 2.
fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("{}: {} problem(s)", path.display(), e.problems.len());
        for p in &e.problems {
            eprintln!("  {p}");
        }
        ExitCode::from(2)
    })
}

fn parse_stream(s: &str) -> Result<Stream, String> {
    Stream::parse(s).ok_or_else(|| format!("`{s}` is not a stream (incidents, sensors, fraud)"))
}
