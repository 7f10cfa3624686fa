//! The region hierarchy (city -> county/district -> township/street) and resolution of a
//! region code carried by an event to the command centers above it. `parse.rs` reads and
//! checks the hierarchy and builds the lookup tables; this module owns the tables and
//! every lookup (`resolve`, names, codes, centers).
//!
//! Codes follow the Chinese administrative scheme: 6 digits for a county (`330502`), 9 for
//! a township (`330502001`). A 9-digit code that is not listed but starts with a known
//! county is accepted and routed to that county (the caller counts it); anything else is
//! unknown and the event carrying it is invalid.

mod parse;

use std::collections::HashMap;

pub use parse::{CityDef, CountyDef, RegionError, RegionsFile, TownshipDef};

/// Where a region code sits in the hierarchy (ordered lowest tier first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionLevel {
    Township,
    County,
    City,
}

/// One command center of the hierarchy (a region with its own center).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Center {
    pub code: String,
    pub name: String,
    pub tier: RegionLevel,
    /// The center above it; `None` for the city.
    pub parent: Option<String>,
}

/// A resolved region: indexes into the hierarchy, cheap to copy. Durable state stores the
/// indexes: a changed regions file means a fresh start for the state (see docs/STATE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegionRef {
    /// Index of the township, when the code named a listed one.
    pub township: Option<u32>,
    /// Index of the county; `None` only when the code is the city's.
    pub county: Option<u32>,
    /// The code was a 9-digit code under a known county that the hierarchy does not list.
    pub unlisted: bool,
}

/// The loaded hierarchy with lookup tables (built by [`Regions::new`], `parse.rs`).
#[derive(Debug, Clone)]
pub struct Regions {
    city: CityDef,
    counties: Vec<CountyDef>,
    townships: Vec<(String, String, u32)>, // code, name, county index
    by_code: HashMap<String, (RegionLevel, u32)>,
}

impl Regions {
    /// Resolves a code from an event; `None` when it lies under no known county.
    pub fn resolve(&self, code: &str) -> Option<RegionRef> {
        match self.by_code.get(code) {
            Some((RegionLevel::Township, i)) => Some(RegionRef {
                township: Some(*i),
                county: Some(self.townships[*i as usize].2),
                unlisted: false,
            }),
            Some((RegionLevel::County, i)) => Some(RegionRef {
                township: None,
                county: Some(*i),
                unlisted: false,
            }),
            Some((RegionLevel::City, _)) => Some(RegionRef {
                township: None,
                county: None,
                unlisted: false,
            }),
            None if is_digits(code, 9) => match self.by_code.get(&code[..6]) {
                Some((RegionLevel::County, i)) => Some(RegionRef {
                    township: None,
                    county: Some(*i),
                    unlisted: true,
                }),
                _ => None,
            },
            None => None,
        }
    }

    pub fn city_code(&self) -> &str {
        &self.city.code
    }

    pub fn city_name(&self) -> &str {
        &self.city.name
    }

    pub fn county_code(&self, r: RegionRef) -> Option<&str> {
        r.county.map(|i| self.counties[i as usize].code.as_str())
    }

    pub fn township_code(&self, r: RegionRef) -> Option<&str> {
        r.township.map(|i| self.townships[i as usize].0.as_str())
    }

    /// Human name of the most specific level known, e.g. `南浔镇, 南浔区`.
    pub fn display_name(&self, r: RegionRef) -> String {
        let county = r.county.map(|i| self.counties[i as usize].name.as_str());
        match (r.township, county) {
            (Some(t), Some(c)) => format!("{}, {c}", self.townships[t as usize].1),
            (None, Some(c)) => c.to_string(),
            _ => self.city.name.clone(),
        }
    }

    /// Every county code, in file order.
    pub fn county_codes(&self) -> impl Iterator<Item = &str> {
        self.counties.iter().map(|c| c.code.as_str())
    }

    /// Every listed township code, in file order.
    pub fn township_codes(&self) -> impl Iterator<Item = &str> {
        self.townships.iter().map(|t| t.0.as_str())
    }

    /// Every command center, city first, then each county followed by its townships:
    /// what the console offers to choose from.
    pub fn centers(&self) -> Vec<Center> {
        let mut v = vec![Center {
            code: self.city.code.clone(),
            name: self.city.name.clone(),
            tier: RegionLevel::City,
            parent: None,
        }];
        for (ci, c) in self.counties.iter().enumerate() {
            v.push(Center {
                code: c.code.clone(),
                name: c.name.clone(),
                tier: RegionLevel::County,
                parent: Some(self.city.code.clone()),
            });
            for t in self.townships.iter().filter(|t| t.2 as usize == ci) {
                v.push(Center {
                    code: t.0.clone(),
                    name: t.1.clone(),
                    tier: RegionLevel::Township,
                    parent: Some(c.code.clone()),
                });
            }
        }
        v
    }

    /// The tier of a listed center code.
    pub fn tier(&self, code: &str) -> Option<RegionLevel> {
        self.by_code.get(code).map(|(l, _)| *l)
    }

    /// Number of counties (used to size per-county state).
    pub fn county_count(&self) -> usize {
        self.counties.len()
    }
}

fn is_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
pub(crate) fn demo() -> Regions {
    let text = include_str!("../../config/regions.toml");
    Regions::new(toml::from_str(text).expect("demo regions parse")).expect("demo regions valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_spec_code() {
        let r = demo();
        let t = r.resolve("330502001").unwrap();
        assert_eq!(r.township_code(t), Some("330502001"));
        assert_eq!(r.county_code(t), Some("330502"));
        assert!(!t.unlisted);
        for code in [
            "330503101",
            "330521102",
            "330502",
            "330503",
            "330521",
            "330522",
            "330523",
        ] {
            assert!(r.resolve(code).is_some(), "{code}");
        }
        assert_eq!(r.city_code(), "330500");
    }

    #[test]
    fn unlisted_township_routes_to_its_county() {
        let r = demo();
        let t = r.resolve("330503999").unwrap();
        assert!(t.unlisted);
        assert_eq!(r.township_code(t), None);
        assert_eq!(r.county_code(t), Some("330503"));
    }

    #[test]
    fn codes_under_no_county_are_unknown() {
        let r = demo();
        assert!(r.resolve("110101001").is_none());
        assert!(r.resolve("33050").is_none());
        assert!(r.resolve("abc").is_none());
    }

    #[test]
    fn bad_hierarchy_lists_every_problem() {
        let def: RegionsFile = toml::from_str(
            r#"
            [city]
            code = "3305"
            name = "x"
            [[county]]
            code = "330502"
            name = "a"
            [[county.township]]
            code = "330503001"
            name = "t"
        "#,
        )
        .unwrap();
        let e = Regions::new(def).unwrap_err().to_string();
        assert!(e.contains("city.code"), "{e}");
        assert!(e.contains("county[0].township[0].code"), "{e}");
    }
}
