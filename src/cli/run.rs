//! `riskstream run`: the service. Starts the metrics server, the console (if enabled) and
//! the registry follower, creates the state topics, then runs the pipeline in the
//! configured mode (at-least-once, exactly-once or scale-out) until SIGTERM or ctrl-c,
//! and stops everything it started. A pipeline failure is logged and exits 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureProducer;

use riskstream::clock::{Clock, SystemClock};
use riskstream::config::{self, Config};
use riskstream::console::ConsoleState;
use riskstream::kafka::client_config;
use riskstream::pipeline::{build_sinks, Pipeline, PipelineError, RunSummary};
use riskstream::registry::topic::Follower;
use riskstream::shutdown::{self, ShutdownTrigger};
use riskstream::sink::{KafkaDeadLetters, SinkCtx};
use riskstream::source::kafka::{KafkaSource, Readiness};
use riskstream::state::changelog::ChangelogWriter;
use riskstream::telemetry::{metrics::Metrics, server};

use super::producer::{producer, producer_with};

#[derive(clap::Args)]
pub struct Args {
    /// Config file (TOML), e.g. config/default.toml.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// The console's state and the tasks serving it, joined on the way out.
type Console = (Arc<ConsoleState>, Vec<tokio::task::JoinHandle<()>>);

pub async fn main(cfg: Config) -> anyhow::Result<ExitCode> {
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
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
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
    if cfg.state.changelog && !ensure_changelog_topics(&cfg, &trigger).await? {
        return Ok(ExitCode::SUCCESS);
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
    let result = run_pipeline(&cfg, pipeline, source, p, &txn_id, &trigger).await?;
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

/// Creates the state changelog topics; `Ok(false)` when SIGTERM came first.
async fn ensure_changelog_topics(cfg: &Config, trigger: &ShutdownTrigger) -> anyhow::Result<bool> {
    // A broker that has just started may refuse admin requests for a few seconds.
    // SIGTERM meanwhile (a wrong password never gets further) stops at once.
    let mut stopping = trigger.subscribe();
    let mut tries = 0;
    loop {
        let created = tokio::select! {
            _ = stopping.recv() => return Ok(false),
            r = riskstream::state::changelog::ensure_topics(cfg) => r,
        };
        match created {
            Ok(()) => return Ok(true),
            Err(e) if tries < 30 => {
                tries += 1;
                tracing::warn!(error = %e, "changelog topics not ready; retrying");
                tokio::select! {
                    _ = stopping.recv() => return Ok(false),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(e) => return Err(e).context("creating the state changelog topics"),
        }
    }
}

/// The pipeline in the configured mode until it stops. The outer `Err` is a failure to
/// start it (printed by `main`, exit 1); the inner one is the pipeline's own failure
/// (logged, exit 1, after everything started here is stopped).
async fn run_pipeline(
    cfg: &Config,
    mut pipeline: Pipeline,
    source: KafkaSource,
    p: FutureProducer,
    txn_id: &str,
    trigger: &ShutdownTrigger,
) -> anyhow::Result<Result<RunSummary, PipelineError>> {
    let result = if cfg.processing.scale_out {
        tracing::info!(transactional_id = %txn_id, partitions = cfg.state.partitions, "scale-out: repartitioned tasks in Kafka transactions");
        pipeline = pipeline.with_changelog(ChangelogWriter::new(cfg, p.clone()));
        pipeline.run_scale_out(source, p, trigger.clone()).await
    } else if cfg.processing.transactional() {
        tracing::info!(transactional_id = %txn_id, "exactly-once: Kafka transactions");
        pipeline = pipeline.with_changelog(ChangelogWriter::new(cfg, p.clone()));
        pipeline.run_exactly_once(source, p, trigger.clone()).await
    } else {
        if cfg.state.changelog {
            // State snapshots and input offsets commit together in transactions of their
            // own; init fences a previous life of this instance and aborts its open one.
            let sp = producer_with(cfg, Some(txn_id))?;
            tokio::task::block_in_place(|| {
                use rdkafka::producer::Producer;
                sp.init_transactions(Duration::from_secs(30))
            })
            .context("initialising the state transactions")?;
            pipeline = pipeline.with_changelog(ChangelogWriter::new(cfg, sp));
            tokio::task::block_in_place(|| pipeline.restore(Duration::from_secs(300)))
                .context("restoring state from the changelog")?;
        }
        pipeline.run(source, trigger.clone()).await
    };
    Ok(result)
}

/// The registry topic: created (compacted) if missing, read to its end into the
/// config's points, then followed on a thread of its own while the service runs.
async fn start_registry(cfg: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Follower> {
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
    clock: Arc<dyn Clock>,
    trigger: &ShutdownTrigger,
) -> anyhow::Result<Console> {
    use riskstream::console::{actions, server as console_server, Tokens};
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
