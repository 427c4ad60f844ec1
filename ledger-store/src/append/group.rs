//! Group commit: the small appends waiting in this process at one moment written in one
//! transaction (`ledger.append_group`, migrations `20261126000009_append_in_groups.sql` and
//! `20261127000005_append_group_in_small_statements.sql`),
//! each with its own outcome.
//!
//! An append that fits one statement, made while another is being written, joins the
//! queue; when fewer than [`GROUPS_IN_FLIGHT`] groups are being written, a task is started
//! that takes everything queued (up to [`GROUP_EVENTS_MAX`] events) as one group, writes it,
//! answers each member and takes the next group, until the queue is empty. An append made
//! while nothing else is being written and no group's task runs goes alone
//! ([`GroupCommit::alone`]); under load, the
//! appends that arrive while a group is being written share the next group's commit, WAL
//! flush and chain check. Nothing waits for a timer.
//!
//! A member the group could not write without waiting (its stream's or key's lock held by
//! another transaction, or by an earlier member), one whose key was used before, and every
//! member of a group the database refused as a whole (nothing of it was written) is appended
//! alone by its caller, as before group commit. The group's task runs apart from its
//! callers: a caller that stops waiting (a cancelled request) does not stop its group.
//!
//! Before it takes a group the task yields once to the runtime, so that the appends made at
//! that moment (the answered callers of the group before, appending again at once) join it
//! rather than the next: at 16 tasks this took groups from 5.2 to 8.2 events on average.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::reserve::stream_lock_key;
use super::rows::metadata_text;
use super::statement::{Outcome, expected_of, result_of};
use super::{AppendConnection, COPY_PAYLOAD_BYTES_MIN, Ending, STREAM_LOCKS_MAX, fits_one_statement, payload_bytes};
use crate::error::{Result, StoreError};
use crate::event::{AppendRequest, AppendResult};

/// How many groups one store writes at once. Two keep both of a small server's cores busy
/// (one group's members are chained by one backend); more make each group smaller.
pub(super) const GROUPS_IN_FLIGHT: usize = 2;
/// The most events one group carries.
pub(super) const GROUP_EVENTS_MAX: usize = 256;

const APPEND_GROUP: &str = "select member, status, stream_index, stored_version, stored_type, stored_organization, \
    positions, first_versions from ledger.append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// The store's queue of appends waiting for a group.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    /// The connection the last append alone was written on (see [`Alone::connection`]).
    kept: Mutex<Option<Kept>>,
}

#[derive(Debug)]
struct Kept {
    connection: PgConnection,
    since: Instant,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Member>,
    /// Groups being written (tasks draining the queue; a task counts until it finds the
    /// queue empty, so while one answers its group).
    running: usize,
    /// Appends being written alone because nothing else was (see [`GroupCommit::alone`]).
    alone: usize,
}

#[derive(Debug)]
struct Member {
    request: AppendRequest,
    /// Its payloads' bytes (what a group's size is counted in, with its events).
    payload_bytes: usize,
    metadata: String,
    fingerprint: Option<Vec<u8>>,
    reply: oneshot::Sender<Answer>,
}

#[derive(Debug)]
enum Answer {
    /// Written, or refused (nothing written).
    Done(Result<AppendResult>),
    /// Not written: the caller appends it alone.
    Alone,
}

/// Whether `request` may join a group: what one statement appends, with few enough streams
/// to lock each.
pub(super) fn fits(request: &AppendRequest) -> bool {
    request.streams.len() <= STREAM_LOCKS_MAX && fits_one_statement(request)
}

/// Held by an append written alone while nothing else is being written.
pub(super) struct Alone<'a>(&'a GroupCommit);

impl Alone<'_> {
    /// The connection to write this append on: the one the last append alone was written on
    /// (pinged first when it has been idle for more than [`crate::UNCHECKED_IDLE_MAX`], as
    /// the store's pools do), else one taken out of `pool` for good (the pool may open
    /// another in its place). Only one append at a time goes alone, so a single writer's
    /// appends follow each other on one connection: taking one from the pool and giving it
    /// back cost each of them ~60 µs where the pool pings what it hands out (8-15 % of a
    /// one-task command in the peers' harness), and a hand-off through the pool's queue in
    /// ours.
    pub(super) async fn connection(&self, pool: &PgPool) -> Result<PgConnection> {
        let kept = self.0.kept.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut kept) = kept
            && (kept.since.elapsed() <= crate::UNCHECKED_IDLE_MAX || kept.connection.ping().await.is_ok())
        {
            return Ok(kept.connection);
        }
        Ok(pool.acquire().await?.detach())
    }

    /// Keeps `connection`, whose append has answered, for the next append alone.
    pub(super) fn keep(&self, connection: PgConnection) {
        *self.0.kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(Kept { connection, since: Instant::now() });
    }
}

impl Drop for Alone<'_> {
    fn drop(&mut self) {
        self.0.queue.lock().unwrap_or_else(PoisonError::into_inner).alone -= 1;
    }
}

impl GroupCommit {
    /// When no append is being written and no group's task runs, the caller writes its own
    /// alone (a group of one costs more than [`super::statement`] and a task hand-off: a
    /// single writer loses nothing to group commit), holding what this returns; appends that
    /// arrive meanwhile form a group. `None`: others are being written, or a task is
    /// answering a group whose callers append again at once: join them with
    /// [`GroupCommit::append`] (under load, an append alone is a commit and a WAL flush for
    /// one event: 1,412 of 3,718 transactions at 16 tasks carried one event when a group's
    /// answered callers could go alone).
    pub(super) fn alone(&self) -> Option<Alone<'_>> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.running > 0 || queue.alone > 0 || !queue.waiting.is_empty() {
            return None;
        }
        queue.alone += 1;
        Some(Alone(self))
    }

    /// Appends `request` (valid, [`fits`]) with the next group. `None`: it was not written
    /// and the caller appends it alone.
    pub(super) async fn append(
        self: &Arc<Self>,
        pool: &PgPool,
        request: &AppendRequest,
        fingerprint: Option<Vec<u8>>,
    ) -> Option<Result<AppendResult>> {
        let (reply, answer) = oneshot::channel();
        let metadata = metadata_text(&request.metadata, request.idempotency_key.as_deref());
        let payload_bytes = payload_bytes(request);
        let member = Member { request: request.clone(), payload_bytes, metadata, fingerprint, reply };
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push_back(member);
            let start = queue.running < GROUPS_IN_FLIGHT;
            if start {
                queue.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(Arc::clone(self).drain(pool.clone()));
        }
        match answer.await {
            Ok(Answer::Done(result)) => Some(result),
            Ok(Answer::Alone) => None,
            // The group's task ended without answering (it panicked): whether the group was
            // written is not known, so the append is not repeated.
            Err(_) => Some(Err(StoreError::Database(sqlx::Error::Protocol(
                "the group commit ended without an answer; whether this append was written is unknown".to_owned(),
            )))),
        }
    }

    /// Writes groups until the queue is empty, on one connection taken from the pool for as
    /// long as groups follow each other (taking and giving back one per group cost a group
    /// ~150 µs under load where the pool pings what it hands out).
    async fn drain(self: Arc<Self>, pool: PgPool) {
        let _running = Running(&self);
        let mut connection = None;
        loop {
            // Lets the appends made at this moment join the group first: a group's answered
            // callers append again at once, and the first of them starts this task.
            tokio::task::yield_now().await;
            let Some(members) = self.next_group() else { break };
            let answers = write_group(&pool, &mut connection, &members).await;
            for (member, answer) in members.into_iter().zip(answers) {
                let _ = member.reply.send(answer);
            }
        }
    }

    /// The next group: the oldest waiting appends, up to [`GROUP_EVENTS_MAX`] events and
    /// [`COPY_PAYLOAD_BYTES_MIN`] payload bytes (at least one append). `None` when nothing
    /// waits; the task then counts itself out under the same lock.
    fn next_group(&self) -> Option<Vec<Member>> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut events, mut bytes) = (0, 0);
        let mut members = Vec::new();
        while let Some(member) = queue.waiting.front() {
            let (member_events, member_bytes) = (member.request.event_count(), member.payload_bytes);
            if !members.is_empty()
                && (events + member_events > GROUP_EVENTS_MAX || bytes + member_bytes > COPY_PAYLOAD_BYTES_MIN)
            {
                break;
            }
            events += member_events;
            bytes += member_bytes;
            members.extend(queue.waiting.pop_front());
        }
        if members.is_empty() {
            queue.running -= 1;
            return None;
        }
        Some(members)
    }
}

/// Counts a draining task out if it ends other than by an empty queue (a panic).
struct Running<'a>(&'a GroupCommit);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.running -= 1;
        }
    }
}

#[derive(sqlx::FromRow)]
struct MemberOutcome {
    member: i32,
    #[sqlx(flatten)]
    outcome: Outcome,
}

/// Writes one group on `held` (taken from `pool` when it holds none; left empty when the
/// connection's state is unknown, which closes it): each member's answer, in order.
async fn write_group(pool: &PgPool, held: &mut Option<AppendConnection>, members: &[Member]) -> Vec<Answer> {
    let each = |answer: &dyn Fn() -> Answer| members.iter().map(|_| answer()).collect();
    let connection = match held {
        Some(connection) => connection,
        None => match AppendConnection::acquire(pool).await {
            Ok(connection) => held.insert(connection),
            // Nothing was sent: each append tries alone and gets its own answer.
            Err(_) => return each(&|| Answer::Alone),
        },
    };
    // Until this group's statement has answered, the connection's state is unknown (a task
    // stopped meanwhile closes it).
    connection.end(Ending::Unknown);
    let requests: Vec<&AppendRequest> = members.iter().map(|member| &member.request).collect();
    let streams = || requests.iter().flat_map(|request| &request.streams);
    let events = || streams().flat_map(|stream| &stream.events);
    let outcomes: std::result::Result<Vec<MemberOutcome>, sqlx::Error> = sqlx::query_as(APPEND_GROUP)
        .bind(requests.iter().map(|request| request.streams.len() as i32).collect::<Vec<_>>())
        .bind(members.iter().map(|member| member.metadata.as_str()).collect::<Vec<_>>())
        .bind(requests.iter().map(|request| request.idempotency_key.as_deref()).collect::<Vec<_>>())
        .bind(members.iter().map(|member| member.fingerprint.as_deref()).collect::<Vec<_>>())
        .bind(streams().map(|stream| stream.organization_id).collect::<Vec<Uuid>>())
        .bind(streams().map(|stream| stream.stream_type.as_str()).collect::<Vec<_>>())
        .bind(streams().map(|stream| stream.stream_id).collect::<Vec<Uuid>>())
        .bind(streams().map(|stream| expected_of(stream.expected_version)).collect::<Vec<_>>())
        .bind(streams().map(|stream| stream.events.len() as i32).collect::<Vec<_>>())
        .bind(streams().map(|stream| stream_lock_key(stream.stream_id)).collect::<Vec<_>>())
        .bind(events().map(|event| event.event_id).collect::<Vec<Uuid>>())
        .bind(events().map(|event| event.event_type.as_str()).collect::<Vec<_>>())
        .bind(events().map(|event| event.schema_version).collect::<Vec<_>>())
        .bind(events().map(|event| event.payload.text()).collect::<Vec<_>>())
        .fetch_all(&mut *connection.connection)
        .await;
    match outcomes {
        Ok(outcomes)
            if outcomes.len() == members.len()
                && outcomes.iter().zip(1..).all(|(row, member)| row.member == member) =>
        {
            connection.end(Ending::Sound);
            outcomes.into_iter().zip(members).map(|(row, member)| answer_of(&member.request, row.outcome)).collect()
        }
        Err(sqlx::Error::Database(_)) => {
            // The database refused the statement (a racer that skipped the locks, an event id
            // used twice): nothing of the group was written. Each append goes alone and gets
            // its own answer.
            connection.end(Ending::Sound);
            each(&|| Answer::Alone)
        }
        outcomes => {
            // The connection failed, or the statement answered other than one row per member
            // in order: the group may have committed. Not repeated.
            let problem = match outcomes {
                Err(error) => {
                    // Closed: its state is unknown.
                    *held = None;
                    error.to_string()
                }
                Ok(rows) => {
                    connection.end(Ending::Sound);
                    format!("{} answers for {} members", rows.len(), members.len())
                }
            };
            each(&|| {
                Answer::Done(Err(StoreError::Database(sqlx::Error::Protocol(format!(
                    "the group commit failed ({problem}); whether this append was written is unknown"
                )))))
            })
        }
    }
}

/// A member's answer: "busy" and a used key go alone, the rest as an append alone would.
fn answer_of(request: &AppendRequest, outcome: Outcome) -> Answer {
    if outcome.status == "busy" {
        return Answer::Alone;
    }
    match result_of(request, outcome) {
        Ok(Some(result)) => Answer::Done(Ok(result)),
        Ok(None) => Answer::Alone,
        Err(error) => Answer::Done(Err(error)),
    }
}
