//! `ContributionProjection`: one row per contribution with its validation status.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "contributions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub datanet_id: String,
    pub contributor_id: String,
    pub content_sha256: String,
    pub size_bytes: i64,
    pub record_count: i32,
    pub record_format: String,
    pub file_name: Option<String>,
    /// `pending`, `accepted` or `rejected`.
    pub status: String,
    /// JSON array of `{code, message, record_index}`.
    pub reasons: String,
    pub quality_score_ppm: Option<i32>,
    pub duplicate_cluster_id: Option<String>,
    /// JSON array of flag codes.
    pub flags: String,
    pub version: i64,
    pub submitted_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A submitted contribution, before validation decides.
#[derive(Debug, Clone)]
pub struct Submitted<'a> {
    pub id: &'a str,
    pub datanet_id: &'a str,
    pub contributor_id: &'a str,
    pub content_sha256: &'a str,
    pub size_bytes: u64,
    pub record_count: u32,
    pub record_format: &'a str,
    pub file_name: Option<&'a str>,
}

fn version(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}

/// The row of a submission just made: `pending` (validation decides) or `awaiting_approval`
/// (the Datanet's owner decides first).
pub fn submitted_row(submitted: Submitted<'_>, awaiting_approval: bool, sequence: u64, at: DateTime<Utc>) -> Model {
    Model {
        id: submitted.id.to_owned(),
        datanet_id: submitted.datanet_id.to_owned(),
        contributor_id: submitted.contributor_id.to_owned(),
        content_sha256: submitted.content_sha256.to_owned(),
        size_bytes: i64::try_from(submitted.size_bytes).unwrap_or(i64::MAX),
        record_count: i32::try_from(submitted.record_count).unwrap_or(i32::MAX),
        record_format: submitted.record_format.to_owned(),
        file_name: submitted.file_name.map(str::to_owned),
        status: if awaiting_approval { "awaiting_approval" } else { "pending" }.to_owned(),
        reasons: "[]".to_owned(),
        quality_score_ppm: None,
        duplicate_cluster_id: None,
        flags: "[]".to_owned(),
        version: version(sequence),
        submitted_at: at,
        decided_at: None,
    }
}

/// The owner approved: validation decides next. False (and `row` unchanged) when the
/// contribution was not awaiting approval.
pub fn approve(row: &mut Model, sequence: u64) -> bool {
    if row.status != "awaiting_approval" {
        return false;
    }
    row.status = "pending".to_owned();
    row.version = version(sequence);
    true
}

/// What validation (or the owner) decided.
#[derive(Debug, Clone)]
pub enum Decision {
    Accepted { quality_score_ppm: u32, duplicate_cluster_id: String, flags: Vec<String> },
    Rejected { reasons: serde_json::Value },
}

/// Records a decision in `row`.
pub fn decide(row: &mut Model, decision: Decision, sequence: u64, at: DateTime<Utc>) {
    match decision {
        Decision::Accepted { quality_score_ppm, duplicate_cluster_id, flags } => {
            row.status = "accepted".to_owned();
            row.quality_score_ppm = Some(i32::try_from(quality_score_ppm).unwrap_or(i32::MAX));
            row.duplicate_cluster_id = Some(duplicate_cluster_id);
            row.flags = serde_json::to_string(&flags).unwrap_or_else(|_| "[]".to_owned());
        }
        Decision::Rejected { reasons } => {
            row.status = "rejected".to_owned();
            row.reasons = reasons.to_string();
        }
    }
    row.version = version(sequence);
    row.decided_at = Some(at);
}

/// Writes `rows` (new or changed) whole, a batch's in a statement per few hundred.
pub async fn save_all(database: &impl ConnectionTrait, rows: Vec<Model>) -> Result<(), DbErr> {
    use sea_orm::sea_query::OnConflict;
    use sea_orm::{IntoActiveModel as _, Iterable as _};
    let changed: Vec<Column> = Column::iter().filter(|column| !matches!(column, Column::Id)).collect();
    // 16 columns × 500 rows stays under SQLite's 32,766 bound parameters.
    for chunk in rows.chunks(500) {
        Entity::insert_many(chunk.iter().cloned().map(Model::into_active_model))
            .on_conflict(OnConflict::column(Column::Id).update_columns(changed.clone()).to_owned())
            .exec_without_returning(database)
            .await?;
    }
    Ok(())
}

/// The stored rows of those of `ids` that exist.
pub async fn find_all(database: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<Model>, DbErr> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        found.extend(Entity::find().filter(Column::Id.is_in(chunk.iter().cloned())).all(database).await?);
    }
    Ok(found)
}

pub async fn find(database: &impl ConnectionTrait, id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.to_owned()).one(database).await
}

/// A contributor's contributions, ordered by id (ids are time-ordered UUIDv7).
pub async fn list_by_contributor(
    database: &impl ConnectionTrait,
    contributor_id: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find().filter(Column::ContributorId.eq(contributor_id)).order_by_asc(Column::Id).limit(limit);
    if let Some(after) = after {
        query = query.filter(Column::Id.gt(after));
    }
    query.all(database).await
}

/// A Datanet's contribution statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DatanetStatistics {
    pub pending: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub records_accepted: u64,
    pub bytes_accepted: u64,
    pub contributors: u64,
    pub duplicate_clusters: u64,
}

pub async fn statistics(database: &impl ConnectionTrait, datanet_id: &str) -> Result<DatanetStatistics, DbErr> {
    use sea_orm::sea_query::Expr;
    // Aggregated in the database, one row per status: clients poll this while importing.
    let by_status: Vec<(String, i64, i64, i64)> = Entity::find()
        .select_only()
        .column(Column::Status)
        .column_as(Expr::cust("COUNT(*)"), "items")
        .column_as(Expr::cust("CAST(COALESCE(SUM(record_count), 0) AS BIGINT)"), "records")
        .column_as(Expr::cust("CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT)"), "bytes")
        .filter(Column::DatanetId.eq(datanet_id))
        .group_by(Column::Status)
        .into_tuple()
        .all(database)
        .await?;
    let distinct = |expression: &'static str, accepted_only: bool| {
        let mut query = Entity::find().select_only().column_as(Expr::cust(expression), "n").filter(Column::DatanetId.eq(datanet_id));
        if accepted_only {
            query = query.filter(Column::Status.eq("accepted"));
        }
        query.into_tuple::<i64>().one(database)
    };
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    let mut statistics = DatanetStatistics {
        contributors: count(distinct("COUNT(DISTINCT contributor_id)", false).await?.unwrap_or(0)),
        duplicate_clusters: count(distinct("COUNT(DISTINCT duplicate_cluster_id)", true).await?.unwrap_or(0)),
        ..DatanetStatistics::default()
    };
    for (status, items, records, bytes) in by_status {
        match status.as_str() {
            "accepted" => {
                statistics.accepted = count(items);
                statistics.records_accepted = count(records);
                statistics.bytes_accepted = count(bytes);
            }
            "rejected" => statistics.rejected += count(items),
            _ => statistics.pending += count(items),
        }
    }
    Ok(statistics)
}
