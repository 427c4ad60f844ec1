//! For auditors: the log's signed checkpoints, its public key, inclusion and consistency
//! proofs (RFC 9162) and evidence packs of payroll runs.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use ledger_store::signing::{self, SignedCheckpoint};
use ledger_store::tree;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{Path, Query};
use super::schema::Problems;
use super::{AppState, Auth};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

/// A signed tree head of the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointView {
    /// The log's name (the key's name).
    pub origin: String,
    /// Events covered: the first `tree_size` events in log order.
    pub tree_size: u64,
    /// Base64 RFC 9162 root of those events' tree.
    pub root_hash: String,
    /// The signing key's id, 8 hex digits.
    pub key_id: String,
    /// The verifier key, `name+id+base64` (C2SP signed-note).
    pub verifier_key: String,
    /// The C2SP checkpoint in a signed note, exactly as signed: keep a copy outside the ledger.
    pub note: String,
    pub signed_at: Option<DateTime<Utc>>,
}

impl From<SignedCheckpoint> for CheckpointView {
    fn from(checkpoint: SignedCheckpoint) -> Self {
        CheckpointView {
            origin: checkpoint.origin,
            tree_size: checkpoint.tree_size,
            root_hash: checkpoint.root.to_string(),
            key_id: checkpoint.key_id,
            verifier_key: checkpoint.verifier_key,
            note: checkpoint.note,
            signed_at: checkpoint.signed_at,
        }
    }
}

/// `GET /v1/checkpoints/latest`: the checkpoint of the largest tree signed so far; with
/// `Accept: text/plain`, the signed note alone (as transparency-log tooling fetches it).
#[utoipa::path(get, path = "/v1/checkpoints/latest", tag = "audit",
    responses((status = 200, description = "The checkpoint",
        content((CheckpointView = "application/json"), (String = "text/plain"))), Problems))]
pub async fn latest_checkpoint(
    State(state): State<AppState>,
    Auth(identity): Auth,
    headers: axum::http::HeaderMap,
) -> AppResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    identity.require(Permission::Audit)?;
    let latest = signing::latest(state.ledger.pool()).await?;
    let latest = latest.ok_or_else(|| {
        AppError::NotFound(
            "no checkpoint has been signed yet: the operator runs `payroll-ledger checkpoint` or serves with a checkpoint key"
                .to_owned(),
        )
    })?;
    let wants_text = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/plain") && !accept.contains("application/json"));
    if wants_text {
        let content_type = [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")];
        return Ok((content_type, latest.note).into_response());
    }
    Ok(Json(CheckpointView::from(latest)).into_response())
}

/// The log's public key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicKeyView {
    pub origin: String,
    pub key_id: String,
    /// `name+id+base64` (C2SP signed-note verifier key): verify checkpoints and evidence with
    /// it, once you have confirmed it with the operator by another channel.
    pub verifier_key: String,
}

/// `GET /v1/checkpoints/public-key`: the key checkpoints are signed with (this server's, or
/// the latest checkpoint's).
#[utoipa::path(get, path = "/v1/checkpoints/public-key", tag = "audit",
    responses((status = 200, body = PublicKeyView), Problems))]
pub async fn public_key(State(state): State<AppState>, Auth(identity): Auth) -> AppResult<Json<PublicKeyView>> {
    identity.require(Permission::Audit)?;
    let verifier_key = match &state.checkpoint_key {
        Some(key) => key.verifier_key().to_owned(),
        None => signing::latest(state.ledger.pool())
            .await?
            .map(|checkpoint| checkpoint.verifier_key)
            .ok_or_else(|| AppError::NotFound("no checkpoint key is configured and none has signed yet".to_owned()))?,
    };
    let mut parts = verifier_key.split('+');
    let (origin, key_id) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    Ok(Json(PublicKeyView { origin, key_id, verifier_key }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The event (of the key's organization).
    event_id: Uuid,
    /// The tree to prove it in (default: the tree as it is now); at most the tree's size.
    #[param(minimum = 1)]
    tree_size: Option<u64>,
}

/// That an event is in the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InclusionProofView {
    pub event_id: Uuid,
    pub global_position: i64,
    /// Its place among the log's leaves (0-based).
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Base64 root of the tree of `tree_size` leaves.
    pub root_hash: String,
    /// Hex: the event's stored hash, the leaf's data.
    pub event_hash: String,
    /// Base64 RFC 9162 leaf hash, `SHA-256(0x00 || event hash)`.
    pub leaf_hash: String,
    /// Base64 RFC 9162 audit path, leaf to root.
    pub proof: Vec<String>,
    /// The signed checkpoint of exactly this tree size, when one was signed.
    pub checkpoint: Option<CheckpointView>,
}

/// `GET /v1/proofs/inclusion?event_id=&tree_size=`: the RFC 9162 inclusion proof of one of
/// the organization's events.
#[utoipa::path(get, path = "/v1/proofs/inclusion", tag = "audit", params(InclusionQuery),
    responses((status = 200, body = InclusionProofView), Problems))]
pub async fn inclusion(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<InclusionQuery>,
) -> AppResult<Json<InclusionProofView>> {
    identity.require(Permission::Audit)?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let event: Option<(i64, Vec<u8>)> =
        sqlx::query_as("select global_position, hash from ledger.events where event_id = $1")
            .bind(query.event_id)
            .fetch_optional(&mut *read)
            .await?;
    let (global_position, event_hash) =
        event.ok_or_else(|| AppError::NotFound(format!("no event {} in this organization", query.event_id)))?;
    read.commit().await?;
    // The event is the organization's; which leaf it is counts the whole log.
    let mut whole = state.ledger.pool().acquire().await?;
    Ok(Json(prove_inclusion(&mut whole, query.event_id, global_position, &event_hash, query.tree_size).await?))
}

/// The inclusion proof of an event (its id, position and stored hash) in the tree of
/// `tree_size` leaves (default: the tree as it is), read on `connection`, which must see the
/// whole log. The API's answer and `payroll-ledger proof inclusion`'s.
pub async fn prove_inclusion(
    connection: &mut sqlx::PgConnection,
    event_id: Uuid,
    global_position: i64,
    event_hash: &[u8],
    tree_size: Option<u64>,
) -> AppResult<InclusionProofView> {
    let leaf_index = tree::leaf_index(connection, global_position).await?.ok_or_else(|| AppError::Conflict {
        code: "not_in_tree_yet",
        detail: "the event is not in the log's tree yet (its runner is catching up); retry shortly".to_owned(),
    })?;
    let tree_size = match tree_size {
        Some(size) => size,
        None => tree::head(connection).await?.size,
    };
    let inclusion = tree::inclusion_proof(connection, tree_size, leaf_index).await?;
    let checkpoint = signing::of_size(&mut *connection, tree_size).await?.map(CheckpointView::from);
    Ok(InclusionProofView {
        event_id,
        global_position,
        leaf_index,
        tree_size,
        root_hash: inclusion.root.to_string(),
        event_hash: hex::encode(event_hash),
        leaf_hash: tree::leaf_hash(event_hash).to_string(),
        proof: inclusion.proof.iter().map(ToString::to_string).collect(),
        checkpoint,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The smaller tree (at least 1).
    #[param(minimum = 1)]
    from: u64,
    /// The larger tree (default: the tree as it is now); at most the tree's size.
    #[param(minimum = 1)]
    to: Option<u64>,
}

/// That the log of `from` events is a prefix of the log of `to`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsistencyProofView {
    pub from: u64,
    pub to: u64,
    /// Base64 roots of both trees.
    pub from_root: String,
    pub to_root: String,
    /// Base64 RFC 9162 consistency proof.
    pub proof: Vec<String>,
}

/// `GET /v1/proofs/consistency?from=&to=`: the RFC 9162 consistency proof between two sizes
/// of the log (hashes only: no event of any organization is revealed).
#[utoipa::path(get, path = "/v1/proofs/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProofView), Problems))]
pub async fn consistency(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ConsistencyQuery>,
) -> AppResult<Json<ConsistencyProofView>> {
    identity.require(Permission::Audit)?;
    let mut connection = state.ledger.pool().acquire().await?;
    Ok(Json(prove_consistency(&mut connection, query.from, query.to).await?))
}

/// The consistency proof from the tree of `from` leaves to the tree of `to` (default: the
/// tree as it is). The API's answer and `payroll-ledger proof consistency`'s.
pub async fn prove_consistency(
    connection: &mut sqlx::PgConnection,
    from: u64,
    to: Option<u64>,
) -> AppResult<ConsistencyProofView> {
    let to = match to {
        Some(to) => to,
        None => tree::head(connection).await?.size,
    };
    let consistency = tree::consistency_proof(connection, from, to).await?;
    Ok(ConsistencyProofView {
        from,
        to,
        from_root: consistency.from_root.to_string(),
        to_root: consistency.to_root.to_string(),
        proof: consistency.proof.iter().map(ToString::to_string).collect(),
    })
}

/// An evidence pack (`docs/operations.md`): the run's events, each with its inclusion proof
/// against a signed checkpoint; verify it offline with `payroll-ledger verify-evidence`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // The schema of `ledger_store::evidence::EvidencePack`'s JSON.
pub struct EvidencePackView {
    /// `payroll-ledger-evidence/1`.
    format: String,
    subject: String,
    /// The signed checkpoint (C2SP signed note).
    checkpoint: String,
    verifier_key: String,
    /// Events per stream in the pack.
    #[schema(value_type = Object)]
    stream_events: serde_json::Value,
    events_after_checkpoint: u64,
    /// Every field each event's hash covers, its leaf index and inclusion proof.
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
}

/// `GET /v1/payroll-runs/{id}/evidence`: the evidence pack of the run and its payments (each
/// paid item's transaction), against a checkpoint signed now (when the server has the key) or
/// the latest one.
#[utoipa::path(get, path = "/v1/payroll-runs/{id}/evidence", tag = "audit",
    params(("id" = Uuid, Path, description = "The payroll run")),
    responses((status = 200, body = EvidencePackView), Problems))]
pub async fn run_evidence(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<Uuid>,
) -> AppResult<Json<ledger_store::evidence::EvidencePack>> {
    identity.require(Permission::Audit)?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let owned: Option<String> =
        sqlx::query_scalar("select stream_type from ledger.events where stream_id = $1 and stream_version = 1")
            .bind(id)
            .fetch_optional(&mut *read)
            .await?;
    read.commit().await?;
    if owned.as_deref() != Some("payroll_run") {
        return Err(AppError::NotFound(format!("no payroll run {id} in this organization")));
    }
    let pack = crate::transparency::run_evidence(state.ledger.pool(), id, state.checkpoint_key.as_deref())
        .await
        .map_err(|error| match error {
            crate::transparency::EvidenceError::NoCheckpoint(detail) => {
                AppError::Conflict { code: "no_checkpoint", detail }
            }
            crate::transparency::EvidenceError::Store(error) => error.into(),
        })?;
    Ok(Json(pack))
}
