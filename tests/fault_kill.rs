//! Fault test (a), issue 7: SIGKILL the processor at random points, 20 times, while the
//! input is still arriving; compare its alerts with a reference run over the same input.
//! Exactly-once: the same messages exactly. At-least-once: none lost. The same for its
//! incident messages (issue #23): none lost, duplicated or split in two.

mod common;
mod faults;

use std::time::Duration;

use rand::{Rng, SeedableRng};

use faults::{compare, Inputs};

const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_random_sigkills() {
    kill_test("eos", "guarantee = \"exactly_once\"", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_over_random_sigkills() {
    kill_test("alo", "", false).await;
}

async fn kill_test(name: &str, processing: &str, exact: bool) {
    let seed: u64 = std::env::var("RISKSTREAM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let inputs = Inputs::new(name).await;
    let faulty = inputs.run(&format!("{name}-faulty"), processing).await;
    let mut loader = inputs.load(&faulty, 900);
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        let mut child = faulty.spawn("faulty-0");
        let alive = Duration::from_millis(rng.random_range(600..3000));
        tokio::time::sleep(alive).await;
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{name}: riskstream exited on its own before the kill: {s}");
        }
        common::sigkill(&mut child);
        let done: i64 = faults::committed(&faulty.group, &inputs.topics())
            .values()
            .sum();
        progress.push(done);
    }
    let status = loader.wait().expect("simulate");
    assert!(status.success(), "simulate failed: {status}");
    let total: i64 = faults::end_offsets(&inputs.topics()).values().sum();
    let mut child = faulty.spawn("faulty-0");
    assert!(
        faulty.wait_committed(&inputs, Duration::from_secs(180)),
        "{name}: faulty run did not catch up after the kills"
    );
    common::sigterm(&child);
    let st = common::wait_exit(&mut child, Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{name}: exit {st:?}");
    let got = faulty.alerts();
    let got_incidents = faulty.incident_messages();

    let reference_run = faults::reference_run(&inputs, processing).await;
    let reference = reference_run.alerts();
    let c = compare(&reference, &got);
    let ci = compare(&reference_run.incident_messages(), &got_incidents);
    let mid = progress.iter().filter(|d| **d > 0 && **d < total).count();
    println!(
        "fault test (a) {name}: seed {seed}, runs {}, kills {KILLS} ({mid} mid-stream; inputs committed at each kill: {progress:?} of {total}), \
         reference alerts {}, faulty alerts {}, lost {}, duplicated {}, unexpected {}",
        KILLS + 1,
        c.reference,
        c.faulty,
        c.lost.len(),
        c.duplicated,
        c.unexpected.len()
    );
    assert!(c.reference >= 50, "the input should raise alerts: {c:?}");
    assert!(
        mid >= KILLS / 2,
        "most kills should land mid-stream: {progress:?}"
    );
    println!(
        "fault test (a) {name}: reference incident messages {}, faulty {}, lost {}, duplicated {}, unexpected {}",
        ci.reference,
        ci.faulty,
        ci.lost.len(),
        ci.duplicated,
        ci.unexpected.len()
    );
    assert!(
        ci.reference >= 10,
        "the input should raise incidents: {ci:?}"
    );
    assert!(c.lost.is_empty(), "{name}: lost alerts: {:?}", c.lost);
    assert!(
        ci.lost.is_empty(),
        "{name}: lost incident messages: {:?}",
        ci.lost
    );
    if exact {
        assert_eq!(ci.duplicated, 0, "{name}: duplicated incident messages");
        assert!(
            ci.unexpected.is_empty(),
            "{name}: unexpected (an incident split?): {:?}",
            ci.unexpected
        );
        assert_eq!(c.duplicated, 0, "{name}: duplicated alerts");
        assert!(
            c.unexpected.is_empty(),
            "{name}: unexpected: {:?}",
            c.unexpected
        );
        assert_eq!(c.faulty, c.reference);
    }
}
