//! Detection -> alert episode: level, dedup, hold-to-resolve, cooldown, escalation, route.
//!
//! One alert is an episode of one (stream, detector, key): opened `firing`, updated only
//! when its level changes, `resolved` once the condition has been clear for the hold
//! time. Every state change is one [`Alert`] message with the same `alert_id`. All timing
//! is event time (signal times and the watermark), so replay and live agree.

mod level;
mod policy;
mod route;

use serde::{Deserialize, Serialize};

pub use level::{Level, LevelBands};
pub use policy::{AlertPolicy, AlertPolicyConfig};
pub use route::{RoutePolicy, Scope};

use crate::detect::Evidence;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One state change of an episode, as SPEC.md's `alerts` topic carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub status: Status,
    pub level: Level,
    pub stream: String,
    pub detector: String,
    pub subject: serde_json::Map<String, serde_json::Value>,
    pub title: String,
    pub evidence: Evidence,
    pub first_event_ts: String,
    pub detected_at: String,
    pub event_ids: Vec<String>,
    pub route: Vec<String>,
    /// Name of the most specific region, for people and for CAP's areaDesc.
    #[serde(default)]
    pub region_name: String,
    /// 1 for the opening message, +1 per state change: orders an episode's messages.
    #[serde(default)]
    pub seq: u32,
}
