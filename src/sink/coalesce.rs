//! Per-key coalescing in front of an HTTP delivery queue: people's channels (webhooks to
//! duty desks, chat robots) get a handful of messages per hazard, not one per change.
//!
//! A key's (an incident's) first message goes out at once: a new red hazard is never
//! held back. A message arriving within `window` of the key's last delivery waits until
//! the window has passed; messages arriving meanwhile replace it (each is a full
//! snapshot, the latest is the truth), so a key costs at most one delivery per window
//! plus its first. A key's final message (a resolve) waits its turn like the others and
//! then forgets the key.
//!
//! Delivery guarantee: at-least-once, as the queue's. A replaced message's ack resolves
//! with the delivery that replaced it, so an input's offset is stored only once what it
//! caused is delivered. The price: an input whose message waits holds the commit of the
//! inputs behind it for up to `window` (consumption pauses once
//! `processing.max_in_flight` inputs wait; 20000 in 10 s is 2000 inputs/s).
//!
//! Memory: one entry per key with a message sent and no final message yet (an open
//! incident this sink has seen).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::webhook::DeliveryQueue;
use super::{Ack, SinkError};

type Waiter = oneshot::Sender<Result<(), SinkError>>;

/// What a key is waiting to send.
struct Pending {
    body: Bytes,
    last: bool,
    waiters: Vec<Waiter>,
}

struct Slot {
    last_sent: Instant,
    pending: Option<Pending>,
}

type Slots = Arc<Mutex<HashMap<String, Slot>>>;

pub(crate) struct Coalescer {
    window: Duration,
    queue: Arc<DeliveryQueue>,
    slots: Slots,
}

impl Coalescer {
    pub(crate) fn new(window: Duration, queue: Arc<DeliveryQueue>) -> Self {
        Self {
            window,
            queue,
            slots: Arc::default(),
        }
    }

    /// Keys with a message sent and no final message yet.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.slots.lock().expect("coalesce lock").len()
    }

    /// Sends `body` for `key` now or merges it into the key's next delivery; `last` marks
    /// the key's final message. The ack resolves when the delivery carrying it is done.
    pub(crate) fn submit(&self, key: &str, body: Bytes, last: bool) -> Result<Ack, SinkError> {
        let now = Instant::now();
        let mut slots = self.slots.lock().expect("coalesce lock");
        let Some(slot) = slots.get_mut(key) else {
            if !last {
                slots.insert(
                    key.to_string(),
                    Slot {
                        last_sent: now,
                        pending: None,
                    },
                );
            }
            return self.queue.submit(key, body);
        };
        let (tx, rx) = oneshot::channel();
        match &mut slot.pending {
            Some(p) => {
                p.body = body;
                p.last |= last;
                p.waiters.push(tx);
            }
            None if now >= slot.last_sent + self.window => {
                if last {
                    slots.remove(key);
                } else {
                    slot.last_sent = now;
                }
                return self.queue.submit(key, body);
            }
            None => {
                slot.pending = Some(Pending {
                    body,
                    last,
                    waiters: vec![tx],
                });
                tokio::spawn(flush_at(
                    slot.last_sent + self.window,
                    key.to_string(),
                    self.slots.clone(),
                    self.queue.clone(),
                ));
            }
        }
        Ok(waiting(rx, self.queue.sink_name().to_string()))
    }
}

fn waiting(rx: oneshot::Receiver<Result<(), SinkError>>, sink: String) -> Ack {
    Box::pin(async move {
        rx.await.unwrap_or_else(|_| {
            Err(SinkError::Delivery {
                sink,
                retryable: true,
                message: "sink closed before delivery".into(),
            })
        })
    })
}

/// Delivers the key's pending message at `at` and answers everyone it carries.
async fn flush_at(at: Instant, key: String, slots: Slots, queue: Arc<DeliveryQueue>) {
    tokio::time::sleep_until(at).await;
    let (ack, waiters) = {
        let mut s = slots.lock().expect("coalesce lock");
        let Some(slot) = s.get_mut(&key) else { return };
        let Some(p) = slot.pending.take() else { return };
        slot.last_sent = Instant::now();
        if p.last {
            s.remove(&key);
        }
        // Queued under the lock, so a later message of the key cannot overtake it.
        (queue.submit(&key, p.body), p.waiters)
    };
    let r = match ack {
        Ok(a) => a.await,
        Err(e) => Err(e),
    };
    for w in waiters {
        let _ = w.send(r.clone());
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::super::webhook::{testserver::start, HttpClient, WhenFull};
    use super::*;

    async fn setup(window_ms: u64) -> (super::super::webhook::testserver::Server, Coalescer) {
        let srv = start(0, 200, false).await;
        let q = DeliveryQueue::new(
            "coalesce_test",
            HttpClient::new(Duration::from_secs(2), 0, Duration::from_millis(1)),
            super::super::webhook::parse_http_url(&srv.url).unwrap(),
            "application/json",
            100,
            WhenFull::Block,
        );
        (
            srv,
            Coalescer::new(Duration::from_millis(window_ms), Arc::new(q)),
        )
    }

    #[tokio::test]
    async fn changes_within_the_window_are_one_delivery_of_the_latest() {
        let (srv, c) = setup(300).await;
        c.submit("i1", Bytes::from_static(b"open"), false)
            .unwrap()
            .await
            .unwrap();
        assert_eq!(srv.bodies(), ["open"], "the first message goes at once");
        let mut a2 = c
            .submit("i1", Bytes::from_static(b"orange"), false)
            .unwrap();
        let a3 = c.submit("i1", Bytes::from_static(b"red"), false).unwrap();
        // Another key is not held back by i1's window.
        c.submit("i2", Bytes::from_static(b"other"), false)
            .unwrap()
            .await
            .unwrap();
        assert!(
            (&mut a2).now_or_never().is_none(),
            "a waiting message is not acked before its delivery"
        );
        a3.await.unwrap();
        a2.await.unwrap();
        assert_eq!(srv.bodies(), ["open", "other", "red"]);
        assert_eq!(c.keys(), 2);
    }

    #[tokio::test]
    async fn a_resolve_waits_its_turn_then_forgets_the_key() {
        let (srv, c) = setup(200).await;
        let started = Instant::now();
        c.submit("i1", Bytes::from_static(b"open"), false)
            .unwrap()
            .await
            .unwrap();
        c.submit("i1", Bytes::from_static(b"resolved"), true)
            .unwrap()
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(srv.bodies(), ["open", "resolved"]);
        assert_eq!(c.keys(), 0, "resolved: nothing kept");
        // After the window a message goes out at once again.
        let (srv, c) = setup(300).await;
        c.submit("i1", Bytes::from_static(b"open"), false)
            .unwrap()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        let t = Instant::now();
        c.submit("i1", Bytes::from_static(b"red"), false)
            .unwrap()
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(srv.bodies(), ["open", "red"]);
    }
}
