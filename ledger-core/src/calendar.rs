//! Pay periods and pay frequencies.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// How often an employee is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayFrequency {
    Weekly,
    Biweekly,
    SemiMonthly,
    Monthly,
}

impl PayFrequency {
    pub fn periods_per_year(self) -> Decimal {
        Decimal::from(match self {
            PayFrequency::Weekly => 52,
            PayFrequency::Biweekly => 26,
            PayFrequency::SemiMonthly => 24,
            PayFrequency::Monthly => 12,
        })
    }
}

/// An inclusive range of calendar days that one payroll run pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PayPeriod {
    start: NaiveDate,
    end: NaiveDate,
}

/// The longest pay period accepted (a month, with room for unusual calendars).
pub const PERIOD_DAYS_MAX: i64 = 62;

impl PayPeriod {
    /// A period from `start` to `end`, both included.
    pub fn new(start: NaiveDate, end: NaiveDate) -> Result<PayPeriod, DomainError> {
        if end < start {
            return Err(DomainError::invalid("period", format!("ends on {end}, before it starts on {start}")));
        }
        let days = (end - start).num_days() + 1;
        if days > PERIOD_DAYS_MAX {
            return Err(DomainError::invalid("period", format!("{days} days is longer than {PERIOD_DAYS_MAX}")));
        }
        Ok(PayPeriod { start, end })
    }

    pub fn start(&self) -> NaiveDate {
        self.start
    }

    pub fn end(&self) -> NaiveDate {
        self.end
    }

    /// Calendar days in the period.
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days() + 1
    }

    pub fn contains(&self, day: NaiveDate) -> bool {
        self.start <= day && day <= self.end
    }

    /// Every day of the period, in order.
    pub fn each_day(&self) -> impl Iterator<Item = NaiveDate> + use<> {
        self.start.iter_days().take(self.days() as usize)
    }
}

impl std::fmt::Display for PayPeriod {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}..{}", self.start, self.end)
    }
}

impl<'de> Deserialize<'de> for PayPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            start: NaiveDate,
            end: NaiveDate,
        }
        let raw = Raw::deserialize(deserializer)?;
        PayPeriod::new(raw.start, raw.end).map_err(serde::de::Error::custom)
    }
}
