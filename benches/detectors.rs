//! Detector update cost: hot keys (a few sensors) and many keys (100k sensors).
//! Run: cargo bench --bench detectors

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use riskstream::config;
use riskstream::decode::{Decoder, Event, Stream};
use riskstream::detect::{BuildCtx, DetectorSet};

fn events(cfg: &config::Config, keys: usize, n: usize) -> Vec<Event> {
    let d = Decoder::new(cfg.regions.clone());
    (0..n)
        .map(|i| {
            let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00+08:00").unwrap()
                + chrono::Duration::seconds((i / keys.max(1)) as i64 * 10);
            let v = serde_json::json!({"sensor_id": format!("S-{}", i % keys), "site_id":"SITE-1","region":"330503101",
                "kind":"gas_lel","ts": t.to_rfc3339(),"value": 3.0 + (i % 7) as f64 * 0.1});
            d.decode(Stream::Sensors, v.to_string().as_bytes()).unwrap().event
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let cfg = config::load(&root).expect("default config");
    let ctx = BuildCtx {
        regions: cfg.regions.clone(),
    };
    let mut g = c.benchmark_group("sensor_detectors");
    for keys in [16usize, 100_000] {
        let evs = events(&cfg, keys, 200_000);
        g.throughput(Throughput::Elements(evs.len() as u64));
        g.bench_function(format!("threshold+ewma_z/{keys}_keys"), |b| {
            b.iter_batched(
                || {
                    DetectorSet::new(
                        &cfg.detectors.per_stream(),
                        cfg.processing.allowed_lateness,
                        &ctx,
                    )
                },
                |mut set| {
                    let mut out = Vec::new();
                    for e in &evs {
                        black_box(set.observe(e, &mut out));
                        out.clear();
                    }
                    set
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
