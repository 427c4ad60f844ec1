//! End-to-end tests: the server on a random port over HTTP, against real PostgreSQL.

mod api;
mod bad_input;
mod contract;
mod four_eyes;
mod idempotency;
mod large_run;
mod notifications;
mod operations;
mod payments;
mod payslips;
mod privacy;
mod restore;
mod schedules;
mod tenancy;
mod transparency;

use ledger_server::keys::{self, Role};
use ledger_server::server::{Projectors, Server};
use ledger_store::testkit::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// A server over a fresh database, with keys for two organizations.
pub struct World {
    pub db: TestDatabase,
    pub server: Option<Server>,
    pub client: reqwest::Client,
    pub organization: Uuid,
    pub admin: String,
    pub processor: String,
    pub second_processor: String,
    pub third_processor: String,
    pub auditor: String,
    pub compliance: String,
    pub other_organization: Uuid,
    pub other_admin: String,
}

impl World {
    pub async fn new() -> World {
        // Silent unless asked: `TEST_LOG=1` (and `RUST_LOG`, default `warn`) prints the server's log.
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        World::on(TestDatabase::new().await).await
    }

    /// A world over a database made already.
    pub async fn on(db: TestDatabase) -> World {
        let address = "127.0.0.1:0".parse().unwrap();
        let server = Server::start(db.pool.clone(), address, Projectors::Here).await.unwrap();
        let (organization, other_organization) = (Uuid::new_v4(), Uuid::new_v4());
        let key = |organization, role, label: &'static str| {
            let pool = db.pool.clone();
            let holder = keys::Holder::Person(label.to_owned());
            async move { keys::create(&pool, organization, role, label, &holder, "test").await.unwrap().token }
        };
        World {
            admin: key(organization, Role::Admin, "admin").await,
            processor: key(organization, Role::Processor, "alice").await,
            second_processor: key(organization, Role::Processor, "bob").await,
            third_processor: key(organization, Role::Processor, "carol").await,
            auditor: key(organization, Role::Auditor, "auditor").await,
            compliance: key(organization, Role::Compliance, "compliance").await,
            other_admin: key(other_organization, Role::Admin, "other admin").await,
            db,
            server: Some(server),
            client: reqwest::Client::new(),
            organization,
            other_organization,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.as_ref().unwrap().url())
    }

    /// Sends a request; returns the status and the JSON body (or `Value::Null`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response.headers().get("content-type").map(|value| value.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{status} {body}");
            assert!(body["code"].is_string() && body["detail"].is_string(), "{body}");
        }
        (status, body)
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, key, Some(body), None).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, key, None, None).await
    }

    /// Asserts success and returns the body.
    pub async fn ok(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method.clone(), path, key, body, None).await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// The log's last position (what a read waits for to see every write so far).
    pub async fn head_position(&self) -> i64 {
        sqlx::query_scalar("select coalesce(max(global_position), 0) from ledger.events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from ledger.events").fetch_one(&self.db.pool).await.unwrap()
    }

    /// The events of this world's organization (what its keys read of the log).
    pub async fn organization_event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from ledger.events where organization_id = $1")
            .bind(self.organization)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn count_of(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("select count(*) from ledger.events where event_type = $1")
            .bind(event_type)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Registers the organization with a 10% tax rule.
    pub async fn register(&self) {
        let body = json!({ "name": "Acme", "base_currency": "USD", "pay_schedule": { "frequency": "monthly", "anchor_date": "2026-01-01" } });
        self.ok(Method::POST, "/v1/organization", &self.admin, Some(body)).await;
        let rule = json!({ "name": "Withholding", "party": "employee", "calculation": { "kind": "percentage", "rate": "0.10" }, "liability_account": "tax" });
        self.ok(Method::PUT, "/v1/organization/rules/tax", &self.admin, Some(rule)).await;
    }

    /// Hires an employee at a monthly rate with a wallet; approves KYC when asked.
    pub async fn hire(&self, monthly: &str, approve_kyc: bool) -> (String, String) {
        let body = json!({
            "personal": { "full_name": "Grace Hopper", "email": "grace@example.com", "address": null },
            "position": "Engineer", "department": "R&D",
            "rate": { "amount": { "amount": monthly, "currency": "USD" }, "basis": "monthly" },
            "pay_frequency": "monthly", "start_date": "2025-06-01"
        });
        let hired = self.ok(Method::POST, "/v1/employees", &self.processor, Some(body)).await;
        let employee = hired["employee_id"].as_str().unwrap().to_owned();
        if approve_kyc {
            self.ok(
                Method::POST,
                &format!("/v1/employees/{employee}/kyc"),
                &self.processor,
                Some(json!({ "status": "approved" })),
            )
            .await;
        }
        let wallet = self
            .ok(
                Method::POST,
                "/v1/wallets",
                &self.processor,
                Some(json!({ "employee_id": employee, "public_key": format!("pk-{employee}"), "currency": "USD" })),
            )
            .await;
        (employee, wallet["wallet_id"].as_str().unwrap().to_owned())
    }

    /// A January 2026 run created and calculated by alice.
    pub async fn calculated_run(&self) -> String {
        let created = self
            .ok(
                Method::POST,
                "/v1/payroll-runs",
                &self.processor,
                Some(json!({ "period": { "start": "2026-01-01", "end": "2026-01-31" } })),
            )
            .await;
        let run = created["payroll_run_id"].as_str().unwrap().to_owned();
        self.ok(Method::POST, &format!("/v1/payroll-runs/{run}/calculate"), &self.processor, None).await;
        run
    }

    pub async fn stop(mut self) {
        self.server.take().unwrap().stop().await.unwrap();
    }
}
