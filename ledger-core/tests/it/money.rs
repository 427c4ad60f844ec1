use ledger_core::money::{Currency, Money, MoneyError};
use rust_decimal_macros::dec;

use crate::usd;

#[test]
fn known_currencies_have_their_scales() {
    for (code, scale) in [("USD", 2), ("EUR", 2), ("GBP", 2), ("JPY", 0), ("USDC", 6), ("SOL", 9)] {
        assert_eq!(Currency::known(code).unwrap().scale(), scale, "{code}");
    }
    assert_eq!(Currency::known("XYZ"), Err(MoneyError::UnknownCurrency("XYZ".to_owned())));
}

#[test]
fn an_organization_can_define_a_currency_with_an_explicit_scale() {
    let points = Currency::custom("POINTS", 4).unwrap();
    assert_eq!(Money::parse("1.2345", points.clone()).unwrap().amount(), dec!(1.2345));
    assert!(matches!(Currency::custom("usd", 2), Err(MoneyError::InvalidCurrencyCode(_))));
    assert!(matches!(Currency::custom("JPY", 2), Err(MoneyError::ConflictingScale { known: 0, requested: 2, .. })));
    assert!(matches!(Currency::custom("BIG", 19), Err(MoneyError::InvalidScale { .. })));
}

#[test]
fn an_amount_with_more_decimals_than_its_currency_is_an_error_not_a_rounding() {
    assert!(matches!(Money::parse("10.005", Currency::usd()), Err(MoneyError::TooPrecise { scale: 2, .. })));
    assert!(matches!(Money::parse("1.5", Currency::known("JPY").unwrap()), Err(MoneyError::TooPrecise { .. })));
    assert!(Money::parse("0.000000001", Currency::known("SOL").unwrap()).is_ok());
    assert!(Money::parse("0.0000000001", Currency::known("SOL").unwrap()).is_err());
    // Trailing zeros are not precision.
    assert_eq!(Money::parse("10.5000", Currency::usd()).unwrap(), usd("10.50"));
    assert!(matches!(Money::parse("ten", Currency::usd()), Err(MoneyError::NotANumber(_))));
}

#[test]
fn amounts_keep_their_currency_scale_in_json() {
    let json = serde_json::to_value(usd("12.5")).unwrap();
    assert_eq!(json, serde_json::json!({ "amount": "12.50", "currency": { "code": "USD", "scale": 2 } }));
    let too_precise = serde_json::json!({ "amount": "12.501", "currency": { "code": "USD", "scale": 2 } });
    assert!(serde_json::from_value::<Money>(too_precise).is_err());
}

#[test]
fn arithmetic_across_currencies_is_an_error() {
    let euros = Money::parse("1.00", Currency::known("EUR").unwrap()).unwrap();
    assert!(matches!(usd("1.00").checked_add(&euros), Err(MoneyError::CurrencyMismatch { .. })));
    assert!(matches!(usd("1.00").checked_sub(&euros), Err(MoneyError::CurrencyMismatch { .. })));
    assert_eq!(usd("1.10").checked_add(&usd("2.25")).unwrap(), usd("3.35"));
}

#[test]
fn the_rounding_rule_is_half_to_even_at_the_currency_scale() {
    assert_eq!(Money::round(dec!(0.125), Currency::usd()), usd("0.12"));
    assert_eq!(Money::round(dec!(0.135), Currency::usd()), usd("0.14"));
    assert_eq!(Money::round(dec!(0.1251), Currency::usd()), usd("0.13"));
    assert_eq!(Money::round(dec!(-0.125), Currency::usd()), usd("-0.12"));
    assert_eq!(Money::round(dec!(2.5), Currency::known("JPY").unwrap()).amount(), dec!(2));
}

#[test]
fn a_three_way_cent_split_adds_up_and_gives_the_extra_cent_to_the_first() {
    // 1.00 / 3 = 0.333...: each part gets 33 cents, the one cent left over goes to the
    // part with the largest remainder, the first on a tie.
    let parts = usd("1.00").allocate(&[dec!(1), dec!(1), dec!(1)]).unwrap();
    assert_eq!(parts, vec![usd("0.34"), usd("0.33"), usd("0.33")]);
    let parts = usd("-1.00").allocate(&[dec!(1), dec!(1), dec!(1)]).unwrap();
    assert_eq!(parts, vec![usd("-0.34"), usd("-0.33"), usd("-0.33")]);
    // By weight: 10.00 in 1:2 is 3.333 / 6.666: 3.33 and 6.67 (the larger remainder).
    assert_eq!(usd("10.00").allocate(&[dec!(1), dec!(2)]).unwrap(), vec![usd("3.33"), usd("6.67")]);
    assert_eq!(usd("1.00").allocate(&[dec!(0), dec!(0)]), Err(MoneyError::InvalidWeights));
    assert_eq!(usd("1.00").allocate(&[dec!(-1), dec!(2)]), Err(MoneyError::InvalidWeights));
}

#[test]
fn only_canonical_decimal_strings_within_the_maximum_are_amounts() {
    let usd = Currency::usd;
    for good in ["0", "0.5", "-0.5", "5000.00", "-12.3", "999999999999999.99"] {
        assert!(Money::parse(good, usd()).is_ok(), "{good}");
    }
    for bad in [
        "",
        "-",
        ".5",
        "5.",
        "1e3",
        "1E3",
        " 5000.00 ",
        "5000.00 ",
        "+5",
        "05",
        "00.1",
        "1_000",
        "1,000.00",
        "5.0.0",
        "0x10",
        "NaN",
        "١٢",
    ] {
        assert!(matches!(Money::parse(bad, usd()), Err(MoneyError::NotANumber(_))), "{bad:?}");
    }
    assert!(matches!(Money::parse("1000000000000000", usd()), Err(MoneyError::TooLarge(_))));
    assert!(matches!(Money::parse("-1000000000000000.00", usd()), Err(MoneyError::TooLarge(_))));
    assert!(matches!(Money::parse("792281625142643375935439503.35", usd()), Err(MoneyError::TooLarge(_))));
    assert!(matches!(Money::parse("1.001", usd()), Err(MoneyError::TooPrecise { .. })));
}
