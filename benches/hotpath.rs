//! The per-event hot path, one core, without Kafka: decoding each stream's JSON, and the
//! default config's whole sensor detector set over 100k distinct sensors (keyed-state
//! lookups dominate there). Run: cargo bench --bench hotpath   (figures in docs/PERFORMANCE.md)

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use riskstream::config;
use riskstream::decode::{Decoder, Event, Stream};
use riskstream::detect::{BuildCtx, DetectorSet};

const SENSOR: &str = r#"{"sensor_id":"S-330503-0042-GAS1","site_id":"SITE-330503-0042","region":"330503101","kind":"gas_lel","ts":"2026-11-26T08:15:00+08:00","value":3.5,"unit":"%LEL","status":"ok"}"#;
const INCIDENT: &str = r#"{"id":"INC-20261126-000123","ts":"2026-11-26T08:15:00+08:00","region":"330502001","category":"dispute","severity":2,"lat":30.87,"lon":120.09,"summary":"neighbours quarrel over parking","extra":1}"#;
const FRAUD: &str = r#"{"id":"FR-20261126-004711","ts":"2026-11-26T08:15:00+08:00","region":"330521102","channel":"phone","scheme":"impersonation","suspect_phone":"+8613800000000","suspect_account":null,"suspect_url":null,"amount_cny":12000.0}"#;

fn cfg() -> config::Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    config::load(&root).expect("default config")
}

fn decode(c: &mut Criterion) {
    let cfg = cfg();
    let d = Decoder::new(cfg.regions.clone());
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(3));
    for (name, stream, text) in [
        ("sensor", Stream::Sensors, SENSOR),
        ("incident", Stream::Incidents, INCIDENT),
        ("fraud", Stream::Fraud, FRAUD),
    ] {
        d.decode(stream, text.as_bytes())
            .expect("bench input decodes");
        g.bench_function(name, |b| {
            b.iter(|| black_box(d.decode(stream, black_box(text.as_bytes()))))
        });
    }
    g.finish();
}

/// `n` readings over `keys` sensors (five kinds), round-robin, 10 s apart per sensor.
fn readings(d: &Decoder, keys: usize, n: usize) -> Vec<Event> {
    const KINDS: [&str; 5] = [
        "gas_lel",
        "h2s_ppm",
        "temperature",
        "pressure",
        "tank_level",
    ];
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00+08:00").unwrap();
    (0..n)
        .map(|i| {
            let k = i % keys;
            let t = t0 + chrono::Duration::seconds((i / keys) as i64 * 10);
            let v = serde_json::json!({"sensor_id": format!("S-{k:07}"), "site_id": format!("SITE-{}", k / 5),
                "region":"330503101", "kind": KINDS[k % 5], "ts": t.to_rfc3339(), "value": 3.0 + ((i * 7919) % 13) as f64 * 0.05});
            d.decode(Stream::Sensors, v.to_string().as_bytes()).unwrap().event
        })
        .collect()
}

fn detector_set(c: &mut Criterion) {
    let cfg = cfg();
    let d = Decoder::new(cfg.regions.clone());
    let keys = 100_000;
    let events = readings(&d, keys, keys * 4);
    let ctx = BuildCtx::new(cfg.regions.clone());
    let mut set = DetectorSet::new(
        &cfg.detectors.per_stream(),
        cfg.processing.allowed_lateness,
        &ctx,
    );
    let mut out = Vec::new();
    for e in &events[..keys] {
        set.observe(e, &mut out);
        out.clear();
    }
    let live = &events[keys..];
    let mut g = c.benchmark_group("detector_set");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    let mut i = 0usize;
    g.bench_function("sensors_100k_keys", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(set.observe(&live[i], &mut out));
                out.clear();
                i = (i + 1) % live.len();
            }
            start.elapsed()
        })
    });
    g.finish();
}

/// The screen alone (issue 24: jumps ahead and resends, before any detector): what the
/// checks add to each reading of `detector_set` above.
fn screen(c: &mut Criterion) {
    use riskstream::detect::screen::{Screen, ScreenConfig};
    let cfg = cfg();
    let d = Decoder::new(cfg.regions.clone());
    let keys = 100_000;
    let events = readings(&d, keys, keys * 4);
    let mut s = Screen::new(ScreenConfig::default());
    for e in &events[..keys] {
        let _ = s.admit(e);
    }
    let live = &events[keys..];
    let mut g = c.benchmark_group("screen");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(3));
    let mut i = 0usize;
    g.bench_function("sensors_100k_keys", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                // Every reading comes around again (the loop replays `live`): a
                // resend once the first lap is done, which costs the same probe.
                let _ = black_box(s.admit(&live[i]));
                i = (i + 1) % live.len();
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, decode, detector_set, screen);
criterion_main!(benches);
