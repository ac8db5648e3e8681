//! `SnapshotProjection`: sealed snapshots and their ordered entries, from `SnapshotSealed` and
//! the manifest it names.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect};

use crate::domain::snapshot::Entry;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub snapshot_id: String,
    pub datanet_id: String,
    pub ordinal: i64,
    pub merkle_root: String,
    pub entry_count: i64,
    pub manifest_sha256: String,
    pub sealed_at: DateTime<Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub mod entries {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "snapshot_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub snapshot_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub position: i64,
        pub contribution_id: String,
        pub content_sha256: String,
        pub contributor_id: String,
        pub cluster_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub async fn insert(database: &impl ConnectionTrait, snapshot: Model, manifest: &[Entry]) -> Result<(), DbErr> {
    let snapshot_id = snapshot.snapshot_id.clone();
    Entity::insert(ActiveModel {
        snapshot_id: Set(snapshot.snapshot_id),
        datanet_id: Set(snapshot.datanet_id),
        ordinal: Set(snapshot.ordinal),
        merkle_root: Set(snapshot.merkle_root),
        entry_count: Set(snapshot.entry_count),
        manifest_sha256: Set(snapshot.manifest_sha256),
        sealed_at: Set(snapshot.sealed_at),
    })
    .exec_without_returning(database)
    .await?;
    // Inserted in chunks: one statement per entry would dominate sealing a large Datanet.
    for (chunk_index, chunk) in manifest.chunks(500).enumerate() {
        let rows = chunk.iter().enumerate().map(|(offset, entry)| entries::ActiveModel {
            snapshot_id: Set(snapshot_id.clone()),
            position: Set(i64::try_from(chunk_index * 500 + offset).unwrap_or(i64::MAX)),
            contribution_id: Set(entry.contribution_id.clone()),
            content_sha256: Set(entry.content_sha256.clone()),
            contributor_id: Set(entry.contributor_id.clone()),
            cluster_id: Set(entry.duplicate_cluster_id.clone()),
        });
        entries::Entity::insert_many(rows).exec_without_returning(database).await?;
    }
    Ok(())
}

pub async fn find(database: &impl ConnectionTrait, snapshot_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(snapshot_id.to_owned()).one(database).await
}

pub async fn latest(database: &impl ConnectionTrait, datanet_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(Column::DatanetId.eq(datanet_id)).order_by_desc(Column::Ordinal).limit(1).one(database).await
}

/// A snapshot's entries in manifest order.
pub async fn entries_of(database: &impl ConnectionTrait, snapshot_id: &str) -> Result<Vec<Entry>, DbErr> {
    let rows = entries::Entity::find()
        .filter(entries::Column::SnapshotId.eq(snapshot_id))
        .order_by_asc(entries::Column::Position)
        .all(database)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| Entry {
            contribution_id: row.contribution_id,
            content_sha256: row.content_sha256,
            contributor_id: row.contributor_id,
            duplicate_cluster_id: row.cluster_id,
        })
        .collect())
}
