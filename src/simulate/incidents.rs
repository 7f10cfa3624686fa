//! Incident reports: per township a Poisson process whose rate follows each category's
//! daily and weekly rhythm (sampled by thinning), plus the planned extra incidents of
//! injected surges.

use chrono::FixedOffset;
use rand::rngs::StdRng;
use rand::Rng;

use super::{exp_gap, local_clock, normal, rfc, sub_rng, Generator, SimEvent};
use crate::decode::Stream;

pub(super) const CATEGORIES: [&str; 6] = [
    "dispute",
    "public_order",
    "fire",
    "traffic",
    "wage_arrears",
    "petition",
];

/// Share of each category in an average hour.
const SHARE: [f64; 6] = [0.30, 0.15, 0.08, 0.30, 0.07, 0.10];

fn bump(h: f64, centre: f64, width: f64) -> f64 {
    // Distance on the 24 h circle.
    let d = ((h - centre).rem_euclid(24.0)).min((centre - h).rem_euclid(24.0));
    (-0.5 * (d / width).powi(2)).exp()
}

/// Relative rate of a category at a local hour and weekday (0 = Monday); at most [`MAX`].
fn rhythm(cat: usize, h: f64, weekday: u32) -> f64 {
    let weekend = weekday >= 5;
    match cat {
        0 => {
            (0.4 + 0.8 * bump(h, 10.5, 2.5) + 1.0 * bump(h, 20.0, 2.5))
                * if weekend { 1.25 } else { 1.0 }
        }
        1 => (0.3 + 1.4 * bump(h, 22.5, 2.5)) * if weekend { 1.4 } else { 1.0 },
        2 => 0.6 + 0.6 * bump(h, 13.0, 4.0),
        3 => {
            (0.3 + 1.2 * bump(h, 8.0, 1.5) + 1.2 * bump(h, 18.0, 1.5))
                * if weekend { 0.8 } else { 1.0 }
        }
        4 => (0.15 + 1.6 * bump(h, 13.0, 3.0)) * if weekend { 0.3 } else { 1.0 },
        _ => (0.1 + 1.8 * bump(h, 13.0, 3.0)) * if weekend { 0.2 } else { 1.0 },
    }
}

/// An upper bound of [`rhythm`] for thinning.
const MAX: f64 = 2.6;

/// One planned extra incident.
#[derive(Debug, Clone)]
pub(super) struct Extra {
    pub t: i64,
    pub township: String,
    pub category: usize,
}

pub(super) struct Incidents {
    townships: Vec<(String, f64, i64)>,
    rng: StdRng,
    extras: Vec<Extra>,
    next_extra: usize,
    off: FixedOffset,
    n: u64,
}

impl Incidents {
    pub(super) fn new(
        seed: u64,
        townships: &[String],
        off: FixedOffset,
        start: i64,
        mut extras: Vec<Extra>,
    ) -> Self {
        let mut rng = sub_rng(seed, "incidents");
        let towns = townships
            .iter()
            .map(|t| {
                // Mean ~0.35 incidents an hour, some townships busier than others.
                let rate = 0.35 * (0.35 * normal(&mut rng)).exp() / 3600.0;
                (t.clone(), rate, start)
            })
            .collect();
        extras.sort_by_key(|e| e.t);
        Self {
            townships: towns,
            rng,
            extras,
            next_extra: 0,
            off,
            n: 0,
        }
    }

    fn emit(&mut self, t: i64, town: usize, cat: usize, out: &mut Vec<SimEvent>) {
        self.n += 1;
        let ts = rfc(t, self.off);
        let id = format!("INC-{}-{:06}", &ts[..10].replace('-', ""), self.n);
        let sev = [1, 1, 2, 2, 2, 3, 3, 4][self.rng.random_range(0..8)];
        let lat = 30.87 + 0.3 * (self.rng.random::<f64>() - 0.5);
        let lon = 120.09 + 0.4 * (self.rng.random::<f64>() - 0.5);
        let region = if town < self.townships.len() {
            &self.townships[town].0
        } else {
            &self.extras[town - self.townships.len()].township
        };
        let json = format!(
            r#"{{"id":"{id}","ts":"{ts}","region":"{region}","category":"{}","severity":{sev},"lat":{:.4},"lon":{:.4}}}"#,
            CATEGORIES[cat], lat, lon
        );
        out.push(SimEvent {
            ts: super::at(t, self.off),
            arrival_ms: t * 1000 + self.rng.random_range(300..5_000),
            stream: Stream::Incidents,
            key: id,
            json,
        });
    }
}

impl Generator for Incidents {
    fn fill(&mut self, _from: i64, to: i64, out: &mut Vec<SimEvent>) {
        for i in 0..self.townships.len() {
            loop {
                let (_, rate, next) = self.townships[i];
                // Candidates at the peak rate; each kept with probability rate(t) / peak.
                let t = next + exp_gap(&mut self.rng, rate * MAX).ceil() as i64;
                if t >= to {
                    // Memoryless: no candidate in [next, to), so the next chunk starts at `to`.
                    self.townships[i].2 = to;
                    break;
                }
                self.townships[i].2 = t;
                let (h, wd) = local_clock(t, self.off);
                let w: Vec<f64> = (0..CATEGORIES.len())
                    .map(|c| SHARE[c] * rhythm(c, h, wd))
                    .collect();
                let total: f64 = w.iter().sum();
                if self.rng.random::<f64>() * MAX >= total {
                    continue;
                }
                let mut x = self.rng.random::<f64>() * total;
                let cat = w
                    .iter()
                    .position(|p| {
                        x -= p;
                        x < 0.0
                    })
                    .unwrap_or(0);
                self.emit(t, i, cat, out);
            }
        }
        while self.next_extra < self.extras.len() && self.extras[self.next_extra].t < to {
            let e = self.next_extra;
            self.next_extra += 1;
            let (t, cat) = (self.extras[e].t, self.extras[e].category);
            self.emit(t, self.townships.len() + e, cat, out);
        }
    }
}
