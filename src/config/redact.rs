//! Keeps secrets out of logs and messages.
//!
//! `[kafka.properties]` passes librdkafka properties through as they are, passwords
//! included. Whatever prints them (a `Debug` of the config, the startup log line,
//! `check-config`, a config error) goes through this module: the value of a secret key is
//! replaced by [`REDACTED`], the key itself stays visible.

use std::collections::BTreeMap;
use std::fmt;

/// What a secret value prints as.
pub const REDACTED: &str = "<redacted>";

/// Fragments of property names whose values are secrets: librdkafka's `sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`, `sasl.oauthbearer.*`
/// (client secret, token config), and any future `*secret*`, `*token*` or `*credential*`.
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "secret",
    "sasl.oauthbearer",
    "sasl.jaas",
    "ssl.key.pem",
    "ssl_key",
    "token",
    "credential",
];

/// Whether the value of property `key` is a secret (case-insensitive).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_FRAGMENTS.iter().any(|f| k.contains(f))
}

/// `value`, or [`REDACTED`] when `key` names a secret.
pub fn redact<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        REDACTED
    } else {
        value
    }
}

/// Prints properties as `key=value` pairs (Display) or a map (Debug), secrets redacted.
pub struct Properties<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Display for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={}", redact(k, v))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, redact(k, v))))
            .finish()
    }
}

/// Whether a config path names a secret: a secret property
/// (`kafka.properties.sasl.password`) or a field such as `console.tokens[0].token`.
pub fn is_secret_path(path: &str) -> bool {
    match path.split_once("properties.") {
        Some((_, key)) => is_secret(key),
        None => is_secret(path.rsplit('.').next().unwrap_or(path)),
    }
}

/// `text` with every `quoted` part replaced, for an error about a secret path: serde quotes
/// the value (``invalid type: integer `12345`, expected a string``).
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            out.push('`');
            out.push_str(REDACTED);
            out.push('`');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// A TOML parse error with the value of a secret key hidden: the error quotes the source
/// line (`3 | "sasl.password" = "abc`), so what follows a secret key's `=` goes.
pub fn toml_error(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match line.find('=') {
            Some(eq) if is_secret(&line[..eq]) => {
                out.push_str(&line[..=eq]);
                out.push(' ');
                out.push_str(REDACTED);
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "SASL.PASSWORD",
        ] {
            assert!(is_secret(k), "{k}");
        }
        for k in [
            "security.protocol",
            "sasl.mechanisms",
            "sasl.username",
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
        ] {
            assert!(!is_secret(k), "{k}");
        }
    }

    #[test]
    fn properties_print_without_secret_values() {
        let p: BTreeMap<String, String> = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "riskstream"),
            ("sasl.password", "hunter2-pw"),
            ("sasl.oauthbearer.client.secret", "oauth-s3cret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for text in [
            format!("{}", Properties(&p)),
            format!("{:?}", Properties(&p)),
        ] {
            assert!(!text.contains("hunter2-pw"), "{text}");
            assert!(!text.contains("oauth-s3cret"), "{text}");
            assert!(
                text.contains("SASL_SSL") && text.contains("riskstream"),
                "{text}"
            );
            assert!(
                text.contains("sasl.password") && text.contains(REDACTED),
                "{text}"
            );
        }
    }

    #[test]
    fn problems_hide_secret_values() {
        let toml_error_text = "config is not valid TOML: TOML parse error at line 3, column 19\n  |\n3 | \"sasl.password\" = \"hunter2-pw\n  |                   ^\ninvalid basic string\n";
        let r = toml_error(toml_error_text);
        assert!(!r.contains("hunter2-pw"), "{r}");
        assert!(r.contains("line 3") && r.contains("sasl.password"), "{r}");
        let other = "x\n4 | brokers = \"a:1\"\n";
        assert_eq!(toml_error(other), other);

        for path in [
            "kafka.properties.sasl.password",
            "kafka.properties.sasl.oauthbearer.config",
            "console.tokens[0].token",
        ] {
            assert!(is_secret_path(path), "{path}");
        }
        for path in [
            "kafka.properties.sasl.username",
            "console.tokens[0].center",
            "kafka.brokers",
        ] {
            assert!(!is_secret_path(path), "{path}");
        }
        let r = quoted("invalid type: integer `12345`, expected a string");
        assert_eq!(r, "invalid type: integer `<redacted>`, expected a string");
    }
}
