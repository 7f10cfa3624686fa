//! The Kafka client helpers every part that talks to Kafka shares (the source, the
//! sinks' producer, the state changelog, the exactly-once loop): one client config from
//! `[kafka]`, riskstream's memory bounds, transactional calls that retry, offsets
//! committed inside a transaction, and the scale-out topic names. It sits below all of
//! them, so none imports another for these.

use rdkafka::config::ClientConfig;
use rdkafka::TopicPartitionList;

use crate::config::Config;
use crate::decode::Stream;

/// The next offset to read, by (topic, partition): what an input's handling commits.
pub type Offsets = std::collections::HashMap<(std::sync::Arc<str>, i32), i64>;

/// librdkafka properties shared by the consumer and the producer: the user's pass-through
/// properties (security.protocol, sasl.*, ssl.* ...) on top of the brokers.
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

/// Sets each of `bounds` that `[kafka.properties]` leaves unset.
pub fn set_bounds(c: &mut ClientConfig, bounds: &[(&str, &str)], cfg: &Config) {
    for (k, v) in bounds {
        if !cfg.kafka.properties.contains_key(*k) {
            c.set(*k, *v);
        }
    }
}

/// Longest wait for one transactional call (init, offsets, commit, abort).
pub const TXN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a transactional producer call off the runtime's workers, repeating it while it
/// fails with a retriable error (a broker restart, a coordinator move): librdkafka allows
/// retrying the same call.
pub fn retrying(
    mut f: impl FnMut() -> rdkafka::error::KafkaResult<()>,
) -> rdkafka::error::KafkaResult<()> {
    let mut tries = 0;
    loop {
        match tokio::task::block_in_place(&mut f) {
            Err(rdkafka::error::KafkaError::Transaction(r)) if r.is_retriable() && tries < 10 => {
                tries += 1;
                tracing::warn!(error = %r, tries, "transactional call failed; retrying");
            }
            r => return r,
        }
    }
}

/// Adds the next offsets of the handled inputs to `producer`'s open transaction, with
/// the group's generation (a fenced member cannot commit), and commits it. The one way
/// offsets are committed in both guarantees when state is durable.
pub fn commit_with_offsets(
    producer: &rdkafka::producer::FutureProducer,
    offsets: &Offsets,
    group: &rdkafka::consumer::ConsumerGroupMetadata,
) -> rdkafka::error::KafkaResult<()> {
    use rdkafka::producer::Producer;
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        tpl.add_partition_offset(t, *p, rdkafka::Offset::Offset(*o))?;
    }
    if tpl.count() > 0 {
        retrying(|| producer.send_offsets_to_transaction(&tpl, group, TXN_TIMEOUT))?;
    }
    retrying(|| producer.commit_transaction(TXN_TIMEOUT))
}

/// The three repartition topics of scale-out, by stream index.
pub fn repartition_topics(cfg: &Config) -> [String; 3] {
    Stream::ALL.map(|s| crate::config::ProcessingConfig::repartition_topic(&cfg.kafka.group_id, s))
}
