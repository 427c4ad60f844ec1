//! The CLI end to end, against a private PostgreSQL the CLI starts itself (no DATABASE_URL).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use uuid::Uuid;

/// A data folder of its own under the system temp folder (readable by the `postgres` user
/// when the tests run as root), removed at the end.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> DataDir {
        let dir = std::env::temp_dir().join(format!("payroll-ledger-cli-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        DataDir(dir)
    }

    fn pg(&self) -> PathBuf {
        self.0.join("pg")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_payroll-ledger"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("PAYROLL_LEDGER_DATA_DIR", data_dir)
        .output()
        .expect("the CLI runs")
}

/// The CLI with a variable of its own in the environment (another master key).
fn cli_with(data_dir: &Path, args: &[&str], variable: &str, value: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_payroll-ledger"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("PAYROLL_LEDGER_DATA_DIR", data_dir)
        .env(variable, value)
        .output()
        .expect("the CLI runs")
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let output = cli(data_dir, args);
    assert!(
        output.status.success(),
        "payroll-ledger {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn demo_id(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("payroll-ledger demo:{name}").as_bytes())
}

fn ndjson(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))).collect()
}

#[test]
fn migrate_demo_events_verify_and_replay_on_a_private_postgres() {
    let dir = DataDir::new();
    let migrated = ok(&dir.pg(), &["migrate"]);
    assert!(migrated.contains("applied") && !migrated.contains("pending"), "{migrated}");
    let status = ok(&dir.pg(), &["migrate", "--status"]);
    assert!(status.lines().all(|line| line.trim_start().starts_with("applied")), "{status}");

    let demo = ok(&dir.pg(), &["demo", "--employees", "60"]);
    assert!(demo.contains("Completed") && demo.contains("verify       intact"), "{demo}");
    assert!(demo.contains("retro line"), "the backdated raise shows as a retro line: {demo}");
    assert!(
        demo.contains("1 payment refused by the rail") && demo.contains("1 item held for KYC paid once approved"),
        "a refused payment paid anew and a held item released: {demo}"
    );

    let events = ndjson(&ok(&dir.pg(), &["events", "--format", "ndjson"]));
    assert!(events.len() > 300, "{} events", events.len());
    assert!(events.windows(2).all(|pair| pair[0]["global_position"].as_i64() < pair[1]["global_position"].as_i64()));
    let csv = ok(&dir.pg(), &["events", "--format", "csv", "--event-type", "PayrollRunCompleted"]);
    // Two months, the four biweekly periods that end in them, and the year-end bonus; January
    // completes twice more: after the payment the rail refused was paid anew, and after the
    // held item was released and paid.
    assert_eq!(csv.lines().count(), 10, "a header and nine completions of seven runs: {csv}");
    let runs: std::collections::HashSet<&str> =
        csv.lines().skip(1).map(|line| line.split(',').nth(4).unwrap()).collect();
    assert_eq!(runs.len(), 7, "{csv}");

    personal_data(&dir, &demo, events.len());

    let verified = cli(&dir.pg(), &["verify"]);
    assert_eq!(verified.status.code(), Some(0), "{}", String::from_utf8_lossy(&verified.stdout));

    // Employee 1 got a raise backdated into December: before it, one rate; now, two.
    let employee = demo_id("employee:1");
    let raises = ndjson(&ok(
        &dir.pg(),
        &["events", "--stream-id", &employee.to_string(), "--event-type", "EmployeePayRateChanged"],
    ));
    let raise_position = raises[0]["global_position"].as_i64().unwrap();
    let entity = format!("employee:{employee}");
    let before: serde_json::Value = serde_json::from_str(&ok(
        &dir.pg(),
        &["replay", "--entity", &entity, "--as-of", &(raise_position - 1).to_string()],
    ))
    .unwrap();
    let now: serde_json::Value =
        serde_json::from_str(&ok(&dir.pg(), &["replay", "--entity", &entity, "--as-of", "2999-01-01"])).unwrap();
    assert_eq!(before["state"]["rates"].as_array().unwrap().len(), 1);
    assert_eq!(now["state"]["rates"].as_array().unwrap().len(), 2);
    assert_ne!(before["state"]["rates"], now["state"]["rates"]);

    let bad = cli(&dir.pg(), &["replay", "--entity", &entity, "--as-of", "yesterday-ish"]);
    assert_eq!(bad.status.code(), Some(2));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.lines().last().unwrap().contains("--as-of"), "{message}");

    checkpoints_and_evidence(&dir);
}

/// The demo's master key (made beside the data), refused when another is given; a former
/// employee erased by the demo, another by `erase-due`.
fn personal_data(dir: &DataDir, demo: &str, events: usize) {
    assert!(dir.0.join("master.key").is_file(), "the demo made a master key beside its data");
    assert!(demo.contains("1 former employee(s) erased") && demo.contains("1 more due"), "{demo}");
    let former = |n: usize| demo_id(&format!("former employee {n}")).to_string();
    let erased = ndjson(&ok(&dir.pg(), &["events", "--stream-id", &former(1), "--event-type", "EmployeeHired"]));
    assert!(erased[0]["payload"]["personal"]["erased"]["at"].is_string(), "{:?}", erased[0]);
    let kept = ndjson(&ok(&dir.pg(), &["events", "--stream-id", &former(2), "--event-type", "EmployeeHired"]));
    assert_eq!(kept[0]["payload"]["personal"]["full_name"], "Former Employee 2");
    let stored = ok(&dir.pg(), &["events", "--stream-id", &former(2), "--as-stored"]);
    assert!(!stored.contains("Former Employee") && stored.contains("\"sealed\""), "{stored}");

    // Another master key: refused before anything is read or written.
    let other = "b3RoZXIgbWFzdGVyIGtleSwgbm90IHRoZSBkZW1vJ3M=";
    for args in [&["events", "--format", "ndjson"][..], &["erase-due"][..]] {
        let refused = cli_with(&dir.pg(), args, "PAYROLL_LEDGER_MASTER_KEY", other);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(message.contains("not the one") && message.contains("PAYROLL_LEDGER_MASTER_KEY"), "{message}");
    }
    assert_eq!(ndjson(&ok(&dir.pg(), &["events", "--format", "ndjson"])).len(), events);

    let listed = ok(&dir.pg(), &["erase-due", "--dry-run"]);
    assert!(listed.contains(&format!("would erase employee {}", former(2))) && listed.contains("1 due"), "{listed}");
    assert_eq!(ndjson(&ok(&dir.pg(), &["events", "--format", "ndjson"])).len(), events);
    let erased = ok(&dir.pg(), &["erase-due"]);
    assert!(erased.contains("erased 1 of 1"), "{erased}");
    assert!(ok(&dir.pg(), &["erase-due"]).contains("nobody is due"));
    let now = ndjson(&ok(&dir.pg(), &["events", "--stream-id", &former(2), "--event-type", "EmployeeHired"]));
    assert!(now[0]["payload"]["personal"]["erased"]["at"].is_string(), "{:?}", now[0]);

    // A new master key: every data key re-wrapped; the old key opens nothing, the new all.
    let new_key = dir.0.join("new-master.key");
    ok(&dir.pg(), &["master-key", "--out", &new_key.to_string_lossy()]);
    let rotated = ok(&dir.pg(), &["rotate-master-key", "--new-master-key-file", &new_key.to_string_lossy()]);
    assert!(rotated.contains("re-wrapped"), "{rotated}");
    let old = cli(&dir.pg(), &["events", "--limit", "1"]);
    assert_eq!(old.status.code(), Some(2), "the old key is refused");
    let employee = demo_id("employee:1").to_string();
    let opened = cli_with(
        &dir.pg(),
        &["events", "--stream-id", &employee, "--event-type", "EmployeeHired"],
        "PAYROLL_LEDGER_MASTER_KEY_FILE",
        &new_key.to_string_lossy(),
    );
    assert!(opened.status.success(), "{}", String::from_utf8_lossy(&opened.stderr));
    let hired = ndjson(&String::from_utf8(opened.stdout).unwrap());
    assert_eq!(hired[0]["payload"]["personal"]["full_name"], "Employee 00001");
    // The rest of the test goes on with the new key as the default one.
    std::fs::rename(&new_key, dir.0.join("master.key")).unwrap();
}

/// A key, a checkpoint, the log verified against it, a run's evidence verified offline.
fn checkpoints_and_evidence(dir: &DataDir) {
    let key_file = dir.0.join("ledger.key");
    let key = key_file.to_str().unwrap();
    let public = ok(&dir.pg(), &["keygen", "--name", "payroll.test/ledger", "--out", key]);
    let public = public.trim();
    assert!(public.starts_with("payroll.test/ledger+"), "{public}");
    let again = cli(&dir.pg(), &["keygen", "--name", "payroll.test/ledger", "--out", key]);
    assert_eq!(again.status.code(), Some(2), "an existing key is never overwritten");

    let unkeyed = cli(&dir.pg(), &["checkpoint"]);
    assert_eq!(unkeyed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unkeyed.stderr).contains("keygen"), "says how to make a key");

    let checkpoint_file = dir.0.join("checkpoint.txt");
    let checkpoint = checkpoint_file.to_str().unwrap();
    let note = ok(&dir.pg(), &["checkpoint", "--checkpoint-key-file", key, "--out", checkpoint]);
    assert_eq!(std::fs::read_to_string(&checkpoint_file).unwrap(), note);
    assert!(note.starts_with("payroll.test/ledger\n"), "{note}");

    let extended = cli(&dir.pg(), &["checkpoint", "--checkpoint-key-file", key, "--extends", checkpoint]);
    assert!(extended.status.success(), "{}", String::from_utf8_lossy(&extended.stderr));
    let verified = ok(&dir.pg(), &["verify", "--checkpoint", checkpoint, "--public-key", public]);
    assert!(verified.contains("are the checkpointed log") && verified.contains("intact"), "{verified}");
    let (_, stranger) = {
        let other = dir.0.join("other.key");
        let public = ok(&dir.pg(), &["keygen", "--name", "payroll.test/ledger", "--out", other.to_str().unwrap()]);
        (other, public.trim().to_owned())
    };
    let refused = cli(&dir.pg(), &["verify", "--checkpoint", checkpoint, "--public-key", &stranger]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not signed by the key"));

    let event = ndjson(&ok(&dir.pg(), &["events", "--format", "ndjson", "--limit", "1"])).remove(0);
    let event_id = event["event_id"].as_str().unwrap();
    let size = note.lines().nth(1).unwrap();
    let proof: serde_json::Value =
        serde_json::from_str(&ok(&dir.pg(), &["proof", "inclusion", "--event-id", event_id, "--tree-size", size]))
            .unwrap();
    assert_eq!(proof["leaf_index"], 0, "the first event is the first leaf: {proof}");
    assert_eq!(proof["root_hash"].as_str(), note.lines().nth(2), "{proof}");
    assert!(proof["checkpoint"]["note"].as_str().is_some(), "the checkpoint of that size: {proof}");
    let consistency: serde_json::Value =
        serde_json::from_str(&ok(&dir.pg(), &["proof", "consistency", "--from", "1", "--to", size])).unwrap();
    assert_eq!(consistency["to_root"], proof["root_hash"]);
    let beyond = cli(&dir.pg(), &["proof", "consistency", "--from", "1", "--to", "999999999"]);
    assert_eq!(beyond.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&beyond.stderr).contains("the log's tree has"));

    let run = demo_id("run:2026-01").to_string();
    let pack_file = dir.0.join("run.json");
    let pack = pack_file.to_str().unwrap();
    let exported = ok(&dir.pg(), &["evidence", "--run", &run, "--out", pack, "--checkpoint-key-file", key]);
    assert!(exported.contains("with inclusion proofs"), "{exported}");
    let checked = ok(&dir.pg(), &["verify-evidence", pack, "--public-key", public]);
    assert!(checked.starts_with("verified:"), "{checked}");
    let exported: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pack_file).unwrap()).unwrap();
    let streams = exported["stream_events"].as_object().unwrap();
    let paid =
        exported["events"].as_array().unwrap().iter().filter(|event| event["event_type"] == "PayrollItemPaid").count();
    assert!(
        paid > 0 && streams.len() == 1 + paid,
        "the run and each payment's transaction: {} streams, {paid} paid",
        streams.len()
    );

    let mut changed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pack_file).unwrap()).unwrap();
    let paid = changed["events"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|event| event["event_type"] == "PayrollItemPaid")
        .unwrap();
    let payload = paid["payload"].as_str().unwrap().replacen("\"amount\": \"", "\"amount\": \"1", 1);
    paid["payload"] = payload.into();
    let changed_file = dir.0.join("changed.json");
    std::fs::write(&changed_file, changed.to_string()).unwrap();
    let failed = cli(&dir.pg(), &["verify-evidence", changed_file.to_str().unwrap(), "--public-key", public]);
    assert_eq!(failed.status.code(), Some(1));
    let report = String::from_utf8_lossy(&failed.stdout);
    assert!(report.contains("NOT verified") && report.contains("PayrollItemPaid"), "{report}");
}

/// The demo runs for sizes past those that broke it (from 1,460 employees a raise fell before
/// an employee's start); 100,000 runs in the bench.
#[test]
fn the_demo_runs_for_larger_staffs() {
    let dir = DataDir::new();
    let demo = ok(&dir.pg(), &["demo", "--employees", "1500"]);
    assert!(demo.contains("Completed") && demo.contains("verify       intact"), "{demo}");
}

#[test]
fn a_second_demo_on_the_same_data_pays_nobody_twice() {
    let dir = DataDir::new();
    ok(&dir.pg(), &["demo", "--employees", "40"]);
    let paid = |dir: &DataDir| ndjson(&ok(&dir.pg(), &["events", "--event-type", "PayrollItemPaid"])).len();
    let first = paid(&dir);
    assert!(first > 0);
    let again = ok(&dir.pg(), &["demo", "--employees", "40"]);
    assert!(again.contains("nothing was paid twice"), "{again}");
    assert_eq!(paid(&dir), first);
}

#[test]
fn without_postgres_binaries_it_says_what_to_install() {
    let dir = DataDir::new();
    let empty = dir.0.join("no-binaries");
    std::fs::create_dir_all(&empty).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_payroll-ledger"))
        .args(["migrate"])
        .env_remove("DATABASE_URL")
        .env("PATH", "")
        .env("PG_BINDIR", &empty)
        .env("PAYROLL_LEDGER_DATA_DIR", dir.pg())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("no PostgreSQL server binaries found") && message.contains("apt-get install postgresql"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
}
