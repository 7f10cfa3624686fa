//! The only module that wires stages together:
//!
//! ```text
//! Source ─► decode ─► DetectorSet ─► AlertPolicy ─► sinks (enqueue) ──┐
//!              └──► dead letters (enqueue) ──────────────────────────┤
//!                                                                    ▼
//!                         bounded channel of Pending {origin, acks}  (max_in_flight)
//!                                                                    ▼
//!                         committer: awaits acks in input order, then stores the offset
//! ```
//!
//! Delivery guarantee (default): at-least-once. An input's offset is stored only after
//! every alert and dead letter it caused is acknowledged; acks are awaited in input order,
//! so a stored offset never passes an unacknowledged one. A failed delivery stops the
//! pipeline without storing that offset (exit 1: restart re-processes it). On shutdown the
//! source stops, in-flight acks drain (up to `drain_timeout`), then offsets are committed.
//! With durable state (`state.changelog`), offsets are not auto-committed: every
//! `state.flush_interval` the pipeline snapshots the changed state keys into the queue,
//! and the committer, once every earlier output is acknowledged, writes that snapshot and
//! the offsets of the inputs it covers in one Kafka transaction. State and offsets then
//! always agree: a crash replays exactly the inputs after the snapshot into exactly the
//! state they first met, so replayed alerts are the same messages again (same id, status
//! and level) and nothing is counted twice. Alerts themselves stay outside transactions
//! (low latency, at-least-once).
//!
//! `processing.guarantee = "exactly_once"` runs [`exactly_once`] instead: the same
//! per-input steps inside Kafka transactions.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod backlog;
pub mod exactly_once;
pub mod scale_out;

use futures::future::try_join_all;
use futures::FutureExt;
use tokio::sync::mpsc;

use crate::alert::{kpi, Alert, AlertPolicy, Incident, IncidentGrouper, KpiTracker};
use crate::clock::Clock;
use crate::config::Config;
use crate::console::ConsoleState;
use crate::decode::Decoder;
use crate::detect::{BuildCtx, DetectorSet, Signal};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::sink::{send_with_backpressure, Ack, DeadLetters, Sink, SinkCtx, SinkError};
use crate::source::{Envelope, OffsetStore, Origin, Source, SourceError};
use crate::state::changelog::{ChangelogWriter, RestoreStats};
use crate::state::{Change, StateError};
use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("in-flight work did not drain within {0:?}; offsets of unacknowledged inputs were not committed")]
    DrainTimeout(Duration),
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("transaction: {0}")]
    Transaction(String),
}

/// What [`Pipeline::run`]'s loop carries into its wind-down.
struct RunState {
    summary: RunSummary,
    /// The source ended (finite input), rather than a stop.
    ended: bool,
    /// The batch being handled, not yet handed to the committer.
    open: Pending,
    /// Inputs read but not handled yet: handled together (detectors in parallel) once
    /// BATCH are in or the source has nothing more ready.
    gathered: Vec<Envelope>,
}

/// Counts of one run, for the closing log line and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    pub consumed: u64,
    pub invalid: u64,
    pub alerts: u64,
    pub late: u64,
    /// Resent reports and repeated readings, counted once (docs/SECURITY.md).
    pub duplicates: u64,
}

/// Inputs handed to the committer together, with their outstanding acknowledgements.
/// Inputs are batched (up to [`BATCH`], or until the source has nothing ready) so the
/// committer wakes once per batch, not once per input.
#[derive(Default)]
struct Pending {
    /// The last input of each partition in the batch (offsets only move forward).
    origins: Vec<Origin>,
    acks: Vec<Ack>,
    /// Exactly-once: when each input that caused alerts was received, a latency sample
    /// once its transaction commits (at-least-once samples at the acknowledgement).
    alerted: Vec<Instant>,
    /// Inputs in the batch (the in-flight gauge).
    inputs: usize,
    /// A state snapshot to commit with the offsets of every input before it.
    snapshot: Option<Vec<(crate::decode::Stream, Change)>>,
}

/// What handling one input left to do: its outputs' acknowledgements.
struct Handled {
    origin: Origin,
    acks: Vec<Ack>,
    /// Exactly-once: when the input was received, if it caused alerts (a latency sample
    /// once its transaction commits).
    alerted: Option<Instant>,
}

/// Most inputs gathered and handled together, and in one committer hand-off. 1024, not
/// 256: each parallel batch wakes the detector pool once, and larger batches made a 2M
/// backlog drain ~12% faster (docs/PERFORMANCE.md).
const BATCH: usize = 1024;

pub struct Pipeline {
    decoder: Decoder,
    detectors: DetectorSet,
    policy: AlertPolicy,
    /// Groups the policy's alerts into incidents (stamping each alert's `incident_id`).
    incidents: IncidentGrouper,
    sinks: Vec<Arc<dyn Sink>>,
    dead_letters: Arc<dyn DeadLetters>,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
    drain_timeout: Duration,
    signals: Vec<Signal>,
    alerts: Vec<Alert>,
    /// Incident messages waiting to be published after the alerts that caused them.
    incident_msgs: Vec<Incident>,
    /// The web console, when on: sees every alert and fills in its operators' actions.
    console: Option<Arc<ConsoleState>>,
    /// Shelved and out-of-service points and sites (the console's table, rebuilt from
    /// the actions topic): their anomalous signals reach the policy as clear ones.
    shelves: Option<Arc<crate::alert::shelve::Shelves>>,
    /// Per sink, the episodes its filter has admitted: once admitted, an episode's later
    /// messages (a level drop, its resolve) reach that sink too, so a `min_level` sink
    /// never keeps an episode open for ever.
    admitted: Vec<crate::sink::Admitted>,
    /// The same per sink for incidents.
    admitted_incidents: Vec<crate::sink::Admitted>,
    /// Durable state: where changed keys go, how often (at-least-once), and what is
    /// needed to start the state over (exactly-once rewind).
    changelog: Option<ChangelogWriter>,
    flush_interval: Duration,
    last_flush: Instant,
    changes: Vec<Change>,
    cfg: Config,
    clock: Arc<dyn Clock>,
    /// Scale-out: the tasks this instance holds ([`scale_out`]); `detectors` and
    /// `policy` are then the state of the task at hand, swapped in and out.
    tasks: Option<scale_out::Tasks>,
    /// The last gathered batch was full: the source is behind (a backlog).
    behind: bool,
    /// A backlog batch on the detector pool ([`backlog`]); `detectors` is then an empty
    /// stand-in until it lands.
    inflight: Option<backlog::InFlight>,
    /// Live input (`run`): event times are checked against the wall clock.
    live: bool,
    /// The alarm KPIs (alert/kpi.rs), fed by [`Self::kpi_step`]; shared with the console.
    kpi: Arc<std::sync::Mutex<KpiTracker>>,
}

/// Builds every configured sink; `ctx.producer` is `None` when there is no broker.
pub fn build_sinks(cfg: &Config, ctx: &SinkCtx) -> Result<Vec<Arc<dyn Sink>>, SinkError> {
    cfg.sinks
        .iter()
        .map(|(name, c)| c.build(name, ctx))
        .collect()
}

impl Pipeline {
    pub fn new(
        cfg: &Config,
        sinks: Vec<Arc<dyn Sink>>,
        dead_letters: Arc<dyn DeadLetters>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (detectors, policy, incidents) =
            fresh_state(cfg, &clock, crate::detect::Owner::All, false);
        // The city's and every county's KPI series exist from start; a township's from
        // its first alarm (77 centers x 7 series would be mostly zeros).
        metrics.kpi.center(cfg.regions.city_code());
        for c in cfg.regions.county_codes() {
            metrics.kpi.center(c);
        }
        Self {
            decoder: cfg.decoder(),
            detectors,
            policy,
            incidents,
            sinks,
            dead_letters,
            metrics,
            max_in_flight: cfg.processing.max_in_flight,
            drain_timeout: cfg.processing.drain_timeout,
            signals: Vec::new(),
            alerts: Vec::new(),
            incident_msgs: Vec::new(),
            console: None,
            shelves: None,
            admitted: Vec::new(),
            admitted_incidents: Vec::new(),
            changelog: None,
            flush_interval: cfg.state.flush_interval,
            last_flush: Instant::now(),
            changes: Vec::new(),
            cfg: cfg.clone(),
            clock,
            tasks: None,
            behind: false,
            inflight: None,
            live: false,
            kpi: Default::default(),
        }
    }

    /// Live input (`run`): an event time more than `input.max_future_skew` ahead of the
    /// wall clock is a dead letter (`ts_in_future`). The replay's check (one key's jump
    /// ahead of its stream, [`crate::detect::screen`]) is off: the wall clock is the
    /// better judge, and a quiet night must not make the morning's first report suspect.
    pub fn live(mut self) -> Self {
        self.live = true;
        self.decoder = self
            .decoder
            .with_wall_clock(self.clock.clone(), self.cfg.input.max_future_skew);
        // Only the detector set's screen depends on it (no jump limit).
        (self.detectors, _, _) =
            fresh_state(&self.cfg, &self.clock, crate::detect::Owner::All, true);
        self
    }

    /// Makes state durable: changed keys go to the changelog from now on. `writer` must
    /// use a transactional producer (initialised: `init_transactions`). Restore first.
    pub fn with_changelog(mut self, writer: ChangelogWriter) -> Self {
        self.detectors.track_changes();
        self.policy.track_changes();
        self.incidents.track_changes();
        self.changelog = Some(writer);
        self
    }

    /// Puts back durable state from the changelog (blocking; before the first input).
    pub fn restore(&mut self, timeout: Duration) -> Result<RestoreStats, StateError> {
        let stats = crate::state::changelog::restore(
            &self.cfg,
            timeout,
            &mut StateTarget {
                detectors: &mut self.detectors,
                policy: &mut self.policy,
                incidents: &mut self.incidents,
                reserved: [0; 3],
            },
        )?;
        self.restored(&stats);
        if self.live {
            self.repair_watermarks();
        }
        self.metrics.detector_keys.set(self.detectors.keys() as i64);
        self.metrics
            .open_episodes
            .set(self.policy.open_count() as i64);
        self.metrics
            .open_incidents
            .set(self.incidents.open_count() as i64);
        tracing::info!(
            records = stats.records,
            bytes = stats.bytes,
            skipped = stats.skipped,
            keys = self.detectors.keys(),
            open_episodes = self.policy.open_count(),
            open_incidents = self.incidents.open_count(),
            seconds = stats.elapsed.as_secs_f64(),
            "state restored"
        );
        Ok(stats)
    }

    /// A restored watermark ahead of the wall clock by more than the allowed skew is
    /// pulled back to the wall clock: state written before the wall-clock check could hold a time a
    /// device's bad clock set.
    fn repair_watermarks(&mut self) {
        let skew = chrono::Duration::from_std(self.cfg.input.max_future_skew)
            .unwrap_or(chrono::Duration::zero());
        let now = self.clock.now().fixed_offset();
        for (stream, w) in self.detectors.repair_watermarks(now + skew, now) {
            if let Some(w) = w {
                self.policy.cap_watermark(stream, w);
            }
            tracing::warn!(
                %stream,
                watermark = ?w.map(|w| w.to_rfc3339()),
                "restored watermark was ahead of the wall clock; pulled back"
            );
        }
    }

    /// A restore's figures on /metrics.
    fn restored(&self, stats: &RestoreStats) {
        self.metrics
            .state_restore_seconds
            .set(stats.elapsed.as_secs_f64());
        self.metrics
            .state_restored_records
            .set(stats.records as i64);
    }

    /// Drops every detector key and episode (exactly-once rewind; restore follows).
    fn reset_state(&mut self) {
        let (mut d, mut p, mut g) =
            fresh_state(&self.cfg, &self.clock, crate::detect::Owner::All, self.live);
        if self.changelog.is_some() {
            d.track_changes();
            p.track_changes();
            g.track_changes();
        }
        self.detectors = d;
        self.policy = p;
        self.incidents = g;
        self.signals.clear();
        self.alerts.clear();
        self.incident_msgs.clear();
    }

    /// Every state key changed since the last call, as changelog records.
    fn snapshot(&mut self) -> Vec<(crate::decode::Stream, Change)> {
        self.last_flush = Instant::now();
        let mut out = Vec::new();
        if self.changelog.is_none() {
            return out;
        }
        for s in crate::decode::Stream::ALL {
            self.detectors.changes(s, &mut self.changes);
            self.policy.changes(s, &mut self.changes);
            self.incidents.changes(s, &mut self.changes);
            self.metrics
                .state_writes
                .with_label_values(&[s.as_str()])
                .inc_by(self.changes.len() as u64);
            out.extend(self.changes.drain(..).map(|c| (s, c)));
        }
        out
    }

    /// Writes every state key changed since the last flush; returns their acks.
    async fn flush_state(&mut self) -> Vec<Ack> {
        let snap = self.snapshot();
        let Some(w) = &self.changelog else {
            return Vec::new();
        };
        let mut acks = Vec::with_capacity(snap.len());
        for (s, c) in &snap {
            acks.push(send_with_backpressure(|| w.send(*s, c)).await);
        }
        acks
    }

    /// Exactly-once alerts count as delivered when their transaction commits.
    fn cfg_exactly_once(&self) -> bool {
        self.cfg.processing.guarantee == crate::config::Guarantee::ExactlyOnce
    }

    fn flush_due(&self) -> bool {
        self.changelog.is_some() && self.last_flush.elapsed() >= self.flush_interval
    }

    /// Shows every alert on the console and stamps it with the operators' actions.
    pub fn with_console(mut self, console: Arc<ConsoleState>) -> Self {
        console.attach_kpi(self.kpi.clone());
        self.console = Some(console);
        self
    }

    /// Screens every signal through the shelves before the alert policy sees it.
    pub fn with_shelves(mut self, shelves: Arc<crate::alert::shelve::Shelves>) -> Self {
        self.shelves = Some(shelves);
        self
    }

    /// Runs until the source ends or shutdown fires; then drains and commits.
    pub async fn run<S: Source>(
        mut self,
        mut source: S,
        shutdown: ShutdownTrigger,
    ) -> Result<RunSummary, PipelineError> {
        let mut stop: Shutdown = shutdown.subscribe();
        // The bound is in inputs: a full batch holds BATCH of them.
        let (tx, rx) = mpsc::channel::<Pending>((self.max_in_flight / BATCH).max(4));
        let committer = tokio::spawn(commit_loop(
            rx,
            source.offset_store(),
            self.changelog.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        ));
        let mut run = RunState {
            summary: RunSummary::default(),
            ended: false,
            open: Pending::default(),
            gathered: Vec::with_capacity(BATCH),
        };
        if let Err(e) = self
            .read_inputs(&mut source, &tx, &mut stop, &mut run)
            .await
        {
            tracing::error!(error = %e, "source failed");
            drop(tx);
            let _ = committer.await;
            return Err(e.into());
        }
        self.wind_down(source, tx, committer, run).await
    }

    /// The loop of [`Self::run`]: reads inputs and handles them in batches until the
    /// source ends (`run.ended`), shutdown fires or the committer stops; `Err` when the
    /// source fails.
    async fn read_inputs<S: Source>(
        &mut self,
        source: &mut S,
        tx: &mpsc::Sender<Pending>,
        stop: &mut Shutdown,
        run: &mut RunState,
    ) -> Result<(), SourceError> {
        let RunState {
            summary,
            ended,
            open,
            gathered,
        } = run;
        loop {
            if stop.is_triggered() {
                return Ok(());
            }
            // Take what the source has ready without waiting; only when it has nothing
            // does the open batch go to the committer and the loop wait.
            let env = match source.next().now_or_never() {
                Some(r) => r,
                None if !gathered.is_empty() => {
                    if !self.handle_gathered(gathered, tx, open, summary).await {
                        return Ok(());
                    }
                    continue;
                }
                None => {
                    self.finish_in_flight(open, summary).await;
                    if open.inputs > 0 && !self.hand_over(tx, open).await {
                        return Ok(());
                    }
                    let idle_flush = self.last_flush + self.flush_interval;
                    tokio::select! {
                        biased;
                        _ = stop.recv() => return Ok(()),
                        // A quiet input still gets its handled offsets committed on time.
                        _ = tokio::time::sleep_until(idle_flush.into()), if self.changelog.is_some() => {
                            let snap = Pending::snapshot(self.snapshot());
                            if tx.send(snap).await.is_err() {
                                return Ok(());
                            }
                            continue;
                        }
                        r = source.next() => r,
                    }
                }
            };
            let Some(env) = env? else {
                *ended = true;
                return Ok(());
            };
            gathered.push(env);
            if gathered.len() >= BATCH && !self.handle_gathered(gathered, tx, open, summary).await {
                return Ok(());
            }
        }
    }

    /// The end of [`Self::run`]: finishes what was read, closes the windows of a finite
    /// input, takes the last snapshot, drains the sinks and the committer (bounded by
    /// `drain_timeout`) and commits what was stored.
    async fn wind_down<S: Source>(
        mut self,
        mut source: S,
        tx: mpsc::Sender<Pending>,
        committer: tokio::task::JoinHandle<Result<(), SinkError>>,
        run: RunState,
    ) -> Result<RunSummary, PipelineError> {
        let RunState {
            mut summary,
            ended,
            mut open,
            mut gathered,
        } = run;
        if !gathered.is_empty() {
            // Read before the stop: finish them (their offsets may then commit).
            self.handle_gathered(&mut gathered, &tx, &mut open, &mut summary)
                .await;
        }
        self.finish_in_flight(&mut open, &mut summary).await;
        if open.inputs > 0 {
            self.hand_over(&tx, &mut open).await;
        }
        if ended {
            // Finite input: close the windows the data covers.
            let moved = self.detectors.flush(&mut self.signals);
            self.policy_step(None, &moved);
            let acks = self.publish_all(&mut summary).await;
            let _ = tx.send(Pending::internal(acks)).await;
        }
        // The state and offsets as of the last input: a clean restart repeats nothing.
        if self.changelog.is_some() {
            let _ = tx.send(Pending::snapshot(self.snapshot())).await;
        }
        drop(tx);
        for s in &self.sinks {
            s.flush(self.drain_timeout);
        }
        let drained = tokio::time::timeout(self.drain_timeout, committer).await;
        let result = match drained {
            Err(_) => Err(PipelineError::DrainTimeout(self.drain_timeout)),
            Ok(Err(join)) => panic!("committer panicked: {join}"),
            Ok(Ok(Err(e))) => Err(PipelineError::Sink(e)),
            Ok(Ok(Ok(()))) => Ok(summary),
        };
        // Commit what was stored even after a failure: those inputs are fully handled.
        if let Err(e) = source.finish() {
            tracing::warn!(error = %e, "final commit failed");
        }
        tracing::info!(
            consumed = summary.consumed,
            invalid = summary.invalid,
            alerts = summary.alerts,
            late = summary.late,
            open_episodes = self.policy.open_count(),
            "pipeline stopped"
        );
        result
    }

    /// Handles the gathered inputs, hands a full batch to the committer, and takes a
    /// state snapshot when one is due; false when the committer has stopped.
    async fn handle_gathered(
        &mut self,
        gathered: &mut Vec<Envelope>,
        tx: &mpsc::Sender<Pending>,
        open: &mut Pending,
        summary: &mut RunSummary,
    ) -> bool {
        let envs = std::mem::replace(gathered, Vec::with_capacity(BATCH));
        let full = envs.len() >= BATCH;
        // Parallel only for a backlog: two full batches in a row. One full batch is
        // also what a single large fetch gives at a steady rate, and there waking the
        // detector pool (its workers spin on both cores afterwards) raised the p99.
        let parallel = full && self.behind;
        self.behind = full;
        if parallel {
            // Batch N+1 goes to the pool before batch N's alerts go out, so the two
            // overlap ([`backlog`]).
            let landed = self.land().await;
            self.start_batch(envs, summary);
            if let Some(done) = landed {
                self.finish_batch(done, open, summary).await;
            }
        } else {
            self.finish_in_flight(open, summary).await;
            // Not a backlog: each input's alerts go out before the next input is
            // decoded, instead of after the whole batch's detectors (at 50k/s offered
            // that wait was most of the consume -> alert p99; docs/PERFORMANCE.md).
            for env in envs {
                let h = self.handle(env, summary, true).await;
                open.merge(h);
            }
        }
        if open.inputs >= BATCH && !self.hand_over(tx, open).await {
            return false;
        }
        if self.flush_due() {
            self.finish_in_flight(open, summary).await;
            if open.inputs > 0 && !self.hand_over(tx, open).await {
                return false;
            }
            if tx.send(Pending::snapshot(self.snapshot())).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Sends the open batch to the committer; false when the committer has stopped.
    async fn hand_over(&self, tx: &mpsc::Sender<Pending>, open: &mut Pending) -> bool {
        let batch = std::mem::take(open);
        self.metrics.in_flight.add(batch.inputs as i64);
        tx.send(batch).await.is_ok()
    }

    /// Decode -> detect -> alert for one input; returns what must be acknowledged.
    /// `input`: an event from an input topic (false for a scale-out task's copy, which
    /// its input topic already counted).
    async fn handle(&mut self, env: Envelope, summary: &mut RunSummary, input: bool) -> Handled {
        self.take_verdicts();
        if input {
            summary.consumed += 1;
            self.metrics.consumed(env.stream);
        }
        match self.decoder.decode(env.stream, &env.payload) {
            Err(e) => self.invalid(env, &e, summary).await,
            Ok(d) => {
                if d.unlisted_region && input {
                    self.metrics.unknown_region(env.stream);
                }
                let obs = self.detectors.observe_from(
                    &d.event,
                    partition_of(&env),
                    env.received,
                    &mut self.signals,
                );
                if self.tasks.is_none() {
                    self.metrics.detector_keys.set(self.detectors.keys() as i64);
                }
                match obs.screened {
                    Some(why) => self.screened(env, why, summary).await,
                    None => self.observed(env, &d.event, obs, summary).await,
                }
            }
        }
    }

    /// Sends a full batch of inputs (a backlog) to the detector pool, decoded and
    /// observed there on all cores ([`DetectorSet::observe_batch`]: the same outputs as
    /// [`Self::handle`] one by one); [`Self::finish_batch`] does the rest.
    fn start_batch(&mut self, envs: Vec<Envelope>, summary: &mut RunSummary) {
        debug_assert!(self.inflight.is_none(), "one batch in flight at a time");
        for env in &envs {
            summary.consumed += 1;
            self.metrics.consumed(env.stream);
        }
        self.take_verdicts();
        let detectors = std::mem::replace(&mut self.detectors, DetectorSet::stand_in());
        self.inflight = Some(backlog::start(self.decoder.clone(), detectors, envs));
    }

    /// Operators' false-alarm verdicts the detector set at hand has not taken yet go to
    /// its detectors' budgets ([`crate::console::verdicts`] says why they come from the
    /// console). A fresh or restored set (a restart, an exactly-once rewind, a scale-out
    /// task opened after a rebalance) takes every verdict still kept; applying one twice
    /// changes nothing. Each set applies a verdict to the keys it holds: under scale-out
    /// only the task that owns the key changes, the others ignore it. Before the set's
    /// next input, so the key's next reading is judged against the raised threshold; the
    /// changed keys reach the changelog with that input's state.
    fn take_verdicts(&mut self) {
        let Some(c) = &self.console else { return };
        let log = c.verdicts();
        if log.last() == self.detectors.verdicts_seen {
            return;
        }
        let mut new = Vec::new();
        self.detectors.verdicts_seen = log.after(self.detectors.verdicts_seen, &mut new);
        for v in &new {
            let changed = self.detectors.verdict(v);
            if changed == 0 {
                continue;
            }
            self.metrics
                .budget_verdicts_applied
                .with_label_values(&[v.detector.as_str()])
                .inc_by(changed as u64);
            tracing::info!(
                detector = %v.detector,
                key = %v.key,
                score = v.score,
                opened = v.opened,
                "false-alarm verdict charged to the key's budget: threshold held above the score"
            );
        }
    }

    /// Takes the detector set back from the batch in flight, if any, with its results.
    async fn land(&mut self) -> Option<backlog::Detected> {
        let (detectors, done) = self.inflight.take()?.wait().await;
        self.detectors = detectors;
        Some(done)
    }

    /// Lands the batch in flight, if any, and finishes it.
    async fn finish_in_flight(&mut self, open: &mut Pending, summary: &mut RunSummary) {
        if let Some(done) = self.land().await {
            self.finish_batch(done, open, summary).await;
        }
    }

    /// The rest of a detected batch, input by input: dead letters, the alert policy,
    /// the sinks.
    async fn finish_batch(
        &mut self,
        done: backlog::Detected,
        open: &mut Pending,
        summary: &mut RunSummary,
    ) {
        self.metrics.detector_keys.set(done.keys as i64);
        let mut results = done.results.into_iter();
        for (env, d) in done.envs.into_iter().zip(done.decoded) {
            let h = match d {
                Err(e) => self.invalid(env, &e, summary).await,
                Ok(d) => {
                    if d.unlisted_region {
                        self.metrics.unknown_region(env.stream);
                    }
                    let (obs, signals) = results.next().expect("one result per valid input");
                    self.signals = signals;
                    match obs.screened {
                        Some(why) => self.screened(env, why, summary).await,
                        None => self.observed(env, &d.event, obs, summary).await,
                    }
                }
            };
            open.merge(h);
        }
    }

    /// An input that does not decode: to the dead letters.
    async fn invalid(
        &mut self,
        env: Envelope,
        e: &crate::decode::DecodeError,
        summary: &mut RunSummary,
    ) -> Handled {
        summary.invalid += 1;
        self.metrics.invalid(env.stream, e.reason);
        tracing::debug!(stream = %env.stream, origin = ?env.origin, error = %e, "invalid input");
        let ack = send_with_backpressure(|| self.dead_letters.send(&env, e)).await;
        Handled {
            origin: env.origin,
            acks: vec![ack],
            alerted: None,
        }
    }

    /// An input the detector set did not admit: a duplicate is counted and done with; a
    /// jump ahead of its stream is a dead letter, like a clock the decoder refused.
    async fn screened(
        &mut self,
        env: Envelope,
        why: crate::detect::Screened,
        summary: &mut RunSummary,
    ) -> Handled {
        match why {
            crate::detect::Screened::Duplicate => {
                summary.duplicates += 1;
                self.metrics.duplicate(env.stream);
                Handled {
                    origin: env.origin,
                    acks: Vec::new(),
                    alerted: None,
                }
            }
            crate::detect::Screened::Ahead(by) => {
                let e = crate::decode::DecodeError::ts_in_future(format!(
                    "field `ts` is {} ahead of its stream and no other key confirms it (max_event_jump {})",
                    crate::detect::fmt_duration(by.to_std().unwrap_or_default()),
                    crate::detect::fmt_duration(self.cfg.input.max_event_jump),
                ));
                self.invalid(env, &e, summary).await
            }
        }
    }

    /// The rest of an input once the detectors have seen it (its signals in
    /// `self.signals`): the alert policy, then the sinks.
    async fn observed(
        &mut self,
        env: Envelope,
        event: &crate::decode::Event,
        obs: crate::detect::Observed,
        summary: &mut RunSummary,
    ) -> Handled {
        if obs.late {
            summary.late += 1;
            self.metrics.late(env.stream);
        }
        if let Some(w) = obs.watermark {
            self.metrics
                .watermark
                .with_label_values(&[env.stream.as_str()])
                .set(w.timestamp() as f64);
            self.policy_step(Some(event), &[(env.stream, w)]);
        } else {
            self.policy_step(Some(event), &[]);
        }
        let mut acks = self.publish_all(summary).await;
        let mut alerted = !acks.is_empty();
        if alerted && !self.cfg_exactly_once() {
            // The latency sample is taken when the last sink acknowledges, not when the
            // committer reaches this input: the committer polls acks in input order (and
            // may be committing a state snapshot meanwhile), so the acks are awaited on a
            // task of their own (~1% of inputs alert) and the committer awaits that task.
            let all = try_join_all(std::mem::take(&mut acks));
            let hist = self.metrics.event_to_alert.clone();
            let received = env.received;
            let delivered = tokio::spawn(async move {
                all.await?;
                hist.observe(received.elapsed().as_secs_f64());
                Ok(())
            });
            acks.push(Box::pin(async move {
                delivered.await.unwrap_or_else(|e| {
                    Err(SinkError::Delivery {
                        sink: "alerts".into(),
                        retryable: true,
                        message: format!("delivery task failed: {e}"),
                    })
                })
            }));
            alerted = false;
        }
        Handled {
            origin: env.origin,
            acks,
            alerted: alerted.then_some(env.received),
        }
    }

    /// Signals -> alerts, the event counted as a reading of its keys' episodes (after its
    /// own signals: the reading that clears a condition is its first clear reading; a late
    /// event also resolves or escalates them at its key's time), then watermark-driven
    /// resolves and escalations.
    ///
    /// `on_watermark` and `open_count` walk every episode, so neither runs per event:
    /// `on_watermark` only when a stream's watermark reached a new second (DetectorSet
    /// reports no smaller moves), and the open-episodes gauge only when a signal or a
    /// watermark could have changed it (the per-event count was the top entry of the
    /// profile, docs/PERFORMANCE.md).
    fn policy_step(
        &mut self,
        event: Option<&crate::decode::Event>,
        watermarks: &[(crate::decode::Stream, chrono::DateTime<chrono::FixedOffset>)],
    ) {
        let mut touched = !self.signals.is_empty() || !watermarks.is_empty();
        let first = self.alerts.len();
        for s in self.signals.drain(..) {
            let s = match &self.shelves {
                Some(shelves) => shelved(shelves, &self.metrics, s),
                None => s,
            };
            if let Some(a) = self.policy.on_signal(s) {
                self.alerts.push(a);
            }
        }
        if let Some(ev) = event {
            // A late event can resolve its key's episodes itself (no watermark moves).
            let before = self.alerts.len();
            self.policy.on_event(ev, &mut self.alerts);
            touched |= self.alerts.len() != before;
        }
        for (stream, w) in watermarks {
            self.policy.on_watermark(*stream, *w, &mut self.alerts);
        }
        self.group(first, watermarks);
        self.kpi_step(first, watermarks);
        // Scale-out: the policy at hand is one task's; the gauge is set per transaction.
        if touched && self.tasks.is_none() {
            self.metrics
                .open_episodes
                .set(self.policy.open_count() as i64);
            self.metrics
                .open_incidents
                .set(self.incidents.open_count() as i64);
        }
    }

    /// The alarm KPIs: the activations among the alerts from `first` on, the new
    /// watermarks, and once per event-time minute the stale alarms from every open episode.
    /// Nothing at all (no lock) for a step with neither, so the per-event cost stays O(1).
    fn kpi_step(
        &mut self,
        first: usize,
        watermarks: &[(crate::decode::Stream, chrono::DateTime<chrono::FixedOffset>)],
    ) {
        let new = &self.alerts[first..];
        if watermarks.is_empty() && !new.iter().any(kpi::is_activation) {
            return;
        }
        let mut k = self.kpi.lock().unwrap_or_else(|p| p.into_inner());
        for a in new {
            k.observe(a);
        }
        if let Some(w) = watermarks.iter().map(|(_, w)| w.timestamp()).max() {
            k.advance(w);
        }
        if k.stale_due().is_some() {
            let mut stale = Vec::new();
            self.policy.open_longer_than(kpi::STALE_AFTER_S, &mut stale);
            if let Some(t) = &self.tasks {
                t.open_longer_than(kpi::STALE_AFTER_S, &mut stale);
            }
            k.set_stale(stale);
        }
        for (center, f) in k.take_changed() {
            self.metrics.kpi.set(&center, &f);
        }
    }

    /// The alerts from `first` on into incidents (each stamped with its `incident_id`),
    /// then the incidents quiet past their gap at the new watermarks resolve.
    fn group(
        &mut self,
        first: usize,
        watermarks: &[(crate::decode::Stream, chrono::DateTime<chrono::FixedOffset>)],
    ) {
        self.incidents
            .on_alerts(&mut self.alerts[first..], &mut self.incident_msgs);
        for (stream, w) in watermarks {
            self.incidents
                .on_watermark(*stream, w.timestamp(), &mut self.incident_msgs);
        }
    }

    async fn publish_all(&mut self, summary: &mut RunSummary) -> Vec<Ack> {
        let mut acks: Vec<Ack> = Vec::new();
        let mut alerts = std::mem::take(&mut self.alerts);
        for a in &mut alerts {
            if let Some(c) = &self.console {
                c.observe(a);
            }
            let a = &*a;
            summary.alerts += 1;
            self.metrics.alert(a);
            tracing::info!(alert_id = %a.alert_id, status = a.status.as_str(), level = a.level.as_str(), title = %a.title, "alert");
            let json = serde_json::to_vec(a).expect("alerts serialize");
            if self.admitted.len() != self.sinks.len() {
                self.admitted
                    .resize_with(self.sinks.len(), Default::default);
            }
            for (s, admitted) in self.sinks.iter().zip(self.admitted.iter_mut()) {
                if !admitted.admit(s.filter(), a) {
                    continue;
                }
                let started = Instant::now();
                let ack = send_with_backpressure(|| s.send(a, &json)).await;
                let hist = self.metrics.sink_seconds.with_label_values(&[s.name()]);
                acks.push(Box::pin(async move {
                    let r = ack.await;
                    hist.observe(started.elapsed().as_secs_f64());
                    r
                }));
            }
        }
        self.publish_incidents(&mut acks).await;
        acks
    }

    /// Sends the pending incident messages to every sink that takes incidents, after the
    /// alerts that caused them; their acks join `acks` (same input, same transaction).
    async fn publish_incidents(&mut self, acks: &mut Vec<Ack>) {
        if self.incident_msgs.is_empty() {
            return;
        }
        if self.admitted_incidents.len() != self.sinks.len() {
            self.admitted_incidents
                .resize_with(self.sinks.len(), Default::default);
        }
        for mut i in std::mem::take(&mut self.incident_msgs) {
            if let Some(c) = &self.console {
                c.observe_incident(&mut i);
            }
            self.metrics.incident(&i);
            tracing::info!(incident_id = %i.incident_id, status = i.status.as_str(), level = i.level.as_str(), members = i.members.len(), title = %i.title, "incident");
            let json = serde_json::to_vec(&i).expect("incidents serialize");
            for (s, admitted) in self.sinks.iter().zip(self.admitted_incidents.iter_mut()) {
                if !s.takes_incidents() || !admitted.admit_incident(s.filter(), &i) {
                    continue;
                }
                acks.push(send_with_backpressure(|| s.send_incident(&i, &json)).await);
            }
        }
    }
}

/// `sig` as the policy should see it: silenced (anomalous made clear, and counted) when
/// its point or site is shelved at its event time.
fn shelved(shelves: &crate::alert::shelve::Shelves, metrics: &Metrics, sig: Signal) -> Signal {
    let (sig, held) = shelves.screen(sig);
    if let Some(kind) = held {
        metrics
            .alerts_shelved
            .with_label_values(&[sig.stream.as_str(), sig.detector, kind.as_str()])
            .inc();
    }
    sig
}

/// Restored records go to the detectors (`k:`, `w`), the alert policy (`e:`) or the
/// incident grouper (`i:`).
struct StateTarget<'a> {
    detectors: &'a mut DetectorSet,
    policy: &'a mut AlertPolicy,
    incidents: &'a mut IncidentGrouper,
    reserved: [usize; 3],
}

impl crate::state::changelog::RestoreTarget for StateTarget<'_> {
    fn reserve(&mut self, stream: crate::decode::Stream, _partition: i32, records: usize) {
        // Called per partition before any record: the maps are still empty, so sizing
        // them for the running total costs nothing but the last allocation.
        self.reserved[stream.index()] += records;
        self.detectors
            .reserve(stream, self.reserved[stream.index()]);
    }

    fn apply(
        &mut self,
        stream: crate::decode::Stream,
        records: &[crate::state::changelog::Record<'_>],
        failed: &mut Vec<(usize, StateError)>,
    ) {
        restore_split(
            self.detectors,
            self.policy,
            self.incidents,
            stream,
            records.iter().enumerate(),
            failed,
        );
    }
}

/// Restores changelog records into one set of detectors, its alert policy and its
/// incident grouper: episode records (`e:`) to the policy, incident records (`i:`) to the
/// grouper, the rest to the detectors as one batch. `records` carry their positions,
/// reported back in `failed`.
fn restore_split<'a>(
    detectors: &mut DetectorSet,
    policy: &mut AlertPolicy,
    incidents: &mut IncidentGrouper,
    stream: crate::decode::Stream,
    records: impl Iterator<Item = (usize, &'a crate::state::changelog::Record<'a>)> + Clone,
    failed: &mut Vec<(usize, StateError)>,
) {
    let alerting = |r: &crate::state::changelog::Record<'_>| {
        r.key.starts_with("e:") || r.key.starts_with("i:")
    };
    for (n, r) in records.clone().filter(|(_, r)| alerting(r)) {
        let restored = if r.key.starts_with("e:") {
            policy.restore(r.key, r.value)
        } else {
            incidents.restore(r.key, r.value)
        };
        if let Err(e) = restored {
            failed.push((n, e));
        }
    }
    detectors.restore_batch(
        stream,
        records
            .filter(|(_, r)| !alerting(r))
            .map(|(n, r)| (n, r.key, r.value)),
        failed,
    );
    // The policy places late keys against the stream's watermark: the restored one, not
    // none until the stream next moves (a backlog being uploaded does not move it); the
    // grouper times its alerts' resolves by it.
    if let Some(w) = detectors.watermark(stream) {
        policy.seed_watermark(stream, w);
        incidents.seed_watermark(stream, w.timestamp());
    }
}

impl Pending {
    /// Outputs not caused by one input (window closes at the end).
    fn internal(acks: Vec<Ack>) -> Self {
        Pending {
            acks,
            ..Default::default()
        }
    }

    fn snapshot(snap: Vec<(crate::decode::Stream, Change)>) -> Self {
        Pending {
            snapshot: Some(snap),
            ..Default::default()
        }
    }

    /// Adds one input's entry to this batch.
    fn merge(&mut self, one: Handled) {
        let o = one.origin;
        match self.origins.iter_mut().find(|x| same_partition(x, &o)) {
            Some(x) => *x = o,
            None => self.origins.push(o),
        }
        self.acks.extend(one.acks);
        self.alerted.extend(one.alerted);
        self.inputs += 1;
    }
}

/// An input's partition, for the watermark (-1 for files).
fn partition_of(env: &Envelope) -> i32 {
    match &env.origin {
        Origin::Kafka { partition, .. } => *partition,
        Origin::File { .. } => -1,
    }
}

fn same_partition(a: &Origin, b: &Origin) -> bool {
    match (a, b) {
        (
            Origin::Kafka {
                topic: t1,
                partition: p1,
                ..
            },
            Origin::Kafka {
                topic: t2,
                partition: p2,
                ..
            },
        ) => p1 == p2 && t1 == t2,
        (Origin::File { name: n1, .. }, Origin::File { name: n2, .. }) => n1 == n2,
        _ => false,
    }
}

/// A new, empty detector set, alert policy and incident grouper for `cfg`, keeping state
/// for what `owner` owns.
fn fresh_state(
    cfg: &Config,
    clock: &Arc<dyn Clock>,
    owner: crate::detect::Owner,
    live: bool,
) -> (DetectorSet, AlertPolicy, IncidentGrouper) {
    let mut ctx = BuildCtx {
        owner,
        ..cfg.build_ctx()
    };
    if live {
        ctx.screen.max_jump = None;
    }
    (
        DetectorSet::new(
            &cfg.detectors.per_stream(),
            cfg.processing.allowed_lateness,
            &ctx,
        ),
        AlertPolicy::new(cfg.alerts.clone(), cfg.regions.clone(), clock.clone()),
        IncidentGrouper::new(
            cfg.alerts.incidents.clone(),
            cfg.regions.clone(),
            clock.clone(),
        ),
    )
}

async fn commit_loop(
    mut rx: mpsc::Receiver<Pending>,
    store: Arc<dyn OffsetStore>,
    changelog: Option<ChangelogWriter>,
    metrics: Arc<Metrics>,
    shutdown: ShutdownTrigger,
) -> Result<(), SinkError> {
    // With durable state: the next offset of every fully handled input, committed with
    // the next state snapshot instead of stored for auto-commit.
    let mut handled = crate::source::Offsets::new();
    while let Some(p) = rx.recv().await {
        if let Err(e) = try_join_all(p.acks).await {
            metrics.sink_error(e.sink());
            tracing::error!(error = %e, origins = ?p.origins, "delivery failed; stopping without committing these inputs");
            shutdown.trigger();
            return Err(e);
        }
        for o in &p.origins {
            match (o, &changelog) {
                (
                    Origin::Kafka {
                        topic,
                        partition,
                        offset,
                    },
                    Some(_),
                ) => {
                    handled.insert((topic.clone(), *partition), offset + 1);
                }
                (o, None) => {
                    if let Err(e) = store.store(o) {
                        tracing::warn!(error = %e, "offset store failed");
                    }
                }
                _ => {}
            }
        }
        if let (Some(snap), Some(w)) = (p.snapshot, &changelog) {
            let offsets = std::mem::take(&mut handled);
            let committed = w.commit(&snap, &offsets, store.group_metadata()).await;
            let outcome = if committed.is_ok() {
                "committed"
            } else {
                "aborted"
            };
            metrics.transactions.with_label_values(&[outcome]).inc();
            if let Err(e) = committed {
                // The snapshot is gone with the failed transaction: stop, and let the
                // restart restore the last committed state and replay from its offsets.
                tracing::error!(error = %e, "state commit failed; stopping (restart restores the last committed state)");
                shutdown.trigger();
                return Err(SinkError::Delivery {
                    sink: "state".into(),
                    retryable: true,
                    message: e.to_string(),
                });
            }
        }
        metrics.in_flight.sub(p.inputs as i64);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) fn test_ctx() -> BuildCtx {
    BuildCtx::new(Arc::new(crate::regions::demo()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::sink::{CollectSink, LogDeadLetters};
    use crate::source::memory::MemorySource;

    async fn alerts_of(cfg: &Config, envs: Vec<Envelope>, trickle: bool) -> Vec<String> {
        let (sink, collected) = CollectSink::new();
        let clock = ManualClock::new("2026-11-27T00:00:00Z".parse().unwrap());
        let p = Pipeline::new(
            cfg,
            vec![sink],
            Arc::new(LogDeadLetters),
            Arc::new(Metrics::new()),
            Arc::new(clock),
        );
        let (trigger, _keep) = crate::shutdown::channel();
        let source = if trickle {
            MemorySource::trickle(envs)
        } else {
            MemorySource::new(envs)
        };
        let s = p.run(source, trigger).await.expect("pipeline runs");
        assert_eq!(s.invalid, 1);
        let alerts = collected.lock().unwrap();
        alerts
            .iter()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect()
    }

    /// The backlog path (batches of 1024, detectors in parallel) and the quiet-input path
    /// (each input decoded, observed and published before the next) publish the same
    /// alerts, each episode's in the same order, over the simulated city with an invalid
    /// input.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backlog_and_trickle_publish_the_same_alerts() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let cfg = crate::config::load(&root).expect("default config");
        let city = crate::simulate::generate(
            &crate::simulate::SimConfig {
                hours: 4.0,
                seed: 5,
                start: chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap(),
                sites: 8,
            },
            &cfg.regions,
        );
        let mut envs: Vec<Envelope> = city.envelopes();
        let mut bad = envs[0].clone();
        bad.payload = b"{not json".to_vec();
        envs.insert(envs.len() / 2, bad);
        assert!(
            envs.len() > 4 * BATCH,
            "the backlog run needs several full batches"
        );
        let backlog = alerts_of(&cfg, envs.clone(), false).await;
        let trickle = alerts_of(&cfg, envs, true).await;
        assert!(
            backlog.len() > 10,
            "the city raises alerts: {}",
            backlog.len()
        );
        assert_eq!(backlog.len(), trickle.len());
        assert_eq!(by_episode(&backlog), by_episode(&trickle));
    }

    /// Each episode's alerts in the order they were published. Episodes resolved by the
    /// same watermark step come out in the policy's map order, which differs between two
    /// policies (and between two runs of one path); within an episode the order is fixed.
    fn by_episode(alerts: &[String]) -> std::collections::BTreeMap<String, Vec<&str>> {
        let mut m = std::collections::BTreeMap::<String, Vec<&str>>::new();
        for a in alerts {
            let v: serde_json::Value = serde_json::from_str(a).unwrap();
            m.entry(v["alert_id"].as_str().unwrap().to_string())
                .or_default()
                .push(a);
        }
        m
    }
}

#[cfg(test)]
mod incident_tests;
#[cfg(test)]
mod late_tests;
#[cfg(test)]
mod shelve_tests;
#[cfg(test)]
mod verdict_tests;

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod kpi_tests;
