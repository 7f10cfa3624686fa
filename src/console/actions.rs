//! The actions topic: operators' actions (and the console's escalations) as durable Kafka
//! events, keyed by incident_id for incident actions and by alert_id for episode ones.
//!
//! Writes: [`ActionLog::append`] resolves only once the broker acknowledged the event
//! (`acks=all` on the shared idempotent producer); the HTTP handler answers 202 after it.
//! Shelving events (`shelve.rs`, key = shelf id) share the topic.
//! Reads: [`follow`] assigns every partition from the beginning (no consumer group, no
//! commits: the whole topic is the state), replays it into [`ConsoleState`] before the
//! pipeline starts, then keeps following it so several instances agree.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::shelve::ShelveEvent;
use super::{ActionEvent, ConsoleState};
use crate::shutdown::Shutdown;

pub struct ActionLog {
    pub producer: FutureProducer,
    pub topic: String,
}

impl ActionLog {
    /// Appends one event and waits for the broker's acknowledgement.
    pub async fn append(&self, ev: &ActionEvent) -> Result<(), String> {
        let json = serde_json::to_vec(ev).expect("action events serialize");
        self.append_raw(ev.key(), &json).await
    }

    /// Appends one serialized event under `key` and waits for the acknowledgement.
    pub async fn append_raw(&self, key: &str, json: &[u8]) -> Result<(), String> {
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(key.as_bytes())
                    .payload(json),
                Duration::from_secs(5),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }
}

/// Creates the actions topic if it is missing (3 partitions, the broker's default
/// replication). A refusal other than "already exists" is only logged: the topic may be
/// managed elsewhere.
pub async fn ensure_topic(base: &ClientConfig, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = match base.create() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create an admin client for the actions topic");
            return;
        }
    };
    let t = NewTopic::new(topic, 3, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match admin.create_topics([&t], &opts).await {
        Ok(rs) => {
            for r in rs {
                match r {
                    Ok(t) => tracing::info!(topic = %t, "created the console actions topic"),
                    Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, e)) => {
                        tracing::warn!(topic = %t, error = %e, "cannot create the actions topic")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot create the actions topic"),
    }
}

/// Replays the actions topic into `state` up to its current end (at most `catch_up`),
/// then returns a task that keeps applying new events until shutdown.
pub async fn follow(
    base: &ClientConfig,
    topic: &str,
    state: Arc<ConsoleState>,
    catch_up: Duration,
    mut shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, rdkafka::error::KafkaError> {
    let mut c = base.clone();
    // librdkafka wants a group id even for assign(); nothing is ever committed under it.
    c.set(
        "group.id",
        format!("riskstream-console-{}", std::process::id()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("enable.partition.eof", "false");
    let consumer: StreamConsumer = c.create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        let (lo, hi) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        if hi > lo {
            ends.push((*p, hi));
        }
    }
    consumer.assign(&tpl)?;
    let total: i64 = ends.iter().map(|(_, h)| h).sum();
    // Catch up: read until every partition reached the end it had when we started.
    let deadline = tokio::time::Instant::now() + catch_up;
    let mut replayed = 0u64;
    while !ends.is_empty() {
        let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => {
                tracing::warn!(
                    left = ends.len(),
                    "actions topic not fully replayed in time; continuing in the background"
                );
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "actions topic read error");
                continue;
            }
            Ok(Ok(m)) => m,
        };
        apply_message(&state, &m);
        replayed += 1;
        let (p, o) = (m.partition(), m.offset());
        ends.retain(|(ep, hi)| !(*ep == p && o + 1 >= *hi));
    }
    tracing::info!(topic, replayed, of = total, "console action state rebuilt");
    let h = tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                _ = shutdown.recv() => break,
                m = consumer.recv() => m,
            };
            match m {
                Ok(m) => apply_message(&state, &m),
                Err(e) => {
                    tracing::warn!(error = %e, "actions topic read error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(h)
}

/// What the actions topic carries: shelving events beside operators' actions.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Record {
    Shelve(ShelveEvent),
    Action(ActionEvent),
}

fn apply_message(state: &ConsoleState, m: &rdkafka::message::BorrowedMessage<'_>) {
    match m.payload().map(serde_json::from_slice::<Record>) {
        Some(Ok(Record::Shelve(ev))) => state.apply_shelve(&ev),
        Some(Ok(Record::Action(ev))) => {
            if let Err(c) = state.apply(&ev) {
                // Seen already (this instance applied it after producing) or superseded.
                tracing::debug!(key = ev.key(), conflict = %c, "action not applied");
            }
        }
        _ => tracing::warn!(
            partition = m.partition(),
            offset = m.offset(),
            "unreadable action event skipped"
        ),
    }
}
