use async_trait::async_trait;
use ledger_store::RecordedEvent;
use sqlx::PgConnection;

use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// How long the tree's runner lets events gather before it reads again.
pub const TREE_LINGER: std::time::Duration = std::time::Duration::from_millis(250);

/// `transparency.*`: the Merkle tree over the whole log (RFC 9162), one leaf per event in
/// the order the runner reads them, so every event becomes a leaf exactly once, in the
/// transaction that moves the checkpoint. The tree's storage and proofs are
/// `ledger_store::tree`; signed checkpoints of it, `ledger_store::signing`.
#[derive(Debug, Clone, Copy)]
pub struct LogTreeProjection;

#[async_trait]
impl Projection for LogTreeProjection {
    fn name(&self) -> &'static str {
        "log_tree"
    }

    fn schema(&self) -> &'static str {
        "transparency"
    }

    fn event_types(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn payload_types(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn reads_hashes(&self) -> bool {
        true
    }

    fn handles_every_event(&self) -> bool {
        true
    }

    /// A checkpoint or proof need not see the last quarter second; appends should not pay
    /// for a tree transaction each.
    fn linger(&self) -> std::time::Duration {
        TREE_LINGER
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, _decoded: &AnyEvent) -> Result<()> {
        ledger_store::tree::append_leaves(connection, &[(event.checkpoint(), &event.hash)]).await?;
        Ok(())
    }

    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        let leaves: Vec<(ledger_store::Checkpoint, &[u8])> =
            events.iter().map(|(event, _)| (event.checkpoint(), event.hash.as_slice())).collect();
        ledger_store::tree::append_leaves(connection, &leaves).await?;
        Ok(())
    }
}
