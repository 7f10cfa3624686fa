//! `riskstream score`: one CSV line `ts,key,score` per decoded input event, in input
//! order, scored by the config's detectors alone (no policy, no sinks); invalid inputs
//! are skipped with a warning and counted on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use riskstream::config::Config;
use riskstream::decode::Stream;
use riskstream::detect::DetectorSet;
use riskstream::source::replay::ReplaySource;
use riskstream::source::Source;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    pub config: PathBuf,
    #[arg(long, value_parser = super::parse_stream)]
    stream: Option<Stream>,
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

pub async fn main(cfg: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let mut source = match ReplaySource::new(&args.inputs, args.stream) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    score(cfg, &mut source).await
}

async fn score(cfg: &Config, source: &mut ReplaySource) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let decoder = cfg.decoder();
    let ctx = cfg.build_ctx();
    let mut set = DetectorSet::new(
        &cfg.detectors.per_stream(),
        cfg.processing.allowed_lateness,
        &ctx,
    );
    let mut signals = Vec::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    writeln!(out, "ts,key,score")?;
    let (mut n, mut bad) = (0u64, 0u64);
    while let Some(env) = source.next().await? {
        match decoder.decode(env.stream, &env.payload) {
            Ok(d) => {
                let o = set.observe(&d.event, &mut signals);
                signals.clear();
                n += 1;
                let key = d.event.key();
                let key = if key.contains([',', '"']) {
                    format!("\"{}\"", key.replace('"', "\"\""))
                } else {
                    key.to_string()
                };
                writeln!(out, "{},{key},{:.6}", d.event.ts().to_rfc3339(), o.score)?;
            }
            Err(e) => {
                bad += 1;
                tracing::warn!(origin = ?env.origin, error = %e, "skipped invalid input");
            }
        }
    }
    out.flush()?;
    eprintln!("scored {n} events ({bad} invalid inputs skipped)");
    Ok(ExitCode::SUCCESS)
}
