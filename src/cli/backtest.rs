//! `riskstream backtest`: replays labelled data through the real pipeline and prints the
//! scores (a table, or JSON with `--json`). The simulate format is one directory; SKAB and
//! CSV series are recorded data, one fresh pipeline per file. Unreadable inputs and
//! readings that do not decode exit 2; a pipeline failure exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use riskstream::backtest::{self, recorded};
use riskstream::config::Config;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    pub config: PathBuf,
    /// simulate: a directory with incidents*.ndjson, sensor*.ndjson, fraud*.ndjson and
    /// labels.jsonl. skab: the SKAB directory (valve1/, valve2/, other/,
    /// anomaly-free/). csv: `timestamp,value,label` files or directories of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Simulate)]
    format: Format,
    /// csv: the sensor kind of every series.
    #[arg(long, default_value = "generic")]
    kind: String,
    /// simulate: the labels file; default DIR/labels.jsonl.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// simulate: how long after a label's end an episode may still start and count,
    /// e.g. 10m, 90s (recorded data has none: its labels cover the whole fault).
    #[arg(long, default_value = "10m", value_parser = parse_grace)]
    grace: i64,
    /// The report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// A `riskstream simulate --out` directory.
    Simulate,
    /// SKAB's CSVs (`;`-separated, one experiment per file).
    Skab,
    /// One `timestamp,value,label` CSV per sensor series.
    Csv,
}

/// `90s`, `10m`, `1h` or plain seconds -> seconds.
fn parse_grace(s: &str) -> Result<i64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 10m, 1h"))?;
    match unit {
        "" | "s" => Ok(n),
        "m" => Ok(n * 60),
        "h" => Ok(n * 3600),
        _ => Err(format!("`{s}` is not a duration like 90s, 10m, 1h")),
    }
}

pub async fn main(cfg: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        inputs,
        format,
        kind,
        labels,
        grace,
        json,
        ..
    } = args;
    if format == Format::Simulate {
        simulated(cfg, &inputs, labels, grace, json).await
    } else {
        recorded_series(cfg, &inputs, format, &kind, json).await
    }
}

/// The one-directory error of the simulate and skab formats (exit 2).
fn one_dir(inputs: &[PathBuf]) -> Result<&PathBuf, backtest::BacktestError> {
    match inputs {
        [dir] => Ok(dir),
        _ => Err(backtest::BacktestError::Usage(format!(
            "expected one directory, got {} inputs",
            inputs.len()
        ))),
    }
}

/// A `simulate --out` directory: its inputs, monitoring points and labels.
async fn simulated(
    cfg: &Config,
    inputs: &[PathBuf],
    labels: Option<PathBuf>,
    grace: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let prepared = one_dir(inputs).and_then(|dir| {
        let inputs = backtest::inputs_in(dir)?;
        let points = backtest::load_points(cfg, dir)?;
        let l = backtest::read_labels(&labels.unwrap_or_else(|| dir.join("labels.jsonl")))?;
        Ok((inputs, l, points))
    });
    let (inputs, labels, points) = match prepared {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (report, _) = backtest::run(cfg, &inputs, &labels, grace).await?;
    eprintln!(
        "backtest: {} events, {} episodes, {} labels, {points} monitoring points in {:.1}s",
        report.overall.events,
        report.overall.episodes,
        labels.len(),
        started.elapsed().as_secs_f64()
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// Recorded series (SKAB or CSV), a fresh pipeline per file.
async fn recorded_series(
    cfg: &Config,
    inputs: &[PathBuf],
    format: Format,
    kind: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let (name, series) = match format {
        Format::Skab => (
            "skab",
            one_dir(inputs).and_then(|dir| recorded::read_skab_dir(dir)),
        ),
        _ => ("csv", recorded::read_csv_inputs(inputs, kind)),
    };
    let series = match series {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let report = match recorded::run(cfg, name, series).await {
        Ok(r) => r,
        // A reading that does not decode is bad data (e.g. a kind the config rejects).
        Err(e @ backtest::BacktestError::Row { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "backtest: {} files, {} readings, {} episodes, {}/{} anomalies caught in {:.1}s",
        report.files,
        report.readings,
        report.overall.episodes,
        report.overall.caught,
        report.overall.anomalies,
        started.elapsed().as_secs_f64()
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
