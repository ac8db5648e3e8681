//! From a fee to a balanced double-entry transaction.
//!
//! The caller's fee account is debited the whole fee; the credits split it first by the
//! revenue policy's parts, then each part among its parties: the Datanet owners' part among the
//! model's Datanets by how many of its pinned snapshots each has, contributors by the receipt's
//! shares. Owners' and contributors' credits name the Datanet they were earned through, so that
//! a report can total each Datanet's revenue; an account credited through two Datanets gets a
//! line for each. A share below
//! the receipt's noise floor, and the receipt's base pool, go to the model's base pool; without
//! a receipt the contributors' part is held for the model until one comes (DESIGN.md, "Proof of
//! Attribution"). Every split is largest-remainder, so the credits sum to the fee exactly.

use std::collections::BTreeMap;

use crate::domain::allocation::{AllocationError, largest_remainder};
use crate::domain::inference::CheckedReceipt;
use crate::domain::policy::{Beneficiary, RevenuePolicy};

/// Ledger account names. Debits are negative, credits positive.
pub mod account {
    pub const PROTOCOL: &str = "payable:protocol";

    pub fn caller_fees(caller_id: &str) -> String {
        format!("fees:caller:{caller_id}")
    }

    pub fn model_builder(builder_id: &str) -> String {
        format!("payable:model_builder:{builder_id}")
    }

    pub fn datanet_owner(owner_id: &str) -> String {
        format!("payable:datanet_owner:{owner_id}")
    }

    pub fn contributor(contributor_id: &str) -> String {
        format!("payable:contributor:{contributor_id}")
    }

    /// Mass no contributor explains (the receipt's base pool and shares under its noise floor).
    pub fn base_pool(model_id: &str) -> String {
        format!("pool:base:{model_id}")
    }

    /// The contributors' part of fees whose inference came without a receipt, until one comes.
    pub fn unattributed(model_id: &str) -> String {
        format!("held:unattributed:{model_id}")
    }

    /// The accounts that belong to `principal_id`, for their own statement.
    pub fn owned_by(principal_id: &str) -> [String; 3] {
        [contributor(principal_id), model_builder(principal_id), datanet_owner(principal_id)]
    }
}

/// What a currency's postings add up to, by kind of account: the figures a reconciliation and a
/// report state (fees in = payable + pooled + held, exactly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// The fee accounts' balance (negative: what callers were charged).
    pub fees: i128,
    /// Owed to contributors, builders, Datanet owners and the protocol.
    pub payable: i128,
    /// Of which the protocol's.
    pub protocol: i128,
    /// In models' base pools.
    pub pooled: i128,
    /// Held until an inference is attributed.
    pub held: i128,
}

impl Totals {
    pub fn add(&mut self, account: &str, minor_units: i128) {
        match account.split(':').next() {
            Some("fees") => self.fees += minor_units,
            Some("payable") => self.payable += minor_units,
            Some("pool") => self.pooled += minor_units,
            _ => self.held += minor_units,
        }
        if account == account::PROTOCOL {
            self.protocol += minor_units;
        }
    }

    pub fn fees_in(&self) -> i128 {
        -self.fees
    }

    pub fn balanced(&self) -> bool {
        self.fees_in() == self.payable + self.pooled + self.held
    }
}

/// One of the Datanets a model was trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedDatanet {
    pub datanet_id: String,
    pub owner_id: String,
    /// How many of the model's pinned snapshots are of this Datanet.
    pub snapshots: u64,
}

/// Who stands behind a model, beyond the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    pub model_id: String,
    pub builder_id: String,
    /// The model's Datanets, in Datanet id order.
    pub datanets: Vec<PinnedDatanet>,
}

/// One line of a transaction, in the fee's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: String,
    /// The Datanet the credit was earned through; empty on every other line.
    pub datanet_id: String,
    pub minor_units: i128,
}

/// Credits by account, then Datanet: the order a transaction lists them in.
type Credits = BTreeMap<(String, String), i128>;

/// The postings that settle `fee` (minor units, ≥ 0) paid by `caller_id`: the debit first, then
/// the credits in account order; no zero lines.
pub fn postings(
    fee: i128,
    caller_id: &str,
    policy: &RevenuePolicy,
    parties: &Parties,
    receipt: Option<&CheckedReceipt>,
) -> Result<Vec<Posting>, AllocationError> {
    let mut credits = Credits::new();
    let mut credit =
        |account: String, datanet_id: &str, units: i128| *credits.entry((account, datanet_id.to_owned())).or_default() += units;
    for (beneficiary, part) in largest_remainder(fee, &policy.parts)? {
        match beneficiary {
            Beneficiary::Protocol => credit(account::PROTOCOL.to_owned(), "", part),
            Beneficiary::ModelBuilder => credit(account::model_builder(&parties.builder_id), "", part),
            Beneficiary::DatanetOwners if parties.datanets.is_empty() => credit(account::base_pool(&parties.model_id), "", part),
            Beneficiary::DatanetOwners => {
                let weights: Vec<(usize, u64)> = parties.datanets.iter().map(|datanet| datanet.snapshots).enumerate().collect();
                for (index, units) in largest_remainder(part, &weights)? {
                    let datanet = &parties.datanets[index];
                    credit(account::datanet_owner(&datanet.owner_id), &datanet.datanet_id, units);
                }
            }
            Beneficiary::Contributors => match receipt {
                None => credit(account::unattributed(&parties.model_id), "", part),
                Some(receipt) => {
                    for ((account, datanet_id), units) in largest_remainder(part, &contributor_weights(receipt, &parties.model_id))? {
                        credit(account, &datanet_id, units);
                    }
                }
            },
        }
    }
    Ok(transaction(account::caller_fees(caller_id), fee, credits))
}

/// The debit of `total` from `debited`, then the credits in account order; no zero lines.
fn transaction(debited: String, total: i128, credits: Credits) -> Vec<Posting> {
    let mut lines = vec![Posting { account: debited, datanet_id: String::new(), minor_units: -total }];
    lines.extend(credits.into_iter().map(|((account, datanet_id), minor_units)| Posting { account, datanet_id, minor_units }));
    lines.retain(|posting| posting.minor_units != 0);
    lines
}

/// The postings that pay out `held` (minor units, > 0), the contributors' part held for an
/// inference of `model_id` that came without a receipt, by the receipt computed later: the held
/// account debited, then the credits in account order, exactly as [`postings`] would have
/// split that part had the receipt come with the inference.
pub fn release_postings(held: i128, model_id: &str, receipt: &CheckedReceipt) -> Result<Vec<Posting>, AllocationError> {
    let credits: Credits = largest_remainder(held, &contributor_weights(receipt, model_id))?.into_iter().collect();
    Ok(transaction(account::unattributed(model_id), held, credits))
}

/// Contributor accounts, each with the Datanet of its share, weighted by their shares; shares
/// under the noise floor join the base pool, which also takes the receipt's unexplained mass.
/// The weights sum to one whole.
fn contributor_weights(receipt: &CheckedReceipt, model_id: &str) -> Vec<((String, String), u64)> {
    let mut pool = receipt.base_pool_ppb;
    let mut weights = Vec::with_capacity(receipt.shares.len() + 1);
    for share in &receipt.shares {
        if share.share_ppb < receipt.noise_floor_ppb {
            pool += share.share_ppb;
        } else {
            weights.push(((account::contributor(&share.contributor_id), share.datanet_id.clone()), share.share_ppb));
        }
    }
    weights.push(((account::base_pool(model_id), String::new()), pool));
    weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::inference::ReceiptShare;

    fn policy() -> RevenuePolicy {
        RevenuePolicy::new(
            1,
            [
                (Beneficiary::Protocol, 100_000_000),
                (Beneficiary::ModelBuilder, 200_000_000),
                (Beneficiary::DatanetOwners, 100_000_000),
                (Beneficiary::Contributors, 600_000_000),
            ],
        )
        .expect("whole")
    }

    fn pinned(datanet_id: &str, owner_id: &str, snapshots: u64) -> PinnedDatanet {
        PinnedDatanet { datanet_id: datanet_id.into(), owner_id: owner_id.into(), snapshots }
    }

    fn parties() -> Parties {
        Parties { model_id: "m".into(), builder_id: "bob".into(), datanets: vec![pinned("de", "olga", 2), pinned("es", "otto", 1)] }
    }

    fn share(contributor_id: &str, datanet_id: &str, share_ppb: u64) -> ReceiptShare {
        ReceiptShare { contributor_id: contributor_id.into(), datanet_id: datanet_id.into(), share_ppb }
    }

    fn lines(postings: &[Posting]) -> Vec<(&str, i128)> {
        postings.iter().map(|posting| (posting.account.as_str(), posting.minor_units)).collect()
    }

    fn lines_with_datanets(postings: &[Posting]) -> Vec<(&str, &str, i128)> {
        postings.iter().map(|posting| (posting.account.as_str(), posting.datanet_id.as_str(), posting.minor_units)).collect()
    }

    #[test]
    fn a_fee_splits_by_policy_then_by_receipt_and_balances() {
        let receipt = CheckedReceipt {
            shares: vec![share("ann", "de", 500_000_000), share("cid", "de", 10_000_000), share("dan", "es", 290_000_000)],
            base_pool_ppb: 200_000_000,
            noise_floor_ppb: 20_000_000,
            index_sha256: String::new(),
        };
        let postings = postings(1_001, "app", &policy(), &parties(), Some(&receipt)).expect("split");
        // 1,001 by policy: 100.1 / 200.2 / 100.1 / 600.6 → 100 / 200 / 100 / 601 (largest remainder).
        // Owners 100 by 2:1 → 67 / 33. Contributors 601: ann 0.5, dan 0.29, pool 0.2 + cid 0.01
        // (under the floor) → 300.5 / 174.29 / 126.21 → 301 / 174 / 126.
        assert_eq!(
            lines(&postings),
            vec![
                ("fees:caller:app", -1_001),
                ("payable:contributor:ann", 301),
                ("payable:contributor:dan", 174),
                ("payable:datanet_owner:olga", 67),
                ("payable:datanet_owner:otto", 33),
                ("payable:model_builder:bob", 200),
                ("payable:protocol", 100),
                ("pool:base:m", 126),
            ]
        );
        assert_eq!(postings.iter().map(|posting| posting.minor_units).sum::<i128>(), 0);
        let datanets: Vec<&str> = postings.iter().map(|posting| posting.datanet_id.as_str()).collect();
        assert_eq!(datanets, ["", "de", "es", "de", "es", "", "", ""]);
    }

    #[test]
    fn a_contributor_and_an_owner_in_two_datanets_get_a_line_for_each() {
        let parties = Parties { datanets: vec![pinned("de", "olga", 1), pinned("it", "olga", 1)], ..parties() };
        let receipt = CheckedReceipt {
            shares: vec![share("ann", "de", 300_000_000), share("ann", "it", 100_000_000)],
            base_pool_ppb: 600_000_000,
            noise_floor_ppb: 0,
            index_sha256: String::new(),
        };
        let postings = postings(1_000, "app", &policy(), &parties, Some(&receipt)).expect("split");
        assert_eq!(
            lines_with_datanets(&postings),
            vec![
                ("fees:caller:app", "", -1_000),
                ("payable:contributor:ann", "de", 180),
                ("payable:contributor:ann", "it", 60),
                ("payable:datanet_owner:olga", "de", 50),
                ("payable:datanet_owner:olga", "it", 50),
                ("payable:model_builder:bob", "", 200),
                ("payable:protocol", "", 100),
                ("pool:base:m", "", 360),
            ]
        );
    }

    #[test]
    fn without_a_receipt_the_contributors_part_is_held_and_zero_lines_are_dropped() {
        let postings = postings(3, "app", &policy(), &parties(), None).expect("split");
        assert_eq!(lines(&postings), vec![("fees:caller:app", -3), ("held:unattributed:m", 2), ("payable:model_builder:bob", 1)]);
        assert!(self::postings(0, "app", &policy(), &parties(), None).expect("split").is_empty());
    }

    proptest::proptest! {
        /// Holding the contributors' part and releasing it by the receipt later pays every
        /// account exactly what settling with the receipt at once would have.
        #[test]
        fn a_held_part_released_later_pays_what_a_receipt_at_once_would(
            fee in 0i128..10_000_000,
            ann in 0u64..=400_000_000,
            cid in 0u64..=300_000_000,
            floor in 0u64..=50_000_000,
        ) {
            let receipt = CheckedReceipt {
                shares: vec![share("ann", "de", ann), share("cid", "es", cid)],
                base_pool_ppb: 1_000_000_000 - ann - cid,
                noise_floor_ppb: floor,
                index_sha256: String::new(),
            };
            let at_once = postings(fee, "app", &policy(), &parties(), Some(&receipt)).expect("split");
            let held = postings(fee, "app", &policy(), &parties(), None).expect("split");
            let held_units = held.iter().find(|posting| posting.account == account::unattributed("m")).map_or(0, |posting| posting.minor_units);
            let released = release_postings(held_units, "m", &receipt).expect("release");
            proptest::prop_assert_eq!(released.iter().map(|posting| posting.minor_units).sum::<i128>(), 0);
            let mut later: BTreeMap<(String, String), i128> = BTreeMap::new();
            for posting in held.iter().chain(&released) {
                *later.entry((posting.account.clone(), posting.datanet_id.clone())).or_default() += posting.minor_units;
            }
            later.retain(|_, units| *units != 0);
            let at_once: BTreeMap<(String, String), i128> =
                at_once.into_iter().map(|posting| ((posting.account, posting.datanet_id), posting.minor_units)).collect();
            proptest::prop_assert_eq!(later, at_once);
        }
    }
}
