//! Sealed snapshots a job may pin, from `SnapshotSealed`.

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "training_snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub snapshot_id: String,
    pub datanet_id: String,
    pub merkle_root: String,
    pub entry_count: i64,
    pub manifest_sha256: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub async fn insert(database: &impl ConnectionTrait, row: Model) -> Result<(), DbErr> {
    Entity::insert(ActiveModel {
        snapshot_id: Set(row.snapshot_id),
        datanet_id: Set(row.datanet_id),
        merkle_root: Set(row.merkle_root),
        entry_count: Set(row.entry_count),
        manifest_sha256: Set(row.manifest_sha256),
    })
    .exec_without_returning(database)
    .await?;
    Ok(())
}

pub async fn find(database: &impl ConnectionTrait, snapshot_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(snapshot_id.to_owned()).one(database).await
}
