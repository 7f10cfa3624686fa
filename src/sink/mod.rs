//! Sinks: where alerts and incidents go. Each is a `[sinks.NAME]` table whose `type` picks one file of
//! this folder; the [`sinks!`] list below registers them. A sink's `send` enqueues and
//! returns an [`Ack`] that resolves once the alert is durable there; the pipeline stores
//! an input's offset only after every ack it caused (at-least-once). A sink that speaks
//! incidents (kafka's `incidents_topic`, stdout, the backtest's collector) takes them
//! through `send_incident`, on the same path: same acks, same transaction.

mod alertmanager;
mod cap;
mod coalesce;
mod collect;
mod dead_letter;
mod kafka;
mod stdout;
mod webhook;

use std::sync::Arc;

use futures::future::BoxFuture;
use rdkafka::producer::FutureProducer;
use serde::Deserialize;

pub use collect::CollectSink;
pub use dead_letter::{DeadLetters, KafkaDeadLetters, LogDeadLetters};
pub(crate) use kafka::{ack as kafka_ack, kafka_error};

use crate::alert::{Alert, Incident, Level};
use crate::decode::Stream;

/// Resolves when the sink holds the message durably.
pub type Ack = BoxFuture<'static, Result<(), SinkError>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The local queue is full: wait and try again (backpressure, not a failure).
    #[error("sink `{0}` queue full")]
    Full(String),
    /// Delivery failed after the client's own retries; retrying the input may help.
    #[error("sink `{sink}` delivery failed (retryable: {retryable}): {message}")]
    Delivery {
        sink: String,
        retryable: bool,
        message: String,
    },
    #[error("sink `{sink}` cannot be built: {message}")]
    Build { sink: String, message: String },
}

impl SinkError {
    /// The sink that failed.
    pub fn sink(&self) -> &str {
        match self {
            SinkError::Delivery { sink, .. }
            | SinkError::Full(sink)
            | SinkError::Build { sink, .. } => sink,
        }
    }
}

/// Enqueues, waiting while the local queue is full (backpressure, never a drop).
pub(crate) async fn send_with_backpressure(mut f: impl FnMut() -> Result<Ack, SinkError>) -> Ack {
    loop {
        match f() {
            Ok(a) => return a,
            Err(SinkError::Full(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await
            }
            Err(e) => return Box::pin(async move { Err(e) }),
        }
    }
}

/// Which alerts a sink takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub streams: Vec<Stream>,
    pub min_level: Option<Level>,
}

impl Filter {
    pub fn accepts(&self, a: &Alert) -> bool {
        self.accepts_parts(&a.stream, a.level)
    }

    fn accepts_parts(&self, stream: &str, level: Level) -> bool {
        (self.streams.is_empty() || self.streams.iter().any(|s| s.as_str() == stream))
            && self.min_level.is_none_or(|m| level >= m)
    }
}

/// Which episodes a sink's filter has let through. Filters judge an episode when it first
/// passes; from then on all its messages reach the sink, so a `min_level = "orange"` sink
/// that saw an episode rise to orange also sees it fall back and resolve, instead of
/// keeping it open for ever. Memory: one id per admitted open episode.
#[derive(Debug, Default)]
pub struct Admitted(std::collections::HashSet<String>);

impl Admitted {
    pub fn admit(&mut self, filter: &Filter, a: &Alert) -> bool {
        self.admit_parts(filter, &a.alert_id, a.status, &a.stream, a.level)
    }

    /// The same for incidents (by `incident_id`): one `min_level` sink sees an incident
    /// from the message that first passes its filter to its resolve.
    pub fn admit_incident(&mut self, filter: &Filter, i: &Incident) -> bool {
        self.admit_parts(filter, &i.incident_id, i.status, &i.stream, i.level)
    }

    fn admit_parts(
        &mut self,
        filter: &Filter,
        id: &str,
        status: crate::alert::Status,
        stream: &str,
        level: Level,
    ) -> bool {
        let resolved = status == crate::alert::Status::Resolved;
        let known = if resolved {
            self.0.remove(id)
        } else {
            self.0.contains(id)
        };
        if known {
            return true;
        }
        if !filter.accepts_parts(stream, level) {
            return false;
        }
        if !resolved {
            self.0.insert(id.to_string());
        }
        true
    }
}

/// The seam for sinks.
pub trait Sink: Send + Sync {
    fn name(&self) -> &str;
    fn filter(&self) -> &Filter;
    /// Enqueues one alert (`json` is its serialized form, made once for all sinks).
    fn send(&self, alert: &Alert, json: &[u8]) -> Result<Ack, SinkError>;
    /// Whether [`Self::send_incident`] publishes anything (the pipeline skips the rest).
    fn takes_incidents(&self) -> bool {
        false
    }
    /// Enqueues one incident message (`json` is its serialized form).
    fn send_incident(&self, _incident: &Incident, _json: &[u8]) -> Result<Ack, SinkError> {
        Ok(Box::pin(async { Ok(()) }))
    }
    /// Flushes what is queued, waiting at most `timeout`.
    fn flush(&self, _timeout: std::time::Duration) {}
}

/// What sinks may share when they are built.
#[derive(Clone, Default)]
pub struct SinkCtx {
    /// The shared idempotent producer; `None` in replay without a broker.
    pub producer: Option<FutureProducer>,
}

/// Implemented by each sink's config struct.
pub trait SinkSpec {
    const TYPE: &'static str;
    fn validate(&self, path: &str, problems: &mut Vec<String>);
    fn build(&self, name: &str, ctx: &SinkCtx) -> Result<Arc<dyn Sink>, SinkError>;
}

macro_rules! sinks {
    ($($variant:ident => $module:ident :: $cfg:ident),* $(,)?) => {
        /// One `[sinks.NAME]` table; `type` picks the sink.
        #[derive(Debug, Clone, Deserialize, PartialEq)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        pub enum SinkConfig { $($variant($module::$cfg)),* }

        impl SinkConfig {
            pub fn type_name(&self) -> &'static str {
                match self { $(Self::$variant(_) => <$module::$cfg as SinkSpec>::TYPE),* }
            }
            pub fn validate(&self, path: &str, problems: &mut Vec<String>) {
                match self { $(Self::$variant(c) => c.validate(path, problems)),* }
            }
            pub fn build(&self, name: &str, ctx: &SinkCtx) -> Result<Arc<dyn Sink>, SinkError> {
                match self { $(Self::$variant(c) => c.build(name, ctx)),* }
            }
        }
    };
}

sinks! {
    Kafka => kafka::KafkaSinkConfig,
    Stdout => stdout::StdoutSinkConfig,
    Cap => cap::CapSinkConfig,
    Alertmanager => alertmanager::AlertmanagerSinkConfig,
    Webhook => webhook::WebhookSinkConfig,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig::Kafka(kafka::KafkaSinkConfig::default())
    }
}

/// Parses the common `streams` filter, naming bad entries.
pub(crate) fn parse_streams(v: &[String], path: &str, problems: &mut Vec<String>) -> Vec<Stream> {
    v.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let p = Stream::parse(s);
            if p.is_none() {
                problems.push(format!(
                    "{path}.streams[{i}]: `{s}` is not a stream (incidents, sensors, fraud)"
                ));
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = Filter {
            streams: vec![Stream::Sensors],
            min_level: Some(Level::Yellow),
        };
        let mut a: Alert = serde_json::from_value(serde_json::json!({
            "alert_id":"x","status":"firing","level":"orange","stream":"sensors","detector":"threshold",
            "subject":{},"title":"t","evidence":{"observed":1.0,"expected":0.0,"score":1.0,"threshold":1.0,"window":"1m"},
            "first_event_ts":"","detected_at":"","event_ids":[],"route":[]
        }))
        .unwrap();
        assert!(f.accepts(&a));
        a.level = Level::Blue;
        assert!(!f.accepts(&a));
        a.level = Level::Red;
        a.stream = "fraud".into();
        assert!(!f.accepts(&a));
    }

    #[test]
    fn an_admitted_episode_stays_admitted_until_it_resolves() {
        let f = Filter {
            streams: vec![],
            min_level: Some(Level::Orange),
        };
        let mut a: Alert = serde_json::from_value(serde_json::json!({
            "alert_id":"e1","status":"firing","level":"yellow","stream":"sensors","detector":"ewma_z",
            "subject":{},"title":"t","evidence":{"observed":1.0,"expected":0.0,"score":1.0,"threshold":1.0,"window":"1m"},
            "first_event_ts":"","detected_at":"","event_ids":[],"route":[]
        }))
        .unwrap();
        let mut adm = Admitted::default();
        assert!(!adm.admit(&f, &a), "yellow is below the filter");
        a.level = Level::Red;
        assert!(adm.admit(&f, &a), "rises to red: admitted");
        a.level = Level::Yellow;
        assert!(adm.admit(&f, &a), "falls back: still this sink's episode");
        a.status = crate::alert::Status::Resolved;
        assert!(adm.admit(&f, &a), "its resolve reaches the sink");
        a.status = crate::alert::Status::Firing;
        assert!(!adm.admit(&f, &a), "forgotten after resolve");
    }
}
