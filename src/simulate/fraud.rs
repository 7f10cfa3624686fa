//! Fraud reports: ~30 an hour city-wide with a daily rhythm, each naming fresh suspects
//! (and a few percent one of a pool of recurring ones, who are reported now and then but
//! never in bursts), plus the planned reports of injected bursts, spreads and spikes.

use chrono::FixedOffset;
use rand::rngs::StdRng;
use rand::Rng;

use super::{exp_gap, local_clock, rfc, sub_rng, Generator, SimEvent};
use crate::decode::Stream;

const SCHEMES: [&str; 6] = [
    "impersonation",
    "investment",
    "refund",
    "loan",
    "part_time_job",
    "romance",
];
const CHANNELS: [&str; 4] = ["phone", "sms", "app", "web"];

/// Reports an hour city-wide at the daily peak.
const PEAK_PER_H: f64 = 45.0;

fn rhythm(h: f64, weekday: u32) -> f64 {
    // Quiet at night, busy 9-21.
    let day = 0.25 + 0.75 * (0.5 - 0.5 * ((h - 3.0) / 24.0 * std::f64::consts::TAU).cos());
    day * if weekday >= 5 { 1.1 } else { 1.0 } / 1.1
}

/// Suspects of one planned report; `None` fields are filled with fresh ones.
#[derive(Debug, Clone, Default)]
pub(super) struct Extra {
    pub t: i64,
    pub township: String,
    pub channel: &'static str,
    pub scheme: &'static str,
    pub phone: Option<String>,
    pub account: Option<String>,
}

pub(super) struct Fraud {
    townships: Vec<String>,
    rng: StdRng,
    next: i64,
    pool: Vec<(Option<String>, Option<String>, Option<String>)>,
    extras: Vec<Extra>,
    next_extra: usize,
    off: FixedOffset,
    n: u64,
}

pub(super) fn phone(rng: &mut impl Rng) -> String {
    format!(
        "+861{}{:09}",
        rng.random_range(3..10),
        rng.random_range(0..1_000_000_000u64)
    )
}

pub(super) fn account(rng: &mut impl Rng) -> String {
    format!("62{:017}", rng.random_range(0..100_000_000_000_000_000u64))
}

fn url(rng: &mut impl Rng) -> String {
    const WORDS: [&str; 8] = [
        "secure", "pay", "bank", "refund", "invest", "gift", "loan", "service",
    ];
    const TLDS: [&str; 4] = ["com", "cn", "top", "xyz"];
    format!(
        "https://{}-{}{}.{}/",
        WORDS[rng.random_range(0..WORDS.len())],
        WORDS[rng.random_range(0..WORDS.len())],
        rng.random_range(0..100_000),
        TLDS[rng.random_range(0..TLDS.len())]
    )
}

fn opt(s: &Option<String>) -> String {
    match s {
        Some(v) => format!("\"{v}\""),
        None => "null".into(),
    }
}

impl Fraud {
    pub(super) fn new(
        seed: u64,
        townships: &[String],
        off: FixedOffset,
        start: i64,
        mut extras: Vec<Extra>,
    ) -> Self {
        let mut rng = sub_rng(seed, "fraud");
        let pool = (0..300)
            .map(|i| match i % 3 {
                0 => (Some(phone(&mut rng)), None, None),
                1 => (None, Some(account(&mut rng)), None),
                _ => (None, None, Some(url(&mut rng))),
            })
            .collect();
        extras.sort_by_key(|e| e.t);
        Self {
            townships: townships.to_vec(),
            rng,
            next: start,
            pool,
            extras,
            next_extra: 0,
            off,
            n: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        t: i64,
        town: String,
        channel: &str,
        scheme: &str,
        suspects: (Option<String>, Option<String>, Option<String>),
        out: &mut Vec<SimEvent>,
    ) {
        self.n += 1;
        let ts = rfc(t, self.off);
        let id = format!("FR-{}-{:06}", &ts[..10].replace('-', ""), self.n);
        let amount = (10f64.powf(self.rng.random_range(2.5..5.3))).round();
        let json = format!(
            r#"{{"id":"{id}","ts":"{ts}","region":"{town}","channel":"{channel}","scheme":"{scheme}","suspect_phone":{},"suspect_account":{},"suspect_url":{},"amount_cny":{amount:.1}}}"#,
            opt(&suspects.0),
            opt(&suspects.1),
            opt(&suspects.2)
        );
        out.push(SimEvent {
            ts: super::at(t, self.off),
            arrival_ms: t * 1000 + self.rng.random_range(500..5_000),
            stream: Stream::Fraud,
            key: id,
            json,
        });
    }

    /// Fresh suspects for a channel: the contact, and sometimes the account paid into.
    fn fresh(&mut self, channel: &str) -> (Option<String>, Option<String>, Option<String>) {
        let r = &mut self.rng;
        let mut s = match channel {
            "phone" | "sms" => (Some(phone(r)), None, None),
            "app" => (None, Some(account(r)), None),
            _ => (None, None, Some(url(r))),
        };
        if s.1.is_none() && r.random_bool(0.25) {
            s.1 = Some(account(r));
        }
        s
    }
}

impl Generator for Fraud {
    fn fill(&mut self, _from: i64, to: i64, out: &mut Vec<SimEvent>) {
        loop {
            let t = self.next + exp_gap(&mut self.rng, PEAK_PER_H / 3600.0).ceil() as i64;
            if t >= to {
                self.next = to;
                break;
            }
            self.next = t;
            let (h, wd) = local_clock(t, self.off);
            if self.rng.random::<f64>() >= rhythm(h, wd) {
                continue;
            }
            let town = self.townships[self.rng.random_range(0..self.townships.len())].clone();
            let channel = CHANNELS[[0, 0, 0, 1, 1, 2, 2, 3][self.rng.random_range(0..8)]];
            let scheme = SCHEMES[self.rng.random_range(0..SCHEMES.len())];
            let suspects = if self.rng.random_bool(0.04) {
                self.pool[self.rng.random_range(0..self.pool.len())].clone()
            } else {
                self.fresh(channel)
            };
            self.emit(t, town, channel, scheme, suspects, out);
        }
        while self.next_extra < self.extras.len() && self.extras[self.next_extra].t < to {
            let e = self.extras[self.next_extra].clone();
            self.next_extra += 1;
            let mut s = self.fresh(e.channel);
            if e.phone.is_some() {
                s = (e.phone, e.account.or(s.1), None);
            } else if e.account.is_some() {
                s = (s.0.filter(|_| e.channel != "app"), e.account, None);
            }
            self.emit(e.t, e.township, e.channel, e.scheme, s, out);
        }
    }
}
