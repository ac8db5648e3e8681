//! Judges one submitted contribution and appends `ContributionAccepted` or
//! `ContributionRejected` to its subject.
//!
//! Exactly one verdict per contribution, even across crashes: the verdict's event id is derived
//! from the submission's, and it is appended only if the submission is still the contribution's
//! last event. A retry after a crash (verdict published, transaction lost) recomputes the same
//! verdict from the same state and finds it already appended.

use anyhow::anyhow;
use provenant_bus::{Delivery, Envelope, Error as BusError, Expect, HandleError};
use provenant_events::proto::common::v1::Principal;
use provenant_events::proto::datanet::v1::{ContributionAccepted, ContributionRejected, ContributionSubmitted, RejectionReason};
use sea_orm::DatabaseTransaction;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ContributionValidator, known_accepted};
use crate::configuration::ValidationConfig;
use crate::domain::near_duplicates::Signature;
use crate::domain::quality::Limits;
use crate::domain::verdict::{ContentAssessment, Reason, Rules, assess_content, compile_schema};
use crate::projections::{accepted, held, policies};
use crate::sealing::{self, SealError};

enum Verdict {
    Accepted { cluster_id: String, founder: bool, score_ppm: u32, flags: Vec<String> },
    Rejected(Vec<Reason>),
}

pub async fn handle(
    validator: &ContributionValidator,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: ContributionSubmitted,
) -> Result<(), HandleError> {
    let contributor = event.contributor.as_ref().map(|principal| principal.id.clone()).unwrap_or_default();
    if contributor.is_empty() {
        return Err(HandleError::rejected("contribution.contributor_missing", "submission without a contributor"));
    }
    let Some(policy) = validator.policy(transaction, &event.datanet_id).await? else {
        // The Datanet's own events travel through another consumer and may not be applied yet.
        return Err(HandleError::Transient(anyhow!("rules of Datanet {} not known yet", event.datanet_id)));
    };
    if policy.needs_owner_approval() {
        // Judged when the owner approves (`on_contribution_approved`); rejected by the owner otherwise.
        held::hold(transaction, &event.contribution_id, &event.datanet_id, delivery.envelope.schema_version, &delivery.payload).await?;
        return Ok(());
    }
    judge(validator, transaction, delivery, event, contributor, &policy).await
}

/// Judges a submission and appends the verdict after `delivery` (the submission itself, or the
/// owner's approval).
pub async fn judge(
    validator: &ContributionValidator,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: ContributionSubmitted,
    contributor: String,
    policy: &policies::Model,
) -> Result<(), HandleError> {
    let blob = event.blob.as_ref().ok_or_else(|| HandleError::rejected("contribution.blob_missing", "no content reference"))?;
    let assessed = match validator.assessed.with(|assessed| assessed.remove(&delivery.stream_sequence)) {
        Some(assessed) => Some(assessed),
        None => match validator.content(&blob.sha256).await.map_err(|error| HandleError::Transient(error.into()))? {
            Some(bytes) => Some(assess(&validator.settings, policy, &bytes)?),
            None => None,
        },
    };
    let verdict = match assessed {
        None => Verdict::Rejected(vec![Reason::new("content.missing", "the content is not in the object store", None)]),
        Some(assessed) if assessed.is_acceptable() => {
            cluster(validator, transaction, &event, &contributor, &blob.sha256, assessed, delivery.stream_sequence).await?
        }
        Some(Assessed { assessment, .. }) => Verdict::Rejected(assessment.reasons),
    };
    let accepted = matches!(verdict, Verdict::Accepted { .. });
    append_verdict(validator, delivery, &event, contributor, verdict).await?;
    if accepted && policy.seal_every_accepted > 0 {
        // A snapshot may only name contributions whose verdicts are in the log, and counts
        // what the batch accepted so far.
        delivery.confirm_deferred().await?;
        validator.write_accepted(transaction).await?;
        let every = u64::try_from(policy.seal_every_accepted).unwrap_or(0);
        sealing::seal_by_policy(&validator.bus, &validator.manifests, transaction, &event.datanet_id, every).await.map_err(|error| {
            match error {
                SealError::Database(error) => HandleError::from(error),
                other => HandleError::Transient(other.into()),
            }
        })?;
    }
    Ok(())
}

/// A submission's content as judged against its Datanet's rules, and the MinHash signature of
/// acceptable content (`None` also for content without words).
#[derive(Debug)]
pub(crate) struct Assessed {
    assessment: ContentAssessment,
    signature: Option<Signature>,
}

impl Assessed {
    pub(crate) fn is_acceptable(&self) -> bool {
        self.assessment.reasons.is_empty()
    }

    pub(crate) fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }
}

/// Judges `content` by `policy`'s rules: CPU only, so `prepare` does it for a whole batch.
pub(crate) fn assess(settings: &ValidationConfig, policy: &policies::Model, content: &[u8]) -> Result<Assessed, HandleError> {
    let limits = Limits { min_chars: settings.min_chars, max_bytes: settings.max_record_bytes };
    let schema = match policy.json_schema.as_deref().map(compile_schema).transpose() {
        Ok(schema) => schema,
        // Ingest refuses such schemas; one from another producer makes every record unjudgeable.
        Err(error) => return Err(HandleError::rejected("datanet.json_schema_invalid", error)),
    };
    let rules = Rules { format: policy.record_format(), personal_data: policy.personal_data_action(), limits, schema: schema.as_ref() };
    let assessment = assess_content(content, rules);
    let signature = if assessment.reasons.is_empty() { Signature::of(&assessment.text) } else { None };
    Ok(Assessed { assessment, signature })
}

/// Finds the duplicate cluster the contribution joins (the earliest submitter's), or founds one,
/// and records the accepted contribution. A contributor repeating their own text gains nothing.
async fn cluster(
    validator: &ContributionValidator,
    transaction: &DatabaseTransaction,
    event: &ContributionSubmitted,
    contributor: &str,
    content_sha256: &str,
    assessed: Assessed,
    accepted_sequence: u64,
) -> Result<Verdict, HandleError> {
    let Assessed { assessment: ContentAssessment { score_ppm, flags, .. }, signature } = assessed;
    let known = &validator.known;
    let earlier = match known_accepted::earliest_with_content(known, transaction, &event.datanet_id, content_sha256).await? {
        Some(exact) => Some(exact),
        None => match &signature {
            Some(signature) => {
                let keys: Vec<u64> = signature.band_keys().collect();
                let mut best: Option<(accepted::Model, f64)> = None;
                // Candidates come oldest first; only a strictly better match displaces one.
                for (candidate, candidate_signature) in
                    known_accepted::near_duplicate_candidates(known, transaction, &event.datanet_id, &keys).await?
                {
                    let similarity = signature.similarity(&candidate_signature);
                    if similarity >= validator.settings.near_duplicate_threshold && best.as_ref().is_none_or(|(_, best)| similarity > *best)
                    {
                        best = Some((candidate, similarity));
                    }
                }
                best.map(|(candidate, _)| candidate)
            }
            None => None,
        },
    };
    if let Some(earlier) = &earlier
        && earlier.contributor_id == contributor
    {
        return Ok(Verdict::Rejected(vec![Reason::new(
            "duplicate.already_contributed",
            format!("you contributed this before ({})", earlier.contribution_id),
            None,
        )]));
    }
    let (cluster_id, founder) = match earlier {
        Some(earlier) => (earlier.cluster_id, false),
        None => (event.contribution_id.clone(), true),
    };
    let row = accepted::Model {
        contribution_id: event.contribution_id.clone(),
        datanet_id: event.datanet_id.clone(),
        contributor_id: contributor.to_owned(),
        content_sha256: content_sha256.to_owned(),
        cluster_id: cluster_id.clone(),
        signature: None,
        accepted_sequence: i64::try_from(accepted_sequence).unwrap_or(i64::MAX),
    };
    // Written with the rest of the batch (`ContributionValidator::flush`).
    known.with(|known| known.accept(accepted::with_signature(row, signature.as_ref())));
    Ok(Verdict::Accepted { cluster_id, founder, score_ppm, flags })
}

/// The verdict's event id: a function of the submission's, so a retried verdict is the same event.
fn verdict_event_id(submission: &Envelope) -> Uuid {
    let digest = Sha256::digest(format!("validate-verdict:{}", submission.event_id));
    let bytes: [u8; 16] = digest[..16].try_into().expect("a SHA-256 has 32 bytes");
    Uuid::new_v8(bytes)
}

async fn append_verdict(
    validator: &ContributionValidator,
    delivery: &Delivery,
    event: &ContributionSubmitted,
    contributor: String,
    verdict: Verdict,
) -> Result<(), HandleError> {
    let contributor = Some(Principal { id: contributor, kind: provenant_events::proto::common::v1::PrincipalKind::Contributor.into() });
    let expect = Expect::LastSequence(delivery.stream_sequence);
    let event_id = verdict_event_id(&delivery.envelope);
    let outcome = match verdict {
        Verdict::Accepted { cluster_id, founder, score_ppm, flags } => {
            let accepted = ContributionAccepted {
                contribution_id: event.contribution_id.clone(),
                datanet_id: event.datanet_id.clone(),
                contributor,
                content_sha256: event.blob.as_ref().map(|blob| blob.sha256.clone()).unwrap_or_default(),
                quality_score_ppm: score_ppm,
                duplicate_cluster_id: cluster_id,
                cluster_founder: founder,
                flags,
                record_count: event.record_count,
            };
            let mut envelope = Envelope::new(&accepted, validator.bus.producer()).caused_by(&delivery.envelope);
            envelope.event_id = event_id;
            validator.bus.send(&envelope, &accepted, expect).await
        }
        Verdict::Rejected(reasons) => {
            let rejected = ContributionRejected {
                contribution_id: event.contribution_id.clone(),
                datanet_id: event.datanet_id.clone(),
                contributor,
                reasons: reasons
                    .into_iter()
                    .map(|reason| RejectionReason { code: reason.code, message: reason.message, record_index: reason.record_index })
                    .collect(),
            };
            let mut envelope = Envelope::new(&rejected, validator.bus.producer()).caused_by(&delivery.envelope);
            envelope.event_id = event_id;
            validator.bus.send(&envelope, &rejected, expect).await
        }
    };
    let pending = match outcome {
        Ok(pending) => pending,
        Err(error @ BusError::Event(_)) => return Err(HandleError::rejected("contribution.invalid_id", error)),
        Err(error) => return Err(HandleError::Transient(error.into())),
    };
    // Confirmed with the batch (see `provenant_bus::Outbox`); an earlier attempt whose
    // transaction did not commit may have appended this very verdict, which is fine.
    let conflict = format!("contribution {} has a later event", event.contribution_id);
    delivery.confirm_append_before_commit(&validator.bus, pending, "contribution.already_decided", conflict);
    Ok(())
}
