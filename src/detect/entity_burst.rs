//! `entity_burst` (fraud): one phone, account or URL is named by many *distinct* reports
//! within a sliding window. A re-sent report (same `id`) counts once.
//!
//! Per suspect the state is a ring of the last 8 distinct report-id hashes with their
//! event times (128 bytes + 8): enough to count up to 8 reports in the window, so
//! `min_reports` is at most 8. The p-value is `P(X >= n)` for a Poisson background of
//! `background_per_window` reports naming an ordinary number. Suspects idle past `ttl`
//! are evicted: the stream brings new suspects without end.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::rate_spike::poisson_tail;
use super::{
    fmt_duration, score, BuildCtx, Detector, DetectorSpec, Evidence, KeyedState, Signal, SignalKind,
};
use crate::decode::{Event, Stream};

pub const NAME: &str = "entity_burst";
const RING: usize = 8;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityBurstConfig {
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Distinct reports within the window that make a burst (2..=8).
    #[serde(default = "default_min")]
    pub min_reports: u32,
    /// Expected reports per window naming an ordinary suspect (for the p-value).
    #[serde(default = "default_bg")]
    pub background_per_window: f64,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_min() -> u32 {
    5
}
fn default_bg() -> f64 {
    0.2
}
fn default_ttl() -> Duration {
    Duration::from_secs(2 * 3600)
}

impl Default for EntityBurstConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            min_reports: default_min(),
            background_per_window: default_bg(),
            ttl: default_ttl(),
        }
    }
}

impl DetectorSpec for EntityBurstConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Fraud];
    type Runtime = EntityBurst;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(2..=RING as u32).contains(&self.min_reports) {
            problems.push(format!("{path}.min_reports: must be between 2 and {RING}"));
        }
        if !score::positive(self.background_per_window) {
            problems.push(format!("{path}.background_per_window: must be > 0"));
        }
        if self.ttl < self.window {
            problems.push(format!("{path}.ttl: must be >= window"));
        }
        if self.window.is_zero() {
            problems.push(format!("{path}.window: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> EntityBurst {
        let alpha = poisson_tail(self.min_reports, self.background_per_window);
        EntityBurst {
            window_secs: self.window.as_secs() as i64,
            window_label: fmt_duration(self.window),
            alpha,
            cfg: self.clone(),
            state: KeyedState::new(self.ttl),
            key_buf: String::new(),
            owner: ctx.owner,
        }
    }
}

/// The last distinct reports naming one suspect. 136 bytes.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Ring {
    ids: [u64; RING],
    ts: [i64; RING],
    len: u8,
    next: u8,
    alerting: bool,
}

impl Ring {
    /// Adds a report; false when it was already counted (a re-send).
    fn add(&mut self, id: u64, t: i64) -> bool {
        if self.ids[..self.len as usize].contains(&id) {
            return false;
        }
        let i = self.next as usize;
        self.ids[i] = id;
        self.ts[i] = t;
        self.next = ((i + 1) % RING) as u8;
        self.len = (self.len + 1).min(RING as u8);
        true
    }

    fn count_since(&self, from: i64) -> u32 {
        self.ts[..self.len as usize]
            .iter()
            .filter(|&&t| t > from)
            .count() as u32
    }
}

pub struct EntityBurst {
    cfg: EntityBurstConfig,
    window_secs: i64,
    window_label: String,
    /// The p-value at exactly `min_reports`: the level a burst must reach.
    alpha: f64,
    state: KeyedState<Ring>,
    key_buf: String,
    /// Scale-out: the suspects this task keeps (the others are another task's).
    owner: super::Owner,
}

impl Detector for EntityBurst {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Routed by suspect (`phone:...`), the state key.
    fn routes(&self, ev: &Event, out: &mut Vec<String>) {
        if let Event::Fraud(r) = ev {
            out.extend(r.suspects().map(|(kind, value)| format!("{kind}:{value}")));
        }
    }

    fn observe(&mut self, ev: &Event, _late: bool, out: &mut Vec<Signal>) -> f64 {
        let Event::Fraud(r) = ev else { return 0.0 };
        let t = r.ts.timestamp();
        let id = super::stable_hash(&r.id);
        let mut best: f64 = 0.0;
        for (kind, value) in r.suspects() {
            self.key_buf.clear();
            self.key_buf.push_str(kind);
            self.key_buf.push(':');
            self.key_buf.push_str(value);
            if !self.owner.owns(&self.key_buf) {
                continue;
            }
            let ring = self.state.touch(&self.key_buf, r.ts);
            let fresh = ring.add(id, t);
            let n = ring.count_since(t - self.window_secs);
            let p = poisson_tail(n, self.cfg.background_per_window);
            let s = score::from_p_value(p, self.alpha);
            best = best.max(s);
            let firing = n >= self.cfg.min_reports;
            let kind_sig = if firing && fresh {
                ring.alerting = true;
                SignalKind::Anomalous {
                    score: s.max(0.5),
                    level: None,
                    title: format!(
                        "{n} fraud reports name {kind} {value} within {}",
                        self.window_label
                    ),
                    evidence: Evidence {
                        observed: f64::from(n),
                        expected: self.cfg.background_per_window,
                        score: -p.max(f64::MIN_POSITIVE).log10(),
                        threshold: -self.alpha.log10(),
                        window: self.window_label.clone(),
                        p_value: Some(p),
                        false_alarms_per_day: None,
                    },
                }
            } else if !firing && ring.alerting {
                ring.alerting = false;
                SignalKind::Clear
            } else {
                continue;
            };
            let mut subject = serde_json::Map::new();
            subject.insert(format!("suspect_{kind}"), value.into());
            subject.insert("region".into(), r.region_code.clone().into());
            out.push(Signal {
                stream: Stream::Fraud,
                detector: NAME,
                key: self.key_buf.clone(),
                subject,
                region: r.region,
                ts: r.ts,
                event_id: Some(r.id.clone()),
                kind: kind_sig,
            });
        }
        best
    }

    fn advance(&mut self, watermark: DateTime<FixedOffset>, out: &mut Vec<Signal>) {
        // Bursts that have aged out of the window clear even if the suspect goes quiet.
        let from = watermark.timestamp() - self.window_secs;
        let min = self.cfg.min_reports;
        self.state.for_each_mut(|key, ring| {
            if !(ring.alerting && ring.count_since(from) < min) {
                return false;
            }
            ring.alerting = false;
            out.push(Signal {
                stream: Stream::Fraud,
                detector: NAME,
                key: key.to_string(),
                subject: serde_json::Map::new(),
                region: crate::regions::RegionRef {
                    township: None,
                    county: None,
                    unlisted: false,
                },
                ts: watermark,
                event_id: None,
                kind: SignalKind::Clear,
            });
            true
        });
        self.state.evict_idle(watermark);
    }

    fn keys(&self) -> usize {
        self.state.len()
    }

    super::keyed_persistence!(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::fraud;

    #[test]
    fn distinct_reports_not_messages() {
        let mut d = EntityBurstConfig::default().build(Stream::Fraud, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        // The same report re-sent ten times is one report.
        for i in 0..10 {
            d.observe(
                &fraud("FR-1", "+8613800000000", "330521102", i * 10),
                false,
                &mut out,
            );
        }
        assert!(out.is_empty());
        for i in 2..=5 {
            d.observe(
                &fraud(&format!("FR-{i}"), "+8613800000000", "330521102", i * 60),
                false,
                &mut out,
            );
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].key, "phone:+8613800000000");
        let SignalKind::Anomalous { evidence, .. } = &out[0].kind else {
            panic!()
        };
        assert_eq!(evidence.observed, 5.0);
        assert!((evidence.p_value.unwrap() - poisson_tail(5, 0.2)).abs() < 1e-15);
    }

    #[test]
    fn reports_outside_the_window_do_not_count() {
        let mut d = EntityBurstConfig::default().build(Stream::Fraud, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        for i in 0..6 {
            d.observe(
                &fraud(&format!("FR-{i}"), "+86139", "330521102", i * 1000),
                false,
                &mut out,
            );
        }
        assert!(
            out.is_empty(),
            "reports 1000 s apart never make 5 in an hour"
        );
    }

    #[test]
    fn ring_size() {
        assert!(std::mem::size_of::<Ring>() <= 136);
    }
}
