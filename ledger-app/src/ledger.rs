//! Command handling: load the stream, fold, decide, append with the expected version; on a
//! version conflict reload and decide again, a bounded number of times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_codec::{decode_recorded, expected_version, stream_append};
use ledger_core::Aggregate;
use ledger_store::checkpoint::{applied_through, projected};
use ledger_store::{AppendRequest, AppendResult, EventStore, RecordedEvent, StoreError, StreamAppend, StreamedAppend};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::context::{Context, Written};
use crate::error::{Error, Result};
use crate::metrics::CommandMetrics;
use crate::retry::Attempts;

/// Attempts of one command before a version conflict is returned to the caller.
pub const COMMAND_ATTEMPTS_MAX: usize = 5;
/// The longest an API read may ask to wait for projections to reach a position.
pub const WAIT_FOR_POSITION_MAX: Duration = Duration::from_secs(30);
/// Payroll runs kept in the cache at once.
pub const CACHED_RUNS_MAX: usize = 2;
/// Other aggregates' states kept in the cache at once (an employee's is a few kilobytes).
pub const CACHED_STATES_MAX: usize = 10_000;
/// Items a payment (or settlement) batch pays per atomic append, unless the ledger is told
/// otherwise ([`Ledger::with_pay_batch_items`]).
pub const PAY_BATCH_ITEMS: usize = 500;

/// An aggregate's state with the version of its stream it was folded to (0: no stream).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    pub state: S,
    pub version: u64,
}

/// Whether an append is the one an idempotency key stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// The append records the context's key (the first append of an operation).
    Record,
    /// The append goes without it (later appends of an operation, idempotent by the
    /// aggregates' own state).
    Without,
}

/// How a state folded after an append is held for the next command: a copy (the caller
/// keeps the state current itself) or the state itself (the caller is done with it).
#[derive(Debug, Clone, Copy)]
enum Held {
    Copied,
    Moved,
}

/// The engine behind the API and the CLI.
#[derive(Debug, Clone)]
pub struct Ledger {
    store: EventStore,
    metrics: Arc<CommandMetrics>,
    /// The projections a read-your-writes wait waits for: all of them.
    projections: Arc<[&'static str]>,
    pay_batch_items: usize,
    states: Arc<StateCache>,
    /// The database's namespace of derived ids (`ledger.id_namespace`), read once.
    id_namespace: Arc<tokio::sync::OnceCell<Uuid>>,
}

/// The states this process folded last, each with its stream's version: loading one again
/// decodes only the events after the cached version (a 100,000-item run's calculation is
/// 70 MB of text and ~2 s to decode; the run itself ~15 MB), and a command decides on one
/// without reading its stream at all ([`Ledger::execute_cached`]). A stream's events up to a
/// version never change, so a cached fold stays true of that version; newer events always
/// come from the store (a load), or the append's version check refuses a decision made on an
/// older version (a command), so other writers and other processes are seen as without it.
///
/// Payroll runs are few and large ([`CACHED_RUNS_MAX`]); the rest (employees, wallets,
/// organizations, ...) small and many, kept least recently used first out
/// ([`CACHED_STATES_MAX`]). A state holding personal data in clear (folded from a command's
/// own events, a hire) is not kept: only what the log holds, sealed.
struct StateCache {
    runs: std::sync::Mutex<std::collections::VecDeque<CachedState>>,
    others: std::sync::Mutex<hashlink::LruCache<Uuid, CachedState>>,
}

impl Default for StateCache {
    fn default() -> Self {
        StateCache {
            runs: Default::default(),
            others: std::sync::Mutex::new(hashlink::LruCache::new(CACHED_STATES_MAX)),
        }
    }
}

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let others = self.others.lock().map(|others| others.len()).unwrap_or_default();
        f.debug_struct("StateCache").field("others", &others).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct CachedState {
    stream_id: Uuid,
    stream_type: &'static str,
    organization_id: Uuid,
    version: u64,
    state: Arc<dyn std::any::Any + Send + Sync>,
}

impl CachedState {
    /// The state itself, shared (not copied), with its owner and version.
    fn shared<A: Aggregate>(&self) -> Option<(Uuid, u64, Arc<A::State>)> {
        if self.stream_type != A::STREAM_TYPE {
            return None;
        }
        let state = Arc::clone(&self.state).downcast::<A::State>().ok()?;
        Some((self.organization_id, self.version, state))
    }
}

impl StateCache {
    fn is_run<A: Aggregate>() -> bool {
        A::STREAM_TYPE == ledger_core::payroll::PayrollRunAggregate::STREAM_TYPE
    }

    /// A copy of the state held for a stream (made outside the cache's lock).
    fn get<A: Aggregate>(&self, stream_id: Uuid) -> Option<(Uuid, Loaded<A::State>)> {
        let (owner, version, state) = self.shared::<A>(stream_id)?;
        Some((owner, Loaded { state: A::State::clone(&state), version }))
    }

    /// The state held for a stream, shared: what a command decides on without copying it.
    fn shared<A: Aggregate>(&self, stream_id: Uuid) -> Option<(Uuid, u64, Arc<A::State>)> {
        if Self::is_run::<A>() {
            let runs = self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            runs.iter().find(|cached| cached.stream_id == stream_id)?.shared::<A>()
        } else {
            let mut others = self.others.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            others.get(&stream_id)?.shared::<A>()
        }
    }

    /// Keeps a copy of `loaded` unless a newer version of the stream is kept already.
    fn put<A: Aggregate>(&self, organization_id: Uuid, stream_id: Uuid, loaded: &Loaded<A::State>) {
        self.insert::<A>(organization_id, stream_id, loaded.version, || Arc::new(loaded.state.clone()));
    }

    /// Keeps `loaded` itself (moved in, not copied) unless a newer version is kept already.
    fn keep<A: Aggregate>(&self, organization_id: Uuid, stream_id: Uuid, loaded: Loaded<A::State>) {
        let Loaded { state, version } = loaded;
        self.insert::<A>(organization_id, stream_id, version, move || Arc::new(state));
    }

    fn insert<A: Aggregate>(
        &self,
        organization_id: Uuid,
        stream_id: Uuid,
        version: u64,
        state: impl FnOnce() -> Arc<dyn std::any::Any + Send + Sync>,
    ) {
        if version == 0 {
            return;
        }
        let newer = |cached: &CachedState| cached.stream_type == A::STREAM_TYPE && cached.version >= version;
        let cached =
            || CachedState { stream_id, stream_type: A::STREAM_TYPE, organization_id, version, state: state() };
        if Self::is_run::<A>() {
            let mut runs = self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if runs.iter().any(|kept| kept.stream_id == stream_id && newer(kept)) {
                return;
            }
            runs.retain(|kept| kept.stream_id != stream_id);
            if runs.len() == CACHED_RUNS_MAX {
                runs.pop_front();
            }
            runs.push_back(cached());
        } else {
            let mut others = self.others.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if others.peek(&stream_id).is_some_and(newer) {
                return;
            }
            others.insert(stream_id, cached());
        }
    }

    fn forget(&self, stream_id: Uuid) {
        self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|kept| kept.stream_id != stream_id);
        self.others.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&stream_id);
    }
}

/// An aggregate folded one recorded event at a time, checking that its stream belongs to the
/// organization and is of the aggregate's type.
struct Folding<A: Aggregate> {
    organization_id: Uuid,
    stream_id: Uuid,
    loaded: Loaded<A::State>,
}

impl<A: Aggregate> Folding<A> {
    fn new(organization_id: Uuid, stream_id: Uuid) -> Self {
        Folding { organization_id, stream_id, loaded: Loaded { state: A::State::default(), version: 0 } }
    }

    /// Goes on from a state folded earlier by `owner` (the cache's): the same check as a
    /// stream's first event gets.
    fn resume(&mut self, owner: Uuid, loaded: Loaded<A::State>) -> Result<()> {
        self.check(owner, A::STREAM_TYPE)?;
        self.loaded = loaded;
        Ok(())
    }

    fn check(&self, organization_id: Uuid, stream_type: &str) -> Result<()> {
        if organization_id != self.organization_id || stream_type != A::STREAM_TYPE {
            return Err(Error::NotFound(format!("no {} {} in this organization", A::STREAM_TYPE, self.stream_id)));
        }
        Ok(())
    }

    fn push(&mut self, event: &RecordedEvent) -> Result<()> {
        if self.loaded.version == 0 {
            self.check(event.organization_id, &event.stream_type)?;
        }
        // Moved into the state: an event's data is never held twice.
        let state = std::mem::take(&mut self.loaded.state);
        self.loaded.state = A::evolve_owned(state, decode_recorded::<A::Event>(event)?);
        self.loaded.version += 1;
        Ok(())
    }
}

/// Folds one stream's recorded events, checking that it belongs to `organization_id`.
pub fn fold_stream<A: Aggregate>(
    organization_id: Uuid,
    stream_id: Uuid,
    recorded: &[RecordedEvent],
) -> Result<Loaded<A::State>> {
    let mut folding = Folding::<A>::new(organization_id, stream_id);
    for event in recorded {
        folding.push(event)?;
    }
    Ok(folding.loaded)
}

impl Ledger {
    /// A ledger over `store`; `projections` names every projection, for read-your-writes
    /// waits (`ledger_projections::projections::all()`).
    pub fn new(store: EventStore, metrics: Arc<CommandMetrics>, projections: Vec<&'static str>) -> Ledger {
        Ledger {
            store: store.with_personal_data(ledger_codec::PERSONAL_DATA),
            metrics,
            projections: projections.into(),
            pay_batch_items: PAY_BATCH_ITEMS,
            states: Arc::default(),
            id_namespace: Arc::default(),
        }
    }

    /// Pays this many items per atomic append (default
    /// [`PAY_BATCH_ITEMS`]).
    pub fn with_pay_batch_items(mut self, items: usize) -> Ledger {
        self.pay_batch_items = items.max(1);
        self
    }

    pub fn pay_batch_items(&self) -> usize {
        self.pay_batch_items
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// An aggregate's state and version; a stream of another organization is not found.
    /// Folded as the events are read, one at a time (a payroll run's stream is its
    /// calculation's chunks and an event per payment).
    /// A stream this process folded lately is folded on from its cached state.
    pub async fn load<A: Aggregate>(&self, organization_id: Uuid, stream_id: Uuid) -> Result<Loaded<A::State>> {
        let mut folding = Folding::<A>::new(organization_id, stream_id);
        if let Some((owner, loaded)) = self.states.get::<A>(stream_id) {
            folding.resume(owner, loaded)?;
        }
        self.store.each_in_stream(stream_id, folding.loaded.version + 1, |event| folding.push(&event)).await?;
        // Kept only when newer than what is cached (and never for a stream that is not).
        self.states.put::<A>(organization_id, stream_id, &folding.loaded);
        Ok(folding.loaded)
    }

    /// The state this process holds for a stream, with its version (what the next command
    /// on it is decided on first); `None` when it holds none.
    pub fn held<A: Aggregate>(&self, stream_id: Uuid) -> Option<Loaded<A::State>> {
        self.states.get::<A>(stream_id).map(|(_, loaded)| loaded)
    }

    /// Keeps a state this process holds current (a run it has just paid) for the next load.
    pub fn remember<A: Aggregate>(&self, organization_id: Uuid, stream_id: Uuid, loaded: &Loaded<A::State>) {
        self.states.put::<A>(organization_id, stream_id, loaded);
    }

    /// An id for a new entity: UUID v5 of the context's idempotency key (scoped by its
    /// organization) and `purpose` in this database's own random namespace, so that a retry
    /// names the same entity and no other tenant can compute it; random without a key.
    pub async fn new_id(&self, context: &Context, purpose: &str) -> Result<Uuid> {
        let namespace = self
            .id_namespace
            .get_or_try_init(|| async {
                sqlx::query_scalar::<_, Uuid>("select namespace from ledger.id_namespace").fetch_one(self.pool()).await
            })
            .await?;
        Ok(context.new_id_in(*namespace, purpose))
    }

    /// The stored result when this request repeats an earlier one with the same key.
    pub async fn replayed(&self, context: &Context) -> Result<Option<Written>> {
        let Some(idempotency) = &context.idempotency else { return Ok(None) };
        Ok(self.store.idempotent_result(&idempotency.key, &idempotency.fingerprint).await?.map(Written::from))
    }

    /// `outcome` unless it failed while an identical request with the same key succeeded:
    /// then that request's result, replayed. A retry sent while the first is still deciding
    /// finds no result for the key, decides against the state the first leaves (and fails:
    /// the employee exists, the run is approved already); it answers as a replay all the same.
    pub async fn or_replayed<T>(
        &self,
        context: &Context,
        outcome: Result<T>,
        replay: impl FnOnce(Written) -> T,
    ) -> Result<T> {
        match outcome {
            Err(error) if context.idempotency.is_some() => match self.replayed(context).await? {
                Some(written) => Ok(replay(written)),
                None => Err(error),
            },
            outcome => outcome,
        }
    }

    /// Appends streams atomically with the context's metadata (and its idempotency key when
    /// `key_use` says so).
    #[tracing::instrument(name = "append", level = "debug", skip_all, fields(streams = streams.len()))]
    pub async fn append(
        &self,
        context: &Context,
        streams: Vec<StreamAppend>,
        key_use: KeyUse,
    ) -> std::result::Result<AppendResult, StoreError> {
        let idempotency = context.idempotency.as_ref().filter(|_| key_use == KeyUse::Record);
        let request = AppendRequest {
            streams,
            metadata: context.metadata(),
            idempotency_key: idempotency.map(|idempotency| idempotency.key.clone()),
            fingerprint: idempotency.map(|idempotency| idempotency.fingerprint.clone()),
        };
        let started = Instant::now();
        let result = self.store.append(&request).await;
        self.metrics.observe_append(started, result.is_ok());
        result
    }

    /// Appends one aggregate's events as `events` produces them (a payroll run's
    /// calculation, streamed: see [`EventStore::append_streamed`]), with the context's
    /// metadata and idempotency key. `version` is the stream's version the events follow.
    pub async fn append_streamed<A: Aggregate, S>(
        &self,
        context: &Context,
        stream_id: Uuid,
        version: u64,
        events: S,
    ) -> Result<AppendResult>
    where
        S: futures_util::Stream<Item = Result<ledger_store::NewEvent>> + Send,
    {
        let append = StreamedAppend {
            organization_id: context.organization_id(),
            stream_type: A::STREAM_TYPE.to_owned(),
            stream_id,
            expected_version: expected_version(version),
            metadata: context.metadata(),
            idempotency_key: context.idempotency.as_ref().map(|idempotency| idempotency.key.clone()),
            fingerprint: context.idempotency.as_ref().map(|idempotency| idempotency.fingerprint.clone()),
        };
        let started = Instant::now();
        let result = self.store.append_streamed(&append, events).await;
        self.metrics.observe_append(started, result.is_ok());
        result
    }

    /// Decides `command` on one aggregate and appends the result, retrying on conflicts.
    /// Decided first on the state this process holds, when it holds one
    /// ([`Ledger::execute_cached`]), else on the stream read again.
    #[tracing::instrument(name = "command", skip_all, fields(stream_type = A::STREAM_TYPE, %stream_id))]
    pub async fn execute<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        command: A::Command,
    ) -> Result<Written>
    where
        A::Command: Clone,
    {
        if let Some(written) = self.execute_cached::<A>(context, stream_id, &command).await? {
            return Ok(written);
        }
        if let Some(written) = self.replayed(context).await? {
            return Ok(written);
        }
        let mut loaded = self.load::<A>(context.organization_id(), stream_id).await?;
        self.decide_or_replay::<A>(context, stream_id, &mut loaded, command).await
    }

    /// Decides `command` on the state of the stream this process folded last and appends the
    /// events with that state's version as the expected one, without reading the stream: the
    /// append's version check is what makes the state trusted (the stream was at exactly that
    /// version when the events were written after it). A request repeating an earlier one is
    /// answered by the append as its replay.
    ///
    /// `None` when it cannot answer so, and the caller goes the careful way (reads the stream,
    /// decides again): no state is held (or one of another organization or type); the
    /// decision is a refusal or no event at all, which a stale state could have caused (an
    /// employee whose KYC was approved by another process meanwhile); or the stream has moved
    /// on (the state is dropped).
    pub async fn execute_cached<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        command: &A::Command,
    ) -> Result<Option<Written>>
    where
        A::Command: Clone,
    {
        let organization_id = context.organization_id();
        let Some((owner, version, shared)) = self.states.shared::<A>(stream_id) else { return Ok(None) };
        if owner != organization_id {
            return Ok(None);
        }
        let Ok(events) = A::decide(&shared, command.clone()) else { return Ok(None) };
        if events.is_empty() {
            return Ok(None);
        }
        // The cache lets go of its share, so that the events are folded into the state itself
        // and it goes back moved, not copied (an employee's state copied twice per command was
        // most of a command's CPU in this process: docs/benchmarks.md). Another command on the
        // stream finds none meanwhile and reads the stream; a replay (nothing folded) or a
        // failed append leaves none held.
        self.states.forget(stream_id);
        let state = Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone());
        let mut loaded = Loaded { state, version };
        match self.append_decided::<A>(context, stream_id, &mut loaded, events, Held::Moved).await {
            Ok(result) => Ok(Some(result.into())),
            Err(error) => match Error::from(error) {
                Error::VersionConflict(_) => Ok(None),
                error => Err(error),
            },
        }
    }

    /// Appends `events` decided on `loaded` (its version the expected one) with the context's
    /// key and, when they were written, folds them into `loaded` and holds the result for the
    /// next command (a copy, or `loaded`'s state itself: see [`Held`]), unless it now has
    /// personal data in clear (a hire): then nothing is held.
    /// A replay (the key was used) folds nothing.
    async fn append_decided<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        loaded: &mut Loaded<A::State>,
        events: Vec<A::Event>,
        held: Held,
    ) -> std::result::Result<AppendResult, StoreError> {
        let organization_id = context.organization_id();
        let stream = stream_append::<A>(organization_id, stream_id, loaded.version, &events);
        let personal = ledger_codec::PERSONAL_DATA.needs_sealing(std::slice::from_ref(&stream));
        let result = self.append(context, vec![stream], KeyUse::Record).await?;
        if !result.replayed {
            let state = std::mem::take(&mut loaded.state);
            loaded.version += events.len() as u64;
            loaded.state = events.into_iter().fold(state, A::evolve_owned);
            match (personal, held) {
                (true, _) => self.states.forget(stream_id),
                (false, Held::Copied) => self.states.put::<A>(organization_id, stream_id, loaded),
                (false, Held::Moved) => {
                    let version = loaded.version;
                    let state = std::mem::take(&mut loaded.state);
                    self.states.keep::<A>(organization_id, stream_id, Loaded { state, version });
                }
            }
        }
        Ok(result)
    }

    /// [`Ledger::execute`] against a state the caller already holds with its version (a
    /// payroll run of many items costs more to load than to change), which it keeps current:
    /// the new events are folded in, and it is reloaded after a conflict or when the request
    /// repeats an earlier one.
    pub async fn execute_loaded<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        loaded: &mut Loaded<A::State>,
        command: A::Command,
    ) -> Result<Written>
    where
        A::Command: Clone,
    {
        if let Some(written) = self.replayed(context).await? {
            *loaded = self.load::<A>(context.organization_id(), stream_id).await?;
            return Ok(written);
        }
        self.decide_or_replay::<A>(context, stream_id, loaded, command).await
    }

    /// Decides and appends; when that fails because an identical request with the key won
    /// meanwhile, answers its replay (see [`Ledger::or_replayed`]) with the state reloaded.
    async fn decide_or_replay<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        loaded: &mut Loaded<A::State>,
        command: A::Command,
    ) -> Result<Written>
    where
        A::Command: Clone,
    {
        let outcome = self.decide_and_append::<A>(context, stream_id, loaded, command).await;
        if outcome.is_err()
            && let Some(written) = self.replayed(context).await?
        {
            *loaded = self.load::<A>(context.organization_id(), stream_id).await?;
            return Ok(written);
        }
        outcome
    }

    async fn decide_and_append<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        loaded: &mut Loaded<A::State>,
        command: A::Command,
    ) -> Result<Written>
    where
        A::Command: Clone,
    {
        let organization_id = context.organization_id();
        let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
        loop {
            let outcome = async {
                if !attempts.is_first() {
                    *loaded = self.load::<A>(organization_id, stream_id).await?;
                }
                let events = A::decide(&loaded.state, command.clone())?;
                let result = self.append_decided::<A>(context, stream_id, loaded, events, Held::Copied).await?;
                if result.replayed {
                    // Nothing was written: the stream is as the earlier request left it.
                    *loaded = self.load::<A>(organization_id, stream_id).await?;
                }
                Ok(result.into())
            }
            .await;
            if !attempts.retry(&outcome) {
                return outcome;
            }
        }
    }

    /// A transaction that reads as the API reader of one organization: row-level security
    /// hides every other organization's rows.
    pub async fn tenant_read(&self, organization_id: Uuid) -> Result<Transaction<'static, Postgres>> {
        let mut transaction = self.pool().begin().await?;
        sqlx::query("set local role ledger_api_reader").execute(&mut *transaction).await?;
        sqlx::query("select set_config('ledger.organization_id', $1, true)")
            .bind(organization_id.to_string())
            .execute(&mut *transaction)
            .await?;
        Ok(transaction)
    }

    /// Waits until every projection has applied the event at `position` and every one before
    /// it; returns at once for 0, a position already applied or a gap the projections have
    /// passed.
    ///
    /// # Errors
    /// `Error::Invalid` for a negative position or one beyond the log's last event (it will
    /// not come); `Error::Timeout` when the projections do not get there in `timeout`.
    pub async fn wait_for_position(&self, position: i64, timeout: Duration) -> Result<()> {
        if position < 0 {
            return Err(Error::Invalid(format!("wait_for_position: {position} is not a position (0 or more)")));
        }
        let head = self.store.head().await?.map_or(0, |(head, _)| head);
        if position > head {
            return Err(Error::Invalid(format!(
                "wait_for_position: {position} is beyond the log's last position {head}; pass the `position` a command answered"
            )));
        }
        self.wait_for_projections(&self.projections, position, timeout).await
    }

    /// Waits until the named projections have applied the event at `position`.
    async fn wait_for_projections(&self, names: &[&str], position: i64, timeout: Duration) -> Result<()> {
        self.poll_projections(position, timeout, || projected(self.pool(), position, names)).await
    }

    /// Asks `reached` every 10 ms until it says yes, or `timeout` passes (an error naming
    /// `position`, what the projections are waited on to reach).
    async fn poll_projections<F>(&self, position: i64, timeout: Duration, reached: impl Fn() -> F) -> Result<()>
    where
        F: std::future::Future<Output = ledger_store::Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        while !reached().await? {
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "projections have not reached position {position} yet; retry, or check `payroll-ledger serve` runs its projectors"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Waits until every projection has applied everything committed so far.
    pub async fn wait_for_head(&self, timeout: Duration) -> Result<()> {
        let names = self.projections.clone();
        self.wait_for_head_of(&names, timeout).await
    }

    /// Waits until the named projections have applied the last event of `organization_id`'s
    /// streams of `stream_type` (and everything before it), not the events after it: a
    /// lookup of wallets need not wait for a projector still applying a calculation, whose
    /// transaction holds every reader of the later events back (`ledger_store::read`).
    pub async fn wait_for_stream_type_of(
        &self,
        names: &[&str],
        organization_id: Uuid,
        stream_type: &str,
        timeout: Duration,
    ) -> Result<()> {
        let Some(last) = self.store.last_of_stream_type(organization_id, stream_type).await? else {
            return Ok(());
        };
        self.poll_projections(last.global_position, timeout, || applied_through(self.pool(), last, names)).await
    }

    /// Waits until the named projections, those a lookup reads, have applied everything
    /// committed so far (not the others: a payment's wallet lookup need not wait for the
    /// compliance reports of the calculation before it).
    pub async fn wait_for_head_of(&self, names: &[&str], timeout: Duration) -> Result<()> {
        match self.store.head().await? {
            Some((position, _)) => self.wait_for_projections(names, position, timeout).await,
            None => Ok(()),
        }
    }
}
