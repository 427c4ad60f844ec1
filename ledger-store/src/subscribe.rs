//! A subscription to the log: batches in gap-free order, woken by LISTEN/NOTIFY, with a
//! polling fallback because notifications are not durable.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::error::Result;
use crate::event::{Checkpoint, RecordedEvent};
use crate::read;

/// The channel the insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "ledger_events";

/// How a subscription reads.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionOptions {
    pub batch_size: usize,
    /// How long to wait for a notification before reading anyway. Also bounds how long an
    /// event stays unseen behind a long-running older transaction.
    pub poll_interval: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions { batch_size: 1_000, poll_interval: Duration::from_millis(500) }
    }
}

/// Yields the log's events after a checkpoint, batch by batch, each exactly once.
#[derive(Debug)]
pub struct Subscription {
    pool: PgPool,
    listener: Option<PgListener>,
    checkpoint: Checkpoint,
    options: SubscriptionOptions,
    notifications_received: u64,
}

impl Subscription {
    pub(crate) async fn start(pool: PgPool, after: Checkpoint, options: SubscriptionOptions) -> Result<Self> {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(Subscription { pool, listener: Some(listener), checkpoint: after, options, notifications_received: 0 })
    }

    /// The checkpoint after the last event returned.
    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// How many notifications have woken this subscription (the rest of its reads came from
    /// polling).
    pub fn notifications_received(&self) -> u64 {
        self.notifications_received
    }

    /// The next non-empty batch; waits for new events as long as it takes.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>> {
        loop {
            let batch = read::read_all(&self.pool, self.checkpoint, self.options.batch_size).await?;
            if let Some(last) = batch.last() {
                self.checkpoint = last.checkpoint();
                return Ok(batch);
            }
            self.wait().await;
        }
    }

    /// Waits for a notification or the poll interval, whichever comes first. A broken
    /// listener is dropped and the subscription goes on by polling alone, reconnecting on the
    /// next wait.
    async fn wait(&mut self) {
        let poll_interval = self.options.poll_interval;
        match self.listener.as_mut() {
            Some(listener) => match tokio::time::timeout(poll_interval, listener.try_recv()).await {
                Ok(Ok(Some(_))) => self.notifications_received += 1,
                Err(_) => {}
                Ok(Ok(None)) => {} // The connection dropped; PgListener reconnects on the next call.
                Ok(Err(error)) => {
                    tracing::warn!(%error, "lost the event notification listener; polling until it reconnects");
                    self.listener = None;
                }
            },
            None => {
                tokio::time::sleep(poll_interval).await;
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
