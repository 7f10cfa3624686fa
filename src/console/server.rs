//! The console's HTTP side (axum):
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `/app.js`, `/app.css` | the page (embedded; no CDN, no build step) |
//! | `GET /api/centers` | the command centers of the hierarchy |
//! | `GET /api/episodes?center=CODE` | incidents and episodes routed (or escalated) to CODE (open first, red first, newest first) |
//! | `GET /api/stream?center=CODE` | SSE: `snapshot` first, then `incident` / `episode` per change |
//! | `POST /api/incidents/{incident_id}/{ack,dispatch,close}` | an action on an incident and all its members; 202 once on the actions topic |
//! | `POST /api/episodes/{alert_id}/{ack,dispatch,close}` | an action on one episode alone |
//! | `GET /api/noise` | the detectors and keys with the most false alarms, last 7 days |
//! | `POST /api/shelve`, `DELETE /api/shelve/{id}`, `GET /api/shelves` | shelving and out-of-service (`shelve.rs`) |
//! | `GET /api/kpi?center=CODE` | ISA-18.2 alarm KPIs of CODE: alarms per 10 min, floods, chattering and stale alarms, top-10 bad actors |
//!
//! Writes need `Authorization: Bearer TOKEN` (401 missing/unknown, 403 outside the token's
//! center). With `read_requires_token`, GET /api/* need a token too, given as the header
//! or, because EventSource cannot set headers, as `?token=` (accepted on GET only).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::actions::ActionLog;
use super::{
    AckLimits, ActionEvent, ActionKind, Change, ConsoleState, Denied, IncidentTarget, Outcome,
    Tokens,
};
use crate::regions::Regions;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
pub struct ConsoleApp {
    pub state: Arc<ConsoleState>,
    pub log: Arc<ActionLog>,
    pub metrics: Arc<Metrics>,
    pub regions: Arc<Regions>,
    pub tokens: Tokens,
    pub read_requires_token: bool,
    pub ack_limits: AckLimits,
    pub shutdown: Shutdown,
    /// The monitoring points: which kinds a shelved point or site has.
    pub points: Arc<crate::registry::Registry>,
    /// The longest shelf one request may ask for (`console.max_shelve`).
    pub max_shelve: Duration,
}

pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

pub(super) fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

impl ConsoleApp {
    pub(super) fn deny(
        &self,
        d: Denied,
        what: &str,
        alert_id: Option<&str>,
        center: Option<&str>,
    ) -> Response {
        self.metrics
            .console_denied
            .with_label_values(&[d.as_str()])
            .inc();
        // Never the token itself.
        tracing::warn!(
            reason = d.as_str(),
            what,
            alert_id,
            center,
            "console request denied"
        );
        let status = StatusCode::from_u16(d.status()).expect("valid status");
        let msg = match d {
            Denied::MissingToken => "a bearer token is required",
            Denied::UnknownToken => "unknown token",
            Denied::OutsideCenter => "this token's command center may not act on this episode",
        };
        let mut r = error(status, msg);
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }

    // The Err is the HTTP response itself, handed straight back to axum: boxing it buys nothing.
    #[allow(clippy::result_large_err)]
    /// Read access: open, or (with read_requires_token) a token whose center covers `center`.
    pub(super) fn may_read(
        &self,
        h: &HeaderMap,
        q: &ReadQuery,
        center: Option<&str>,
    ) -> Result<(), Response> {
        if !self.read_requires_token {
            return Ok(());
        }
        let token = bearer(h).or(q.token.as_deref());
        let r = match center {
            Some(c) => self.tokens.may_read(token, c),
            None => self.tokens.center(token).map(|_| ()),
        };
        r.map_err(|d| self.deny(d, "read", None, center))
    }

    #[allow(clippy::result_large_err)]
    fn center(&self, q: &ReadQuery) -> Result<String, Response> {
        let c = q.center.clone().unwrap_or_default();
        if self.regions.tier(&c).is_none() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("`center` must be a command center code of the hierarchy, got `{c}`"),
            ));
        }
        Ok(c)
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct ReadQuery {
    center: Option<String>,
    token: Option<String>,
}

async fn page() -> Html<&'static str> {
    Html(include_str!("assets/index.html"))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/app.css"),
    )
}

async fn centers(
    State(app): State<ConsoleApp>,
    h: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Response {
    if let Err(r) = app.may_read(&h, &q, None) {
        return r;
    }
    Json(serde_json::json!({
        "city": app.regions.city_code(),
        "read_requires_token": app.read_requires_token,
        "centers": app.regions.centers(),
    }))
    .into_response()
}

async fn episodes(
    State(app): State<ConsoleApp>,
    h: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Response {
    let center = match app.center(&q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = app.may_read(&h, &q, Some(&center)) {
        return r;
    }
    Json(serde_json::json!({
        "now": app.state.now(),
        "incidents": app.state.incident_snapshot(&center),
        "episodes": app.state.snapshot(&center),
    }))
    .into_response()
}

async fn noise(
    State(app): State<ConsoleApp>,
    h: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Response {
    if let Err(r) = app.may_read(&h, &q, None) {
        return r;
    }
    Json(app.state.noise(20)).into_response()
}

async fn kpi(State(app): State<ConsoleApp>, h: HeaderMap, Query(q): Query<ReadQuery>) -> Response {
    let center = match app.center(&q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = app.may_read(&h, &q, Some(&center)) {
        return r;
    }
    Json(app.state.kpi_view(&center, &app.regions)).into_response()
}

/// Decrements the client gauge when an SSE stream is dropped (the page went away).
struct ClientGuard(Arc<Metrics>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.console_clients.dec();
    }
}

async fn stream(
    State(app): State<ConsoleApp>,
    h: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Response {
    let center = match app.center(&q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = app.may_read(&h, &q, Some(&center)) {
        return r;
    }
    // Subscribe before the snapshot so no change falls between the two.
    let rx = app.state.subscribe();
    app.metrics.console_clients.inc();
    let guard = ClientGuard(app.metrics.clone());
    let snapshot = |state: &ConsoleState, center: &str| {
        Event::default()
            .event("snapshot")
            .retry(Duration::from_secs(2))
            .json_data(serde_json::json!({
                "now": state.now(),
                "center": center,
                "incidents": state.incident_snapshot(center),
                "episodes": state.snapshot(center),
            }))
            .expect("snapshot serializes")
    };
    let first = snapshot(&app.state, &center);
    let state = app.state.clone();
    let updates = futures::stream::unfold(
        (rx, center, state, guard),
        move |(mut rx, center, state, guard)| async move {
            loop {
                match rx.recv().await {
                    Ok(c) => {
                        let Some(e) = change_event(&state, &c, &center) else {
                            continue;
                        };
                        return Some((e, (rx, center, state, guard)));
                    }
                    // Too slow to keep up: start over from a fresh snapshot.
                    Err(RecvError::Lagged(_)) => {
                        let e = snapshot(&state, &center);
                        return Some((e, (rx, center, state, guard)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    let mut stop = app.shutdown.clone();
    let s = futures::stream::once(async move { first })
        .chain(updates)
        .take_until(async move { stop.recv().await })
        .map(Ok::<_, Infallible>);
    Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The SSE event for one change, when `center` sees it: an episode routed there or a
/// member of an incident it sees; an incident routed or escalated there.
fn change_event(state: &ConsoleState, c: &Change, center: &str) -> Option<Event> {
    match c {
        Change::Episode(v) => (v.alert.route.iter().any(|r| r == center)
            || state.incident_visible(&v.alert.incident_id, center))
        .then(|| {
            Event::default()
                .event("episode")
                .json_data(v)
                .expect("episodes serialize")
        }),
        Change::Incident(v) => v.route.iter().any(|r| r == center).then(|| {
            Event::default()
                .event("incident")
                .json_data(v)
                .expect("incidents serialize")
        }),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    outcome: Option<Outcome>,
}

async fn act(
    State(app): State<ConsoleApp>,
    Path((alert_id, action)): Path<(String, String)>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(kind) = ActionKind::parse(&action) else {
        return error(StatusCode::NOT_FOUND, "actions are ack, dispatch and close");
    };
    let body: ActionBody = if body.is_empty() {
        ActionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    };
    // Authenticate before revealing whether the episode exists.
    let token = bearer(&h);
    if let Err(d) = app.tokens.center(token) {
        return app.deny(d, action.as_str(), Some(&alert_id), None);
    }
    let Some(ep) = app.state.get(&alert_id) else {
        return error(StatusCode::NOT_FOUND, "no such episode on this console");
    };
    let by_center = match app.tokens.authorize(token, &ep.alert.route) {
        Ok(c) => c,
        Err(d) => {
            let c = app.tokens.center(token).ok().map(str::to_string);
            return app.deny(d, action.as_str(), Some(&alert_id), c.as_deref());
        }
    };
    let mut ev = ActionEvent {
        alert_id: alert_id.clone(),
        incident_id: None,
        action: kind,
        by_center: by_center.clone(),
        note: body
            .note
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        outcome: body.outcome,
        at: app
            .state
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        to_center: None,
        reason: None,
        members: Vec::new(),
    };
    if ev.note.as_ref().is_some_and(|n| n.chars().count() > 500) {
        return error(StatusCode::BAD_REQUEST, "note: at most 500 characters");
    }
    let target = match app.state.check(&alert_id, &ev) {
        Ok(Some(t)) => t,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such episode on this console"),
        Err(c) => return conflict(c),
    };
    if kind == ActionKind::Close {
        // The verdict travels with the action, so a console that replays the actions
        // topic before the episode comes back still has it (src/console/verdicts.rs).
        ev.members = vec![target.member.clone()];
    }
    if let Err(r) = store(&app, &ev, &alert_id).await {
        return r;
    }
    record(&app, &ev, &target);
    tracing::info!(alert_id, action = action.as_str(), center = %by_center, "console action");
    let view = app.state.get(&alert_id);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "event": ev, "episode": view })),
    )
        .into_response()
}

/// An action the state refuses: 400 when the request lacks what the action needs (a
/// note, an outcome), 409 when the episode or incident is not in a state to take it.
fn conflict(c: super::Conflict) -> Response {
    match c {
        super::Conflict::MissingNote | super::Conflict::MissingOutcome => {
            error(StatusCode::BAD_REQUEST, c.to_string())
        }
        c => error(StatusCode::CONFLICT, c.to_string()),
    }
}

/// Writes `ev` to the actions topic and, once it is durable, applies it here (the
/// actions consumer will see it too; whichever applies first wins). `id` names the
/// episode or incident in the log.
#[allow(clippy::result_large_err)]
async fn store(app: &ConsoleApp, ev: &ActionEvent, id: &str) -> Result<(), Response> {
    if let Err(e) = app.log.append(ev).await {
        tracing::error!(id, action = ?ev.action, error = %e, "action not written to the actions topic");
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the action could not be stored; try again",
        ));
    }
    let _ = app.state.apply(ev);
    Ok(())
}

/// Metrics are counted by the instance that took the action, once (not on replay).
fn record(app: &ConsoleApp, ev: &ActionEvent, t: &super::Target) {
    let first_ack = t.first_ack.then_some(t.opened_at);
    record_action(
        app,
        ev,
        t.level,
        first_ack,
        std::iter::once(t.detector.as_str()),
    );
}

/// Parses an action request's body, or answers 400.
#[allow(clippy::result_large_err)]
fn action_body(body: &[u8]) -> Result<ActionBody, Response> {
    if body.is_empty() {
        return Ok(ActionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("body: {e}")))
}

/// An operator's action on an incident: it applies to the incident and every member.
async fn act_incident(
    State(app): State<ConsoleApp>,
    Path((incident_id, action)): Path<(String, String)>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(kind) = ActionKind::parse(&action) else {
        return error(StatusCode::NOT_FOUND, "actions are ack, dispatch and close");
    };
    let body = match action_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let token = bearer(&h);
    if let Err(d) = app.tokens.center(token) {
        return app.deny(d, action.as_str(), Some(&incident_id), None);
    }
    let Some(inc) = app.state.get_incident(&incident_id) else {
        return error(StatusCode::NOT_FOUND, "no such incident on this console");
    };
    let by_center = match app.tokens.authorize(token, &inc.route) {
        Ok(c) => c,
        Err(d) => {
            let c = app.tokens.center(token).ok().map(str::to_string);
            return app.deny(d, action.as_str(), Some(&incident_id), c.as_deref());
        }
    };
    let note = body
        .note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 500) {
        return error(StatusCode::BAD_REQUEST, "note: at most 500 characters");
    }
    let mut ev = ActionEvent {
        alert_id: String::new(),
        incident_id: Some(incident_id.clone()),
        action: kind,
        by_center: by_center.clone(),
        note,
        outcome: body.outcome,
        at: app
            .state
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        to_center: None,
        reason: None,
        members: Vec::new(),
    };
    let target = match app.state.check_incident(&incident_id, &ev) {
        Ok(Some(t)) => t,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such incident on this console"),
        Err(c) => return conflict(c),
    };
    if kind == ActionKind::Close {
        ev.members = target.members.clone();
    }
    if let Err(r) = store(&app, &ev, &incident_id).await {
        return r;
    }
    record_incident(&app, &ev, &target);
    tracing::info!(incident_id, action = action.as_str(), center = %by_center, members = target.members.len(), "console action on an incident");
    let view = app.state.get_incident(&incident_id);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "event": ev, "incident": view })),
    )
        .into_response()
}

/// Per incident: one time-to-acknowledge, one close; a false alarm counts once per member
/// detector (the verdict is on each member's episode).
fn record_incident(app: &ConsoleApp, ev: &ActionEvent, t: &IncidentTarget) {
    let first_ack = t.first_ack.then_some(t.opened_at);
    let detectors = t.members.iter().map(|m| m.detector.as_str());
    record_action(app, ev, t.level, first_ack, detectors);
}

/// The metrics of one action on an episode or an incident: its time to acknowledge
/// (`first_ack`: when what was acknowledged opened) and its close, a false alarm counted
/// against each of `detectors`.
fn record_action<'a>(
    app: &ConsoleApp,
    ev: &ActionEvent,
    level: crate::alert::Level,
    first_ack: Option<chrono::DateTime<chrono::Utc>>,
    detectors: impl Iterator<Item = &'a str>,
) {
    let center = ev.by_center.as_str();
    if let Some(opened_at) = first_ack {
        let at = chrono::DateTime::parse_from_rfc3339(&ev.at)
            .map(|x| x.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| app.state.now());
        let secs = (at - opened_at).num_milliseconds().max(0) as f64 / 1000.0;
        app.metrics
            .console_time_to_ack
            .with_label_values(&[level.as_str(), center])
            .observe(secs);
        let within = secs <= app.ack_limits.of(level).as_secs_f64();
        app.metrics
            .console_acks
            .with_label_values(&[
                level.as_str(),
                center,
                if within { "true" } else { "false" },
            ])
            .inc();
    }
    if let (ActionKind::Close, Some(o)) = (ev.action, ev.outcome) {
        app.metrics
            .console_closed
            .with_label_values(&[level.as_str(), center, o.as_str()])
            .inc();
        if o == Outcome::FalseAlarm {
            for d in detectors {
                app.metrics
                    .console_false_alarms
                    .with_label_values(&[d])
                    .inc();
            }
        }
    }
}

pub fn router(app: ConsoleApp) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/api/centers", get(centers))
        .route("/api/episodes", get(episodes))
        .route("/api/stream", get(stream))
        .route("/api/episodes/{alert_id}/{action}", post(act))
        .route("/api/incidents/{incident_id}/{action}", post(act_incident))
        .route("/api/noise", get(noise))
        .route("/api/shelve", post(super::shelve::shelve))
        .route("/api/shelve/{shelf_id}", delete(super::shelve::unshelve))
        .route("/api/shelves", get(super::shelve::shelves))
        .route("/api/kpi", get(kpi))
        .with_state(app)
}

/// Binds now (a taken port fails at start) and serves until shutdown.
pub async fn serve(
    addr: SocketAddr,
    app: ConsoleApp,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut stop = app.shutdown.clone();
    let r = router(app);
    let h = tokio::spawn(async move {
        let res = axum::serve(listener, r)
            .with_graceful_shutdown(async move { stop.recv().await })
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "console server stopped");
        }
    });
    Ok((local, h))
}
