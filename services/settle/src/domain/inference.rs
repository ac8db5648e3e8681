//! Checking an `InferenceServed` from any producer before it may move money.
//!
//! These are the checks that need nothing but the event; whether the producer is authorised
//! and the model is known are the settler's (they need configuration and the catalogue).

use provenant_events::money::Amount;
use provenant_events::proto::inference::v1::{AttributionReceipt, InferenceServed};

use crate::domain::policy::WHOLE_PPB;

/// Why an inference event cannot be settled: a stable code and a message for people. The
/// event goes to the dead-letter stream with both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into() }
    }
}

/// Largest token counts an event may claim (configuration).
#[derive(Debug, Clone, Copy)]
pub struct CountLimits {
    pub max_prompt_tokens: u32,
    pub max_output_tokens: u32,
}

/// A contributor's share of an answer, earned through one Datanet (empty: the producer did
/// not say which).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReceiptShare {
    pub contributor_id: String,
    pub datanet_id: String,
    pub share_ppb: u64,
}

/// An attribution receipt whose shares are well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedReceipt {
    /// In contributor, then Datanet order; a contributor and Datanet once.
    pub shares: Vec<ReceiptShare>,
    pub base_pool_ppb: u64,
    pub noise_floor_ppb: u64,
    /// The attribution index the shares were computed from (checked against the model's by the
    /// settler).
    pub index_sha256: String,
}

/// An inference event that passed every self-contained check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedInference {
    pub request_id: String,
    pub caller_id: String,
    pub base_model_id: String,
    pub base_weights_sha256: String,
    /// The adapter and its weights digest, when one served.
    pub adapter: Option<(String, String)>,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub fee: Amount,
    pub receipt: Option<CheckedReceipt>,
}

impl CheckedInference {
    /// The model whose revenue policy applies: the adapter when one served, else the base.
    pub fn settled_model_id(&self) -> &str {
        self.adapter.as_ref().map_or(&self.base_model_id, |(id, _)| id)
    }
}

/// Checks `event` as it arrived under the envelope's `producer` and `aggregate_id`.
pub fn check(event: &InferenceServed, producer: &str, aggregate_id: &str, limits: CountLimits) -> Result<CheckedInference, Refusal> {
    if event.producer != producer {
        return Err(Refusal::new(
            "inference.producer_mismatch",
            format!("the event names producer {:?} but was published by {producer:?}", event.producer),
        ));
    }
    if event.request_id.is_empty() || event.request_id != aggregate_id {
        return Err(Refusal::new("inference.request_id_mismatch", "the request id must be the event's aggregate id"));
    }
    let caller_id = event.caller.as_ref().map(|caller| caller.id.clone()).filter(|id| !id.is_empty());
    let caller_id = caller_id.ok_or_else(|| Refusal::new("inference.caller_missing", "the event names no caller"))?;
    if event.model_id.is_empty() {
        return Err(Refusal::new("inference.model_missing", "the event names no model"));
    }
    for (name, digest) in [
        ("base_weights_sha256", &event.base_weights_sha256),
        ("prompt_sha256", &event.prompt_sha256),
        ("output_sha256", &event.output_sha256),
    ] {
        check_digest(name, digest)?;
    }
    let adapter = match (event.adapter_model_id.is_empty(), event.adapter_weights_sha256.is_empty()) {
        (true, true) => None,
        (false, false) => {
            check_digest("adapter_weights_sha256", &event.adapter_weights_sha256)?;
            Some((event.adapter_model_id.clone(), event.adapter_weights_sha256.clone()))
        }
        _ => return Err(Refusal::new("inference.adapter_incomplete", "an adapter needs both its model id and its weights digest")),
    };
    if event.prompt_tokens == 0 || event.prompt_tokens > limits.max_prompt_tokens || event.output_tokens > limits.max_output_tokens {
        return Err(Refusal::new(
            "inference.token_counts_invalid",
            format!(
                "{} prompt and {} output tokens: a request has 1 to {} prompt tokens and at most {} output tokens",
                event.prompt_tokens, event.output_tokens, limits.max_prompt_tokens, limits.max_output_tokens
            ),
        ));
    }
    let fee = event.fee.as_ref().ok_or_else(|| Refusal::new("inference.fee_missing", "the event carries no fee"))?;
    let fee = Amount::from_proto(fee).map_err(|error| Refusal::new("inference.fee_invalid", error.to_string()))?;
    if fee.minor_units < 0 {
        return Err(Refusal::new("inference.fee_negative", format!("a fee cannot be negative ({fee})")));
    }
    let receipt = event.receipt.as_ref().map(check_receipt).transpose()?;
    // The receipt must have been computed with the weights that answered: a receipt of another
    // model (or of the base alone, for an adapter's answer) would pay its contributors instead.
    if let Some(receipt) = &event.receipt
        && (receipt.model_weights_sha256 != event.base_weights_sha256 || receipt.adapter_weights_sha256 != event.adapter_weights_sha256)
    {
        return Err(Refusal::new(
            "inference.receipt_weights_mismatch",
            "the receipt names other weights than the ones that answered (model_weights_sha256, adapter_weights_sha256)",
        ));
    }
    Ok(CheckedInference {
        request_id: event.request_id.clone(),
        caller_id,
        base_model_id: event.model_id.clone(),
        base_weights_sha256: event.base_weights_sha256.clone(),
        adapter,
        prompt_tokens: event.prompt_tokens,
        output_tokens: event.output_tokens,
        fee,
        receipt,
    })
}

fn check_digest(name: &str, digest: &str) -> Result<(), Refusal> {
    let well_formed = digest.len() == 64 && digest.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if well_formed { Ok(()) } else { Err(Refusal::new("inference.digest_invalid", format!("{name} must be 64 lowercase hex digits"))) }
}

/// The receipt's shares, checked: named contributors, each once per Datanet, summing with the
/// base pool to one whole. (Whether the Datanets are the model's is the settler's check: it
/// needs the catalogue.)
pub fn check_receipt(receipt: &AttributionReceipt) -> Result<CheckedReceipt, Refusal> {
    let invalid = |message: String| Refusal::new("inference.receipt_invalid", message);
    let mut shares: Vec<ReceiptShare> = receipt
        .shares
        .iter()
        .map(|share| ReceiptShare {
            contributor_id: share.contributor_id.clone(),
            datanet_id: share.datanet_id.clone(),
            share_ppb: share.share_ppb,
        })
        .collect();
    shares.sort();
    if shares.iter().any(|share| share.contributor_id.is_empty()) {
        return Err(invalid("a share names no contributor".into()));
    }
    if shares.windows(2).any(|pair| (&pair[0].contributor_id, &pair[0].datanet_id) == (&pair[1].contributor_id, &pair[1].datanet_id)) {
        return Err(invalid("a contributor appears twice among the shares for the same Datanet".into()));
    }
    let total: u128 = shares.iter().map(|share| u128::from(share.share_ppb)).sum::<u128>() + u128::from(receipt.base_pool_ppb);
    if total != u128::from(WHOLE_PPB) {
        return Err(invalid(format!("shares and base pool add up to {total} parts per billion, not 1,000,000,000")));
    }
    if receipt.noise_floor_ppb > WHOLE_PPB {
        return Err(invalid("the noise floor exceeds the whole".into()));
    }
    Ok(CheckedReceipt {
        shares,
        base_pool_ppb: receipt.base_pool_ppb,
        noise_floor_ppb: receipt.noise_floor_ppb,
        index_sha256: receipt.index_sha256.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use provenant_events::proto::common::v1::{Money, Principal};
    use provenant_events::proto::inference::v1::ContributorShare;

    const LIMITS: CountLimits = CountLimits { max_prompt_tokens: 1_000, max_output_tokens: 100 };

    fn event() -> InferenceServed {
        InferenceServed {
            request_id: "req-1".into(),
            producer: "gateway".into(),
            caller: Some(Principal { id: "app".into(), kind: 0 }),
            model_id: "model-1".into(),
            base_weights_sha256: "a".repeat(64),
            prompt_sha256: "b".repeat(64),
            output_sha256: "c".repeat(64),
            prompt_tokens: 10,
            output_tokens: 20,
            fee: Some(Money { currency: "EUR".into(), exponent: 2, minor_units: "125".into() }),
            ..Default::default()
        }
    }

    fn refusal(event: &InferenceServed) -> &'static str {
        check(event, "gateway", "req-1", LIMITS).expect_err("refused").code
    }

    /// A receipt whose shares add up, computed with `event()`'s weights.
    fn whole_receipt() -> AttributionReceipt {
        AttributionReceipt {
            model_weights_sha256: "a".repeat(64),
            shares: vec![
                ContributorShare { contributor_id: "ann".into(), share_ppb: 600_000_000, datanet_id: "de".into() },
                ContributorShare { contributor_id: "ann".into(), share_ppb: 100_000_000, datanet_id: "it".into() },
            ],
            base_pool_ppb: 300_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_well_formed_event_passes() {
        let checked = check(&event(), "gateway", "req-1", LIMITS).expect("valid");
        assert_eq!(checked.fee.minor_units, 125);
        assert_eq!(checked.settled_model_id(), "model-1");
        let attributed = InferenceServed { receipt: Some(whole_receipt()), ..event() };
        let checked = check(&attributed, "gateway", "req-1", LIMITS).expect("valid with its receipt");
        let share = |datanet_id: &str, share_ppb| ReceiptShare { contributor_id: "ann".into(), datanet_id: datanet_id.into(), share_ppb };
        assert_eq!(checked.receipt.expect("receipt").shares, vec![share("de", 600_000_000), share("it", 100_000_000)]);
    }

    #[test]
    fn each_defect_has_its_code() {
        assert_eq!(check(&event(), "someone-else", "req-1", LIMITS).expect_err("refused").code, "inference.producer_mismatch");
        assert_eq!(check(&event(), "gateway", "req-2", LIMITS).expect_err("refused").code, "inference.request_id_mismatch");
        type Defect = Box<dyn Fn(&mut InferenceServed)>;
        let cases: Vec<(&str, Defect)> = vec![
            ("inference.caller_missing", Box::new(|event| event.caller = None)),
            ("inference.model_missing", Box::new(|event| event.model_id.clear())),
            ("inference.digest_invalid", Box::new(|event| event.output_sha256 = "XYZ".into())),
            ("inference.adapter_incomplete", Box::new(|event| event.adapter_model_id = "adapter".into())),
            ("inference.token_counts_invalid", Box::new(|event| event.prompt_tokens = 0)),
            ("inference.token_counts_invalid", Box::new(|event| event.output_tokens = 101)),
            ("inference.fee_missing", Box::new(|event| event.fee = None)),
            ("inference.fee_invalid", Box::new(|event| event.fee.as_mut().expect("fee").minor_units = "01".into())),
            ("inference.fee_negative", Box::new(|event| event.fee.as_mut().expect("fee").minor_units = "-1".into())),
            (
                "inference.receipt_invalid",
                Box::new(|event| {
                    event.receipt = Some(AttributionReceipt {
                        shares: vec![ContributorShare { contributor_id: "ann".into(), share_ppb: 600_000_000, ..Default::default() }],
                        base_pool_ppb: 300_000_000,
                        ..Default::default()
                    })
                }),
            ),
            (
                "inference.receipt_invalid",
                Box::new(|event| {
                    let mut receipt = whole_receipt();
                    receipt.shares[1].datanet_id = "de".into();
                    event.receipt = Some(receipt);
                }),
            ),
            (
                "inference.receipt_weights_mismatch",
                Box::new(|event| {
                    event.receipt = Some(AttributionReceipt { model_weights_sha256: "d".repeat(64), ..whole_receipt() });
                }),
            ),
            (
                "inference.receipt_weights_mismatch",
                Box::new(|event| {
                    event.receipt = Some(AttributionReceipt { adapter_weights_sha256: "e".repeat(64), ..whole_receipt() });
                }),
            ),
        ];
        for (code, defect) in cases {
            let mut broken = event();
            defect(&mut broken);
            assert_eq!(refusal(&broken), code);
        }
    }
}
