//! The Kafka side of durable state: the changelog topics, creating them, writing changed
//! keys, and reading them back on start.
//!
//! Records are keyed by state key, so the producer's key hash places each key on one
//! partition for good and a compacted topic keeps its latest value; restore reads every
//! partition from the beginning to its end in log order (latest wins). In exactly-once
//! mode the writes belong to the same transaction as the alerts and the input offsets,
//! and restore reads `read_committed`: an aborted transaction's state never comes back.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{Change, StateError};
use crate::config::Config;
use crate::decode::Stream;
use crate::kafka::{commit_with_offsets, repartition_topics, retrying, TXN_TIMEOUT};
use crate::sink::{send_with_backpressure, Ack, SinkError};

const SINK: &str = "state";

/// Writes changelog records with the pipeline's producer (transactional in exactly-once).
#[derive(Clone)]
pub struct ChangelogWriter {
    producer: FutureProducer,
    topics: [String; 3],
}

impl ChangelogWriter {
    pub fn new(cfg: &Config, producer: FutureProducer) -> Self {
        Self {
            producer,
            topics: topics(cfg),
        }
    }

    /// Enqueues one record; the [`Ack`] resolves when the broker has it.
    pub fn send(&self, stream: Stream, c: &Change) -> Result<Ack, SinkError> {
        self.send_to(stream, None, c)
    }

    /// Enqueues one record to `partition` (scale-out: a task's changelog partition is
    /// its repartition partition), or by the key's hash when `None`.
    pub fn send_to(
        &self,
        stream: Stream,
        partition: Option<i32>,
        c: &Change,
    ) -> Result<Ack, SinkError> {
        let mut rec: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&self.topics[stream.index()]).key(&c.key);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        if let Some(v) = &c.value {
            rec = rec.payload(v);
        }
        match self.producer.send_result(rec) {
            Ok(f) => Ok(crate::sink::kafka_ack(SINK.into(), f)),
            Err((e, _)) => Err(crate::sink::kafka_error(SINK, e)),
        }
    }
}

impl ChangelogWriter {
    /// At-least-once mode: writes a state snapshot and the offsets of the inputs it
    /// covers in one transaction, so a restore never sees state ahead of the committed
    /// offsets (or behind them). Aborts on failure.
    pub async fn commit(
        &self,
        snapshot: &[(Stream, Change)],
        offsets: &crate::source::Offsets,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<(), StateError> {
        if snapshot.is_empty() && offsets.is_empty() {
            return Ok(());
        }
        let group = group
            .ok_or_else(|| StateError::corrupt("offsets", "no consumer group metadata yet"))?;
        let p = &self.producer;
        tokio::task::block_in_place(|| p.begin_transaction())?;
        let r = self.commit_in_txn(snapshot, offsets, &group).await;
        if r.is_err() {
            let _ = retrying(|| p.abort_transaction(TXN_TIMEOUT));
        }
        r
    }

    async fn commit_in_txn(
        &self,
        snapshot: &[(Stream, Change)],
        offsets: &crate::source::Offsets,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), StateError> {
        let mut acks = Vec::with_capacity(snapshot.len());
        for (s, c) in snapshot {
            acks.push(send_with_backpressure(|| self.send(*s, c)).await);
        }
        futures::future::try_join_all(acks)
            .await
            .map_err(|e| StateError::corrupt("changelog", e))?;
        Ok(commit_with_offsets(&self.producer, offsets, group)?)
    }
}

/// The three changelog topics, by stream index.
pub fn topics(cfg: &Config) -> [String; 3] {
    Stream::ALL.map(|s| cfg.state.topic(&cfg.kafka.group_id, s))
}

/// Creates the missing changelog topics, compacted (`cleanup.policy=compact`), and with
/// scale-out the repartition topics (`cleanup.policy=delete`), all with
/// `state.partitions` partitions: partition p of both belongs to the same task.
pub async fn ensure_topics(cfg: &Config) -> Result<(), StateError> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka::client_config(cfg).create()?;
    let names = topics(cfg);
    let mut new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| {
            NewTopic::new(t, cfg.state.partitions, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact")
        })
        .collect();
    let repartition = repartition_topics(cfg);
    if cfg.processing.scale_out {
        new.extend(
            repartition
                .iter()
                .map(|t| NewTopic::new(t, cfg.state.partitions, TopicReplication::Fixed(-1))),
        );
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(new.iter(), &opts).await? {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created state topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                return Err(StateError::Kafka(KafkaError::AdminOp(e))).inspect_err(
                    |_| tracing::error!(topic = %t, error = %e, "cannot create changelog topic"),
                )
            }
        }
    }
    Ok(())
}

/// What a restore did, for the log line and the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RestoreStats {
    pub records: u64,
    pub bytes: u64,
    /// Records that could not be put back (corrupt, or from an incompatible version):
    /// those keys start fresh.
    pub skipped: u64,
    pub elapsed: Duration,
}

/// One changelog record being restored; a `None` value is a tombstone.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub partition: i32,
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Where restored records go.
pub trait RestoreTarget {
    /// About `records` records of `stream`'s changelog `partition` follow: size the maps once.
    fn reserve(&mut self, _stream: Stream, _partition: i32, _records: usize) {}
    /// A batch of `stream`'s records, each partition's in log order (latest wins). Pushes
    /// the position in `records` and the error of each record that could not be put back.
    fn apply(
        &mut self,
        stream: Stream,
        records: &[Record<'_>],
        failed: &mut Vec<(usize, StateError)>,
    );
}

/// Records handed to the target at once: enough to keep every core busy on its share
/// (detector maps restore in parallel), little enough to hold (~430 bytes each).
const BATCH: usize = 16_384;

/// Reads every changelog partition from its beginning to its current end (committed
/// records only) and hands each record to `target` in log order. Blocking.
pub fn restore(
    cfg: &Config,
    timeout: Duration,
    target: &mut dyn RestoreTarget,
) -> Result<RestoreStats, StateError> {
    restore_partitions(cfg, timeout, None, target)
}

/// Like [`restore`], for the listed changelog partitions only (scale-out: the tasks
/// just assigned to this instance).
pub fn restore_partitions(
    cfg: &Config,
    timeout: Duration,
    only: Option<&[(Stream, i32)]>,
    target: &mut dyn RestoreTarget,
) -> Result<RestoreStats, StateError> {
    let started = Instant::now();
    let mut c: ClientConfig = crate::kafka::client_config(cfg);
    c.set("group.id", format!("{}.restore", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // Restore is a bulk read: big fetches, deep prefetch.
        .set("fetch.max.bytes", "52428800")
        .set("queued.min.messages", "200000")
        // A full prefetch queue (the usual state: decoding is slower than fetching) would
        // otherwise pause a partition's fetches for librdkafka's default 1 s each time,
        // and restore waited for data 3-4 s of its 6-8 s.
        .set("fetch.queue.backoff.ms", "10")
        // An empty fetch at the end answers at once: the end is what restore waits for.
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<RestoreContext> = c.create_with_context(RestoreContext)?;
    let mut stats = RestoreStats::default();
    let deadline = Instant::now() + timeout;
    // The partitions with data, all looked up before any is assigned: metadata and
    // offset requests queue behind an assigned consumer's fetches (seconds each).
    let names = topics(cfg);
    // A broker that has just started answers "not leader" / "coordinator loading" for a
    // while: retry the lookups until the deadline instead of failing the start.
    let plan = loop {
        match plan_restore(&consumer, &names, timeout) {
            Ok(mut p) => {
                if let Some(only) = only {
                    for (i, parts) in &mut p {
                        parts.retain(|(n, _)| only.contains(&(Stream::ALL[*i], *n)));
                    }
                }
                break p;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "changelog lookup failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    };
    for (i, parts) in &plan {
        for (p, records) in parts {
            // An upper bound (older versions of a key, tombstones) until compaction runs.
            target.reserve(Stream::ALL[*i], *p, *records);
        }
    }
    let plan: Vec<(usize, Vec<i32>)> = plan
        .into_iter()
        .map(|(i, parts)| (i, parts.into_iter().map(|(p, _)| p).collect()))
        .collect();
    // One topic at a time: an end-of-partition event names only the partition number.
    for (i, parts) in plan {
        let topic = &names[i];
        let mut tpl = TopicPartitionList::new();
        let mut pending: HashSet<i32> = HashSet::new();
        for p in parts {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            pending.insert(p);
        }
        if pending.is_empty() {
            continue;
        }
        tracing::debug!(topic, partitions = pending.len(), elapsed = ?started.elapsed(), "restoring changelog");
        consumer.assign(&tpl)?;
        let mut batch = Vec::with_capacity(BATCH);
        while !pending.is_empty() {
            if batch.is_empty() && Instant::now() > deadline {
                return Err(StateError::corrupt(
                    topic,
                    format!(
                        "changelog not read to its end within {timeout:?} ({} partitions left)",
                        pending.len()
                    ),
                ));
            }
            // Polled without waiting while a batch fills: what is queued goes at once.
            let wait = if batch.is_empty() {
                Duration::from_millis(200)
            } else {
                Duration::ZERO
            };
            match consumer.poll(wait) {
                None => apply(target, Stream::ALL[i], &mut batch, &mut stats),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    tracing::debug!(topic, partition = p, elapsed = ?started.elapsed(), "changelog partition restored");
                    pending.remove(&p);
                }
                // Transient (a broker restarting): librdkafka retries; the deadline bounds it.
                Some(Err(e)) => tracing::warn!(error = %e, "changelog read error; retrying"),
                Some(Ok(m)) => {
                    batch.push(m);
                    if batch.len() == BATCH {
                        apply(target, Stream::ALL[i], &mut batch, &mut stats);
                    }
                }
            }
        }
        apply(target, Stream::ALL[i], &mut batch, &mut stats);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Hands `batch` (emptied) to `target`, counting what it read and what it skipped.
fn apply(
    target: &mut dyn RestoreTarget,
    stream: Stream,
    batch: &mut Vec<BorrowedMessage<'_>>,
    stats: &mut RestoreStats,
) {
    if batch.is_empty() {
        return;
    }
    let mut failed = Vec::new();
    {
        let keys: Vec<Cow<'_, str>> = batch
            .iter()
            .map(|m| m.key().map(String::from_utf8_lossy).unwrap_or_default())
            .collect();
        let records: Vec<Record<'_>> = batch
            .iter()
            .zip(&keys)
            .map(|(m, k)| Record {
                partition: m.partition(),
                key: k,
                value: m.payload(),
            })
            .collect();
        target.apply(stream, &records, &mut failed);
    }
    stats.records += batch.len() as u64;
    stats.bytes += batch.iter().map(|m| m.payload_len() as u64).sum::<u64>();
    stats.skipped += failed.len() as u64;
    for (_, e) in failed {
        tracing::warn!(error = %e, "skipping a changelog record; that key starts fresh");
    }
    batch.clear();
}

/// Per changelog topic (by stream index), its partitions holding records and how many.
type Plan = Vec<(usize, Vec<(i32, usize)>)>;

/// The restore consumer's context: reaching a partition's end is what restore waits
/// for, not an error (librdkafka also reports it as a "global error").
struct RestoreContext;

impl rdkafka::ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                tracing::debug!(reason, "changelog partition end")
            }
            e => tracing::warn!(error = %e, reason, "changelog reader error"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for RestoreContext {}

fn plan_restore(
    consumer: &BaseConsumer<RestoreContext>,
    names: &[String; 3],
    timeout: Duration,
) -> Result<Plan, KafkaError> {
    let mut plan = Vec::new();
    for (i, topic) in names.iter().enumerate() {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        let mut parts = Vec::new();
        for mt in md.topics() {
            if let Some(e) = mt.error() {
                return Err(KafkaError::MetadataFetch(e.into()));
            }
            for p in mt.partitions() {
                let (lo, hi) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                if hi > lo {
                    parts.push((p.id(), (hi - lo) as usize));
                }
            }
        }
        plan.push((i, parts));
    }
    Ok(plan)
}
