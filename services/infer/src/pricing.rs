//! A request's fee from its model's price: integer minor units, rounded once.
//!
//! `fee = per_request + ceil((prompt_tokens · per_1k_prompt + output_tokens · per_1k_output) / 1000)`.
//! The token part is summed exactly before the one division, and rounded up, so a request of
//! a few tokens at a price of less than a minor unit per token still pays one minor unit
//! rather than nothing; the sum of many requests' fees never falls short of the exact price.

use provenant_events::money::{Amount, MoneyError};

use crate::catalog::Price;

/// The fee for one request.
pub fn fee(price: &Price, prompt_tokens: u32, output_tokens: u32) -> Result<Amount, MoneyError> {
    let tokens_cost = i128::from(prompt_tokens)
        .checked_mul(price.per_1k_prompt_tokens.minor_units)
        .and_then(|prompt| i128::from(output_tokens).checked_mul(price.per_1k_output_tokens.minor_units)?.checked_add(prompt))
        .ok_or(MoneyError::Overflow)?;
    // Prices are never negative (checked when set), so ceiling division is (n + 999) / 1000.
    let tokens_fee = tokens_cost.checked_add(999).ok_or(MoneyError::Overflow)? / 1000;
    let minor_units = price.per_request.minor_units.checked_add(tokens_fee).ok_or(MoneyError::Overflow)?;
    Ok(Amount { minor_units, ..price.per_request.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(request: i128, prompt: i128, output: i128) -> Price {
        let eur = |units| Amount::new("EUR", 2, units).expect("valid");
        Price { version: 1, per_request: eur(request), per_1k_prompt_tokens: eur(prompt), per_1k_output_tokens: eur(output) }
    }

    #[test]
    fn the_token_part_is_summed_exactly_then_rounded_up_once() {
        // 3 · 100 + 2 · 250 = 800 thousandths → 1 cent, plus 5 cents per request.
        assert_eq!(fee(&price(5, 100, 250), 3, 2).map(|fee| fee.minor_units), Ok(6));
        // Exactly 2 cents stays 2.
        assert_eq!(fee(&price(0, 1_000, 1_000), 1, 1).map(|fee| fee.minor_units), Ok(2));
        assert_eq!(fee(&price(0, 0, 0), 100, 100).map(|fee| fee.minor_units), Ok(0));
        assert_eq!(fee(&price(7, 0, 0), 0, 0).map(|fee| fee.to_string()), Ok("0.07 EUR".to_owned()));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert_eq!(fee(&price(i128::MAX, 0, 1_000), 0, 1), Err(MoneyError::Overflow));
    }
}
