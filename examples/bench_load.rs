//! Load generator for `scripts/bench`: creates fresh input topics (6 partitions each) and
//! produces a realistic mix of the three streams to them, as fast as the broker takes it or
//! paced at `--rate` events/s. Not part of the service; delivery: every message is
//! acknowledged before exit (a failed delivery exits 1).
//!
//! Mix: 85% sensor readings over `--sensors` distinct sensors (five kinds, values inside
//! their normal bands), 10% incidents, 5% fraud reports naming suspects from a pool; regions
//! are the townships of the config's hierarchy. One sensor reading in 1000/`--alarm-per-mille`
//! is instead a gas reading of 30 %LEL on a sensor never seen before: exactly one red
//! threshold alarm, so the alert rate is known. Event times: with `--rate`, the wall clock;
//! otherwise the hour before now, in order.
//!
//! cargo run --release --example bench_load -- --topics P.incidents,P.sensors,P.fraud \
//!     [--create a,b] [--events N] [--rate R] [--delete]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

struct Args {
    brokers: String,
    topics: Vec<String>,
    create: Vec<String>,
    events: u64,
    rate: u64,
    sensors: u64,
    alarm_per_mille: u64,
    delete: bool,
    config: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        brokers: "127.0.0.1:9092".into(),
        topics: Vec::new(),
        create: Vec::new(),
        events: 0,
        rate: 0,
        sensors: 100_000,
        alarm_per_mille: 1,
        delete: false,
        config: "config/default.toml".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--brokers" => a.brokers = v()?,
            "--topics" => a.topics = v()?.split(',').map(str::to_string).collect(),
            "--create" => a.create = v()?.split(',').map(str::to_string).collect(),
            "--events" => a.events = v()?.parse()?,
            "--rate" => a.rate = v()?.parse()?,
            "--sensors" => a.sensors = v()?.parse()?,
            "--alarm-per-mille" => a.alarm_per_mille = v()?.parse()?,
            "--config" => a.config = v()?,
            "--delete" => a.delete = true,
            _ => bail!("unknown argument {k}"),
        }
    }
    Ok(a)
}

/// Counts delivery failures (the producer thread calls this).
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("bench_load: delivery failed: {e}");
            }
        }
    }
}

async fn admin(a: &Args) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    if a.delete {
        let names: Vec<&str> = a.topics.iter().map(String::as_str).collect();
        for r in admin.delete_topics(&names, &opts).await? {
            if let Err((t, e)) = r {
                eprintln!("bench_load: deleting {t}: {e}");
            }
        }
        return Ok(());
    }
    let new: Vec<NewTopic<'_>> = a
        .create
        .iter()
        .map(|t| NewTopic::new(t, 6, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&new, &opts).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating {t}: {e}"),
        }
    }
    Ok(())
}

const KINDS: [(&str, f64, f64, &str); 5] = [
    ("gas_lel", 3.0, 1.0, "%LEL"),
    ("h2s_ppm", 1.0, 0.5, "ppm"),
    ("temperature", 35.0, 5.0, "C"),
    ("pressure", 1.0, 0.1, "MPa"),
    ("tank_level", 60.0, 8.0, "%"),
];
const CATEGORIES: [&str; 5] = ["dispute", "theft", "fire", "traffic", "assault"];
const SCHEMES: [&str; 4] = ["impersonation", "investment", "refund", "romance"];

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if a.delete || !a.create.is_empty() {
        rt.block_on(admin(&a))?;
    }
    if a.events == 0 {
        return Ok(());
    }
    let [t_inc, t_sen, t_fr] = &a.topics[..] else {
        bail!("--topics needs incidents,sensors,fraud");
    };
    let cfg = riskstream::config::load(std::path::Path::new(&a.config))
        .map_err(|e| anyhow::anyhow!("{}: {:?}", a.config, e.problems))?;
    let towns: Vec<String> = cfg.regions.township_codes().map(str::to_string).collect();
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("acks", "1")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Deliveries {
            failed: AtomicU64::new(0),
        })?;
    let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("offset");
    let now = chrono::Utc::now().with_timezone(&cst);
    let t0 = now - chrono::Duration::hours(1);
    let step_us = 3_600_000_000 / a.events as i64;
    let mut rng = SmallRng::seed_from_u64(7);
    let (mut buf, mut key) = (String::with_capacity(512), String::with_capacity(64));
    let (mut sensor_n, mut alarms) = (0u64, 0u64);
    let every = 1000u64
        .checked_div(a.alarm_per_mille)
        .unwrap_or(u64::MAX)
        .max(1);
    let started = Instant::now();
    for i in 0..a.events {
        if a.rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / a.rate as f64);
            // Sleep only when a millisecond ahead: one sleep per event cost more CPU (on
            // the cores riskstream and the broker share) than generating it.
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                if wait >= Duration::from_millis(1) {
                    std::thread::sleep(wait);
                }
            }
        }
        let ts = if a.rate > 0 {
            chrono::Utc::now().with_timezone(&cst)
        } else {
            t0 + chrono::Duration::microseconds(i as i64 * step_us)
        };
        let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
        let town = &towns[rng.random_range(0..towns.len())];
        buf.clear();
        key.clear();
        let roll = rng.random_range(0..100u32);
        let topic = if roll < 85 {
            sensor_n += 1;
            if sensor_n % every == 0 {
                alarms += 1;
                write!(key, "S-ALM-{alarms:08}")?;
                write!(
                    buf,
                    r#"{{"sensor_id":"{key}","site_id":"SITE-ALM-{alarms}","region":"{town}","kind":"gas_lel","ts":"{ts}","value":30.0,"unit":"%LEL","status":"ok"}}"#
                )?;
            } else {
                let k = sensor_n % a.sensors;
                let site = k / 5;
                let (kind, mean, sd, unit) = KINDS[(k % 5) as usize];
                let v = (mean + sd * (rng.random::<f64>() - 0.5)).max(0.0);
                let town = &towns[(site as usize * 31) % towns.len()];
                write!(key, "S-{k:06}-{kind}")?;
                write!(
                    buf,
                    r#"{{"sensor_id":"{key}","site_id":"SITE-{site:05}","region":"{town}","kind":"{kind}","ts":"{ts}","value":{v:.3},"unit":"{unit}","status":"ok"}}"#
                )?;
            }
            t_sen
        } else if roll < 95 {
            write!(key, "INC-{i:09}")?;
            let (lat, lon) = (
                30.8 + rng.random::<f64>() * 0.2,
                120.0 + rng.random::<f64>() * 0.2,
            );
            write!(
                buf,
                r#"{{"id":"{key}","ts":"{ts}","region":"{town}","category":"{}","severity":{},"lat":{lat:.4},"lon":{lon:.4},"summary":"reported by phone"}}"#,
                CATEGORIES[rng.random_range(0..CATEGORIES.len())],
                rng.random_range(1..=4)
            )?;
            t_inc
        } else {
            write!(key, "FR-{i:09}")?;
            let phone = rng.random_range(0..50_000u32);
            write!(
                buf,
                r#"{{"id":"{key}","ts":"{ts}","region":"{town}","channel":"phone","scheme":"{}","suspect_phone":"+86138{phone:08}","suspect_account":null,"suspect_url":null,"amount_cny":{}}}"#,
                SCHEMES[rng.random_range(0..SCHEMES.len())],
                rng.random_range(100..50_000)
            )?;
            t_fr
        };
        let mut rec = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(buf.as_str());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "bench_load: produced {} events ({alarms} alarms) in {secs:.2}s = {:.0}/s",
        a.events,
        a.events as f64 / secs
    );
    println!("{alarms}");
    if failed > 0 {
        bail!("{failed} deliveries failed");
    }
    Ok(())
}
