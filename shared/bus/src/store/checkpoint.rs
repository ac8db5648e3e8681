use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bus_consumer_checkpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub consumer: String,
    pub last_stream_sequence: i64,
    pub last_event_id: String,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Moves `consumer`'s checkpoint forward to `stream_sequence`, never back (redeliveries can
/// arrive after later events).
pub(crate) async fn record_checkpoint(
    database: &impl ConnectionTrait,
    consumer: &str,
    stream_sequence: u64,
    event_id: &str,
) -> Result<(), DbErr> {
    let sequence = i64::try_from(stream_sequence).unwrap_or(i64::MAX);
    let current = read(database, consumer).await?;
    if current.is_some_and(|current| current >= stream_sequence) {
        return Ok(());
    }
    let row = ActiveModel {
        consumer: Set(consumer.to_owned()),
        last_stream_sequence: Set(sequence),
        last_event_id: Set(event_id.to_owned()),
        updated_at: Set(chrono::Utc::now()),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::Consumer)
                .update_columns([Column::LastStreamSequence, Column::LastEventId, Column::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(database)
        .await?;
    Ok(())
}

pub(crate) async fn read(database: &impl ConnectionTrait, consumer: &str) -> Result<Option<u64>, DbErr> {
    Ok(Entity::find_by_id(consumer.to_owned()).one(database).await?.and_then(|row| u64::try_from(row.last_stream_sequence).ok()))
}
