//! `ModelProjection`: the model registry, from `ModelRegistered`.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{IntoActiveModel as _, QueryOrder, QuerySelect};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "models")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub model_id: String,
    pub name: String,
    /// `base` or `adapter`.
    pub kind: String,
    pub base_model_id: Option<String>,
    pub owner_id: String,
    pub job_id: String,
    pub weights_sha256: String,
    pub held_out_perplexity_milli: i64,
    /// The registration as the API shows it (JSON of `api::models::ModelView`).
    pub registration: String,
    pub registered_at: DateTime<Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub async fn insert(database: &impl ConnectionTrait, row: Model) -> Result<(), DbErr> {
    Entity::insert(row.into_active_model()).exec_without_returning(database).await?;
    Ok(())
}

pub async fn find(database: &impl ConnectionTrait, model_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(model_id.to_owned()).one(database).await
}

/// By model id, after the cursor when given.
pub async fn page(database: &impl ConnectionTrait, after: Option<&str>, limit: u64) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find().order_by_asc(Column::ModelId).limit(limit);
    if let Some(after) = after {
        query = query.filter(Column::ModelId.gt(after));
    }
    query.all(database).await
}
