//! Fault test (c), issue 7: the broker is restarted mid-stream under an exactly-once and
//! an at-least-once processor at once; each is compared with a reference run over the
//! same input. Exactly-once: the same alert messages exactly. At-least-once: none lost.
//!
//! This stops the shared local broker, so it is its own test binary: cargo runs test
//! binaries one after another, so nothing else is using the broker meanwhile.

mod common;
mod faults;

use std::process::Command;
use std::time::{Duration, Instant};

use faults::{compare, Inputs};

fn kafka(cmd: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kafka/kafka.sh");
    let st = Command::new("bash")
        .args([script, cmd])
        .status()
        .expect("run kafka.sh");
    assert!(st.success(), "kafka.sh {cmd}: {st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    const EOS: &str = "guarantee = \"exactly_once\"";
    let inputs = Inputs::new("brk").await;
    let eos = inputs.run("brk-eos", EOS).await;
    let alo = inputs.run("brk-alo", "").await;
    let mut loader = inputs.load(&eos, 2000);
    let mut a = eos.spawn("brk-eos-0");
    let mut b = alo.spawn("brk-alo-0");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before: i64 = faults::committed(&eos.group, &inputs.topics())
        .values()
        .sum();
    let down = Instant::now();
    kafka("stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka("start");
    let outage = down.elapsed();
    for (name, c) in [("exactly-once", &mut a), ("at-least-once", &mut b)] {
        if let Ok(Some(s)) = c.try_wait() {
            panic!("{name} processor exited during the broker restart: {s}");
        }
    }
    let st = loader.wait().expect("simulate");
    assert!(st.success(), "simulate failed across the restart: {st}");
    let total: i64 = faults::end_offsets(&inputs.topics()).values().sum();
    for (name, run, c) in [
        ("exactly-once", &eos, &mut a),
        ("at-least-once", &alo, &mut b),
    ] {
        assert!(
            run.wait_committed(&inputs, Duration::from_secs(180)),
            "{name}: did not catch up after the broker restart"
        );
        common::sigterm(c);
        let st = common::wait_exit(c, Duration::from_secs(30));
        assert!(st.is_some_and(|s| s.success()), "{name}: exit {st:?}");
    }
    let reference = faults::reference(&inputs, EOS).await;
    let e = compare(&reference, &eos.alerts());
    let l = compare(&reference, &alo.alerts());
    println!(
        "fault test (c) broker restart: down {:.1} s after {before} of {total} inputs committed; \
         reference alerts {}; exactly-once: alerts {}, lost {}, duplicated {}, unexpected {}; \
         at-least-once: alerts {}, lost {}, duplicated {}, unexpected {}",
        outage.as_secs_f64(),
        e.reference,
        e.faulty,
        e.lost.len(),
        e.duplicated,
        e.unexpected.len(),
        l.faulty,
        l.lost.len(),
        l.duplicated,
        l.unexpected.len()
    );
    assert!(e.reference >= 50, "the input should raise alerts: {e:?}");
    assert!(
        before > 0 && before < total,
        "the restart should land mid-stream"
    );
    assert!(e.lost.is_empty() && l.lost.is_empty(), "lost: {e:?} {l:?}");
    assert_eq!((e.duplicated, e.unexpected.len()), (0, 0), "{e:?}");
    assert!(l.unexpected.is_empty(), "{l:?}");
}
