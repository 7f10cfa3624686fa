//! Incidents across a restart (issue #23): the pipeline's detectors, alert policy and
//! incident grouper are snapshotted into a compacted changelog mid-stream, a fresh
//! pipeline is restored from it (`restore_split`, as a start-up restore does) and goes
//! on; its incident messages and every alert's `incident_id` must be exactly those of an
//! uninterrupted run: no incident lost, duplicated or split in two.
//!
//! The harness drives `policy_step` input by input as `run` does, without the async
//! sinks (as `late_tests` does), so no broker is needed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{restore_split, Pipeline};
use crate::alert::Incident;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::decode::{Event, Stream};
use crate::sink::LogDeadLetters;
use crate::state::changelog::Record;
use crate::telemetry::metrics::Metrics;

fn config() -> Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    crate::config::load(&root).expect("default config")
}

/// The simulated city's events (6 h, 8 sites, seed 5), decoded, in input order.
fn city(cfg: &Config) -> Vec<Event> {
    let city = crate::simulate::generate(
        &crate::simulate::SimConfig {
            hours: 6.0,
            seed: 5,
            start: chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap(),
            sites: 8,
        },
        &cfg.regions,
    );
    let dec = crate::decode::Decoder::new(cfg.regions.clone());
    city.envelopes()
        .iter()
        .filter_map(|e| dec.decode(e.stream, &e.payload).ok().map(|d| d.event))
        .collect()
}

fn pipeline(cfg: &Config) -> Pipeline {
    let clock = ManualClock::new("2026-11-27T00:00:00Z".parse().unwrap());
    let mut p = Pipeline::new(
        cfg,
        Vec::new(),
        Arc::new(LogDeadLetters),
        Arc::new(Metrics::new()),
        Arc::new(clock),
    );
    p.detectors.track_changes();
    p.policy.track_changes();
    p.incidents.track_changes();
    p
}

/// What a run published: incident messages in order, and (alert_id, seq, incident_id)
/// of every alert message.
#[derive(Default, Debug, PartialEq)]
struct Out {
    incidents: Vec<Incident>,
    alerts: Vec<(String, u32, String)>,
}

impl Out {
    fn take(&mut self, p: &mut Pipeline) {
        self.alerts.extend(
            p.alerts
                .drain(..)
                .map(|a| (a.alert_id, a.seq, a.incident_id)),
        );
        self.incidents.append(&mut p.incident_msgs);
    }

    /// Alerts of one watermark step come out in the policy's map order: compare sets.
    fn sorted(mut self) -> Self {
        self.alerts.sort();
        self
    }
}

fn feed(p: &mut Pipeline, events: &[Event], out: &mut Out) {
    for ev in events {
        let obs = p.detectors.observe(ev, &mut p.signals);
        let moved: Vec<_> = obs
            .watermark
            .map(|w| (ev.stream(), w))
            .into_iter()
            .collect();
        p.policy_step(Some(ev), &moved);
        out.take(p);
    }
}

fn finish(p: &mut Pipeline, out: &mut Out) {
    let moved = p.detectors.flush(&mut p.signals);
    p.policy_step(None, &moved);
    out.take(p);
}

/// Every changed key of `p` into a compacted log per stream (latest value wins).
fn compact(p: &mut Pipeline, log: &mut BTreeMap<(usize, String), Option<Vec<u8>>>) {
    for s in Stream::ALL {
        let mut changes = Vec::new();
        p.detectors.changes(s, &mut changes);
        p.policy.changes(s, &mut changes);
        p.incidents.changes(s, &mut changes);
        for c in changes {
            log.insert((s.index(), c.key), c.value);
        }
    }
}

fn restored(cfg: &Config, log: &BTreeMap<(usize, String), Option<Vec<u8>>>) -> Pipeline {
    let mut p = pipeline(cfg);
    for s in Stream::ALL {
        let records: Vec<Record<'_>> = log
            .iter()
            .filter(|((i, _), _)| *i == s.index())
            .map(|((_, key), value)| Record {
                partition: 0,
                key,
                value: value.as_deref(),
            })
            .collect();
        let mut failed = Vec::new();
        restore_split(
            &mut p.detectors,
            &mut p.policy,
            &mut p.incidents,
            s,
            records.iter().enumerate(),
            &mut failed,
        );
        assert!(failed.is_empty(), "{} records failed", failed.len());
    }
    p
}

#[test]
fn a_restored_pipeline_continues_every_incident_exactly() {
    let cfg = config();
    let events = city(&cfg);
    let mut whole = Out::default();
    let mut p = pipeline(&cfg);
    feed(&mut p, &events, &mut whole);
    finish(&mut p, &mut whole);
    let opened = whole.incidents.iter().filter(|i| i.seq == 1).count();
    assert!(opened >= 5, "the city raises incidents: {opened}");
    assert!(whole.alerts.iter().all(|(_, _, i)| !i.is_empty()));
    let mut expected_alerts = whole.alerts.clone();
    expected_alerts.sort();
    let mut open_at_a_split = 0;
    for split in [events.len() / 3, events.len() / 2, events.len() * 3 / 4] {
        let mut got = Out::default();
        let mut first = pipeline(&cfg);
        feed(&mut first, &events[..split], &mut got);
        open_at_a_split += first.incidents.open_count();
        let mut log = BTreeMap::new();
        compact(&mut first, &mut log);
        drop(first);
        let mut second = restored(&cfg, &log);
        feed(&mut second, &events[split..], &mut got);
        finish(&mut second, &mut got);
        assert_eq!(
            got.incidents.len(),
            whole.incidents.len(),
            "split at {split}"
        );
        for (a, b) in got.incidents.iter().zip(&whole.incidents) {
            assert_eq!(a, b, "split at {split}");
        }
        assert_eq!(got.sorted().alerts, expected_alerts, "split at {split}");
    }
    assert!(
        open_at_a_split > 0,
        "some split must cut through an open incident"
    );
}
