//! Event handlers, one file per consumed event, behind three durable consumers:
//! [`PolicyProjector`] keeps each Datanet's rules, [`ContributionValidator`] judges each
//! submitted contribution and appends its verdict, [`SnapshotProjector`] records sealed
//! snapshots for inclusion proofs.

mod on_contribution_approved;
mod on_contribution_submitted;
mod on_datanet_changed;
mod on_snapshot_sealed;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt as _;
use provenant_bus::{BlobStore, Bus, Context, Deferred, Delivery, HandleError, Handler, Namespace, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{ContributionApproved, ContributionSubmitted, DatanetCreated, DatanetUpdated, SnapshotSealed};
use sea_orm::DatabaseTransaction;

use crate::configuration::ValidationConfig;

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

/// Durable consumer of submitted contributions: judges each and appends its verdict.
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
}

/// How many of a batch's blobs are fetched at once, and how many bytes of them are held at
/// most (a batch of 5 MiB files is fetched one by one past that).
const CONCURRENT_FETCHES: usize = 16;
const PREFETCH_BYTES: u64 = 16 << 20;

impl ContributionValidator {
    pub const NAME: &'static str = "validate-contributions";

    pub fn new(bus: Bus, blobs: BlobStore, manifests: BlobStore, settings: ValidationConfig) -> ContributionValidator {
        ContributionValidator { bus, blobs, manifests, settings, upcasters: Upcasters::contract(), fetched: Deferred::default() }
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

    /// Fetches the batch's contents together: one round trip's wait for many instead of two
    /// round trips per submission, one after another. A fetch that fails is retried alone when
    /// its submission is judged.
    async fn prepare(&self, _transaction: &DatabaseTransaction, deliveries: &[&Delivery]) -> Result<(), HandleError> {
        let mut wanted: HashSet<String> = HashSet::new();
        let mut budget = PREFETCH_BYTES;
        let blobs = deliveries
            .iter()
            .filter(|delivery| delivery.envelope.event_type == ContributionSubmitted::TYPE)
            .filter_map(|delivery| delivery.decode::<ContributionSubmitted>(&self.upcasters).ok()?.blob);
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
            // Verdicts share the subject; they need no judging.
            _ => Ok(()),
        }
    }

    fn discard(&self) {
        self.fetched.reset();
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
