//! Operators' verdicts reach the false-alarm budgets (issue #23 item 4): a key fires, an
//! operator closes the episode as `false_alarm` on the console, and the pipeline's
//! detectors hold that key's threshold above the score: the same magnitude no longer
//! fires, a much larger one does. Across a restart (state snapshotted into a compacted
//! log and restored, the console's verdicts replayed) the verdict counts once.
//!
//! The harness drives the pipeline's own `handle` input by input, with the console
//! attached, as `run` does (default config; one temperature sensor, which only robust_z
//! judges by value there).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{restore_split, Pipeline, RunSummary};
use crate::alert::{Alert, Status};
use crate::clock::ManualClock;
use crate::config::Config;
use crate::console::{ActionEvent, ActionKind, ConsoleState, Outcome};
use crate::decode::Stream;
use crate::sink::{CollectSink, LogDeadLetters};
use crate::source::{Envelope, Origin};
use crate::state::changelog::Record;
use crate::telemetry::metrics::Metrics;

const EVERY: i64 = 30;
const STEPS: usize = 700;
/// Temperature spikes (degC on ±0.5 noise): the one judged false, its repeat, and one
/// four times as large.
const SPIKES: [(usize, f64); 3] = [(200, 4.0), (400, 4.0), (600, 16.0)];
/// The operator closes the first episode here (it resolved meanwhile).
const VERDICT_AT: usize = 260;

fn config() -> Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    crate::config::load(&root).expect("default config")
}

fn reading(i: usize) -> Envelope {
    // A small LCG keyed by the step: the same noise in every run.
    let u = (i as u64)
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let noise = ((u >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
    let spike = SPIKES.iter().find(|s| s.0 == i).map_or(0.0, |s| s.1);
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap()
        + chrono::Duration::seconds(i as i64 * EVERY);
    let v = serde_json::json!({"sensor_id": "S-330503-0042-TEMP1",
        "site_id": "SITE-330503-0042", "region": "330503101", "kind": "temperature",
        "ts": t.to_rfc3339(), "value": 80.0 + noise + spike});
    Envelope {
        stream: Stream::Sensors,
        key: None,
        payload: v.to_string().into_bytes(),
        origin: Origin::File {
            name: "verdicts".into(),
            line: i as u64,
        },
        received: Instant::now(),
    }
}

fn pipeline(cfg: &Config, console: &Arc<ConsoleState>, sink: Arc<CollectSink>) -> Pipeline {
    let clock = ManualClock::new("2026-11-26T00:00:00Z".parse().unwrap());
    let mut p = Pipeline::new(
        cfg,
        vec![sink],
        Arc::new(LogDeadLetters),
        Arc::new(Metrics::new()),
        Arc::new(clock),
    )
    .with_console(console.clone());
    p.detectors.track_changes();
    p.policy.track_changes();
    p.incidents.track_changes();
    p
}

/// `p`'s state as a compacted changelog would hold it, put back into a fresh pipeline.
fn restarted(
    cfg: &Config,
    p: &mut Pipeline,
    console: &Arc<ConsoleState>,
    sink: Arc<CollectSink>,
) -> Pipeline {
    let mut log = BTreeMap::new();
    for s in Stream::ALL {
        let mut changes = Vec::new();
        p.detectors.changes(s, &mut changes);
        p.policy.changes(s, &mut changes);
        p.incidents.changes(s, &mut changes);
        for c in changes {
            log.insert((s.index(), c.key), c.value);
        }
    }
    let mut q = pipeline(cfg, console, sink);
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
        let (d, pol, inc) = (&mut q.detectors, &mut q.policy, &mut q.incidents);
        restore_split(d, pol, inc, s, records.iter().enumerate(), &mut failed);
        assert!(failed.is_empty());
    }
    q
}

/// The operator's close of `alert_id` as `false_alarm`, as the console's handler
/// builds it (the episode with its peak score as the member).
fn close_as_false(console: &ConsoleState, alert_id: &str) {
    let mut ev = ActionEvent {
        alert_id: alert_id.to_string(),
        incident_id: None,
        action: ActionKind::Close,
        by_center: "330503".into(),
        note: None,
        outcome: Some(Outcome::FalseAlarm),
        at: "2026-11-26T00:00:00Z".into(),
        to_center: None,
        reason: None,
        members: Vec::new(),
    };
    let target = console.check(alert_id, &ev).unwrap().expect("episode seen");
    ev.members = vec![target.member];
    console.apply(&ev).unwrap();
}

/// What a run published: robust_z's firing messages, and the verdicts each pipeline
/// (before and after the restart) charged to a budget.
struct Run {
    fired: Vec<Alert>,
    applied: Vec<u64>,
}

/// `restart`: at that step (before its input), the state is snapshotted and restored
/// into a fresh pipeline with the same console.
async fn run(verdict: bool, restart: Option<usize>) -> Run {
    let cfg = config();
    let clock = ManualClock::new("2026-11-26T00:00:00Z".parse().unwrap());
    let console = Arc::new(ConsoleState::new(Arc::new(clock), &cfg.console));
    let (sink, collected): (_, Arc<Mutex<Vec<Alert>>>) = CollectSink::new();
    let mut p = pipeline(&cfg, &console, sink.clone());
    let mut summary = RunSummary::default();
    let mut applied = Vec::new();
    let count = |p: &Pipeline| {
        p.metrics
            .budget_verdicts_applied
            .with_label_values(&["robust_z"])
            .get()
    };
    for i in 0..STEPS {
        if verdict && i == VERDICT_AT {
            let first = collected.lock().unwrap()[0].alert_id.clone();
            close_as_false(&console, &first);
        }
        if restart == Some(i) {
            applied.push(count(&p));
            p = restarted(&cfg, &mut p, &console, sink.clone());
        }
        let _acks = p.handle(reading(i), &mut summary, true).await;
    }
    applied.push(count(&p));
    let fired = collected
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.detector == "robust_z" && a.status == Status::Firing && a.seq == 1)
        .cloned()
        .collect();
    Run { fired, applied }
}

/// The episode opened by the spike at step `i`, if any.
fn at(fired: &[Alert], i: usize) -> Option<&Alert> {
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap()
        + chrono::Duration::seconds(i as i64 * EVERY);
    fired
        .iter()
        .find(|a| a.alert_id.ends_with(&format!(":{}", t.timestamp())))
}

#[tokio::test]
async fn a_false_alarm_verdict_keeps_the_same_magnitude_from_firing_again() {
    let without = run(false, None).await;
    assert_eq!(
        without.fired.len(),
        3,
        "every spike fires: {:?}",
        without.fired
    );
    let first = at(&without.fired, SPIKES[0].0).expect("the first spike fires");
    let (s, t) = (first.evidence.score, first.evidence.threshold);
    assert!(s > t && 1.2 * s < 30.0, "score {s}, threshold {t}");
    assert!(at(&without.fired, SPIKES[1].0).is_some());

    let with = run(true, None).await;
    assert_eq!(with.applied, vec![1], "one key's threshold raised");
    assert_eq!(
        at(&with.fired, SPIKES[0].0),
        Some(first),
        "same until the verdict"
    );
    assert!(
        at(&with.fired, SPIKES[1].0).is_none(),
        "the repeat is held: {:?}",
        with.fired
    );
    let large = at(&with.fired, SPIKES[2].0).expect("a much larger spike still fires");
    // Its evidence shows the held threshold: 1.2 x the score judged false.
    assert!(
        (large.evidence.threshold - 1.2 * s).abs() < 0.01,
        "{:?}",
        large.evidence
    );
    assert!(large.evidence.score > large.evidence.threshold);
}

#[tokio::test]
async fn a_verdict_counts_once_across_a_restart() {
    let once = run(true, None).await;
    let ids = |r: &Run| -> Vec<(String, String)> {
        r.fired
            .iter()
            .map(|a| (a.alert_id.clone(), format!("{:?}", a.evidence)))
            .collect()
    };
    // After the verdict, before its repeat: the restored pipeline takes every kept
    // verdict again, and its key already holds this one.
    let after = run(true, Some(300)).await;
    assert_eq!(after.applied, vec![1, 0]);
    assert_eq!(ids(&after), ids(&once));
    // Given just before the restart, never taken by the pipeline that stopped: the
    // restored one applies it.
    let between = run(true, Some(VERDICT_AT)).await;
    assert_eq!(between.applied, vec![0, 1]);
    assert_eq!(ids(&between), ids(&once));
}
