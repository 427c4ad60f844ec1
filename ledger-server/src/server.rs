//! Running the service: the HTTP API and the projector runners together.

use std::net::SocketAddr;
use std::sync::Arc;

use ledger_projections::projections::all;
use ledger_projections::{Runner, RunnerHealth, RunnerOptions};
use ledger_store::EventStore;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use ledger_app::{CommandMetrics, Ledger};

use crate::api::{AppState, router};
use crate::metrics::Metrics;
use crate::transparency::SigningHealth;

/// Connections of the pool appends take theirs from, apart from the reads' pool.
pub const WRITER_CONNECTIONS_MAX: u32 = 16;
/// The longest an append waits for another writer of the same stream or key.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// The longest a command waits for a connection to append with.
pub const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A ledger over `pool` whose read-your-writes waits wait for every projection of read
/// tables (not the log's tree, which lingers: `Projection::linger`). Appends get a
/// pool of their own to the same database (see `EventStore::with_writers`): concurrent
/// commands on one stream hold their append connections while they wait for its lock, and
/// the one they wait for reads on the other pool.
pub fn ledger(pool: PgPool, metrics: Arc<CommandMetrics>) -> Ledger {
    let projections =
        all().iter().filter(|projection| projection.linger().is_zero()).map(|projection| projection.name()).collect();
    // Bounded waits: an append waits at most LOCK_WAIT for another writer of its streams
    // (then 409 busy), a command at most CONNECTION_WAIT for a connection (then 503).
    let lock_timeout = format!("{}ms", LOCK_WAIT.as_millis());
    let writers = ledger_store::pool_options()
        .max_connections(WRITER_CONNECTIONS_MAX)
        .acquire_timeout(CONNECTION_WAIT)
        .connect_lazy_with(
            ledger_store::named(&pool.connect_options(), ledger_store::ConnectionRole::Writer)
                .options([("lock_timeout", lock_timeout.as_str())]),
        );
    Ledger::new(EventStore::new(pool).with_writers(writers), metrics, projections)
}

/// A ledger whose metrics nobody scrapes (the CLI's commands, tests).
pub fn unobserved_ledger(pool: PgPool) -> Ledger {
    ledger(pool, Arc::new(CommandMetrics::unregistered()))
}

/// Where the projector runners run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projectors {
    /// In the server's process.
    Here,
    /// In other processes (`payroll-ledger project`): the server answers the API only.
    Elsewhere,
}

/// How the server judges its health, and signs checkpoints.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A projection with committed events it has not applied, whose checkpoint has not moved
    /// for this long, makes `/ready` answer 503.
    pub stall_after: std::time::Duration,
    /// The log's checkpoint key: with one, the server signs a checkpoint every
    /// `checkpoint_every` and evidence packs get a fresh one.
    pub checkpoint_key: Option<Arc<ledger_store::signing::LogKey>>,
    pub checkpoint_every: std::time::Duration,
    /// How notifications are delivered to webhooks (`None`: not by this server).
    pub delivery: Option<crate::delivery::DeliveryOptions>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            stall_after: std::time::Duration::from_secs(60),
            checkpoint_key: None,
            checkpoint_every: crate::transparency::CHECKPOINT_EVERY,
            delivery: Some(crate::delivery::DeliveryOptions::default()),
        }
    }
}

/// A running server; dropping it does not stop it: call [`Server::stop`].
#[derive(Debug)]
pub struct Server {
    pub address: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Runners started by [`start_projectors`]: their health (for `/ready`) and their tasks
/// (await them after asking them to stop).
#[derive(Debug)]
pub struct RunningProjectors {
    pub health: Vec<Arc<RunnerHealth>>,
    pub tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl RunningProjectors {
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl IntoIterator for RunningProjectors {
    type Item = JoinHandle<anyhow::Result<()>>;
    type IntoIter = std::vec::IntoIter<Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.tasks.into_iter()
    }
}

/// Marks a runner stopped when its task ends, a panic included.
struct StoppedOnDrop(Arc<RunnerHealth>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.stopped();
    }
}

/// Starts the runners of every projection (each waits as a standby if another process
/// leads it), supervised (see `Runner::run`), on a pool of their own: a burst of API
/// requests cannot take the connections they step with, nor they the API's.
pub fn start_projectors(
    pool: &PgPool,
    options: RunnerOptions,
    only: Option<&str>,
    stopped: &watch::Receiver<bool>,
) -> RunningProjectors {
    let projections: Vec<_> =
        all().into_iter().filter(|projection| only.is_none_or(|name| projection.name() == name)).collect();
    start_runners(pool, options, projections, stopped)
}

/// [`start_projectors`] for the given projections.
pub fn start_runners(
    pool: &PgPool,
    options: RunnerOptions,
    projections: Vec<Arc<dyn ledger_projections::Projection>>,
    stopped: &watch::Receiver<bool>,
) -> RunningProjectors {
    // A step holds one connection; the leadership locks and the listeners have their own.
    let runners_pool = ledger_store::pool_options()
        .max_connections(projections.len().max(1) as u32 + 1)
        .connect_lazy_with(ledger_store::named(&pool.connect_options(), ledger_store::ConnectionRole::Projector));
    let mut running = RunningProjectors { health: Vec::new(), tasks: Vec::new() };
    // The last runner to end closes the runners' pool before its task ends: whoever awaits
    // every task (a command before it stops its private server) finds its connections
    // closed, not being returned (and pinged) while the server goes away.
    let running_count = Arc::new(std::sync::atomic::AtomicUsize::new(projections.len()));
    for projection in projections {
        let runner = Runner::new(runners_pool.clone(), projection, options);
        running.health.push(runner.health().clone());
        let (stopped, running_count, runners_pool) =
            (stopped.clone(), Arc::clone(&running_count), runners_pool.clone());
        running.tasks.push(tokio::spawn(async move {
            let _guard = StoppedOnDrop(runner.health().clone());
            let name = runner.projection().name();
            let result = runner.run(stopped).await;
            drop(runner);
            if running_count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                runners_pool.close().await;
            }
            result.map_err(|error| anyhow::anyhow!("projection {name} stopped: {error}"))
        }));
    }
    running
}

impl Server {
    /// Binds `address` (port 0 for any free port) and serves the API, with the projector
    /// runners unless they run elsewhere.
    pub async fn start(pool: PgPool, address: SocketAddr, projectors: Projectors) -> anyhow::Result<Server> {
        Server::start_with(pool, address, projectors, ServerOptions::default()).await
    }

    /// [`Server::start`] with options.
    pub async fn start_with(
        pool: PgPool,
        address: SocketAddr,
        projectors: Projectors,
        options: ServerOptions,
    ) -> anyhow::Result<Server> {
        if ledger_store::vault::Vault::installed().is_none() {
            anyhow::bail!(
                "no master key: the server cannot seal or read personal data (give PAYROLL_LEDGER_MASTER_KEY_FILE)"
            );
        }
        crate::privacy::reapply_erasures(&pool).await?;
        let (stop, stopped) = watch::channel(false);
        let running = match projectors {
            Projectors::Here => start_projectors(&pool, RunnerOptions::default(), None, &stopped),
            Projectors::Elsewhere => RunningProjectors { health: Vec::new(), tasks: Vec::new() },
        };
        let mut tasks = running.tasks;
        let signing_health = options.checkpoint_key.as_ref().map(|_| Arc::new(SigningHealth::default()));
        if let (Some(key), Some(health)) = (&options.checkpoint_key, &signing_health) {
            let signing = crate::transparency::sign_periodically(
                pool.clone(),
                key.clone(),
                options.checkpoint_every,
                health.clone(),
                stopped.clone(),
            );
            tasks.push(tokio::spawn(async move {
                signing.await;
                Ok(())
            }));
        }
        let metrics = Arc::new(Metrics::new());
        let ledger = ledger(pool, metrics.commands.clone());
        if let Some(delivery) = options.delivery {
            let delivering = crate::delivery::deliver_periodically(ledger.clone(), delivery, stopped.clone());
            tasks.push(tokio::spawn(async move {
                delivering.await;
                Ok(())
            }));
        }
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let app = router(AppState {
            ledger,
            metrics,
            runners: Arc::new(running.health),
            stall_after: options.stall_after,
            checkpoint_key: options.checkpoint_key.clone(),
            signing: signing_health,
        });
        let mut stopped_http = stopped.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped_http.wait_for(|stop| *stop).await;
                })
                .await?;
            Ok(())
        }));
        Ok(Server { address, stop, tasks })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops the API and the runners, waiting for each to finish its current step.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await??;
        }
        Ok(())
    }

    /// Runs until Ctrl-C or SIGTERM, then stops.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let terminate = async {
            #[cfg(unix)]
            if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                signal.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
        tracing::info!("stopping");
        self.stop().await
    }
}

#[cfg(test)]
mod tests {
    /// The command side names the projections it waits for before a lookup (it does not
    /// depend on the projections' crate): each name must be a projection's, or the wait
    /// would wait for nothing and the lookup read stale tables.
    #[test]
    fn the_read_tables_the_operations_wait_for_are_projections() {
        let names: Vec<&str> = super::all().iter().map(|projection| projection.name()).collect();
        for name in ledger_app::operations::read_tables::ALL {
            assert!(names.contains(name), "{name:?} is not a projection: {names:?}");
        }
    }
}
