//! Accepted contributions: content hash and duplicate cluster (exact duplicates), MinHash
//! signature and LSH band keys (near duplicates). Written in the same transaction as the
//! verdict's bookkeeping, so a replay rebuilds it exactly.

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::{IntoActiveModel, QueryOrder};

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

    /// One LSH band of an accepted contribution. No Datanet column: the key hashes the band's
    /// rows, so the lookup keeps the Datanet's candidates when it reads their rows (migration
    /// `m20261207_000004_bands_keyed_alone`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "near_duplicate_bands")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub band_key: i64,
        /// The contribution's `accepted_sequence`: a small integer, where its id would make
        /// each of its 20 rows three times as large.
        #[sea_orm(primary_key, auto_increment = false)]
        pub accepted_sequence: i64,
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

/// Every accepted contribution of a Datanet, in the order it was accepted.
pub async fn all_in_order(database: &impl ConnectionTrait, datanet_id: &str) -> Result<Vec<Model>, DbErr> {
    Entity::find().filter(Column::DatanetId.eq(datanet_id)).order_by_asc(Column::AcceptedSequence).all(database).await
}

/// How many contributions the Datanet has accepted.
pub async fn count(database: &impl ConnectionTrait, datanet_id: &str) -> Result<u64, DbErr> {
    Entity::find().filter(Column::DatanetId.eq(datanet_id)).count(database).await
}

/// The accepted contributions of `datanet_ids` whose content is any of `contents` (SHA-256):
/// every row of each (Datanet, content) pair asked about, and perhaps rows of pairs not asked.
pub async fn with_contents(database: &impl ConnectionTrait, datanet_ids: &[String], contents: &[String]) -> Result<Vec<Model>, DbErr> {
    let mut found = Vec::new();
    for chunk in contents.chunks(500) {
        found.extend(
            Entity::find()
                .filter(Column::DatanetId.is_in(datanet_ids.iter().cloned()))
                .filter(Column::ContentSha256.is_in(chunk.iter().cloned()))
                .all(database)
                .await?,
        );
    }
    Ok(found)
}

/// The accepted contributions of `datanet_ids` that share at least one of `band_keys`: every
/// near-duplicate candidate of a signature whose keys are among them.
pub async fn sharing_bands(database: &impl ConnectionTrait, datanet_ids: &[String], band_keys: &[u64]) -> Result<Vec<Model>, DbErr> {
    let mut sequences: Vec<i64> = Vec::new();
    // 4,000 keys stay far under both databases' bound-parameter limits.
    for chunk in band_keys.chunks(4_000) {
        let keys = chunk.iter().map(|key| *key as i64);
        let bands = bands::Entity::find().filter(bands::Column::BandKey.is_in(keys)).all(database).await?;
        sequences.extend(bands.into_iter().map(|band| band.accepted_sequence));
    }
    sequences.sort_unstable();
    sequences.dedup();
    let mut rows = Vec::with_capacity(sequences.len());
    for chunk in sequences.chunks(500) {
        rows.extend(
            Entity::find()
                .filter(Column::AcceptedSequence.is_in(chunk.iter().copied()))
                .filter(Column::DatanetId.is_in(datanet_ids.iter().cloned()))
                .all(database)
                .await?,
        );
    }
    rows.sort_by(|a, b| a.contribution_id.cmp(&b.contribution_id));
    Ok(rows)
}

/// The row's MinHash signature; `None` for content without words (or a column this version
/// cannot read), which has no near duplicates.
pub fn signature_of(row: &Model) -> Option<Signature> {
    row.signature.as_deref().and_then(decode)
}

/// `row` with `signature` in its column.
pub fn with_signature(row: Model, signature: Option<&Signature>) -> Model {
    Model { signature: signature.map(encode), ..row }
}

/// Records accepted contributions (their signature in `Model::signature`) and their LSH band
/// keys, a few statements for the lot.
pub async fn insert_all(database: &impl ConnectionTrait, rows: &[Model]) -> Result<(), DbErr> {
    let band_rows: Vec<bands::ActiveModel> = rows
        .iter()
        .filter_map(|row| Some((row, signature_of(row)?)))
        .flat_map(|(row, signature)| {
            signature
                .band_keys()
                .map(|key| bands::ActiveModel { band_key: Set(key as i64), accepted_sequence: Set(row.accepted_sequence) })
                .collect::<Vec<_>>()
        })
        .collect();
    // 2 columns × 10,000 rows and 7 × 500 stay under SQLite's 32,766 bound parameters.
    for chunk in band_rows.chunks(10_000) {
        bands::Entity::insert_many(chunk.to_vec()).exec_without_returning(database).await?;
    }
    for chunk in rows.chunks(500) {
        Entity::insert_many(chunk.iter().cloned().map(IntoActiveModel::into_active_model)).exec_without_returning(database).await?;
    }
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
