//! Money as the events carry it: integer minor units with a currency and an exponent.
//!
//! Amounts are `i128` in code, because token currencies carry 18 decimals; on the wire, where
//! protobuf has no 128-bit integer, they are a decimal string parsed strictly (an optional
//! leading `-`, digits only, no leading zeros, no `+`, no exponent, no `-0`), so that one
//! amount has exactly one spelling and hashing the event bytes is meaningful.

use crate::proto::common::v1::Money;

/// The largest exponent accepted: 18 decimals (ERC-20 tokens) is the most any currency uses.
pub const MAX_EXPONENT: u32 = 18;
/// Currency codes are 3 to 12 upper-case letters or digits ("EUR", "USDC").
const CURRENCY_LENGTH: std::ops::RangeInclusive<usize> = 3..=12;

/// An amount of one currency in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Amount {
    pub currency: String,
    pub exponent: u32,
    pub minor_units: i128,
}

/// Why a [`Money`] message is not a valid amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency {0:?} is not 3 to 12 upper-case letters or digits")]
    Currency(String),
    #[error("exponent {0} exceeds {MAX_EXPONENT}")]
    Exponent(u32),
    #[error("minor units {0:?} are not a canonical decimal integer")]
    MinorUnits(String),
    #[error("{0} and {1} are different currencies")]
    CurrencyMismatch(String, String),
    #[error("the amount overflows 128 bits")]
    Overflow,
}

impl Amount {
    /// A validated amount.
    pub fn new(currency: &str, exponent: u32, minor_units: i128) -> Result<Amount, MoneyError> {
        check_currency(currency)?;
        if exponent > MAX_EXPONENT {
            return Err(MoneyError::Exponent(exponent));
        }
        Ok(Amount { currency: currency.to_owned(), exponent, minor_units })
    }

    /// Zero of the same currency.
    pub fn zero_like(&self) -> Amount {
        Amount { currency: self.currency.clone(), exponent: self.exponent, minor_units: 0 }
    }

    /// Parses a wire amount strictly.
    pub fn from_proto(money: &Money) -> Result<Amount, MoneyError> {
        let minor_units = parse_minor_units(&money.minor_units)?;
        Amount::new(&money.currency, money.exponent, minor_units)
    }

    /// The wire form, in its one canonical spelling.
    pub fn to_proto(&self) -> Money {
        Money { currency: self.currency.clone(), exponent: self.exponent, minor_units: self.minor_units.to_string() }
    }

    /// `self + other`, of one currency and exponent.
    pub fn checked_add(&self, other: &Amount) -> Result<Amount, MoneyError> {
        self.same_currency(other)?;
        let minor_units = self.minor_units.checked_add(other.minor_units).ok_or(MoneyError::Overflow)?;
        Ok(Amount { minor_units, ..self.clone() })
    }

    /// An error unless both amounts are of one currency and exponent.
    pub fn same_currency(&self, other: &Amount) -> Result<(), MoneyError> {
        if self.currency == other.currency && self.exponent == other.exponent {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.label(), other.label()))
        }
    }

    fn label(&self) -> String {
        format!("{} (exponent {})", self.currency, self.exponent)
    }
}

impl std::fmt::Display for Amount {
    /// `12.34 EUR`: the minor units placed at the exponent, exact.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.minor_units.unsigned_abs().to_string();
        let exponent = self.exponent as usize;
        let padded = format!("{digits:0>width$}", width = exponent + 1);
        let (whole, fraction) = padded.split_at(padded.len() - exponent);
        let sign = if self.minor_units < 0 { "-" } else { "" };
        if fraction.is_empty() {
            write!(formatter, "{sign}{whole} {}", self.currency)
        } else {
            write!(formatter, "{sign}{whole}.{fraction} {}", self.currency)
        }
    }
}

fn check_currency(currency: &str) -> Result<(), MoneyError> {
    let valid = CURRENCY_LENGTH.contains(&currency.len())
        && currency.bytes().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
        && currency.bytes().next().is_some_and(|byte| byte.is_ascii_uppercase());
    if valid { Ok(()) } else { Err(MoneyError::Currency(currency.to_owned())) }
}

/// Parses the strict decimal spelling of a minor-unit amount.
pub fn parse_minor_units(text: &str) -> Result<i128, MoneyError> {
    let invalid = || MoneyError::MinorUnits(text.to_owned());
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !canonical {
        return Err(invalid());
    }
    text.parse::<i128>().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_spelling_parses() {
        for good in ["0", "1", "-1", "12345", "170141183460469231731687303715884105727"] {
            assert_eq!(parse_minor_units(good).map(|value| value.to_string()), Ok(good.to_owned()));
        }
        for bad in ["", "-", "-0", "+1", "01", "1.0", "1e3", " 1", "1 ", "0x10", "170141183460469231731687303715884105728"] {
            assert!(parse_minor_units(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn amounts_round_trip_through_the_wire_form() {
        let amount = Amount::new("USDC", 18, -1_000_000_000_000_000_000_000).expect("valid");
        assert_eq!(Amount::from_proto(&amount.to_proto()), Ok(amount));
        assert!(Amount::new("eur", 2, 1).is_err());
        assert!(Amount::new("EUR", 19, 1).is_err());
    }

    #[test]
    fn sums_stay_in_one_currency_and_display_exactly() {
        let euros = Amount::new("EUR", 2, 1_234).expect("valid");
        let sum = euros.checked_add(&Amount::new("EUR", 2, -34).expect("valid")).expect("same currency");
        assert_eq!(sum.to_string(), "12.00 EUR");
        assert_eq!(Amount::new("EUR", 2, -5).expect("valid").to_string(), "-0.05 EUR");
        assert_eq!(Amount::new("JPY", 0, 7).expect("valid").to_string(), "7 JPY");
        assert!(euros.checked_add(&Amount::new("USD", 2, 1).expect("valid")).is_err());
    }
}
