//! Which episodes belong together: an alert's subject group.
//!
//! - sensors: the site (`site_id`): a site's sensors and its `site_correlation` are one
//!   event;
//! - fraud: the suspect (`suspect_phone`, `suspect_account` or `suspect_url`): a suspect's
//!   burst and spread are one case;
//! - region alerts (`rate_spike` on incidents and on fraud): the region. A township is
//!   its own group; a county alert joins the most recently active open incident of one
//!   of its townships (else it opens the county's incident), and from then on the other
//!   townships of the county join that incident too while it is open. The city is its
//!   own group. Under scale-out a county and its townships may live in different tasks
//!   (their rate_spike keys route apart), and then each groups on its own.
//! - anything else is a group of its own alert (an incident of one episode).

use crate::alert::Alert;
use crate::regions::Regions;

/// Where a region code sits in the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tier {
    /// A township, with its county's code.
    Township {
        county: String,
    },
    County,
    City,
}

/// An alert's group: its index key and the subject fields the incident shows.
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// `<stream>:<kind>:<key>`, e.g. `sensors:site:SITE-330503-0042`: unique across
    /// streams, and the incident id's prefix.
    pub key: String,
    pub subject: serde_json::Map<String, serde_json::Value>,
    /// Region groups only.
    pub tier: Option<Tier>,
}

impl Group {
    /// The key of `county`'s group in `stream`.
    pub fn county_key(stream: &str, county: &str) -> String {
        format!("{stream}:region:{county}")
    }
}

fn text<'a>(a: &'a Alert, field: &str) -> Option<&'a str> {
    a.subject.get(field).and_then(|v| v.as_str())
}

/// The group `a` belongs to.
pub(super) fn group_of(a: &Alert, regions: &Regions) -> Group {
    let mut subject = serde_json::Map::new();
    let mut copy = |field: &str| {
        if let Some(v) = a.subject.get(field) {
            subject.insert(field.to_string(), v.clone());
        }
    };
    if a.stream == "sensors" {
        if let Some(site) = text(a, "site_id") {
            copy("site_id");
            copy("region");
            // A registered site's name and hazard grade (src/registry) travel with it.
            copy("site_name");
            copy("hazard_grade");
            return Group {
                key: format!("sensors:site:{site}"),
                subject,
                tier: None,
            };
        }
    }
    for (field, kind) in [
        ("suspect_phone", "phone"),
        ("suspect_account", "account"),
        ("suspect_url", "url"),
    ] {
        if let Some(v) = text(a, field) {
            copy(field);
            return Group {
                key: format!("{}:suspect:{kind}:{v}", a.stream),
                subject,
                tier: None,
            };
        }
    }
    if a.stream != "sensors" {
        if let Some(code) = text(a, "region") {
            copy("region");
            return Group {
                key: format!("{}:region:{code}", a.stream),
                subject,
                tier: Some(tier(code, regions)),
            };
        }
    }
    Group {
        key: format!("{}:alert:{}", a.stream, a.alert_id),
        subject: a.subject.clone(),
        tier: None,
    }
}

/// A 9-digit code is a township under the county of its first 6 digits; the city's code
/// is the city; any other code a county.
fn tier(code: &str, regions: &Regions) -> Tier {
    if code.len() == 9 {
        Tier::Township {
            county: code[..6].to_string(),
        }
    } else if code == regions.city_code() {
        Tier::City
    } else {
        Tier::County
    }
}
