//! The compacted registry topic (`[registry] topic`, key `sensor_id`, a tombstone
//! removes the point), read the way the state changelog is on start: every partition
//! from its beginning to its end before the first input is consumed, so the first
//! reading is judged with the registry as it stands. Then one thread keeps following
//! the topic while the service runs, applying each record as it arrives: a limit
//! changed on the topic applies to the next reading decoded after it (within the
//! follower's fetch wait, ~100 ms), with no restart and no detector state touched.
//!
//! Delivery: no consumer group offsets are kept; every start reads the whole
//! (compacted) topic again, which is what makes it the registry's source of truth.
//! Partitions added to the topic while running are picked up at the next start.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{Applied, Registry};
use crate::config::Config;
use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("registry topic: {0}")]
    Kafka(#[from] KafkaError),
    #[error("registry topic `{topic}` not read to its end within {timeout:?}")]
    Timeout { topic: String, timeout: Duration },
}

/// Creates the registry topic if it is missing: compacted (latest point per key), one
/// partition (a city's points are a few megabytes at most).
pub async fn ensure_topic(cfg: &Config) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka::client_config(cfg).create()?;
    let t = NewTopic::new(&cfg.registry.topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics([&t], &opts).await? {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created the registry topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            // A cluster where topics are provisioned by its operators: reading the
            // topic (next) is what must work; creating it is a convenience.
            Err((
                t,
                e @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::PolicyViolation),
            )) => {
                tracing::warn!(topic = %t, error = %e, "cannot create the registry topic; reading it as it is")
            }
            Err((_, e)) => return Err(KafkaError::AdminOp(e).into()),
        }
    }
    Ok(())
}

/// What the start-up read found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub records: u64,
    /// Records that were not valid points (logged; the previous version stays).
    pub rejected: u64,
}

/// The thread that follows the topic; stops when dropped or [`Follower::stop`]ped.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Reads the registry topic to its end into `registry` (blocking, up to `timeout`),
/// then follows it on a thread of its own.
pub fn start(
    cfg: &Config,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) -> Result<(Loaded, Follower), TopicError> {
    let topic = cfg.registry.topic.clone();
    let consumer: BaseConsumer<Context> = crate::kafka::client_config(cfg)
        .set("group.id", format!("{}.registry", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // A change must reach the next reading quickly: an idle fetch answers in 100 ms.
        .set("fetch.wait.max.ms", "100")
        .create_with_context(Context)?;
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        match partitions_of(&consumer, &topic, timeout) {
            Ok(p) => break p,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(topic, error = %e, "registry topic lookup failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(&topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    // An empty partition is read already: one offsets query instead of waiting for a
    // fetch to report its end (every start of a deployment without points paid that).
    let mut pending: HashSet<i32> = partitions
        .into_iter()
        .filter(|p| {
            consumer
                .fetch_watermarks(&topic, *p, timeout)
                .map_or(true, |(low, high)| high > low)
        })
        .collect();
    let mut loaded = Loaded::default();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(TopicError::Timeout { topic, timeout });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "registry read error; retrying"),
            Some(Ok(m)) => {
                loaded.records += 1;
                loaded.rejected += u64::from(!apply(&registry, &metrics, &m));
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || follow(consumer, &registry, &metrics, &stop))
            .map_err(|e| KafkaError::Subscription(format!("registry thread: {e}")))?
    };
    Ok((
        loaded,
        Follower {
            stop,
            thread: Some(thread),
        },
    ))
}

/// Reaching a partition's end is what the start-up read waits for, and what an idle
/// follower meets after each update: not an error (librdkafka reports it as a global
/// one too).
struct Context;

impl rdkafka::ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(reason, "registry partition end")
            }
            e => tracing::warn!(error = %e, reason, "registry reader error"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Context {}

fn partitions_of(
    consumer: &BaseConsumer<Context>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut out = Vec::new();
    for t in md.topics() {
        if let Some(e) = t.error() {
            return Err(KafkaError::MetadataFetch(e.into()));
        }
        out.extend(t.partitions().iter().map(|p| p.id()));
    }
    Ok(out)
}

fn follow(
    consumer: BaseConsumer<Context>,
    registry: &Registry,
    metrics: &Metrics,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "registry read error; retrying"),
            Some(Ok(m)) => {
                apply(registry, metrics, &m);
            }
        }
    }
}

/// Applies one record; false (and a warning) when it was not a valid point.
fn apply(
    registry: &Registry,
    metrics: &Metrics,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> bool {
    let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
    let applied = registry.apply(&key, m.payload());
    let result = match &applied {
        Ok(Applied::Removed) => "removed",
        Ok(_) => "upserted",
        Err(_) => "rejected",
    };
    metrics.registry_records.with_label_values(&[result]).inc();
    metrics.registry_points.set(registry.len() as i64);
    match applied {
        Ok(a) => {
            tracing::debug!(sensor_id = %key, applied = ?a, "registry record");
            if a == Applied::Removed {
                tracing::info!(sensor_id = %key, "point removed from the registry");
            }
            true
        }
        Err(e) => {
            tracing::warn!(
                sensor_id = %super::point::clip(&key),
                offset = m.offset(),
                error = %e,
                "registry record is not a valid point; the previous version stays"
            );
            false
        }
    }
}
