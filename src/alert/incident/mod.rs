//! Episodes -> incidents: what operators see, act on and are notified of (issue #23).
//!
//! An incident is the episodes of one hazard: the alerts of one subject group (a site for
//! sensors, a suspect for fraud, a township for incident and fraud-rate alerts, see
//! [`group`]) that overlap in time. It opens with its first member, takes every episode
//! of its group that opens while it is open, and resolves once every member has resolved
//! and none has opened for `join_gap` (so a hazard whose detectors resolve and re-fire
//! within the gap stays one incident instead of two).
//!
//! Messages: one per *visible* state change, and only these: the incident opens, its
//! level (the highest level of its open members) changes, it resolves. A member opening,
//! changing or resolving without moving the level rides along in the next message
//! (members, title and evidence are always current in it). A hazard therefore costs at
//! most (its level changes + 2) incident messages, however many detectors see it.
//!
//! Memory: one record per open incident (members capped at `max_members`: open members
//! are always kept, the oldest resolved ones are dropped and counted), one index entry
//! per open member and per group key; a resolved incident is forgotten at once. Members
//! cannot stay open for ever: the alert policy resolves a silent episode after
//! `stale_after`, and its incident follows `join_gap` later.
//!
//! All timing is event time (the stream's watermark and the alerts' event times), so
//! replay, live runs and a restored run group alike.

mod group;
mod grouper;
mod title;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use grouper::IncidentGrouper;

use super::{Level, Status};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// An episode of the same group opening within this long of an incident's last
    /// member resolving joins it; an incident with no open member resolves this long
    /// after its last member resolved.
    #[serde(with = "humantime_serde")]
    pub join_gap: Duration,
    /// Members an incident message lists at most (open members always; beyond this the
    /// oldest resolved ones are dropped and counted in `dropped_members`).
    pub max_members: usize,
}

/// 30 minutes: three episode cooldowns. A site whose detectors re-fire within it (a
/// decay after the hold, a slow second sensor) is still the same event; longer and two
/// unrelated faults at one site an hour apart would merge.
pub const DEFAULT_JOIN_GAP: Duration = Duration::from_secs(30 * 60);
/// A site's sensors times the detectors that see them, with room: a city site has ~6
/// sensors and 5-9 detectors fire on a real event.
pub const DEFAULT_MAX_MEMBERS: usize = 64;

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            join_gap: DEFAULT_JOIN_GAP,
            max_members: DEFAULT_MAX_MEMBERS,
        }
    }
}

impl IncidentConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if self.join_gap.is_zero() {
            problems.push(format!("{path}.join_gap: must be > 0"));
        }
        // A day of grouping would merge unrelated hazards and hold an incident open for a
        // day after its last member resolved.
        if self.join_gap > Duration::from_secs(24 * 3600) {
            problems.push(format!("{path}.join_gap: must be <= 24h"));
        }
        if self.max_members == 0 {
            problems.push(format!("{path}.max_members: must be >= 1"));
        }
    }
}

/// One state change of an incident, as the `incidents` topic carries it (key
/// `incident_id`). The console, CAP and notification sinks build on this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `<stream>:<group>:<key>:<first member's event time, epoch s>`, e.g.
    /// `sensors:site:SITE-330503-0042:1764116100`.
    pub incident_id: String,
    pub status: Status,
    /// The highest level of the open members (unchanged while none is open).
    pub level: Level,
    pub stream: String,
    /// The group's fields: `site_id` and `region`, a `suspect_*`, or a `region`.
    pub subject: serde_json::Map<String, serde_json::Value>,
    /// The name of the first member's most specific region, for people (console, CAP
    /// `areaDesc`); absent in messages written before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_name: String,
    /// What is happening, in one line.
    pub title: String,
    /// The union of every member's route, lowest tier first.
    pub route: Vec<String>,
    /// Members in the order they joined.
    pub members: Vec<Member>,
    /// Resolved members no longer listed (see `max_members`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_members: u32,
    /// The first member's `first_event_ts`.
    pub first_event_ts: String,
    pub detected_at: String,
    /// 1 for the opening message, +1 per message: orders an incident's messages.
    pub seq: u32,
    /// Command centers that joined `route` because nobody acknowledged the incident in
    /// time (the console's escalation, docs/console/README.md), oldest first. Filled in
    /// from the console when the message is published; absent when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<Escalation>,
}

/// One step up the hierarchy for an incident nobody acknowledged in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The command center that joined the route.
    pub to: String,
    /// The incident's level when it was escalated.
    pub level: Level,
    /// Why, for people: `not acknowledged within 5m (red)`.
    pub reason: String,
    /// RFC 3339, UTC.
    pub at: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One episode of an incident, as its latest alert message left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub alert_id: String,
    pub detector: String,
    pub level: Level,
    pub status: Status,
    pub title: String,
    /// Its strongest evidence (from its highest-level message), in one line.
    pub evidence: String,
    /// The evidence score behind `evidence`, to tell a stronger message.
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor_id: Option<String>,
    /// The sensor kind (`gas_lel` ...), for the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What the member says happened: `rising`, `falling`, `stuck`, `offline`, `faulty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<String>,
}

#[cfg(test)]
mod tests;
