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
