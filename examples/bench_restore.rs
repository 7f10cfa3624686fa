//! Restore time of durable state for N keys (issue 7: "restore time for 1M keys < 5 s").
//!
//! Builds the default config's sensor detectors, gives N distinct sensors (at N/5 sites)
//! a short warm history each, writes the resulting changelog to fresh state topics on the
//! local broker, then restores it into an empty detector set, timed, and checks the
//! restored key count. Run with:
//!
//! cargo run --release --example bench_restore -- [KEYS] [BROKERS]

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;
use riskstream::decode::{Decoder, Stream};
use riskstream::detect::{BuildCtx, DetectorSet};
use riskstream::state::changelog::{
    ensure_topics, restore, ChangelogWriter, Record, RestoreTarget,
};
use riskstream::state::Change;
use riskstream::state::StateError;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let keys: usize = a
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let brokers = a.get(1).cloned().unwrap_or_else(|| "127.0.0.1:9092".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = riskstream::config::load(&root.join("config/default.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.kafka.brokers = brokers;
    cfg.kafka.group_id = format!("bench-restore-{}", std::process::id());
    let ctx = BuildCtx::new(cfg.regions.clone());
    let sensors_only =
        |c: &riskstream::config::Config| vec![(Stream::Sensors, c.detectors.sensors.clone())];
    let mut set = DetectorSet::new(&sensors_only(&cfg), cfg.processing.allowed_lateness, &ctx);
    set.track_changes();
    let decoder = Decoder::new(cfg.regions.clone());
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-26T08:00:00+08:00")?;
    let kinds = [
        "gas_lel",
        "h2s_ppm",
        "temperature",
        "pressure",
        "tank_level",
    ];
    let started = Instant::now();
    let mut signals = Vec::new();
    // Three readings per sensor, a minute apart: every detector holds the key.
    for round in 0..3i64 {
        for i in 0..keys {
            let ts = t0 + chrono::Duration::seconds(round * 60 + (i % 60) as i64);
            let site = i / 5;
            let msg = format!(
                r#"{{"sensor_id":"S-330503-{i:07}","site_id":"SITE-330503-{site:06}","region":"330503101","kind":"{}","ts":"{}","value":{}}}"#,
                kinds[i % 5],
                ts.to_rfc3339(),
                1.0 + (round as f64) * 0.01 + (i % 7) as f64 * 0.001
            );
            let d = decoder.decode(Stream::Sensors, msg.as_bytes())?;
            set.observe(&d.event, &mut signals);
            signals.clear();
        }
    }
    let held = set.keys();
    let mut changes: Vec<Change> = Vec::new();
    set.changes(Stream::Sensors, &mut changes);
    let bytes: usize = changes
        .iter()
        .map(|c| c.value.as_ref().map_or(0, Vec::len))
        .sum();
    eprintln!(
        "built {keys} sensors: {held} detector keys, {} changelog records, {:.1} MB, in {:.1?}",
        changes.len(),
        bytes as f64 / 1e6,
        started.elapsed()
    );

    ensure_topics(&cfg).await?;
    let producer: rdkafka::producer::FutureProducer = riskstream::kafka::client_config(&cfg)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?;
    let writer = ChangelogWriter::new(&cfg, producer);
    let w0 = Instant::now();
    for chunk in changes.chunks(50_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for c in chunk {
            loop {
                match writer.send(Stream::Sensors, c) {
                    Ok(a) => break acks.push(a),
                    Err(riskstream::sink::SinkError::Full(_)) => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        try_join_all(acks).await.context("changelog write")?;
    }
    eprintln!("wrote the changelog in {:.1?}", w0.elapsed());

    let mut fresh = DetectorSet::new(&sensors_only(&cfg), cfg.processing.allowed_lateness, &ctx);
    struct Target<'a>(&'a mut DetectorSet, usize);
    impl RestoreTarget for Target<'_> {
        fn reserve(&mut self, s: Stream, _p: i32, n: usize) {
            // Per partition, maps still empty: size them for the running total.
            self.1 += n;
            self.0.reserve(s, self.1);
        }
        fn apply(
            &mut self,
            s: Stream,
            records: &[Record<'_>],
            failed: &mut Vec<(usize, StateError)>,
        ) {
            let recs = records.iter().enumerate();
            self.0
                .restore_batch(s, recs.map(|(n, r)| (n, r.key, r.value)), failed);
        }
    }
    let stats = tokio::task::block_in_place(|| {
        restore(&cfg, Duration::from_secs(300), &mut Target(&mut fresh, 0))
    })?;
    let restored = fresh.keys();
    println!(
        "{{\"sensors\":{keys},\"detector_keys\":{held},\"records\":{},\"mb\":{:.1},\"restore_s\":{:.2},\"restored_keys\":{restored},\"skipped\":{}}}",
        stats.records,
        stats.bytes as f64 / 1e6,
        stats.elapsed.as_secs_f64(),
        stats.skipped
    );
    anyhow::ensure!(
        restored == held,
        "restored {restored} keys, expected {held}"
    );
    Ok(())
}
