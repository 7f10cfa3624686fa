//! `riskstream replay`: the real pipeline over NDJSON files (`-` = stdin), alerts and
//! incidents as NDJSON on stdout and dead letters logged; or, with `--config-sinks`, to
//! the config's sinks and the Kafka dead-letter topic. Stops on SIGTERM or ctrl-c.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use riskstream::clock::SystemClock;
use riskstream::config::Config;
use riskstream::decode::Stream;
use riskstream::pipeline::{build_sinks, Pipeline};
use riskstream::shutdown;
use riskstream::sink::{DeadLetters, KafkaDeadLetters, LogDeadLetters, SinkConfig, SinkCtx};
use riskstream::source::replay::ReplaySource;
use riskstream::telemetry::metrics::Metrics;

use super::producer::producer;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    pub config: PathBuf,
    /// The stream of every input; otherwise taken from each file's name
    /// (incidents*.ndjson, sensor*.ndjson, fraud*.ndjson).
    #[arg(long, value_parser = super::parse_stream)]
    stream: Option<Stream>,
    /// Send alerts to the config's sinks (and dead letters to Kafka) instead of stdout.
    #[arg(long)]
    config_sinks: bool,
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

pub async fn main(cfg: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let source = match ReplaySource::new(&args.inputs, args.stream) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let metrics = Arc::new(Metrics::new());
    let (sinks, dlq): (_, Arc<dyn DeadLetters>) = if args.config_sinks {
        let p = producer(cfg)?;
        let s = build_sinks(
            cfg,
            &SinkCtx {
                producer: Some(p.clone()),
            },
        )?;
        (
            s,
            Arc::new(KafkaDeadLetters {
                producer: p,
                topic: cfg.topics.dead_letter.clone(),
            }),
        )
    } else {
        let s = SinkConfig::Stdout(Default::default()).build("stdout", &SinkCtx::default())?;
        (vec![s], Arc::new(LogDeadLetters))
    };
    let (trigger, _) = shutdown::channel();
    tokio::spawn(shutdown::on_signals(trigger.clone()));
    let p = Pipeline::new(cfg, sinks, dlq, metrics, Arc::new(SystemClock));
    let s = p.run(source, trigger).await?;
    eprintln!(
        "replayed {} inputs: {} invalid, {} late, {} duplicates, {} alert messages",
        s.consumed, s.invalid, s.late, s.duplicates, s.alerts
    );
    Ok(ExitCode::SUCCESS)
}
