//! `kafka` sink: alerts as JSON on a topic (default `alerts`), key = `alert_id`, so every
//! state change of an episode lands on one partition in order. The shared producer is
//! idempotent with acks=all: a retried send is not duplicated by the broker. Incident
//! messages go to `incidents_topic` (key = `incident_id`) through the same producer, so
//! under exactly-once they are in the same transaction as the alerts that caused them.

use std::sync::Arc;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

use super::{parse_streams, Ack, Filter, Sink, SinkCtx, SinkError, SinkSpec};
use crate::alert::{Alert, Incident, Level};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default)]
    pub min_level: Option<Level>,
    /// Also publish each alert to one topic per command center on its route
    /// (`<center_topic_prefix><code>`, e.g. `alerts.center.330503`), so a center can
    /// subscribe to exactly its own alerts.
    #[serde(default)]
    pub per_center_topics: bool,
    #[serde(default = "default_prefix")]
    pub center_topic_prefix: String,
    /// Where incident messages go (key `incident_id`); empty: this sink publishes none
    /// (when several kafka sinks are configured, let one of them carry incidents).
    /// Not SPEC's `incidents`: that is the default *input* topic of incident reports,
    /// and publishing there would feed incident messages back in as invalid reports.
    #[serde(default = "default_incidents_topic")]
    pub incidents_topic: String,
}

fn default_incidents_topic() -> String {
    "alerts.incidents".into()
}

fn default_topic() -> String {
    "alerts".into()
}

fn default_prefix() -> String {
    "alerts.center.".into()
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        Self {
            topic: default_topic(),
            streams: Vec::new(),
            min_level: None,
            per_center_topics: false,
            center_topic_prefix: default_prefix(),
            incidents_topic: default_incidents_topic(),
        }
    }
}

impl SinkSpec for KafkaSinkConfig {
    const TYPE: &'static str = "kafka";

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if self.topic.trim().is_empty() {
            problems.push(format!("{path}.topic: must not be empty"));
        }
        if self.per_center_topics && self.center_topic_prefix.trim().is_empty() {
            problems.push(format!(
                "{path}.center_topic_prefix: must not be empty when per_center_topics = true"
            ));
        }
        parse_streams(&self.streams, path, problems);
    }

    fn build(&self, name: &str, ctx: &SinkCtx) -> Result<Arc<dyn Sink>, SinkError> {
        let producer = ctx.producer.clone().ok_or_else(|| SinkError::Build {
            sink: name.into(),
            message:
                "a kafka sink needs a broker (replay writes alerts to stdout unless --config-sinks)"
                    .into(),
        })?;
        Ok(Arc::new(KafkaSink {
            name: name.to_string(),
            topic: self.topic.clone(),
            filter: Filter {
                streams: parse_streams(&self.streams, "", &mut Vec::new()),
                min_level: self.min_level,
            },
            producer,
            center_prefix: self
                .per_center_topics
                .then(|| self.center_topic_prefix.clone()),
            incidents_topic: Some(self.incidents_topic.trim().to_string())
                .filter(|t| !t.is_empty()),
        }))
    }
}

pub struct KafkaSink {
    name: String,
    topic: String,
    filter: Filter,
    producer: FutureProducer,
    center_prefix: Option<String>,
    incidents_topic: Option<String>,
}

/// Turns an enqueue or delivery error into a [`SinkError`].
pub(crate) fn kafka_error(sink: &str, e: KafkaError) -> SinkError {
    match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
            SinkError::Full(sink.to_string())
        }
        e => SinkError::Delivery {
            sink: sink.to_string(),
            retryable: true,
            message: e.to_string(),
        },
    }
}

/// Wraps a delivery future into an [`Ack`].
pub(crate) fn ack(sink: String, f: rdkafka::producer::DeliveryFuture) -> Ack {
    Box::pin(async move {
        match f.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(kafka_error(&sink, e)),
            Err(_) => Err(SinkError::Delivery {
                sink,
                retryable: true,
                message: "producer dropped the message".into(),
            }),
        }
    })
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> &Filter {
        &self.filter
    }

    fn send(&self, alert: &Alert, json: &[u8]) -> Result<Ack, SinkError> {
        let key = alert.alert_id.as_bytes();
        let main = match self
            .producer
            .send_result(FutureRecord::to(&self.topic).key(key).payload(json))
        {
            Ok(f) => ack(self.name.clone(), f),
            Err((e, _)) => return Err(kafka_error(&self.name, e)),
        };
        let Some(prefix) = &self.center_prefix else {
            return Ok(main);
        };
        // Fan-out: one more record per center. If the queue fills part-way, the caller
        // retries the whole alert; the idempotent producer and the stable key make the
        // repeats harmless duplicates for consumers that de-duplicate on alert_id.
        let mut acks = vec![main];
        for code in &alert.route {
            let topic = format!("{prefix}{code}");
            match self
                .producer
                .send_result(FutureRecord::to(&topic).key(key).payload(json))
            {
                Ok(f) => acks.push(ack(self.name.clone(), f)),
                Err((e, _)) => return Err(kafka_error(&self.name, e)),
            }
        }
        Ok(Box::pin(async move {
            futures::future::try_join_all(acks).await.map(|_| ())
        }))
    }

    fn takes_incidents(&self) -> bool {
        self.incidents_topic.is_some()
    }

    fn send_incident(&self, incident: &Incident, json: &[u8]) -> Result<Ack, SinkError> {
        let Some(topic) = &self.incidents_topic else {
            return Ok(Box::pin(async { Ok(()) }));
        };
        match self.producer.send_result(
            FutureRecord::to(topic)
                .key(incident.incident_id.as_bytes())
                .payload(json),
        ) {
            Ok(f) => Ok(ack(self.name.clone(), f)),
            Err((e, _)) => Err(kafka_error(&self.name, e)),
        }
    }

    fn flush(&self, timeout: std::time::Duration) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(timeout);
    }
}
