//! Dead letters: an input that cannot become an event is published with its original key
//! and bytes and headers `x-error`, `x-source-topic`, `x-source-partition`,
//! `x-source-offset`. Its offset is stored only after the broker acknowledged this write.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::kafka::{ack, kafka_error};
use super::{Ack, SinkError};
use crate::decode::DecodeError;
use crate::source::{Envelope, Origin};

pub trait DeadLetters: Send + Sync {
    fn send(&self, env: &Envelope, err: &DecodeError) -> Result<Ack, SinkError>;
    fn flush(&self, _timeout: std::time::Duration) {}
}

/// To the `riskstream.dlq` topic.
pub struct KafkaDeadLetters {
    pub producer: FutureProducer,
    pub topic: String,
}

impl DeadLetters for KafkaDeadLetters {
    fn send(&self, env: &Envelope, err: &DecodeError) -> Result<Ack, SinkError> {
        let (topic, partition, offset) = match &env.origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => (topic.to_string(), partition.to_string(), offset.to_string()),
            Origin::File { name, line } => (name.clone(), "-1".to_string(), line.to_string()),
        };
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "x-error",
                value: Some(err.message.as_bytes()),
            })
            .insert(Header {
                key: "x-error-reason",
                value: Some(err.reason.as_str().as_bytes()),
            })
            .insert(Header {
                key: "x-source-topic",
                value: Some(topic.as_bytes()),
            })
            .insert(Header {
                key: "x-source-partition",
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: "x-source-offset",
                value: Some(offset.as_bytes()),
            });
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .payload(&env.payload[..])
            .headers(headers);
        if let Some(k) = &env.key {
            rec = rec.key(&k[..]);
        }
        match self.producer.send_result(rec) {
            Ok(f) => Ok(ack("dead_letter".into(), f)),
            Err((e, _)) => Err(kafka_error("dead_letter", e)),
        }
    }

    fn flush(&self, timeout: std::time::Duration) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(timeout);
    }
}

/// For replay without a broker: one JSON line per dead letter on stderr.
pub struct LogDeadLetters;

impl DeadLetters for LogDeadLetters {
    fn send(&self, env: &Envelope, err: &DecodeError) -> Result<Ack, SinkError> {
        let origin = match &env.origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => format!("{topic}/{partition}@{offset}"),
            Origin::File { name, line } => format!("{name}:{line}"),
        };
        tracing::warn!(%origin, reason = err.reason.as_str(), error = %err.message, "dead letter");
        Ok(Box::pin(async { Ok(()) }))
    }
}
