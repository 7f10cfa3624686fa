//! A generated city: the three streams over the demo hierarchy, with labelled injected
//! anomalies. Deterministic for a seed. Used by `riskstream simulate` and the demo.
//!
//! Background: ~30 hazardous-chemical sites with gas LEL, H2S, temperature and pressure
//! sensors sampling every 30 s with noise and jitter; incidents per township at a daily
//! rhythm; fraud reports naming mostly one-off phones, accounts and URLs.
//! Injected: a gas leak ramp at one site, an incident surge in one township, a burst of
//! reports naming one phone number.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Duration, FixedOffset};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::decode::Stream;
use crate::regions::Regions;

/// One generated input message.
#[derive(Debug, Clone)]
pub struct SimEvent {
    pub ts: DateTime<FixedOffset>,
    pub stream: Stream,
    pub key: String,
    pub json: String,
}

/// One injected anomaly, as `labels.jsonl` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Label {
    pub stream: Stream,
    pub kind: String,
    pub subject: String,
    pub start: String,
    pub end: String,
    pub expected_level: String,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub hours: f64,
    pub seed: u64,
    pub start: DateTime<FixedOffset>,
    pub sites: usize,
}

pub struct City {
    pub events: Vec<SimEvent>,
    pub labels: Vec<Label>,
}

const KINDS: [(&str, f64, f64, &str); 4] = [
    ("gas_lel", 3.0, 0.25, "%LEL"),
    ("h2s_ppm", 1.5, 0.15, "ppm"),
    ("temperature", 45.0, 0.6, "C"),
    ("pressure", 1.0, 0.015, "MPa"),
];
const CATEGORIES: [&str; 6] = [
    "dispute",
    "public_order",
    "fire",
    "traffic",
    "wage_arrears",
    "petition",
];

/// Standard normal by Box-Muller (no extra dependency for one distribution).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn rfc(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

pub fn generate(cfg: &SimConfig, regions: &Regions) -> City {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let townships: Vec<String> = regions.township_codes().map(str::to_string).collect();
    let total = Duration::seconds((cfg.hours * 3600.0) as i64);
    let end = cfg.start + total;
    let mut events = Vec::new();
    let mut labels = Vec::new();
    let at = |f: f64| cfg.start + Duration::seconds((total.num_seconds() as f64 * f) as i64);

    // Sensors.
    let leak_site = 7 % cfg.sites.max(1);
    let leak_start = at(0.6);
    let leak_end = leak_start + Duration::minutes(12);
    for site in 0..cfg.sites {
        let town = &townships[(site * 7) % townships.len()];
        let county = &town[..6];
        let site_id = format!("SITE-{county}-{site:04}");
        for (ki, (kind, base, noise, unit)) in KINDS.iter().enumerate() {
            let sensor_id = format!(
                "S-{county}-{site:04}-{}",
                kind.to_uppercase().replace('_', "")
            );
            let level = base * (0.8 + 0.4 * rng.random::<f64>());
            let mut t = cfg.start + Duration::seconds(rng.random_range(0..30));
            while t < end {
                let mut v = level + noise * normal(&mut rng);
                if site == leak_site && ki == 0 && t >= leak_start && t < leak_end {
                    // A leak: ramp to ~35 %LEL over 4 minutes, then hold.
                    let m = (t - leak_start).num_seconds() as f64 / 240.0;
                    v += 32.0 * m.min(1.0);
                }
                let v = (v * 1000.0).round() / 1000.0;
                let json = serde_json::json!({"sensor_id": sensor_id, "site_id": site_id, "region": town,
                    "kind": kind, "ts": rfc(t), "value": v, "unit": unit, "status": "ok"});
                events.push(SimEvent {
                    ts: t,
                    stream: Stream::Sensors,
                    key: sensor_id.clone(),
                    json: json.to_string(),
                });
                t += Duration::seconds(25 + rng.random_range(0..11));
            }
        }
        if site == leak_site {
            labels.push(Label {
                stream: Stream::Sensors,
                kind: "gas_leak_ramp".into(),
                subject: format!("S-{county}-{site:04}-GASLEL"),
                start: rfc(leak_start),
                end: rfc(leak_end),
                expected_level: "red".into(),
            });
        }
    }

    // Incidents: ~0.4/h per township, busier by day.
    let mut n = 0u64;
    let mut inc = |t: DateTime<FixedOffset>,
                   town: &str,
                   rng: &mut StdRng,
                   events: &mut Vec<SimEvent>| {
        n += 1;
        let id = format!("INC-{}-{n:06}", t.format("%Y%m%d"));
        let json = serde_json::json!({"id": id, "ts": rfc(t), "region": town,
            "category": CATEGORIES[rng.random_range(0..CATEGORIES.len())], "severity": rng.random_range(1..=3)});
        events.push(SimEvent {
            ts: t,
            stream: Stream::Incidents,
            key: id,
            json: json.to_string(),
        });
    };
    for town in &townships {
        let mut t = cfg.start;
        loop {
            let hour = t.format("%H").to_string().parse::<f64>().unwrap_or(12.0);
            let rate_per_h =
                0.4 * (1.0 + 0.6 * ((hour - 14.0) / 24.0 * 2.0 * std::f64::consts::PI).cos());
            let gap = -rng.random_range(f64::EPSILON..1.0f64).ln() / rate_per_h.max(0.05) * 3600.0;
            t += Duration::seconds(gap as i64 + 1);
            if t >= end {
                break;
            }
            inc(t, town, &mut rng, &mut events);
        }
    }
    let surge_town = townships[0].clone();
    let surge_start = at(0.7);
    for i in 0..30 {
        let t = surge_start + Duration::seconds(i * 25);
        inc(t, &surge_town, &mut rng, &mut events);
    }
    labels.push(Label {
        stream: Stream::Incidents,
        kind: "incident_surge".into(),
        subject: surge_town,
        start: rfc(surge_start),
        end: rfc(surge_start + Duration::minutes(15)),
        expected_level: "orange".into(),
    });

    // Fraud: ~30 reports/h of one-off suspects, then a burst on one phone.
    let mut f = 0u64;
    let mut fraud = |t: DateTime<FixedOffset>,
                     phone: Option<String>,
                     rng: &mut StdRng,
                     events: &mut Vec<SimEvent>| {
        f += 1;
        let id = format!("FR-{}-{f:06}", t.format("%Y%m%d"));
        let town = &townships[rng.random_range(0..townships.len())];
        let phone =
            phone.unwrap_or_else(|| format!("+86139{:08}", rng.random_range(0..100_000_000u64)));
        let json = serde_json::json!({"id": id, "ts": rfc(t), "region": town, "channel": "phone",
            "scheme": "impersonation", "suspect_phone": phone, "suspect_account": null, "suspect_url": null,
            "amount_cny": (rng.random_range(500.0..50_000.0f64)).round()});
        events.push(SimEvent {
            ts: t,
            stream: Stream::Fraud,
            key: id,
            json: json.to_string(),
        });
    };
    let mut t = cfg.start;
    loop {
        t += Duration::seconds(1 + (-rng.random_range(f64::EPSILON..1.0f64).ln() * 120.0) as i64);
        if t >= end {
            break;
        }
        fraud(t, None, &mut rng, &mut events);
    }
    let burst_phone = "+8613800000000".to_string();
    let burst_start = at(0.5);
    for i in 0..8 {
        fraud(
            burst_start + Duration::seconds(i * 150),
            Some(burst_phone.clone()),
            &mut rng,
            &mut events,
        );
    }
    labels.push(Label {
        stream: Stream::Fraud,
        kind: "fraud_burst".into(),
        subject: format!("phone:{burst_phone}"),
        start: rfc(burst_start),
        end: rfc(burst_start + Duration::minutes(20)),
        expected_level: "yellow".into(),
    });

    events.sort_by_key(|e| e.ts);
    City { events, labels }
}

/// Writes `incidents.ndjson`, `sensor-readings.ndjson`, `fraud-reports.ndjson`, `labels.jsonl`.
pub fn write_files(city: &City, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let open = |n: &str| std::fs::File::create(dir.join(n)).map(std::io::BufWriter::new);
    let mut inc = open("incidents.ndjson")?;
    let mut sen = open("sensor-readings.ndjson")?;
    let mut fr = open("fraud-reports.ndjson")?;
    for e in &city.events {
        let w = match e.stream {
            Stream::Incidents => &mut inc,
            Stream::Sensors => &mut sen,
            Stream::Fraud => &mut fr,
        };
        writeln!(w, "{}", e.json)?;
    }
    let mut l = open("labels.jsonl")?;
    for x in &city.labels {
        writeln!(l, "{}", serde_json::to_string(x).expect("labels serialize"))?;
    }
    for mut w in [inc, sen, fr, l] {
        w.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64) -> SimConfig {
        SimConfig {
            hours: 1.0,
            seed,
            start: DateTime::parse_from_rfc3339("2026-11-26T08:00:00+08:00").unwrap(),
            sites: 5,
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_decodable() {
        let r = crate::regions::demo();
        let a = generate(&cfg(1), &r);
        let b = generate(&cfg(1), &r);
        let c = generate(&cfg(2), &r);
        assert_eq!(a.events.len(), b.events.len());
        assert!(a
            .events
            .iter()
            .zip(&b.events)
            .all(|(x, y)| x.json == y.json));
        assert!(a
            .events
            .iter()
            .zip(&c.events)
            .any(|(x, y)| x.json != y.json));
        assert_eq!(a.labels.len(), 3);
        let d = crate::decode::Decoder::new(std::sync::Arc::new(r));
        for e in &a.events {
            d.decode(e.stream, e.json.as_bytes())
                .unwrap_or_else(|err| panic!("{err}: {}", e.json));
        }
        assert!(a.events.windows(2).all(|w| w[0].ts <= w[1].ts));
    }
}
