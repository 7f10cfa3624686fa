//! riskstream: a risk early-warning stream processor.
//!
//! Three Kafka streams (public-safety incidents, hazardous-chemical site sensor readings,
//! telecom-fraud reports) flow through one pipeline, one folder per stage:
//!
//! ```text
//!   source ──► decode ──► detect ──► alert ──► sink
//!   (Kafka,     (bytes →    (keyed,     (episodes,  (Kafka alerts, stdout,
//!    files)     typed       event-time  levels,     dead letters ...)
//!               Event, or   detectors)  routes)
//!               dead letter)
//! ```
//!
//! `signal` holds what `detect` and `alert` both speak (a signal, its evidence, the
//! four-colour level), below both. `config` (typed, validated at load) and `telemetry` (metrics, health, logs) sit beside
//! the stages; `pipeline` is the only module that wires them together. Offsets are stored
//! only after everything an input caused has been acknowledged by its sink (at-least-once).
//!
//! Beside the data path: `simulate` generates a labelled city, `backtest` replays it through
//! the same pipeline and scores the alerts against the labels.

pub mod alert;
pub mod backtest;
pub mod clock;
pub mod config;
pub mod console;
pub mod decode;
pub mod detect;
pub mod kafka;
pub mod pipeline;
pub mod regions;
pub mod registry;
pub mod shutdown;
pub mod signal;
pub mod simulate;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;

pub use decode::{Event, Stream};
