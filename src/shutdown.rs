//! Graceful shutdown: one broadcast that every long-running task listens to.
//!
//! The pipeline stops taking new input when the signal fires, drains what is in flight
//! (waits for sinks to acknowledge), commits offsets, and only then returns.

use tokio::sync::watch;

/// Sender half: trigger once, every [`Shutdown`] sees it.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Receiver half, cheap to clone into each task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been triggered (immediately if it already was).
    pub async fn recv(&mut self) {
        // An error means every trigger was dropped: treat that as shutdown too.
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// Waits for SIGTERM or ctrl-c and then triggers shutdown.
pub async fn on_signals(trigger: ShutdownTrigger) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("ctrl-c received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    trigger.trigger();
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn every_subscriber_sees_the_trigger() {
        let (t, mut a) = super::channel();
        let mut b = t.subscribe();
        assert!(!a.is_triggered());
        t.trigger();
        a.recv().await;
        b.recv().await;
        assert!(a.is_triggered() && b.is_triggered());
    }
}
