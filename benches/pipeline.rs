//! The alert policy alone, and the whole pipeline in-process without Kafka, over the
//! simulated city (`riskstream simulate`: sensors, incidents and fraud with injected
//! anomalies, so the detectors fire at a realistic rate).
//!
//! - `alert_policy/city_signals`: the signals and watermark moves the default detectors
//!   produce over the city, replayed into a fresh `AlertPolicy` (episodes, levels,
//!   routes, escalation and resolve). Throughput is per signal.
//! - `pipeline/city_events`: `Pipeline::run` over the city's messages from memory:
//!   decode -> detect -> alert policy -> an in-memory sink, committer included, on the
//!   same multi-threaded runtime and allocator as the binary. Throughput is per message.
//!
//! Run: cargo bench --bench pipeline   (figures in docs/PERFORMANCE.md)

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use riskstream::alert::AlertPolicy;
use riskstream::clock::SystemClock;
use riskstream::config::{self, Config};
use riskstream::decode::{Decoder, Stream};
use riskstream::detect::{BuildCtx, DetectorSet, Signal};
use riskstream::pipeline::Pipeline;
use riskstream::simulate::{generate, City, SimConfig};
use riskstream::sink::{CollectSink, LogDeadLetters};
use riskstream::source::memory::MemorySource;
use riskstream::source::Envelope;
use riskstream::telemetry::metrics::Metrics;

// The binary's allocator, so the pipeline figure is the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cfg() -> Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    config::load(&root).expect("default config")
}

/// Six hours of a city with 40 sites (~200 sensors): ~180k messages.
fn city(cfg: &Config) -> City {
    generate(
        &SimConfig {
            hours: 6.0,
            seed: 11,
            start: chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap(),
            sites: 40,
        },
        &cfg.regions,
    )
}

type Step = (
    Stream,
    Vec<Signal>,
    Option<chrono::DateTime<chrono::FixedOffset>>,
);

fn alert_policy(c: &mut Criterion) {
    let cfg = cfg();
    let city = city(&cfg);
    let d = Decoder::new(cfg.regions.clone());
    let mut set = DetectorSet::new(
        &cfg.detectors.per_stream(),
        cfg.processing.allowed_lateness,
        &BuildCtx::new(cfg.regions.clone()),
    );
    let mut steps: Vec<Step> = Vec::new();
    let mut signals = 0u64;
    for e in &city.events {
        let ev = d.decode(e.stream, e.json.as_bytes()).expect("valid").event;
        let mut out = Vec::new();
        let obs = set.observe(&ev, &mut out);
        if !out.is_empty() || obs.watermark.is_some() {
            signals += out.len() as u64;
            steps.push((e.stream, out, obs.watermark));
        }
    }
    let clock: Arc<dyn riskstream::clock::Clock> = Arc::new(SystemClock);
    let mut g = c.benchmark_group("alert_policy");
    g.throughput(Throughput::Elements(signals));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("city_signals", |b| {
        b.iter_batched(
            || {
                let p = AlertPolicy::new(cfg.alerts.clone(), cfg.regions.clone(), clock.clone());
                (p, steps.clone())
            },
            |(mut p, steps)| {
                let mut alerts = Vec::new();
                for (stream, sigs, wm) in steps {
                    for s in sigs {
                        if let Some(a) = p.on_signal(s) {
                            alerts.push(a);
                        }
                    }
                    if let Some(w) = wm {
                        p.on_watermark(stream, w, &mut alerts);
                    }
                }
                black_box(alerts.len())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    eprintln!(
        "alert_policy: {} messages, {signals} signals, {} steps",
        city.events.len(),
        steps.len()
    );
}

fn pipeline(c: &mut Criterion) {
    let cfg = cfg();
    let city = city(&cfg);
    let envs: Vec<Envelope> = city.envelopes();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(envs.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("city_events", |b| {
        b.iter_batched(
            || envs.clone(),
            |envs| {
                let (sink, alerts) = CollectSink::new();
                let p = Pipeline::new(
                    &cfg,
                    vec![sink],
                    Arc::new(LogDeadLetters),
                    Arc::new(Metrics::new()),
                    Arc::new(SystemClock),
                );
                let (trigger, _) = riskstream::shutdown::channel();
                let s = rt
                    .block_on(p.run(MemorySource::new(envs), trigger))
                    .expect("pipeline runs");
                assert_eq!(s.consumed as usize, city.events.len());
                let n = alerts.lock().unwrap().len();
                black_box(n)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, alert_policy, pipeline);
criterion_main!(benches);
