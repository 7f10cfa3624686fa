//! `[console]`: the operators' web console (issue 8). Off unless `enabled = true`.

use std::time::Duration;

use serde::Deserialize;

use crate::alert::Level;
use crate::regions::Regions;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// Where the console is served. Loopback by default: put a TLS proxy in front of it.
    pub addr: String,
    /// Durable log of operators' actions, keyed by alert_id; read from the start on boot.
    pub actions_topic: String,
    /// When true, reading (GET /api/...) also needs a token; EventSource cannot send
    /// headers, so GET routes then accept `?token=` as well (and only GET routes do).
    pub read_requires_token: bool,
    /// How long each level may wait for an acknowledgement (timeliness metrics).
    pub ack_limits: AckLimits,
    /// Bearer tokens, each of one command center.
    pub tokens: Vec<TokenConfig>,
    /// Closed episodes stay visible this long (wall time since they closed).
    #[serde(with = "humantime_serde")]
    pub closed_retention: Duration,
    /// At most this many open episodes are held; past it the least recently updated go.
    pub max_open: usize,
    /// The longest a point or site may be shelved or out of service in one request.
    #[serde(with = "humantime_serde")]
    pub max_shelve: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            addr: "127.0.0.1:9465".into(),
            actions_topic: "alert-actions".into(),
            read_requires_token: false,
            ack_limits: AckLimits::default(),
            tokens: Vec::new(),
            closed_retention: Duration::from_secs(24 * 3600),
            max_open: 10_000,
            max_shelve: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AckLimits {
    #[serde(with = "humantime_serde")]
    pub red: Duration,
    #[serde(with = "humantime_serde")]
    pub orange: Duration,
    #[serde(with = "humantime_serde")]
    pub yellow: Duration,
    #[serde(with = "humantime_serde")]
    pub blue: Duration,
}

impl Default for AckLimits {
    fn default() -> Self {
        Self {
            red: Duration::from_secs(5 * 60),
            orange: Duration::from_secs(15 * 60),
            yellow: Duration::from_secs(3600),
            blue: Duration::from_secs(4 * 3600),
        }
    }
}

impl AckLimits {
    pub fn of(&self, l: Level) -> Duration {
        match l {
            Level::Red => self.red,
            Level::Orange => self.orange,
            Level::Yellow => self.yellow,
            Level::Blue => self.blue,
        }
    }
}

/// One `[[console.tokens]]` entry. `Debug` never prints the token.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    /// The command center (city, county or township code) the token acts for.
    pub center: String,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("center", &self.center)
            .finish()
    }
}

impl ConsoleConfig {
    pub fn validate(&self, path: &str, regions: Option<&Regions>, problems: &mut Vec<String>) {
        if self.addr.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "{path}.addr: `{}` is not an address like 127.0.0.1:9465",
                self.addr
            ));
        }
        if self.actions_topic.trim().is_empty() {
            problems.push(format!("{path}.actions_topic: must not be empty"));
        }
        // Shelves live on the actions topic, whose default retention is 7 days: a longer
        // shelf would be lost by a restart after its record was deleted.
        if self.max_shelve.is_zero() || self.max_shelve > Duration::from_secs(7 * 86_400) {
            problems.push(format!("{path}.max_shelve: must be > 0 and <= 7d"));
        }
        if self.max_open == 0 {
            problems.push(format!("{path}.max_open: must be >= 1"));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.len() < 8 {
                problems.push(format!(
                    "{path}.tokens[{i}].token: must be at least 8 characters"
                ));
            }
            if self.tokens[..i].iter().any(|o| o.token == t.token) {
                problems.push(format!("{path}.tokens[{i}].token: duplicate"));
            }
            if let Some(r) = regions {
                if r.tier(&t.center).is_none() {
                    problems.push(format!(
                        "{path}.tokens[{i}].center: `{}` is not a command center of the region hierarchy",
                        t.center
                    ));
                }
            }
        }
    }
}
