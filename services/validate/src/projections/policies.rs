//! `DatanetPolicyProjection`: the rules of each Datanet, as its latest event states them.

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;

use crate::domain::verdict::{PersonalDataAction, RecordFormat};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "datanet_policies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub datanet_id: String,
    pub owner_id: String,
    pub record_format: String,
    pub contribution_policy: String,
    pub personal_data_action: String,
    /// JSON Schema of JSON-lines records, as JSON text.
    pub json_schema: Option<String>,
    /// Seal a snapshot after every N accepted contributions; 0: only on the owner's request.
    pub seal_every_accepted: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    pub fn record_format(&self) -> RecordFormat {
        if self.record_format == "json_lines" { RecordFormat::JsonLines } else { RecordFormat::PlainText }
    }

    pub fn personal_data_action(&self) -> PersonalDataAction {
        if self.personal_data_action == "accept_with_flag" { PersonalDataAction::AcceptWithFlag } else { PersonalDataAction::Reject }
    }

    pub fn needs_owner_approval(&self) -> bool {
        self.contribution_policy == "owner_approval"
    }
}

/// Creates or replaces a Datanet's rules; `owner_id` is kept from creation when `None`.
pub async fn upsert(database: &impl ConnectionTrait, row: Model) -> Result<(), DbErr> {
    let row = ActiveModel {
        datanet_id: Set(row.datanet_id),
        owner_id: Set(row.owner_id),
        record_format: Set(row.record_format),
        contribution_policy: Set(row.contribution_policy),
        personal_data_action: Set(row.personal_data_action),
        json_schema: Set(row.json_schema),
        seal_every_accepted: Set(row.seal_every_accepted),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::DatanetId)
                .update_columns([
                    Column::RecordFormat,
                    Column::ContributionPolicy,
                    Column::PersonalDataAction,
                    Column::JsonSchema,
                    Column::SealEveryAccepted,
                ])
                .to_owned(),
        )
        .exec_without_returning(database)
        .await?;
    Ok(())
}

pub async fn find(database: &impl ConnectionTrait, datanet_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(datanet_id.to_owned()).one(database).await
}

/// The rules of those of `datanet_ids` that are known.
pub async fn find_all(database: &impl ConnectionTrait, datanet_ids: &[String]) -> Result<Vec<Model>, DbErr> {
    let mut found = Vec::with_capacity(datanet_ids.len());
    for chunk in datanet_ids.chunks(500) {
        found.extend(Entity::find().filter(Column::DatanetId.is_in(chunk.iter().cloned())).all(database).await?);
    }
    Ok(found)
}
