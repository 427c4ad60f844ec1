//! Waking a reader of the log when events are appended: the store sends `NOTIFY
//! ledger_events` once its append has committed ([`AppendNotifier`]), with a timeout on the
//! reader's side because notifications are not durable (a listener that was reconnecting
//! missed them, a process died between its commit and its notification, a writer wrote
//! without the store). Projection runners wait on it when caught up.
//!
//! Not a trigger: a transaction that notifies takes a lock that serializes every notifying
//! commit of the database, its WAL flush included, so sixteen concurrent appends committed one
//! after another instead of sharing their flushes (half the appends per second, measured in
//! docs/benchmarks.md). After the commit, one notification at a time per store covers every
//! append that committed meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::error::Result;

/// The channel appends are announced on.
pub const NOTIFY_CHANNEL: &str = "ledger_events";

/// Waits for the next append's notification, or a timeout, whichever comes first.
#[derive(Debug)]
pub struct AppendWaker {
    pool: PgPool,
    listener: Option<PgListener>,
    notifications_received: u64,
}

impl AppendWaker {
    /// Listens on a connection of its own to `pool`'s database, outside `pool`: a listener
    /// made from the pool itself keeps one of its connections for as long as it lives, and
    /// eight projection runners listening so on their pool of nine left one connection for
    /// all their steps (each projection then went at the pace of the slowest: a catch-up of
    /// 21,000 events took 8.7 s in one process against 0.2-0.5 s in separate ones).
    pub async fn listen(pool: &PgPool) -> Result<AppendWaker> {
        let pool = listener_pool(pool);
        let listener = connect(&pool).await?;
        Ok(AppendWaker { pool, listener: Some(listener), notifications_received: 0 })
    }

    /// Stops listening and closes its connection (dropping it leaves the connection to be
    /// closed in the background).
    pub async fn close(mut self) {
        self.listener = None;
        self.pool.close().await;
    }

    /// How many notifications it has received (each wait they end takes every one that has
    /// arrived by then; the other waits ended by their timeout).
    pub fn notifications_received(&self) -> u64 {
        self.notifications_received
    }

    /// Waits for a notification or `timeout`. A broken listener is dropped and the waker
    /// goes on with timeouts alone, reconnecting on the next wait.
    ///
    /// A wait a notification ends also takes every other notification that has arrived by
    /// then: the reader's next read covers the appends they announce, so a burst of appends
    /// wakes a caught-up reader once, not once per notification (which kept eight
    /// projectors stepping through empty reads for a minute after a burst of commands).
    pub async fn wait(&mut self, timeout: Duration) {
        match self.listener.as_mut() {
            Some(listener) => match tokio::time::timeout(timeout, listener.try_recv()).await {
                Ok(Ok(Some(_))) => {
                    self.notifications_received += 1;
                    // The listener is cancel safe (sqlx 0.8): a read that would wait is dropped.
                    while let Some(Ok(Some(_))) = listener.try_recv().now_or_never() {
                        self.notifications_received += 1;
                    }
                }
                Err(_) => {}
                Ok(Ok(None)) => {} // The connection dropped; PgListener reconnects on the next call.
                Ok(Err(error)) => {
                    tracing::warn!(%error, "lost the event notification listener; polling until it reconnects");
                    self.listener = None;
                }
            },
            None => {
                tokio::time::sleep(timeout).await;
                self.listener = connect(&self.pool).await.ok();
            }
        }
    }
}

/// A pool of one connection, with `pool`'s options, for a listener alone (it reconnects
/// through it when its connection is lost).
fn listener_pool(pool: &PgPool) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_lazy_with(crate::named(&pool.connect_options(), crate::ConnectionRole::Listener))
}

/// A listener on [`NOTIFY_CHANNEL`] through `pool` (a listener's own: see [`listener_pool`]).
async fn connect(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

/// Announces committed appends on [`NOTIFY_CHANNEL`], one notification in flight at a time:
/// appends that commit while one is being sent are covered by one more sent after it.
///
/// On a connection of its own, not one of the pool's: a notification never waits for a
/// connection an append needs, nor holds one an append waits for (with one connection in the
/// pool, each append waited for the notification of the one before).
#[derive(Debug, Default)]
pub(crate) struct AppendNotifier {
    state: Mutex<Sending>,
    connection: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Sending {
    #[default]
    Idle,
    /// A notification is on its way.
    One,
    /// And another append committed after it was sent: one more follows.
    OneAndAnother,
}

impl AppendNotifier {
    /// An append has committed: its readers are notified from a task of their own (the
    /// append does not wait for it).
    pub(crate) fn appended(self: &Arc<Self>, pool: &PgPool) {
        {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *state != Sending::Idle {
                *state = Sending::OneAndAnother;
                return;
            }
            *state = Sending::One;
        }
        let (notifier, pool) = (Arc::clone(self), pool.clone());
        tokio::spawn(async move {
            loop {
                if let Err(error) = notifier.notify(&pool).await {
                    // Readers poll: they find the events at their next poll.
                    tracing::debug!(%error, "could not announce an append; readers will find it when they poll");
                }
                let mut state = notifier.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if *state == Sending::OneAndAnother {
                    *state = Sending::One;
                } else {
                    *state = Sending::Idle;
                    return;
                }
            }
        });
    }

    /// One notification on the notifier's connection, opened with the pool's options when it
    /// has none (or lost it).
    async fn notify(&self, pool: &PgPool) -> Result<()> {
        use sqlx::Connection;
        let mut connection = self.connection.lock().await;
        let open = match connection.as_mut() {
            Some(open) => open,
            None => connection.insert(
                sqlx::PgConnection::connect_with(&crate::named(
                    &pool.connect_options(),
                    crate::ConnectionRole::Notifier,
                ))
                .await?,
            ),
        };
        let sent = sqlx::query("select pg_notify($1, '')").bind(NOTIFY_CHANNEL).execute(&mut *open).await;
        if sent.is_err() {
            *connection = None;
        }
        sent?;
        Ok(())
    }
}
