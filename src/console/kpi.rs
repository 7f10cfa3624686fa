//! The console's view of the alarm KPIs (`GET /api/kpi?center=CODE`): the pipeline's
//! [`KpiTracker`], shared, read under its lock for one view at a time.

use std::sync::{Arc, Mutex};

use super::ConsoleState;
use crate::alert::kpi::KpiView;
use crate::alert::KpiTracker;
use crate::regions::Regions;

/// The tracker the pipeline feeds and the console reads.
pub type SharedKpi = Arc<Mutex<KpiTracker>>;

impl ConsoleState {
    /// The pipeline's KPIs from now on (a second attach is ignored: one pipeline each).
    pub fn attach_kpi(&self, kpi: SharedKpi) {
        let _ = self.kpi.set(kpi);
    }

    /// `center`'s KPIs; an empty view (every figure 0) until a pipeline is attached.
    pub fn kpi_view(&self, center: &str, regions: &Regions) -> KpiView {
        match self.kpi.get() {
            Some(k) => k
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .view(center, regions),
            None => KpiTracker::new().view(center, regions),
        }
    }
}
