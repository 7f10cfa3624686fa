//! Plausible measuring ranges per sensor kind: a reading outside its kind's range is a
//! glitching transmitter or a broken conversion, not a measurement. It stays a valid
//! input (the device is alive, `offline` counts it) but is marked
//! [`SensorStatus::OutOfRange`](super::SensorStatus), so it is kept out of every baseline
//! and raises only a `sensor_fault` episode, never a hazard level.
//!
//! The defaults are wide on purpose: an LEL head pegged at 120 %LEL is a real hazard
//! and must reach `threshold`; 1e308 %LEL is not. `generic` and any kind not
//! listed have no measuring range, only [`MAX_MAGNITUDE`]: no instrument reads beyond
//! 1e30 in any unit, so such a value is a fault of whatever kind.

use std::collections::BTreeMap;

/// Largest magnitude any reading may have to be a measurement (every kind). Detectors
/// also saturate at it, so squared and summed (or stored as `f32`) it stays finite.
pub const MAX_MAGNITUDE: f64 = 1e30;

/// Built-in ranges of the kinds the SPEC names. A kind says nothing of its unit
/// (pressure comes in MPa, bar, kPa, psi or Pa; a tank level in % or mm), so each range
/// spans what is physically possible in any common unit of the kind: it catches a
/// glitch (1e308, a sign flip of a raw count), not a reading that is merely high. A
/// point's true instrument range belongs in its registry entry or `[input.ranges]`.
pub fn default_ranges() -> BTreeMap<String, [f64; 2]> {
    BTreeMap::from([
        // %LEL only; an over-range head reads ~110-120, which `threshold` must see.
        ("gas_lel".into(), [-20.0, 200.0]),
        // ppm; 1e6 ppm is pure H2S.
        ("h2s_ppm".into(), [-100.0, 1e6]),
        // degC, degF or K: nothing is colder than absolute zero in degF (-459.67).
        ("temperature".into(), [-459.67, 1e4]),
        // Full vacuum is -101325 Pa gauge; 1e9 Pa is 1 GPa.
        ("pressure".into(), [-2e5, 1e9]),
        // % of span, m or mm.
        ("tank_level".into(), [-1e4, 1e6]),
    ])
}

/// The ranges in force: the built-in ones, then the config's (which add kinds or replace
/// a built-in one). A handful of kinds: a linear scan beats hashing the kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ranges(Vec<(Box<str>, [f64; 2])>);

impl Ranges {
    pub fn new(configured: &BTreeMap<String, [f64; 2]>) -> Self {
        let mut all = default_ranges();
        all.extend(configured.iter().map(|(k, r)| (k.clone(), *r)));
        Self(all.into_iter().map(|(k, r)| (k.into(), r)).collect())
    }

    /// The built-in ranges alone.
    pub fn defaults() -> Self {
        Self::new(&BTreeMap::new())
    }

    pub fn get(&self, kind: &str) -> Option<[f64; 2]> {
        self.0.iter().find(|(k, _)| &**k == kind).map(|(_, r)| *r)
    }

    /// Whether `value` is a plausible reading of `kind` (for a kind with no range:
    /// within [`MAX_MAGNITUDE`]).
    pub fn admits(&self, kind: &str, value: f64) -> bool {
        match self.get(kind) {
            Some(range) => within(range, value),
            None => value.abs() <= MAX_MAGNITUDE,
        }
    }
}

/// How far past its range a transmitter still measures, as a share of the span: NAMUR
/// NE 43 puts a saturated measurement at 3.8-20.5 mA on a 4-20 mA loop (-1.25 % to
/// +3.125 %) and a failure beyond 3.6 / 21 mA. A gas head pegged by a real leak reads
/// just past its top: that is a measurement `threshold` must judge, not a fault.
pub const SATURATION: f64 = 0.03125;

/// Whether `value` is a measurement of an instrument spanning `[lo, hi]` (its
/// saturation band included).
pub fn within([lo, hi]: [f64; 2], value: f64) -> bool {
    let slack = (hi - lo) * SATURATION;
    (lo - slack..=hi + slack).contains(&value)
}

/// Config check: each range a finite `[low, high]` with low < high.
pub fn validate(ranges: &BTreeMap<String, [f64; 2]>, path: &str, problems: &mut Vec<String>) {
    for (kind, [lo, hi]) in ranges {
        if !lo.is_finite() || !hi.is_finite() || lo >= hi {
            problems.push(format!(
                "{path}.{kind}: must be [low, high] with finite low < high, got [{lo}, {hi}]"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_kinds_add_to_and_replace_the_defaults() {
        let r = Ranges::new(&BTreeMap::from([
            ("pressure".to_string(), [0.0, 1.0]),
            ("flow".to_string(), [0.0, 50.0]),
        ]));
        assert_eq!(r.get("pressure"), Some([0.0, 1.0]));
        assert_eq!(r.get("flow"), Some([0.0, 50.0]));
        assert_eq!(r.get("gas_lel"), Some([-20.0, 200.0]));
        assert!(
            r.admits("generic", -1e30),
            "no range: any magnitude up to 1e30"
        );
        assert!(!r.admits("generic", 1e308));
        assert!(!r.admits("pressure", 1.5));
        assert!(r.admits("pressure", 1.0), "the bounds are inside");
        assert!(
            r.admits("pressure", 1.03),
            "NE 43: a saturated transmitter reads up to 3.125 % of the span past its top"
        );
        assert!(!r.admits("pressure", 1.04));
        assert!(!r.admits("gas_lel", -1e308));
    }

    #[test]
    fn a_bad_range_is_named() {
        let mut p = Vec::new();
        let bad = BTreeMap::from([
            ("a".to_string(), [1.0, 1.0]),
            ("b".to_string(), [f64::NEG_INFINITY, 0.0]),
            ("c".to_string(), [0.0, 1.0]),
        ]);
        validate(&bad, "input.ranges", &mut p);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("input.ranges.a:"), "{p:?}");
        assert!(p[1].starts_with("input.ranges.b:"), "{p:?}");
    }
}
