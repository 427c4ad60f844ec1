//! Exact money: a decimal amount in a currency with its own minor-unit scale.
//!
//! An amount never carries more decimals than its currency allows: constructing one that
//! would is an error, never a silent rounding. Where the domain must round (proration,
//! percentages), it uses [`ROUNDING_RULE`] through [`Money::round`], and splits whole amounts
//! with [`Money::allocate`] so that the parts always add up to the whole.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// The one rounding rule of the domain: half to even ("banker's rounding"), at the
/// currency's scale. Unbiased over many items, unlike half-up.
pub const ROUNDING_RULE: RoundingStrategy = RoundingStrategy::MidpointNearestEven;

/// The most decimals a currency may have.
pub const CURRENCY_SCALE_MAX: u32 = 18;
pub const CURRENCY_CODE_LENGTH_MIN: usize = 3;
pub const CURRENCY_CODE_LENGTH_MAX: usize = 12;

/// Currencies every organization knows, with their minor-unit scale.
pub const KNOWN_CURRENCIES: &[(&str, u32)] =
    &[("USD", 2), ("EUR", 2), ("GBP", 2), ("CHF", 2), ("CAD", 2), ("JPY", 0), ("USDC", 6), ("SOL", 9)];

/// The most digits an amount a client sends may have before the decimal point: amounts up to
/// 999,999,999,999,999.99 (about 10^15) in any currency. Well beyond any pay; small enough
/// that every product and sum the domain computes stays far inside `Decimal`'s range.
pub const AMOUNT_INTEGER_DIGITS_MAX: u32 = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount {amount} has more decimals than {currency} allows ({scale})")]
    TooPrecise { amount: Decimal, currency: String, scale: u32 },
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch { left: String, right: String },
    #[error("unknown currency {0:?}: use a known one or define it for the organization with its scale")]
    UnknownCurrency(String),
    #[error(
        "invalid currency code {0:?}: {CURRENCY_CODE_LENGTH_MIN} to {CURRENCY_CODE_LENGTH_MAX} capital letters or digits"
    )]
    InvalidCurrencyCode(String),
    #[error("invalid currency scale {scale} for {code}: at most {CURRENCY_SCALE_MAX}")]
    InvalidScale { code: String, scale: u32 },
    #[error("currency {code} is known with scale {known}, not {requested}")]
    ConflictingScale { code: String, known: u32, requested: u32 },
    #[error(
        "{0:?} is not a decimal amount: write digits with an optional sign and decimal point, like \"-1234.50\" (no exponent, spaces or leading zeros)"
    )]
    NotANumber(String),
    #[error(
        "{0} is beyond the largest amount the ledger takes ({AMOUNT_INTEGER_DIGITS_MAX} digits before the decimal point)"
    )]
    TooLarge(String),
    #[error("amount out of range")]
    Overflow,
    #[error("cannot allocate over weights that are negative or add up to zero")]
    InvalidWeights,
}

/// A currency: its code and how many decimals its minor unit has.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Currency {
    code: String,
    scale: u32,
}

impl Currency {
    /// A known currency by code (`USD`, `JPY`, `USDC`, ...).
    pub fn known(code: &str) -> Result<Currency, MoneyError> {
        KNOWN_CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(code, scale)| Currency { code: (*code).to_owned(), scale: *scale })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    /// A currency an organization defines itself. A known code must keep its known scale.
    pub fn custom(code: &str, scale: u32) -> Result<Currency, MoneyError> {
        let valid = (CURRENCY_CODE_LENGTH_MIN..=CURRENCY_CODE_LENGTH_MAX).contains(&code.len())
            && code.bytes().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit());
        if !valid {
            return Err(MoneyError::InvalidCurrencyCode(code.to_owned()));
        }
        if scale > CURRENCY_SCALE_MAX {
            return Err(MoneyError::InvalidScale { code: code.to_owned(), scale });
        }
        if let Ok(known) = Currency::known(code)
            && known.scale != scale
        {
            return Err(MoneyError::ConflictingScale { code: code.to_owned(), known: known.scale, requested: scale });
        }
        Ok(Currency { code: code.to_owned(), scale })
    }

    pub fn usd() -> Currency {
        Currency::known("USD").expect("USD is known")
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// The smallest amount of this currency (0.01 for USD, 1 for JPY).
    pub fn minor_unit(&self) -> Decimal {
        Decimal::new(1, self.scale)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.code)
    }
}

/// An exact amount of one currency, always at the currency's scale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            amount: Decimal,
            currency: Currency,
        }
        let raw = Raw::deserialize(deserializer)?;
        Money::new(raw.amount, raw.currency).map_err(serde::de::Error::custom)
    }
}

impl Money {
    /// An amount that must fit the currency's scale exactly.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let normalized = amount.normalize();
        if normalized.scale() > currency.scale {
            return Err(MoneyError::TooPrecise { amount, currency: currency.code, scale: currency.scale });
        }
        let mut amount = normalized;
        amount.rescale(currency.scale);
        Ok(Money { amount, currency })
    }

    /// Parses an amount as a client writes it: a canonical decimal string such as `"1234.50"`
    /// or `"-0.5"` (an optional `-`, digits without leading zeros, an optional fraction; no
    /// exponent, no spaces, no `+`), at most [`AMOUNT_INTEGER_DIGITS_MAX`] digits before the
    /// point and no more decimals than the currency has.
    ///
    /// # Errors
    /// `NotANumber`, `TooLarge` or `TooPrecise`.
    pub fn parse(amount: &str, currency: Currency) -> Result<Money, MoneyError> {
        let not_a_number = || MoneyError::NotANumber(amount.to_owned());
        let unsigned = amount.strip_prefix('-').unwrap_or(amount);
        let (integer, fraction) = match unsigned.split_once('.') {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (unsigned, None),
        };
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
        if !digits(integer)
            || (integer.len() > 1 && integer.starts_with('0'))
            || fraction.is_some_and(|part| !digits(part))
        {
            return Err(not_a_number());
        }
        if integer.len() > AMOUNT_INTEGER_DIGITS_MAX as usize {
            return Err(MoneyError::TooLarge(amount.to_owned()));
        }
        let decimal: Decimal = amount.parse().map_err(|_| not_a_number())?;
        Money::new(decimal, currency)
    }

    pub fn zero(currency: Currency) -> Money {
        Money::new(Decimal::ZERO, currency).expect("zero fits every scale")
    }

    /// Rounds an exact result of the domain (a prorated or percentage amount) to the currency
    /// with [`ROUNDING_RULE`]. The only place the domain rounds.
    pub fn round(amount: Decimal, currency: Currency) -> Money {
        let rounded = amount.round_dp_with_strategy(currency.scale, ROUNDING_RULE);
        Money::new(rounded, currency).expect("a rounded amount fits its scale")
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    pub fn is_positive(&self) -> bool {
        self.amount > Decimal::ZERO
    }

    pub fn is_negative(&self) -> bool {
        self.amount < Decimal::ZERO
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency.code.clone(),
                right: other.currency.code.clone(),
            });
        }
        Ok(())
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency.clone() })
    }

    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_sub(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency.clone() })
    }

    pub fn negated(&self) -> Money {
        Money { amount: -self.amount, currency: self.currency.clone() }
    }

    pub fn min(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        Ok(if other.amount < self.amount { other } else { self })
    }

    /// The sum of `amounts`, all in `currency`.
    pub fn sum<'a>(currency: &Currency, amounts: impl IntoIterator<Item = &'a Money>) -> Result<Money, MoneyError> {
        amounts.into_iter().try_fold(Money::zero(currency.clone()), |total, amount| total.checked_add(amount))
    }

    /// Splits this amount into parts proportional to `weights`, in minor units, by the
    /// largest-remainder method: each part is first rounded toward zero, then the leftover
    /// minor units go one each to the parts with the largest remainders (the earlier part
    /// first on a tie). The parts always add up to exactly this amount.
    pub fn allocate(&self, weights: &[Decimal]) -> Result<Vec<Money>, MoneyError> {
        let weight_total = weights
            .iter()
            .try_fold(Decimal::ZERO, |total, weight| total.checked_add(*weight))
            .ok_or(MoneyError::Overflow)?;
        if weights.iter().any(|weight| weight.is_sign_negative() && !weight.is_zero()) || weight_total <= Decimal::ZERO
        {
            return Err(MoneyError::InvalidWeights);
        }
        let minor_unit = self.currency.minor_unit();
        let units_total = (self.amount.abs() / minor_unit).trunc();
        let mut shares: Vec<(usize, Decimal, Decimal)> = Vec::with_capacity(weights.len());
        for (index, weight) in weights.iter().enumerate() {
            // units * weight / total, exactly as long as the product fits; past that, the share
            // of the total first (a fraction, so the product always fits), and the leftover
            // below evens out whatever that rounded.
            let exact = match units_total.checked_mul(*weight) {
                Some(product) => product.checked_div(weight_total),
                None => weight.checked_div(weight_total).and_then(|share| units_total.checked_mul(share)),
            }
            .ok_or(MoneyError::Overflow)?;
            shares.push((index, exact.trunc(), exact.fract()));
        }
        let mut leftover = units_total - shares.iter().map(|(_, units, _)| *units).sum::<Decimal>();
        let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
        by_remainder.sort_by(|left, right| shares[*right].2.cmp(&shares[*left].2).then(left.cmp(right)));
        for &index in &by_remainder {
            if leftover <= Decimal::ZERO {
                break;
            }
            shares[index].1 += Decimal::ONE;
            leftover -= Decimal::ONE;
        }
        // Rounding (only on the fallback) may have given a unit too many: taken back from the
        // smallest remainders, so the parts still add up to the whole.
        for &index in by_remainder.iter().rev() {
            if leftover >= Decimal::ZERO {
                break;
            }
            if shares[index].1 > Decimal::ZERO {
                shares[index].1 -= Decimal::ONE;
                leftover += Decimal::ONE;
            }
        }
        assert_eq!(leftover, Decimal::ZERO, "allocated parts add up to the whole");
        let sign = if self.is_negative() { Decimal::NEGATIVE_ONE } else { Decimal::ONE };
        Ok(shares
            .into_iter()
            .map(|(_, units, _)| Money::round(units * minor_unit * sign, self.currency.clone()))
            .collect())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.amount, self.currency.code)
    }
}
