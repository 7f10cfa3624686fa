//! `riskstream check-config FILE`: validates a config, prints every problem with its path
//! (exit 2 on any) or a one-line summary; secret Kafka property values are redacted.

use std::path::PathBuf;
use std::process::ExitCode;

use riskstream::config;

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
}

pub fn main(Args { file }: Args) -> ExitCode {
    let c = match super::load(&file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let d = c.detectors.incidents.len() + c.detectors.sensors.len() + c.detectors.fraud.len();
    println!(
        "{}: ok ({d} detectors, {} sinks, {} counties, {} monitoring points in the file)",
        file.display(),
        c.sinks.len(),
        c.regions.county_count(),
        c.points.len()
    );
    // What reaches librdkafka besides the brokers; secret values redacted.
    if !c.kafka.properties.is_empty() {
        println!(
            "  kafka.properties: {}",
            config::redact::Properties(&c.kafka.properties)
        );
    }
    ExitCode::SUCCESS
}
