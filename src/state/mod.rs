//! Durable state: detector baselines, alert episodes and watermarks survive a restart.
//!
//! Like Kafka Streams' changelogs: every state key that changed since the last flush is
//! written, latest value only, to a compacted topic per stream
//! (`riskstream.state.<group>.<stream>`); on start the topics are read back from the
//! beginning and each record restores its key. One record carries everything held under
//! one key (all detectors of the stream that keep that key), so a sensor read by nine
//! detectors costs one changelog write per flush, not nine, and a compacted topic keeps
//! exactly the latest full state of each key.
//!
//! Record keys: `k:<state key>` (detector state), `e:<episode key>` (an alert episode),
//! `i:<incident_id>` (an open incident), `w` (the stream's watermark). A tombstone (no
//! value) deletes the key.
//!
//! Values are postcard-encoded (compact, exact for floats); see [`codec`].

pub mod changelog;
pub mod codec;
#[cfg(test)]
mod finite;

/// A state record that cannot be put back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state record `{key}`: {message}")]
    Corrupt { key: String, message: String },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl StateError {
    pub fn corrupt(key: &str, message: impl std::fmt::Display) -> Self {
        StateError::Corrupt {
            key: key.to_string(),
            message: message.to_string(),
        }
    }
}

/// One changelog record: the full latest state under `key`, or `None` when it is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub value: Option<Vec<u8>>,
}
