//! Bytes -> typed events, one file per stream; anything that fails here becomes a dead letter.
//!
//! The rules are SPEC.md's: UTF-8 JSON objects; required fields present and well-typed;
//! numbers finite; `ts` RFC 3339 with an offset; `region` resolvable in the hierarchy.
//! Unknown extra fields are ignored so producers can evolve. Every error names its field,
//! and carries a low-cardinality [`InvalidReason`] for the metrics label.

mod fields;
mod fraud;
mod incident;
mod ranges;
mod sensor;

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};

pub use fraud::FraudReport;
pub use incident::Incident;
pub use ranges::{default_ranges, validate as validate_ranges, Ranges, MAX_MAGNITUDE};
pub use sensor::{SensorReading, SensorStatus};

use crate::clock::Clock;
use crate::regions::{RegionRef, Regions};

/// The three input streams.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Incidents,
    Sensors,
    Fraud,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Incidents, Stream::Sensors, Stream::Fraud];

    /// Position in [`Stream::ALL`], for per-stream arrays.
    pub fn index(self) -> usize {
        match self {
            Stream::Incidents => 0,
            Stream::Sensors => 1,
            Stream::Fraud => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Incidents => "incidents",
            Stream::Sensors => "sensors",
            Stream::Fraud => "fraud",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Guesses the stream from an NDJSON file name, as SPEC's `replay` rule says.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let base = name.rsplit('/').next().unwrap_or(name);
        if base.starts_with("incidents") {
            Some(Stream::Incidents)
        } else if base.starts_with("sensor") {
            Some(Stream::Sensors)
        } else if base.starts_with("fraud") {
            Some(Stream::Fraud)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated input event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Incident(Incident),
    Sensor(SensorReading),
    Fraud(FraudReport),
}

impl Event {
    pub fn stream(&self) -> Stream {
        match self {
            Event::Incident(_) => Stream::Incidents,
            Event::Sensor(_) => Stream::Sensors,
            Event::Fraud(_) => Stream::Fraud,
        }
    }

    pub fn ts(&self) -> DateTime<FixedOffset> {
        match self {
            Event::Incident(e) => e.ts,
            Event::Sensor(e) => e.ts,
            Event::Fraud(e) => e.ts,
        }
    }

    pub fn region(&self) -> RegionRef {
        match self {
            Event::Incident(e) => e.region,
            Event::Sensor(e) => e.region,
            Event::Fraud(e) => e.region,
        }
    }

    /// The id an alert lists in `event_ids`.
    pub fn id(&self) -> String {
        match self {
            Event::Incident(e) => e.id.clone(),
            Event::Sensor(e) => format!("{}@{}", e.sensor_id, e.ts.to_rfc3339()),
            Event::Fraud(e) => e.id.clone(),
        }
    }

    /// The key SPEC assigns the stream (`id` or `sensor_id`).
    pub fn key(&self) -> &str {
        match self {
            Event::Incident(e) => &e.id,
            Event::Sensor(e) => &e.sensor_id,
            Event::Fraud(e) => &e.id,
        }
    }
}

/// Why a message was rejected; the label of `riskstream_events_invalid_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    NotUtf8,
    NotJson,
    MissingField,
    WrongType,
    NonFinite,
    BadTimestamp,
    UnknownRegion,
    OutOfRange,
    /// Event time too far ahead: of the wall clock (`run`) or of the stream (replay).
    TsInFuture,
}

impl InvalidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::NotUtf8 => "not_utf8",
            InvalidReason::NotJson => "not_json",
            InvalidReason::MissingField => "missing_field",
            InvalidReason::WrongType => "wrong_type",
            InvalidReason::NonFinite => "non_finite",
            InvalidReason::BadTimestamp => "bad_timestamp",
            InvalidReason::UnknownRegion => "unknown_region",
            InvalidReason::OutOfRange => "out_of_range",
            InvalidReason::TsInFuture => "ts_in_future",
        }
    }
}

/// A message that cannot become an event; its text goes into the `x-error` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub reason: InvalidReason,
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(reason: InvalidReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// An event time that cannot be believed (found after decoding, by the detector
    /// set's screen).
    pub fn ts_in_future(message: impl Into<String>) -> Self {
        Self::new(InvalidReason::TsInFuture, message)
    }
}

/// A decoded event plus what the pipeline must count about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub event: Event,
    /// The region was a 9-digit code not in the hierarchy, routed to its county.
    pub unlisted_region: bool,
}

/// Decodes raw message bytes of one stream against the region hierarchy.
#[derive(Clone)]
pub struct Decoder {
    regions: Arc<Regions>,
    ranges: Arc<Ranges>,
    /// Monitoring points: a reading of a registered sensor carries its point.
    points: Arc<crate::registry::Registry>,
    /// `run`: the wall clock and how far ahead of it an event time may be.
    future: Option<(Arc<dyn Clock>, chrono::Duration)>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("ranges", &self.ranges)
            .field("max_future_skew", &self.future.as_ref().map(|(_, d)| *d))
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder with the built-in measuring ranges and no wall-clock check.
    pub fn new(regions: Arc<Regions>) -> Self {
        Self {
            regions,
            ranges: Arc::new(Ranges::defaults()),
            points: Arc::default(),
            future: None,
        }
    }

    /// Judges sensor values against `ranges` instead of the built-in ones.
    pub fn with_ranges(mut self, ranges: Ranges) -> Self {
        self.ranges = Arc::new(ranges);
        self
    }

    /// Looks each reading's sensor up in `points` (shared: updates apply to the next
    /// reading decoded).
    pub fn with_points(mut self, points: Arc<crate::registry::Registry>) -> Self {
        self.points = points;
        self
    }

    /// Live input (`run`): an event time more than `skew` ahead of `clock` is invalid
    /// (`ts_in_future`), so one device with a wrong clock cannot move a watermark.
    pub fn with_wall_clock(mut self, clock: Arc<dyn Clock>, skew: std::time::Duration) -> Self {
        let skew = chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX);
        self.future = Some((clock, skew));
        self
    }

    pub fn decode(&self, stream: Stream, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            DecodeError::new(
                InvalidReason::NotUtf8,
                format!("message is not UTF-8 (invalid byte at {})", e.valid_up_to()),
            )
        })?;
        let obj: fields::Object<'_> = serde_json::from_str(text).map_err(|e| {
            DecodeError::new(InvalidReason::NotJson, format!("message is not JSON: {e}"))
        })?;
        let obj = obj.0.ok_or_else(|| {
            DecodeError::new(InvalidReason::NotJson, "message is JSON but not an object")
        })?;
        let f = fields::Fields::new(&obj, &self.regions);
        let event = match stream {
            Stream::Incidents => Event::Incident(incident::decode(&f)?),
            Stream::Sensors => Event::Sensor(sensor::decode(&f, &self.ranges, &self.points)?),
            Stream::Fraud => Event::Fraud(fraud::decode(&f)?),
        };
        if let Some((clock, skew)) = &self.future {
            let ahead = event.ts().with_timezone(&chrono::Utc) - clock.now();
            if ahead > *skew {
                return Err(DecodeError::new(
                    InvalidReason::TsInFuture,
                    format!(
                        "field `ts` is {} ahead of the wall clock (max_future_skew {})",
                        crate::detect::fmt_duration(ahead.to_std().unwrap_or_default()),
                        crate::detect::fmt_duration(skew.to_std().unwrap_or_default()),
                    ),
                ));
            }
        }
        Ok(Decoded {
            unlisted_region: event.region().unlisted,
            event,
        })
    }

    pub fn regions(&self) -> &Arc<Regions> {
        &self.regions
    }
}

#[cfg(test)]
pub(crate) fn test_decoder() -> Decoder {
    Decoder::new(Arc::new(crate::regions::demo()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_from_file_names() {
        assert_eq!(
            Stream::from_file_name("a/incidents-1.ndjson"),
            Some(Stream::Incidents)
        );
        assert_eq!(
            Stream::from_file_name("sensor-SKAB-x.ndjson"),
            Some(Stream::Sensors)
        );
        assert_eq!(Stream::from_file_name("fraud.ndjson"), Some(Stream::Fraud));
        assert_eq!(Stream::from_file_name("alerts.ndjson"), None);
    }

    #[test]
    fn not_utf8_not_json_not_object() {
        let d = test_decoder();
        let e = d.decode(Stream::Sensors, &[0xff, 0xfe]).unwrap_err();
        assert_eq!(e.reason, InvalidReason::NotUtf8);
        let e = d.decode(Stream::Sensors, b"{not json").unwrap_err();
        assert_eq!(e.reason, InvalidReason::NotJson);
        let e = d.decode(Stream::Sensors, b"[1,2]").unwrap_err();
        assert_eq!(e.reason, InvalidReason::NotJson);
    }
}
