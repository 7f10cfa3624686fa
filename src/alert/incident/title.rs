//! What an incident message says: its one-line title, a member's evidence in one line,
//! and the union of routes.

use super::Member;
use crate::alert::Alert;
use crate::signal::{kind_label, Evidence};

/// What a member says happened, from its detector and evidence.
pub(super) fn trend(a: &Alert) -> Option<String> {
    let t = match a.detector.as_str() {
        "offline" => "offline",
        "flatline" => "stuck",
        "sensor_fault" => "faulty",
        _ if a.stream != "sensors" => return None,
        _ if a.evidence.observed >= a.evidence.expected => "rising",
        _ => "falling",
    };
    Some(t.to_string())
}

/// `observed 18.2 vs expected 3.1 (score 7.4, threshold 4, 5m)`.
pub(super) fn evidence_line(e: &Evidence) -> String {
    format!(
        "observed {} vs expected {} (score {}, threshold {}, {})",
        num(e.observed),
        num(e.expected),
        num(e.score),
        num(e.threshold),
        e.window
    )
}

/// At most 3 significant decimals, no trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The incident's title: for a site, what its sensors do
/// (`Gas LEL and H2S rising, pressure falling at SITE-X (3 sensors, 5 detectors)`);
/// otherwise the strongest member's title with how many alerts stand behind it.
pub(super) fn title(stream: &str, site: Option<&str>, members: &[Member]) -> String {
    match (stream, site) {
        ("sensors", Some(site)) => site_title(site, members),
        _ => other_title(members),
    }
}

fn site_title(site: &str, members: &[Member]) -> String {
    // (trend, kinds) in the order members joined.
    let mut phrases: Vec<(&str, Vec<&str>)> = Vec::new();
    for m in members {
        let (Some(kind), Some(trend)) = (m.kind.as_deref(), m.trend.as_deref()) else {
            continue;
        };
        match phrases.iter_mut().find(|(t, _)| *t == trend) {
            Some((_, kinds)) if !kinds.contains(&kind) => kinds.push(kind),
            Some(_) => {}
            None => phrases.push((trend, vec![kind])),
        }
    }
    let mut what = phrases
        .iter()
        .map(|(trend, kinds)| {
            let labels: Vec<String> = kinds.iter().map(|k| kind_label(k)).collect();
            format!("{} {trend}", and_list(&labels))
        })
        .collect::<Vec<_>>()
        .join(", ");
    if what.is_empty() {
        what = "Sensors anomalous together".into();
    } else {
        // Only the first word keeps its capital ("Gas LEL rising, temperature rising").
        what = lower_after_first(&what);
    }
    let sensors = distinct(members.iter().filter_map(|m| m.sensor_id.as_deref()));
    let detectors = distinct(members.iter().map(|m| m.detector.as_str()));
    let mut counts = Vec::new();
    if sensors > 0 {
        counts.push(plural(sensors, "sensor"));
    }
    counts.push(plural(detectors, "detector"));
    format!("{what} at {site} ({})", counts.join(", "))
}

fn other_title(members: &[Member]) -> String {
    let lead = members
        .iter()
        .filter(|m| m.status == crate::alert::Status::Firing)
        .max_by_key(|m| m.level)
        .or_else(|| members.iter().max_by_key(|m| m.level));
    let Some(lead) = lead else {
        return String::new();
    };
    match members.len() {
        1 => lead.title.clone(),
        n => format!("{} (+{})", lead.title, plural(n - 1, "related alert")),
    }
}

fn distinct<'a>(it: impl Iterator<Item = &'a str>) -> usize {
    let mut v: Vec<&str> = it.collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Lower-cases the first letter of every kind label but the first ("Temperature" inside
/// a sentence reads "temperature"); acronyms (LEL, H2S) stay.
fn lower_after_first(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut first = true;
    for word in s.split(' ') {
        if !out.is_empty() {
            out.push(' ');
        }
        let is_cap_word = word.chars().next().is_some_and(|c| c.is_uppercase())
            && word.chars().skip(1).all(|c| !c.is_uppercase());
        if !first && is_cap_word {
            out.extend(word.chars().next().into_iter().flat_map(char::to_lowercase));
            out.push_str(&word[word.chars().next().map_or(0, char::len_utf8)..]);
        } else {
            out.push_str(word);
        }
        first = false;
    }
    out
}

/// Adds `route`'s codes to `into`, keeping it lowest tier first (townships, counties,
/// the city).
pub(super) fn merge_route(into: &mut Vec<String>, route: &[String], city: &str) {
    for code in route {
        if !into.contains(code) {
            into.push(code.clone());
        }
    }
    let rank = |c: &String| match c.len() {
        9 => 0,
        _ if c == city => 2,
        _ => 1,
    };
    // By code within a tier: the same members give the same route in any order.
    into.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Level, Status};

    fn m(sensor: &str, kind: &str, detector: &str, trend: &str) -> Member {
        Member {
            alert_id: format!("{detector}:{sensor}"),
            detector: detector.into(),
            level: Level::Yellow,
            status: Status::Firing,
            title: "t".into(),
            evidence: String::new(),
            score: 1.0,
            sensor_id: Some(sensor.into()),
            kind: Some(kind.into()),
            trend: Some(trend.into()),
        }
    }

    #[test]
    fn a_site_title_says_what_its_sensors_do() {
        let members = vec![
            m("G", "gas_lel", "threshold", "rising"),
            m("G", "gas_lel", "ewma_z", "rising"),
            m("H", "h2s_ppm", "ewma_z", "rising"),
            m("T", "temperature", "cusum", "rising"),
            m("P", "pressure", "robust_z", "falling"),
        ];
        assert_eq!(
            title("sensors", Some("SITE-1"), &members),
            "Gas LEL, H2S and temperature rising, pressure falling at SITE-1 \
             (4 sensors, 4 detectors)"
        );
        assert_eq!(
            title("sensors", Some("SITE-1"), &members[..1]),
            "Gas LEL rising at SITE-1 (1 sensor, 1 detector)"
        );
    }

    #[test]
    fn routes_merge_lowest_tier_first() {
        let mut r = vec!["330503101".to_string(), "330503".to_string()];
        merge_route(
            &mut r,
            &["330503102".into(), "330503".into(), "330500".into()],
            "330500",
        );
        assert_eq!(r, ["330503101", "330503102", "330503", "330500"]);
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(num(18.2), "18.2");
        assert_eq!(num(4.0), "4");
        assert_eq!(num(0.000_01), "0");
        assert_eq!(num(-0.25), "-0.25");
    }
}
