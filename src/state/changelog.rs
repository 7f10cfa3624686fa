//! The Kafka side of durable state: topic names, creation, writing and restoring.
