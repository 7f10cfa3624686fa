//! Scale-out (`processing.scale_out`): several instances share the consumer group, and
//! every state key lives on exactly one of them, as in Kafka Streams:
//!
//! ```text
//! input topics ─► decode ─► routes ─► riskstream.repartition.<group>.<stream>, partition
//!                  └► dead letters       hash(route) % N (one copy per distinct partition)
//!
//! repartition partition p ─► task (stream, p): its own detectors, alert policy and
//!                            watermark ─► alerts;  changed keys ─► changelog partition p
//! ```
//!
//! A routing key is what a detector's state is keyed by ([`crate::detect::Detector::routes`]):
//! the site for every sensor detector, the township, county and city for `rate_spike`,
//! the suspect for `entity_burst` and `spread`. An event is copied to the partition of
//! each of its routing keys; the task there observes it only with the detectors that own
//! one of those keys ([`crate::detect::Owner`]). Repartition and changelog topics have
//! `state.partitions` partitions, so task p's state is exactly changelog partition p: a
//! rebalance that moves partition p moves its state with it.
//!
//! Everything runs in Kafka transactions (the exactly-once loop's steps): the repartition
//! copies, alerts, dead letters, state and the offsets of both the inputs and the
//! repartition records commit together, with the consumer group's generation captured
//! when the transaction began. So a member that lost partitions in a rebalance cannot
//! commit for them, and a task's restored state always matches its committed offsets.
//! Tasks never outlive a rebalance: they are dropped and restored from their changelog
//! partition when next needed, always between transactions (a restore inside one could
//! outlast `transaction.timeout.ms`).
//!
//! Event time is per task (each task has its own watermark, from the copies it gets), as
//! Kafka Streams' stream time is per task: a quiet task's windows close later.

use std::collections::HashMap;
use std::time::Instant;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::exactly_once::{blocking, next_in_txn, TxnFailure, RESTORE_TIMEOUT};
use super::{fresh_state, Handled, Pipeline, PipelineError, RunSummary};
use crate::alert::{AlertPolicy, IncidentGrouper};
use crate::decode::Stream;
use crate::detect::{DetectorSet, Owner};
use crate::kafka::repartition_topics;
use crate::kafka::TXN_TIMEOUT;
use crate::shutdown::ShutdownTrigger;
use crate::sink::{send_with_backpressure, Ack};
use crate::source::kafka::KafkaSource;
use crate::source::{Envelope, Origin, Source};
use crate::state::changelog::{restore_partitions, Record, RestoreTarget};
use crate::state::StateError;

/// The tasks an instance holds, and how events reach them.
pub struct Tasks {
    held: HashMap<(Stream, i32), Task>,
    /// Partitions of the repartition (and changelog) topics.
    partitions: u32,
    /// Routing only: owns everything and never observes (it finds routing keys).
    router: DetectorSet,
    /// Shared, so routing an input copies no topic name.
    topics: [std::sync::Arc<str>; 3],
    parts: Vec<u32>,
}

impl Tasks {
    /// The held tasks' open episodes older than `age` (the alarm KPIs' stale alarms).
    pub(super) fn open_longer_than(&self, age: i64, out: &mut Vec<crate::alert::kpi::StaleAlarm>) {
        for t in self.held.values() {
            t.policy.open_longer_than(age, out);
        }
    }
}

/// One repartition partition's state.
struct Task {
    detectors: DetectorSet,
    policy: AlertPolicy,
    incidents: IncidentGrouper,
}

impl Pipeline {
    /// Runs the scale-out topology until shutdown; `producer` is the transactional
    /// producer every Kafka sink, the dead letters, the changelog and the repartition
    /// copies share.
    pub async fn run_scale_out(
        mut self,
        mut source: KafkaSource,
        producer: FutureProducer,
        shutdown: ShutdownTrigger,
    ) -> Result<RunSummary, PipelineError> {
        let (router, _, _) = fresh_state(&self.cfg, &self.clock, Owner::All, self.live);
        self.tasks = Some(Tasks {
            held: HashMap::new(),
            partitions: self.cfg.state.partitions.max(1) as u32,
            router,
            topics: repartition_topics(&self.cfg).map(Into::into),
            parts: Vec::new(),
        });
        let commit_interval = self.cfg.processing.commit_interval;
        let max_batch = self.cfg.processing.max_batch;
        blocking(|| producer.init_transactions(TXN_TIMEOUT))
            .map_err(|e| PipelineError::Transaction(format!("init_transactions: {e}")))?;
        let mut stop = shutdown.subscribe();
        let mut summary = RunSummary::default();
        let mut committed_txns = 0u64;
        // The rebalance count the held tasks belong to.
        let mut seen = source.rebalances();
        // An input that needs a task not held yet: it starts the next transaction. With
        // the rebalance count it was received under.
        let mut carry: Option<(Envelope, u64)> = None;
        'run: loop {
            let (first, received_under) = match carry.take() {
                Some(c) => c,
                None => {
                    let before = source.rebalances();
                    let r = tokio::select! {
                        biased;
                        _ = stop.recv() => break 'run,
                        r = source.next() => r?,
                    };
                    match r {
                        Some(e) => (e, before),
                        None => break,
                    }
                }
            };
            // Between transactions: drop tasks a rebalance may have moved, restore the
            // ones this input needs.
            let generation = source.rebalances();
            if generation != seen {
                self.drop_tasks("rebalance");
                seen = generation;
            }
            if generation != received_under {
                // It may come from a partition revoked meanwhile, and a transaction with
                // the new generation's metadata would commit its offset all the same.
                // Every partition assigned now starts at its committed offset, so an
                // input of one still owned comes again.
                source.rewind(TXN_TIMEOUT)?;
                continue;
            }
            if let Some(t) = self.task_of(&source, &first) {
                if !self.holds(t) {
                    blocking(|| self.open_tasks(&source, t))?;
                }
            }
            let meta = source.group_metadata();
            producer
                .begin_transaction()
                .map_err(|e| PipelineError::Transaction(format!("begin_transaction: {e}")))?;
            let deadline = tokio::time::Instant::now() + commit_interval;
            let mut acks: Vec<Ack> = Vec::new();
            let mut offsets = crate::source::Offsets::new();
            let mut alerted: Vec<Instant> = Vec::new();
            let mut stopping = false;
            let mut next = Some(first);
            let mut n = 0usize;
            while let Some(env) = next.take() {
                let task = self.task_of(&source, &env);
                if task.is_some_and(|t| !self.holds(t)) {
                    // Received under this transaction's generation (else the commit
                    // below aborts, and the carry with it).
                    carry = Some((env, generation));
                    break;
                }
                if let Origin::Kafka {
                    topic,
                    partition,
                    offset,
                } = &env.origin
                {
                    offsets.insert((topic.clone(), *partition), offset + 1);
                }
                match task {
                    Some(t) => {
                        let h = self.in_task(t, env, &mut summary).await;
                        alerted.extend(h.alerted);
                        acks.extend(h.acks);
                    }
                    None => acks.extend(self.route(&producer, env, &mut summary).await),
                }
                n += 1;
                if n >= max_batch {
                    break;
                }
                (next, stopping) = next_in_txn(&mut source, &mut stop, deadline).await;
            }
            acks.extend(self.flush_tasks().await);
            let outcome = if source.rebalances() != generation {
                // Offsets of partitions this member may no longer own must not commit.
                Err(TxnFailure::Abortable(
                    "rebalanced during the transaction".into(),
                ))
            } else {
                self.commit(&producer, meta, acks, &offsets).await
            };
            if self.settle(&producer, outcome, n, alerted)? {
                committed_txns += 1;
            } else {
                self.drop_tasks("aborted transaction");
                carry = None;
                source.rewind(TXN_TIMEOUT)?;
            }
            self.set_task_gauges();
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
            tasks = self.tasks.as_ref().map_or(0, |t| t.held.len()),
            "pipeline stopped (scale-out)"
        );
        Ok(summary)
    }

    /// The task an envelope from a repartition topic belongs to; `None` for an input.
    fn task_of(&self, source: &KafkaSource, env: &Envelope) -> Option<(Stream, i32)> {
        let Origin::Kafka {
            topic, partition, ..
        } = &env.origin
        else {
            return None;
        };
        Some((source.repartition_stream(topic)?, *partition))
    }

    fn holds(&self, t: (Stream, i32)) -> bool {
        self.tasks.as_ref().is_some_and(|x| x.held.contains_key(&t))
    }

    fn drop_tasks(&mut self, why: &str) {
        if let Some(t) = &mut self.tasks {
            if !t.held.is_empty() {
                tracing::info!(
                    tasks = t.held.len(),
                    why,
                    "dropping tasks (restored from their changelog when next needed)"
                );
                t.held.clear();
            }
        }
    }

    /// Restores every assigned task not held yet (and `need`) from its changelog
    /// partition, in one read. Blocking; never inside a transaction.
    fn open_tasks(&mut self, source: &KafkaSource, need: (Stream, i32)) -> Result<(), StateError> {
        let Some(tasks) = &mut self.tasks else {
            return Ok(());
        };
        let mut want: Vec<(Stream, i32)> = source
            .assigned_tasks()
            .into_iter()
            .filter(|t| !tasks.held.contains_key(t))
            .collect();
        if !want.contains(&need) {
            want.push(need);
        }
        let mut fresh: HashMap<(Stream, i32), Task> = want
            .iter()
            .map(|&(s, p)| {
                let owner = Owner::Partition {
                    index: p as u32,
                    of: tasks.partitions,
                };
                let (mut detectors, mut policy, mut incidents) =
                    fresh_state(&self.cfg, &self.clock, owner, self.live);
                detectors.track_changes();
                policy.track_changes();
                incidents.track_changes();
                (
                    (s, p),
                    Task {
                        detectors,
                        policy,
                        incidents,
                    },
                )
            })
            .collect();
        let stats = restore_partitions(
            &self.cfg,
            RESTORE_TIMEOUT,
            Some(&want),
            &mut TaskTarget(&mut fresh),
        )?;
        tasks.held.extend(fresh);
        self.restored(&stats);
        tracing::info!(
            tasks = ?want,
            records = stats.records,
            skipped = stats.skipped,
            seconds = stats.elapsed.as_secs_f64(),
            "tasks restored"
        );
        Ok(())
    }

    /// Handles a repartition record in its task (held: see `open_tasks`).
    async fn in_task(
        &mut self,
        t: (Stream, i32),
        env: Envelope,
        summary: &mut RunSummary,
    ) -> Handled {
        let mut task = self.take_task(t);
        self.swap_in(&mut task);
        let h = self.handle(env, summary, false).await;
        self.swap_in(&mut task);
        self.put_task(t, task);
        h
    }

    fn take_task(&mut self, t: (Stream, i32)) -> Task {
        self.tasks
            .as_mut()
            .and_then(|x| x.held.remove(&t))
            .expect("task restored before use")
    }

    fn put_task(&mut self, t: (Stream, i32), task: Task) {
        if let Some(x) = &mut self.tasks {
            x.held.insert(t, task);
        }
    }

    /// Exchanges the pipeline's detectors, policy and incident grouper with the task's.
    fn swap_in(&mut self, task: &mut Task) {
        std::mem::swap(&mut self.detectors, &mut task.detectors);
        std::mem::swap(&mut self.policy, &mut task.policy);
        std::mem::swap(&mut self.incidents, &mut task.incidents);
    }

    /// Decodes an input and copies it to the repartition partition of each of its
    /// routing keys; an invalid input goes to the dead letters here, once.
    async fn route(
        &mut self,
        producer: &FutureProducer,
        env: Envelope,
        summary: &mut RunSummary,
    ) -> Vec<Ack> {
        summary.consumed += 1;
        self.metrics.consumed(env.stream);
        let d = match self.decoder.decode(env.stream, &env.payload) {
            Ok(d) => d,
            Err(e) => {
                summary.invalid += 1;
                self.metrics.invalid(env.stream, e.reason);
                return vec![send_with_backpressure(|| self.dead_letters.send(&env, &e)).await];
            }
        };
        if d.unlisted_region {
            self.metrics.unknown_region(env.stream);
        }
        let tasks = self.tasks.as_mut().expect("scale-out");
        let mut parts = std::mem::take(&mut tasks.parts);
        tasks
            .router
            .partitions(&d.event, tasks.partitions, &mut parts);
        let topic = tasks.topics[env.stream.index()].clone();
        let mut acks = Vec::with_capacity(parts.len());
        for &p in &parts {
            acks.push(
                send_with_backpressure(|| {
                    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
                        .partition(p as i32)
                        .payload(&env.payload);
                    if let Some(k) = &env.key {
                        rec = rec.key(k);
                    }
                    match producer.send_result(rec) {
                        Ok(f) => Ok(crate::sink::kafka_ack("repartition".into(), f)),
                        Err((e, _)) => Err(crate::sink::kafka_error("repartition", e)),
                    }
                })
                .await,
            );
        }
        if let Some(t) = &mut self.tasks {
            t.parts = parts;
        }
        acks
    }

    /// Every held task's changed keys, each to its own changelog partition.
    async fn flush_tasks(&mut self) -> Vec<Ack> {
        let keys: Vec<(Stream, i32)> = self
            .tasks
            .as_ref()
            .map(|t| t.held.keys().copied().collect())
            .unwrap_or_default();
        let mut acks = Vec::new();
        for t in keys {
            let mut task = self.take_task(t);
            self.swap_in(&mut task);
            let snap = self.snapshot();
            self.swap_in(&mut task);
            self.put_task(t, task);
            let Some(w) = &self.changelog else { continue };
            for (s, c) in &snap {
                acks.push(send_with_backpressure(|| w.send_to(*s, Some(t.1), c)).await);
            }
        }
        acks
    }

    /// The keys and open episodes of every held task.
    fn set_task_gauges(&self) {
        if let Some(t) = &self.tasks {
            let keys: usize = t.held.values().map(|x| x.detectors.keys()).sum();
            let open: usize = t.held.values().map(|x| x.policy.open_count()).sum();
            let incidents: usize = t.held.values().map(|x| x.incidents.open_count()).sum();
            self.metrics.detector_keys.set(keys as i64);
            self.metrics.open_episodes.set(open as i64);
            self.metrics.open_incidents.set(incidents as i64);
        }
    }
}

/// Restored records go to the task of their changelog partition.
struct TaskTarget<'a>(&'a mut HashMap<(Stream, i32), Task>);

impl RestoreTarget for TaskTarget<'_> {
    fn reserve(&mut self, stream: Stream, partition: i32, records: usize) {
        if let Some(t) = self.0.get_mut(&(stream, partition)) {
            t.detectors.reserve(stream, records);
        }
    }

    fn apply(
        &mut self,
        stream: Stream,
        records: &[Record<'_>],
        failed: &mut Vec<(usize, StateError)>,
    ) {
        let mut partitions: Vec<i32> = records.iter().map(|r| r.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        for p in partitions {
            let Some(t) = self.0.get_mut(&(stream, p)) else {
                continue;
            };
            let mine = records.iter().enumerate().filter(|(_, r)| r.partition == p);
            super::restore_split(
                &mut t.detectors,
                &mut t.policy,
                &mut t.incidents,
                stream,
                mine,
                failed,
            );
        }
    }
}
