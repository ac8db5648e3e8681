//! The latest revenue-share policy of each model.

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{ExprTrait as _, OnConflict};

use crate::domain::policy::{Beneficiary, RevenuePolicy};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "revenue_policies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub model_id: String,
    pub version: i64,
    /// JSON array of `[beneficiary, share_ppb]`.
    pub parts: String,
    pub set_by: String,
    /// Stream sequence of the policy's latest event: the expected sequence of the next one.
    pub stream_sequence: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The stored policy; rows are written only from checked policies.
    pub fn policy(&self) -> Result<RevenuePolicy, DbErr> {
        let parts: Vec<(Beneficiary, u64)> =
            serde_json::from_str(&self.parts).map_err(|error| DbErr::Custom(format!("stored policy unreadable: {error}")))?;
        RevenuePolicy::new(u64::try_from(self.version).unwrap_or_default(), parts)
            .map_err(|error| DbErr::Custom(format!("stored policy invalid: {error}")))
    }
}

/// Records `policy` as the model's latest unless a later version is already recorded.
pub async fn upsert(
    database: &impl ConnectionTrait,
    model_id: &str,
    policy: &RevenuePolicy,
    set_by: &str,
    stream_sequence: u64,
) -> Result<(), DbErr> {
    let parts = serde_json::to_string(&policy.parts).map_err(|error| DbErr::Custom(error.to_string()))?;
    let row = ActiveModel {
        model_id: Set(model_id.to_owned()),
        version: Set(i64::try_from(policy.version).unwrap_or(i64::MAX)),
        parts: Set(parts),
        set_by: Set(set_by.to_owned()),
        stream_sequence: Set(i64::try_from(stream_sequence).unwrap_or(i64::MAX)),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::ModelId)
                .update_columns([Column::Version, Column::Parts, Column::SetBy, Column::StreamSequence])
                .action_and_where(Expr::col((Entity, Column::Version)).lt(i64::try_from(policy.version).unwrap_or(i64::MAX)))
                .to_owned(),
        )
        .exec_without_returning(database)
        .await?;
    Ok(())
}

pub async fn find(database: &impl ConnectionTrait, model_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(model_id.to_owned()).one(database).await
}

/// The policy that governs an answer of `settled_model_id` (an adapter, or the base itself):
/// its own, else its base's. One statement: this runs for every inference.
pub async fn governing(database: &impl ConnectionTrait, settled_model_id: &str, base_model_id: &str) -> Result<Option<Model>, DbErr> {
    let mut rows = Entity::find().filter(Column::ModelId.is_in([settled_model_id, base_model_id])).all(database).await?;
    // At most two rows; the model's own sorts first.
    rows.sort_by_key(|row| row.model_id != settled_model_id);
    Ok(rows.into_iter().next())
}
