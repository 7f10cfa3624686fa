//! Escalation of what nobody handles (issue #23): an open incident not acknowledged
//! within its level's limit (`[console.ack_limits]`) is escalated one tier: the next
//! command center up (township -> county -> city) joins its route. Each further limit
//! without an acknowledgement climbs one more tier, until the city. Acknowledging in time
//! keeps a small matter where it started.
//!
//! An escalation is an event on the actions topic (`action = "escalate"`, key =
//! incident_id), written before it is applied, so every instance and a restart agree on
//! who was added; the console shows it (who and why), the incident's next message to the
//! sinks lists it in `escalations` with its center in `route`, and
//! `riskstream_incidents_escalated_total{level,to}` counts it (`to` = county or city).
//!
//! The clock is the console's wall clock, from when the console first showed the incident
//! (or its last escalation): the same clock as time-to-acknowledge. Checked every
//! `every` (1 s), so an escalation comes at most that late.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::actions::ActionLog;
use super::{AckLimits, ActionEvent, ActionKind, ConsoleState, Overdue};
use crate::regions::{RegionLevel, Regions};
use crate::shutdown::Shutdown;
use crate::telemetry::metrics::Metrics;

/// The next command center above the highest one on `route`; `None` at the city (or
/// for codes outside the hierarchy).
pub fn next_up(regions: &Regions, route: &[String]) -> Option<(String, RegionLevel)> {
    let tier = |c: &String| regions.resolve(c).map(|r| (r, regions.tier(c)));
    let highest = route
        .iter()
        .filter_map(tier)
        .map(|(r, t)| match t {
            Some(t) => (t, r),
            // An unlisted township under a known county counts as that county's.
            None => (RegionLevel::Township, r),
        })
        .max_by_key(|(t, _)| *t)?;
    match highest {
        (RegionLevel::City, _) => None,
        (RegionLevel::County, _) => Some((regions.city_code().to_string(), RegionLevel::City)),
        (RegionLevel::Township, r) => regions
            .county_code(r)
            .map(|c| (c.to_string(), RegionLevel::County)),
    }
}

/// The escalations due at `now`: one per overdue incident that has a tier left to climb.
pub fn due(
    now: DateTime<Utc>,
    limits: &AckLimits,
    regions: &Regions,
    waiting: &[Overdue],
) -> Vec<ActionEvent> {
    waiting
        .iter()
        .filter_map(|o| {
            let limit = limits.of(o.level);
            let waited = (now - o.since).to_std().unwrap_or_default();
            if waited < limit {
                return None;
            }
            let (to, _) = next_up(regions, &o.route)?;
            Some(ActionEvent {
                alert_id: String::new(),
                incident_id: Some(o.incident_id.clone()),
                action: ActionKind::Escalate,
                by_center: String::new(),
                note: None,
                outcome: None,
                at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
                to_center: Some(to),
                reason: Some(format!(
                    "not acknowledged within {} ({})",
                    humantime_serde::re::humantime::format_duration(limit),
                    o.level.as_str()
                )),
                members: Vec::new(),
            })
        })
        .collect()
}

/// Checks every `every` until shutdown; each escalation is written to the actions topic,
/// then applied and counted.
pub async fn run(
    state: Arc<ConsoleState>,
    log: Arc<ActionLog>,
    metrics: Arc<Metrics>,
    regions: Arc<Regions>,
    limits: AckLimits,
    every: Duration,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let now = state.now();
        for ev in due(now, &limits, &regions, &state.unacknowledged()) {
            let id = ev.key().to_string();
            if let Err(e) = log.append(&ev).await {
                // Not durable, not applied: the next tick tries again.
                tracing::warn!(incident_id = %id, error = %e, "escalation not written to the actions topic");
                continue;
            }
            if state.apply(&ev).is_ok() {
                let to = ev.to_center.as_deref().unwrap_or_default();
                let tier = match regions.tier(to) {
                    Some(RegionLevel::City) => "city",
                    _ => "county",
                };
                let level = state
                    .get_incident(&id)
                    .map_or("blue", |v| v.incident.level.as_str());
                metrics
                    .incidents_escalated
                    .with_label_values(&[level, tier])
                    .inc();
                tracing::warn!(incident_id = %id, to, reason = ev.reason.as_deref().unwrap_or_default(), "incident escalated");
            }
        }
    }
}
