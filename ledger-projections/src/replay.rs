//! Replay as of a point, for compliance: the state of an entity as it was then, computed
//! from the events alone (never from the read tables).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use ledger_core::Aggregate;
use ledger_core::transaction::{Direction, TransactionEvent};
use ledger_store::{EventQuery, EventStore, READ_BATCH_MAX, RecordedEvent};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::error::Result;
use ledger_codec::{decode_recorded, decode_stream};

/// A point in the log's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AsOf {
    /// Events recorded at or before this time.
    Time(DateTime<Utc>),
    /// Events at or before this global position.
    Position(i64),
}

impl AsOf {
    /// Whether an event counts as of this point.
    fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            AsOf::Time(time) => event.recorded_at <= *time,
            AsOf::Position(position) => event.global_position <= *position,
        }
    }

    fn limit(&self, query: &mut EventQuery) {
        match self {
            AsOf::Time(time) => query.recorded_to = Some(*time),
            AsOf::Position(position) => query.position_to = Some(*position),
        }
    }
}

/// Every event matching `query` as of `as_of`, page by page.
async fn events_as_of(store: &EventStore, mut query: EventQuery, as_of: AsOf) -> Result<Vec<RecordedEvent>> {
    as_of.limit(&mut query);
    query.limit = READ_BATCH_MAX;
    let mut events = Vec::new();
    loop {
        let page = store.query_events(&query).await?;
        let full = page.len() == READ_BATCH_MAX;
        query.position_after = page.last().map(|event| event.global_position).or(query.position_after);
        events.extend(page);
        if !full {
            return Ok(events);
        }
    }
}

/// The state of one aggregate as of a point; `A::State::default()` if it did not exist yet.
///
/// Reads the stream by its `(stream_id, stream_version)` index and keeps the events up to
/// the point: a filter on the log's position or time with the stream id let the planner
/// scan every position below the point (40-70 ms at a million events).
pub async fn aggregate_as_of<A: Aggregate>(store: &EventStore, stream_id: Uuid, as_of: AsOf) -> Result<A::State> {
    // One event at a time: a payroll run's stream is megabytes of calculation chunks.
    let mut state = A::State::default();
    if ledger_codec::PERSONAL_DATA.sealed.iter().any(|(stream_type, _, _)| *stream_type == A::STREAM_TYPE) {
        // A stream that may hold personal data (an employee's: small) is read whole and
        // opened with the process's vault before folding.
        let mut events = Vec::new();
        store
            .each_in_stream(stream_id, 1, |event| {
                if as_of.includes(&event) {
                    events.push(event);
                }
                Ok::<_, crate::error::ProjectionError>(())
            })
            .await?;
        ledger_store::vault::open(store.pool(), &ledger_codec::PERSONAL_DATA, &mut events).await?;
        for event in &events {
            state = A::evolve_owned(std::mem::take(&mut state), decode_recorded::<A::Event>(event)?);
        }
        return Ok(state);
    }
    store
        .each_in_stream(stream_id, 1, |event| {
            if as_of.includes(&event) {
                state = A::evolve_owned(std::mem::take(&mut state), decode_recorded::<A::Event>(&event)?);
            }
            Ok::<_, crate::error::ProjectionError>(())
        })
        .await?;
    Ok(state)
}

/// An account's balance in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountBalance {
    pub account: String,
    pub currency: String,
    pub debits: Decimal,
    pub credits: Decimal,
    /// Debits minus credits: money in minus money out.
    pub balance: Decimal,
}

/// An account's balances as of a point: postings of transactions recorded by then, less
/// those of transactions failed or voided by then (as `transaction.account_balances` counts).
pub async fn account_balance_as_of(store: &EventStore, account: &str, as_of: AsOf) -> Result<Vec<AccountBalance>> {
    let recorded = EventQuery {
        event_types: vec!["TransactionRecorded".to_owned()],
        payload_contains: Some(serde_json::json!({ "postings": [{ "account": account }] })),
        ..EventQuery::default()
    };
    let recorded = events_as_of(store, recorded, as_of).await?;
    let cancelled = EventQuery {
        event_types: vec!["TransactionFailed".to_owned(), "TransactionVoided".to_owned()],
        ..EventQuery::default()
    };
    let touched: HashSet<Uuid> = recorded.iter().map(|event| event.stream_id).collect();
    let cancelled: HashSet<Uuid> = events_as_of(store, cancelled, as_of)
        .await?
        .into_iter()
        .map(|event| event.stream_id)
        .filter(|id| touched.contains(id))
        .collect();
    let mut balances: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for event in recorded.iter().filter(|event| !cancelled.contains(&event.stream_id)) {
        let decoded: Vec<TransactionEvent> = decode_stream(std::slice::from_ref(event))?;
        let Some(TransactionEvent::TransactionRecorded { postings, .. }) = decoded.first() else { continue };
        for posting in postings.iter().filter(|posting| posting.account == account) {
            let sides = balances.entry(posting.amount.currency().code().to_owned()).or_default();
            match posting.direction {
                Direction::Debit => sides.0 += posting.amount.amount(),
                Direction::Credit => sides.1 += posting.amount.amount(),
            }
        }
    }
    Ok(balances
        .into_iter()
        .map(|(currency, (debits, credits))| AccountBalance {
            account: account.to_owned(),
            currency,
            debits,
            credits,
            balance: debits - credits,
        })
        .collect())
}
