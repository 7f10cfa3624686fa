//! Sources: where raw messages come from. [`kafka`] reads the three input topics with one
//! consumer group; [`replay`] reads NDJSON files (or stdin). Both hand the pipeline
//! [`Envelope`]s in order and take back "this input is fully handled" through an
//! [`OffsetStore`], which for Kafka stores the offset for the next commit.

pub mod kafka;
pub mod memory;
pub mod replay;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::decode::Stream;

/// The next offset to commit per (topic, partition).
pub use crate::kafka::Offsets;

/// Where an input came from; what a dead letter's `x-source-*` headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Kafka {
        /// Shared with every input of the topic (no allocation per message).
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    File {
        name: String,
        line: u64,
    },
}

/// One raw input message.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub stream: Stream,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub origin: Origin,
    /// When riskstream received it (for the event-to-alert latency).
    pub received: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// Marks inputs as fully handled. Called in input order per partition.
pub trait OffsetStore: Send + Sync {
    fn store(&self, origin: &Origin) -> Result<(), SourceError>;

    /// The consumer group's generation, for committing offsets in a producer transaction
    /// (Kafka only).
    fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        None
    }
}

/// The seam for sources.
pub trait Source: Send {
    /// The next input; `None` at the end of a finite input. Must be cancel-safe.
    fn next(&mut self) -> impl Future<Output = Result<Option<Envelope>, SourceError>> + Send;
    fn offset_store(&self) -> Arc<dyn OffsetStore>;
    /// Commits what has been stored (synchronously, on shutdown).
    fn finish(&mut self) -> Result<(), SourceError>;
}

/// A store that keeps nothing: for files, which are read from the start every time.
pub struct NoOffsets;

impl OffsetStore for NoOffsets {
    fn store(&self, _origin: &Origin) -> Result<(), SourceError> {
        Ok(())
    }
}
