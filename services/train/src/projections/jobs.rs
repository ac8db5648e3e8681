//! `JobProjection`: every training job and where it stands, from the `TrainingJob*` events.
//!
//! A job moves queued → running → completed | failed | cancelled; once terminal, later
//! events (a slow worker's last progress) change nothing.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::{IntoActiveModel as _, QueryOrder, QuerySelect};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "training_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: String,
    pub name: String,
    pub requested_by: String,
    /// The spec as the API shows it (JSON of `JobRequest`).
    pub spec: String,
    pub status: String,
    pub step: i64,
    pub total_steps: i64,
    pub loss_micro: Option<i64>,
    pub tokens_per_second: Option<i64>,
    pub attempt: i32,
    pub worker_id: Option<String>,
    pub checkpoint_step: Option<i64>,
    pub model_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";

pub fn is_terminal(status: &str) -> bool {
    matches!(status, COMPLETED | FAILED | CANCELLED)
}

pub async fn insert(database: &impl ConnectionTrait, row: Model) -> Result<(), DbErr> {
    Entity::insert(row.into_active_model()).exec_without_returning(database).await?;
    Ok(())
}

pub async fn find(database: &impl ConnectionTrait, job_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(job_id.to_owned()).one(database).await
}

/// Newest first, after the cursor (a job id) when given.
pub async fn page(database: &impl ConnectionTrait, after: Option<&str>, limit: u64) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find().order_by_desc(Column::JobId).limit(limit);
    if let Some(after) = after {
        query = query.filter(Column::JobId.lt(after));
    }
    query.all(database).await
}

/// Applies `change` to a job that is not terminal yet; a terminal or unknown job is left alone.
pub async fn update(
    database: &impl ConnectionTrait,
    job_id: &str,
    at: DateTime<Utc>,
    change: impl FnOnce(&mut ActiveModel),
) -> Result<(), DbErr> {
    let Some(row) = find(database, job_id).await? else { return Ok(()) };
    if is_terminal(&row.status) {
        return Ok(());
    }
    let mut active: ActiveModel = row.into();
    change(&mut active);
    active.updated_at = Set(at);
    active.update(database).await?;
    Ok(())
}
