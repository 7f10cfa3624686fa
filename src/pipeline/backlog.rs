//! Backlog batches, overlapped: while the detector pool decodes and observes batch N+1,
//! the pipeline's own thread puts batch N's signals through the alert policy and the
//! sinks and gathers batch N+2 from the source.
//!
//! Done one after the other, the two halves left a core idle: during the policy and
//! sink half only the pipeline thread ran, during the detector half the pipeline thread
//! waited (a 2M backlog showed 12% of both cores idle; docs/PERFORMANCE.md). Nothing
//! about the outputs changes: batches still pass the detectors, and then the policy, in
//! input order, because a batch is started only after the one before has come back, and
//! finished only after the one before it was finished.
//!
//! The detector set moves into the job and back, so nothing else may use it while a
//! batch is in flight: the pipeline lands the batch ([`InFlight::wait`]) before any step
//! that needs detector state (a single input, a state snapshot, the end of input).

use std::panic::AssertUnwindSafe;

use rayon::prelude::*;
use tokio::sync::oneshot;

use crate::decode::{DecodeError, Decoded, Decoder};
use crate::detect::{BatchItem, DetectorSet, Observed, Signal};
use crate::source::Envelope;

/// What the pool made of one batch: per input, its decode and (when valid) its
/// detectors' verdict, in input order.
pub(super) struct Detected {
    pub envs: Vec<Envelope>,
    pub decoded: Vec<Result<Decoded, DecodeError>>,
    /// One per valid input, in order.
    pub results: Vec<(Observed, Vec<Signal>)>,
    /// Detector keys held after the batch (the gauge).
    pub keys: usize,
}

type Answer = std::thread::Result<(DetectorSet, Detected)>;

/// A batch on the detector pool.
pub(super) struct InFlight(oneshot::Receiver<Answer>);

/// Decodes `envs` and observes them with `detectors` on the pool.
pub(super) fn start(decoder: Decoder, mut detectors: DetectorSet, envs: Vec<Envelope>) -> InFlight {
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        // A panic in a detector reaches the pipeline as it would have inline (rayon
        // aborts the process on a panic in a spawned job).
        let answer = std::panic::catch_unwind(AssertUnwindSafe(move || {
            let decoded: Vec<_> = envs
                .par_iter()
                .map(|env| decoder.decode(env.stream, &env.payload))
                .collect();
            let items: Vec<BatchItem<'_>> = envs
                .iter()
                .zip(&decoded)
                .filter_map(|(env, d)| {
                    Some(BatchItem {
                        event: &d.as_ref().ok()?.event,
                        partition: super::partition_of(env),
                        received: env.received,
                    })
                })
                .collect();
            let results = detectors.observe_batch(&items);
            drop(items);
            let keys = detectors.keys();
            (
                detectors,
                Detected {
                    envs,
                    decoded,
                    results,
                    keys,
                },
            )
        }));
        // The pipeline always waits for its batch; a closed receiver means it failed.
        let _ = tx.send(answer);
    });
    InFlight(rx)
}

impl InFlight {
    /// The detector set back, with the batch's results.
    pub(super) async fn wait(self) -> (DetectorSet, Detected) {
        match self.0.await {
            Ok(Ok(done)) => done,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => unreachable!("a started batch always answers, even when it panics"),
        }
    }
}
