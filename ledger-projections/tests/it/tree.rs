//! The log's Merkle tree: built by its runner batch by batch, equal to the tree of the log
//! recomputed in memory; its proofs; checkpoints signed over it; verification of the log
//! against a checkpoint after a superuser tampered with it; evidence packs.

use std::sync::Arc;

use ledger_projections::projections::LogTreeProjection;
use ledger_projections::{Runner, RunnerOptions};
use ledger_store::evidence::{build, verify_pack};
use ledger_store::signing::{LogKey, Signed, sign_checkpoint};
use ledger_store::testkit::TestDatabase;
use ledger_store::tree::{self, Frontier, check_record, check_tree, leaf_hash};
use ledger_store::{
    AppendRequest, Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamAppend,
};
use serde_json::json;
use uuid::Uuid;

fn append(stream_id: Uuid, expected: ExpectedVersion, count: usize, organization_id: Uuid) -> AppendRequest {
    let events =
        (0..count).map(|n| NewEvent::new("Paid", 1, json!({ "n": n, "amount": format!("{}.00", 100 + n) }))).collect();
    let stream = StreamAppend {
        organization_id,
        stream_type: "payroll_run".to_owned(),
        stream_id,
        expected_version: expected,
        events,
    };
    AppendRequest::single(stream, Metadata::by("tester"))
}

/// A log of four streams written in eight transactions, interleaved.
async fn log(store: &EventStore) -> Vec<Uuid> {
    let organization = Uuid::new_v4();
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let plan = [(0, 3), (1, 2), (0, 2), (2, 4), (3, 1), (1, 3), (2, 1), (3, 2)];
    let mut versions = [0u64; 4];
    for (stream, count) in plan {
        let expected =
            if versions[stream] == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(versions[stream]) };
        store.append(&append(streams[stream], expected, count, organization)).await.unwrap();
        versions[stream] += count as u64;
    }
    streams
}

async fn whole_log(store: &EventStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after = Checkpoint::START;
    loop {
        let batch = store.read_all(after, 1_000).await.unwrap();
        let Some(last) = batch.last() else { return events };
        after = last.checkpoint();
        events.extend(batch);
    }
}

async fn grow_tree(store: &EventStore, batch_size: usize) {
    let options = RunnerOptions { batch_size, ..RunnerOptions::default() };
    Runner::new(store.pool().clone(), Arc::new(LogTreeProjection), options).catch_up().await.unwrap();
}

fn key() -> LogKey {
    LogKey::parse(&LogKey::generate("payroll.test/ledger").unwrap().0).unwrap()
}

#[tokio::test]
async fn the_tree_is_the_logs_tree_batch_after_batch_and_every_proof_checks() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let streams = log(&store).await;
    // Small batches: leaves are added across many transactions.
    grow_tree(&store, 3).await;
    let events = whole_log(&store).await;
    let mut frontier = Frontier::default();
    let mut roots = Vec::new();
    for event in &events {
        frontier.push(leaf_hash(&event.hash));
        roots.push(frontier.root());
    }
    let mut connection = db.pool.acquire().await.unwrap();
    let head = tree::head(&mut connection).await.unwrap();
    assert_eq!((head.size, head.root), (events.len() as u64, frontier.root()));
    for (leaf, event) in events.iter().enumerate() {
        assert_eq!(tree::leaf_index(&mut connection, event.global_position).await.unwrap(), Some(leaf as u64));
        assert_eq!(tree::root_at(&mut connection, leaf as u64 + 1).await.unwrap(), roots[leaf]);
        let inclusion = tree::inclusion_proof(&mut connection, head.size, leaf as u64).await.unwrap();
        assert_eq!(inclusion.root, head.root);
        let proof = inclusion.proof;
        check_record(&proof, head.size, head.root, leaf as u64, leaf_hash(&event.hash)).unwrap();
        assert!(check_record(&proof, head.size, head.root, leaf as u64, leaf_hash(b"another")).is_err());
        let from = leaf as u64 + 1;
        let consistency = tree::consistency_proof(&mut connection, from, head.size).await.unwrap();
        assert_eq!((consistency.from_root, consistency.to_root), (roots[leaf], head.root));
        check_tree(&consistency.proof, head.size, head.root, from, roots[leaf]).unwrap();
    }

    // Many proofs in one read are the same proofs.
    let leaves: Vec<u64> = (0..head.size).rev().collect();
    let together = tree::inclusion_proofs(&mut connection, head.size, &leaves).await.unwrap();
    for (leaf, proof) in leaves.iter().zip(together) {
        assert_eq!(proof, tree::inclusion_proof(&mut connection, head.size, *leaf).await.unwrap().proof);
    }

    // The log grows; the tree extends the one it was.
    let more = append(streams[0], ExpectedVersion::Exact(5), 4, events[0].organization_id);
    store.append(&more).await.unwrap();
    grow_tree(&store, 1_000).await;
    let grown = tree::head(&mut connection).await.unwrap();
    assert_eq!(grown.size, head.size + 4);
    let proof = tree::consistency_proof(&mut connection, head.size, grown.size).await.unwrap().proof;
    check_tree(&proof, grown.size, grown.root, head.size, head.root).unwrap();

    // Out of range: named, nothing computed. Zero is malformed; a tree or leaf the tree does
    // not have is not there.
    use ledger_store::StoreError;
    for (result, field, malformed) in [
        (tree::inclusion_proof(&mut connection, grown.size + 1, 0).await.map(|_| ()), "tree_size", false),
        (tree::inclusion_proof(&mut connection, 0, 0).await.map(|_| ()), "tree_size", true),
        (tree::inclusion_proof(&mut connection, 3, 3).await.map(|_| ()), "tree_size", false),
        (tree::consistency_proof(&mut connection, 0, 3).await.map(|_| ()), "from", true),
        (tree::consistency_proof(&mut connection, 4, 3).await.map(|_| ()), "from", false),
        (tree::consistency_proof(&mut connection, 1, grown.size + 1).await.map(|_| ()), "to", false),
    ] {
        match result.unwrap_err() {
            StoreError::Invalid { field: named, .. } if malformed => assert_eq!(named, field),
            StoreError::NotInTree(detail) if !malformed => assert!(detail.starts_with(field), "{detail}"),
            other => panic!("{field}: {other}"),
        }
    }
}

/// One way a superuser can change the log behind the triggers' back.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    PayloadChanged,
    LastEventOfStreamDeleted,
    StreamDeleted,
    StreamRewrittenWithItsChain,
    TwoEventsReordered,
    EventInsertedInThePast,
}

/// Tampers as a superuser with triggers off (`session_replication_role = replica`); returns
/// the leaf where the log now first differs and the position of the event it names.
async fn tamper(db: &TestDatabase, how: Tamper, events: &[RecordedEvent], streams: &[Uuid]) -> (u64, Option<i64>) {
    let mut connection = db.pool.acquire().await.unwrap();
    sqlx::query("set session_replication_role = replica").execute(&mut *connection).await.unwrap();
    let leaf_of = |position: i64| events.iter().position(|event| event.global_position == position).unwrap() as u64;
    let of_stream = |stream: Uuid| events.iter().filter(move |event| event.stream_id == stream);
    let outcome = match how {
        Tamper::PayloadChanged => {
            let target = of_stream(streams[1]).nth(1).unwrap();
            sqlx::query("update ledger.events set payload = jsonb_set(payload, '{amount}', '\"999999.00\"') where global_position = $1")
                .bind(target.global_position)
                .execute(&mut *connection)
                .await
                .unwrap();
            (leaf_of(target.global_position), Some(target.global_position))
        }
        Tamper::LastEventOfStreamDeleted => {
            let target = of_stream(streams[2]).next_back().unwrap();
            sqlx::query("delete from ledger.events where global_position = $1")
                .bind(target.global_position)
                .execute(&mut *connection)
                .await
                .unwrap();
            (leaf_of(target.global_position), Some(target.global_position))
        }
        Tamper::StreamDeleted => {
            let first = of_stream(streams[1]).next().unwrap();
            sqlx::query("delete from ledger.events where stream_id = $1")
                .bind(streams[1])
                .execute(&mut *connection)
                .await
                .unwrap();
            (leaf_of(first.global_position), Some(first.global_position))
        }
        Tamper::StreamRewrittenWithItsChain => {
            let stream = streams[3];
            sqlx::query(
                "do $$ declare e record; previous bytea := null; begin \
                   for e in select * from ledger.events where stream_id = $1 order by stream_version loop \
                     update ledger.events set payload = jsonb_set(payload, '{amount}', '\"1.00\"'), prev_hash = previous, \
                       hash = ledger.event_hash(previous, e.global_position, e.event_id, e.organization_id, e.stream_type, \
                         e.stream_id, e.stream_version, e.event_type, e.schema_version, \
                         jsonb_set(e.payload, '{amount}', '\"1.00\"'), e.metadata, e.recorded_at) \
                     where global_position = e.global_position returning hash into previous; \
                   end loop; end $$"
                    .replace("$1", &format!("'{stream}'"))
                    .as_str(),
            )
            .execute(&mut *connection)
            .await
            .unwrap();
            let first = of_stream(stream).next().unwrap();
            (leaf_of(first.global_position), Some(first.global_position))
        }
        Tamper::TwoEventsReordered => {
            // The first events of two transactions change places in the log's order.
            let (a, b) = (&events[3], &events[5]);
            assert_ne!(a.transaction_id, b.transaction_id);
            sqlx::query(
                "update ledger.events set transaction_id = case global_position when $1 then $4::text::xid8 else $3::text::xid8 end \
                 where global_position in ($1, $2)",
            )
            .bind(a.global_position)
            .bind(b.global_position)
            .bind(a.transaction_id.to_string())
            .bind(b.transaction_id.to_string())
            .execute(&mut *connection)
            .await
            .unwrap();
            (3, Some(events[4].global_position))
        }
        Tamper::EventInsertedInThePast => {
            // A new stream's event in the first transaction, after its events: between the
            // first transaction's events and the second's.
            let first = &events[0];
            let in_first = events.iter().filter(|event| event.transaction_id == first.transaction_id).count() as u64;
            let position: i64 = sqlx::query_scalar(
                "insert into ledger.events (global_position, transaction_id, event_id, organization_id, stream_type, stream_id, \
                   stream_version, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash) \
                 select p, $1::text::xid8, e, $2, 'payroll_run', s, 1, 'Paid', 1, '{\"amount\": \"5000.00\"}', '{}', $3, null, \
                   ledger.event_hash(null, p, e, $2, 'payroll_run', s, 1, 'Paid', 1, '{\"amount\": \"5000.00\"}', '{}', $3) \
                 from (select nextval('ledger.events_global_position_seq') as p, gen_random_uuid() as e, gen_random_uuid() as s) v \
                 returning global_position",
            )
            .bind(first.transaction_id.to_string())
            .bind(first.organization_id)
            .bind(first.recorded_at)
            .fetch_one(&mut *connection)
            .await
            .unwrap();
            (in_first, Some(position))
        }
    };
    sqlx::query("reset session_replication_role").execute(&mut *connection).await.unwrap();
    outcome
}

#[tokio::test]
async fn a_checkpoint_catches_every_change_a_superuser_can_make_and_names_where() {
    for how in [
        Tamper::PayloadChanged,
        Tamper::LastEventOfStreamDeleted,
        Tamper::StreamDeleted,
        Tamper::StreamRewrittenWithItsChain,
        Tamper::TwoEventsReordered,
        Tamper::EventInsertedInThePast,
    ] {
        let db = TestDatabase::new().await;
        let store = db.store();
        let streams = log(&store).await;
        grow_tree(&store, 1_000).await;
        let key = key();
        let Signed::New(checkpoint) = sign_checkpoint(&db.pool, &key).await.unwrap() else {
            panic!("a first checkpoint")
        };
        let opened = ledger_store::signing::open(&checkpoint.note, key.verifier_key()).unwrap();
        let events = whole_log(&store).await;
        let before = store.verify_against(opened.head, &[], &mut |_| {}).await.unwrap();
        assert!(before.is_intact() && before.first_difference.is_none(), "{how:?}: {before:?}");

        let (leaf, position) = tamper(&db, how, &events, &streams).await;
        let report = store.verify_against(opened.head, &[], &mut |_| {}).await.unwrap();
        assert!(!report.is_intact(), "{how:?} went unseen: {report:?}");
        match how {
            // The stored hash still stands: the chain shows it (the tree covers hashes).
            Tamper::PayloadChanged => {
                let first = report.chains.first_break().unwrap();
                assert_eq!(Some(first.global_position), position, "{how:?}: {report:?}");
            }
            _ => {
                assert!(!report.root_matches, "{how:?}: {report:?}");
                assert!(report.stored_tree_matches, "{how:?}: {report:?}");
                let difference = report.first_difference.clone().unwrap();
                assert_eq!(difference.leaf_index, leaf, "{how:?}: {report:?}");
                let before = (leaf > 0).then(|| events[leaf as usize - 1].global_position);
                assert_eq!(difference.last_matching_position, before, "{how:?}: {report:?}");
                assert_eq!(difference.recorded_leaf_hash, leaf_hash(&events[leaf as usize].hash).to_string());
                match how {
                    // The event that was there is gone: the next one stands in its place.
                    Tamper::LastEventOfStreamDeleted | Tamper::StreamDeleted => {
                        let deleted = events.iter().position(|event| Some(event.global_position) == position).unwrap();
                        let next = events[deleted + 1..]
                            .iter()
                            .find(|event| !matches!(how, Tamper::StreamDeleted) || event.stream_id != streams[1]);
                        let next = next.map(|event| event.global_position);
                        assert_eq!(difference.global_position, next, "{how:?}: {report:?}")
                    }
                    _ => assert_eq!(difference.global_position, position, "{how:?}: {report:?}"),
                }
            }
        }
        // Rebuilt over the changed log, the tree no longer extends the signed one: the key
        // refuses to sign it. The stored tree cannot locate the change any more; earlier
        // trusted heads (one per size here) still do.
        if !matches!(how, Tamper::PayloadChanged) {
            ledger_projections::rebuild(&db.pool, &LogTreeProjection, &mut |_| {}).await.unwrap();
            let error = sign_checkpoint(&db.pool, &key).await.unwrap_err().to_string();
            assert!(error.contains("refusing to sign"), "{how:?}: {error}");
            let mut frontier = Frontier::default();
            let anchors: Vec<tree::TreeHead> = events
                .iter()
                .map(|event| {
                    frontier.push(leaf_hash(&event.hash));
                    tree::TreeHead { size: frontier.size(), root: frontier.root() }
                })
                .collect();
            let report = store.verify_against(opened.head, &anchors, &mut |_| {}).await.unwrap();
            assert!(!report.is_intact() && !report.stored_tree_matches, "{how:?}: {report:?}");
            assert_eq!(report.first_difference, None, "{how:?}: {report:?}");
            assert_eq!(report.last_matching_anchor, (leaf > 0).then_some(leaf), "{how:?}: {report:?}");
            assert_eq!(report.first_broken_anchor, Some(leaf + 1), "{how:?}: {report:?}");
        }
        db.pool.close().await;
    }
}

#[tokio::test]
async fn an_evidence_pack_verifies_offline_and_shows_each_change() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let streams = log(&store).await;
    grow_tree(&store, 1_000).await;
    let key = key();
    let checkpoint = sign_checkpoint(&db.pool, &key).await.unwrap().checkpoint().clone();
    // Events after the checkpoint are left out, and counted.
    let organization = whole_log(&store).await[0].organization_id;
    store.append(&append(streams[0], ExpectedVersion::Exact(5), 2, organization)).await.unwrap();
    let pack = build(&db.pool, "run".to_owned(), &[streams[0]], &checkpoint).await.unwrap();
    assert_eq!((pack.events.len(), pack.events_after_checkpoint), (5, 2));

    let good = verify_pack(&pack, Some(key.verifier_key()));
    assert!(good.verified() && good.key_from_verifier, "{good:?}");
    assert_eq!(good.events_checked, 5);
    // Through JSON and back, as an auditor gets it.
    let text = serde_json::to_string(&pack).unwrap();
    assert!(verify_pack(&ledger_store::evidence::parse_pack(&text).unwrap(), Some(key.verifier_key())).verified());

    let mut amount = pack.clone();
    amount.events[2].payload = amount.events[2].payload.replace("102.00", "902.00");
    let report = verify_pack(&amount, Some(key.verifier_key()));
    assert!(report.failures.iter().any(|failure| failure.contains("not the hash of its fields")), "{report:?}");

    let mut rehashed = amount.clone();
    rehashed.events[2].hash = "00".repeat(32);
    let report = verify_pack(&rehashed, Some(key.verifier_key()));
    assert!(report.failures.iter().any(|failure| failure.contains("inclusion proof does not lead")), "{report:?}");

    let mut dropped = pack.clone();
    dropped.events.remove(1);
    let report = verify_pack(&dropped, Some(key.verifier_key()));
    assert!(report.failures.iter().any(|failure| failure.contains("version 2 of the stream is missing")), "{report:?}");
    let mut cut = pack.clone();
    cut.events.pop();
    let report = verify_pack(&cut, Some(key.verifier_key()));
    assert!(report.failures.iter().any(|failure| failure.contains("states 5 events")), "{report:?}");

    // Signed by another key: refused with the log's key; the pack's own key says nothing.
    let other = self::key();
    let mut forged = pack.clone();
    forged.checkpoint =
        other.sign(ledger_store::signing::open(&pack.checkpoint, key.verifier_key()).unwrap().head).unwrap().note;
    forged.verifier_key = other.verifier_key().to_owned();
    let report = verify_pack(&forged, Some(key.verifier_key()));
    assert!(report.failures.iter().any(|failure| failure.contains("checkpoint does not verify")), "{report:?}");
    // The signature's last bytes changed.
    let mut bad_signature = pack.clone();
    let signature_line = bad_signature.checkpoint.lines().last().unwrap().to_owned();
    let tail = if signature_line.ends_with("AAA=") { "BBB=" } else { "AAA=" };
    let flipped = format!("{}{tail}", &signature_line[..signature_line.len() - 4]);
    bad_signature.checkpoint = bad_signature.checkpoint.replace(&signature_line, &flipped);
    let report = verify_pack(&bad_signature, Some(key.verifier_key()));
    assert!(report.failures.iter().any(|failure| failure.contains("checkpoint does not verify")), "{report:?}");
}

/// Rows of a `transparency` table, as sorted JSON text.
async fn rows(db: &TestDatabase, table: &str) -> Vec<String> {
    sqlx::query_scalar(&format!("select to_jsonb(t)::text from transparency.{table} t order by 1"))
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Thousands of leaves in batches that end anywhere: the packed rows of hashes and the rows of
/// leaf ranges cross their boundaries mid-batch, and come out as a rebuild in one go writes them.
#[tokio::test]
async fn packed_rows_and_leaf_ranges_hold_across_their_boundaries() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    for _ in 0..9 {
        let streams = (0..100)
            .map(|_| StreamAppend {
                organization_id: organization,
                stream_type: "payroll_run".to_owned(),
                stream_id: Uuid::new_v4(),
                expected_version: ExpectedVersion::NoStream,
                events: (0..3).map(|n| NewEvent::new("Paid", 1, json!({ "n": n }))).collect(),
            })
            .collect();
        store
            .append(&AppendRequest {
                streams,
                metadata: Metadata::by("tester"),
                idempotency_key: None,
                fingerprint: None,
            })
            .await
            .unwrap();
    }
    grow_tree(&store, 333).await;
    let events = whole_log(&store).await;
    assert_eq!(events.len(), 2_700);
    let mut frontier = Frontier::default();
    for event in &events {
        frontier.push(leaf_hash(&event.hash));
    }
    let mut connection = db.pool.acquire().await.unwrap();
    let head = tree::head(&mut connection).await.unwrap();
    assert_eq!((head.size, head.root), (2_700, frontier.root()));
    let positions: Vec<i64> = events.iter().map(|event| event.global_position).collect();
    let leaves = tree::leaf_indexes(&mut connection, &positions).await.unwrap();
    for (leaf, event) in events.iter().enumerate() {
        assert_eq!(leaves.get(&event.global_position), Some(&(leaf as u64)), "leaf {leaf}");
    }
    let sample: Vec<u64> = (0..head.size).step_by(37).chain([1_023, 1_024, 2_047, 2_048, 2_699]).collect();
    let proofs = tree::inclusion_proofs(&mut connection, head.size, &sample).await.unwrap();
    for (leaf, proof) in sample.iter().zip(proofs) {
        check_record(&proof, head.size, head.root, *leaf, leaf_hash(&events[*leaf as usize].hash)).unwrap();
    }
    assert_eq!(rows(&db, "leaf_ranges").await.len(), 3);
    // 2n - popcount(n) stored hashes (2,700 has five bits set), 256 to a row.
    let stored = 2 * 2_700 - u64::from(2_700u64.count_ones());
    assert_eq!(rows(&db, "tree_hashes").await.len() as u64, stored.div_ceil(ledger_store::tree::CHUNK_HASHES));
    drop(connection);

    let (hashes, ranges) = (rows(&db, "tree_hashes").await, rows(&db, "leaf_ranges").await);
    ledger_projections::rebuild(&db.pool, &LogTreeProjection, &mut |_| {}).await.unwrap();
    assert_eq!(rows(&db, "tree_hashes").await, hashes);
    assert_eq!(rows(&db, "leaf_ranges").await, ranges);
}

/// A checkpoint kept outside (newer than the database's, as after restoring an older backup)
/// is not forked: the key signs only a tree that extends it.
#[tokio::test]
async fn a_checkpoint_given_from_outside_must_be_extended() {
    let db = TestDatabase::new().await;
    let store = db.store();
    log(&store).await;
    grow_tree(&store, 1_000).await;
    let events = whole_log(&store).await;
    let mut connection = db.pool.acquire().await.unwrap();
    let head = tree::head(&mut connection).await.unwrap();
    let earlier = tree::TreeHead { size: 5, root: tree::root_at(&mut connection, 5).await.unwrap() };
    let key = key();

    let longer = tree::TreeHead { size: head.size + 3, root: head.root };
    let error = ledger_store::signing::sign_checkpoint_extending(&db.pool, &key, Some(longer)).await.unwrap_err();
    assert!(error.to_string().contains("fewer than the"), "{error}");
    let forked = tree::TreeHead { size: 5, root: leaf_hash(&events[0].hash) };
    let error = ledger_store::signing::sign_checkpoint_extending(&db.pool, &key, Some(forked)).await.unwrap_err();
    assert!(error.to_string().contains("does not extend the checkpoint given"), "{error}");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("select count(*) from ledger.signed_checkpoints")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0
    );

    let signed = ledger_store::signing::sign_checkpoint_extending(&db.pool, &key, Some(earlier)).await.unwrap();
    assert!(matches!(signed, Signed::New(ref checkpoint) if checkpoint.tree_size == head.size), "{signed:?}");
}

/// Two signers at once (a server's schedule and an operator's `checkpoint`), and a repeat:
/// one checkpoint per tree, the same note for all.
#[tokio::test]
async fn racing_and_repeated_signers_store_one_checkpoint() {
    let db = TestDatabase::new().await;
    let store = db.store();
    log(&store).await;
    grow_tree(&store, 1_000).await;
    let key = key();
    let (a, b) = tokio::join!(sign_checkpoint(&db.pool, &key), sign_checkpoint(&db.pool, &key));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.checkpoint().note, b.checkpoint().note);
    let again = sign_checkpoint(&db.pool, &key).await.unwrap();
    assert!(matches!(again, Signed::Unchanged(ref checkpoint) if checkpoint.note == a.checkpoint().note), "{again:?}");
    let stored: i64 =
        sqlx::query_scalar("select count(*) from ledger.signed_checkpoints").fetch_one(&db.pool).await.unwrap();
    assert_eq!(stored, 1);
}
