//! `cap` sink: one OASIS CAP 1.2 XML document per *incident* state change (issue #23),
//! for the emergency bureau, to a Kafka topic (key = `incident_id`, header `content-type:
//! application/cap+xml`) or POSTed to an HTTP endpoint (`content-type:
//! application/cap+xml`): exactly one of `topic` and `url`. The bureau handles hazards, not
//! detectors: a site event seen by ten sensors is one CAP alert and its updates, not ten.
//! Episode messages (`alerts`) are not sent here.
//!
//! ```toml
//! [sinks.bureau]
//! type = "cap"
//! sender = "riskstream@city.example"   # required: CAP <sender>, no spaces, commas, < or &
//! topic = "alerts.cap"                 # or url = "http://bureau.example:8080/cap"
//! sender_name = "riskstream"           # CAP <senderName>
//! utc_offset = "+08:00"                # the offset <sent> and <onset> are written in
//! max_incidents = 10000                # open incidents whose earlier documents are remembered
//! streams = ["sensors"]
//! # url mode only: timeout = "5s", max_retries = 5, backoff = "250ms" (see the webhook sink)
//! ```
//!
//! Mapping (incident -> CAP):
//! - `identifier` = `incident_id:seq` (unique per document; characters CAP forbids in an
//!   id — whitespace, `,`, `<`, `&` — and `%` are percent-encoded); `sent` = `detected_at`
//!   in `utc_offset`, whole seconds (`2026-11-26T08:01:00+08:00`); `status` Actual;
//!   `scope` Public.
//! - `msgType`: `Alert` when the incident opens, `Update` on a later firing message (its
//!   level changed), `Cancel` when it resolves; `references` lists every earlier document
//!   of the incident as `sender,identifier,sent` triples (the previous one last). The sink
//!   remembers them per `incident_id`, at most `max_incidents` (the least recently opened
//!   is forgotten first), and forgets an incident when it resolves. After a restart an
//!   incident's earlier documents are unknown and its next document carries no
//!   `references`.
//! - `info`: `language` en-US; `category` CBRNE for incidents with a gas/H2S member, Safety
//!   for other sensor and report incidents, Security for fraud; `event` = the title's
//!   subject ("Gas LEL, pressure and temperature rising"); `urgency` Immediate (red,
//!   orange), Expected (yellow), Future (blue), Past on resolve; `severity`
//!   Extreme/Severe/Moderate/Minor for red/orange/yellow/blue; `certainty` Observed when a
//!   member's detector compares a reading with a fixed rule (threshold, rate_of_change,
//!   flatline, offline), else Likely; `onset` = `first_event_ts`; `headline` = title;
//!   `description` = one line per member (title, level, status, evidence); `parameter`s
//!   level, stream, incident_id, seq, members, detectors; `area` with `areaDesc` =
//!   `region_name` and geocode `GB/T 2260` = `route[0]`, the most specific region code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

use super::webhook::{self, DeliveryQueue, HttpClient, WhenFull};
use super::{parse_streams, Ack, Filter, Sink, SinkCtx, SinkError, SinkSpec};
use crate::alert::{Alert, Incident, Level, Member, Status};

pub const CAP_NS: &str = "urn:oasis:names:tc:emergency:cap:1.2";
pub const CAP_CONTENT_TYPE: &str = "application/cap+xml";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapSinkConfig {
    /// CAP `<sender>`; required.
    pub sender: String,
    /// Kafka topic for the documents (key = incident_id). Exactly one of `topic` and `url`.
    #[serde(default)]
    pub topic: Option<String>,
    /// HTTP endpoint the documents are POSTed to. Exactly one of `topic` and `url`.
    #[serde(default)]
    pub url: Option<String>,
    /// CAP `<senderName>`; default "riskstream".
    #[serde(default = "default_sender_name")]
    pub sender_name: String,
    /// UTC offset of `<sent>` and `<onset>`; default "+08:00" (China Standard Time).
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// Open incidents whose earlier documents are remembered for `<references>`; default
    /// 10000. `max_episodes` is its name from before incidents.
    #[serde(default = "default_max_incidents", alias = "max_episodes")]
    pub max_incidents: usize,
    /// `url` mode: per attempt; default 5s.
    #[serde(default = "webhook::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// `url` mode: retries after the first attempt; default 5.
    #[serde(default = "webhook::default_max_retries")]
    pub max_retries: u32,
    /// `url` mode: first retry delay, doubled per retry; default 250ms.
    #[serde(default = "webhook::default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default)]
    pub min_level: Option<Level>,
}

fn default_sender_name() -> String {
    "riskstream".into()
}
fn default_utc_offset() -> String {
    "+08:00".into()
}
fn default_max_incidents() -> usize {
    10_000
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' || !(b[0] == b'+' || b[0] == b'-') {
        return None;
    }
    let h: i32 = s.get(1..3)?.parse().ok()?;
    let m: i32 = s.get(4..6)?.parse().ok()?;
    if h > 14 || m > 59 {
        return None;
    }
    let secs = (h * 3600 + m * 60) * if b[0] == b'-' { -1 } else { 1 };
    FixedOffset::east_opt(secs)
}

impl SinkSpec for CapSinkConfig {
    const TYPE: &'static str = "cap";

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if self.sender.trim().is_empty() {
            problems.push(format!("{path}.sender: must not be empty"));
        } else if self
            .sender
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ',' | '<' | '&'))
        {
            problems.push(format!(
                "{path}.sender: must not contain spaces, commas, `<` or `&` (CAP 1.2)"
            ));
        }
        match (&self.topic, &self.url) {
            (Some(_), Some(_)) | (None, None) => {
                problems.push(format!("{path}: set exactly one of `topic` and `url`"))
            }
            (Some(t), None) if t.trim().is_empty() => {
                problems.push(format!("{path}.topic: must not be empty"))
            }
            (None, Some(u)) => {
                webhook::validate_http_url(u, &format!("{path}.url"), problems);
                webhook::validate_http_knobs(path, self.timeout, problems);
            }
            _ => {}
        }
        if parse_offset(&self.utc_offset).is_none() {
            problems.push(format!(
                "{path}.utc_offset: `{}` is not an offset like \"+08:00\"",
                self.utc_offset
            ));
        }
        if self.max_incidents == 0 {
            problems.push(format!("{path}.max_incidents: must be >= 1"));
        }
        parse_streams(&self.streams, path, problems);
    }

    fn build(&self, name: &str, ctx: &SinkCtx) -> Result<Arc<dyn Sink>, SinkError> {
        let err = |message: String| SinkError::Build {
            sink: name.into(),
            message,
        };
        let out = match (&self.topic, &self.url) {
            (Some(topic), None) => Out::Kafka {
                producer: ctx.producer.clone().ok_or_else(|| {
                    err("a cap sink with `topic` needs a broker; use `url` without one".into())
                })?,
                topic: topic.clone(),
            },
            (None, Some(url)) => Out::Http(Box::new(DeliveryQueue::new(
                name,
                HttpClient::new(self.timeout, self.max_retries, self.backoff),
                webhook::parse_http_url(url).map_err(|m| err(format!("url: {m}")))?,
                CAP_CONTENT_TYPE,
                1000,
                WhenFull::Block,
            ))),
            _ => return Err(err("set exactly one of `topic` and `url`".into())),
        };
        Ok(Arc::new(CapSink {
            name: name.to_string(),
            filter: Filter {
                streams: parse_streams(&self.streams, "", &mut Vec::new()),
                min_level: self.min_level,
            },
            writer: CapWriter::new(
                &self.sender,
                &self.sender_name,
                parse_offset(&self.utc_offset).ok_or_else(|| err("bad utc_offset".into()))?,
                self.max_incidents,
            ),
            out,
        }))
    }
}

enum Out {
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    Http(Box<DeliveryQueue>),
}

pub struct CapSink {
    name: String,
    filter: Filter,
    writer: CapWriter,
    out: Out,
}

impl Sink for CapSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Episodes are not the bureau's business: their incident is.
    fn send(&self, _alert: &Alert, _json: &[u8]) -> Result<Ack, SinkError> {
        Ok(Box::pin(async { Ok(()) }))
    }

    fn takes_incidents(&self) -> bool {
        true
    }

    fn send_incident(&self, incident: &Incident, _json: &[u8]) -> Result<Ack, SinkError> {
        let xml = self.writer.document(incident);
        let key = &incident.incident_id;
        match &self.out {
            Out::Kafka { producer, topic } => {
                let rec = FutureRecord::to(topic)
                    .key(key.as_bytes())
                    .payload(&xml)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "content-type",
                        value: Some(CAP_CONTENT_TYPE),
                    }));
                match producer.send_result(rec) {
                    Ok(f) => Ok(super::kafka::ack(self.name.clone(), f)),
                    Err((e, _)) => Err(super::kafka::kafka_error(&self.name, e)),
                }
            }
            Out::Http(q) => q.submit(key, Bytes::from(xml)),
        }
    }

    fn flush(&self, timeout: Duration) {
        if let Out::Kafka { producer, .. } = &self.out {
            use rdkafka::producer::Producer;
            let _ = producer.flush(timeout);
        }
    }
}

/// An incident's documents so far: (identifier, sent).
struct Sent {
    opened: u64,
    docs: Vec<(String, String)>,
}

struct History {
    incidents: HashMap<String, Sent>,
    next: u64,
}

/// Turns incident messages into CAP documents, remembering each open incident's earlier
/// documents.
pub struct CapWriter {
    sender: String,
    sender_name: String,
    offset: FixedOffset,
    max_incidents: usize,
    history: Mutex<History>,
}

impl CapWriter {
    pub fn new(sender: &str, sender_name: &str, offset: FixedOffset, max_incidents: usize) -> Self {
        Self {
            sender: sender.to_string(),
            sender_name: sender_name.to_string(),
            offset,
            max_incidents: max_incidents.max(1),
            history: Mutex::new(History {
                incidents: HashMap::new(),
                next: 0,
            }),
        }
    }

    /// Incidents currently remembered.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.history.lock().expect("cap history").incidents.len()
    }

    /// The CAP document of one incident state change; records it in the incident's history.
    pub fn document(&self, i: &Incident) -> Vec<u8> {
        let sent = cap_time(&i.detected_at, self.offset)
            .unwrap_or_else(|| cap_time_of(chrono::Utc::now().fixed_offset(), self.offset));
        let identifier = cap_id(&format!("{}:{}", i.incident_id, i.seq.max(1)));
        let earlier = self.record(i, &identifier, &sent);
        // CAP 1.2 offers Update or Cancel for the end of an incident. We send Cancel: the
        // hazard has cleared, so every earlier document in <references> no longer stands
        // and receivers (displays, sirens, SMS gateways) should withdraw them, which is what
        // Cancel means ("cancels the earlier message(s) identified in <references>"); an
        // Update would supersede them with a still-live message that receivers keep showing.
        // The Cancel still carries an <info> with urgency Past and responseType AllClear, so
        // profiles that read an all-clear from those see one too.
        let msg_type = match i.status {
            Status::Resolved => "Cancel",
            // The first document this sink sends for an incident is an Alert, even
            // mid-incident (a `min_level` filter admits it when it rises to that level).
            Status::Firing if earlier.is_empty() => "Alert",
            Status::Firing => "Update",
        };
        let references = earlier
            .iter()
            .map(|(id, sent)| format!("{},{id},{sent}", self.sender))
            .collect::<Vec<_>>()
            .join(" ");
        self.write(i, &identifier, &sent, msg_type, &references)
            .expect("writing XML to memory cannot fail")
    }

    /// Records this document in the incident's history and returns the earlier ones (a
    /// re-delivered message does not reference itself).
    fn record(&self, i: &Incident, identifier: &str, sent: &str) -> Vec<(String, String)> {
        let mut h = self.history.lock().expect("cap history");
        let earlier: Vec<_> = h
            .incidents
            .get(&i.incident_id)
            .map(|e| {
                e.docs
                    .iter()
                    .filter(|(id, _)| id != identifier)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if i.status == Status::Resolved {
            h.incidents.remove(&i.incident_id);
            return earlier;
        }
        if !h.incidents.contains_key(&i.incident_id) && h.incidents.len() >= self.max_incidents {
            let oldest = h
                .incidents
                .iter()
                .min_by_key(|(_, e)| e.opened)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                tracing::warn!(incident_id = %k, "cap: max_incidents reached; forgetting the oldest incident's references");
                h.incidents.remove(&k);
            }
        }
        let opened = h.next;
        h.next += 1;
        let e = h
            .incidents
            .entry(i.incident_id.clone())
            .or_insert_with(|| Sent {
                opened,
                docs: Vec::new(),
            });
        if !e.docs.iter().any(|(id, _)| id == identifier) {
            e.docs.push((identifier.to_string(), sent.to_string()));
        }
        earlier
    }

    fn write(
        &self,
        i: &Incident,
        identifier: &str,
        sent: &str,
        msg_type: &str,
        references: &str,
    ) -> std::io::Result<Vec<u8>> {
        let mut w = Writer::new_with_indent(Vec::with_capacity(2048), b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.write_event(Event::Start(
            BytesStart::new("alert").with_attributes([("xmlns", CAP_NS)]),
        ))?;
        el(&mut w, "identifier", identifier)?;
        el(&mut w, "sender", &self.sender)?;
        el(&mut w, "sent", sent)?;
        el(&mut w, "status", "Actual")?;
        el(&mut w, "msgType", msg_type)?;
        el(&mut w, "scope", "Public")?;
        if !references.is_empty() {
            el(&mut w, "references", references)?;
        }
        self.write_info(&mut w, i)?;
        end(&mut w, "alert")?;
        let mut out = w.into_inner();
        out.push(b'\n');
        Ok(out)
    }

    /// The `<info>` block: the event, its urgency, severity and certainty, the
    /// incident's parameters and its area.
    fn write_info(&self, w: &mut Writer<Vec<u8>>, i: &Incident) -> std::io::Result<()> {
        let resolved = i.status == Status::Resolved;
        start(w, "info")?;
        el(w, "language", "en-US")?;
        el(w, "category", category(i))?;
        el(w, "event", &event(&i.title))?;
        if resolved {
            el(w, "responseType", "AllClear")?;
        }
        let urgency = if resolved {
            "Past"
        } else {
            match i.level {
                Level::Red | Level::Orange => "Immediate",
                Level::Yellow => "Expected",
                Level::Blue => "Future",
            }
        };
        el(w, "urgency", urgency)?;
        el(w, "severity", severity(i.level))?;
        el(w, "certainty", certainty(&i.members))?;
        if let Some(onset) = cap_time(&i.first_event_ts, self.offset) {
            el(w, "onset", &onset)?;
        }
        el(w, "senderName", &self.sender_name)?;
        el(w, "headline", &i.title)?;
        el(w, "description", &incident_words(i))?;
        write_parameters(w, i)?;
        write_area(w, i)?;
        end(w, "info")
    }
}

/// The incident's `<parameter>`s: level, stream, id, seq, member count, detectors.
fn write_parameters(w: &mut Writer<Vec<u8>>, i: &Incident) -> std::io::Result<()> {
    for (k, v) in [
        ("level", i.level.as_str().to_string()),
        ("stream", i.stream.clone()),
        ("incident_id", i.incident_id.clone()),
        ("seq", i.seq.to_string()),
        (
            "members",
            (i.members.len() + i.dropped_members as usize).to_string(),
        ),
        ("detectors", detectors(&i.members)),
    ] {
        start(w, "parameter")?;
        el(w, "valueName", k)?;
        el(w, "value", &v)?;
        end(w, "parameter")?;
    }
    Ok(())
}

/// The `<area>`: the region's name (else the route's first center) and the route's first
/// center as its GB/T 2260 geocode.
fn write_area(w: &mut Writer<Vec<u8>>, i: &Incident) -> std::io::Result<()> {
    let area_desc = if i.region_name.trim().is_empty() {
        i.route.first().cloned().unwrap_or_default()
    } else {
        i.region_name.clone()
    };
    if !area_desc.is_empty() {
        start(w, "area")?;
        el(w, "areaDesc", &area_desc)?;
        if let Some(code) = i.route.first() {
            start(w, "geocode")?;
            el(w, "valueName", "GB/T 2260")?;
            el(w, "value", code)?;
            end(w, "geocode")?;
        }
        end(w, "area")?;
    }
    Ok(())
}

fn start(w: &mut Writer<Vec<u8>>, name: &str) -> std::io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(name)))
}

fn end(w: &mut Writer<Vec<u8>>, name: &str) -> std::io::Result<()> {
    w.write_event(Event::End(BytesEnd::new(name)))
}

/// `<name>text</name>`, the text escaped.
fn el(w: &mut Writer<Vec<u8>>, name: &str, text: &str) -> std::io::Result<()> {
    start(w, name)?;
    w.write_event(Event::Text(BytesText::new(text)))?;
    end(w, name)
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "NaN".into()
    }
}

/// An RFC 3339 time as CAP 1.2 wants it: whole seconds and an explicit offset (`-00:00` for
/// UTC, never `Z`).
pub fn cap_time(rfc3339: &str, offset: FixedOffset) -> Option<String> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| cap_time_of(t, offset))
}

fn cap_time_of(t: DateTime<FixedOffset>, offset: FixedOffset) -> String {
    let t = t.with_timezone(&offset);
    if offset.local_minus_utc() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S-00:00").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// A CAP identifier: whitespace, `,`, `<`, `&` (forbidden in CAP ids) and `%` are
/// percent-encoded, so distinct alert ids stay distinct.
pub fn cap_id(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_whitespace() || matches!(c, ',' | '<' | '&' | '%') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn category(i: &Incident) -> &'static str {
    match i.stream.as_str() {
        "sensors" => {
            let hazmat = |s: &str| {
                let s = s.to_ascii_lowercase();
                s.starts_with("gas") || s.contains("h2s")
            };
            let by_kind = i
                .members
                .iter()
                .any(|m| m.kind.as_deref().is_some_and(hazmat));
            let no_kind = i.members.iter().all(|m| m.kind.is_none());
            if by_kind || (no_kind && hazmat(&i.title)) {
                "CBRNE"
            } else {
                "Safety"
            }
        }
        "fraud" => "Security",
        _ => "Safety",
    }
}

fn severity(l: Level) -> &'static str {
    match l {
        Level::Red => "Extreme",
        Level::Orange => "Severe",
        Level::Yellow => "Moderate",
        Level::Blue => "Minor",
    }
}

/// Rule-based detectors observe the condition; statistical ones infer it. One member that
/// observed it is enough.
fn certainty(members: &[Member]) -> &'static str {
    let observed = |d: &str| matches!(d, "threshold" | "rate_of_change" | "flatline" | "offline");
    if members.iter().any(|m| observed(&m.detector)) {
        "Observed"
    } else {
        "Likely"
    }
}

/// The members' detectors, sorted and once each: `ewma_z,threshold`.
fn detectors(members: &[Member]) -> String {
    let set: std::collections::BTreeSet<&str> =
        members.iter().map(|m| m.detector.as_str()).collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// The incident in words, for people: its state, then one line per member.
pub fn incident_words(i: &Incident) -> String {
    let open = i
        .members
        .iter()
        .filter(|m| m.status == Status::Firing)
        .count();
    let mut s = if i.status == Status::Resolved {
        format!(
            "Resolved: every member has cleared. Level {}.",
            i.level.as_str()
        )
    } else {
        format!(
            "Level {}; {open} of {} related alerts open.",
            i.level.as_str(),
            i.members.len()
        )
    };
    if !i.region_name.is_empty() {
        s.push_str(&format!(" Region: {}.", i.region_name));
    }
    if !i.route.is_empty() {
        s.push_str(&format!(" Command centers: {}.", i.route.join(", ")));
    }
    for m in &i.members {
        s.push_str(&format!(
            "\n- {} ({}, {}, {}): {}",
            m.title,
            m.detector,
            m.level.as_str(),
            m.status.as_str(),
            m.evidence
        ));
    }
    if i.dropped_members > 0 {
        s.push_str(&format!(
            "\n- and {} earlier resolved alerts",
            i.dropped_members
        ));
    }
    s
}

/// The subject of a title: "Gas LEL above alarm limit at SITE-1" -> "Gas LEL above alarm
/// limit"; "Incident surge in X: 12 in 1h" -> "Incident surge in X".
pub fn event(title: &str) -> String {
    let t = title.split(": ").next().unwrap_or(title);
    let t = t.rsplit_once(" at ").map_or(t, |(head, _)| head);
    let t = t.trim();
    if t.is_empty() {
        title.trim().to_string()
    } else {
        t.to_string()
    }
}

/// The evidence in words, for people (CAP description, Alertmanager annotation).
pub fn evidence_words(a: &Alert) -> String {
    let e = &a.evidence;
    let mut s = if a.status == Status::Resolved {
        format!(
            "Resolved: the condition has cleared. Last evidence: observed {} against an expected {}",
            num(e.observed),
            num(e.expected)
        )
    } else {
        format!(
            "Observed {} against an expected {}",
            num(e.observed),
            num(e.expected)
        )
    };
    s.push_str(&format!(
        "; {} score {} (threshold {}, window {}).",
        a.detector,
        num(e.score),
        num(e.threshold),
        e.window
    ));
    if let Some(p) = e.p_value {
        s.push_str(&format!(" P(X >= observed) = {p:.2e}."));
    }
    s.push_str(&format!(" Level {}.", a.level.as_str()));
    if !a.region_name.is_empty() {
        s.push_str(&format!(" Region: {}.", a.region_name));
    }
    if !a.route.is_empty() {
        s.push_str(&format!(" Command centers: {}.", a.route.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use oasiscap::v1dot2;

    use super::*;

    fn member(sensor: &str, kind: &str, detector: &str, level: &str) -> Member {
        serde_json::from_value(serde_json::json!({
            "alert_id": format!("sensors:{detector}:{sensor}:1764115500"), "detector": detector,
            "level": level, "status": "firing",
            "title": "Gas LEL above alarm limit at SITE-330503-0042",
            "evidence": "observed 31.5 vs expected 10 (score 31.5, threshold 25, instant)",
            "score": 31.5, "sensor_id": sensor, "kind": kind, "trend": "rising"
        }))
        .unwrap()
    }

    /// The site incident of a gas leak seen by `threshold` on GAS1 and `ewma_z` on GAS2.
    fn gas(status: &str, level: &str, seq: u32, detected_at: &str) -> Incident {
        serde_json::from_value(serde_json::json!({
            "incident_id":"sensors:site:SITE-330503-0042:1764115500","status":status,
            "level":level,"stream":"sensors",
            "subject":{"site_id":"SITE-330503-0042","region":"330503101"},
            "region_name":"Xinshi Town",
            "title":"Gas LEL rising at SITE-330503-0042 (2 sensors, 2 detectors)",
            "route":["330503101","330503","330500"],
            "members":[
                member("S-330503-0042-GAS1", "gas_lel", "threshold", level),
                member("S-330503-0042-GAS2", "gas_lel", "ewma_z", "yellow"),
            ],
            "first_event_ts":"2026-11-26T08:05:00+08:00","detected_at":detected_at,"seq":seq
        }))
        .unwrap()
    }

    fn writer() -> CapWriter {
        CapWriter::new(
            "riskstream@city.example",
            "riskstream",
            parse_offset("+08:00").unwrap(),
            100,
        )
    }

    /// Parses with the independent `oasiscap` implementation (CAP 1.2 rules, not just XML).
    fn parse(xml: &[u8]) -> v1dot2::Alert {
        let s = std::str::from_utf8(xml).unwrap();
        s.parse::<v1dot2::Alert>()
            .unwrap_or_else(|e| panic!("not CAP 1.2: {e}\n{s}"))
    }

    #[test]
    fn firing_document_maps_every_required_element() {
        let w = writer();
        let xml = w.document(&gas("firing", "orange", 1, "2026-11-26T00:06:00.123Z"));
        let text = String::from_utf8(xml.clone()).unwrap();
        assert!(
            text.contains("<sent>2026-11-26T08:06:00+08:00</sent>"),
            "{text}"
        );
        assert!(text.contains("xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\""));
        let c = parse(&xml);
        assert_eq!(
            c.identifier.as_str(),
            "sensors:site:SITE-330503-0042:1764115500:1"
        );
        assert_eq!(c.sender.as_str(), "riskstream@city.example");
        assert_eq!(c.sent.to_string(), "2026-11-26T08:06:00+08:00");
        assert_eq!(c.status, v1dot2::Status::Actual);
        assert_eq!(c.message_type, v1dot2::MessageType::Alert);
        assert_eq!(c.scope, v1dot2::Scope::Public);
        assert!(c.references.is_none());
        assert_eq!(c.info.len(), 1);
        let i = &c.info[0];
        assert_eq!(i.language.as_str(), "en-US");
        assert_eq!(i.categories, vec![v1dot2::Category::CBRNE]);
        assert_eq!(i.event, "Gas LEL rising");
        assert_eq!(i.urgency, v1dot2::Urgency::Immediate);
        assert_eq!(i.severity, v1dot2::Severity::Severe);
        assert_eq!(i.certainty, v1dot2::Certainty::Observed);
        assert_eq!(i.onset.unwrap().to_string(), "2026-11-26T08:05:00+08:00");
        assert_eq!(i.sender_name.as_deref(), Some("riskstream"));
        assert_eq!(
            i.headline.as_deref(),
            Some("Gas LEL rising at SITE-330503-0042 (2 sensors, 2 detectors)")
        );
        let d = i.description.as_deref().unwrap();
        assert!(
            d.starts_with("Level orange; 2 of 2 related alerts open."),
            "{d}"
        );
        assert!(
            d.contains("\n- Gas LEL above alarm limit at SITE-330503-0042 (threshold, orange, firing): observed 31.5 vs expected 10"),
            "{d}"
        );
        assert!(d.contains("(ewma_z, yellow, firing)"), "{d}");
        assert_eq!(i.parameters.get("level"), Some("orange"));
        assert_eq!(i.parameters.get("detectors"), Some("ewma_z,threshold"));
        assert_eq!(i.parameters.get("members"), Some("2"));
        assert_eq!(
            i.parameters.get("incident_id"),
            Some("sensors:site:SITE-330503-0042:1764115500")
        );
        assert_eq!(i.areas.len(), 1);
        assert_eq!(i.areas[0].description, "Xinshi Town");
        assert_eq!(i.areas[0].geocode.get("GB/T 2260"), Some("330503101"));
    }

    #[test]
    fn lifecycle_alert_update_cancel_with_references() {
        let w = writer();
        let d1 = parse(&w.document(&gas("firing", "orange", 1, "2026-11-26T00:06:00Z")));
        assert_eq!(w.remembered(), 1);
        let d2 = parse(&w.document(&gas("firing", "red", 2, "2026-11-26T00:07:30Z")));
        let d3 = parse(&w.document(&gas("resolved", "red", 3, "2026-11-26T00:20:00Z")));
        assert_eq!(w.remembered(), 0, "the incident is forgotten on resolve");

        assert_eq!(d1.message_type, v1dot2::MessageType::Alert);
        assert_eq!(d2.message_type, v1dot2::MessageType::Update);
        assert_eq!(d3.message_type, v1dot2::MessageType::Cancel);
        let ids: Vec<&str> = [&d1, &d2, &d3]
            .iter()
            .map(|d| d.identifier.as_str())
            .collect();
        assert_eq!(
            ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
            3,
            "unique ids"
        );

        let refs = |d: &v1dot2::Alert| -> Vec<(String, String, String)> {
            d.references
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|r| {
                            (
                                r.sender.to_string(),
                                r.identifier.to_string(),
                                r.sent.to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let triple = |d: &v1dot2::Alert| {
            (
                d.sender.to_string(),
                d.identifier.to_string(),
                d.sent.to_string(),
            )
        };
        assert!(refs(&d1).is_empty());
        assert_eq!(refs(&d2), vec![triple(&d1)]);
        assert_eq!(refs(&d3), vec![triple(&d1), triple(&d2)]);
        assert_eq!(d2.info[0].severity, v1dot2::Severity::Extreme);
        assert_eq!(d3.info[0].urgency, v1dot2::Urgency::Past);
        assert_eq!(
            d3.info[0].response_type,
            vec![v1dot2::ResponseType::AllClear]
        );

        // A new incident of the same site starts over with msgType Alert.
        let mut again = gas("firing", "yellow", 1, "2026-11-26T01:00:00Z");
        again.incident_id = "sensors:site:SITE-330503-0042:1764119100".into();
        let d4 = parse(&w.document(&again));
        assert_eq!(d4.message_type, v1dot2::MessageType::Alert);
        assert_eq!(d4.info[0].urgency, v1dot2::Urgency::Expected);
        assert_eq!(d4.info[0].severity, v1dot2::Severity::Moderate);
    }

    #[test]
    fn redelivered_message_does_not_reference_itself() {
        let w = writer();
        let a = gas("firing", "orange", 1, "2026-11-26T00:06:00Z");
        w.document(&a);
        let again = parse(&w.document(&a));
        assert!(again.references.is_none());
    }

    #[test]
    fn history_is_bounded() {
        let w = CapWriter::new("s@x", "r", parse_offset("+08:00").unwrap(), 2);
        for i in 0..5 {
            let mut a = gas("firing", "blue", 1, "2026-11-26T00:06:00Z");
            a.incident_id = format!("k{i}");
            w.document(&a);
        }
        assert_eq!(w.remembered(), 2);
    }

    #[test]
    fn categories_certainty_and_escaping() {
        let w = writer();
        let mut f = gas("firing", "blue", 1, "2026-11-26T00:06:00Z");
        f.stream = "fraud".into();
        f.subject = serde_json::Map::new();
        for m in &mut f.members {
            m.detector = "entity_burst".into();
            m.kind = None;
        }
        f.incident_id = "fraud:suspect:url:http://x.example/?a=1&b=2,3 4:1764115500".into();
        f.title = "12 fraud reports name url <http://x.example/?a=1&b=\"2\"> within 1h".into();
        f.region_name = "Nanhu & \"Xiuzhou\" <district>".into();
        let xml = w.document(&f);
        let text = String::from_utf8(xml.clone()).unwrap();
        assert!(text.contains("&lt;http://x.example/?a=1&amp;b="), "{text}");
        let c = parse(&xml);
        assert_eq!(
            c.identifier.as_str(),
            "fraud:suspect:url:http://x.example/?a=1%26b=2%2C3%204:1764115500:1"
        );
        let i = &c.info[0];
        assert_eq!(i.headline.as_deref(), Some(f.title.as_str()));
        assert_eq!(i.areas[0].description, f.region_name);
        assert_eq!(i.categories, vec![v1dot2::Category::Security]);
        assert_eq!(i.certainty, v1dot2::Certainty::Likely);
        assert_eq!(i.urgency, v1dot2::Urgency::Future);
        assert_eq!(i.severity, v1dot2::Severity::Minor);

        let mut inc = gas("firing", "yellow", 1, "2026-11-26T00:06:00Z");
        inc.stream = "incidents".into();
        inc.members.truncate(1);
        inc.members[0].detector = "rate_spike".into();
        inc.members[0].kind = None;
        inc.title = "Incident surge in Xinshi Town: 12 in 1h (expected 2.0)".into();
        let i = &parse(&w.document(&inc)).info[0];
        assert_eq!(i.categories, vec![v1dot2::Category::Safety]);
        assert_eq!(i.event, "Incident surge in Xinshi Town");
        assert_eq!(i.certainty, v1dot2::Certainty::Likely);

        // A temperature-only site incident is Safety; one gas member makes it CBRNE.
        let mut temp = gas("firing", "red", 1, "2026-11-26T00:06:00Z");
        temp.incident_id.push_str("-t");
        for m in &mut temp.members {
            m.kind = Some("temperature".into());
        }
        temp.title = "Temperature rising at SITE-1 (2 sensors, 2 detectors)".into();
        assert_eq!(
            parse(&w.document(&temp)).info[0].categories,
            vec![v1dot2::Category::Safety]
        );
        temp.members[1].kind = Some("h2s".into());
        temp.seq = 2;
        assert_eq!(
            parse(&w.document(&temp)).info[0].categories,
            vec![v1dot2::Category::CBRNE]
        );
    }

    #[test]
    fn resolved_description_and_dropped_members() {
        let mut r = gas("resolved", "red", 3, "2026-11-26T00:20:00Z");
        for m in &mut r.members {
            m.status = Status::Resolved;
        }
        r.dropped_members = 4;
        let d = incident_words(&r);
        assert!(
            d.starts_with("Resolved: every member has cleared. Level red."),
            "{d}"
        );
        assert!(d.ends_with("\n- and 4 earlier resolved alerts"), "{d}");
        let c = parse(&writer().document(&r));
        assert_eq!(c.info[0].parameters.get("members"), Some("6"));
    }

    #[test]
    fn times_are_whole_seconds_with_an_explicit_offset() {
        let utc = parse_offset("+00:00").unwrap();
        assert_eq!(
            cap_time("2026-11-26T00:06:00.999Z", utc).unwrap(),
            "2026-11-26T00:06:00-00:00"
        );
        let cst = parse_offset("+08:00").unwrap();
        assert_eq!(
            cap_time("2026-11-26T23:59:59Z", cst).unwrap(),
            "2026-11-27T07:59:59+08:00"
        );
        assert_eq!(
            parse_offset("-05:30").unwrap().local_minus_utc(),
            -(5 * 3600 + 1800)
        );
        assert!(parse_offset("8:00").is_none() && parse_offset("+8").is_none());
    }

    #[test]
    fn validation_names_the_path() {
        let cfg = |t: &str| toml::from_str::<CapSinkConfig>(t).unwrap();
        let problems = |c: CapSinkConfig| {
            let mut p = Vec::new();
            c.validate("sinks.bureau", &mut p);
            p
        };
        assert!(problems(cfg("sender = \"a@b\"\ntopic = \"t\"")).is_empty());
        assert_eq!(
            problems(cfg("sender = \"\"\ntopic = \"t\"")),
            vec!["sinks.bureau.sender: must not be empty".to_string()]
        );
        assert_eq!(
            problems(cfg("sender = \"a b\"\ntopic = \"t\"")),
            vec![
                "sinks.bureau.sender: must not contain spaces, commas, `<` or `&` (CAP 1.2)"
                    .to_string()
            ]
        );
        assert_eq!(
            problems(cfg("sender = \"a@b\"")),
            vec!["sinks.bureau: set exactly one of `topic` and `url`".to_string()]
        );
        assert_eq!(
            problems(cfg("sender = \"a@b\"\ntopic = \"t\"\nurl = \"http://h\"")),
            vec!["sinks.bureau: set exactly one of `topic` and `url`".to_string()]
        );
        let p = problems(cfg(
            "sender = \"a@b\"\nurl = \"ftp://h\"\nutc_offset = \"CST\"\nstreams = [\"x\"]",
        ));
        assert!(p[0].starts_with("sinks.bureau.url: "), "{p:?}");
        assert!(p[1].starts_with("sinks.bureau.utc_offset: "), "{p:?}");
        assert!(p[2].starts_with("sinks.bureau.streams[0]: "), "{p:?}");
        assert!(
            toml::from_str::<CapSinkConfig>("sender = \"a\"\ntopic = \"t\"\nlang = \"zh\"")
                .is_err()
        );
    }

    #[test]
    fn kafka_mode_needs_a_broker() {
        let c: CapSinkConfig = toml::from_str("sender = \"a@b\"\ntopic = \"t\"").unwrap();
        assert!(matches!(
            c.build("bureau", &SinkCtx::default()),
            Err(SinkError::Build { .. })
        ));
    }

    #[tokio::test]
    async fn url_mode_posts_cap_xml() {
        let srv = super::super::webhook::testserver::start(1, 503, false).await;
        let c: CapSinkConfig = toml::from_str(&format!(
            "sender = \"a@b\"\nurl = \"{}/cap\"\nbackoff = \"5ms\"",
            srv.url
        ))
        .unwrap();
        let s = c.build("bureau", &SinkCtx::default()).unwrap();
        let a = gas("firing", "red", 1, "2026-11-26T00:06:00Z");
        assert!(s.takes_incidents());
        s.send_incident(&a, b"{}").unwrap().await.unwrap();
        let reqs = srv.requests.lock().unwrap().clone();
        assert_eq!(reqs.len(), 2, "one 503, retried");
        assert_eq!(reqs[1].path, "/cap");
        assert_eq!(reqs[1].content_type, CAP_CONTENT_TYPE);
        let d = parse(&reqs[1].body);
        assert_eq!(d.info[0].severity, v1dot2::Severity::Extreme);
    }
}
