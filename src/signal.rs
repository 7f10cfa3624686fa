//! What detectors tell the alert policy, in the words both speak: a [`Signal`] about one
//! key (anomalous, with its [`Evidence`], or clear again) and the four-colour [`Level`].
//!
//! It sits below both `detect` and `alert` so that neither imports the other's
//! vocabulary: detectors produce signals, the policy turns them into episodes.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::decode::Stream;
use crate::regions::RegionRef;

/// `blue` (IV, lowest) < `yellow` (III) < `orange` (II) < `red` (I).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Blue,
    Yellow,
    Orange,
    Red,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Blue, Level::Yellow, Level::Orange, Level::Red];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Blue => "blue",
            Level::Yellow => "yellow",
            Level::Orange => "orange",
            Level::Red => "red",
        }
    }

    /// One step up the scale, saturating at red.
    pub fn raised(self) -> Level {
        match self {
            Level::Blue => Level::Yellow,
            Level::Yellow => Level::Orange,
            _ => Level::Red,
        }
    }
}

/// What an alert's `evidence` shows: enough for an operator to judge it without a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Evidence {
    /// The observed value (a reading, a window count ...).
    pub observed: f64,
    /// What the baseline expected.
    pub expected: f64,
    /// The detector's own statistic (z, MADs, -log10 p ...), comparable with `threshold`.
    pub score: f64,
    pub threshold: f64,
    /// The time scale the detector looked at, e.g. `5m`.
    pub window: String,
    /// For count detectors: P(X >= observed) under the baseline model; for detectors with
    /// a false-alarm budget: the tail probability of `score` under the key's own scores.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p_value: Option<f64>,
    /// The budget `threshold` was set from: false episodes per key and day.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub false_alarms_per_day: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SignalKind {
    /// The key is anomalous at this event or window; `score` in [0.5, 1].
    Anomalous {
        score: f64,
        /// Set by detectors whose config names the level (threshold alarms).
        level: Option<Level>,
        title: String,
        evidence: Evidence,
    },
    /// The key has returned to normal.
    Clear,
}

/// One detector's verdict about one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub stream: Stream,
    pub detector: &'static str,
    /// The state key: a sensor id, a region code, `phone:+86...`.
    pub key: String,
    pub subject: serde_json::Map<String, serde_json::Value>,
    pub region: RegionRef,
    pub ts: DateTime<FixedOffset>,
    pub event_id: Option<String>,
    pub kind: SignalKind,
}

/// Detectors whose episodes are maintenance, not hazards (`sensor_fault`): the alert
/// policy routes them to the township alone and never escalates them.
pub const MAINTENANCE_DETECTORS: &[&str] = &["sensor_fault"];

pub fn is_maintenance(detector: &str) -> bool {
    MAINTENANCE_DETECTORS.contains(&detector)
}

/// Human names for sensor kinds in alert titles.
pub fn kind_label(kind: &str) -> String {
    match kind {
        "gas_lel" => "Gas LEL".into(),
        "h2s_ppm" => "H2S".into(),
        "temperature" => "Temperature".into(),
        "pressure" => "Pressure".into(),
        "tank_level" => "Tank level".into(),
        other => other.replace('_', " "),
    }
}
