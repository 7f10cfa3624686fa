//! Fault test (b), issue 7: three instances share the consumer group with scale-out
//! (repartitioned tasks); mid-stream one is SIGKILLed for good and a fourth joins. The
//! alerts are compared with a reference run (one instance, scale-out, no faults) over
//! the same input: the same messages exactly, none lost, none duplicated. Each surviving
//! instance must have committed work of its own, so the partitions were really shared.

mod common;
mod faults;

use std::time::Duration;

use faults::{compare, Inputs};

/// Scale-out runs in transactions whatever the guarantee. A killed member's partitions
/// move after its session timeout, and its open transaction (which holds back
/// read_committed readers of the partitions it wrote) is aborted after the transaction
/// timeout: both short here so the test does not wait on the defaults (45 s and 60 s).
const SCALE_OUT: &str = r#"guarantee = "exactly_once"
scale_out = true
[kafka.properties]
"session.timeout.ms" = "6000"
"transaction.timeout.ms" = "10000"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_survives_a_kill_and_a_join() {
    let inputs = Inputs::new("so").await;
    let faulty = inputs.run("so-faulty", SCALE_OUT).await;
    let mut loader = inputs.load(&faulty, 900);
    let mut a = faulty.spawn_instance("so-0");
    let mut b = faulty.spawn_instance("so-1");
    let mut c = faulty.spawn_instance("so-2");
    // What systemd's `Restart=on-failure` (deploy/systemd) does for a survivor that
    // exits 1 on its own: librdkafka can fail to abort a transaction after a rebalance
    // with a fatal INVALID_TXN_STATE (confluentinc/librdkafka#4849), and riskstream then
    // stops (the producer is unusable). A restart is one more fault the outputs must
    // survive exactly; how many there were is printed.
    let mut restarts: Vec<(String, std::process::ExitStatus)> = Vec::new();
    let never = || false;
    supervise(
        &faulty,
        &mut [("so-0", &mut a), ("so-1", &mut b), ("so-2", &mut c)],
        &mut restarts,
        Duration::from_secs(15),
        never,
    )
    .await;
    let at_kill: i64 = faults::committed(&faulty.group, &inputs.topics())
        .values()
        .sum();
    common::sigkill(&mut b.0);
    supervise(
        &faulty,
        &mut [("so-0", &mut a), ("so-2", &mut c)],
        &mut restarts,
        Duration::from_secs(12),
        never,
    )
    .await;
    let at_join: i64 = faults::committed(&faulty.group, &inputs.topics())
        .values()
        .sum();
    let mut d = faulty.spawn_instance("so-3");
    let mut loaded = None;
    supervise(
        &faulty,
        &mut [("so-0", &mut a), ("so-2", &mut c), ("so-3", &mut d)],
        &mut restarts,
        Duration::from_secs(600),
        || {
            loaded = loader.try_wait().expect("simulate");
            loaded.is_some()
        },
    )
    .await;
    let status = loaded.expect("simulate did not end within 600 s");
    assert!(status.success(), "simulate failed: {status}");
    let total: i64 = faults::end_offsets(&inputs.topics()).values().sum();
    let caught_up = supervise(
        &faulty,
        &mut [("so-0", &mut a), ("so-2", &mut c), ("so-3", &mut d)],
        &mut restarts,
        Duration::from_secs(240),
        || faulty.all_committed(&inputs),
    )
    .await;
    assert!(caught_up, "faulty run did not catch up");
    assert!(restarts.len() <= 2, "survivors kept failing: {restarts:?}");
    // Work per surviving instance: its committed transactions.
    let mut txns = Vec::new();
    for (name, (child, addr)) in [("so-0", &mut a), ("so-2", &mut c), ("so-3", &mut d)] {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{name} exited on its own: {s}");
        }
        let text = common::http_get(addr, "/metrics").unwrap_or_default();
        let n = common::metric_sum(
            &text,
            "riskstream_transactions_total",
            &["outcome=\"committed\""],
        );
        txns.push((name, n));
    }
    for (child, _) in [&mut a, &mut c, &mut d] {
        common::sigterm(child);
    }
    for (name, (child, _)) in [("so-0", &mut a), ("so-2", &mut c), ("so-3", &mut d)] {
        let st = common::wait_exit(child, Duration::from_secs(30));
        assert!(st.is_some_and(|s| s.success()), "{name}: exit {st:?}");
    }
    let got = faulty.alerts();
    let got_incidents = faulty.incident_messages();

    let reference_run = faults::reference_run(&inputs, SCALE_OUT).await;
    let reference = reference_run.alerts();
    let cmp = compare(&reference, &got);
    // Incidents live in the tasks with the episodes they group: they move with them.
    let ci = compare(&reference_run.incident_messages(), &got_incidents);
    println!("fault test (b) scale-out incidents: {ci:?}");
    assert!(ci.lost.is_empty(), "lost incident messages: {:?}", ci.lost);
    assert_eq!(ci.duplicated, 0, "duplicated incident messages");
    assert!(
        ci.unexpected.is_empty(),
        "unexpected incident messages (an incident split?): {:?}",
        ci.unexpected
    );
    println!(
        "fault test (b) scale-out: 3 instances, 1 killed (inputs committed {at_kill} of {total}), \
         1 joined (at {at_join}); restarted on failure: {restarts:?}; \
         committed transactions per survivor {txns:?}; \
         reference alerts {}, faulty alerts {}, lost {}, duplicated {}, unexpected {}",
        cmp.reference,
        cmp.faulty,
        cmp.lost.len(),
        cmp.duplicated,
        cmp.unexpected.len()
    );
    assert!(
        cmp.reference >= 50,
        "the input should raise alerts: {cmp:?}"
    );
    assert!(
        at_kill > 0 && at_join < total,
        "the kill and the join should land mid-stream: {at_kill}, {at_join} of {total}"
    );
    for (name, n) in &txns {
        // A restarted instance's counters start again at 0, and it may rejoin when the
        // others already hold the remaining work.
        let restarted = restarts.iter().any(|(r, _)| r == name);
        assert!(
            *n > 0.0 || restarted,
            "{name} committed no work: partitions not shared"
        );
    }
    assert!(
        txns.iter().filter(|(_, n)| *n > 0.0).count() >= 2,
        "partitions not shared: {txns:?}"
    );
    assert!(cmp.lost.is_empty(), "lost alerts: {:?}", cmp.lost);
    assert_eq!(cmp.duplicated, 0, "duplicated alerts");
    assert!(
        cmp.unexpected.is_empty(),
        "unexpected: {:?}",
        cmp.unexpected
    );
    assert_eq!(cmp.faulty, cmp.reference);
}

/// Watches the running instances until `done` holds or `within` has passed (checking
/// at least once; with `|| false` it simply waits `within`): one that exited with a
/// failure is started again under its name, as `Restart=on-failure` would. Returns
/// whether `done` held.
async fn supervise(
    run: &faults::Run,
    instances: &mut [(&str, &mut (faults::Guard, String))],
    restarts: &mut Vec<(String, std::process::ExitStatus)>,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let until = std::time::Instant::now() + within;
    loop {
        for (name, inst) in instances.iter_mut() {
            if let Ok(Some(st)) = inst.0.try_wait() {
                assert!(!st.success(), "{name} exited 0 on its own");
                restarts.push((name.to_string(), st));
                **inst = run.spawn_instance(name);
            }
        }
        if done() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
