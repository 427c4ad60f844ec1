//! Command handling: load the stream, fold, decide, append with the expected version; on a
//! version conflict reload and decide again, a bounded number of times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::Aggregate;
use ledger_projections::decode::decode_recorded;
use ledger_store::checkpoint::projected;
use ledger_store::{
    AppendRequest, AppendResult, EventStore, Metadata, RecordedEvent, StoreError, StreamAppend, StreamedAppend,
};
use sha2::Digest;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::keys::Identity;
use crate::metrics::Metrics;

/// Attempts of one command before a version conflict is returned to the caller.
pub const COMMAND_ATTEMPTS_MAX: usize = 5;
/// The longest an API read may ask to wait for projections to reach a position.
pub const WAIT_FOR_POSITION_MAX: Duration = Duration::from_secs(30);

/// Who acts, in which organization, under which idempotency key.
#[derive(Debug, Clone)]
pub struct Context {
    pub identity: Identity,
    pub correlation_id: Uuid,
    pub idempotency: Option<Idempotency>,
}

/// A client's idempotency key and the fingerprint of its request (method, path, body).
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: Vec<u8>,
}

impl Context {
    pub fn organization_id(&self) -> Uuid {
        self.identity.organization_id
    }

    /// A system context (CLI, demo) acting as `actor` for an organization.
    pub fn system(organization_id: Uuid, actor: &str) -> Context {
        Context {
            identity: Identity {
                key_id: Uuid::nil(),
                organization_id,
                role: crate::keys::Role::Admin,
                label: actor.to_owned(),
            },
            correlation_id: Uuid::new_v4(),
            idempotency: None,
        }
    }

    /// The same context under an idempotency key, for a request that is the same every time
    /// it is sent with this key.
    pub fn idempotent(&self, key: &str) -> Context {
        let mut context = self.clone();
        let scoped = format!("{}:{key}", self.organization_id());
        let fingerprint = sha2::Sha256::digest(format!("{scoped}:{}", self.actor()).as_bytes()).to_vec();
        context.idempotency = Some(Idempotency { key: scoped, fingerprint });
        context
    }

    /// The same context without its idempotency key: for the appends of an operation after
    /// the first, which the key stands for.
    pub fn without_idempotency(&self) -> Context {
        Context { idempotency: None, ..self.clone() }
    }

    /// The actor name recorded in events.
    pub fn actor(&self) -> String {
        if self.identity.key_id.is_nil() { self.identity.label.clone() } else { self.identity.actor() }
    }

    fn metadata(&self) -> Metadata {
        let mut metadata = Metadata::by(self.actor());
        metadata.role = Some(self.identity.role.as_str().to_owned());
        metadata.correlation_id = Some(self.correlation_id);
        if !self.identity.key_id.is_nil() {
            metadata.extra.insert("api_key_id".to_owned(), serde_json::json!(self.identity.key_id));
        }
        metadata
    }

    /// An id for a new entity: derived from the idempotency key when there is one, so that
    /// a retried request names the same entity.
    pub fn new_id(&self, purpose: &str) -> Uuid {
        match &self.idempotency {
            Some(idempotency) => {
                Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{}:{purpose}", idempotency.key).as_bytes())
            }
            None => Uuid::new_v4(),
        }
    }
}

/// What a command wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// The last global position written: pass it as `wait_for_position` to read your write.
    pub position: i64,
    /// True when this repeats an earlier request with the same idempotency key.
    pub replayed: bool,
}

impl From<AppendResult> for Written {
    fn from(result: AppendResult) -> Self {
        Written { position: result.last_position(), replayed: result.replayed }
    }
}

/// The engine behind the API and the CLI.
#[derive(Debug, Clone)]
pub struct Ledger {
    store: EventStore,
    metrics: Arc<Metrics>,
    pay_batch_items: usize,
    states: Arc<StateCache>,
}

/// Payroll runs kept in the cache at once.
pub const CACHED_RUNS_MAX: usize = 2;

/// The last payroll runs this process loaded, folded: loading one again decodes only the
/// events after the cached version (a 100,000-item run's calculation is 70 MB of text and
/// ~2 s to decode; the run itself ~15 MB). A stream's events up to a version never change, so
/// a cached fold stays true; newer events always come from the store, so other writers (and
/// other processes) are seen as without it.
#[derive(Debug, Default)]
struct StateCache {
    runs: std::sync::Mutex<std::collections::VecDeque<CachedState>>,
}

#[derive(Debug)]
struct CachedState {
    stream_id: Uuid,
    organization_id: Uuid,
    version: u64,
    state: Arc<dyn std::any::Any + Send + Sync>,
}

impl StateCache {
    fn caches<A: Aggregate>() -> bool {
        A::STREAM_TYPE == ledger_core::payroll::PayrollRunAggregate::STREAM_TYPE
    }

    fn get<A: Aggregate>(&self, stream_id: Uuid) -> Option<(Uuid, A::State, u64)> {
        if !Self::caches::<A>() {
            return None;
        }
        let runs = self.runs.lock().expect("the cache's lock is never poisoned");
        let cached = runs.iter().find(|cached| cached.stream_id == stream_id)?;
        let state = cached.state.downcast_ref::<A::State>()?;
        Some((cached.organization_id, state.clone(), cached.version))
    }

    fn put<A: Aggregate>(&self, organization_id: Uuid, stream_id: Uuid, state: &A::State, version: u64) {
        if !Self::caches::<A>() || version == 0 {
            return;
        }
        let mut runs = self.runs.lock().expect("the cache's lock is never poisoned");
        if runs.iter().any(|cached| cached.stream_id == stream_id && cached.version >= version) {
            return;
        }
        runs.retain(|cached| cached.stream_id != stream_id);
        if runs.len() == CACHED_RUNS_MAX {
            runs.pop_front();
        }
        runs.push_back(CachedState { stream_id, organization_id, version, state: Arc::new(state.clone()) });
    }
}

pub use ledger_projections::decode::stream_append;

/// An aggregate folded one recorded event at a time, checking that its stream belongs to the
/// organization and is of the aggregate's type.
struct Folding<A: Aggregate> {
    organization_id: Uuid,
    stream_id: Uuid,
    state: A::State,
    version: u64,
}

impl<A: Aggregate> Folding<A> {
    fn new(organization_id: Uuid, stream_id: Uuid) -> Self {
        Folding { organization_id, stream_id, state: A::State::default(), version: 0 }
    }

    /// Goes on from a state folded earlier by `owner` (the cache's): the same check as a
    /// stream's first event gets.
    fn resume(&mut self, owner: Uuid, state: A::State, version: u64) -> AppResult<()> {
        self.check(owner, A::STREAM_TYPE)?;
        (self.state, self.version) = (state, version);
        Ok(())
    }

    fn check(&self, organization_id: Uuid, stream_type: &str) -> AppResult<()> {
        if organization_id != self.organization_id || stream_type != A::STREAM_TYPE {
            return Err(AppError::NotFound(format!("no {} {} in this organization", A::STREAM_TYPE, self.stream_id)));
        }
        Ok(())
    }

    fn push(&mut self, event: &RecordedEvent) -> AppResult<()> {
        if self.version == 0 {
            self.check(event.organization_id, &event.stream_type)?;
        }
        // Moved into the state: an event's data is never held twice.
        self.state = A::evolve_owned(std::mem::take(&mut self.state), decode_recorded::<A::Event>(event)?);
        self.version += 1;
        Ok(())
    }
}

/// Folds one stream's recorded events, checking that it belongs to `organization_id`.
pub fn fold_stream<A: Aggregate>(
    organization_id: Uuid,
    stream_id: Uuid,
    recorded: &[RecordedEvent],
) -> AppResult<(A::State, u64)> {
    let mut folding = Folding::<A>::new(organization_id, stream_id);
    for event in recorded {
        folding.push(event)?;
    }
    Ok((folding.state, folding.version))
}

fn all_projection_names() -> Vec<&'static str> {
    ledger_projections::projections::all().iter().map(|projection| projection.name()).collect()
}

impl Ledger {
    pub fn new(store: EventStore, metrics: Arc<Metrics>) -> Ledger {
        Ledger { store, metrics, pay_batch_items: crate::payroll::PAY_BATCH_ITEMS, states: Arc::default() }
    }

    /// Pays this many items per atomic append (default [`crate::payroll::PAY_BATCH_ITEMS`]).
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

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// An aggregate's state and version; a stream of another organization is not found.
    /// Folded as the events are read, one at a time (a payroll run's stream is its
    /// calculation's chunks and an event per payment).
    /// A payroll run this process loaded lately is folded on from its cached state.
    pub async fn load<A: Aggregate>(&self, organization_id: Uuid, stream_id: Uuid) -> AppResult<(A::State, u64)> {
        let mut folding = Folding::<A>::new(organization_id, stream_id);
        if let Some((owner, state, version)) = self.states.get::<A>(stream_id) {
            folding.resume(owner, state, version)?;
        }
        self.store.each_in_stream(stream_id, folding.version + 1, |event| folding.push(&event)).await?;
        // Kept only when newer than what is cached (and never for a stream that is not).
        self.states.put::<A>(organization_id, stream_id, &folding.state, folding.version);
        Ok((folding.state, folding.version))
    }

    /// Keeps a state this process holds current (a run it has just paid) for the next load.
    pub fn remember<A: Aggregate>(&self, organization_id: Uuid, stream_id: Uuid, loaded: &(A::State, u64)) {
        self.states.put::<A>(organization_id, stream_id, &loaded.0, loaded.1);
    }

    /// The stored result when this request repeats an earlier one with the same key.
    pub async fn replayed(&self, context: &Context) -> AppResult<Option<Written>> {
        let Some(idempotency) = &context.idempotency else { return Ok(None) };
        Ok(self.store.idempotent_result(&idempotency.key, &idempotency.fingerprint).await?.map(Written::from))
    }

    /// Appends streams atomically with the context's metadata (and its idempotency key when
    /// `idempotent`).
    pub async fn append(
        &self,
        context: &Context,
        streams: Vec<StreamAppend>,
        idempotent: bool,
    ) -> Result<AppendResult, StoreError> {
        let idempotency = context.idempotency.as_ref().filter(|_| idempotent);
        let request = AppendRequest {
            streams,
            metadata: context.metadata(),
            idempotency_key: idempotency.map(|idempotency| idempotency.key.clone()),
            fingerprint: idempotency.map(|idempotency| idempotency.fingerprint.clone()),
        };
        let started = Instant::now();
        let result = self.store.append(&request).await;
        self.metrics.append_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.commands.with_label_values(&[if result.is_ok() { "ok" } else { "rejected" }]).inc();
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
    ) -> AppResult<AppendResult>
    where
        S: futures_util::Stream<Item = AppResult<ledger_store::NewEvent>>,
    {
        let append = StreamedAppend {
            organization_id: context.organization_id(),
            stream_type: A::STREAM_TYPE.to_owned(),
            stream_id,
            expected_version: ledger_projections::decode::expected_version(version),
            metadata: context.metadata(),
            idempotency_key: context.idempotency.as_ref().map(|idempotency| idempotency.key.clone()),
            fingerprint: context.idempotency.as_ref().map(|idempotency| idempotency.fingerprint.clone()),
        };
        let started = Instant::now();
        let result = self.store.append_streamed(&append, events).await;
        self.metrics.append_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.commands.with_label_values(&[if result.is_ok() { "ok" } else { "rejected" }]).inc();
        result
    }

    /// Decides `command` on one aggregate and appends the result, retrying on conflicts.
    pub async fn execute<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        command: A::Command,
    ) -> AppResult<Written>
    where
        A::Command: Clone,
    {
        if let Some(written) = self.replayed(context).await? {
            return Ok(written);
        }
        let mut loaded = self.load::<A>(context.organization_id(), stream_id).await?;
        self.decide_and_append::<A>(context, stream_id, &mut loaded, command).await
    }

    /// [`Ledger::execute`] against a state the caller already holds with its version (a
    /// payroll run of many items costs more to load than to change), which it keeps current:
    /// the new events are folded in, and it is reloaded after a conflict or when the request
    /// repeats an earlier one.
    pub async fn execute_loaded<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        loaded: &mut (A::State, u64),
        command: A::Command,
    ) -> AppResult<Written>
    where
        A::Command: Clone,
    {
        if let Some(written) = self.replayed(context).await? {
            *loaded = self.load::<A>(context.organization_id(), stream_id).await?;
            return Ok(written);
        }
        self.decide_and_append::<A>(context, stream_id, loaded, command).await
    }

    async fn decide_and_append<A: Aggregate>(
        &self,
        context: &Context,
        stream_id: Uuid,
        loaded: &mut (A::State, u64),
        command: A::Command,
    ) -> AppResult<Written>
    where
        A::Command: Clone,
    {
        for attempt in 1..=COMMAND_ATTEMPTS_MAX {
            if attempt > 1 {
                *loaded = self.load::<A>(context.organization_id(), stream_id).await?;
            }
            let events = A::decide(&loaded.0, command.clone())?;
            let stream = stream_append::<A>(context.organization_id(), stream_id, loaded.1, &events);
            match self.append(context, vec![stream], true).await {
                Ok(result) => {
                    let state = std::mem::take(&mut loaded.0);
                    loaded.1 += events.len() as u64;
                    loaded.0 = events.into_iter().fold(state, A::evolve_owned);
                    return Ok(result.into());
                }
                Err(StoreError::Conflict { .. }) if attempt < COMMAND_ATTEMPTS_MAX => continue,
                Err(error) => return Err(error.into()),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// A transaction that reads as the API reader of one organization: row-level security
    /// hides every other organization's rows.
    pub async fn tenant_read(&self, organization_id: Uuid) -> AppResult<Transaction<'static, Postgres>> {
        let mut transaction = self.pool().begin().await?;
        sqlx::query("set local role ledger_api_reader").execute(&mut *transaction).await?;
        sqlx::query("select set_config('ledger.organization_id', $1, true)")
            .bind(organization_id.to_string())
            .execute(&mut *transaction)
            .await?;
        Ok(transaction)
    }

    /// Waits until every projection has applied the event at `position`.
    pub async fn wait_for_position(&self, position: i64, timeout: Duration) -> AppResult<()> {
        self.wait_for_projections(&all_projection_names(), position, timeout).await
    }

    /// Waits until the named projections have applied the event at `position`.
    async fn wait_for_projections(&self, names: &[&str], position: i64, timeout: Duration) -> AppResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if projected(self.pool(), position, names).await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(AppError::Timeout(format!(
                    "projections have not reached position {position} yet; retry, or check `payroll-ledger serve` runs its projectors"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every projection has applied everything committed so far.
    pub async fn wait_for_head(&self, timeout: Duration) -> AppResult<()> {
        self.wait_for_head_of(&all_projection_names(), timeout).await
    }

    /// Waits until the named projections, those a lookup reads, have applied everything
    /// committed so far (not the others: a payment's wallet lookup need not wait for the
    /// compliance reports of the calculation before it).
    pub async fn wait_for_head_of(&self, names: &[&str], timeout: Duration) -> AppResult<()> {
        match self.store.head().await? {
            Some((position, _)) => self.wait_for_projections(names, position, timeout).await,
            None => Ok(()),
        }
    }
}
