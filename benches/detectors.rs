//! Per-detector update cost, one core: hot keys (16 sensors) and many keys (1M sensors,
//! each touched repeatedly), plus the whole detector set of the default config.
//! Run: cargo bench --bench detectors   (figures in docs/DETECTORS.md)

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use riskstream::config;
use riskstream::decode::{Decoder, Event, Stream};
use riskstream::detect::{BuildCtx, Detector, DetectorConfig};

/// `n` readings over `keys` sensors, round-robin, 10 s apart per sensor.
fn readings(cfg: &config::Config, kind: &str, keys: usize, n: usize) -> Vec<Event> {
    let d = Decoder::new(cfg.regions.clone());
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00+08:00").unwrap();
    (0..n)
        .map(|i| {
            let t = t0 + chrono::Duration::seconds((i / keys) as i64 * 10);
            let v = serde_json::json!({"sensor_id": format!("S-{:07}", i % keys), "site_id": format!("SITE-{}", (i % keys) / 4),
                "region":"330503101", "kind": kind, "ts": t.to_rfc3339(), "value": 3.0 + ((i * 7919) % 13) as f64 * 0.05});
            d.decode(Stream::Sensors, v.to_string().as_bytes()).unwrap().event
        })
        .collect()
}

fn detector(cfg: &config::Config, toml_text: &str) -> Box<dyn Detector> {
    let c: DetectorConfig = toml::from_str(toml_text).expect("bench detector config");
    c.build(Stream::Sensors, &BuildCtx::new(cfg.regions.clone()))
}

/// Feeds `events` in a loop to one long-lived detector: steady state, no setup in the timing.
fn run(
    c: &mut Criterion,
    cfg: &config::Config,
    group: &str,
    name: &str,
    det: &str,
    events: &[Event],
    warm: usize,
) {
    let mut d = detector(cfg, det);
    let mut out = Vec::new();
    for e in &events[..warm] {
        d.observe(e, false, &mut out);
        out.clear();
    }
    let live = &events[warm..];
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(3));
    let mut i = 0usize;
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(d.observe(&live[i], false, &mut out));
                out.clear();
                i += 1;
                if i == live.len() {
                    i = 0;
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

const DETECTORS: &[(&str, &str)] = &[
    ("threshold", "type = \"threshold\""),
    ("ewma_z", "type = \"ewma_z\"\nmin_samples = 5"),
    ("cusum", "type = \"cusum\"\nmin_samples = 5"),
    ("rate_of_change", "type = \"rate_of_change\""),
    ("robust_z", "type = \"robust_z\"\nmin_samples = 5"),
    ("flatline", "type = \"flatline\""),
    ("offline", "type = \"offline\""),
    ("site_correlation", "type = \"site_correlation\""),
];

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let cfg = config::load(&root).expect("default config");
    let hot = readings(&cfg, "gas_lel", 16, 20_000);
    for (name, det) in DETECTORS {
        run(c, &cfg, "hot_keys_16", name, det, &hot, 1_000);
    }
    let keys = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let many = readings(&cfg, "gas_lel", keys, keys * 2);
    for (name, det) in DETECTORS {
        run(c, &cfg, &format!("keys_{keys}"), name, det, &many, keys);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
