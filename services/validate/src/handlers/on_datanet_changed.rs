use provenant_bus::HandleError;
use provenant_events::proto::datanet::v1::{ContributionPolicy, DatanetSpec, PersonalDataAction, RecordFormat};
use sea_orm::DatabaseTransaction;

use crate::projections::policies;

pub async fn handle(
    transaction: &DatabaseTransaction,
    datanet_id: &str,
    owner: Option<String>,
    spec: Option<DatanetSpec>,
) -> Result<(), HandleError> {
    let spec = spec.ok_or_else(|| HandleError::rejected("datanet.spec_missing", "Datanet event without a spec"))?;
    let record_format = match spec.record_format() {
        RecordFormat::JsonLines => "json_lines",
        RecordFormat::PlainText => "plain_text",
        RecordFormat::Unspecified => return Err(HandleError::rejected("datanet.record_format_missing", "record format unspecified")),
    };
    let contribution_policy = match spec.contribution_policy() {
        ContributionPolicy::OwnerApproval => "owner_approval",
        _ => "open",
    };
    let personal_data_action = match spec.personal_data_action() {
        PersonalDataAction::AcceptWithFlag => "accept_with_flag",
        _ => "reject",
    };
    let owner_id = match owner {
        Some(owner) => owner,
        None => policies::find(transaction, datanet_id).await?.map(|policy| policy.owner_id).unwrap_or_default(),
    };
    let row = policies::Model {
        datanet_id: datanet_id.to_owned(),
        owner_id,
        record_format: record_format.to_owned(),
        contribution_policy: contribution_policy.to_owned(),
        personal_data_action: personal_data_action.to_owned(),
        json_schema: Some(spec.json_schema).filter(|schema| !schema.is_empty()),
        seal_every_accepted: i64::from(spec.seal_every_accepted),
    };
    policies::upsert(transaction, row).await?;
    Ok(())
}
