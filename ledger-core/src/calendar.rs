//! Pay periods and pay frequencies.

use chrono::{Datelike, Days, Months, NaiveDate};
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

/// When a group of employees is paid: a frequency and the first day of one period (the
/// anchor). The periods follow from it, before and after the anchor alike, without gaps or
/// overlaps:
///
/// - weekly and biweekly: 7 or 14 days from the anchor on;
/// - monthly: from the anchor's day of the month to the day before it a month later (an
///   anchor on the 31st starts on the last day of shorter months);
/// - semi-monthly: a month split in two at the anchor's day and 15 days after it (anchored on
///   the 1st: the 1st to the 15th, the 16th to the month's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaySchedule {
    pub frequency: PayFrequency,
    pub anchor_date: NaiveDate,
}

/// The earliest and latest days a pay calendar reaches (chrono's range is far wider).
const CALENDAR_FIRST: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).expect("a date");
const CALENDAR_LAST: NaiveDate = NaiveDate::from_ymd_opt(2999, 12, 31).expect("a date");

impl PaySchedule {
    pub fn validate(&self) -> Result<(), DomainError> {
        if !(CALENDAR_FIRST..=CALENDAR_LAST).contains(&self.anchor_date) {
            return Err(DomainError::invalid(
                "anchor_date",
                format!("{} is outside {CALENDAR_FIRST}..{CALENDAR_LAST}", self.anchor_date),
            ));
        }
        Ok(())
    }

    /// The first day of period `index` (0 starts on the anchor, -1 ends the day before it).
    fn start_of(&self, index: i64) -> Option<NaiveDate> {
        let anchor = self.anchor_date;
        let add_months = |months: i64| -> Option<NaiveDate> {
            let shift = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
            if months >= 0 { anchor.checked_add_months(shift) } else { anchor.checked_sub_months(shift) }
        };
        let add_days = |date: NaiveDate, days: i64| -> Option<NaiveDate> {
            let shift = Days::new(days.unsigned_abs());
            if days >= 0 { date.checked_add_days(shift) } else { date.checked_sub_days(shift) }
        };
        let start = match self.frequency {
            PayFrequency::Weekly => add_days(anchor, index.checked_mul(7)?)?,
            PayFrequency::Biweekly => add_days(anchor, index.checked_mul(14)?)?,
            PayFrequency::Monthly => add_months(index)?,
            PayFrequency::SemiMonthly => {
                let month = add_months(index.div_euclid(2))?;
                if index.rem_euclid(2) == 0 { month } else { add_days(month, 15)? }
            }
        };
        (CALENDAR_FIRST..=CALENDAR_LAST).contains(&start).then_some(start)
    }

    /// Period `index` of the schedule.
    fn period_at(&self, index: i64) -> Option<PayPeriod> {
        let start = self.start_of(index)?;
        let end = self.start_of(index + 1)?.pred_opt()?;
        Some(PayPeriod { start, end })
    }

    /// The index of the period that holds `day`.
    fn index_of(&self, day: NaiveDate) -> Option<i64> {
        let days = (day - self.anchor_date).num_days();
        let mut index = match self.frequency {
            PayFrequency::Weekly => days.div_euclid(7),
            PayFrequency::Biweekly => days.div_euclid(14),
            PayFrequency::Monthly | PayFrequency::SemiMonthly => {
                let months = (i64::from(day.year()) - i64::from(self.anchor_date.year())) * 12 + i64::from(day.month())
                    - i64::from(self.anchor_date.month());
                if self.frequency == PayFrequency::Monthly { months } else { months * 2 }
            }
        };
        // The month estimate is off by at most a period or two either way.
        for _ in 0..4 {
            let start = self.start_of(index)?;
            if day < start {
                index -= 1;
            } else if day > self.period_at(index)?.end {
                index += 1;
            } else {
                return Some(index);
            }
        }
        None
    }

    /// The period that holds `day`.
    ///
    /// # Errors
    /// `Invalid` naming `field` for a day outside the years a pay calendar reaches.
    pub fn period_containing(&self, day: NaiveDate, field: &str) -> Result<PayPeriod, DomainError> {
        self.index_of(day).and_then(|index| self.period_at(index)).ok_or_else(|| {
            DomainError::invalid(
                field,
                format!("{day} is outside the pay calendar ({CALENDAR_FIRST}..{CALENDAR_LAST})"),
            )
        })
    }

    /// Whether `period` is exactly one of the schedule's periods.
    pub fn has_period(&self, period: PayPeriod) -> bool {
        self.period_containing(period.start, "period").is_ok_and(|found| found == period)
    }

    /// Up to `limit` periods in order, the first the one holding `from`, none starting after
    /// `to`.
    pub fn periods(&self, from: NaiveDate, to: NaiveDate, limit: usize) -> Vec<PayPeriod> {
        let Some(first) = self.index_of(from.clamp(CALENDAR_FIRST, CALENDAR_LAST)) else { return Vec::new() };
        (first..).map_while(|index| self.period_at(index)).take_while(|period| period.start <= to).take(limit).collect()
    }
}

/// The day an organization's tax year starts (e.g. 1 January, or 6 April in the United
/// Kingdom). Year-to-date totals are kept per tax year; a payment counts in the tax year
/// of its run's pay date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaxYearStart {
    pub month: u32,
    pub day: u32,
}

impl Default for TaxYearStart {
    /// 1 January: the calendar year.
    fn default() -> TaxYearStart {
        TaxYearStart { month: 1, day: 1 }
    }
}

impl TaxYearStart {
    /// A month (1-12) and a day of it that every year has (29 February is refused).
    pub fn new(month: u32, day: u32) -> Result<TaxYearStart, DomainError> {
        if !(1..=12).contains(&month) {
            return Err(DomainError::invalid("month", format!("must be from 1 to 12, not {month}")));
        }
        // 2023 is not a leap year: a day valid in it is valid every year.
        if day == 0 || NaiveDate::from_ymd_opt(2023, month, day).is_none() {
            return Err(DomainError::invalid(
                "day",
                format!("{day} is not a day every year's month {month} has (1 to its last day; never 29 February)"),
            ));
        }
        Ok(TaxYearStart { month, day })
    }

    /// The first day of the tax year that starts in calendar year `year`.
    pub fn start_in(self, year: i32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, self.month, self.day).expect("a tax year start is a day every year has")
    }

    /// The first day of the tax year `date` falls in.
    pub fn year_of(self, date: NaiveDate) -> NaiveDate {
        let this_year = self.start_in(date.year());
        if date >= this_year { this_year } else { self.start_in(date.year() - 1) }
    }

    /// The last day of the tax year starting on `start`.
    pub fn end_of(self, start: NaiveDate) -> NaiveDate {
        self.start_in(start.year() + 1).pred_opt().expect("a day before a tax year start")
    }
}
