//! Reading a region hierarchy: the `regions.toml` format (also accepted inline as
//! `[regions]`), its checks (every problem listed, not just the first) and the lookup
//! tables [`Regions`] answers from.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{is_digits, RegionLevel, Regions};

/// One command center's region as written in `regions.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CityDef {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub name_en: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CountyDef {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub name_en: Option<String>,
    #[serde(default)]
    pub township: Vec<TownshipDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TownshipDef {
    pub code: String,
    pub name: String,
}

/// The file format of `config/regions.toml` (also accepted inline as `[regions]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionsFile {
    pub city: CityDef,
    #[serde(default)]
    pub county: Vec<CountyDef>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegionError {
    #[error("region hierarchy: {0}")]
    Invalid(String),
}

impl Regions {
    pub fn from_file(path: &Path) -> Result<Self, RegionError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RegionError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let def: RegionsFile = toml::from_str(&text)
            .map_err(|e| RegionError::Invalid(format!("{}: {e}", path.display())))?;
        Self::new(def)
    }

    /// Builds the lookup tables; every problem with the hierarchy is listed.
    pub fn new(def: RegionsFile) -> Result<Self, RegionError> {
        let mut problems = Vec::new();
        let mut by_code = HashMap::new();
        let mut townships = Vec::new();
        if !is_digits(&def.city.code, 6) {
            problems.push(format!("city.code `{}`: must be 6 digits", def.city.code));
        }
        by_code.insert(def.city.code.clone(), (RegionLevel::City, 0));
        for (ci, c) in def.county.iter().enumerate() {
            if !is_digits(&c.code, 6) {
                problems.push(format!("county[{ci}].code `{}`: must be 6 digits", c.code));
            }
            if by_code
                .insert(c.code.clone(), (RegionLevel::County, ci as u32))
                .is_some()
            {
                problems.push(format!("county[{ci}].code `{}`: duplicate", c.code));
            }
            for (ti, t) in c.township.iter().enumerate() {
                if !is_digits(&t.code, 9) || !t.code.starts_with(&c.code) {
                    problems.push(format!(
                        "county[{ci}].township[{ti}].code `{}`: must be 9 digits starting with {}",
                        t.code, c.code
                    ));
                }
                let idx = townships.len() as u32;
                if by_code
                    .insert(t.code.clone(), (RegionLevel::Township, idx))
                    .is_some()
                {
                    problems.push(format!(
                        "county[{ci}].township[{ti}].code `{}`: duplicate",
                        t.code
                    ));
                }
                townships.push((t.code.clone(), t.name.clone(), ci as u32));
            }
        }
        if def.county.is_empty() {
            problems.push("county: at least one county is required".into());
        }
        if !problems.is_empty() {
            return Err(RegionError::Invalid(problems.join("; ")));
        }
        Ok(Self {
            city: def.city,
            counties: def.county,
            townships,
            by_code,
        })
    }
}
