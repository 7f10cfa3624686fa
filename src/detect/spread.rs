//! `spread` (fraud): one suspect phone, account or URL is reported from several distinct
//! counties within a sliding window: a campaign working the whole city, not one
//! neighbourhood's scammer, so no single county's command center sees all of it.
//!
//! Per suspect (key `phone:+86...`, `account:...`, `url:...`, as `entity_burst`) the state
//! is a fixed array of 8 slots `(county index, last report time)`: a county already held
//! refreshes its time, a new county takes a free slot or the stalest one. Counties are few
//! (the demo city has 5), so 8 slots hold them all and `min_counties` is at most 8. Fires
//! when at least `min_counties` counties reported the suspect within `window`; the level
//! comes from the score bands (`score = from_ratio(counties, min_counties)`, 0.5 at
//! `min_counties`). Reports naming only the city (no county) do not count.
//!
//! Route: the signal's region is the city (`RegionRef { township: None, county: None }`),
//! not the township of the report that tipped it over: the pattern spans counties, and
//! only the city's center sees all of them, so the route starts (and, with the default
//! policy, ends) at the city whatever the level. The counties are listed in the subject.
//!
//! State per suspect: 88 bytes ([`Counties`]); suspects idle past `ttl` are evicted.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::{
    fmt_duration, score, BuildCtx, Detector, DetectorSpec, Evidence, KeyedState, Signal, SignalKind,
};
use crate::decode::{Event, Stream};
use crate::regions::{RegionRef, Regions};

pub const NAME: &str = "spread";
const SLOTS: usize = 8;
const CITY: RegionRef = RegionRef {
    township: None,
    county: None,
    unlisted: false,
};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpreadConfig {
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Distinct counties within the window that make a spread (2..=8).
    #[serde(default = "default_min")]
    pub min_counties: u32,
    /// Suspects idle this long are forgotten; must be >= window.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_min() -> u32 {
    3
}
fn default_ttl() -> Duration {
    Duration::from_secs(48 * 3600)
}

impl Default for SpreadConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            min_counties: default_min(),
            ttl: default_ttl(),
        }
    }
}

impl DetectorSpec for SpreadConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Fraud];
    type Runtime = Spread;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(2..=SLOTS as u32).contains(&self.min_counties) {
            problems.push(format!(
                "{path}.min_counties: must be >= 2 (and <= {SLOTS})"
            ));
        }
        if self.window.is_zero() {
            problems.push(format!("{path}.window: must be > 0"));
        }
        if self.ttl < self.window {
            problems.push(format!("{path}.ttl: must be >= window"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> Spread {
        Spread {
            cfg: self.clone(),
            window_secs: self.window.as_secs() as i64,
            window_label: fmt_duration(self.window),
            regions: ctx.regions.clone(),
            state: KeyedState::new(self.ttl),
            key_buf: String::new(),
            owner: ctx.owner,
        }
    }
}

/// The counties that reported one suspect. 88 bytes: 8 × county index (u16) + 8 × last
/// report time (i64), slots used, flag, padding.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Counties {
    county: [u16; SLOTS],
    ts: [i64; SLOTS],
    len: u8,
    alerting: bool,
}

impl Counties {
    fn add(&mut self, county: u16, t: i64) {
        let n = self.len as usize;
        if let Some(i) = self.county[..n].iter().position(|&c| c == county) {
            self.ts[i] = self.ts[i].max(t);
        } else if n < SLOTS {
            self.county[n] = county;
            self.ts[n] = t;
            self.len += 1;
        } else {
            let i = (0..SLOTS).min_by_key(|&i| self.ts[i]).unwrap_or(0);
            self.county[i] = county;
            self.ts[i] = t;
        }
    }

    /// The counties that reported after `from`.
    fn since(&self, from: i64) -> impl Iterator<Item = u16> + '_ {
        (0..self.len as usize)
            .filter(move |&i| self.ts[i] > from)
            .map(|i| self.county[i])
    }
}

pub struct Spread {
    cfg: SpreadConfig,
    window_secs: i64,
    window_label: String,
    regions: std::sync::Arc<Regions>,
    state: KeyedState<Counties>,
    key_buf: String,
    /// Scale-out: the suspects this task keeps (the others are another task's).
    owner: super::Owner,
}

impl Detector for Spread {
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
        let min = self.cfg.min_counties;
        let mut best: f64 = 0.0;
        for (kind, value) in r.suspects() {
            self.key_buf.clear();
            self.key_buf.push_str(kind);
            self.key_buf.push(':');
            self.key_buf.push_str(value);
            if !self.owner.owns(&self.key_buf) {
                continue;
            }
            let st = self.state.touch(&self.key_buf, r.ts);
            if let Some(c) = r.region.county.and_then(|c| u16::try_from(c).ok()) {
                st.add(c, t);
            }
            let mut codes: Vec<u16> = st.since(t - self.window_secs).collect();
            let n = codes.len() as u32;
            let s = score::from_ratio(f64::from(n), f64::from(min));
            best = best.max(s);
            let firing = n >= min;
            let sig = if firing {
                st.alerting = true;
                codes.sort_unstable();
                let codes: Vec<serde_json::Value> = codes
                    .iter()
                    .filter_map(|&c| {
                        self.regions.county_code(RegionRef {
                            township: None,
                            county: Some(u32::from(c)),
                            unlisted: false,
                        })
                    })
                    .map(|c| c.into())
                    .collect();
                let mut subject = serde_json::Map::new();
                subject.insert(format!("suspect_{kind}"), value.into());
                subject.insert("counties".into(), codes.into());
                (
                    subject,
                    SignalKind::Anomalous {
                        score: s,
                        level: None,
                        title: format!(
                            "{kind} {value} reported from {n} counties within {}",
                            self.window_label
                        ),
                        evidence: Evidence {
                            observed: f64::from(n),
                            expected: 1.0,
                            score: f64::from(n),
                            threshold: f64::from(min),
                            window: self.window_label.clone(),
                            p_value: None,
                            false_alarms_per_day: None,
                        },
                    },
                )
            } else if st.alerting {
                st.alerting = false;
                let mut subject = serde_json::Map::new();
                subject.insert(format!("suspect_{kind}"), value.into());
                (subject, SignalKind::Clear)
            } else {
                continue;
            };
            out.push(Signal {
                stream: Stream::Fraud,
                detector: NAME,
                key: self.key_buf.clone(),
                subject: sig.0,
                region: CITY,
                ts: r.ts,
                event_id: Some(r.id.clone()),
                kind: sig.1,
            });
        }
        best
    }

    fn advance(&mut self, watermark: DateTime<FixedOffset>, out: &mut Vec<Signal>) {
        // A spread whose reports aged out of the window clears even if the suspect goes quiet.
        let from = watermark.timestamp() - self.window_secs;
        let min = self.cfg.min_counties as usize;
        self.state.for_each_mut(|key, st| {
            if !(st.alerting && st.since(from).count() < min) {
                return false;
            }
            st.alerting = false;
            out.push(Signal {
                stream: Stream::Fraud,
                detector: NAME,
                key: key.to_string(),
                subject: serde_json::Map::new(),
                region: CITY,
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
    use crate::detect::testutil::{fraud, ts};
    use proptest::prelude::*;

    const PHONE: &str = "+8613800000000";

    #[test]
    fn three_counties_fire_at_the_city() {
        let mut d = SpreadConfig::default().build(Stream::Fraud, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        // Many reports from one county (two townships) are not a spread.
        for (i, town) in ["330502001", "330502002", "330502001"].iter().enumerate() {
            d.observe(
                &fraud(&format!("F{i}"), PHONE, town, i as i64 * 600),
                false,
                &mut out,
            );
        }
        // A second county: still below 3.
        d.observe(&fraud("F3", PHONE, "330503101", 3600), false, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let s = d.observe(&fraud("F4", PHONE, "330521102", 7200), false, &mut out);
        assert!((s - 0.5).abs() < 1e-12);
        assert_eq!(out.len(), 1);
        let sig = &out[0];
        assert_eq!(sig.key, "phone:+8613800000000");
        assert_eq!(sig.region, CITY, "the city must see it");
        assert_eq!(
            sig.subject["counties"],
            serde_json::json!(["330502", "330503", "330521"])
        );
        assert_eq!(sig.subject["suspect_phone"], PHONE);
        let SignalKind::Anomalous {
            level, evidence, ..
        } = &sig.kind
        else {
            panic!()
        };
        assert_eq!(*level, None, "level comes from the bands");
        assert_eq!(
            (evidence.observed, evidence.expected, evidence.threshold),
            (3.0, 1.0, 3.0)
        );
        assert_eq!(evidence.window, "24h");
        // The route policy starts at the city for every level.
        let regions = crate::regions::demo();
        let route = crate::alert::RoutePolicy::default();
        for l in crate::alert::Level::ALL {
            assert_eq!(route.route(l, sig.region, &regions), vec!["330500"]);
        }
        // 24 h after the first county's last report it drops out: one Clear.
        out.clear();
        d.advance(ts("2026-11-27T00:19:59+08:00"), &mut out);
        assert!(out.is_empty());
        d.advance(ts("2026-11-27T00:20:00+08:00"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, SignalKind::Clear);
    }

    #[test]
    fn counties_outside_the_window_do_not_count() {
        let mut d = SpreadConfig::default().build(Stream::Fraud, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        for (i, town) in ["330502001", "330503101", "330521102", "330522001"]
            .iter()
            .enumerate()
        {
            d.observe(
                &fraud(&format!("F{i}"), PHONE, town, i as i64 * 86_400),
                false,
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn validation_names_paths() {
        let c = SpreadConfig {
            min_counties: 1,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.fraud[1]", &mut p);
        assert_eq!(
            p,
            vec!["detectors.fraud[1].min_counties: must be >= 2 (and <= 8)"]
        );
    }

    #[test]
    fn state_is_88_bytes() {
        assert_eq!(std::mem::size_of::<Counties>(), 88);
    }

    proptest! {
        #[test]
        fn bounded_and_slots_capped(reports in proptest::collection::vec((0usize..5, 0i64..200_000), 1..200)) {
            let towns = ["330502001", "330503101", "330521102", "330522001", "330523001"];
            let mut d = SpreadConfig { min_counties: 2, ..Default::default() }
                .build(Stream::Fraud, &crate::pipeline::test_ctx());
            let mut out = Vec::new();
            for (i, (c, t)) in reports.iter().enumerate() {
                let s = d.observe(&fraud(&format!("F{i}"), PHONE, towns[*c], *t), false, &mut out);
                prop_assert!(s.is_finite() && (0.0..=1.0).contains(&s));
            }
            let st = d.state.get("phone:+8613800000000").unwrap();
            prop_assert!(st.len as usize <= SLOTS && st.since(i64::MIN).count() <= 5);
        }
    }

    #[test]
    fn a_spread_cleared_by_the_watermark_stays_cleared_after_a_restore() {
        use crate::detect::testutil::{flush, restored, Log};
        let build = || SpreadConfig::default().build(Stream::Fraud, &crate::pipeline::test_ctx());
        let mut d = build();
        d.track_changes();
        let mut log = Log::new();
        let mut out = Vec::new();
        for (i, town) in ["330502001", "330503101", "330521102"].iter().enumerate() {
            d.observe(
                &fraud(&format!("F{i}"), PHONE, town, i as i64 * 600),
                false,
                &mut out,
            );
        }
        assert_eq!(out.len(), 1, "{out:?}");
        flush(&mut d, &mut log);
        // The window passes: the clear comes from `advance`, with no event for the key.
        out.clear();
        d.advance(ts("2026-11-27T00:05:00+08:00"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, SignalKind::Clear);
        assert_eq!(flush(&mut d, &mut log), 1, "the clear changed the key");
        let mut r = restored(build(), &log);
        assert_eq!(Detector::keys(&r), Detector::keys(&d));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.advance(ts("2026-11-27T00:10:00+08:00"), &mut a);
        r.advance(ts("2026-11-27T00:10:00+08:00"), &mut b);
        assert!(a.is_empty() && b.is_empty(), "no second clear: {b:?}");
        // And the suspect's counties carry over: two more fire again in both.
        for (i, town) in ["330502001", "330503101"].iter().enumerate() {
            let ev = fraud(&format!("G{i}"), PHONE, town, 86_400 + i as i64 * 60);
            d.observe(&ev, false, &mut a);
            r.observe(&ev, false, &mut b);
        }
        assert_eq!(a, b);
    }
}
