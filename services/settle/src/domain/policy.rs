//! Revenue-share policies: who gets which part of a model's inference fees.

use provenant_events::proto::settlement::v1::{Beneficiary as ProtoBeneficiary, PolicyPart};
use serde::{Deserialize, Serialize};

/// The whole, in parts per billion.
pub const WHOLE_PPB: u64 = 1_000_000_000;

/// A policy's parties, in the order that breaks remainder ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Beneficiary {
    Protocol,
    ModelBuilder,
    DatanetOwners,
    Contributors,
}

impl Beneficiary {
    fn from_proto(value: i32) -> Result<Beneficiary, PolicyError> {
        match ProtoBeneficiary::try_from(value) {
            Ok(ProtoBeneficiary::Protocol) => Ok(Beneficiary::Protocol),
            Ok(ProtoBeneficiary::ModelBuilder) => Ok(Beneficiary::ModelBuilder),
            Ok(ProtoBeneficiary::DatanetOwners) => Ok(Beneficiary::DatanetOwners),
            Ok(ProtoBeneficiary::Contributors) => Ok(Beneficiary::Contributors),
            _ => Err(PolicyError::UnknownBeneficiary(value)),
        }
    }

    fn to_proto(self) -> ProtoBeneficiary {
        match self {
            Beneficiary::Protocol => ProtoBeneficiary::Protocol,
            Beneficiary::ModelBuilder => ProtoBeneficiary::ModelBuilder,
            Beneficiary::DatanetOwners => ProtoBeneficiary::DatanetOwners,
            Beneficiary::Contributors => ProtoBeneficiary::Contributors,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("a policy needs at least one part")]
    Empty,
    #[error("beneficiary {0} is not one this version knows")]
    UnknownBeneficiary(i32),
    #[error("{0:?} appears more than once")]
    DuplicateBeneficiary(Beneficiary),
    #[error("the parts add up to {0} parts per billion, not exactly 1,000,000,000")]
    NotWhole(u128),
}

impl PolicyError {
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Empty => "policy.empty",
            PolicyError::UnknownBeneficiary(_) => "policy.unknown_beneficiary",
            PolicyError::DuplicateBeneficiary(_) => "policy.duplicate_beneficiary",
            PolicyError::NotWhole(_) => "policy.not_whole",
        }
    }
}

/// A checked policy: distinct beneficiaries whose parts sum to exactly one whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenuePolicy {
    /// 0 for the configured default, then 1, 2, … per model as policies are set.
    pub version: u64,
    /// In beneficiary order.
    pub parts: Vec<(Beneficiary, u64)>,
}

impl RevenuePolicy {
    pub fn new(version: u64, parts: impl IntoIterator<Item = (Beneficiary, u64)>) -> Result<RevenuePolicy, PolicyError> {
        let mut parts: Vec<(Beneficiary, u64)> = parts.into_iter().collect();
        if parts.is_empty() {
            return Err(PolicyError::Empty);
        }
        parts.sort();
        if let Some(pair) = parts.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(PolicyError::DuplicateBeneficiary(pair[0].0));
        }
        let sum: u128 = parts.iter().map(|(_, share)| u128::from(*share)).sum();
        if sum != u128::from(WHOLE_PPB) {
            return Err(PolicyError::NotWhole(sum));
        }
        Ok(RevenuePolicy { version, parts })
    }

    pub fn from_proto(version: u64, parts: &[PolicyPart]) -> Result<RevenuePolicy, PolicyError> {
        let parts =
            parts.iter().map(|part| Ok((Beneficiary::from_proto(part.beneficiary)?, part.share_ppb))).collect::<Result<Vec<_>, _>>()?;
        RevenuePolicy::new(version, parts)
    }

    pub fn to_proto(&self) -> Vec<PolicyPart> {
        self.parts.iter().map(|(beneficiary, share)| PolicyPart { beneficiary: beneficiary.to_proto().into(), share_ppb: *share }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_must_be_distinct_and_whole() {
        let policy =
            RevenuePolicy::new(1, [(Beneficiary::Contributors, 600_000_000), (Beneficiary::Protocol, 400_000_000)]).expect("whole");
        assert_eq!(policy.parts[0].0, Beneficiary::Protocol, "kept in beneficiary order");
        assert_eq!(RevenuePolicy::new(1, []), Err(PolicyError::Empty));
        assert_eq!(RevenuePolicy::new(1, [(Beneficiary::Protocol, 999_999_999)]), Err(PolicyError::NotWhole(999_999_999)));
        assert_eq!(
            RevenuePolicy::new(1, [(Beneficiary::Protocol, 500_000_000), (Beneficiary::Protocol, 500_000_000)]),
            Err(PolicyError::DuplicateBeneficiary(Beneficiary::Protocol))
        );
        // u64 parts that would wrap a u64 sum are still refused, not wrapped into "whole".
        assert!(matches!(
            RevenuePolicy::new(1, [(Beneficiary::Protocol, u64::MAX), (Beneficiary::Contributors, 1_000_000_001)]),
            Err(PolicyError::NotWhole(_))
        ));
        let round_trip = RevenuePolicy::from_proto(1, &policy.to_proto()).expect("valid");
        assert_eq!(round_trip, policy);
        assert_eq!(
            RevenuePolicy::from_proto(1, &[PolicyPart { beneficiary: 0, share_ppb: WHOLE_PPB }]),
            Err(PolicyError::UnknownBeneficiary(0))
        );
    }
}
