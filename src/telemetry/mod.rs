//! Telemetry: every metric in [`metrics`], the HTTP endpoints in [`server`], log setup in
//! [`logging`].

pub mod logging;
pub mod metrics;
pub mod server;
