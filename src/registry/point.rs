//! One monitoring point: the JSON object of a point file line and of a registry topic
//! record, and the rules it must meet.

use serde::{Deserialize, Serialize};

use crate::alert::Level;

/// A registered sensor. Only `sensor_id` is required. Unknown top-level fields are
/// ignored (the systems that produce the registry evolve, like the input producers),
/// but `limits` and `levels` accept only `hh`, `h`, `l` and `ll`: a misspelt limit must
/// be an error, not a point silently without it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub sensor_id: String,
    /// What alerts call the point (`R-2 reactor outlet temperature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The instrument's measuring range; outside it a reading is a `sensor_fault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
    /// The point's own alarm limits; any of them replace its kind's limits.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// Levels per limit, overriding `h`/`l` yellow and `hh`/`ll` orange.
    #[serde(default, skip_serializing_if = "LimitLevels::is_empty")]
    pub levels: LimitLevels,
    /// Band (in the point's unit) a value must recede past a limit before the alarm
    /// clears; replaces the kind's hysteresis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// What alerts call the site (the enterprise's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_name: Option<String>,
    /// The site's major-hazard-source grade, 1 (most hazardous) to 4; in alert subjects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hazard_grade: Option<u8>,
}

/// High-high, high, low and low-low alarm limits, any subset.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hh: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ll: Option<f64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn named(&self) -> [(&'static str, Option<f64>); 4] {
        [
            ("hh", self.hh),
            ("h", self.h),
            ("l", self.l),
            ("ll", self.ll),
        ]
    }
}

/// The level each limit raises, where it is not the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitLevels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hh: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ll: Option<Level>,
}

impl LimitLevels {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Point {
    /// A point with only its id.
    pub fn new(sensor_id: impl Into<String>) -> Self {
        Self {
            sensor_id: sensor_id.into(),
            name: None,
            site_id: None,
            kind: None,
            unit: None,
            range: None,
            limits: Limits::default(),
            levels: LimitLevels::default(),
            deadband: None,
            site_name: None,
            hazard_grade: None,
        }
    }

    /// Parses and validates one point; every problem names its field.
    pub fn parse(bytes: &[u8]) -> Result<Self, Vec<String>> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let p: Point = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let what = clip(&inner.to_string()).to_string();
            vec![if path.is_empty() || path == "." {
                format!("not a point object: {what}")
            } else {
                format!("{path}: {what}")
            }]
        })?;
        let problems = p.problems();
        if problems.is_empty() {
            Ok(p)
        } else {
            Err(problems)
        }
    }

    /// Every rule the point breaks, each as `field: what`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.sensor_id.trim().is_empty() {
            out.push("sensor_id: must not be empty".into());
        }
        if let Some([lo, hi]) = self.range {
            if !lo.is_finite() || !hi.is_finite() || lo >= hi {
                out.push(format!(
                    "range: must be [low, high] with finite low < high, got [{lo}, {hi}]"
                ));
            }
        }
        let l = &self.limits;
        for (name, v) in l.named() {
            if v.is_some_and(|v| !v.is_finite()) {
                out.push(format!("limits.{name}: must be a finite number"));
            }
        }
        if let (Some(h), Some(hh)) = (l.h, l.hh) {
            if hh <= h {
                out.push(format!("limits.hh: must be > h ({h}), got {hh}"));
            }
        }
        if let (Some(lo), Some(ll)) = (l.l, l.ll) {
            if ll >= lo {
                out.push(format!("limits.ll: must be < l ({lo}), got {ll}"));
            }
        }
        let highest_low = [l.l, l.ll].into_iter().flatten().reduce(f64::max);
        let lowest_high = [l.h, l.hh].into_iter().flatten().reduce(f64::min);
        if let (Some(low), Some(high)) = (highest_low, lowest_high) {
            if low >= high {
                out.push(format!(
                    "limits: the low limits ({low}) must lie below the high limits ({high})"
                ));
            }
        }
        let lv = &self.levels;
        if let (Some(h), Some(hh)) = (lv.h, lv.hh) {
            if hh < h {
                out.push("levels.hh: must not be below levels.h".into());
            }
        }
        if let (Some(lo), Some(ll)) = (lv.l, lv.ll) {
            if ll < lo {
                out.push("levels.ll: must not be below levels.l".into());
            }
        }
        if let Some(d) = self.deadband {
            if !d.is_finite() || d < 0.0 {
                out.push(format!("deadband: must be a finite number >= 0, got {d}"));
            }
        }
        if let Some(g) = self.hazard_grade {
            if !(1..=4).contains(&g) {
                out.push(format!("hazard_grade: must be 1 to 4, got {g}"));
            }
        }
        out
    }
}

/// At most 80 characters of `s`, for error messages that quote input.
pub(crate) fn clip(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
