//! Closed settlement periods and their reports.

use sea_orm::ActiveValue::Set;
use sea_orm::QueryOrder as _;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "settlement_periods")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub period_id: String,
    pub starts_at: String,
    pub ends_at: String,
    pub through_sequence: i64,
    pub settlement_count: i64,
    pub closed_by: String,
    pub report_sha256: Option<String>,
    /// JSON array of [`Artifact`]s; empty until the report is issued.
    pub artifacts: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// One rendering of a report in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Artifact {
    /// "json", "csv" or "parquet".
    pub format: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub bucket: String,
}

impl Artifact {
    /// An artifact as `SettlementReportIssued` names it; `None` without its blob.
    pub fn from_proto(artifact: &provenant_events::proto::settlement::v1::ReportArtifact) -> Option<Artifact> {
        let blob = artifact.blob.as_ref()?;
        Some(Artifact {
            format: artifact.format.clone(),
            sha256: blob.sha256.clone(),
            size_bytes: blob.size_bytes,
            bucket: blob.bucket.clone(),
        })
    }
}

impl Model {
    pub fn artifacts(&self) -> Vec<Artifact> {
        serde_json::from_str(&self.artifacts).unwrap_or_default()
    }
}

/// Records a closed period (a redelivery changes nothing).
pub async fn insert_closed(database: &impl ConnectionTrait, row: Model) -> Result<(), DbErr> {
    let row = ActiveModel {
        period_id: Set(row.period_id),
        starts_at: Set(row.starts_at),
        ends_at: Set(row.ends_at),
        through_sequence: Set(row.through_sequence),
        settlement_count: Set(row.settlement_count),
        closed_by: Set(row.closed_by),
        report_sha256: Set(row.report_sha256),
        artifacts: Set(row.artifacts),
    };
    Entity::insert(row).on_conflict(OnConflict::column(Column::PeriodId).do_nothing().to_owned()).exec_without_returning(database).await?;
    Ok(())
}

/// Attaches the issued report to its period.
pub async fn record_report(database: &impl ConnectionTrait, period_id: &str, sha256: &str, artifacts: &[Artifact]) -> Result<bool, DbErr> {
    let Some(row) = find(database, period_id).await? else {
        return Ok(false);
    };
    let mut row: ActiveModel = row.into();
    row.report_sha256 = Set(Some(sha256.to_owned()));
    row.artifacts = Set(serde_json::to_string(artifacts).map_err(|error| DbErr::Custom(error.to_string()))?);
    row.update(database).await?;
    Ok(true)
}

pub async fn find(database: &impl ConnectionTrait, period_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(period_id.to_owned()).one(database).await
}

pub async fn all(database: &impl ConnectionTrait) -> Result<Vec<Model>, DbErr> {
    Entity::find().order_by_asc(Column::PeriodId).all(database).await
}
