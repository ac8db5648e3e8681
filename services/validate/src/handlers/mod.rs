//! Event handlers, one file per consumed event, behind three durable consumers:
//! [`PolicyProjector`] keeps each Datanet's rules, [`ContributionValidator`] judges each
//! submitted contribution and appends its verdict, [`SnapshotProjector`] records sealed
//! snapshots for inclusion proofs.

mod known_accepted;
mod on_contribution_approved;
mod on_contribution_submitted;
mod on_datanet_changed;
mod on_snapshot_sealed;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt as _;
use provenant_bus::{BlobStore, Bus, Context, Deferred, Delivery, HandleError, Handler, Namespace, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::common::v1::BlobRef;
use provenant_events::proto::datanet::v1::{ContributionApproved, ContributionSubmitted, DatanetCreated, DatanetUpdated, SnapshotSealed};
use sea_orm::{DatabaseTransaction, DbErr};

use self::known_accepted::KnownAccepted;
use crate::configuration::ValidationConfig;
use crate::domain::near_duplicates::Signature;
use crate::projections::{accepted, policies};

/// Durable consumer of Datanet events into `projections::policies`.
#[derive(Debug, Clone, Default)]
pub struct PolicyProjector {
    upcasters: Upcasters,
}

impl PolicyProjector {
    pub const NAME: &'static str = "validate-policies";
}

impl Handler for PolicyProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        PolicyProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "datanet")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.envelope.event_type.as_str() {
            DatanetCreated::TYPE => {
                let event: DatanetCreated = delivery.decode(&self.upcasters)?;
                let owner = event.owner.map(|owner| owner.id).unwrap_or_default();
                on_datanet_changed::handle(transaction, &event.datanet_id, Some(owner), event.spec).await
            }
            DatanetUpdated::TYPE => {
                let event: DatanetUpdated = delivery.decode(&self.upcasters)?;
                on_datanet_changed::handle(transaction, &event.datanet_id, None, event.spec).await
            }
            _ => Ok(()),
        }
    }
}

/// Durable consumer of submitted contributions: judges each and appends its verdict. What a
/// batch's submissions read (their Datanets' rules, their contents, the stored contributions
/// they could duplicate) is read for the whole batch in `prepare`, and what they accept is
/// written at its end, so that a submission costs no statement of its own.
#[derive(Clone)]
pub struct ContributionValidator {
    pub(crate) bus: Bus,
    pub(crate) blobs: BlobStore,
    /// Snapshot manifests, for sealing by policy.
    pub(crate) manifests: BlobStore,
    pub(crate) settings: ValidationConfig,
    pub(crate) upcasters: Upcasters,
    /// The contents of the batch's submissions, fetched together (`prepare`) by SHA-256: `None`
    /// when the object store has no such blob.
    fetched: Deferred<HashMap<String, Option<Bytes>>>,
    /// The rules of the Datanets the batch names (`None`: not known yet).
    policies: Deferred<HashMap<String, Option<policies::Model>>>,
    /// Submissions judged in `prepare`, by stream sequence.
    pub(crate) assessed: Deferred<HashMap<u64, on_contribution_submitted::Assessed>>,
    /// The stored contributions the batch's submissions could duplicate, and those it accepted.
    pub(crate) known: Deferred<KnownAccepted>,
}

/// How many of a batch's blobs are fetched at once, and how many bytes of them are held at
/// most (a batch of 5 MiB files is fetched one by one past that).
const CONCURRENT_FETCHES: usize = 16;
const PREFETCH_BYTES: u64 = 16 << 20;

impl ContributionValidator {
    pub const NAME: &'static str = "validate-contributions";

    pub fn new(bus: Bus, blobs: BlobStore, manifests: BlobStore, settings: ValidationConfig) -> ContributionValidator {
        ContributionValidator {
            bus,
            blobs,
            manifests,
            settings,
            upcasters: Upcasters::contract(),
            fetched: Deferred::default(),
            policies: Deferred::default(),
            assessed: Deferred::default(),
            known: Deferred::default(),
        }
    }

    /// Datanet `id`'s rules, read once per batch.
    pub(crate) async fn policy(&self, transaction: &DatabaseTransaction, id: &str) -> Result<Option<policies::Model>, DbErr> {
        self.policies.get_or_load(&id.to_owned(), || policies::find(transaction, id)).await
    }

    /// Writes what the batch has accepted so far.
    pub(crate) async fn write_accepted(&self, transaction: &DatabaseTransaction) -> Result<(), DbErr> {
        let rows = self.known.with(KnownAccepted::take_unwritten);
        accepted::insert_all(transaction, &rows).await
    }

    /// Fetches these contents together into `fetched`, up to `PREFETCH_BYTES`. A fetch that
    /// fails is retried alone when its submission is judged.
    async fn fetch_contents(&self, blobs: impl Iterator<Item = BlobRef>) {
        let mut wanted: HashSet<String> = HashSet::new();
        let mut budget = PREFETCH_BYTES;
        for blob in blobs {
            if blob.size_bytes > budget {
                break;
            }
            if wanted.insert(blob.sha256) {
                budget -= blob.size_bytes;
            }
        }
        let fetched: Vec<(String, Option<Bytes>)> = futures::stream::iter(wanted)
            .map(|sha256| async move {
                let content = self.blobs.get(&sha256).await;
                content.ok().map(|content| (sha256, content))
            })
            .buffer_unordered(CONCURRENT_FETCHES)
            .filter_map(std::future::ready)
            .collect()
            .await;
        self.fetched.with(|batch| batch.extend(fetched));
    }

    /// The content stored under `sha256`: fetched with the batch, else now.
    pub(crate) async fn content(&self, sha256: &str) -> Result<Option<Bytes>, provenant_bus::Error> {
        match self.fetched.with(|fetched| fetched.remove(sha256)) {
            Some(content) => Ok(content),
            None => self.blobs.get(sha256).await,
        }
    }
}

impl Handler for ContributionValidator {
    fn name(&self) -> &str {
        ContributionValidator::NAME
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "contribution")]
    }

    /// Verdicts share the contribution's subject: half of what the validator reads is its own
    /// appends, which need no judging and no processed-event row.
    fn handles(&self, event_type: &str) -> bool {
        matches!(event_type, ContributionSubmitted::TYPE | ContributionApproved::TYPE)
    }

    /// Reads what the batch's submissions need, once for all of them: their Datanets' rules,
    /// their contents (fetched together: one round trip's wait for many), and the stored
    /// contributions they could duplicate, after judging their contents. What fails or is
    /// missing here is read again when its submission is judged.
    async fn prepare(&self, transaction: &DatabaseTransaction, deliveries: &[&Delivery]) -> Result<(), HandleError> {
        let submissions: Vec<(u64, ContributionSubmitted)> = deliveries
            .iter()
            .filter(|delivery| delivery.envelope.event_type == ContributionSubmitted::TYPE)
            .filter_map(|delivery| Some((delivery.stream_sequence, delivery.decode::<ContributionSubmitted>(&self.upcasters).ok()?)))
            .collect();
        let mut datanet_ids: Vec<String> = submissions.iter().map(|(_, submission)| submission.datanet_id.clone()).collect();
        datanet_ids.sort();
        datanet_ids.dedup();
        let stored = policies::find_all(transaction, &datanet_ids).await?;
        self.policies.with(|policies| {
            policies.extend(datanet_ids.iter().map(|id| (id.clone(), None)));
            policies.extend(stored.into_iter().map(|policy| (policy.datanet_id.clone(), Some(policy))));
        });
        // Judged now: submissions to Datanets whose rules are known and ask for no approval;
        // the others' contents are not needed in this batch.
        let judged_now: Vec<(u64, ContributionSubmitted, policies::Model)> = submissions
            .into_iter()
            .filter_map(|(sequence, submission)| {
                let policy = self.policies.with(|policies| policies.get(&submission.datanet_id).cloned().flatten())?;
                (!policy.needs_owner_approval()).then_some((sequence, submission, policy))
            })
            .collect();
        self.fetch_contents(judged_now.iter().filter_map(|(_, submission, _)| submission.blob.clone())).await;

        let (mut contents, mut bands) = (Vec::new(), Vec::new());
        for (sequence, submission, policy) in judged_now {
            let Some(blob) = &submission.blob else { continue };
            let Some(content) = self.fetched.with(|fetched| fetched.get(&blob.sha256).cloned().flatten()) else { continue };
            let Ok(assessed) = on_contribution_submitted::assess(&self.settings, &policy, &content) else { continue };
            if assessed.is_acceptable() {
                let signature_keys = assessed.signature().into_iter().flat_map(Signature::band_keys);
                bands.extend(signature_keys.map(|key| (submission.datanet_id.clone(), key)));
                contents.push((submission.datanet_id, blob.sha256.clone()));
            }
            self.assessed.with(|batch| batch.insert(sequence, assessed));
        }
        let hashes: Vec<String> = contents.iter().map(|(_, sha256)| sha256.clone()).collect();
        let keys: Vec<u64> = bands.iter().map(|(_, key)| *key).collect::<HashSet<_>>().into_iter().collect();
        let mut stored = accepted::with_contents(transaction, &datanet_ids, &hashes).await?;
        stored.extend(accepted::sharing_bands(transaction, &datanet_ids, &keys).await?);
        self.known.with(|known| known.read(contents, bands, stored));
        Ok(())
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.envelope.event_type.as_str() {
            ContributionSubmitted::TYPE => {
                on_contribution_submitted::handle(self, transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            ContributionApproved::TYPE => {
                on_contribution_approved::handle(self, transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            // Not reached: `handles` keeps the verdicts that share the subject away.
            _ => Ok(()),
        }
    }

    async fn flush(&self, transaction: &DatabaseTransaction) -> Result<(), HandleError> {
        Ok(self.write_accepted(transaction).await?)
    }

    fn discard(&self) {
        self.fetched.reset();
        self.policies.reset();
        self.assessed.reset();
        self.known.reset();
    }
}

/// Durable consumer of `SnapshotSealed` into `projections::snapshots`.
#[derive(Clone)]
pub struct SnapshotProjector {
    blobs: BlobStore,
    upcasters: Upcasters,
}

impl SnapshotProjector {
    pub const NAME: &'static str = "validate-snapshots";

    pub fn new(blobs: BlobStore) -> SnapshotProjector {
        SnapshotProjector { blobs, upcasters: Upcasters::contract() }
    }
}

impl Handler for SnapshotProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        SnapshotProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "snapshot")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.envelope.event_type.as_str() {
            SnapshotSealed::TYPE => on_snapshot_sealed::handle(&self.blobs, transaction, delivery, delivery.decode(&self.upcasters)?).await,
            _ => Ok(()),
        }
    }
}
