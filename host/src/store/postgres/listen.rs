//! [`QueueStore::signals`](crate::store::QueueStore::signals) on
//! PostgreSQL: one `LISTEN` connection per process (sqlx's [`PgListener`],
//! which reconnects and listens again by itself when its connection drops)
//! fans notifications out to every subscriber of a broadcast channel. A
//! lost connection becomes [`Signal::Resync`], so subscribers re-check what
//! they wait on instead of trusting that nothing happened meanwhile.
//!
//! The listener starts with the first subscriber and stops a few seconds
//! after the last one went away.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use super::PgStore;
use crate::store::{CANCEL_CHANNEL, QUEUE_CHANNEL, RUN_CHANNEL, Signal};

/// Signals buffered per subscriber before it lags (and gets a resync).
const CAPACITY: usize = 1024;
/// How often an idle listener checks whether anyone still subscribes.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Pause after a failed (re)connection.
const RETRY: Duration = Duration::from_millis(500);

impl PgStore {
    /// Tell every listening process (`NOTIFY channel, payload`), in a
    /// transaction of its own after the change it announces committed.
    /// Not inside the data's transaction: PostgreSQL serialises the commits
    /// of notifying transactions on one lock held through their WAL flush,
    /// which capped the whole queue at one commit per flush (measured: 885
    /// runs/s with one worker process, 573 with four); a notify-only
    /// transaction writes no WAL and holds that lock for microseconds. A
    /// lost notification costs a poll interval, never a run.
    pub(super) async fn announce(&self, channel: &str, payload: &str) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await
        {
            tracing::debug!(channel, "notify failed (a poll will catch up): {e}");
        }
    }

    /// A new subscriber to this process's signals (starting the listener).
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Signal> {
        let mut slot = self
            .signals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = slot.as_ref() {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(CAPACITY);
        *slot = Some(sender.clone());
        tokio::spawn(listen(self.clone(), sender));
        receiver
    }

    /// Forget the listener if nobody subscribes any more; true if so.
    fn unsubscribe_if_idle(&self) -> bool {
        let mut slot = self
            .signals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let idle = slot.as_ref().is_none_or(|s| s.receiver_count() == 0);
        if idle {
            *slot = None;
        }
        idle
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([QUEUE_CHANNEL, RUN_CHANNEL, CANCEL_CHANNEL])
        .await?;
    Ok(listener)
}

async fn listen(store: PgStore, sender: broadcast::Sender<Signal>) {
    let mut listener = None;
    loop {
        if store.pool.is_closed() || store.unsubscribe_if_idle() {
            return;
        }
        let Some(current) = listener.as_mut() else {
            match connect(&store.pool).await {
                Ok(made) => {
                    listener = Some(made);
                    // Anything sent while we were not listening is lost.
                    let _ = sender.send(Signal::Resync);
                }
                Err(e) => {
                    tracing::warn!("listening for queue signals: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
            continue;
        };
        // Cancel-safe: a timeout loses no notification.
        match tokio::time::timeout(IDLE_CHECK, current.try_recv()).await {
            Err(_elapsed) => {}
            Ok(Ok(Some(notification))) => {
                if let Some(signal) =
                    Signal::from_notification(notification.channel(), notification.payload())
                {
                    let _ = sender.send(signal);
                }
            }
            // The connection dropped; the next call reconnects and listens again.
            Ok(Ok(None)) => {
                let _ = sender.send(Signal::Resync);
            }
            Ok(Err(e)) => {
                tracing::warn!("queue signals: {e}");
                let _ = sender.send(Signal::Resync);
                listener = None;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
