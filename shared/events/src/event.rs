use crate::proto::{datanet, identity, inference, lineage, settlement, training};

/// A bounded context: one stream per context, one protobuf package per context and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    Datanet,
    Training,
    Inference,
    Settlement,
    Lineage,
    Identity,
}

impl Context {
    pub const ALL: [Context; 6] =
        [Context::Datanet, Context::Training, Context::Inference, Context::Settlement, Context::Lineage, Context::Identity];

    pub fn as_str(self) -> &'static str {
        match self {
            Context::Datanet => "datanet",
            Context::Training => "training",
            Context::Inference => "inference",
            Context::Settlement => "settlement",
            Context::Lineage => "lineage",
            Context::Identity => "identity",
        }
    }

    /// Money and provenance streams keep every event forever and sync every write.
    pub fn holds_money(self) -> bool {
        matches!(self, Context::Settlement | Context::Inference)
    }
}

/// A domain event of the v1 contract: a protobuf message that knows its name, version,
/// context and the aggregate it belongs to.
pub trait Event: prost::Message + Default + Sized {
    const CONTEXT: Context;
    /// Aggregate kind, the third subject token (`pv.<context>.<aggregate>.<id>`).
    const AGGREGATE: &'static str;
    /// Stable type name carried in the `Pv-Event-Type` header: `<context>.<MessageName>`.
    const TYPE: &'static str;
    /// Schema version carried in `Pv-Schema-Version`; bumped only with a new package and an upcaster.
    const VERSION: u32;

    /// The id of the aggregate instance this event is appended to.
    fn aggregate_id(&self) -> &str;
}

macro_rules! events {
    ($($context:ident / $aggregate:literal : $module:ident :: $name:ident => $id:ident;)*) => {
        $(
            impl Event for $module::v1::$name {
                const CONTEXT: Context = Context::$context;
                const AGGREGATE: &'static str = $aggregate;
                const TYPE: &'static str = concat!(stringify!($module), ".", stringify!($name));
                const VERSION: u32 = 1;

                fn aggregate_id(&self) -> &str {
                    &self.$id
                }
            }
        )*
    };
}

events! {
    Datanet / "datanet": datanet::DatanetCreated => datanet_id;
    Datanet / "datanet": datanet::DatanetUpdated => datanet_id;
    Datanet / "contribution": datanet::ContributionSubmitted => contribution_id;
    Datanet / "contribution": datanet::ContributionAccepted => contribution_id;
    Datanet / "contribution": datanet::ContributionRejected => contribution_id;
    Datanet / "contribution": datanet::ContributionApproved => contribution_id;
    Datanet / "snapshot": datanet::SnapshotSealed => snapshot_id;
    Training / "job": training::TrainingJobRequested => job_id;
    Training / "job": training::TrainingJobStarted => job_id;
    Training / "job": training::TrainingJobProgressed => job_id;
    Training / "job": training::TrainingJobCheckpointed => job_id;
    Training / "job": training::TrainingJobCompleted => job_id;
    Training / "job": training::TrainingJobFailed => job_id;
    Training / "job": training::TrainingJobCancelled => job_id;
    Training / "model": training::ModelRegistered => model_id;
    Training / "index": training::AttributionIndexBuilt => index_id;
    Inference / "request": inference::InferenceServed => request_id;
    Inference / "request": inference::InferenceAttributed => request_id;
    Inference / "pricing": inference::PricingPolicySet => model_id;
    Settlement / "policy": settlement::RevenuePolicySet => model_id;
    Settlement / "settlement": settlement::InferenceSettled => settlement_id;
    Settlement / "settlement": settlement::SettlementReversed => settlement_id;
    Settlement / "settlement": settlement::SettlementAttributed => settlement_id;
    Settlement / "period": settlement::SettlementPeriodClosed => period_id;
    Settlement / "report": settlement::SettlementReportIssued => report_id;
    Lineage / "checkpoint": lineage::CheckpointSealed => checkpoint_id;
    Identity / "api_key": identity::ApiKeyIssued => key_id;
    Identity / "api_key": identity::ApiKeyRevoked => key_id;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_name_their_context_and_message() {
        assert_eq!(datanet::v1::DatanetCreated::TYPE, "datanet.DatanetCreated");
        assert_eq!(settlement::v1::InferenceSettled::TYPE, "settlement.InferenceSettled");
        assert_eq!(inference::v1::InferenceServed::CONTEXT, Context::Inference);
    }
}
