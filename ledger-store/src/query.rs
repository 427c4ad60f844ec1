//! Filtered queries over the log, for auditors and for replay as of a point.
//!
//! Two orders. By global position (`position_after`), for a fixed past point: replay as of
//! a position or time. In the log's gap-free order (`log_after`, a [`Checkpoint`]): what a
//! client pages through or tails, like the projectors, `(transaction_id, global_position)`
//! after the cursor and only below the oldest running transaction, so an event whose
//! transaction commits after a later position was returned is still returned, once.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{Checkpoint, RecordedEvent};
use crate::read::{ALL_PAYLOADS, READ_BATCH_MAX, event_columns, event_from_row};

/// Which events to return. Every filter is optional; `limit` is required.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub organization_id: Option<Uuid>,
    pub stream_id: Option<Uuid>,
    pub stream_type: Option<String>,
    /// Any of these types; empty for all.
    pub event_types: Vec<String>,
    /// Recorded at or after.
    pub recorded_from: Option<DateTime<Utc>>,
    /// Recorded at or before.
    pub recorded_to: Option<DateTime<Utc>>,
    /// Positions after this one, in position order (not with `log_after`).
    pub position_after: Option<i64>,
    /// Events after this checkpoint in the log's gap-free order (a cursor: the checkpoint of
    /// the last event of the previous page; `Checkpoint::START` for the first).
    pub log_after: Option<Checkpoint>,
    /// Positions up to and including this one.
    pub position_to: Option<i64>,
    /// Payloads containing this JSON (`@>`).
    pub payload_contains: Option<serde_json::Value>,
    /// 1 to `READ_BATCH_MAX`.
    pub limit: usize,
}

impl EventQuery {
    /// Event types from a comma-separated list as a user writes it (`--event-type A,B`,
    /// `?event_type=A, B`): trimmed, empty names dropped; none for no list.
    pub fn event_types_listed(list: Option<&str>) -> Vec<String> {
        list.iter()
            .flat_map(|types| types.split(','))
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect()
    }

    /// The query for the event at `position` (none if there is none), to turn a bare
    /// position into the event's checkpoint.
    pub fn at_position(position: i64) -> EventQuery {
        EventQuery {
            position_after: Some(position - 1),
            position_to: Some(position),
            limit: 1,
            ..EventQuery::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.position_after.is_some() && self.log_after.is_some() {
            return Err(StoreError::invalid("position_after", "give position_after or log_after, not both"));
        }
        if self.limit == 0 || self.limit > READ_BATCH_MAX {
            return Err(StoreError::invalid("limit", format!("must be 1 to {READ_BATCH_MAX}, not {}", self.limit)));
        }
        if let (Some(from), Some(to)) = (self.recorded_from, self.recorded_to)
            && to < from
        {
            return Err(StoreError::invalid("recorded_to", format!("{to} is before recorded_from {from}")));
        }
        if let (Some(after), Some(to)) = (self.position_after, self.position_to)
            && to <= after
        {
            return Err(StoreError::invalid("position_to", format!("{to} is not after position_after {after}")));
        }
        Ok(())
    }
}

pub(crate) async fn query_events(executor: impl PgExecutor<'_>, query: &EventQuery) -> Result<Vec<RecordedEvent>> {
    query.validate()?;
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("select {} from ledger.events where true", event_columns(ALL_PAYLOADS)));
    if let Some(organization_id) = query.organization_id {
        sql.push(" and organization_id = ").push_bind(organization_id);
    }
    if let Some(stream_id) = query.stream_id {
        sql.push(" and stream_id = ").push_bind(stream_id);
    }
    if let Some(stream_type) = &query.stream_type {
        sql.push(" and stream_type = ").push_bind(stream_type.clone());
    }
    if !query.event_types.is_empty() {
        sql.push(" and event_type = any(").push_bind(query.event_types.clone()).push(")");
    }
    if let Some(from) = query.recorded_from {
        sql.push(" and recorded_at >= ").push_bind(from);
    }
    if let Some(to) = query.recorded_to {
        sql.push(" and recorded_at <= ").push_bind(to);
    }
    if let Some(after) = query.position_after {
        sql.push(" and global_position > ").push_bind(after);
    }
    if let Some(after) = query.log_after {
        sql.push(" and (transaction_id, global_position) > (")
            .push_bind(after.transaction_id.to_string())
            .push("::xid8, ")
            .push_bind(after.global_position)
            .push(") and transaction_id < ledger.read_horizon()");
    }
    if let Some(to) = query.position_to {
        sql.push(" and global_position <= ").push_bind(to);
    }
    if let Some(contains) = &query.payload_contains {
        sql.push(" and payload @> ").push_bind(contains.clone());
    }
    // The table's columns, not the select list's cast of the transaction id: ordering by that
    // would sort every event after the cursor instead of walking the index.
    match query.log_after {
        Some(_) => sql.push(" order by events.transaction_id, events.global_position limit "),
        None => sql.push(" order by global_position limit "),
    };
    sql.push_bind(query.limit as i64);
    let rows = sql.build().fetch_all(executor).await?;
    rows.iter().map(event_from_row).collect()
}

#[cfg(test)]
mod tests {
    use super::EventQuery;

    #[test]
    fn a_list_of_event_types_is_trimmed_and_empty_names_dropped() {
        assert_eq!(EventQuery::event_types_listed(Some(" A, B,,C ,")), ["A", "B", "C"]);
        assert!(EventQuery::event_types_listed(Some(" , ")).is_empty());
        assert!(EventQuery::event_types_listed(None).is_empty());
    }
}
