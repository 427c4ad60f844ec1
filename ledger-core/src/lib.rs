//! The payroll domain. Pure: no I/O, no clock, no database. Time, ids and looked-up facts
//! arrive inside commands.
//!
//! Each aggregate ([`organization`], [`employee`], [`wallet`], [`payroll`],
//! [`transaction`]) has a state folded from its events (`evolve`) and a pure `decide`; see
//! [`event::Aggregate`]. [`gross_to_net`] computes a payroll item; [`money`] keeps amounts
//! exact.

pub mod access;
pub mod calendar;
pub mod employee;
pub mod error;
pub mod event;
pub mod gross_to_net;
pub mod ids;
pub mod journal;
pub mod money;
pub mod notification;
pub mod organization;
pub mod payroll;
pub mod schedule;
pub mod transaction;
pub mod upcast;
pub mod wallet;

pub use error::{DecodeError, DomainError};
pub use event::{Aggregate, DomainEvent, EncodedEvent};
pub use money::{Currency, Money, MoneyError};

/// Every stream type with its event type names: the catalog that `docs/events.md` lists and
/// that projections must cover.
pub const EVENT_CATALOG: &[(&str, &[&str])] = &[
    (
        <organization::OrganizationAggregate as Aggregate>::STREAM_TYPE,
        <organization::OrganizationEvent as DomainEvent>::EVENT_TYPES,
    ),
    (<employee::EmployeeAggregate as Aggregate>::STREAM_TYPE, <employee::EmployeeEvent as DomainEvent>::EVENT_TYPES),
    (<wallet::WalletAggregate as Aggregate>::STREAM_TYPE, <wallet::WalletEvent as DomainEvent>::EVENT_TYPES),
    (<payroll::PayrollRunAggregate as Aggregate>::STREAM_TYPE, <payroll::PayrollRunEvent as DomainEvent>::EVENT_TYPES),
    (
        <schedule::PayCalendarAggregate as Aggregate>::STREAM_TYPE,
        <schedule::PayCalendarEvent as DomainEvent>::EVENT_TYPES,
    ),
    (
        <transaction::TransactionAggregate as Aggregate>::STREAM_TYPE,
        <transaction::TransactionEvent as DomainEvent>::EVENT_TYPES,
    ),
    (<access::ApiKeyAggregate as Aggregate>::STREAM_TYPE, <access::ApiKeyEvent as DomainEvent>::EVENT_TYPES),
    (
        <notification::NotificationAggregate as Aggregate>::STREAM_TYPE,
        <notification::NotificationEvent as DomainEvent>::EVENT_TYPES,
    ),
];
