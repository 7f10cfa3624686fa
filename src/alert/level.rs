//! The score bands that map detector scores onto the four-colour scale ([`Level`]).

use serde::{Deserialize, Serialize};

pub use crate::signal::Level;

/// Lower score bounds of each level; a score below `blue` raises no alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelBands {
    pub blue: f64,
    pub yellow: f64,
    pub orange: f64,
    pub red: f64,
}

impl Default for LevelBands {
    /// 0.5 is every detector's firing point; on the z scale with k = 5 these bands are
    /// z >= 5 blue, >= 7.6 yellow, >= 11.9 orange, >= 21.8 red.
    fn default() -> Self {
        Self {
            blue: 0.5,
            yellow: 0.7,
            orange: 0.85,
            red: 0.95,
        }
    }
}

impl LevelBands {
    pub fn level(&self, score: f64) -> Option<Level> {
        if score >= self.red {
            Some(Level::Red)
        } else if score >= self.orange {
            Some(Level::Orange)
        } else if score >= self.yellow {
            Some(Level::Yellow)
        } else if score >= self.blue {
            Some(Level::Blue)
        } else {
            None
        }
    }

    pub fn validate(&self, path: &str, problems: &mut Vec<String>) {
        let b = [self.blue, self.yellow, self.orange, self.red];
        if b.iter().any(|x| !(0.0..=1.0).contains(x)) {
            problems.push(format!("{path}: every band must be within [0, 1]"));
        }
        if !(self.blue <= self.yellow && self.yellow <= self.orange && self.orange <= self.red) {
            problems.push(format!(
                "{path}: bands must rise blue <= yellow <= orange <= red"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_bands() {
        assert!(Level::Blue < Level::Yellow && Level::Orange < Level::Red);
        assert_eq!(Level::Red.raised(), Level::Red);
        let b = LevelBands::default();
        assert_eq!(b.level(0.49), None);
        assert_eq!(b.level(0.5), Some(Level::Blue));
        assert_eq!(b.level(0.9), Some(Level::Orange));
        assert_eq!(b.level(1.0), Some(Level::Red));
        assert_eq!(serde_json::to_string(&Level::Orange).unwrap(), "\"orange\"");
    }
}
