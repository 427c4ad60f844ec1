//! The PostgreSQL event store of the payroll ledger.
//!
//! The only crate that knows the SQL of `ledger.events`. It stores envelopes (a type name, a
//! JSON payload, metadata) and knows nothing of payroll. See `docs/architecture.md`.

mod append;
mod chain;
pub mod checkpoint;
pub mod cluster;
mod error;
mod event;
pub mod evidence;
pub mod local_postgres;
mod query;
mod read;
pub mod signing;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tree;
pub mod vault;
mod verify;
mod wake;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub use append::{
    APPEND_EVENTS_MAX, COPY_PAYLOAD_BYTES_MIN, COPY_ROWS_MIN, IDEMPOTENCY_KEY_BYTES_MAX, INSERT_CHUNK_ROWS,
    STREAM_LOCKS_MAX,
};
pub use error::{Result, StoreError};
pub use event::{
    AppendRequest, AppendResult, Checkpoint, ExpectedVersion, Metadata, NewEvent, Payload, RecordedEvent, StreamAppend,
    StreamHead, StreamedAppend,
};
pub use query::EventQuery;
pub use read::{PayloadSelection, READ_BATCH_MAX};
pub use verify::{BreakKind, ChainBreak, CheckpointVerification, TreeDifference, VerifyReport, VerifyScope};
pub use wake::{AppendWaker, NOTIFY_CHANNEL};

/// How long a pooled connection may sit unused and still be handed out without a check.
pub const UNCHECKED_IDLE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Pool options for the ledger's connections. A connection idle for more than
/// [`UNCHECKED_IDLE_MAX`] is pinged before it is handed out (one the server closed meanwhile
/// is replaced, not given to a request); a busy one is not: sqlx's default pings on every
/// acquire, a round trip that cost a command one in six of its own.
pub fn pool_options() -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new().test_before_acquire(false).before_acquire(|connection, metadata| {
        Box::pin(async move {
            if metadata.idle_for > UNCHECKED_IDLE_MAX {
                sqlx::Connection::ping(connection).await?;
            }
            Ok(true)
        })
    })
}

/// What the ledger's connections are called in `pg_stat_activity` when neither the
/// connection URL (`application_name=`) nor `PGAPPNAME` names them.
pub const APPLICATION_NAME: &str = "payroll-ledger";

/// What a pool or connection of the ledger's is for, shown after its name in
/// `pg_stat_activity` (see [`named`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRole {
    /// The main pool: API reads and every CLI command (the name alone).
    Main,
    Writer,
    Projector,
    Listener,
    Notifier,
}

impl ConnectionRole {
    const ALL: [ConnectionRole; 5] = [Self::Main, Self::Writer, Self::Projector, Self::Listener, Self::Notifier];

    fn suffix(self) -> Option<&'static str> {
        match self {
            Self::Main => None,
            Self::Writer => Some("writer"),
            Self::Projector => Some("projector"),
            Self::Listener => Some("listener"),
            Self::Notifier => Some("notifier"),
        }
    }
}

/// `options` named `<name> <role>` (`payroll-ledger writer`; the name is the one `options`
/// carry, from the URL or `PGAPPNAME`, else [`APPLICATION_NAME`]), or just `<name>` for the
/// main pool: which pool holds a connection shows in `pg_stat_activity`, for an operator
/// reading a lock wait or a slow query. Options taken from another pool's are named for the
/// new role only, not after both.
pub fn named(options: &sqlx::postgres::PgConnectOptions, role: ConnectionRole) -> sqlx::postgres::PgConnectOptions {
    let given = options.get_application_name().filter(|name| !name.is_empty()).unwrap_or(APPLICATION_NAME);
    let name = ConnectionRole::ALL
        .iter()
        .filter_map(|known| known.suffix())
        .find_map(|suffix| given.strip_suffix(suffix).and_then(|rest| rest.strip_suffix(' ')))
        .unwrap_or(given);
    let named = match role.suffix() {
        Some(suffix) => format!("{name} {suffix}"),
        None => name.to_owned(),
    };
    options.clone().application_name(&named)
}

/// Every migration of the ledger (event store and read schemas), embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The event store over a connection pool, with appends on a pool of their own when given
/// one ([`EventStore::with_writers`]).
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
    /// Where appends take their connection. An append holds it while it waits for its
    /// stream's (or idempotency key's) lock; the writer it waits for may need connections to
    /// read while it writes (a calculation reads a chunk of employees at a time). On one
    /// shared pool, enough waiters take every connection and the writer they wait for can
    /// read nothing until they time out.
    writers: PgPool,
    /// The personal fields appends seal and the events that erase a subject; `None`: the
    /// store seals nothing (its caller writes no personal data).
    personal_data: Option<vault::PersonalDataPolicy>,
    /// Announces this store's committed appends to the log's readers.
    notifier: std::sync::Arc<wake::AppendNotifier>,
    /// The appends waiting to be written together (see [`append`]'s group commit).
    groups: std::sync::Arc<append::GroupCommit>,
}

impl EventStore {
    /// A store whose appends and reads share `pool`: enough for one writer at a time (the
    /// CLI, tests); a server gives appends a pool of their own.
    pub fn new(pool: PgPool) -> Self {
        EventStore {
            writers: pool.clone(),
            pool,
            personal_data: None,
            notifier: Default::default(),
            groups: Default::default(),
        }
    }

    /// The same store with appends on `writers`, reads on the pool it has.
    pub fn with_writers(self, writers: PgPool) -> Self {
        EventStore { writers, ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The same store sealing the personal fields `policy` names in every append (with the
    /// process's master key, [`vault::Vault::install`]; an append that needs it fails
    /// without), and destroying a subject's data key with its erasure event.
    pub fn with_personal_data(self, policy: vault::PersonalDataPolicy) -> Self {
        EventStore { personal_data: Some(policy), ..self }
    }

    /// Applies the pending migrations, begins this cluster's era and repairs missing roles
    /// and grants where it may (see [`cluster::prepare`]).
    pub async fn migrate(&self) -> Result<cluster::Preparation> {
        cluster::prepare(&self.pool).await
    }

    /// The versions of the migrations applied to this database, ascending; empty before the
    /// first.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let applied = sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
            .fetch_all(&self.pool)
            .await;
        match applied {
            Ok(versions) => Ok(versions),
            // No migration table yet: nothing applied.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => Ok(Vec::new()),
            Err(error) => Err(error.into()),
        }
    }

    /// How many events of `event_type` an organization has.
    pub async fn count_events(&self, organization_id: Uuid, event_type: &str) -> Result<i64> {
        let count =
            sqlx::query_scalar("select count(*) from ledger.events where organization_id = $1 and event_type = $2")
                .bind(organization_id)
                .bind(event_type)
                .fetch_one(&self.pool)
                .await?;
        Ok(count)
    }

    /// Appends the request's events atomically: all streams or none.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed request, [`StoreError::Conflict`] when a stream
    /// is not at its expected version, [`StoreError::IdempotencyMismatch`] when the key was
    /// used for another request, [`StoreError::StreamMismatch`] when a stream exists with
    /// another type or organization. In each case nothing is written.
    pub async fn append(&self, request: &AppendRequest) -> Result<AppendResult> {
        let result = self.append_unannounced(request).await;
        self.announce(&result);
        result
    }

    async fn append_unannounced(&self, request: &AppendRequest) -> Result<AppendResult> {
        let Some(policy) = &self.personal_data else {
            return append::append(&self.writers, &self.groups, request, &[]).await;
        };
        let erased = policy.erased_subjects(&request.streams);
        if !policy.needs_sealing(&request.streams) {
            return append::append(&self.writers, &self.groups, request, &erased).await;
        }
        // Sealed with fresh nonces: "the same request" is the one before sealing.
        let mut sealed = request.clone();
        sealed.fingerprint = request.fingerprint.clone().or_else(|| append::fingerprint(request));
        append::validate(request)?;
        vault::Vault::required()?.seal(&self.writers, policy, &mut sealed.streams).await?;
        append::append(&self.writers, &self.groups, &sealed, &erased).await
    }

    /// Wakes the log's readers after an append that wrote (see [`wake`]).
    fn announce<E>(&self, result: &std::result::Result<AppendResult, E>) {
        if result.as_ref().is_ok_and(|result| !result.replayed) {
            self.notifier.appended(&self.pool);
        }
    }

    /// Appends one stream's events as `events` produces them, all in one transaction, with
    /// COPY a megabyte at a time: an append of any size is held in memory a buffer at a time.
    /// The stream is locked and its version checked before the first event is asked for, so
    /// a conflict costs nothing produced; each event is checked as it comes. The transaction
    /// stays open while the source produces (readers of the whole log wait behind it, as for
    /// any long write).
    ///
    /// # Errors
    /// Those of [`EventStore::append`]; the source's own error when it fails (then nothing is
    /// written); [`StoreError::Invalid`] for a key without a fingerprint, an event that is
    /// malformed, no events or more than [`APPEND_EVENTS_MAX`].
    pub async fn append_streamed<E, S>(
        &self,
        append: &StreamedAppend,
        events: S,
    ) -> std::result::Result<AppendResult, E>
    where
        E: From<StoreError> + Send,
        S: futures_util::Stream<Item = std::result::Result<NewEvent, E>> + Send,
    {
        let result = append::append_streamed(&self.writers, append, events).await;
        self.announce(&result);
        result
    }

    /// What an idempotency key already stands for: `None` when it is new, the original result
    /// when it was used with this `fingerprint`.
    ///
    /// # Errors
    /// [`StoreError::IdempotencyMismatch`] when it was used with another fingerprint.
    pub async fn idempotent_result(&self, key: &str, fingerprint: &[u8]) -> Result<Option<AppendResult>> {
        append::idempotent_result(&self.pool, key, fingerprint).await
    }

    /// The events of one stream from `from_version` on (1 for all).
    pub async fn read_stream(&self, stream_id: Uuid, from_version: u64) -> Result<Vec<RecordedEvent>> {
        read::read_stream(&self.pool, stream_id, from_version).await
    }

    /// Hands each event of one stream from `from_version` on (1 for all) to `each`, in
    /// version order, as it is read: folding a long stream holds one event at a time.
    /// Returns how many events there were. The events carry no metadata and no hashes
    /// ([`EventStore::read_stream`] has them).
    pub async fn each_in_stream<E: From<StoreError>>(
        &self,
        stream_id: Uuid,
        from_version: u64,
        each: impl FnMut(RecordedEvent) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        read::each_in_stream(&self.pool, stream_id, from_version, each).await
    }

    /// The events of one stream at the given versions (those that exist), in version order.
    pub async fn read_stream_versions(&self, stream_id: Uuid, versions: &[u64]) -> Result<Vec<RecordedEvent>> {
        read::read_stream_versions(&self.pool, stream_id, versions).await
    }

    /// Up to `limit` events after the checkpoint in gap-free order (see `read.rs`).
    pub async fn read_all(&self, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        read::read_all(&self.pool, after, limit).await
    }

    /// The same as [`EventStore::read_all`], inside the caller's transaction (projectors
    /// read and apply in one transaction).
    pub async fn read_all_in(
        connection: &mut sqlx::PgConnection,
        after: Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        read::read_all(connection, after, limit).await
    }

    /// The same as [`EventStore::read_all_in`], but only events whose type the selection
    /// names carry their payload (the others have a JSON `null` one), and the batch ends
    /// once its payload text reaches the selection's bytes (with the event that reaches it).
    /// For readers that skip most types and still must step over them in order, in bounded
    /// memory.
    pub async fn read_all_in_with_payloads(
        connection: &mut sqlx::PgConnection,
        after: Checkpoint,
        limit: usize,
        payloads: PayloadSelection<'_>,
    ) -> Result<Vec<RecordedEvent>> {
        read::read_all_selected(connection, after, limit, payloads).await
    }

    /// Whether any event after the checkpoint has committed, visible or not yet to the
    /// gap-free read (which also waits for older transactions still running).
    pub async fn committed_after(connection: &mut sqlx::PgConnection, after: Checkpoint) -> Result<bool> {
        read::committed_after(connection, after).await
    }

    /// How many committed events lie after the checkpoint (a projection's lag).
    pub async fn count_after(&self, after: Checkpoint) -> Result<i64> {
        read::count_after(&self.pool, after).await
    }

    /// When the event at `global_position` was recorded; `None` if there is none.
    pub async fn recorded_at(&self, global_position: i64) -> Result<Option<DateTime<Utc>>> {
        read::recorded_at(&self.pool, global_position).await
    }

    /// The events matching `query`, by global position.
    pub async fn query_events(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>> {
        query::query_events(&self.pool, query).await
    }

    /// The same as [`EventStore::query_events`], inside the caller's transaction (under the
    /// API's row-level security).
    pub async fn query_events_in(
        connection: &mut sqlx::PgConnection,
        query: &EventQuery,
    ) -> Result<Vec<RecordedEvent>> {
        query::query_events(connection, query).await
    }

    /// The events of several streams, each in version order.
    pub async fn read_streams(&self, stream_ids: &[Uuid]) -> Result<Vec<RecordedEvent>> {
        read::read_streams(&self.pool, stream_ids).await
    }

    /// The newest position and its time; `None` for an empty log.
    pub async fn head(&self) -> Result<Option<(i64, DateTime<Utc>)>> {
        read::head(&self.pool).await
    }

    /// The last event of an organization's streams of one type, in the log's order.
    pub async fn last_of_stream_type(&self, organization_id: Uuid, stream_type: &str) -> Result<Option<Checkpoint>> {
        read::last_of_stream_type(&self.pool, organization_id, stream_type).await
    }

    /// Recomputes every stream's hash chain.
    pub async fn verify_all(&self) -> Result<VerifyReport> {
        verify::verify(&self.pool, VerifyScope::All, &mut |_| {}).await
    }

    /// Recomputes the hash chains of `scope`, reporting the events checked as it goes.
    pub async fn verify(&self, scope: VerifyScope, progress: &mut (dyn FnMut(u64) + Send)) -> Result<VerifyReport> {
        verify::verify(&self.pool, scope, progress).await
    }

    /// Verifies the whole log against a checkpoint saved earlier: every chain, and the Merkle
    /// root of the log's first `checkpoint.size` events (see [`CheckpointVerification`]).
    /// `anchors` are other trusted tree heads (the same key's checkpoints): the report says up
    /// to which of them the log is intact.
    pub async fn verify_against(
        &self,
        checkpoint: tree::TreeHead,
        anchors: &[tree::TreeHead],
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<CheckpointVerification> {
        verify::verify_against(&self.pool, checkpoint, anchors, progress).await
    }

    /// Recomputes one stream's hash chain.
    pub async fn verify_stream(&self, stream_id: Uuid) -> Result<VerifyReport> {
        verify::verify(&self.pool, VerifyScope::Stream(stream_id), &mut |_| {}).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(options: &sqlx::postgres::PgConnectOptions) -> &str {
        options.get_application_name().unwrap_or_default()
    }

    #[test]
    fn each_pool_is_named_after_the_process_and_what_it_is_for() {
        let plain = sqlx::postgres::PgConnectOptions::new().application_name("");
        assert_eq!(name_of(&named(&plain, ConnectionRole::Main)), "payroll-ledger");
        let writer = named(&plain, ConnectionRole::Writer);
        assert_eq!(name_of(&writer), "payroll-ledger writer");
        // A pool made from another pool's options is named for itself, not after both.
        assert_eq!(name_of(&named(&writer, ConnectionRole::Notifier)), "payroll-ledger notifier");
        assert_eq!(name_of(&named(&writer, ConnectionRole::Main)), "payroll-ledger");
        // The operator's name (URL or PGAPPNAME) is kept.
        let given: sqlx::postgres::PgConnectOptions =
            "postgres://ledger@db.internal/ledger?application_name=acme-payroll".parse().unwrap();
        assert_eq!(name_of(&named(&given, ConnectionRole::Projector)), "acme-payroll projector");
        let odd = sqlx::postgres::PgConnectOptions::new().application_name("writer");
        assert_eq!(name_of(&named(&odd, ConnectionRole::Listener)), "writer listener");
    }
}
