//! The `riskstream` binary: CLI, config loading, telemetry setup, run until SIGTERM.
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rdkafka::producer::FutureProducer;

use riskstream::clock::SystemClock;
use riskstream::config::{self, Config};
use riskstream::decode::Stream;
use riskstream::detect::DetectorSet;
use riskstream::kafka::{client_config, set_bounds};
use riskstream::pipeline::{build_sinks, Pipeline};
use riskstream::shutdown;
use riskstream::sink::{KafkaDeadLetters, LogDeadLetters, SinkConfig, SinkCtx};
use riskstream::source::kafka::{KafkaSource, Readiness};
use riskstream::source::replay::ReplaySource;
use riskstream::source::Source;
use riskstream::state::changelog::ChangelogWriter;
use riskstream::telemetry::{logging, metrics::Metrics, server};

/// Risk early-warning stream processor: reads incidents, industrial sensor readings and
/// fraud reports from Kafka, scores them with rolling statistical detectors, and publishes
/// alert episodes (blue/yellow/orange/red) routed to the city's command centers.
#[derive(Parser)]
#[command(name = "riskstream", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The service: Kafka in, alerts out, metrics on /metrics. Stops cleanly on SIGTERM or
    /// ctrl-c (finishes in-flight work, commits offsets, exits 0).
    Run {
        /// Config file (TOML), e.g. config/default.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The same pipeline over NDJSON files (`-` = stdin); alerts as NDJSON on stdout.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// The stream of every input; otherwise taken from each file's name
        /// (incidents*.ndjson, sensor*.ndjson, fraud*.ndjson).
        #[arg(long, value_parser = parse_stream)]
        stream: Option<Stream>,
        /// Send alerts to the config's sinks (and dead letters to Kafka) instead of stdout.
        #[arg(long)]
        config_sinks: bool,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Validates a config; prints every problem with its path and exits 2 on any.
    CheckConfig { file: PathBuf },
    /// One CSV line per input event, in input order: `ts,key,score`, where score in [0,1]
    /// is the strongest normalized anomaly score of the enabled detectors (0.5 = firing).
    Score {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_parser = parse_stream)]
        stream: Option<Stream>,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Replays labelled data through the real pipeline and scores the alert episodes.
    /// `simulate` (default): a `simulate --out` directory; precision, recall, false alerts
    /// per 10k events and detection delay per stream and detector. `skab` and `csv`:
    /// labelled recorded series, a fresh pipeline per file; anomalies caught, false
    /// episodes per 10k readings, delays, alert messages, and SKAB's per-row F1/FAR/MAR.
    /// A table, or JSON with --json.
    Backtest {
        #[arg(long, short)]
        config: PathBuf,
        /// simulate: a directory with incidents*.ndjson, sensor*.ndjson, fraud*.ndjson and
        /// labels.jsonl. skab: the SKAB directory (valve1/, valve2/, other/,
        /// anomaly-free/). csv: `timestamp,value,label` files or directories of them.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = BacktestFormat::Simulate)]
        format: BacktestFormat,
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
    },
    /// A generated city's three streams with labelled injected anomalies (gas leaks and
    /// steps, drift, stuck and offline sensors, site events, incident surges and a
    /// county-wide rise, fraud bursts, a spreading account, a scheme spike: one round per
    /// simulated day), streamed to NDJSON files plus labels.jsonl, or to the input topics.
    /// Plant realism that is not a hazard is labelled too, with `"hazard": false` and
    /// `"expected_level": "none"`: quantized, heavy-tailed (Student-t) and daily-cycling
    /// sensors (whole run), maintenance level shifts of 3-5 sigma for hours, 10-20 minute
    /// gaps, and a site's 2-hour late upload arriving behind the watermark. backtest counts
    /// an alert above blue inside one as a false alarm (docs/DETECTORS.md).
    Simulate {
        /// Config for the region hierarchy, brokers and topics.
        #[arg(long, short, default_value = "config/default.toml")]
        config: PathBuf,
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
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BacktestFormat {
    /// A `riskstream simulate --out` directory.
    Simulate,
    /// SKAB's CSVs (`;`-separated, one experiment per file).
    Skab,
    /// One `timestamp,value,label` CSV per sensor series.
    Csv,
}

fn parse_stream(s: &str) -> Result<Stream, String> {
    Stream::parse(s).ok_or_else(|| format!("`{s}` is not a stream (incidents, sensors, fraud)"))
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
        Cmd::Backtest { .. } => logging::init_with(cli.log_format, "warn"),
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
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads a config or prints every problem and returns exit code 2.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("{}: {} problem(s)", path.display(), e.problems.len());
        for p in &e.problems {
            eprintln!("  {p}");
        }
        ExitCode::from(2)
    })
}

fn producer(cfg: &Config) -> anyhow::Result<FutureProducer> {
    producer_with(cfg, None)
}

/// The pipeline's producer; `transactional_id` makes it transactional (exactly-once).
fn producer_with(cfg: &Config, transactional_id: Option<&str>) -> anyhow::Result<FutureProducer> {
    let mut c = client_config(cfg);
    let message_timeout = if let Some(id) = transactional_id {
        c.set("transactional.id", id);
        set_bounds(&mut c, &[("transaction.timeout.ms", "60000")], cfg);
        // A delivery may not outlive its transaction (librdkafka refuses the config).
        let txn_ms: u64 = c
            .get("transaction.timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60_000);
        txn_ms.saturating_sub(5_000).max(1_000).to_string()
    } else {
        "120000".to_string()
    };
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", &message_timeout);
    // Alerts and dead letters are few and each holds back an input's offset and the
    // event-to-alert latency: wait 1 ms, not 5, for a batch to fill (issue 6).
    set_bounds(&mut c, &[("linger.ms", "1")], cfg);
    // The producer queue's memory bound (issue 7): alerts, dead letters and changelog
    // writes wait in it for the broker; on QueueFull the pipeline waits (backpressure,
    // never a drop). librdkafka's default is 1 GiB, reachable by a storm of large dead
    // letters (each a copy of an input, up to the broker's 1 MB); 64 MiB still holds
    // 100000 (`queue.buffering.max.messages`, librdkafka's, kept) alerts or state
    // records of ~650 B, so only such a storm or a huge state flush ever waits on it.
    set_bounds(&mut c, &[("queue.buffering.max.kbytes", "65536")], cfg);
    c.create().context("creating the Kafka producer")
}

async fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::CheckConfig { file } => {
            let c = match load(&file) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let d =
                c.detectors.incidents.len() + c.detectors.sensors.len() + c.detectors.fraud.len();
            println!(
                "{}: ok ({d} detectors, {} sinks, {} counties, {} monitoring points in the file)",
                file.display(),
                c.sinks.len(),
                c.regions.county_count(),
                c.points.len()
            );
            // What reaches librdkafka besides the brokers; secret values redacted.
            if !c.kafka.properties.is_empty() {
                println!(
                    "  kafka.properties: {}",
                    config::redact::Properties(&c.kafka.properties)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            run(cfg).await
        }
        Cmd::Replay {
            config,
            stream,
            config_sinks,
            inputs,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let source = match ReplaySource::new(&inputs, stream) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let metrics = Arc::new(Metrics::new());
            let (sinks, dlq): (_, Arc<dyn riskstream::sink::DeadLetters>) = if config_sinks {
                let p = producer(&cfg)?;
                let s = build_sinks(
                    &cfg,
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
                let s =
                    SinkConfig::Stdout(Default::default()).build("stdout", &SinkCtx::default())?;
                (vec![s], Arc::new(LogDeadLetters))
            };
            let (trigger, _) = shutdown::channel();
            tokio::spawn(shutdown::on_signals(trigger.clone()));
            let p = Pipeline::new(&cfg, sinks, dlq, metrics, Arc::new(SystemClock));
            let s = p.run(source, trigger).await?;
            eprintln!(
                "replayed {} inputs: {} invalid, {} late, {} duplicates, {} alert messages",
                s.consumed, s.invalid, s.late, s.duplicates, s.alerts
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Score {
            config,
            stream,
            inputs,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let mut source = match ReplaySource::new(&inputs, stream) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            score(&cfg, &mut source).await
        }
        Cmd::Backtest {
            config,
            inputs,
            format,
            kind,
            labels,
            grace,
            json,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            backtest(&cfg, &inputs, format, &kind, labels, grace, json).await
        }
        Cmd::Simulate {
            config,
            out,
            to_kafka,
            hours,
            seed,
            rate,
            sites,
            start,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let start = match start {
                Some(s) => match chrono::DateTime::parse_from_rfc3339(&s) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: --start `{s}`: {e}");
                        return Ok(ExitCode::from(2));
                    }
                },
                None => {
                    let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset");
                    (chrono::Utc::now() - chrono::Duration::seconds((hours * 3600.0) as i64))
                        .with_timezone(&cst)
                }
            };
            if !riskstream::detect::score::positive(hours) || sites == 0 {
                eprintln!("error: --hours must be > 0 and --sites >= 1");
                return Ok(ExitCode::from(2));
            }
            let sim = riskstream::simulate::Simulation::new(
                &riskstream::simulate::SimConfig {
                    hours,
                    seed,
                    start,
                    sites,
                },
                &cfg.regions,
            );
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
                    let again = riskstream::simulate::Simulation::new(
                        &riskstream::simulate::SimConfig {
                            hours,
                            seed,
                            start,
                            sites,
                        },
                        &cfg.regions,
                    );
                    produce_city(&cfg, again, rate).await?;
                }
            } else {
                produce_city(&cfg, sim, rate).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(Readiness::default());
    let (trigger, stop) = shutdown::channel();
    let addr = cfg.metrics.addr.parse().context("metrics.addr")?;
    let (bound, server) = server::serve(addr, metrics.clone(), ready.clone(), stop)
        .await
        .with_context(|| format!("binding the metrics server on {addr}"))?;
    tracing::info!(%bound, "metrics on http://{bound}/metrics, health on /healthz and /readyz");
    // Exactly-once and scale-out both run in Kafka transactions.
    let exactly_once = cfg.processing.transactional();
    let txn_id = format!("{}-{}", cfg.kafka.group_id, cfg.processing.instance_id);
    let p = producer_with(&cfg, exactly_once.then_some(txn_id.as_str()))?;
    let sinks = build_sinks(
        &cfg,
        &SinkCtx {
            producer: Some(p.clone()),
        },
    )?;
    let dlq = Arc::new(KafkaDeadLetters {
        producer: p.clone(),
        topic: cfg.topics.dead_letter.clone(),
    });
    let clock: Arc<dyn riskstream::clock::Clock> = Arc::new(SystemClock);
    let console = if cfg.console.enabled {
        // Operators' actions are written outside the pipeline's transactions.
        let cp = if exactly_once {
            producer(&cfg)?
        } else {
            p.clone()
        };
        Some(start_console(&cfg, cp, metrics.clone(), clock.clone(), &trigger).await?)
    } else {
        None
    };
    tokio::spawn(shutdown::on_signals(trigger.clone()));
    let mut pipeline = Pipeline::new(&cfg, sinks, dlq, metrics.clone(), clock).live();
    if let Some((state, _)) = &console {
        // Every instance reads the whole actions topic, so every one silences alike.
        pipeline = pipeline
            .with_shelves(state.shelves())
            .with_console(state.clone());
    }
    tracing::info!(
        brokers = %cfg.kafka.brokers,
        group = %cfg.kafka.group_id,
        properties = %config::redact::Properties(&cfg.kafka.properties),
        "connecting to Kafka"
    );
    if cfg.state.changelog {
        // A broker that has just started may refuse admin requests for a few seconds.
        // SIGTERM meanwhile (a wrong password never gets further) stops at once.
        let mut stopping = trigger.subscribe();
        let mut tries = 0;
        loop {
            let created = tokio::select! {
                _ = stopping.recv() => return Ok(ExitCode::SUCCESS),
                r = riskstream::state::changelog::ensure_topics(&cfg) => r,
            };
            match created {
                Ok(()) => break,
                Err(e) if tries < 30 => {
                    tries += 1;
                    tracing::warn!(error = %e, "changelog topics not ready; retrying");
                    tokio::select! {
                        _ = stopping.recv() => return Ok(ExitCode::SUCCESS),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(e) => return Err(e).context("creating the state changelog topics"),
            }
        }
    }
    // Before the first input: every reading is judged with the registry as it stands.
    let mut stopping = trigger.subscribe();
    let registry = tokio::select! {
        _ = stopping.recv() => return Ok(ExitCode::SUCCESS),
        r = start_registry(&cfg, metrics.clone()) => r?,
    };
    // After the state topics exist: a consumer that subscribes to a missing repartition
    // topic leaves it out of its group membership until the next rebalance.
    let source = KafkaSource::new(&cfg, metrics.clone(), ready)?;
    let result = if cfg.processing.scale_out {
        tracing::info!(transactional_id = %txn_id, partitions = cfg.state.partitions, "scale-out: repartitioned tasks in Kafka transactions");
        pipeline = pipeline.with_changelog(ChangelogWriter::new(&cfg, p.clone()));
        pipeline.run_scale_out(source, p, trigger.clone()).await
    } else if exactly_once {
        tracing::info!(transactional_id = %txn_id, "exactly-once: Kafka transactions");
        pipeline = pipeline.with_changelog(ChangelogWriter::new(&cfg, p.clone()));
        pipeline.run_exactly_once(source, p, trigger.clone()).await
    } else {
        if cfg.state.changelog {
            // State snapshots and input offsets commit together in transactions of their
            // own; init fences a previous life of this instance and aborts its open one.
            let sp = producer_with(&cfg, Some(&txn_id))?;
            tokio::task::block_in_place(|| {
                use rdkafka::producer::Producer;
                sp.init_transactions(Duration::from_secs(30))
            })
            .context("initialising the state transactions")?;
            pipeline = pipeline.with_changelog(ChangelogWriter::new(&cfg, sp));
            tokio::task::block_in_place(|| pipeline.restore(Duration::from_secs(300)))
                .context("restoring state from the changelog")?;
        }
        pipeline.run(source, trigger.clone()).await
    };
    trigger.trigger();
    tokio::task::block_in_place(|| registry.stop());
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    if let Some((_, tasks)) = console {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
    }
    match result {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!(error = %e, "stopped on failure");
            Ok(ExitCode::from(1))
        }
    }
}

/// The registry topic: created (compacted) if missing, read to its end into the
/// config's points, then followed on a thread of its own while the service runs.
async fn start_registry(
    cfg: &Config,
    metrics: Arc<Metrics>,
) -> anyhow::Result<riskstream::registry::topic::Follower> {
    use riskstream::registry::topic;
    let mut tries = 0;
    loop {
        match topic::ensure_topic(cfg).await {
            Ok(()) => break,
            // A broker that has just started may refuse admin requests for a few seconds.
            Err(e) if tries < 30 => {
                tries += 1;
                tracing::warn!(error = %e, "registry topic not ready; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("creating the registry topic"),
        }
    }
    let (loaded, follower) = tokio::task::block_in_place(|| {
        metrics.registry_points.set(cfg.points.len() as i64);
        topic::start(
            cfg,
            cfg.points.clone(),
            metrics.clone(),
            Duration::from_secs(60),
        )
    })
    .context("reading the registry topic")?;
    tracing::info!(
        topic = %cfg.registry.topic,
        records = loaded.records,
        rejected = loaded.rejected,
        points = cfg.points.len(),
        "registry loaded"
    );
    Ok(follower)
}

/// The web console: rebuilds the action state from the actions topic, then serves.
async fn start_console(
    cfg: &Config,
    producer: FutureProducer,
    metrics: Arc<Metrics>,
    clock: Arc<dyn riskstream::clock::Clock>,
    trigger: &shutdown::ShutdownTrigger,
) -> anyhow::Result<(
    Arc<riskstream::console::ConsoleState>,
    Vec<tokio::task::JoinHandle<()>>,
)> {
    use riskstream::console::{actions, server as console_server, ConsoleState, Tokens};
    let c = &cfg.console;
    let state = Arc::new(ConsoleState::new(clock, c));
    let base = client_config(cfg);
    actions::ensure_topic(&base, &c.actions_topic).await;
    let follower = actions::follow(
        &base,
        &c.actions_topic,
        state.clone(),
        Duration::from_secs(30),
        trigger.subscribe(),
    )
    .await
    .with_context(|| format!("reading the console actions topic `{}`", c.actions_topic))?;
    let log = Arc::new(actions::ActionLog {
        producer,
        topic: c.actions_topic.clone(),
    });
    let escalator = tokio::spawn(riskstream::console::escalate::run(
        state.clone(),
        log.clone(),
        metrics.clone(),
        cfg.regions.clone(),
        c.ack_limits,
        Duration::from_secs(1),
        trigger.subscribe(),
    ));
    let app = console_server::ConsoleApp {
        state: state.clone(),
        log,
        metrics,
        regions: cfg.regions.clone(),
        tokens: Tokens::new(&c.tokens, cfg.regions.city_code()),
        read_requires_token: c.read_requires_token,
        ack_limits: c.ack_limits,
        shutdown: trigger.subscribe(),
        points: cfg.points.clone(),
        max_shelve: c.max_shelve,
    };
    let addr = c.addr.parse().context("console.addr")?;
    let (bound, server) = console_server::serve(addr, app)
        .await
        .with_context(|| format!("binding the console on {addr}"))?;
    tracing::info!(%bound, tokens = c.tokens.len(), "console on http://{bound}/");
    // Retention sweeps even when no alert arrives.
    let sweeper = {
        let state = state.clone();
        let mut stop = trigger.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.recv() => break,
                    _ = tick.tick() => state.prune(),
                }
            }
        })
    };
    Ok((state, vec![server, follower, sweeper, escalator]))
}

/// `riskstream backtest`: the simulate format, or recorded series (a fresh pipeline per file).
async fn backtest(
    cfg: &Config,
    inputs: &[PathBuf],
    format: BacktestFormat,
    kind: &str,
    labels: Option<PathBuf>,
    grace: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use riskstream::backtest::{self, recorded};
    let one_dir = || match inputs {
        [dir] => Ok(dir),
        _ => Err(backtest::BacktestError::Usage(format!(
            "expected one directory, got {} inputs",
            inputs.len()
        ))),
    };
    let started = std::time::Instant::now();
    if format == BacktestFormat::Simulate {
        let prepared = one_dir().and_then(|dir| {
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
        return Ok(ExitCode::SUCCESS);
    }
    let (name, series) = match format {
        BacktestFormat::Skab => (
            "skab",
            one_dir().and_then(|dir| recorded::read_skab_dir(dir)),
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

/// Streams a run to the input topics (optionally paced), with progress lines on stderr.
/// The city's monitoring points to the registry topic (key `sensor_id`), before its
/// readings: a running riskstream judges them with the points' own limits.
async fn produce_points(
    cfg: &Config,
    p: &FutureProducer,
    points: &[riskstream::registry::Point],
) -> anyhow::Result<()> {
    use rdkafka::producer::FutureRecord;
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

async fn produce_city(
    cfg: &Config,
    sim: riskstream::simulate::Simulation,
    rate: u64,
) -> anyhow::Result<()> {
    use rdkafka::producer::FutureRecord;
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
