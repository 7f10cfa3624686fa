//! `alertmanager` sink: POSTs `{url}/api/v2/alerts` (Prometheus Alertmanager's v2 API) with
//! a JSON array of alerts.
//!
//! ```toml
//! [sinks.am]
//! type = "alertmanager"
//! url = "http://127.0.0.1:9093"                       # required; plain http
//! generator_url = "http://127.0.0.1:9464/metrics"     # default
//! resend_interval = "1m"                              # re-send open alerts this often
//! max_active = 10000                                  # open alerts held for re-sending
//! timeout = "5s"                                      # per attempt
//! max_retries = 5                                     # after the first attempt
//! backoff = "250ms"                                   # first retry delay, doubled each time
//! ```
//!
//! One riskstream alert becomes an Alertmanager alert with
//! - labels: `alertname` = detector, `stream`, `level`, `county` (the route's county code,
//!   when it has one), `subject` (the sensor id, else site id, else `kind:value` of a fraud
//!   suspect, else region code), `alert_id` and `incident_id` (the hazard the episode
//!   belongs to: `group_by: [incident_id]` in Alertmanager's route makes one notification
//!   group per incident; absent only for messages from before incidents);
//! - annotations: `summary` = title, `description` = the evidence in words, `route` = the
//!   command centers' codes, `region`;
//! - `startsAt` = `first_event_ts`, `endsAt` = `detected_at` when resolved (absent while
//!   firing), `generatorURL`.
//!
//! Labels are Alertmanager's identity of an alert. `level` is a label (as SPEC asks, so
//! routes and inhibitions can match on it), so a level change makes a *different*
//! Alertmanager alert: the sink then sends, in the same request, the old-level alert with
//! `endsAt` = `detected_at` (it resolves) and the new-level alert firing. It knows the old
//! level from the open alerts it holds for re-sending; after a restart it does not, and the
//! old-level alert resolves by itself once Alertmanager's `resolve_timeout` passes without a
//! re-send.
//!
//! Alertmanager expects clients to re-send firing alerts periodically (without `endsAt` it
//! ends an alert after `resolve_timeout`, 5m by default): a background task re-sends every
//! open alert every `resend_interval`. Re-sends go through the same ordered delivery queue
//! as state changes, so a re-send can never overtake (and re-open) a resolve.
//!
//! An ack resolves `Ok` after a 2xx; retryable failures (network, timeout, 5xx, 429) are
//! retried with exponential backoff, then the ack fails with `SinkError::Delivery`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::webhook::{self, DeliveryQueue, HttpClient, WhenFull};
use super::{parse_streams, Ack, Filter, Sink, SinkCtx, SinkError, SinkSpec};
use crate::alert::{Alert, Level, Status};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSinkConfig {
    /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`; required.
    pub url: String,
    /// `generatorURL` of every alert; default `http://127.0.0.1:9464/metrics`.
    #[serde(default = "default_generator_url")]
    pub generator_url: String,
    /// How often open alerts are re-sent; default 1m.
    #[serde(default = "default_resend_interval", with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Open alerts held for re-sending; the least recently changed is dropped past this
    /// (it then resolves in Alertmanager after `resolve_timeout`); default 10000.
    #[serde(default = "default_max_active")]
    pub max_active: usize,
    /// Per attempt; default 5s.
    #[serde(default = "webhook::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after the first attempt; default 5.
    #[serde(default = "webhook::default_max_retries")]
    pub max_retries: u32,
    /// First retry delay, doubled per retry; default 250ms.
    #[serde(default = "webhook::default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default)]
    pub min_level: Option<Level>,
}

fn default_generator_url() -> String {
    "http://127.0.0.1:9464/metrics".into()
}
fn default_resend_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_max_active() -> usize {
    10_000
}

impl SinkSpec for AlertmanagerSinkConfig {
    const TYPE: &'static str = "alertmanager";

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        webhook::validate_http_url(&self.url, &format!("{path}.url"), problems);
        webhook::validate_http_knobs(path, self.timeout, problems);
        if self.generator_url.trim().is_empty() {
            problems.push(format!("{path}.generator_url: must not be empty"));
        }
        if self.resend_interval.is_zero() {
            problems.push(format!("{path}.resend_interval: must be > 0"));
        }
        if self.max_active == 0 {
            problems.push(format!("{path}.max_active: must be >= 1"));
        }
        parse_streams(&self.streams, path, problems);
    }

    fn build(&self, name: &str, _ctx: &SinkCtx) -> Result<Arc<dyn Sink>, SinkError> {
        let endpoint = format!("{}/api/v2/alerts", self.url.trim().trim_end_matches('/'));
        let uri = webhook::parse_http_url(&endpoint).map_err(|m| SinkError::Build {
            sink: name.into(),
            message: format!("url: {m}"),
        })?;
        let http = HttpClient::new(self.timeout, self.max_retries, self.backoff);
        Ok(Arc::new(AlertmanagerSink {
            name: name.to_string(),
            filter: Filter {
                streams: parse_streams(&self.streams, "", &mut Vec::new()),
                min_level: self.min_level,
            },
            generator_url: self.generator_url.clone(),
            resend_interval: self.resend_interval,
            shared: Arc::new(Shared {
                queue: DeliveryQueue::new(
                    name,
                    http,
                    uri,
                    "application/json",
                    1024,
                    WhenFull::Block,
                ),
                active: Mutex::new(Active {
                    alerts: HashMap::new(),
                    next: 0,
                    max: self.max_active,
                }),
            }),
            resender: Once::new(),
        }))
    }
}

/// One open alert as last sent.
struct Open {
    level: Level,
    payload: Value,
    changed: u64,
}

struct Active {
    alerts: HashMap<String, Open>,
    next: u64,
    max: usize,
}

struct Shared {
    queue: DeliveryQueue,
    /// Open alerts by alert_id. Locked while a payload is queued, so state changes and
    /// re-sends enter the queue in the order their snapshots were taken.
    active: Mutex<Active>,
}

pub struct AlertmanagerSink {
    name: String,
    filter: Filter,
    generator_url: String,
    resend_interval: Duration,
    shared: Arc<Shared>,
    resender: Once,
}

impl AlertmanagerSink {
    fn start_resender(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.resender.call_once(|| {
            handle.spawn(resend_loop(
                Arc::downgrade(&self.shared),
                self.resend_interval,
                self.name.clone(),
            ));
        });
    }
}

/// Re-sends every open alert each `every`, until the sink is dropped.
async fn resend_loop(shared: Weak<Shared>, every: Duration, sink: String) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(sh) = shared.upgrade() else { return };
        let active = sh.active.lock().expect("am active");
        if active.alerts.is_empty() {
            continue;
        }
        let batch: Vec<&Value> = active.alerts.values().map(|o| &o.payload).collect();
        let body = serde_json::to_vec(&batch).expect("json");
        if let Err(e) = sh.queue.submit_detached("(resend)", Bytes::from(body)) {
            tracing::warn!(sink, error = %e, "alertmanager re-send not queued");
        }
    }
}

impl Sink for AlertmanagerSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> &Filter {
        &self.filter
    }

    fn send(&self, a: &Alert, _json: &[u8]) -> Result<Ack, SinkError> {
        self.start_resender();
        let mut active = self.shared.active.lock().expect("am active");
        let mut batch = Vec::with_capacity(2);
        // A level change is a different Alertmanager alert: end the old-level one.
        if let Some(prev) = active.alerts.get(&a.alert_id) {
            if prev.level != a.level {
                batch.push(payload(
                    a,
                    prev.level,
                    Some(&a.detected_at),
                    &self.generator_url,
                ));
            }
        }
        match a.status {
            Status::Firing => {
                let p = payload(a, a.level, None, &self.generator_url);
                batch.push(p.clone());
                if !active.alerts.contains_key(&a.alert_id) && active.alerts.len() >= active.max {
                    let oldest = active
                        .alerts
                        .iter()
                        .min_by_key(|(_, o)| o.changed)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        tracing::warn!(sink = %self.name, alert_id = %k, "max_active reached: no longer re-sending the oldest alert");
                        active.alerts.remove(&k);
                    }
                }
                let changed = active.next;
                active.next += 1;
                active.alerts.insert(
                    a.alert_id.clone(),
                    Open {
                        level: a.level,
                        payload: p,
                        changed,
                    },
                );
            }
            Status::Resolved => {
                batch.push(payload(
                    a,
                    a.level,
                    Some(&a.detected_at),
                    &self.generator_url,
                ));
                active.alerts.remove(&a.alert_id);
            }
        }
        let body = serde_json::to_vec(&batch).expect("json");
        let ack = self.shared.queue.submit(&a.alert_id, Bytes::from(body));
        drop(active);
        ack
    }
}

/// The Alertmanager alert for `a` at `level`; `ends_at` set resolves it.
fn payload(a: &Alert, level: Level, ends_at: Option<&str>, generator_url: &str) -> Value {
    let mut labels = Map::new();
    labels.insert("alertname".into(), a.detector.clone().into());
    labels.insert("stream".into(), a.stream.clone().into());
    labels.insert("level".into(), level.as_str().into());
    if let Some(c) = county(&a.route) {
        labels.insert("county".into(), c.into());
    }
    if let Some(s) = subject(a) {
        labels.insert("subject".into(), s.into());
    }
    labels.insert("alert_id".into(), a.alert_id.clone().into());
    // Alertmanager groups by labels: `group_by: [incident_id]` then makes one
    // notification of a hazard's episodes, as the console shows one card.
    if !a.incident_id.is_empty() {
        labels.insert("incident_id".into(), a.incident_id.clone().into());
    }
    let mut v = json!({
        "labels": labels,
        "annotations": {
            "summary": a.title,
            "description": super::cap::evidence_words(a),
            "route": a.route.join(","),
            "region": a.region_name,
        },
        "startsAt": a.first_event_ts,
        "generatorURL": generator_url,
    });
    if let Some(e) = ends_at {
        v["endsAt"] = e.into();
    }
    v
}

/// The county code on the route: the first 6-digit code that is not a city's (`xxxx00`),
/// else the county part of a 9-digit township code.
fn county(route: &[String]) -> Option<String> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    route
        .iter()
        .find(|c| c.len() == 6 && digits(c) && !c.ends_with("00"))
        .cloned()
        .or_else(|| {
            route
                .iter()
                .find(|c| c.len() == 9 && digits(c) && !c[..6].ends_with("00"))
                .map(|c| c[..6].to_string())
        })
}

/// The one subject id: sensor, else site, else fraud suspect (`phone:...`), else region.
fn subject(a: &Alert) -> Option<String> {
    let s = |k: &str| a.subject.get(k).and_then(Value::as_str).map(str::to_string);
    s("sensor_id").or_else(|| s("site_id")).or_else(|| {
        a.subject
            .iter()
            .find_map(|(k, v)| {
                let kind = k.strip_prefix("suspect_")?;
                Some(format!("{kind}:{}", v.as_str()?))
            })
            .or_else(|| s("region"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(status: &str, level: &str) -> Alert {
        serde_json::from_value(json!({
            "alert_id":"sensors:threshold:S-1:1","status":status,"level":level,"stream":"sensors","detector":"threshold",
            "subject":{"sensor_id":"S-1","site_id":"SITE-1","region":"330503101"},"title":"Gas LEL above alarm limit at SITE-1",
            "evidence":{"observed":31.5,"expected":10.0,"score":31.5,"threshold":25.0,"window":"instant"},
            "first_event_ts":"2026-11-26T08:05:00+08:00","detected_at":"2026-11-26T00:06:00.000Z","event_ids":[],
            "route":["330503101","330503","330500"],"region_name":"Xinshi Town","seq":1,
            "incident_id":"sensors:site:SITE-1:1"
        }))
        .unwrap()
    }

    #[test]
    fn labels_and_annotations() {
        let g = default_generator_url();
        let p = payload(&alert("firing", "red"), Level::Red, None, &g);
        assert_eq!(
            p["labels"],
            json!({"alertname":"threshold","stream":"sensors","level":"red","county":"330503",
                   "subject":"S-1","alert_id":"sensors:threshold:S-1:1",
                   "incident_id":"sensors:site:SITE-1:1"})
        );
        assert_eq!(
            p["annotations"]["summary"],
            "Gas LEL above alarm limit at SITE-1"
        );
        assert_eq!(p["annotations"]["route"], "330503101,330503,330500");
        assert!(p["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("Observed 31.5"));
        assert_eq!(p["startsAt"], "2026-11-26T08:05:00+08:00");
        assert_eq!(p["generatorURL"], "http://127.0.0.1:9464/metrics");
        assert!(p.get("endsAt").is_none());
        let r = payload(
            &alert("resolved", "red"),
            Level::Red,
            Some("2026-11-26T00:20:00Z"),
            &g,
        );
        assert_eq!(r["endsAt"], "2026-11-26T00:20:00Z");
    }

    /// firing orange -> firing red -> resolved against a recording endpoint: the level
    /// change ends the orange alert in the same request; open alerts are re-sent.
    #[tokio::test]
    async fn level_change_ends_the_old_level_alert_and_open_alerts_are_resent() {
        let srv = super::super::webhook::testserver::start(0, 200, false).await;
        let c: AlertmanagerSinkConfig = toml::from_str(&format!(
            "url = \"{}/\"\nresend_interval = \"100ms\"",
            srv.url
        ))
        .unwrap();
        let s = c.build("am_unit", &SinkCtx::default()).unwrap();
        let batch = |i: usize| -> Vec<Value> {
            serde_json::from_slice(&srv.requests.lock().unwrap()[i].body).unwrap()
        };
        s.send(&alert("firing", "orange"), b"")
            .unwrap()
            .await
            .unwrap();
        let b0 = batch(0);
        assert_eq!(b0.len(), 1);
        assert_eq!(b0[0]["labels"]["level"], "orange");
        assert!(b0[0].get("endsAt").is_none());
        assert_eq!(srv.requests.lock().unwrap()[0].path, "/api/v2/alerts");

        let mut red = alert("firing", "red");
        red.detected_at = "2026-11-26T00:07:00.000Z".into();
        s.send(&red, b"").unwrap().await.unwrap();
        let b1 = batch(1);
        assert_eq!(b1.len(), 2);
        assert_eq!(b1[0]["labels"]["level"], "orange");
        assert_eq!(b1[0]["endsAt"], "2026-11-26T00:07:00.000Z");
        assert_eq!(b1[1]["labels"]["level"], "red");
        assert!(b1[1].get("endsAt").is_none());

        // A re-send of the open (red) alert arrives within a few intervals.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while srv.requests.lock().unwrap().len() < 3 {
            assert!(std::time::Instant::now() < deadline, "no re-send");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b2 = batch(2);
        assert_eq!(b2.len(), 1);
        assert_eq!(b2[0], b1[1]);

        let mut res = alert("resolved", "red");
        res.detected_at = "2026-11-26T00:20:00.000Z".into();
        s.send(&res, b"").unwrap().await.unwrap();
        let n = srv.requests.lock().unwrap().len();
        let last = batch(n - 1);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0]["labels"]["level"], "red");
        assert_eq!(last[0]["endsAt"], "2026-11-26T00:20:00.000Z");
        // Nothing is open any more: no further re-sends.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(srv.requests.lock().unwrap().len(), n);
    }

    #[test]
    fn county_and_subject() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            county(&r(&["330503101", "330503", "330500"])).as_deref(),
            Some("330503")
        );
        assert_eq!(county(&r(&["330503101"])).as_deref(), Some("330503"));
        assert_eq!(county(&r(&["330500"])), None);
        let mut a = alert("firing", "red");
        a.subject =
            serde_json::from_value(json!({"suspect_phone":"+8613800000000","region":"330503101"}))
                .unwrap();
        assert_eq!(subject(&a).as_deref(), Some("phone:+8613800000000"));
        a.subject = serde_json::from_value(json!({"region":"330503"})).unwrap();
        assert_eq!(subject(&a).as_deref(), Some("330503"));
    }

    #[test]
    fn validation_names_the_path() {
        let c: AlertmanagerSinkConfig = toml::from_str(
            "url = \"\"\nresend_interval = \"0s\"\nmax_active = 0\ngenerator_url = \" \"",
        )
        .unwrap();
        let mut p = Vec::new();
        c.validate("sinks.am", &mut p);
        assert_eq!(
            p,
            vec![
                "sinks.am.url: must not be empty".to_string(),
                "sinks.am.generator_url: must not be empty".to_string(),
                "sinks.am.resend_interval: must be > 0".to_string(),
                "sinks.am.max_active: must be >= 1".to_string(),
            ]
        );
        assert!(
            toml::from_str::<AlertmanagerSinkConfig>("url = \"http://h\"\nlabels = 1").is_err()
        );
    }
}
