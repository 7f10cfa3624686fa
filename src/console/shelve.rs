//! Shelving and out-of-service from the console (issue #25 item 3): the HTTP side and
//! the actions-topic events; the table and what it silences are `alert::shelve`'s.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/shelve` | `{point_id \| site_id, kind, reason, until}`; 202 once on the actions topic |
//! | `DELETE /api/shelve/{shelf_id}` | ends a shelf early (`point:S-1`, `site:SITE-1`); 202 |
//! | `GET /api/shelves` | the shelves in force, soonest expiry first |
//!
//! A shelve is an event on the actions topic (key = shelf id, so a shelf and its
//! unshelve stay in order), written before it is applied, like acknowledgements: every
//! instance's actions consumer applies it to its table, and a restart replays it before
//! the pipeline starts. Who may shelve: the city's token anything; another center's token
//! a point or site whose alerts reach it (seen on this console), and never one with
//! `gas_lel` or `h2s_ppm` points (their physical limits are the city's to silence;
//! `alert::shelve` enforces that again on every signal). Unshelving: the city, or the
//! center that shelved.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::server::{bearer, error, ConsoleApp, ReadQuery};
use super::ConsoleState;
use crate::alert::shelve::{Shelf, ShelfKind, ShelfScope, PHYSICAL_KINDS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShelveAction {
    Shelve,
    Unshelve,
}

/// One shelving message of the actions topic (beside [`super::ActionEvent`]s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShelveEvent {
    pub action: ShelveAction,
    pub shelf_id: String,
    /// `shelve`: the shelf in force from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelf: Option<Shelf>,
    pub by_center: String,
    /// RFC 3339, UTC.
    pub at: String,
}

impl ConsoleState {
    /// Applies a shelving event (idempotent: the handler and the actions consumer both do).
    pub fn apply_shelve(&self, ev: &ShelveEvent) {
        match (ev.action, &ev.shelf) {
            (ShelveAction::Shelve, Some(s)) => self.shelves.put(s.clone(), self.now()),
            (ShelveAction::Shelve, None) => {
                tracing::warn!(shelf_id = %ev.shelf_id, "shelve event without a shelf skipped")
            }
            (ShelveAction::Unshelve, _) => {
                self.shelves.remove(&ev.shelf_id);
            }
        }
    }

    /// What this console has seen of a point or site: the routes of its episodes (who
    /// sees its alerts) and the sensor kinds they named.
    pub fn seen(&self, scope: ShelfScope, target: &str) -> Seen {
        let g = self.lock();
        let mut seen = Seen::default();
        let field = scope.subject_field();
        for e in g.episodes.values() {
            let s = &e.alert.subject;
            if s.get(field).and_then(|v| v.as_str()) != Some(target) {
                continue;
            }
            seen.routes.extend(e.alert.route.iter().cloned());
            if let Some(k) = s.get("kind").and_then(|v| v.as_str()) {
                seen.kinds.insert(k.to_string());
            }
        }
        seen
    }
}

/// A point's or site's episodes as the console saw them (plus its registered kinds).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub routes: BTreeSet<String>,
    pub kinds: BTreeSet<String>,
}

/// Why a center may not shelve a target (403), or `Ok` when it may.
pub fn may_shelve(center: &str, city: &str, seen: &Seen) -> Result<(), &'static str> {
    if center == city {
        return Ok(());
    }
    if seen
        .kinds
        .iter()
        .any(|k| PHYSICAL_KINDS.contains(&k.as_str()))
    {
        return Err("the physical alarm limits of gas_lel and h2s_ppm points may be shelved only with the city's token");
    }
    if !seen.routes.contains(center) {
        return Err("this token's command center has no alert of this point or site on the console; the city's token may shelve it");
    }
    Ok(())
}

/// `until`: an RFC 3339 time or a duration from `now` (`8h`, `30m`), after `now` and at
/// most `max` away.
pub fn parse_until(
    s: &str,
    now: DateTime<Utc>,
    max: std::time::Duration,
) -> Result<DateTime<Utc>, String> {
    let until = match DateTime::parse_from_rfc3339(s.trim()) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => {
            let d = humantime_serde::re::humantime::parse_duration(s.trim()).map_err(|_| {
                format!("until: `{s}` is neither an RFC 3339 time nor a duration like 8h")
            })?;
            now + chrono::Duration::from_std(d).map_err(|_| "until: too far".to_string())?
        }
    };
    if until <= now {
        return Err("until: must be in the future".into());
    }
    let longest = chrono::Duration::from_std(max).unwrap_or(chrono::Duration::MAX);
    if until - now > longest {
        return Err(format!(
            "until: at most {} from now (console.max_shelve)",
            humantime_serde::re::humantime::format_duration(max)
        ));
    }
    Ok(until)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    #[serde(default)]
    point_id: Option<String>,
    #[serde(default)]
    site_id: Option<String>,
    #[serde(default)]
    kind: Option<ShelfKind>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

/// The shelf a request asks for, or 400 with what is wrong.
fn requested(body: ShelveBody, app: &ConsoleApp, center: &str) -> Result<Shelf, String> {
    let (scope, target) = match (body.point_id, body.site_id) {
        (Some(p), None) => (ShelfScope::Point, p),
        (None, Some(s)) => (ShelfScope::Site, s),
        _ => return Err("name exactly one of point_id and site_id".into()),
    };
    let target = target.trim().to_string();
    if target.is_empty() || target.len() > 200 {
        return Err("point_id / site_id: 1 to 200 characters".into());
    }
    let reason = body.reason.as_deref().map(str::trim).unwrap_or_default();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err("reason: required, at most 500 characters".into());
    }
    let now = app.state.now();
    let until = parse_until(
        body.until.as_deref().unwrap_or_default(),
        now,
        app.max_shelve,
    )?;
    Ok(Shelf {
        scope,
        target,
        kind: body.kind.unwrap_or(ShelfKind::Shelved),
        reason: reason.to_string(),
        by_center: center.to_string(),
        by_city: center == app.regions.city_code(),
        at: now,
        until,
    })
}

/// The kinds the registry knows at a point or site, joined to what the console saw.
fn seen_with_registry(app: &ConsoleApp, scope: ShelfScope, target: &str) -> Seen {
    let mut seen = app.state.seen(scope, target);
    match scope {
        ShelfScope::Point => {
            if let Some(k) = app.points.get(target).and_then(|p| p.kind.clone()) {
                seen.kinds.insert(k);
            }
        }
        ShelfScope::Site => seen.kinds.extend(app.points.kinds_at_site(target)),
    }
    seen
}

pub(super) async fn shelve(
    State(app): State<ConsoleApp>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let center = match app.tokens.center(bearer(&h)) {
        Ok(c) => c.to_string(),
        Err(d) => return app.deny(d, "shelve", None, None),
    };
    let body: ShelveBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let shelf = match requested(body, &app, &center) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let seen = seen_with_registry(&app, shelf.scope, &shelf.target);
    if let Err(m) = may_shelve(&center, app.regions.city_code(), &seen) {
        app.metrics
            .console_denied
            .with_label_values(&["shelve_refused"])
            .inc();
        tracing::warn!(target = %shelf.target, %center, "shelve refused: {m}");
        return error(StatusCode::FORBIDDEN, m);
    }
    let ev = ShelveEvent {
        action: ShelveAction::Shelve,
        shelf_id: shelf.id(),
        by_center: center.clone(),
        at: shelf.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        shelf: Some(shelf),
    };
    if let Err(r) = store(&app, &ev).await {
        return r;
    }
    tracing::info!(shelf_id = %ev.shelf_id, %center, "console shelve");
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "event": ev })),
    )
        .into_response()
}

pub(super) async fn unshelve(
    State(app): State<ConsoleApp>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    let center = match app.tokens.center(bearer(&h)) {
        Ok(c) => c.to_string(),
        Err(d) => return app.deny(d, "unshelve", Some(&id), None),
    };
    let Some(shelf) = app.state.shelves.get(&id) else {
        return error(StatusCode::NOT_FOUND, "no such shelf");
    };
    if center != app.regions.city_code() && center != shelf.by_center {
        return error(
            StatusCode::FORBIDDEN,
            "only the center that shelved it, or the city, may unshelve it",
        );
    }
    let ev = ShelveEvent {
        action: ShelveAction::Unshelve,
        shelf_id: id.clone(),
        shelf: None,
        by_center: center.clone(),
        at: app.state.now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    if let Err(r) = store(&app, &ev).await {
        return r;
    }
    tracing::info!(shelf_id = %id, %center, "console unshelve");
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "event": ev })),
    )
        .into_response()
}

pub(super) async fn shelves(
    State(app): State<ConsoleApp>,
    h: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Response {
    if let Err(r) = app.may_read(&h, &q, None) {
        return r;
    }
    let now = app.state.now();
    let list: Vec<serde_json::Value> = app
        .state
        .shelves
        .active(now)
        .into_iter()
        .map(|s| {
            let mut v = serde_json::to_value(&s).expect("shelves serialize");
            v["shelf_id"] = s.id().into();
            v
        })
        .collect();
    Json(serde_json::json!({ "now": now, "shelves": list })).into_response()
}

/// Writes `ev` to the actions topic and, once it is durable, applies it here.
#[allow(clippy::result_large_err)]
async fn store(app: &ConsoleApp, ev: &ShelveEvent) -> Result<(), Response> {
    let json = serde_json::to_vec(ev).expect("shelve events serialize");
    if let Err(e) = app.log.append_raw(&ev.shelf_id, &json).await {
        tracing::error!(shelf_id = %ev.shelf_id, error = %e, "shelving not written to the actions topic");
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the shelving could not be stored; try again",
        ));
    }
    app.state.apply_shelve(ev);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::console::ConsoleConfig;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const NOW: &str = "2026-11-26T00:00:00Z";
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn until_is_a_time_or_a_duration_within_max_shelve() {
        let now = t(NOW);
        assert_eq!(
            parse_until("8h", now, DAY).unwrap(),
            t("2026-11-26T08:00:00Z")
        );
        assert_eq!(
            parse_until("2026-11-26T10:00:00+08:00", now, DAY).unwrap(),
            t("2026-11-26T02:00:00Z")
        );
        assert!(parse_until("25h", now, DAY)
            .unwrap_err()
            .contains("max_shelve"));
        assert!(parse_until("2026-11-25T23:00:00Z", now, DAY)
            .unwrap_err()
            .contains("future"));
        assert!(parse_until("soon", now, DAY).is_err());
        assert!(parse_until("", now, DAY).is_err());
    }

    #[test]
    fn only_the_city_shelves_gas_and_h2s_or_what_a_center_does_not_see() {
        let mut seen = Seen::default();
        seen.routes.insert("330503".into());
        seen.kinds.insert("tank_level".into());
        assert!(may_shelve("330503", "330500", &seen).is_ok());
        assert!(may_shelve("330521", "330500", &seen)
            .unwrap_err()
            .contains("no alert"));
        seen.kinds.insert("h2s_ppm".into());
        assert!(may_shelve("330503", "330500", &seen)
            .unwrap_err()
            .contains("city's token"));
        assert!(may_shelve("330500", "330500", &seen).is_ok());
        assert!(may_shelve("330500", "330500", &Seen::default()).is_ok());
    }

    #[test]
    fn shelve_events_apply_to_the_shared_table_and_read_back_from_json() {
        let clock = ManualClock::new(t(NOW));
        let s = ConsoleState::new(Arc::new(clock), &ConsoleConfig::default());
        let table = s.shelves();
        let shelf = Shelf {
            scope: ShelfScope::Site,
            target: "SITE-1".into(),
            kind: ShelfKind::OutOfService,
            reason: "maintenance".into(),
            by_center: "330503".into(),
            by_city: false,
            at: t(NOW),
            until: t("2026-11-26T04:00:00Z"),
        };
        let ev = ShelveEvent {
            action: ShelveAction::Shelve,
            shelf_id: shelf.id(),
            shelf: Some(shelf.clone()),
            by_center: "330503".into(),
            at: NOW.into(),
        };
        let back: ShelveEvent = serde_json::from_slice(&serde_json::to_vec(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
        s.apply_shelve(&back);
        s.apply_shelve(&back);
        assert_eq!(table.active(t(NOW)), vec![shelf]);
        s.apply_shelve(&ShelveEvent {
            action: ShelveAction::Unshelve,
            shelf: None,
            ..ev
        });
        assert!(table.active(t(NOW)).is_empty());
        // An operator's action is not a shelving event (the actions topic holds both).
        let ack = r#"{"alert_id":"a","action":"ack","by_center":"330500","at":"x"}"#;
        assert!(serde_json::from_str::<ShelveEvent>(ack).is_err());
    }
}
