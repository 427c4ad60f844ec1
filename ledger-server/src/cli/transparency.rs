//! `keygen`, `checkpoint`, `verify --checkpoint`, `evidence`, `verify-evidence`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use ledger_projections::projections::LogTreeProjection;
use ledger_projections::{Runner, RunnerOptions};
use ledger_server::transparency::KeySource;
use ledger_store::EventStore;
use ledger_store::evidence::{parse_pack, verify_pack};
use ledger_store::signing::{LogKey, Signed, open, sign_checkpoint_extending};
use ledger_store::tree::TreeHead;

use super::Progress;
use super::database::Database;

pub fn keygen(name: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let (private, public) = LogKey::generate(name)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .with_context(|| format!("creating {} (an existing key is never overwritten)", out.display()))?;
    std::io::Write::write_all(&mut file, format!("{private}\n").as_bytes())?;
    eprintln!("wrote the private key to {} (mode 0600); give auditors the verifier key:", out.display());
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}

/// A saved checkpoint: the signed note itself, or the JSON of `GET /v1/checkpoints/latest`
/// saved as it came.
fn read_note(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(json) => {
            json["note"].as_str().map(str::to_owned).context("the JSON has no `note`: save the checkpoint's note")
        }
        Err(_) => Ok(text),
    }
}

/// A verifier key given as text, or the file holding it.
fn verifier_key(given: Option<&str>, key: Option<&KeySource>) -> anyhow::Result<Option<String>> {
    if let Some(given) = given {
        let path = Path::new(given);
        if path.is_file() {
            return Ok(Some(std::fs::read_to_string(path)?.trim().to_owned()));
        }
        return Ok(Some(given.trim().to_owned()));
    }
    Ok(match key {
        Some(key) => key.load()?.map(|key| key.verifier_key().to_owned()),
        None => None,
    })
}

/// Catches the log's tree up to the log; returns the events it added.
pub(super) async fn catch_up_tree(pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let runner = Runner::new(pool.clone(), Arc::new(LogTreeProjection), RunnerOptions::default());
    Ok(runner.catch_up().await?)
}

pub async fn checkpoint(
    database: &Database,
    out: Option<&Path>,
    extends: Option<&Path>,
    key: &KeySource,
) -> anyhow::Result<()> {
    let key = key.require()?;
    let outside = match extends {
        Some(path) => Some(open(&read_note(path)?, key.verifier_key())?.head),
        None => None,
    };
    catch_up_tree(&database.pool).await?;
    let signed = sign_checkpoint_extending(&database.pool, &key, outside).await?;
    let checkpoint = signed.checkpoint();
    if let Some(out) = out {
        std::fs::write(out, &checkpoint.note).with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{}", checkpoint.note);
    let what = match &signed {
        Signed::New(_) => "signed a checkpoint",
        Signed::Unchanged(_) => "the log has not grown since the last checkpoint; here it is",
    };
    eprintln!(
        "{what}: {} events, root {}{}; keep a copy where the database's owner cannot change it",
        checkpoint.tree_size,
        checkpoint.root,
        out.map(|out| format!(", written to {}", out.display())).unwrap_or_default()
    );
    Ok(())
}

pub async fn verify_checkpoint(
    database: &Database,
    checkpoint: &Path,
    public_key: Option<&str>,
    key: &KeySource,
) -> anyhow::Result<ExitCode> {
    let note = read_note(checkpoint)?;
    let verifier_key = verifier_key(public_key, Some(key))?
        .context("pass the log's verifier key with --public-key (or configure the checkpoint key it belongs to)")?;
    let opened = open(&note, &verifier_key)?;
    println!(
        "checkpoint: {} events, root {}, signature verified with {verifier_key}",
        opened.head.size, opened.head.root
    );
    let anchors = anchors(database, Some(&verifier_key)).await?;
    verify_with_tree(database, opened.head, "the checkpointed log", anchors).await
}

/// The key's checkpoints stored in the database, each signature checked (one that does not
/// verify is reported: someone wrote into `ledger.signed_checkpoints`).
async fn anchors(database: &Database, verifier_key: Option<&str>) -> anyhow::Result<Anchors> {
    let Some(verifier_key) = verifier_key else { return Ok(Anchors::default()) };
    let mut anchors = Anchors::default();
    for stored in ledger_store::signing::all_by(&database.pool, verifier_key).await? {
        match open(&stored.note, verifier_key) {
            Ok(opened) if opened.head.size == stored.tree_size && opened.head.root == stored.root => {
                anchors.heads.push(opened.head)
            }
            _ => anchors.forged.push(stored.tree_size),
        }
    }
    Ok(anchors)
}

/// Trusted tree heads to check the log against, and stored checkpoints that are not genuine.
#[derive(Default)]
struct Anchors {
    heads: Vec<TreeHead>,
    forged: Vec<u64>,
}

/// `verify` of the whole log: every chain, and the log against its own Merkle tree (which
/// shows events removed, reordered or inserted behind the triggers' back, unless the tree
/// was rewritten too: against that, `verify --checkpoint`).
pub async fn verify_log(database: &Database, public_key: Option<&str>, key: &KeySource) -> anyhow::Result<ExitCode> {
    let mut connection = database.pool.acquire().await?;
    let head = ledger_store::tree::head(&mut connection).await?;
    drop(connection);
    let verifier_key = verifier_key(public_key, Some(key))?;
    let anchors = anchors(database, verifier_key.as_deref()).await?;
    verify_with_tree(database, head, "the log's Merkle tree", anchors).await
}

/// Every chain, and the root of the log's first `head.size` events against `head`'s.
async fn verify_with_tree(
    database: &Database,
    head: TreeHead,
    what: &str,
    anchors: Anchors,
) -> anyhow::Result<ExitCode> {
    let store = EventStore::new(database.pool.clone());
    let total = store.count_after(ledger_store::Checkpoint::START).await? as u64;
    let mut progress = Progress::new("verify", Some(total));
    let report = store.verify_against(head, &anchors.heads, &mut |events| progress.set(events)).await?;
    progress.finish();
    let mut intact = true;
    for size in &anchors.forged {
        intact = false;
        println!("NOT genuine: the stored checkpoint of {size} events does not verify with the key");
    }
    if let Some(broken) = report.first_broken_anchor {
        intact = false;
        println!(
            "NOT the log the key signed: the log's first {broken} events do not have the root of the key's checkpoint of {broken}; {}",
            report.last_matching_anchor.map_or("no earlier checkpoint matches".to_owned(), |size| format!(
                "its first {size} events still have their checkpoint's root, so the change lies in events {} to {broken}",
                size + 1
            ))
        );
    } else if report.anchors_checked > 0 {
        println!("the log has the roots of the key's {} checkpoints it reaches", report.anchors_checked);
    }
    if let Some(first) = report.chains.first_break() {
        intact = false;
        println!(
            "BROKEN: {} stream(s) with a bad event; first at position {}:",
            report.chains.breaks.len(),
            first.global_position
        );
        for chain_break in &report.chains.breaks {
            println!(
                "  stream {} version {} (position {}): {:?}",
                chain_break.stream_id, chain_break.stream_version, chain_break.global_position, chain_break.kind
            );
        }
    }
    if report.root_matches {
        println!("the log's first {} events are {what} ({} events now)", report.checkpoint_size, report.log_events);
    } else {
        intact = false;
        println!(
            "NOT {what}: the root of the log's first {} events differs ({} events readable now)",
            report.checkpoint_size, report.log_events
        );
        match &report.first_difference {
            Some(difference) => {
                let now = difference.global_position.map_or("no event (the log ends there)".to_owned(), |position| {
                    format!("the event at position {position}")
                });
                let after =
                    difference.last_matching_position.map_or("at the start of the log".to_owned(), |position| {
                        format!("right after the event at position {position}")
                    });
                println!(
                    "first difference at leaf {}, {after}: the log has {now} there; {what} had another event (leaf hash {})",
                    difference.leaf_index, difference.recorded_leaf_hash
                );
            }
            None if report.log_events < report.checkpoint_size => println!(
                "the log holds {} events, fewer than the {} {what} covers, and the stored tree does not have them \
                 either: an older backup was restored, or events were removed with the tree rebuilt",
                report.log_events, report.checkpoint_size
            ),
            None => println!(
                "the stored tree has been changed too, so the first difference cannot be located from the database; \
                 verify against earlier checkpoints to narrow it down"
            ),
        }
    }
    if intact {
        println!(
            "intact: {} events in {} streams, every hash chain recomputed and matching",
            report.chains.events_checked, report.chains.streams_checked
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// An application error as the CLI reports it.
fn reported(error: ledger_server::error::AppError) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}

pub async fn prove_inclusion(database: &Database, event_id: uuid::Uuid, tree_size: Option<u64>) -> anyhow::Result<()> {
    let event: Option<(i64, Vec<u8>)> =
        sqlx::query_as("select global_position, hash from ledger.events where event_id = $1")
            .bind(event_id)
            .fetch_optional(&database.pool)
            .await?;
    let (position, hash) = event.with_context(|| format!("no event {event_id} in this ledger"))?;
    let mut connection = database.pool.acquire().await?;
    let proof =
        ledger_server::api::transparency::prove_inclusion(&mut connection, event_id, position, &hash, tree_size)
            .await
            .map_err(reported)?;
    println!("{}", serde_json::to_string_pretty(&proof)?);
    Ok(())
}

pub async fn prove_consistency(database: &Database, from: u64, to: Option<u64>) -> anyhow::Result<()> {
    let mut connection = database.pool.acquire().await?;
    let proof =
        ledger_server::api::transparency::prove_consistency(&mut connection, from, to).await.map_err(reported)?;
    println!("{}", serde_json::to_string_pretty(&proof)?);
    Ok(())
}

pub async fn evidence(database: &Database, run: uuid::Uuid, out: &Path, key: &KeySource) -> anyhow::Result<()> {
    let key = key.load()?;
    if key.is_some() {
        catch_up_tree(&database.pool).await?;
    }
    let pack = ledger_server::transparency::run_evidence(&database.pool, run, key.as_ref()).await?;
    if pack.events.is_empty() && pack.events_after_checkpoint == 0 {
        bail!("no payroll run {run} in this ledger");
    }
    std::fs::write(out, serde_json::to_string_pretty(&pack)?).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {}: {} events of payroll run {run} with inclusion proofs{}; check it with `payroll-ledger verify-evidence {} --public-key <key>`",
        out.display(),
        pack.events.len(),
        if pack.events_after_checkpoint > 0 {
            format!(
                " ({} later events are after the checkpoint: sign a new one and export again)",
                pack.events_after_checkpoint
            )
        } else {
            String::new()
        },
        out.display()
    );
    Ok(())
}

pub fn verify_evidence(file: &Path, public_key: Option<&str>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let pack = parse_pack(&text)?;
    let key = verifier_key(public_key, None)?;
    let report = verify_pack(&pack, key.as_deref());
    if !report.key_from_verifier {
        println!(
            "(checked with the key inside the pack, {}: pass --public-key to check it is the log's)",
            pack.verifier_key
        );
    }
    if report.verified() {
        println!(
            "verified: {} events of {}, each unchanged and in the signed log of {} events",
            report.events_checked, pack.subject, report.tree_size
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("NOT verified: {} problem(s)", report.failures.len());
        for failure in &report.failures {
            println!("  {failure}");
        }
        Ok(ExitCode::from(1))
    }
}
