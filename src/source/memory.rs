//! Memory source: envelopes handed over in order, for in-process runs of the pipeline
//! (tests, benches). Offsets are not kept.

use std::sync::Arc;

use super::{Envelope, NoOffsets, OffsetStore, Source, SourceError};

pub struct MemorySource {
    envs: std::vec::IntoIter<Envelope>,
    trickle: bool,
    ready: bool,
}

impl MemorySource {
    /// Every message ready at once, as in a backlog.
    pub fn new(envs: Vec<Envelope>) -> Self {
        Self {
            envs: envs.into_iter(),
            trickle: false,
            ready: false,
        }
    }

    /// One message ready at a time, as from a quiet input: the source is pending once
    /// between two messages, so the pipeline handles each before it reads the next.
    pub fn trickle(envs: Vec<Envelope>) -> Self {
        Self {
            trickle: true,
            ..Self::new(envs)
        }
    }
}

impl Source for MemorySource {
    async fn next(&mut self) -> Result<Option<Envelope>, SourceError> {
        if self.trickle {
            self.ready = !self.ready;
            if !self.ready {
                tokio::task::yield_now().await;
            }
        }
        Ok(self.envs.next())
    }

    fn offset_store(&self) -> Arc<dyn OffsetStore> {
        Arc::new(NoOffsets)
    }

    fn finish(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}
