//! A fresh, migrated database for each test.
//!
//! The server is the one `DATABASE_URL` names (any database of it; the tests create their
//! own), or else a private server started from the installed binaries in the system temp
//! folder and left running for the next test run. Each [`TestDatabase`] is a new database,
//! dropped when the value is dropped.

use std::path::PathBuf;
use std::sync::OnceLock;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::EventStore;
use crate::local_postgres::LocalPostgres;

/// Connections per test database pool.
pub const TEST_POOL_CONNECTIONS_MAX: u32 = 20;

/// The master key every test database's personal data is sealed under (installed in the test
/// process by [`TestDatabase::new`]). A test key: never one of a real deployment.
pub const TEST_MASTER_KEY: &str = "dGVzdC1vbmx5IG1hc3RlciBrZXk6IG5vdCByZWFsISE=";

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub pool: PgPool,
    name: String,
    url: String,
    admin_url: String,
}

/// The URL of the server's maintenance database, started if need be.
fn admin_url() -> &'static str {
    static ADMIN_URL: OnceLock<String> = OnceLock::new();
    ADMIN_URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let data_dir: PathBuf = std::env::temp_dir().join("payroll-ledger-test-pg").join("data");
            let server = LocalPostgres::ensure_running(&data_dir)
                .unwrap_or_else(|error| panic!("no DATABASE_URL and no private PostgreSQL: {error}"));
            server.url("postgres")
        }
    })
}

fn database_url(admin_url: &str, database: &str) -> String {
    let options: PgConnectOptions = admin_url.parse().expect("DATABASE_URL is a valid postgres:// URL");
    options.database(database).to_url_lossy().to_string()
}

impl TestDatabase {
    /// Creates and migrates a new database.
    pub async fn new() -> Self {
        let admin_url = tokio::task::spawn_blocking(|| admin_url().to_owned()).await.expect("starting the test server");
        TestDatabase::new_on(&admin_url).await
    }

    /// Creates and migrates a new database on the server whose maintenance database
    /// `admin_url` names (a cluster a test made of its own).
    pub async fn new_on(admin_url: &str) -> Self {
        let admin_url = admin_url.to_owned();
        let name = format!("ledger_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.expect("connecting to the test server");
        sqlx::query(&format!("create database {name}")).execute(&mut admin).await.expect("creating the test database");
        admin.close().await.ok();
        let url = database_url(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(TEST_POOL_CONNECTIONS_MAX)
            .connect(&url)
            .await
            .expect("connecting to the test database");
        crate::cluster::prepare(&pool).await.expect("migrating the test database");
        let master = crate::vault::MasterKey::parse(TEST_MASTER_KEY).expect("the test master key parses");
        crate::vault::Vault::install(&pool, &master).await.expect("the test master key unlocks a new database");
        TestDatabase { pool, name, url, admin_url }
    }

    pub fn store(&self) -> EventStore {
        EventStore::new(self.pool.clone())
    }

    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new single connection to this test's database.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("connecting to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own small runtime drops the database.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("drop database if exists {name} with (force)")).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}
