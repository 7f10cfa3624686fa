//! Detection -> alert episode: level, dedup, hold-to-resolve, cooldown, escalation, route.
//!
//! One alert is an episode of one (stream, detector, key): opened `firing`, updated only
//! when its level changes, `resolved` once the condition has been clear for the hold
//! time. Every state change is one [`Alert`] message with the same `alert_id`. All timing
//! is event time (signal times and the watermark), so replay and live agree.
//!
//! Episodes of one hazard are grouped into an [`Incident`] ([`incident`]): what
//! operators see and are notified of; every alert names its incident.

pub mod incident;
pub mod kpi;
mod level;
mod policy;
mod route;
pub mod shelve;

use serde::{Deserialize, Serialize};

pub use incident::{Escalation, Incident, IncidentConfig, IncidentGrouper, Member};
pub use kpi::KpiTracker;
pub use level::{Level, LevelBands};
pub use policy::{AlertPolicy, AlertPolicyConfig};
pub use route::{RoutePolicy, Scope};

use crate::signal::Evidence;

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
    /// The incident the episode belongs to (the `incidents` topic's key); empty only in
    /// messages written before incidents existed.
    #[serde(default)]
    pub incident_id: String,
    /// What operators did about the episode so far (the console's closed loop, issue 8);
    /// absent until someone acknowledged, dispatched or closed it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub actions: Option<Actions>,
}

/// Operators' actions on an episode, as the console recorded them (times RFC 3339, UTC;
/// `*_by` are command-center codes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actions {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acknowledged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acknowledged_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dispatched_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dispatched_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dispatched_by: Option<String>,
    /// `handled`, `false_alarm` or `duplicate`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub closed_outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub closed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub closed_by: Option<String>,
}
