//! Monitoring points (SPEC "Monitoring points"): each registered sensor's name, site
//! name, hazard grade, measuring range and its own alarm limits, from a file and the
//! compacted `sensor-registry` topic ([`topic`]).
//!
//! [`Registry`] is the one index the decoder consults, shared by every clone of the
//! config: one hash lookup per reading, and the reading carries the `Arc<Point>` it
//! found to the detectors, so no detector looks it up again or copies its strings.
//! Updates replace or remove one entry in place (a tombstone removes), so a change is
//! seen by the next reading decoded after it, without a restart and without touching
//! detector state.

mod point;
pub mod topic;

use std::path::Path;
use std::sync::{Arc, RwLock};

pub use point::{LimitLevels, Limits, Point};

/// A point file that cannot be used: every problem, each with its line and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct RegistryError {
    pub problems: Vec<String>,
}

type Index = hashbrown::HashMap<Box<str>, Arc<Point>, ahash::RandomState>;

/// The points in force, by `sensor_id`.
#[derive(Default)]
pub struct Registry {
    points: RwLock<Index>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("points", &self.len())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding `points` (later ones replace earlier ones of the same id).
    pub fn with_points(points: impl IntoIterator<Item = Point>) -> Self {
        let r = Self::new();
        r.extend(points);
        r
    }

    /// The point registered as `sensor_id`, if any. O(1).
    pub fn get(&self, sensor_id: &str) -> Option<Arc<Point>> {
        self.read().get(sensor_id).cloned()
    }

    /// Adds or replaces a point.
    pub fn upsert(&self, p: Point) {
        let key: Box<str> = p.sensor_id.as_str().into();
        self.write().insert(key, Arc::new(p));
    }

    /// Adds or replaces each point, under one lock.
    pub fn extend(&self, points: impl IntoIterator<Item = Point>) {
        let mut m = self.write();
        for p in points {
            m.insert(p.sensor_id.as_str().into(), Arc::new(p));
        }
    }

    /// Removes a point (a tombstone); true if it was registered.
    pub fn remove(&self, sensor_id: &str) -> bool {
        self.write().remove(sensor_id).is_some()
    }

    /// The kinds of the points registered at `site_id` (a scan: for the console's rare
    /// shelving requests, never per reading).
    pub fn kinds_at_site(&self, site_id: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .read()
            .values()
            .filter(|p| p.site_id.as_deref() == Some(site_id))
            .filter_map(|p| p.kind.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one record of the registry topic: a valid point replaces the one under
    /// `key`, a tombstone (`None`) removes it. A record that is not a valid point, or
    /// whose `sensor_id` is not its key, changes nothing (the previous version stays in
    /// force: a bad edit must not drop a point's limits).
    pub fn apply(&self, key: &str, value: Option<&[u8]>) -> Result<Applied, RegistryError> {
        let Some(bytes) = value else {
            return Ok(if self.remove(key) {
                Applied::Removed
            } else {
                Applied::Unchanged
            });
        };
        let p = Point::parse(bytes).map_err(|problems| RegistryError { problems })?;
        if p.sensor_id != key {
            return Err(RegistryError {
                problems: vec![format!(
                    "sensor_id: `{}` is not the record's key `{key}`",
                    point::clip(&p.sensor_id)
                )],
            });
        }
        self.upsert(p);
        Ok(Applied::Upserted)
    }

    // A poisoned lock only means a writer panicked between two map operations, each of
    // which leaves the map whole: the index is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.points.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.points.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one topic record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Upserted,
    Removed,
    /// A tombstone of a point that was not registered.
    Unchanged,
}

/// Reads a point file: one JSON object per line (blank lines skipped). Every bad line
/// is reported, each problem as `<file>:<line>: <field>: <what>`.
pub fn load_file(path: &Path) -> Result<Vec<Point>, RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|e| RegistryError {
        problems: vec![format!("{}: cannot read: {e}", path.display())],
    })?;
    parse_lines(&text, &path.display().to_string())
}

/// [`load_file`] on a text already read; `name` prefixes each problem.
pub fn parse_lines(text: &str, name: &str) -> Result<Vec<Point>, RegistryError> {
    let mut points = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match Point::parse(line.as_bytes()) {
            Ok(p) => points.push(p),
            Err(ps) => problems.extend(ps.into_iter().map(|p| format!("{name}:{}: {p}", i + 1))),
        }
    }
    if problems.is_empty() {
        Ok(points)
    } else {
        Err(RegistryError { problems })
    }
}

#[cfg(test)]
mod tests;
