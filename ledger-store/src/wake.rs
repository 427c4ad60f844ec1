//! Waking a reader of the log when events are appended: the insert trigger's `NOTIFY
//! ledger_events` (one per appending statement), with a timeout because notifications are
//! not durable (a listener that was reconnecting missed them). Projection runners wait on
//! it when caught up.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::error::Result;

/// The channel the insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "ledger_events";

/// Waits for the next append's notification, or a timeout, whichever comes first.
#[derive(Debug)]
pub struct AppendWaker {
    pool: PgPool,
    listener: Option<PgListener>,
    notifications_received: u64,
}

impl AppendWaker {
    /// Listens on its own connection of `pool`.
    pub async fn listen(pool: &PgPool) -> Result<AppendWaker> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(AppendWaker { pool: pool.clone(), listener: Some(listener), notifications_received: 0 })
    }

    /// How many notifications have woken it (the other waits ended by their timeout).
    pub fn notifications_received(&self) -> u64 {
        self.notifications_received
    }

    /// Waits for a notification or `timeout`. A broken listener is dropped and the waker
    /// goes on with timeouts alone, reconnecting on the next wait.
    pub async fn wait(&mut self, timeout: Duration) {
        match self.listener.as_mut() {
            Some(listener) => match tokio::time::timeout(timeout, listener.try_recv()).await {
                Ok(Ok(Some(_))) => self.notifications_received += 1,
                Err(_) => {}
                Ok(Ok(None)) => {} // The connection dropped; PgListener reconnects on the next call.
                Ok(Err(error)) => {
                    tracing::warn!(%error, "lost the event notification listener; polling until it reconnects");
                    self.listener = None;
                }
            },
            None => {
                tokio::time::sleep(timeout).await;
                self.listener = reconnect(&self.pool).await;
            }
        }
    }
}

async fn reconnect(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(NOTIFY_CHANNEL).await.ok()?;
    Some(listener)
}
