//! An in-memory sink that keeps every alert and incident message it is sent, in order: for the backtest and
//! tests, which need the alerts of a real pipeline run without a broker. Not a `[sinks.*]`
//! type (nothing to configure); built directly. Acks resolve at once. Memory grows with
//! the number of alert messages, which is what its users want to read.

use std::sync::{Arc, Mutex};

use super::{Ack, Filter, Sink, SinkError};
use crate::alert::{Alert, Incident};

#[derive(Default)]
pub struct CollectSink {
    filter: Filter,
    alerts: Arc<Mutex<Vec<Alert>>>,
    incidents: Arc<Mutex<Vec<Incident>>>,
}

impl CollectSink {
    /// The sink and a handle to read what it collected.
    pub fn new() -> (Arc<Self>, Arc<Mutex<Vec<Alert>>>) {
        let s = Arc::new(Self::default());
        let h = s.alerts.clone();
        (s, h)
    }

    /// A handle to the incident messages it collects.
    pub fn incidents(&self) -> Arc<Mutex<Vec<Incident>>> {
        self.incidents.clone()
    }
}

impl Sink for CollectSink {
    fn name(&self) -> &str {
        "collect"
    }

    fn filter(&self) -> &Filter {
        &self.filter
    }

    fn send(&self, alert: &Alert, _json: &[u8]) -> Result<Ack, SinkError> {
        self.alerts
            .lock()
            .expect("collect lock")
            .push(alert.clone());
        Ok(Box::pin(async { Ok(()) }))
    }

    fn takes_incidents(&self) -> bool {
        true
    }

    fn send_incident(&self, incident: &Incident, _json: &[u8]) -> Result<Ack, SinkError> {
        self.incidents
            .lock()
            .expect("collect lock")
            .push(incident.clone());
        Ok(Box::pin(async { Ok(()) }))
    }
}
