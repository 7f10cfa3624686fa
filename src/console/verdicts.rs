//! Operators' false-alarm verdicts on their way to the detectors' false-alarm budgets
//! (issue #23 item 4, src/detect/tail.rs).
//!
//! Why through the console and not a consumer of the actions topic in the pipeline: every
//! instance's console already reads the whole actions topic, every partition from the
//! beginning, on start and while running ([`super::actions::follow`]), so every instance
//! learns every verdict, and a restarted one learns them all again before its pipeline
//! takes its first input. Under scale-out the instance and task that own a verdict's key
//! cannot be known from the actions topic (keyed by incident), and a task may be dropped
//! and restored at any rebalance; so the verdicts are kept here, numbered, and every
//! detector set takes those it has not seen (a fresh or restored set takes all of them)
//! and applies each to the keys it holds, ignoring the rest.
//!
//! Exactly once: a verdict's effect is a maximum (`Tail::hold`), so applying it again to
//! state that already has it changes nothing. A verdict applied after the last committed
//! state snapshot and lost in a crash is applied again when the restored set takes every
//! kept verdict. No actions-topic offset needs to join the committed state.
//!
//! Memory: verdicts are kept for [`MAX_HOLD_SECS`] after they were given (no hold lasts
//! longer) and at most [`MAX_KEPT`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::detect::tail::{Verdict, MAX_HOLD_SECS};

/// Verdicts kept at most: a month of a very noisy city's false alarms.
pub const MAX_KEPT: usize = 100_000;

#[derive(Default)]
pub struct VerdictLog {
    /// The sequence number of the newest verdict (0: none yet). Read without the lock on
    /// every input, so a pipeline with nothing new pays one atomic load.
    last: AtomicU64,
    kept: Mutex<VecDeque<Kept>>,
}

struct Kept {
    seq: u64,
    at: DateTime<Utc>,
    verdict: Verdict,
}

impl VerdictLog {
    /// The newest verdict's sequence number.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// Keeps a verdict given at `at`; `now` drops those past retention.
    pub fn push(&self, verdict: Verdict, at: DateTime<Utc>, now: DateTime<Utc>) {
        let mut g = self.kept.lock().expect("verdict log lock");
        let oldest = now - chrono::Duration::seconds(MAX_HOLD_SECS);
        while g
            .front()
            .is_some_and(|k| k.at < oldest || g.len() >= MAX_KEPT)
        {
            g.pop_front();
        }
        let seq = self.last.load(Ordering::Relaxed) + 1;
        g.push_back(Kept { seq, at, verdict });
        self.last.store(seq, Ordering::Release);
    }

    /// Appends the verdicts after sequence number `seen` to `out`; returns the newest
    /// one's number (what to pass as `seen` next time).
    pub fn after(&self, seen: u64, out: &mut Vec<Verdict>) -> u64 {
        let g = self.kept.lock().expect("verdict log lock");
        let mut last = seen;
        for k in g.iter().filter(|k| k.seq > seen) {
            out.push(k.verdict.clone());
            last = k.seq;
        }
        last.max(self.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Stream;

    fn v(key: &str) -> Verdict {
        Verdict {
            stream: Stream::Sensors,
            detector: "robust_z".into(),
            key: key.into(),
            opened: 0,
            score: 9.0,
        }
    }

    /// An incident closed as `false_alarm`, as the actions topic carries it (JSON).
    fn close(outcome: &str, members: &str) -> crate::console::ActionEvent {
        serde_json::from_str(&format!(
            r#"{{"incident_id":"sensors:site:SITE-1:1764116100","action":"close",
            "by_center":"330503","outcome":"{outcome}","at":"2026-11-27T00:00:00Z",
            "members":{members}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_replayed_false_alarm_close_is_a_verdict_per_member_with_a_score() {
        let t: DateTime<Utc> = "2026-11-27T00:00:00Z".parse().unwrap();
        let clock = crate::clock::ManualClock::new(t);
        let cfg = crate::console::ConsoleConfig::default();
        let s = crate::console::ConsoleState::new(std::sync::Arc::new(clock), &cfg);
        let members = r#"[
            {"alert_id":"sensors:robust_z:S-1:1764116100","detector":"robust_z","key":"S-1","score":9.5},
            {"alert_id":"sensors:threshold:S-2:1764116100","detector":"threshold","key":"S-2","score":0.8},
            {"alert_id":"sensors:ewma_z:S-3:1764116100","detector":"ewma_z","key":"S-3"}]"#;
        // Handled is no verdict; the episodes are not on this console (a replay at start).
        s.apply(&close("handled", members)).unwrap();
        assert_eq!(s.verdicts().last(), 0);
        let s = crate::console::ConsoleState::new(
            std::sync::Arc::new(crate::clock::ManualClock::new(t)),
            &cfg,
        );
        let ev = close("false_alarm", members);
        s.apply(&ev).unwrap();
        // The same event again (the handler applied it, then the topic follower) is
        // refused by the action state machine: no second verdict.
        assert!(s.apply(&ev).is_err());
        let mut out = Vec::new();
        assert_eq!(s.verdicts().after(0, &mut out), 2);
        // The member without a score (written before scores were kept) is left out;
        // threshold's verdict is kept, and no detector with fixed limits takes it.
        assert_eq!(out[0].detector, "robust_z");
        assert_eq!((out[0].key.as_str(), out[0].score), ("S-1", 9.5));
        assert_eq!(out[1].detector, "threshold");
    }

    #[test]
    fn a_reader_takes_each_verdict_once_and_a_fresh_one_takes_all_kept() {
        let log = VerdictLog::default();
        let t: DateTime<Utc> = "2026-11-27T00:00:00Z".parse().unwrap();
        log.push(v("a"), t, t);
        log.push(v("b"), t, t);
        let mut out = Vec::new();
        let seen = log.after(0, &mut out);
        assert_eq!((seen, out.len()), (2, 2));
        out.clear();
        log.push(v("c"), t, t);
        assert_eq!(log.after(seen, &mut out), 3);
        assert_eq!(out, vec![v("c")]);
        // Verdicts older than the longest hold go when the next one comes.
        let later = t + chrono::Duration::days(31);
        log.push(v("d"), later, later);
        out.clear();
        assert_eq!(log.after(0, &mut out), 4);
        assert_eq!(out, vec![v("d")]);
    }
}
