//! Logs: `tracing` with key/value fields; human-readable by default, JSON on request.
//! Level from `RUST_LOG` (default `info`). Logs go to stderr so stdout stays data.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The default filter: our info lines; from rdkafka and librdkafka (target `librdkafka`)
/// only warnings and errors, e.g. a failed SASL authentication or TLS handshake.
pub const DEFAULT_FILTER: &str = "info,rdkafka=warn,librdkafka=warn";

pub fn init(format: LogFormat) {
    init_with(format, DEFAULT_FILTER);
}

/// Like [`init`] with another default filter (when `RUST_LOG` is unset), for commands whose
/// per-alert info lines would drown their output (`backtest`).
pub fn init_with(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().flatten_event(true).try_init(),
    };
}
