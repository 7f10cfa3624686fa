//! Normalized anomaly scores in [0, 1], shared by all detectors so that 0.5 always means
//! "exactly at the firing threshold" and scores of different detectors compare.

/// `x > 0`, false for NaN: config checks reject NaN with the same test.
pub fn positive(x: f64) -> bool {
    x > 0.0
}

/// A statistic `s >= 0` against its threshold `t > 0`: `s² / (s² + t²)`.
/// 0 at s = 0, 0.5 at s = t, towards 1 as s grows; strictly increasing in s.
pub fn from_ratio(s: f64, t: f64) -> f64 {
    if !positive(s) || !positive(t) {
        return 0.0;
    }
    if s.is_infinite() {
        return 1.0;
    }
    let r = t / s;
    1.0 / (1.0 + r * r)
}

/// A p-value against the significance level `alpha`: with `l = -ln p`, `la = -ln alpha`,
/// `l / (l + la)`: 0 at p = 1, 0.5 at p = alpha, towards 1 as p -> 0.
pub fn from_p_value(p: f64, alpha: f64) -> f64 {
    if p.is_nan() || !(alpha > 0.0 && alpha < 1.0) {
        return 0.0;
    }
    let p = p.clamp(f64::MIN_POSITIVE, 1.0);
    let l = -p.ln();
    let la = -alpha.ln();
    l / (l + la)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn anchors() {
        assert_eq!(from_ratio(0.0, 4.0), 0.0);
        assert!((from_ratio(4.0, 4.0) - 0.5).abs() < 1e-12);
        assert!((from_ratio(8.0, 4.0) - 0.8).abs() < 1e-12);
        assert!((from_p_value(1e-4, 1e-4) - 0.5).abs() < 1e-12);
        assert_eq!(from_p_value(1.0, 1e-4), 0.0);
        assert_eq!(from_ratio(f64::NAN, 1.0), 0.0);
    }

    proptest! {
        #[test]
        fn ratio_in_unit_interval_and_monotone(a in 0.0f64..1e6, b in 0.0f64..1e6, t in 1e-3f64..1e3) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (x, y) = (from_ratio(lo, t), from_ratio(hi, t));
            prop_assert!((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y));
            prop_assert!(x <= y);
        }

        #[test]
        fn p_value_in_unit_interval_and_monotone(p in 0.0f64..=1.0, q in 0.0f64..=1.0, alpha in 1e-9f64..0.5) {
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            let (sl, sh) = (from_p_value(lo, alpha), from_p_value(hi, alpha));
            prop_assert!((0.0..=1.0).contains(&sl) && (0.0..=1.0).contains(&sh));
            prop_assert!(sl >= sh, "smaller p must score higher");
        }
    }
}
