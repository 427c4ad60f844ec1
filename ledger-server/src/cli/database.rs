//! Which PostgreSQL the CLI uses: `DATABASE_URL`, or a private server it manages.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ledger_store::local_postgres::LocalPostgres;
use sqlx::{Connection, PgConnection, PgPool};

/// The database of the private server.
const LOCAL_DATABASE: &str = "payroll_ledger";
pub const POOL_CONNECTIONS_MAX: u32 = 16;

#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    /// The connection URL (with its password: for client programs, never for messages).
    pub url: String,
    /// Where the data lives, for messages.
    pub location: String,
    local: Option<LocalPostgres>,
}

/// Whether opening the database applies pending migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    Apply,
    /// `migrate --status` reports them; the bench migrates a database of its own.
    Leave,
}

/// What becomes of a private server this process started, once it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAfter {
    Stop,
    /// `serve` leaves it running for the next command.
    Keep,
}

impl Database {
    /// Connects to `url`, or starts (or joins) the private server in `data_dir`, and applies
    /// pending migrations or leaves them.
    pub async fn open(url: Option<&str>, data_dir: &Path, migrations: Migrations) -> anyhow::Result<Database> {
        let Located { url, local, location } = Located::find(url, data_dir).await?;
        if let Some(server) = &local {
            create_database(server).await?;
        }
        let options: sqlx::postgres::PgConnectOptions =
            url.parse().with_context(|| format!("DATABASE_URL is not a PostgreSQL URL: {location}"))?;
        let pool = ledger_store::pool_options()
            .max_connections(POOL_CONNECTIONS_MAX)
            .connect_with(ledger_store::named(&options, ledger_store::ConnectionRole::Main))
            .await
            .with_context(|| {
                format!("cannot connect to PostgreSQL at {location}; is it running, and is DATABASE_URL right?")
            })?;
        if migrations == Migrations::Apply {
            let prepared = ledger_store::cluster::prepare(&pool).await.context("applying migrations")?;
            if prepared.era_begun && prepared.era > 1 {
                eprintln!(
                    "began era {} of the log on this PostgreSQL cluster (the database came from another cluster)",
                    prepared.era
                );
            }
            if let Some(missing) = prepared.access_missing {
                eprintln!("warning: {missing}");
            }
        }
        Ok(Database { pool, url, location, local })
    }

    /// Closes the pool; stops the private server if this process started it, unless told
    /// to keep it.
    pub async fn close(self, server_after: ServerAfter) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(server) = self.local
            && server.started_here()
            && server_after == ServerAfter::Stop
        {
            tokio::task::spawn_blocking(move || server.stop()).await??;
        }
        Ok(())
    }
}

/// The database a command works on: `DATABASE_URL`'s, or the private server's (started or
/// joined), which this process stops again if it started it.
pub struct Located {
    pub url: String,
    pub local: Option<LocalPostgres>,
    pub location: String,
}

impl Located {
    pub async fn find(url: Option<&str>, data_dir: &Path) -> anyhow::Result<Located> {
        Ok(match url {
            Some(url) => Located { url: url.to_owned(), local: None, location: redact(url) },
            None => {
                let dir = absolute(data_dir);
                let server = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || LocalPostgres::ensure_running(&dir)
                })
                .await??;
                let verb = if server.started_here() { "started" } else { "using the running" };
                eprintln!(
                    "{verb} private PostgreSQL: data in {}, port {} (set DATABASE_URL to use another server)",
                    dir.display(),
                    server.port()
                );
                Located { url: server.url(LOCAL_DATABASE), local: Some(server), location: dir.display().to_string() }
            }
        })
    }

    /// Stops the private server if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        if let Some(server) = self.local
            && server.started_here()
        {
            tokio::task::spawn_blocking(move || server.stop()).await??;
        }
        Ok(())
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

async fn create_database(server: &LocalPostgres) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&server.url("postgres")).await?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
        .bind(LOCAL_DATABASE)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        sqlx::query(&format!("create database {LOCAL_DATABASE}")).execute(&mut admin).await?;
    }
    admin.close().await?;
    Ok(())
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((credentials, rest)) => match credentials.rsplit_once(':') {
            Some((user, _)) if user.contains("//") && user.matches(':').count() == 1 => format!("{user}:***@{rest}"),
            _ => format!("{credentials}@{rest}"),
        },
        None => url.to_owned(),
    }
}
