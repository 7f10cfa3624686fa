//! Which command centers see an alert: a policy per level over the region hierarchy.

use serde::{Deserialize, Serialize};

use super::Level;
use crate::regions::{RegionRef, Regions};

/// A tier of command center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Township,
    County,
    City,
}

/// Per level, the tiers that must see it. Defaults: blue stays in the township, yellow
/// goes to the county too, orange and red reach the city.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutePolicy {
    pub blue: Vec<Scope>,
    pub yellow: Vec<Scope>,
    pub orange: Vec<Scope>,
    pub red: Vec<Scope>,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        use Scope::*;
        Self {
            blue: vec![Township],
            yellow: vec![Township, County],
            orange: vec![Township, County, City],
            red: vec![Township, County, City],
        }
    }
}

impl RoutePolicy {
    pub fn validate(&self, path: &str, problems: &mut Vec<String>) {
        for (l, v) in [
            ("blue", &self.blue),
            ("yellow", &self.yellow),
            ("orange", &self.orange),
            ("red", &self.red),
        ] {
            if v.is_empty() {
                problems.push(format!(
                    "{path}.{l}: must name at least one of township, county, city"
                ));
            }
        }
    }

    /// The centers' codes, lowest first. A tier the region lacks (an event that named only
    /// its county has no township) passes to the next tier up, so nobody is skipped.
    pub fn route(&self, level: Level, region: RegionRef, regions: &Regions) -> Vec<String> {
        let scopes = match level {
            Level::Blue => &self.blue,
            Level::Yellow => &self.yellow,
            Level::Orange => &self.orange,
            Level::Red => &self.red,
        };
        Self::route_scopes(scopes, region, regions)
    }

    /// [`Self::route`] for `detector`'s episodes: a maintenance detector's
    /// ([`crate::signal::is_maintenance`]) stay with the township whatever their level.
    pub fn route_of(
        &self,
        detector: &str,
        level: Level,
        region: RegionRef,
        regions: &Regions,
    ) -> Vec<String> {
        if crate::signal::is_maintenance(detector) {
            Self::route_scopes(&[Scope::Township], region, regions)
        } else {
            self.route(level, region, regions)
        }
    }

    fn route_scopes(scopes: &[Scope], region: RegionRef, regions: &Regions) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(3);
        let mut push = |c: Option<&str>| {
            if let Some(c) = c {
                if !out.iter().any(|x| x == c) {
                    out.push(c.to_string());
                }
            }
        };
        let mut sorted = scopes.to_vec();
        sorted.sort();
        for s in sorted {
            match s {
                Scope::Township => push(
                    regions
                        .township_code(region)
                        .or_else(|| regions.county_code(region))
                        .or(Some(regions.city_code())),
                ),
                Scope::County => push(regions.county_code(region).or(Some(regions.city_code()))),
                Scope::City => push(Some(regions.city_code())),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_follow_the_levels() {
        let r = crate::regions::demo();
        let p = RoutePolicy::default();
        let t = r.resolve("330503101").unwrap();
        assert_eq!(p.route(Level::Blue, t, &r), vec!["330503101"]);
        assert_eq!(p.route(Level::Yellow, t, &r), vec!["330503101", "330503"]);
        assert_eq!(
            p.route(Level::Orange, t, &r),
            vec!["330503101", "330503", "330500"]
        );
        // A county-level event: its township tier falls to the county.
        let c = r.resolve("330521").unwrap();
        assert_eq!(p.route(Level::Blue, c, &r), vec!["330521"]);
        assert_eq!(p.route(Level::Red, c, &r), vec!["330521", "330500"]);
    }

    #[test]
    fn maintenance_stays_with_the_township() {
        let r = crate::regions::demo();
        let p = RoutePolicy::default();
        let t = r.resolve("330503101").unwrap();
        assert_eq!(
            p.route_of("sensor_fault", Level::Yellow, t, &r),
            vec!["330503101"]
        );
        assert_eq!(
            p.route_of("threshold", Level::Yellow, t, &r),
            vec!["330503101", "330503"]
        );
    }
}
