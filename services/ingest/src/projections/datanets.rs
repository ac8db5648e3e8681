//! `DatanetProjection`: one row per Datanet, as its latest event describes it.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, QueryOrder, QuerySelect};
use serde::Serialize;

use crate::domain::datanet::DatanetSpec;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "datanets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub description: String,
    /// JSON array of tags.
    pub tags: String,
    pub licence_spdx: String,
    pub record_format: String,
    pub visibility: String,
    pub contribution_policy: String,
    pub owner_id: String,
    /// Stream sequence of the Datanet's last event: what an update must expect.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

fn label<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The row's fields that come from a spec.
fn spec_columns(row: &mut ActiveModel, spec: &DatanetSpec) {
    row.name = Set(spec.name.clone());
    row.description = Set(spec.description.clone());
    row.tags = Set(serde_json::to_string(&spec.tags).unwrap_or_else(|_| "[]".to_owned()));
    row.licence_spdx = Set(spec.licence.clone());
    row.record_format = Set(label(&spec.record_format));
    row.visibility = Set(label(&spec.visibility));
    row.contribution_policy = Set(label(&spec.contribution_policy));
}

pub async fn insert(
    database: &impl ConnectionTrait,
    id: &str,
    owner_id: &str,
    spec: &DatanetSpec,
    version: u64,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let mut row = ActiveModel {
        id: Set(id.to_owned()),
        owner_id: Set(owner_id.to_owned()),
        version: Set(i64::try_from(version).unwrap_or(i64::MAX)),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    };
    spec_columns(&mut row, spec);
    Entity::insert(row).exec_without_returning(database).await?;
    Ok(())
}

/// Applies a new spec; false when the Datanet is unknown.
pub async fn update(database: &impl ConnectionTrait, id: &str, spec: &DatanetSpec, version: u64, at: DateTime<Utc>) -> Result<bool, DbErr> {
    let Some(existing) = Entity::find_by_id(id.to_owned()).one(database).await? else { return Ok(false) };
    let mut row: ActiveModel = existing.into();
    spec_columns(&mut row, spec);
    row.version = Set(i64::try_from(version).unwrap_or(i64::MAX));
    row.updated_at = Set(at);
    row.update(database).await?;
    Ok(true)
}

pub async fn find(database: &impl ConnectionTrait, id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.to_owned()).one(database).await
}

/// A page of Datanets ordered by id, starting after `after`.
pub async fn list(database: &impl ConnectionTrait, after: Option<&str>, limit: u64) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find().order_by_asc(Column::Id).limit(limit);
    if let Some(after) = after {
        query = query.filter(Column::Id.gt(after));
    }
    query.all(database).await
}
