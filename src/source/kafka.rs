//! Kafka source. Delivery guarantee: at-least-once.
//!
//! One consumer group reads the three input topics. `enable.auto.offset.store` is off:
//! an offset is stored (and then auto-committed every second) only when the pipeline says
//! everything the message caused (alerts, dead letters) was acknowledged, exactly as in
//! rust-rdkafka's `at_least_once` example. A crash re-delivers from the last commit.
//! librdkafka's statistics feed the consumer-lag gauges and readiness.
//!
//! Memory: librdkafka's prefetch queue is bounded by [`CONSUMER_BOUNDS`] (16 MiB of
//! payload by default); a backlog beyond it waits in Kafka, visible as consumer lag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::kafka::{client_config, set_bounds};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Statistics, TopicPartitionList};

use super::{Envelope, OffsetStore, Origin, Source, SourceError};
use crate::config::{Config, Guarantee};
use crate::telemetry::metrics::Metrics;

/// What /readyz reports.
#[derive(Debug, Default)]
pub struct Readiness {
    pub assigned: AtomicBool,
    pub broker_up: AtomicBool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed) && self.broker_up.load(Ordering::Relaxed)
    }
}

pub struct SourceContext {
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    /// Assignments and revocations so far (scale-out: tasks never outlive a rebalance).
    rebalances: Arc<AtomicU64>,
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        let up = stats.brokers.values().any(|b| b.state == "UP");
        self.ready.broker_up.store(up, Ordering::Relaxed);
        for (topic, t) in &stats.topics {
            for (p, ps) in &t.partitions {
                // Partition -1 is librdkafka's internal UA partition; -1 means unknown.
                // Offsets committed inside a producer transaction (durable state,
                // exactly-once) are not seen by the consumer's own `consumer_lag`, so
                // fall back to the end (last stable offset) minus the consumed position.
                let end = if ps.ls_offset >= 0 {
                    ps.ls_offset
                } else {
                    ps.hi_offset
                };
                let lag = if ps.consumer_lag >= 0 {
                    ps.consumer_lag
                } else if ps.app_offset >= 0 && end >= 0 {
                    (end - ps.app_offset).max(0)
                } else {
                    -1
                };
                if *p >= 0 && lag >= 0 {
                    self.metrics.set_lag(topic, *p, lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, _c: &rdkafka::consumer::BaseConsumer<Self>, r: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        match r {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                self.ready
                    .assigned
                    .store(tpl.count() > 0, Ordering::Relaxed);
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                self.ready.assigned.store(false, Ordering::Relaxed);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            // "No offset stored" is routine when nothing new was handled.
            if !matches!(
                e,
                rdkafka::error::KafkaError::ConsumerCommit(
                    rdkafka::types::RDKafkaErrorCode::NoOffset
                )
            ) {
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }
}

pub type Consumer_ = StreamConsumer<SourceContext>;

/// The consumer's memory bound (issue 7, overload). librdkafka fetches ahead of the
/// pipeline until its local queue holds `queued.min.messages` messages or
/// `queued.max.messages.kbytes` of payload, plus at most one fetch response
/// (`fetch.max.bytes`) in flight. Under overload that queue is always full, so these
/// numbers are the consumer's memory, not a throughput knob: the rest of the backlog
/// stays in Kafka and shows as `riskstream_consumer_lag`. Each is set only when
/// `[kafka.properties]` does not set it (see docs/PERFORMANCE.md, "Memory bounds").
pub const CONSUMER_BOUNDS: [(&str, &str); 3] = [
    // librdkafka's default is 64 MiB (~220k messages of ~300 B). 16 MiB is still ~55k
    // messages, over 0.4 s of work at the release build's ~130k events/s: enough to
    // hide a fetch round trip. `fetch.max.bytes` (default 50 MB) and
    // `receive.message.max.bytes` follow it down unless set (librdkafka clamps them).
    ("queued.max.messages.kbytes", "16384"),
    // Each queued message also costs librdkafka ~320 B of bookkeeping (its op and
    // message structs) that the kbytes bound does not count: ~32 MB at the default
    // count of 100000 when messages are small; 50000 keeps it near 16 MB.
    ("queued.min.messages", "50000"),
    // Once the queue is full, librdkafka postpones a partition's next fetch by this
    // much (default 1000 ms) without looking again: with a queue of ~0.4 s of work the
    // pipeline would go hungry for the rest of the second.
    ("fetch.queue.backoff.ms", "100"),
];

pub struct KafkaSource {
    consumer: Arc<Consumer_>,
    topics: crate::config::TopicsConfig,
    /// Where a partition without a committed offset starts (`auto_offset_reset`).
    reset_to_end: bool,
    /// Scale-out: the repartition topics, by stream index (read like inputs).
    repartition: Option<[String; 3]>,
    /// The topic names handed out in origins, one allocation per topic.
    names: Vec<Arc<str>>,
    rebalances: Arc<AtomicU64>,
}

impl KafkaSource {
    pub fn new(
        cfg: &Config,
        metrics: Arc<Metrics>,
        ready: Arc<Readiness>,
    ) -> Result<Self, SourceError> {
        let mut c = client_config(cfg);
        c.set("group.id", &cfg.kafka.group_id)
            .set("auto.offset.reset", &cfg.kafka.auto_offset_reset)
            .set("statistics.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            // Static membership: a restarted instance takes its partitions back at once
            // instead of after the dead member's session timeout (a crash-looping or
            // rolling-updated instance does not make the whole group rebalance).
            .set("group.instance.id", &cfg.processing.instance_id);
        set_bounds(&mut c, &CONSUMER_BOUNDS, cfg);
        if cfg.processing.guarantee == Guarantee::ExactlyOnce || cfg.state.changelog {
            // Offsets go into a producer transaction (send_offsets_to_transaction): with
            // the outputs (exactly-once) or with the state snapshot (durable state).
            c.set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed");
        } else {
            c.set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                .set("enable.auto.offset.store", "false");
        }
        let rebalances = Arc::new(AtomicU64::new(0));
        let consumer: Consumer_ = c.create_with_context(SourceContext {
            metrics,
            ready,
            rebalances: rebalances.clone(),
        })?;
        let repartition = cfg
            .processing
            .scale_out
            .then(|| crate::kafka::repartition_topics(cfg));
        let mut topics: Vec<&str> = crate::decode::Stream::ALL
            .iter()
            .map(|s| cfg.topics.input(*s))
            .collect();
        topics.extend(repartition.iter().flatten().map(String::as_str));
        consumer.subscribe(&topics)?;
        tracing::info!(
            ?topics,
            group = %cfg.kafka.group_id,
            brokers = %cfg.kafka.brokers,
            properties = %crate::config::redact::Properties(&cfg.kafka.properties),
            "subscribed"
        );
        let consumer = Arc::new(consumer);
        // Never destroyed: closing a subscribed consumer can hang for ever when an
        // assignment arrives during the close (confluentinc/librdkafka#4884, seen here
        // as a riskstream that did not exit after SIGTERM). Offsets are committed
        // explicitly before exit and static members do not leave the group on close,
        // so the close does nothing we need; the process exit frees it.
        std::mem::forget(Arc::clone(&consumer));
        Ok(Self {
            consumer,
            topics: cfg.topics.clone(),
            repartition,
            rebalances,
            names: Vec::new(),
            reset_to_end: matches!(
                cfg.kafka.auto_offset_reset.as_str(),
                "latest" | "end" | "largest"
            ),
        })
    }
}

impl KafkaSource {
    /// The group's generation and member id, for `send_offsets_to_transaction`: the
    /// broker refuses offsets from a member fenced by a newer generation (EOS v2).
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// The shared name of `topic` in `names` (a handful of topics: a linear search). A
    /// function of the field, not of `self`, so a message borrowed from the consumer can
    /// be named without cloning the consumer's handle per message.
    fn shared_name(names: &mut Vec<Arc<str>>, topic: &str) -> Arc<str> {
        if let Some(n) = names.iter().find(|n| &***n == topic) {
            return n.clone();
        }
        let n: Arc<str> = topic.into();
        names.push(n.clone());
        n
    }

    /// How many assignments and revocations this consumer has seen.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::SeqCst)
    }

    /// Scale-out: the repartition partitions assigned now, as (stream, partition).
    pub fn assigned_tasks(&self) -> Vec<(crate::decode::Stream, i32)> {
        let Ok(tpl) = self.consumer.assignment() else {
            return Vec::new();
        };
        tpl.elements()
            .iter()
            .filter_map(|e| Some((self.repartition_stream(e.topic())?, e.partition())))
            .collect()
    }

    /// The stream of a repartition topic (scale-out), `None` for any other topic.
    pub fn repartition_stream(&self, topic: &str) -> Option<crate::decode::Stream> {
        let names = self.repartition.as_ref()?;
        crate::decode::Stream::ALL
            .into_iter()
            .find(|s| names[s.index()] == topic)
    }

    /// Seeks every assigned partition back to its committed offset (exactly-once rewind
    /// after an aborted transaction).
    pub fn rewind(&self, timeout: std::time::Duration) -> Result<(), SourceError> {
        let committed = self.consumer.committed(timeout)?;
        let mut tpl = TopicPartitionList::new();
        for e in committed.elements() {
            let o = match e.offset() {
                rdkafka::Offset::Offset(o) => rdkafka::Offset::Offset(o),
                _ if self.reset_to_end => rdkafka::Offset::End,
                _ => rdkafka::Offset::Beginning,
            };
            tpl.add_partition_offset(e.topic(), e.partition(), o)?;
        }
        if tpl.count() > 0 {
            self.consumer.seek_partitions(tpl, timeout)?;
        }
        Ok(())
    }
}

struct KafkaOffsets(Arc<Consumer_>);

impl OffsetStore for KafkaOffsets {
    fn store(&self, origin: &Origin) -> Result<(), SourceError> {
        if let Origin::Kafka {
            topic,
            partition,
            offset,
        } = origin
        {
            // A partition revoked meanwhile refuses the store; its new owner re-reads it.
            if let Err(e) = self.0.store_offset(topic, *partition, *offset) {
                tracing::debug!(topic = &**topic, partition, offset, error = %e, "offset store refused");
            }
        }
        Ok(())
    }

    fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.0.group_metadata()
    }
}

impl Source for KafkaSource {
    async fn next(&mut self) -> Result<Option<Envelope>, SourceError> {
        loop {
            let m = match self.consumer.recv().await {
                Ok(m) => m,
                Err(e) => {
                    // Transient broker errors are retried by librdkafka; log and go on.
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Some(stream) = self
                .topics
                .stream_of(m.topic())
                .or_else(|| self.repartition_stream(m.topic()))
            else {
                continue;
            };
            return Ok(Some(Envelope {
                stream,
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                origin: Origin::Kafka {
                    topic: Self::shared_name(&mut self.names, m.topic()),
                    partition: m.partition(),
                    offset: m.offset(),
                },
                received: Instant::now(),
            }));
        }
    }

    fn offset_store(&self) -> Arc<dyn OffsetStore> {
        Arc::new(KafkaOffsets(self.consumer.clone()))
    }

    fn finish(&mut self) -> Result<(), SourceError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_bounds_yield_to_kafka_properties() {
        let cfg = crate::config::from_str(
            "[kafka.properties]\n\"queued.min.messages\" = \"7\"\n",
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            &[],
        )
        .unwrap();
        let mut c = client_config(&cfg);
        set_bounds(&mut c, &CONSUMER_BOUNDS, &cfg);
        assert_eq!(c.get("queued.min.messages"), Some("7"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("100"));
    }
}
