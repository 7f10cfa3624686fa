//! Exactly-once: consume -> process -> produce in Kafka transactions, as Kafka Streams'
//! `exactly_once_v2` does.
//!
//! ```text
//! begin ─► inputs for up to commit_interval / max_batch ─► handle each (alerts and dead
//!          letters produced into the transaction) ─► changed state keys into the changelog
//!       ─► every output acknowledged ─► input offsets into the transaction
//!          (send_offsets_to_transaction, with the group's generation) ─► commit
//! ```
//!
//! Alerts, dead letters, state and offsets become visible together or not at all; readers
//! use `isolation.level=read_committed`. Fencing: the transactional id is
//! `<group>-<instance_id>`, so a restarted instance fences its zombie and aborts its open
//! transaction at `init_transactions`; offsets carry the consumer group metadata, so a
//! member that lost its partitions in a rebalance cannot commit for them. On an abortable
//! error the transaction is aborted and the instance rewinds: state back to the last
//! committed changelog, inputs back to the last committed offsets, then it goes on. A
//! fatal error (fenced) stops the process with exit 1.
//!
//! Sinks outside Kafka (alertmanager, webhook, CAP to a URL) cannot take part in a
//! transaction: they stay at-least-once (a rewind may repeat their messages).

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};

use super::{Pipeline, PipelineError, RunSummary};
use crate::kafka::{commit_with_offsets, retrying, TXN_TIMEOUT};
use crate::shutdown::ShutdownTrigger;
use crate::source::kafka::KafkaSource;
use crate::source::{Origin, Source};

/// Longest restore (start and rewind).
pub(super) const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// How a transaction failed.
pub(super) enum TxnFailure {
    /// Abort, rewind and go on.
    Abortable(String),
    /// Fenced or otherwise unusable producer: stop.
    Fatal(String),
}

fn classify(e: &KafkaError) -> TxnFailure {
    match e {
        KafkaError::Transaction(r) if r.is_fatal() => TxnFailure::Fatal(e.to_string()),
        _ => TxnFailure::Abortable(e.to_string()),
    }
}

impl Pipeline {
    /// Runs in transactions until shutdown; `producer` is the transactional producer every
    /// Kafka sink, the dead letters and the changelog share.
    pub async fn run_exactly_once(
        mut self,
        mut source: KafkaSource,
        producer: FutureProducer,
        shutdown: ShutdownTrigger,
    ) -> Result<RunSummary, PipelineError> {
        let commit_interval = self.cfg.processing.commit_interval;
        let max_batch = self.cfg.processing.max_batch;
        blocking(|| producer.init_transactions(TXN_TIMEOUT))
            .map_err(|e| PipelineError::Transaction(format!("init_transactions: {e}")))?;
        // After init: the zombie's open transaction is aborted, so the changelog's
        // committed end is final.
        blocking(|| self.restore(RESTORE_TIMEOUT))?;
        let mut stop = shutdown.subscribe();
        let mut summary = RunSummary::default();
        let mut committed_txns = 0u64;
        'run: loop {
            let first = tokio::select! {
                biased;
                _ = stop.recv() => break 'run,
                r = source.next() => r?,
            };
            let Some(first) = first else { break };
            producer
                .begin_transaction()
                .map_err(|e| PipelineError::Transaction(format!("begin_transaction: {e}")))?;
            let deadline = tokio::time::Instant::now() + commit_interval;
            let mut acks = Vec::new();
            let mut offsets = crate::source::Offsets::new();
            let mut alerted: Vec<Instant> = Vec::new();
            let mut stopping = false;
            let mut next = Some(first);
            let mut n = 0usize;
            while let Some(env) = next.take() {
                if let Origin::Kafka {
                    topic,
                    partition,
                    offset,
                } = &env.origin
                {
                    offsets.insert((topic.clone(), *partition), offset + 1);
                }
                let p = self.handle(env, &mut summary, true).await;
                alerted.extend(p.alerted);
                acks.extend(p.acks);
                n += 1;
                if n >= max_batch {
                    break;
                }
                (next, stopping) = next_in_txn(&mut source, &mut stop, deadline).await;
            }
            acks.extend(self.flush_state().await);
            let outcome = self
                .commit(&producer, source.group_metadata(), acks, &offsets)
                .await;
            if self.settle(&producer, outcome, n, alerted)? {
                committed_txns += 1;
            } else {
                self.reset_state();
                blocking(|| self.restore(RESTORE_TIMEOUT))?;
                source.rewind(TXN_TIMEOUT)?;
            }
            if stopping {
                break;
            }
        }
        tracing::info!(
            consumed = summary.consumed,
            invalid = summary.invalid,
            alerts = summary.alerts,
            late = summary.late,
            transactions = committed_txns,
            open_episodes = self.policy.open_count(),
            "pipeline stopped (exactly-once)"
        );
        Ok(summary)
    }

    /// Counts how a transaction ended and aborts a failed one: true when it committed,
    /// false when it was aborted (the caller rewinds its state and inputs); a fatal
    /// failure (fenced) is an error.
    pub(super) fn settle(
        &self,
        producer: &FutureProducer,
        outcome: Result<(), TxnFailure>,
        inputs: usize,
        alerted: Vec<Instant>,
    ) -> Result<bool, PipelineError> {
        match outcome {
            Ok(()) => {
                self.metrics
                    .transactions
                    .with_label_values(&["committed"])
                    .inc();
                for r in alerted {
                    self.metrics
                        .event_to_alert
                        .observe(r.elapsed().as_secs_f64());
                }
                Ok(true)
            }
            Err(TxnFailure::Abortable(why)) => {
                tracing::warn!(error = %why, inputs, "transaction failed; aborting and rewinding");
                self.metrics
                    .transactions
                    .with_label_values(&["aborted"])
                    .inc();
                retrying(|| producer.abort_transaction(TXN_TIMEOUT))
                    .map_err(|e| PipelineError::Transaction(format!("abort_transaction: {e}")))?;
                Ok(false)
            }
            Err(TxnFailure::Fatal(why)) => {
                tracing::error!(error = %why, "transactional producer failed (fenced?); stopping");
                Err(PipelineError::Transaction(why))
            }
        }
    }

    /// Waits for every output of the transaction, adds the input offsets with the
    /// group's metadata `meta`, commits.
    pub(super) async fn commit(
        &self,
        producer: &FutureProducer,
        meta: Option<ConsumerGroupMetadata>,
        acks: Vec<crate::sink::Ack>,
        offsets: &crate::source::Offsets,
    ) -> Result<(), TxnFailure> {
        if let Err(e) = try_join_all(acks).await {
            self.metrics.sink_error(e.sink());
            return Err(TxnFailure::Abortable(e.to_string()));
        }
        let meta =
            meta.ok_or_else(|| TxnFailure::Abortable("no consumer group metadata yet".into()))?;
        commit_with_offsets(producer, offsets, &meta).map_err(|e| classify(&e))
    }
}

/// The next input of an open transaction: `None` at its deadline, at the source's end
/// or error (the transaction then commits what it has, or aborts), or on shutdown
/// (then also `true`: commit and stop).
pub(super) async fn next_in_txn(
    source: &mut KafkaSource,
    stop: &mut crate::shutdown::Shutdown,
    deadline: tokio::time::Instant,
) -> (Option<crate::source::Envelope>, bool) {
    tokio::select! {
        biased;
        _ = stop.recv() => (None, true),
        r = tokio::time::timeout_at(deadline, source.next()) => match r {
            Err(_) | Ok(Ok(None)) => (None, false),
            Ok(Ok(Some(e))) => (Some(e), false),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "source failed inside a transaction; aborting it");
                (None, false)
            }
        },
    }
}

/// Runs a blocking client call without stalling the runtime's other tasks.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
