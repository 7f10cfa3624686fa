//! `riskstream simulate`: a generated city with labelled anomalies, streamed to NDJSON
//! files (`--out`) and/or the input topics (`--to-kafka`, the monitoring points to the
//! registry topic first, paced by `--rate`, progress on stderr). Bad flags exit 2.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, FixedOffset};
use rdkafka::producer::{FutureProducer, FutureRecord};

use riskstream::config::Config;
use riskstream::simulate::{SimConfig, Simulation};

use super::producer::producer;

#[derive(clap::Args)]
pub struct Args {
    /// Config for the region hierarchy, brokers and topics.
    #[arg(long, short, default_value = "config/default.toml")]
    pub config: PathBuf,
    /// Write incidents.ndjson, sensor-readings.ndjson, fraud-reports.ndjson, labels.jsonl
    /// and points.ndjson (the city's monitoring points) here.
    #[arg(long, required_unless_present = "to_kafka")]
    out: Option<PathBuf>,
    /// Produce to the input topics (as well, with --out), with progress lines on stderr;
    /// the monitoring points first, to the registry topic.
    #[arg(long)]
    to_kafka: bool,
    /// Hours of event time to generate.
    #[arg(long, default_value_t = 4.0)]
    hours: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// With --to-kafka: events per second (0 = as fast as the broker takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Hazardous-chemical sites (3-6 sensors each: gas, H2S, temperature, pressure, tank).
    #[arg(long, default_value_t = 30)]
    sites: usize,
    /// First event time (RFC 3339); default: `hours` before now.
    #[arg(long)]
    start: Option<String>,
}

pub async fn main(cfg: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        out,
        to_kafka,
        hours,
        seed,
        rate,
        sites,
        start,
        ..
    } = args;
    let start = match start_time(start.as_deref(), hours) {
        Ok(t) => t,
        Err(msg) => {
            eprintln!("error: {msg}");
            return Ok(ExitCode::from(2));
        }
    };
    if !riskstream::detect::score::positive(hours) || sites == 0 {
        eprintln!("error: --hours must be > 0 and --sites >= 1");
        return Ok(ExitCode::from(2));
    }
    let sim_cfg = SimConfig {
        hours,
        seed,
        start,
        sites,
    };
    let sim = Simulation::new(&sim_cfg, &cfg.regions);
    let hazards = sim.labels().iter().filter(|l| l.hazard).count();
    eprintln!(
        "generated {hazards} labelled anomalies and {} not-a-hazard labels over {hours} h (seed {seed}); streaming events",
        sim.labels().len() - hazards
    );
    if let Some(dir) = out {
        let n = riskstream::simulate::write_files(sim, &dir)
            .with_context(|| format!("writing {}", dir.display()))?;
        eprintln!("wrote {n} events to {}", dir.display());
        if to_kafka {
            // The files hold the same run: regenerate rather than keep it in memory.
            let again = Simulation::new(&sim_cfg, &cfg.regions);
            produce_city(cfg, again, rate).await?;
        }
    } else {
        produce_city(cfg, sim, rate).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--start` parsed, or `hours` before now in China Standard Time; the error is the
/// message to print (exit 2).
fn start_time(start: Option<&str>, hours: f64) -> Result<DateTime<FixedOffset>, String> {
    match start {
        Some(s) => DateTime::parse_from_rfc3339(s).map_err(|e| format!("--start `{s}`: {e}")),
        None => {
            let cst = FixedOffset::east_opt(8 * 3600).expect("valid offset");
            Ok(
                (chrono::Utc::now() - chrono::Duration::seconds((hours * 3600.0) as i64))
                    .with_timezone(&cst),
            )
        }
    }
}

/// The city's monitoring points to the registry topic (key `sensor_id`), before its
/// readings: a running riskstream judges them with the points' own limits.
async fn produce_points(
    cfg: &Config,
    p: &FutureProducer,
    points: &[riskstream::registry::Point],
) -> anyhow::Result<()> {
    let topic = &cfg.registry.topic;
    let mut pending = Vec::with_capacity(points.len());
    for pt in points {
        let json = serde_json::to_string(pt)?;
        let rec = FutureRecord::to(topic).key(&pt.sensor_id).payload(&json);
        match p.send_result(rec) {
            Ok(f) => pending.push(f),
            Err((e, _)) => anyhow::bail!("producing to {topic}: {e}"),
        }
    }
    for f in pending {
        f.await
            .context("producer dropped")?
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing to {topic}"))?;
    }
    eprintln!("produced {} monitoring points to {topic}", points.len());
    // The service's registry follower fetches every 100 ms: let it take them first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Streams a run to the input topics (optionally paced), with progress lines on stderr.
async fn produce_city(cfg: &Config, sim: Simulation, rate: u64) -> anyhow::Result<()> {
    let p = producer(cfg)?;
    produce_points(cfg, &p, sim.points()).await?;
    let started = std::time::Instant::now();
    let mut last_report = started;
    let mut pending = Vec::with_capacity(1024);
    let mut sim = sim;
    let mut i = 0u64;
    while let Some(e) = sim.next() {
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let topic = cfg.topics.input(e.stream);
        loop {
            match p.send_result(FutureRecord::to(topic).key(&e.key).payload(&e.json)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err((e, _)) => anyhow::bail!("producing to {topic}: {e}"),
            }
        }
        i += 1;
        if pending.len() >= 1000 {
            for f in pending.drain(..) {
                f.await
                    .context("producer dropped")?
                    .map_err(|(e, _)| e)
                    .context("delivery")?;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = std::time::Instant::now();
            eprintln!(
                "produced {i} events, event time {} ({:.0}% of the run)",
                e.ts.format("%Y-%m-%d %H:%M"),
                100.0 * sim.progress()
            );
        }
    }
    for f in pending.drain(..) {
        f.await
            .context("producer dropped")?
            .map_err(|(e, _)| e)
            .context("delivery")?;
    }
    eprintln!(
        "produced {i} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
