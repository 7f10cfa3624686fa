//! The Kafka producer the subcommands share (`run`, `replay --config-sinks`,
//! `simulate --to-kafka`): idempotent, `acks=all`, and memory-bounded; optionally
//! transactional for exactly-once and scale-out.

use anyhow::Context;
use rdkafka::producer::FutureProducer;

use riskstream::config::Config;
use riskstream::kafka::{client_config, set_bounds};

pub fn producer(cfg: &Config) -> anyhow::Result<FutureProducer> {
    producer_with(cfg, None)
}

/// The pipeline's producer; `transactional_id` makes it transactional (exactly-once).
pub fn producer_with(
    cfg: &Config,
    transactional_id: Option<&str>,
) -> anyhow::Result<FutureProducer> {
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
