//! Accepted contributions: content hash and duplicate cluster (exact duplicates), MinHash
//! signature and LSH band keys (near duplicates). Written in the same transaction as the
//! verdict's bookkeeping, so a replay rebuilds it exactly.

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect};

use crate::domain::near_duplicates::{SIGNATURE_LENGTH, Signature};
use crate::domain::snapshot::Entry;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accepted_contributions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub contribution_id: String,
    pub datanet_id: String,
    pub contributor_id: String,
    pub content_sha256: String,
    pub cluster_id: String,
    pub signature: Option<Vec<u8>>,
    pub accepted_sequence: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl From<Model> for Entry {
    fn from(row: Model) -> Self {
        Entry {
            contribution_id: row.contribution_id,
            content_sha256: row.content_sha256,
            contributor_id: row.contributor_id,
            duplicate_cluster_id: row.cluster_id,
        }
    }
}

pub mod bands {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "near_duplicate_bands")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub datanet_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub band_key: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub contribution_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn encode(signature: &Signature) -> Vec<u8> {
    signature.0.iter().flat_map(|value| value.to_le_bytes()).collect()
}

fn decode(bytes: &[u8]) -> Option<Signature> {
    if bytes.len() != SIGNATURE_LENGTH * 8 {
        return None;
    }
    let mut values = [0u64; SIGNATURE_LENGTH];
    for (value, chunk) in values.iter_mut().zip(bytes.chunks_exact(8)) {
        *value = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some(Signature(values))
}

/// The earliest accepted contribution with exactly this content in the Datanet.
pub async fn first_with_content(database: &impl ConnectionTrait, datanet_id: &str, content_sha256: &str) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(Column::DatanetId.eq(datanet_id))
        .filter(Column::ContentSha256.eq(content_sha256))
        .order_by_asc(Column::ContributionId)
        .limit(1)
        .one(database)
        .await
}

/// Every accepted contribution of a Datanet, in the order it was accepted.
pub async fn all_in_order(database: &impl ConnectionTrait, datanet_id: &str) -> Result<Vec<Model>, DbErr> {
    Entity::find().filter(Column::DatanetId.eq(datanet_id)).order_by_asc(Column::AcceptedSequence).all(database).await
}

/// How many contributions the Datanet has accepted.
pub async fn count(database: &impl ConnectionTrait, datanet_id: &str) -> Result<u64, DbErr> {
    Entity::find().filter(Column::DatanetId.eq(datanet_id)).count(database).await
}

/// Accepted contributions sharing at least one band key, with their signatures.
pub async fn candidates(database: &impl ConnectionTrait, datanet_id: &str, band_keys: &[u64]) -> Result<Vec<(Model, Signature)>, DbErr> {
    let keys: Vec<i64> = band_keys.iter().map(|key| *key as i64).collect();
    let mut ids: Vec<String> = bands::Entity::find()
        .filter(bands::Column::DatanetId.eq(datanet_id))
        .filter(bands::Column::BandKey.is_in(keys))
        .all(database)
        .await?
        .into_iter()
        .map(|band| band.contribution_id)
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = Entity::find().filter(Column::ContributionId.is_in(ids)).order_by_asc(Column::ContributionId).all(database).await?;
    Ok(rows.into_iter().filter_map(|row| row.signature.as_deref().and_then(decode).map(|signature| (row, signature))).collect())
}

pub async fn insert(database: &impl ConnectionTrait, row: Model, signature: Option<&Signature>) -> Result<(), DbErr> {
    if let Some(signature) = signature {
        let band_rows: Vec<bands::ActiveModel> = signature
            .band_keys()
            .map(|key| bands::ActiveModel {
                datanet_id: Set(row.datanet_id.clone()),
                band_key: Set(key as i64),
                contribution_id: Set(row.contribution_id.clone()),
            })
            .collect();
        bands::Entity::insert_many(band_rows).exec_without_returning(database).await?;
    }
    let row = ActiveModel {
        contribution_id: Set(row.contribution_id),
        datanet_id: Set(row.datanet_id),
        contributor_id: Set(row.contributor_id),
        content_sha256: Set(row.content_sha256),
        cluster_id: Set(row.cluster_id),
        signature: Set(signature.map(encode)),
        accepted_sequence: Set(row.accepted_sequence),
    };
    Entity::insert(row).exec_without_returning(database).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_survive_their_column() {
        let signature = Signature::of("a signature stored as little-endian bytes").expect("words");
        assert_eq!(decode(&encode(&signature)), Some(signature));
        assert_eq!(decode(&[1, 2, 3]), None);
    }
}
