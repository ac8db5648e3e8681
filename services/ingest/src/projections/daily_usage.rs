//! What each contributor submitted on each UTC day (items and bytes), for the daily quotas:
//! kept by the contribution projection with each submission it applies, read with one lookup
//! by the submission endpoint.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, OnConflict};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contributor_daily_usage")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub contributor_id: String,
    /// `YYYY-MM-DD`, UTC.
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: String,
    pub items: i64,
    pub bytes: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The key of `instant`'s day.
pub fn day_of(instant: DateTime<Utc>) -> String {
    instant.date_naive().to_string()
}

/// What a batch adds to each contributor's day: items and bytes per (contributor, day).
pub type Additions = BTreeMap<(String, String), (i64, i64)>;

/// Counts one submission of `size_bytes` made at `at` into `additions`.
pub fn count(additions: &mut Additions, contributor_id: &str, at: DateTime<Utc>, size_bytes: u64) {
    let (items, bytes) = additions.entry((contributor_id.to_owned(), day_of(at))).or_default();
    *items += 1;
    *bytes = bytes.saturating_add(i64::try_from(size_bytes).unwrap_or(i64::MAX));
}

/// Adds `additions` to the stored days (one upsert per few hundred).
pub async fn add(database: &impl ConnectionTrait, additions: Additions) -> Result<(), DbErr> {
    let rows: Vec<ActiveModel> = additions
        .into_iter()
        .map(|((contributor_id, day), (items, bytes))| ActiveModel {
            contributor_id: Set(contributor_id),
            day: Set(day),
            items: Set(items),
            bytes: Set(bytes),
        })
        .collect();
    let excluded = Alias::new("excluded");
    let added = |column: Column| Expr::col((Entity, column)).add(Expr::col((excluded.clone(), column)));
    for chunk in rows.chunks(500) {
        Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([Column::ContributorId, Column::Day])
                    .value(Column::Items, added(Column::Items))
                    .value(Column::Bytes, added(Column::Bytes))
                    .to_owned(),
            )
            .exec_without_returning(database)
            .await?;
    }
    Ok(())
}

/// Items and bytes `contributor_id` submitted on `at`'s day, as far as the projection has got.
pub async fn on_day_of(database: &impl ConnectionTrait, contributor_id: &str, at: DateTime<Utc>) -> Result<(u64, u64), DbErr> {
    let row = Entity::find_by_id((contributor_id.to_owned(), day_of(at))).one(database).await?;
    Ok(row.map_or((0, 0), |row| (u64::try_from(row.items).unwrap_or(0), u64::try_from(row.bytes).unwrap_or(0))))
}
