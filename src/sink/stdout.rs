//! `stdout` sink: one alert per line as NDJSON; what `replay` uses by default. Incident
//! messages are lines too, told apart by their `incident_id` key (alerts lead with
//! `alert_id`) or, with `incidents = false`, left out. A line is
//! written before the ack resolves, so "acknowledged" means "handed to the OS".

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{parse_streams, Ack, Filter, Sink, SinkCtx, SinkError, SinkSpec};
use crate::alert::{Alert, Incident, Level};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default)]
    pub min_level: Option<Level>,
    /// Print incident messages as well.
    #[serde(default = "yes")]
    pub incidents: bool,
}

fn yes() -> bool {
    true
}

impl Default for StdoutSinkConfig {
    fn default() -> Self {
        Self {
            streams: Vec::new(),
            min_level: None,
            incidents: true,
        }
    }
}

impl SinkSpec for StdoutSinkConfig {
    const TYPE: &'static str = "stdout";

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        parse_streams(&self.streams, path, problems);
    }

    fn build(&self, name: &str, _ctx: &SinkCtx) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(Arc::new(StdoutSink {
            name: name.to_string(),
            filter: Filter {
                streams: parse_streams(&self.streams, "", &mut Vec::new()),
                min_level: self.min_level,
            },
            out: Mutex::new(std::io::BufWriter::new(std::io::stdout())),
            incidents: self.incidents,
        }))
    }
}

pub struct StdoutSink {
    name: String,
    filter: Filter,
    out: Mutex<std::io::BufWriter<std::io::Stdout>>,
    incidents: bool,
}

impl StdoutSink {
    fn line(&self, json: &[u8]) -> Result<Ack, SinkError> {
        let mut w = self.out.lock().expect("stdout lock");
        let r = w.write_all(json).and_then(|_| w.write_all(b"\n"));
        let res = r.map_err(|e| SinkError::Delivery {
            sink: self.name.clone(),
            retryable: false,
            message: e.to_string(),
        });
        Ok(Box::pin(async move { res }))
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> &Filter {
        &self.filter
    }

    fn send(&self, _alert: &Alert, json: &[u8]) -> Result<Ack, SinkError> {
        self.line(json)
    }

    fn takes_incidents(&self) -> bool {
        self.incidents
    }

    fn send_incident(&self, _incident: &Incident, json: &[u8]) -> Result<Ack, SinkError> {
        self.line(json)
    }

    fn flush(&self, _timeout: std::time::Duration) {
        let _ = self.out.lock().expect("stdout lock").flush();
    }
}
