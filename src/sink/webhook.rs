//! `webhook` sink: incident messages (the same JSON the `kafka` sink's `incidents_topic`
//! carries, docs/INCIDENTS.md) POSTed to `url` with `content-type: application/json`, one
//! incident's changes coalesced within `coalesce` (issue #23): people on the other end
//! see a hazard as a handful of messages. `messages = "alerts"` posts every episode state
//! change instead (the alert JSON, as before incidents; no coalescing).
//!
//! ```toml
//! [sinks.duty_desk]
//! type = "webhook"
//! url = "http://10.0.0.5:8080/hooks/riskstream"
//! messages = "incidents"    # or "alerts"
//! coalesce = "10s"          # incidents: at most one POST per incident per window ("0s": none)
//! timeout = "5s"            # per attempt (connect + response)
//! max_retries = 5           # after the first attempt; 5xx, 408, 429 and network errors retry
//! backoff = "250ms"         # first retry delay, doubled each time (capped at 30s)
//! buffer = 1000             # deliveries queued behind the one in progress
//! when_full = "block"       # or "drop_oldest"
//! ```
//!
//! Coalescing (`coalesce.rs`): an incident's first message is posted at once; a change
//! within `coalesce` of its last POST waits for the window's end, and later changes
//! meanwhile replace it (each message is the incident's full state), so an incident costs
//! at most one POST per window besides its first. Its resolve waits its turn the same way.
//! Acks of replaced messages resolve with the POST that replaced them (at-least-once).
//!
//! Delivery is ordered: one worker task sends the queue head, retries it with exponential
//! backoff, and only then takes the next, so an episode's `firing` never arrives after its
//! `resolved`. A delivery's ack resolves `Ok` after a 2xx, and
//! `Err(SinkError::Delivery)` once retries are exhausted (or at once on a 4xx other than 408
//! and 429: repeating the same request cannot help, `retryable: false`).
//!
//! When `buffer` deliveries are already queued:
//! - `block`: the new delivery waits, in order, for space; its ack stays pending, so the
//!   input's offset is not stored and, once `processing.max_in_flight` inputs are waiting,
//!   the pipeline stops consuming. Backpressure reaches the source; nothing is lost.
//! - `drop_oldest`: the oldest queued (not yet started) delivery is dropped to make room. The
//!   operator chose to lose it: it is logged at warn level with its `alert_id`, counted in
//!   `riskstream_sink_dropped_total{sink}`, and its ack resolves `Ok` so the input's offset
//!   moves on.
//!
//! Plain `http://` only: this build carries no TLS stack (put a local TLS-terminating proxy
//! in front of an `https://` endpoint). The HTTP client and the ordered queue here are also
//! used by the `alertmanager` sink and by the `cap` sink's `url` mode.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus::IntCounter;
use serde::Deserialize;
use tokio::sync::{oneshot, Notify};

use super::coalesce::Coalescer;
use super::{parse_streams, Ack, Filter, Sink, SinkCtx, SinkError, SinkSpec};
use crate::alert::{Alert, Incident, Level, Status};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// `http://host:port/path`; required.
    pub url: String,
    /// What is posted; default `incidents`.
    #[serde(default)]
    pub messages: Messages,
    /// `incidents`: one incident's changes within this window are one POST; default 10s.
    #[serde(default = "default_coalesce", with = "humantime_serde")]
    pub coalesce: Duration,
    /// Per attempt; default 5s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after the first attempt; default 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry delay, doubled per retry up to 30s; default 250ms.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Deliveries queued behind the one in progress; default 1000.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// What to do when `buffer` is full; default `block`.
    #[serde(default)]
    pub when_full: WhenFull,
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default)]
    pub min_level: Option<Level>,
}

/// What a webhook posts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Messages {
    /// Incident messages, coalesced: what people act on.
    #[default]
    Incidents,
    /// Every episode state change: for machines that want the detectors' view.
    Alerts,
}

/// Long enough to fold a site's detectors joining and the level settling, short enough
/// that a rise to red reaches the duty desk within seconds.
fn default_coalesce() -> Duration {
    Duration::from_secs(10)
}

/// The policy for a full buffer.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for space: backpressure, never a loss.
    #[default]
    Block,
    /// Drop the oldest queued delivery (counted, logged, acked `Ok`).
    DropOldest,
}

pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(crate) fn default_max_retries() -> u32 {
    5
}
pub(crate) fn default_backoff() -> Duration {
    Duration::from_millis(250)
}
fn default_buffer() -> usize {
    1000
}

impl SinkSpec for WebhookSinkConfig {
    const TYPE: &'static str = "webhook";

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        validate_http_url(&self.url, &format!("{path}.url"), problems);
        validate_http_knobs(path, self.timeout, problems);
        if self.buffer == 0 {
            problems.push(format!("{path}.buffer: must be >= 1"));
        }
        // Longer and a change (a rise to red) waits too long to reach people.
        if self.coalesce > Duration::from_secs(300) {
            problems.push(format!("{path}.coalesce: must be <= 5m"));
        }
        parse_streams(&self.streams, path, problems);
    }

    fn build(&self, name: &str, _ctx: &SinkCtx) -> Result<Arc<dyn Sink>, SinkError> {
        let uri = parse_http_url(&self.url).map_err(|message| SinkError::Build {
            sink: name.into(),
            message: format!("url: {message}"),
        })?;
        let http = HttpClient::new(self.timeout, self.max_retries, self.backoff);
        let queue = Arc::new(DeliveryQueue::new(
            name,
            http,
            uri,
            "application/json",
            self.buffer,
            self.when_full,
        ));
        let coalescer = (self.messages == Messages::Incidents && !self.coalesce.is_zero())
            .then(|| Coalescer::new(self.coalesce, queue.clone()));
        Ok(Arc::new(WebhookSink {
            name: name.to_string(),
            filter: Filter {
                streams: parse_streams(&self.streams, "", &mut Vec::new()),
                min_level: self.min_level,
            },
            messages: self.messages,
            queue,
            coalescer,
        }))
    }
}

/// Problems with an endpoint URL, named by `path`.
pub(crate) fn validate_http_url(url: &str, path: &str, problems: &mut Vec<String>) {
    if url.trim().is_empty() {
        problems.push(format!("{path}: must not be empty"));
    } else if let Err(m) = parse_http_url(url) {
        problems.push(format!("{path}: {m}"));
    }
}

/// Problems with the shared HTTP knobs.
pub(crate) fn validate_http_knobs(path: &str, timeout: Duration, problems: &mut Vec<String>) {
    if timeout.is_zero() {
        problems.push(format!("{path}.timeout: must be > 0"));
    }
}

/// Parses an `http://` URL; `https://` is refused with the reason.
pub(crate) fn parse_http_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`{url}`: https is not supported by this build (no TLS stack); use http or a local TLS proxy"
            ))
        }
        _ => return Err(format!("`{url}` must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(uri)
}

pub struct WebhookSink {
    name: String,
    filter: Filter,
    messages: Messages,
    queue: Arc<DeliveryQueue>,
    /// `incidents` with a window: folds an incident's changes.
    coalescer: Option<Coalescer>,
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> &Filter {
        &self.filter
    }

    fn send(&self, alert: &Alert, json: &[u8]) -> Result<Ack, SinkError> {
        if self.messages != Messages::Alerts {
            return Ok(Box::pin(async { Ok(()) }));
        }
        self.queue
            .submit(&alert.alert_id, Bytes::copy_from_slice(json))
    }

    fn takes_incidents(&self) -> bool {
        self.messages == Messages::Incidents
    }

    fn send_incident(&self, i: &Incident, json: &[u8]) -> Result<Ack, SinkError> {
        let body = Bytes::copy_from_slice(json);
        match &self.coalescer {
            Some(c) => c.submit(&i.incident_id, body, i.status == Status::Resolved),
            None => self.queue.submit(&i.incident_id, body),
        }
    }
}

/// Why one attempt failed.
#[derive(Debug)]
struct Failure {
    retryable: bool,
    message: String,
}

/// A plain-HTTP/1.1 POST client with a per-attempt timeout and exponential-backoff retries.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
}

impl HttpClient {
    pub(crate) fn new(timeout: Duration, max_retries: u32, backoff: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            timeout,
            max_retries,
            backoff,
        }
    }

    async fn attempt(
        &self,
        uri: &Uri,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<(), Failure> {
        let req = hyper::Request::post(uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("riskstream/", env!("CARGO_PKG_VERSION"))),
            )
            .body(Full::new(body))
            .map_err(|e| Failure {
                retryable: false,
                message: e.to_string(),
            })?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| Failure {
                retryable: true,
                message: format!("request failed: {e}"),
            })?;
            let status = resp.status();
            // Read the body: it lets the connection be reused and explains a failure.
            let text = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                let code = status.as_u16();
                Err(Failure {
                    retryable: status.is_server_error() || code == 408 || code == 429,
                    message: format!(
                        "HTTP {status}: {}",
                        text.chars().take(200).collect::<String>()
                    ),
                })
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                retryable: true,
                message: format!("no response within {:?}", self.timeout),
            }),
        }
    }

    /// POSTs `body`, retrying retryable failures up to `max_retries` times.
    pub(crate) async fn post(
        &self,
        sink: &str,
        uri: &Uri,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<(), SinkError> {
        let mut delay = self.backoff;
        let mut attempt = 0u32;
        loop {
            match self.attempt(uri, content_type, body.clone()).await {
                Ok(()) => return Ok(()),
                Err(f) if f.retryable && attempt < self.max_retries => {
                    attempt += 1;
                    tracing::warn!(sink, %uri, attempt, error = %f.message, "delivery failed; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(f) => {
                    return Err(SinkError::Delivery {
                        sink: sink.to_string(),
                        retryable: f.retryable,
                        message: format!(
                            "POST {uri} after {} attempt(s): {}",
                            attempt + 1,
                            f.message
                        ),
                    })
                }
            }
        }
    }
}

/// One queued POST and who waits for it.
struct Job {
    alert_id: String,
    body: Bytes,
    done: Option<oneshot::Sender<Result<(), SinkError>>>,
}

#[derive(Default)]
struct QueueState {
    /// Deliveries waiting behind the one in progress, at most `capacity`.
    queue: VecDeque<Job>,
    /// `block` only: deliveries waiting for space in `queue`, in order.
    overflow: VecDeque<Job>,
    closed: bool,
}

struct QueueShared {
    sink: String,
    state: Mutex<QueueState>,
    wake: Notify,
    capacity: usize,
    when_full: WhenFull,
    dropped: IntCounter,
}

/// An ordered, bounded delivery queue served by one worker task (started on first use,
/// ended when the queue is dropped and drained).
pub(crate) struct DeliveryQueue {
    shared: Arc<QueueShared>,
    http: HttpClient,
    uri: Uri,
    content_type: &'static str,
    started: Once,
}

impl DeliveryQueue {
    pub(crate) fn new(
        sink: &str,
        http: HttpClient,
        uri: Uri,
        content_type: &'static str,
        capacity: usize,
        when_full: WhenFull,
    ) -> Self {
        Self {
            shared: Arc::new(QueueShared {
                sink: sink.to_string(),
                state: Mutex::new(QueueState::default()),
                wake: Notify::new(),
                capacity: capacity.max(1),
                when_full,
                dropped: crate::telemetry::metrics::sink_dropped().with_label_values(&[sink]),
            }),
            http,
            uri,
            content_type,
            started: Once::new(),
        }
    }

    pub(crate) fn sink_name(&self) -> &str {
        &self.shared.sink
    }

    /// Queues one delivery; the ack resolves when it is delivered (or dropped by policy).
    pub(crate) fn submit(&self, alert_id: &str, body: Bytes) -> Result<Ack, SinkError> {
        let rx = self.enqueue(alert_id, body, true)?;
        let sink = self.shared.sink.clone();
        Ok(Box::pin(async move {
            match rx {
                Some(rx) => rx.await.unwrap_or_else(|_| {
                    Err(SinkError::Delivery {
                        sink,
                        retryable: true,
                        message: "sink closed before delivery".into(),
                    })
                }),
                None => Ok(()),
            }
        }))
    }

    /// Queues a delivery nobody waits for (periodic re-sends).
    pub(crate) fn submit_detached(&self, alert_id: &str, body: Bytes) -> Result<(), SinkError> {
        self.enqueue(alert_id, body, false).map(|_| ())
    }

    fn enqueue(
        &self,
        alert_id: &str,
        body: Bytes,
        want_ack: bool,
    ) -> Result<Option<oneshot::Receiver<Result<(), SinkError>>>, SinkError> {
        self.start_worker()?;
        let (tx, rx) = if want_ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let job = Job {
            alert_id: alert_id.to_string(),
            body,
            done: tx,
        };
        let sh = &self.shared;
        {
            let mut st = sh.state.lock().expect("queue lock");
            if st.queue.len() < sh.capacity && st.overflow.is_empty() {
                st.queue.push_back(job);
            } else {
                match sh.when_full {
                    WhenFull::Block => st.overflow.push_back(job),
                    WhenFull::DropOldest => {
                        if let Some(old) = st.queue.pop_front() {
                            sh.dropped.inc();
                            tracing::warn!(
                                sink = %sh.sink,
                                alert_id = %old.alert_id,
                                "buffer full: dropped the oldest pending delivery (when_full = drop_oldest)"
                            );
                            if let Some(done) = old.done {
                                // The operator chose to lose it: the input may move on.
                                let _ = done.send(Ok(()));
                            }
                        }
                        st.queue.push_back(job);
                    }
                }
            }
        }
        sh.wake.notify_one();
        Ok(rx)
    }

    fn start_worker(&self) -> Result<(), SinkError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| SinkError::Build {
            sink: self.shared.sink.clone(),
            message: "an HTTP sink needs a tokio runtime".into(),
        })?;
        self.started.call_once(|| {
            handle.spawn(worker(
                self.shared.clone(),
                self.http.clone(),
                self.uri.clone(),
                self.content_type,
            ));
        });
        Ok(())
    }
}

impl Drop for DeliveryQueue {
    fn drop(&mut self) {
        self.shared.state.lock().expect("queue lock").closed = true;
        self.shared.wake.notify_one();
    }
}

async fn worker(sh: Arc<QueueShared>, http: HttpClient, uri: Uri, content_type: &'static str) {
    loop {
        let job = {
            let mut st = sh.state.lock().expect("queue lock");
            match st.queue.pop_front() {
                Some(j) => {
                    // Space freed: the oldest waiting delivery moves up, in order.
                    if let Some(w) = st.overflow.pop_front() {
                        st.queue.push_back(w);
                    }
                    Some(j)
                }
                None if st.closed => return,
                None => None,
            }
        };
        let Some(job) = job else {
            // notify_one keeps a permit when nobody waits, so no wake-up is lost.
            sh.wake.notified().await;
            continue;
        };
        let r = http.post(&sh.sink, &uri, content_type, job.body).await;
        if let Err(e) = &r {
            tracing::error!(sink = %sh.sink, alert_id = %job.alert_id, error = %e, "delivery failed");
        }
        if let Some(done) = job.done {
            let _ = done.send(r);
        }
    }
}

#[cfg(test)]
pub(crate) mod testserver {
    //! A tiny HTTP/1.1 server for sink tests: records requests, answers from a script.

    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::{mpsc, Semaphore};

    #[derive(Debug, Clone)]
    pub struct Request {
        pub path: String,
        pub content_type: String,
        pub body: Vec<u8>,
    }

    pub struct Server {
        pub url: String,
        pub requests: Arc<Mutex<Vec<Request>>>,
        /// One message per request received (before it is answered).
        pub arrived: mpsc::UnboundedReceiver<()>,
        /// When `gated`, each response waits for one permit here.
        pub gate: Arc<Semaphore>,
    }

    /// Answers `fail_first` requests with 503, then 200. With `gated`, each answer waits for
    /// a permit on `gate`. `status` overrides the failure status.
    pub async fn start(fail_first: usize, status: u16, gated: bool) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (tx, arrived) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let (reqs, g) = (requests.clone(), gate.clone());
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = l.accept().await else {
                    return;
                };
                let (reqs, g, tx) = (reqs.clone(), g.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut r = BufReader::new(sock);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let (mut len, mut ct) = (0usize, String::new());
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).await.unwrap();
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            let (k, v) = h.split_once(':').unwrap();
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => len = v.trim().parse().unwrap(),
                                "content-type" => ct = v.trim().to_string(),
                                _ => {}
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).await.unwrap();
                        let n = {
                            let mut q = reqs.lock().unwrap();
                            q.push(Request {
                                path,
                                content_type: ct,
                                body,
                            });
                            q.len()
                        };
                        let _ = tx.send(());
                        if gated {
                            g.acquire().await.unwrap().forget();
                        }
                        let code = if n <= fail_first { status } else { 200 };
                        let resp = format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
                        );
                        if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Server {
            url,
            requests,
            arrived,
            gate,
        }
    }

    impl Server {
        pub fn bodies(&self) -> Vec<String> {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::testserver::start;
    use super::*;
    use crate::telemetry::metrics::sink_dropped;

    fn alert(id: &str) -> Alert {
        serde_json::from_value(serde_json::json!({
            "alert_id": id, "status":"firing","level":"orange","stream":"sensors","detector":"threshold",
            "subject":{"sensor_id":"S-1"},"title":"t","evidence":{"observed":1.0,"expected":0.0,"score":1.0,"threshold":1.0,"window":"1m"},
            "first_event_ts":"2026-11-26T08:00:00+08:00","detected_at":"2026-11-26T00:01:00.000Z","event_ids":[],"route":[]
        }))
        .unwrap()
    }

    /// A webhook posting episodes: the delivery tests below are about the queue.
    fn sink(name: &str, toml_text: &str) -> Arc<dyn Sink> {
        let cfg: WebhookSinkConfig =
            toml::from_str(&format!("messages = \"alerts\"\n{toml_text}")).unwrap();
        let mut problems = Vec::new();
        cfg.validate(&format!("sinks.{name}"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        cfg.build(name, &SinkCtx::default()).unwrap()
    }

    fn send(s: &Arc<dyn Sink>, id: &str) -> Ack {
        let a = alert(id);
        s.send(&a, &serde_json::to_vec(&a).unwrap()).unwrap()
    }

    fn incident(status: &str, level: &str, seq: u32) -> Incident {
        serde_json::from_value(serde_json::json!({
            "incident_id":"sensors:site:SITE-1:1","status":status,"level":level,"stream":"sensors",
            "subject":{"site_id":"SITE-1"},"title":"t","route":["330503101"],"members":[],
            "first_event_ts":"2026-11-26T08:00:00+08:00","detected_at":"2026-11-26T00:01:00.000Z","seq":seq
        }))
        .unwrap()
    }

    /// The default posts incidents, not episodes: open at once, then the level changes and
    /// the resolve within one window as one POST of the latest state.
    #[tokio::test]
    async fn incidents_by_default_coalesced_within_the_window() {
        let srv = start(0, 200, false).await;
        let cfg: WebhookSinkConfig =
            toml::from_str(&format!("url = \"{}\"\ncoalesce = \"300ms\"", srv.url)).unwrap();
        let s = cfg.build("hook_incidents", &SinkCtx::default()).unwrap();
        assert!(s.takes_incidents());
        let a = alert("a1");
        s.send(&a, b"{}").unwrap().await.unwrap();
        assert!(srv.bodies().is_empty(), "episodes are not posted");
        let post = |i: Incident| {
            s.send_incident(&i, &serde_json::to_vec(&i).unwrap())
                .unwrap()
        };
        post(incident("firing", "yellow", 1)).await.unwrap();
        let acks = [
            post(incident("firing", "orange", 2)),
            post(incident("firing", "red", 3)),
            post(incident("resolved", "red", 4)),
        ];
        for a in acks {
            a.await.unwrap();
        }
        let seqs: Vec<u64> = srv
            .bodies()
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            seqs,
            [1, 4],
            "the open, then the latest state of the window"
        );
    }

    #[test]
    fn validation_names_the_path() {
        let cfg: WebhookSinkConfig =
            toml::from_str("url = \"https://x.example/h\"\nbuffer = 0\ntimeout = \"0s\"").unwrap();
        let mut p = Vec::new();
        cfg.validate("sinks.hook", &mut p);
        assert!(
            p.iter()
                .any(|m| m.starts_with("sinks.hook.url: ") && m.contains("https")),
            "{p:?}"
        );
        assert!(
            p.contains(&"sinks.hook.buffer: must be >= 1".to_string()),
            "{p:?}"
        );
        assert!(
            p.contains(&"sinks.hook.timeout: must be > 0".to_string()),
            "{p:?}"
        );
        let mut p = Vec::new();
        toml::from_str::<WebhookSinkConfig>("url = \"\"")
            .unwrap()
            .validate("sinks.hook", &mut p);
        assert_eq!(p, vec!["sinks.hook.url: must not be empty".to_string()]);
        assert!(
            toml::from_str::<WebhookSinkConfig>("url = \"http://h\"\nwhen_full = \"spill\"")
                .is_err()
        );
        assert!(toml::from_str::<WebhookSinkConfig>("url = \"http://h\"\nretries = 1").is_err());
        let mut p = Vec::new();
        toml::from_str::<WebhookSinkConfig>("url = \"http://h\"\ncoalesce = \"10m\"")
            .unwrap()
            .validate("sinks.hook", &mut p);
        assert_eq!(p, vec!["sinks.hook.coalesce: must be <= 5m".to_string()]);
    }

    #[tokio::test]
    async fn retries_until_the_endpoint_recovers() {
        let srv = start(2, 503, false).await;
        let s = sink(
            "hook_retry",
            &format!(
                "url = \"{}/hook\"\nbackoff = \"10ms\"\nmax_retries = 3",
                srv.url
            ),
        );
        send(&s, "a1").await.expect("delivered after 2 failures");
        let reqs = srv.requests.lock().unwrap().clone();
        assert_eq!(reqs.len(), 3, "two 503s then a 200");
        assert!(reqs
            .iter()
            .all(|r| r.path == "/hook" && r.content_type == "application/json"));
        let j: serde_json::Value = serde_json::from_slice(&reqs[2].body).unwrap();
        assert_eq!(j["alert_id"], "a1");
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_and_at_once_on_a_client_error() {
        let srv = start(usize::MAX, 500, false).await;
        let s = sink(
            "hook_giveup",
            &format!("url = \"{}\"\nbackoff = \"1ms\"\nmax_retries = 2", srv.url),
        );
        match send(&s, "a1").await {
            Err(SinkError::Delivery {
                sink,
                retryable: true,
                message,
            }) => {
                assert_eq!(sink, "hook_giveup");
                assert!(message.contains("3 attempt"), "{message}");
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(srv.requests.lock().unwrap().len(), 3);

        let srv = start(usize::MAX, 400, false).await;
        let s = sink(
            "hook_400",
            &format!("url = \"{}\"\nbackoff = \"1ms\"", srv.url),
        );
        assert!(matches!(
            send(&s, "a1").await,
            Err(SinkError::Delivery {
                retryable: false,
                ..
            })
        ));
        assert_eq!(
            srv.requests.lock().unwrap().len(),
            1,
            "a 400 is not retried"
        );
    }

    #[tokio::test]
    async fn unreachable_endpoint_fails_retryable() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let s = sink(
            "hook_down",
            &format!("url = \"http://{addr}\"\nbackoff = \"1ms\"\nmax_retries = 1"),
        );
        assert!(matches!(
            send(&s, "a1").await,
            Err(SinkError::Delivery {
                retryable: true,
                ..
            })
        ));
    }

    /// buffer = 2, a gated (stalled) endpoint: the 4th delivery evicts the 2nd (the oldest
    /// queued; the 1st is in progress), whose ack resolves Ok at once and is counted.
    #[tokio::test]
    async fn drop_oldest_drops_counts_and_acks_the_oldest_queued() {
        let mut srv = start(0, 200, true).await;
        let name = "hook_drop";
        let s = sink(
            name,
            &format!(
                "url = \"{}\"\nbuffer = 2\nwhen_full = \"drop_oldest\"",
                srv.url
            ),
        );
        let before = sink_dropped().with_label_values(&[name]).get();
        let a1 = send(&s, "a1");
        srv.arrived.recv().await.unwrap(); // a1 is in progress at the server
        let a2 = send(&s, "a2");
        let a3 = send(&s, "a3");
        let mut a4 = send(&s, "a4");
        assert_eq!(
            a2.now_or_never().map(|r| r.is_ok()),
            Some(true),
            "dropped => acked Ok"
        );
        assert!(
            (&mut a4).now_or_never().is_none(),
            "a4 is queued, not delivered"
        );
        assert_eq!(sink_dropped().with_label_values(&[name]).get(), before + 1);
        srv.gate.add_permits(10);
        a1.await.unwrap();
        a3.await.unwrap();
        a4.await.unwrap();
        let ids: Vec<String> = srv
            .bodies()
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["alert_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids, ["a1", "a3", "a4"]);
    }

    /// buffer = 1, a stalled endpoint: the 3rd delivery finds the buffer full and waits; its
    /// ack is not ready (no drop, no error) until space frees; all arrive, in order.
    #[tokio::test]
    async fn block_holds_the_ack_until_space_and_loses_nothing() {
        let mut srv = start(0, 200, true).await;
        let name = "hook_block";
        let s = sink(
            name,
            &format!("url = \"{}\"\nbuffer = 1\nwhen_full = \"block\"", srv.url),
        );
        let a1 = send(&s, "a1");
        srv.arrived.recv().await.unwrap();
        let a2 = send(&s, "a2");
        let mut a3 = send(&s, "a3");
        let mut a4 = send(&s, "a4");
        assert!(futures::poll!(&mut a3).is_pending(), "a3 waits for space");
        assert!((&mut a4).now_or_never().is_none(), "a4 waits for space");
        assert_eq!(sink_dropped().with_label_values(&[name]).get(), 0);
        srv.gate.add_permits(1); // a1 answered: a2 starts, a3 moves into the buffer
        a1.await.unwrap();
        srv.arrived.recv().await.unwrap();
        assert!(
            (&mut a3).now_or_never().is_none(),
            "a3 queued, not yet delivered"
        );
        srv.gate.add_permits(10);
        a2.await.unwrap();
        a3.await.unwrap();
        a4.await.unwrap();
        assert_eq!(srv.requests.lock().unwrap().len(), 4);
        let ids: Vec<String> = srv
            .bodies()
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["alert_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids, ["a1", "a2", "a3", "a4"]);
    }
}
