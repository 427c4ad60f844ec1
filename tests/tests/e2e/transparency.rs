//! Auditors over HTTP: signed checkpoints, the public key, inclusion and consistency proofs
//! of their own events only, and evidence packs that verify offline.

use std::sync::Arc;
use std::time::Duration;

use ledger_server::server::{Projectors, Server, ServerOptions};
use ledger_store::evidence::{EvidencePack, verify_pack};
use ledger_store::signing::{LogKey, open, sign_checkpoint};
use ledger_store::tree::{check_record, check_tree, parse_hash};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::World;

fn key() -> LogKey {
    LogKey::parse(&LogKey::generate("payroll.test/ledger").unwrap().0).unwrap()
}

fn hashes(value: &Value) -> Vec<ledger_store::tree::Hash> {
    value.as_array().unwrap().iter().map(|hash| parse_hash(hash.as_str().unwrap()).unwrap()).collect()
}

/// A GET with a key on another server than the world's, as JSON.
async fn auditor_get(client: &reqwest::Client, url: &str, key: &str) -> Value {
    client.get(url).bearer_auth(key).send().await.unwrap().json().await.unwrap()
}

/// Waits until every projection, the log's tree included (reads do not wait for it: it
/// lingers), has applied the whole log.
async fn projected(world: &World) {
    let head = world.head_position().await;
    world.ok(Method::GET, &format!("/v1/employees?wait_for_position={head}"), &world.processor, None).await;
    let store = ledger_store::EventStore::new(world.db.pool.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ledger_projections::lag(&store, &["log_tree"]).await.unwrap()[0].events_behind > 0 {
        assert!(std::time::Instant::now() < deadline, "the log's tree did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn auditors_prove_their_events_are_in_the_signed_log_and_take_evidence_away() {
    let world = World::new().await;
    world.register().await;
    world.hire("5000.00", true).await;
    world.hire("4200.00", false).await;
    let run = world.calculated_run().await;
    projected(&world).await;

    // Nothing signed yet: said plainly.
    let (status, body) = world.get("/v1/checkpoints/latest", &world.auditor).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = world.get(&format!("/v1/payroll-runs/{run}/evidence"), &world.auditor).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("no_checkpoint")), "{body}");

    let key = key();
    let signed = sign_checkpoint(&world.db.pool, &key).await.unwrap().checkpoint().clone();
    assert_eq!(signed.tree_size as i64, world.event_count().await);
    let latest = world.ok(Method::GET, "/v1/checkpoints/latest", &world.compliance, None).await;
    assert_eq!(latest["tree_size"], signed.tree_size);
    let head = open(latest["note"].as_str().unwrap(), key.verifier_key()).unwrap().head;
    assert_eq!(head.root.to_string(), latest["root_hash"]);
    let note = world
        .client
        .get(world.url("/v1/checkpoints/latest"))
        .bearer_auth(&world.auditor)
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(note, latest["note"].as_str().unwrap(), "the signed note alone, as text");
    let public = world.ok(Method::GET, "/v1/checkpoints/public-key", &world.auditor, None).await;
    assert_eq!(public["verifier_key"], key.verifier_key());

    // An event of the run, proved in the signed tree.
    let events = world.ok(Method::GET, &format!("/v1/events?stream_id={run}"), &world.auditor, None).await;
    let event_id = events["events"][0]["event_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/proofs/inclusion?event_id={event_id}&tree_size={}", head.size);
    let proof = world.ok(Method::GET, &path, &world.auditor, None).await;
    assert_eq!(proof["root_hash"], latest["root_hash"]);
    assert_eq!(proof["checkpoint"]["tree_size"], head.size);
    let leaf = parse_hash(proof["leaf_hash"].as_str().unwrap()).unwrap();
    let event_hash = hex::decode(events["events"][0]["hash"].as_str().unwrap()).unwrap();
    assert_eq!(leaf, ledger_store::tree::leaf_hash(&event_hash));
    let index = proof["leaf_index"].as_u64().unwrap();
    check_record(&hashes(&proof["proof"]), head.size, head.root, index, leaf).unwrap();

    // The log grows; the signed tree is a prefix of the grown one.
    world.hire("3000.00", true).await;
    projected(&world).await;
    let consistency =
        world.ok(Method::GET, &format!("/v1/proofs/consistency?from={}", head.size), &world.auditor, None).await;
    let to = consistency["to"].as_u64().unwrap();
    assert!(to > head.size, "{consistency}");
    let to_root = parse_hash(consistency["to_root"].as_str().unwrap()).unwrap();
    check_tree(&hashes(&consistency["proof"]), to, to_root, head.size, head.root).unwrap();

    // Another organization sees no proof of these events, nor their run; a processor none at all.
    let (status, _) = world.get(&path, &world.other_admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = world.get(&format!("/v1/payroll-runs/{run}/evidence"), &world.other_admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for forbidden in ["/v1/checkpoints/latest", &path, "/v1/proofs/consistency?from=1"] {
        let (status, _) = world.get(forbidden, &world.processor).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{forbidden}");
    }

    // Malformed input: 400 naming the parameter; a tree or proof that does not exist: 404
    // naming it. Never a 5xx.
    for (query, field, status) in [
        (format!("/v1/proofs/inclusion?event_id={event_id}&tree_size=0"), "tree_size", StatusCode::BAD_REQUEST),
        (format!("/v1/proofs/inclusion?event_id={event_id}&tree_size=-1"), "tree_size", StatusCode::BAD_REQUEST),
        ("/v1/proofs/inclusion?event_id=nope".to_owned(), "event_id", StatusCode::BAD_REQUEST),
        ("/v1/proofs/inclusion".to_owned(), "event_id", StatusCode::BAD_REQUEST),
        ("/v1/proofs/consistency?from=0".to_owned(), "from", StatusCode::BAD_REQUEST),
        ("/v1/proofs/consistency?from=1&extra=1".to_owned(), "extra", StatusCode::BAD_REQUEST),
        (
            format!("/v1/proofs/inclusion?event_id={event_id}&tree_size={}", u64::MAX),
            "tree_size",
            StatusCode::NOT_FOUND,
        ),
        (format!("/v1/proofs/inclusion?event_id={event_id}&tree_size={index}"), "tree_size", StatusCode::NOT_FOUND),
        (format!("/v1/proofs/consistency?from=1&to={}", to + 1), "to", StatusCode::NOT_FOUND),
        (format!("/v1/proofs/consistency?from={to}&to=2"), "from", StatusCode::NOT_FOUND),
    ] {
        let (got, body) = world.get(&query, &world.auditor).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(field), "{query}: {body}");
    }

    // The run's evidence pack verifies offline with the log's key, not with another.
    let pack = world.ok(Method::GET, &format!("/v1/payroll-runs/{run}/evidence"), &world.auditor, None).await;
    let pack: EvidencePack = serde_json::from_value(pack).unwrap();
    assert_eq!(
        pack.events.len() as u64 + pack.events_after_checkpoint,
        events["events"].as_array().unwrap().len() as u64
    );
    assert!(!pack.events.is_empty());
    let report = verify_pack(&pack, Some(key.verifier_key()));
    assert!(report.verified(), "{report:?}");
    let stranger = self::key();
    assert!(!verify_pack(&pack, Some(stranger.verifier_key())).verified());

    // A server with the key signs on its own, on schedule, and serves its key.
    let server_key = Arc::new(self::key());
    let options = ServerOptions {
        checkpoint_key: Some(server_key.clone()),
        checkpoint_every: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let keyed =
        Server::start_with(world.db.pool.clone(), "127.0.0.1:0".parse().unwrap(), Projectors::Elsewhere, options)
            .await
            .unwrap();
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let latest: Value =
            auditor_get(&client, &format!("{}/v1/checkpoints/latest", keyed.url()), &world.auditor).await;
        if latest["verifier_key"] == server_key.verifier_key() {
            let head = open(latest["note"].as_str().unwrap(), server_key.verifier_key()).unwrap().head;
            assert_eq!(head.size, to);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server signed no checkpoint: {latest}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let public: Value =
        auditor_get(&client, &format!("{}/v1/checkpoints/public-key", keyed.url()), &world.auditor).await;
    assert_eq!(public["verifier_key"], server_key.verifier_key());

    // Right after a write to the run, its pack from the keyed server covers it: the server
    // waits for the tree to take the run's last event in, then signs.
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    let pack = auditor_get(&client, &format!("{}/v1/payroll-runs/{run}/evidence", keyed.url()), &world.auditor).await;
    let pack: EvidencePack = serde_json::from_value(pack).unwrap();
    assert_eq!(pack.events_after_checkpoint, 0);
    assert!(pack.events.iter().any(|event| event.event_type == "PayrollRunApproved"));
    assert!(verify_pack(&pack, Some(server_key.verifier_key())).verified());
    keyed.stop().await.unwrap();
    world.stop().await;
}

/// A server with the key that can no longer sign (a stored checkpoint was changed, so the
/// tree no longer provably extends it) is not ready, and says why.
#[tokio::test]
async fn ready_turns_red_when_the_log_can_no_longer_be_signed() {
    let mut world = World::new().await;
    world.server.take().unwrap().stop().await.unwrap();
    let options = ServerOptions {
        checkpoint_key: Some(Arc::new(key())),
        checkpoint_every: Duration::from_millis(100),
        ..ServerOptions::default()
    };
    let address = "127.0.0.1:0".parse().unwrap();
    world.server = Some(Server::start_with(world.db.pool.clone(), address, Projectors::Here, options).await.unwrap());
    world.register().await;
    world.hire("5000.00", true).await;
    projected(&world).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while world.event_count().await
        != sqlx::query_scalar::<_, i64>("select coalesce(max(tree_size), 0) from ledger.signed_checkpoints")
            .fetch_one(&world.db.pool)
            .await
            .unwrap()
    {
        assert!(std::time::Instant::now() < deadline, "the server signed no checkpoint of the whole log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::operations::ready_becomes(&world, StatusCode::OK, "").await;
    let metrics = world.client.get(world.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let covered = format!("payroll_ledger_checkpoint_tree_size {}", world.event_count().await);
    assert!(metrics.lines().any(|line| line == covered), "{covered} in {metrics}");
    assert!(metrics.contains("payroll_ledger_checkpoint_age_seconds "), "{metrics}");

    sqlx::query("update ledger.signed_checkpoints set root_hash = sha256('forged'::bytea)")
        .execute(&world.db.pool)
        .await
        .unwrap();
    let body = crate::operations::ready_becomes(&world, StatusCode::SERVICE_UNAVAILABLE, "cannot be signed").await;
    assert!(body["reason"].as_str().unwrap().contains("refusing to sign"), "{body}");
    world.stop().await;
}
