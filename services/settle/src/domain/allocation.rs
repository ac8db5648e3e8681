//! Exact integer splits by the largest-remainder method.
//!
//! Every part first gets `floor(total × weight / Σ weights)`; the units left over go one each to
//! the parts with the largest remainders, ties broken by the key's order. So the parts always
//! sum to the whole, never go negative, and do not depend on the order the weights come in.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("nothing to split by: the weights are empty or all zero")]
    NoWeight,
    #[error("the weights add up to more than 2^64")]
    WeightOverflow,
    #[error("a key appears twice among the weights")]
    DuplicateKey,
}

/// Splits `total` minor units among `weights`; the result lists every key, in key order.
///
/// A negative total splits its absolute value and negates every part, so a reversal mirrors
/// the split it reverses unit for unit.
pub fn largest_remainder<K: Ord + Clone>(total: i128, weights: &[(K, u64)]) -> Result<Vec<(K, i128)>, AllocationError> {
    let distinct: BTreeSet<&K> = weights.iter().map(|(key, _)| key).collect();
    if distinct.len() != weights.len() {
        return Err(AllocationError::DuplicateKey);
    }
    let weight_sum = weights.iter().try_fold(0u64, |sum, (_, weight)| sum.checked_add(*weight)).ok_or(AllocationError::WeightOverflow)?;
    if weight_sum == 0 {
        return Err(AllocationError::NoWeight);
    }
    let magnitude = total.unsigned_abs();
    let whole = u128::from(weight_sum);
    // total = q·W + r with r < W ≤ 2^64, so r·w < 2^128: no intermediate product overflows.
    let (quotient, rest) = (magnitude / whole, magnitude % whole);
    let mut parts: Vec<(K, u128, u128)> = weights
        .iter()
        .map(|(key, weight)| {
            let weight = u128::from(*weight);
            let share = rest * weight;
            (key.clone(), quotient * weight + share / whole, share % whole)
        })
        .collect();
    let assigned: u128 = parts.iter().map(|(_, units, _)| units).sum();
    let leftover = magnitude - assigned;
    // Largest remainder first; equal remainders in key order.
    parts.sort_by(|(left_key, _, left), (right_key, _, right)| right.cmp(left).then_with(|| left_key.cmp(right_key)));
    for part in parts.iter_mut().take(usize::try_from(leftover).unwrap_or(usize::MAX)) {
        part.1 += 1;
    }
    parts.sort_by(|(left, ..), (right, ..)| left.cmp(right));
    let sign = if total < 0 { -1 } else { 1 };
    Ok(parts
        .into_iter()
        .map(|(key, units, _)| {
            // A part never exceeds |total| ≤ 2^127, so it fits back into i128 with its sign.
            let units = i128::try_from(units).unwrap_or(i128::MAX);
            (key, sign * units)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn leftover_units_go_to_the_largest_remainders_then_by_key() {
        // 100 in thirds: 33 each, one unit left; all remainders tie, so the first key wins it.
        let parts = largest_remainder(100, &[("c", 1), ("a", 1), ("b", 1)]).expect("split");
        assert_eq!(parts, vec![("a", 34), ("b", 33), ("c", 33)]);
        // 10 by 1:2 → 3.33 and 6.67: the larger remainder (b) takes the unit.
        assert_eq!(largest_remainder(10, &[("a", 1), ("b", 2)]).expect("split"), vec![("a", 3), ("b", 7)]);
    }

    #[test]
    fn negative_totals_mirror_positive_ones_and_zero_weights_get_nothing() {
        let weights = [("a", 3), ("b", 0), ("c", 4)];
        let positive = largest_remainder(1_001, &weights).expect("split");
        let negative = largest_remainder(-1_001, &weights).expect("split");
        assert_eq!(positive.iter().map(|(key, units)| (*key, -units)).collect::<Vec<_>>(), negative);
        assert_eq!(positive[1], ("b", 0));
    }

    #[test]
    fn extreme_amounts_split_without_overflow() {
        let parts = largest_remainder(i128::MAX, &[(1, u64::MAX - 1), (2, 1)]).expect("split");
        assert_eq!(parts.iter().map(|(_, units)| units).sum::<i128>(), i128::MAX);
        assert_eq!(largest_remainder(5, &[(1, u64::MAX), (2, 1)]), Err(AllocationError::WeightOverflow));
        assert_eq!(largest_remainder(5, &[(1, 0)]), Err(AllocationError::NoWeight));
        assert_eq!(largest_remainder(5, &[(1, 1), (1, 2)]), Err(AllocationError::DuplicateKey));
    }

    fn weights() -> impl Strategy<Value = Vec<(u16, u64)>> {
        proptest::collection::btree_map(any::<u16>(), 0u64..=1_000_000_000, 1..24)
            .prop_filter("some weight", |weights| weights.values().any(|weight| *weight > 0))
            .prop_map(|weights| weights.into_iter().collect())
    }

    proptest! {
        #[test]
        fn parts_sum_exactly_and_are_never_negative(total in 0i128..=i128::from(u64::MAX) * 1_000, weights in weights()) {
            let parts = largest_remainder(total, &weights).expect("split");
            prop_assert_eq!(parts.iter().map(|(_, units)| units).sum::<i128>(), total);
            prop_assert!(parts.iter().all(|(_, units)| *units >= 0));
            // Each part is within one unit of its exact proportional share.
            let weight_sum: u128 = weights.iter().map(|(_, weight)| u128::from(*weight)).sum();
            for ((_, units), (_, weight)) in parts.iter().zip(&weights) {
                let exact_floor = total.unsigned_abs() * u128::from(*weight) / weight_sum;
                prop_assert!(units.unsigned_abs() == exact_floor || units.unsigned_abs() == exact_floor + 1);
            }
        }

        #[test]
        fn reordering_the_weights_changes_nothing(total in -1_000_000_000i128..1_000_000_000, weights in weights(), seed in any::<u64>()) {
            let mut shuffled = weights.clone();
            // A deterministic shuffle from the seed (rotate and reverse).
            let turn = usize::try_from(seed % shuffled.len() as u64).unwrap_or(0);
            shuffled.rotate_left(turn);
            if seed % 2 == 0 {
                shuffled.reverse();
            }
            prop_assert_eq!(largest_remainder(total, &weights).expect("split"), largest_remainder(total, &shuffled).expect("split"));
        }
    }
}
