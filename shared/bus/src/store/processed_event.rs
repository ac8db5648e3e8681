use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, PaginatorTrait};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bus_processed_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub consumer: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    pub stream_sequence: i64,
    pub processed_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Records that `consumer` applied `event_id`; false when it had already.
pub(crate) async fn record_processed(
    database: &impl ConnectionTrait,
    consumer: &str,
    event_id: &str,
    stream_sequence: u64,
) -> Result<bool, DbErr> {
    let row = ActiveModel {
        consumer: Set(consumer.to_owned()),
        event_id: Set(event_id.to_owned()),
        stream_sequence: Set(i64::try_from(stream_sequence).unwrap_or(i64::MAX)),
        processed_at: Set(chrono::Utc::now()),
    };
    let inserted = Entity::insert(row)
        .on_conflict(OnConflict::columns([Column::Consumer, Column::EventId]).do_nothing().to_owned())
        .exec_without_returning(database)
        .await?;
    Ok(inserted == 1)
}

pub(crate) async fn count(database: &impl ConnectionTrait, consumer: &str) -> Result<u64, DbErr> {
    Entity::find().filter(Column::Consumer.eq(consumer)).count(database).await
}

/// Records a batch of events for `consumer` in one statement; returns the ids recorded now (the
/// others were applied before). `RETURNING` reports exactly this transaction's inserts, so two
/// workers racing on a redelivery still apply an event once.
pub(crate) async fn record_processed_batch(
    database: &impl ConnectionTrait,
    consumer: &str,
    events: &[(String, u64)],
) -> Result<std::collections::HashSet<String>, DbErr> {
    if events.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let now = chrono::Utc::now();
    let rows = events.iter().map(|(event_id, stream_sequence)| ActiveModel {
        consumer: Set(consumer.to_owned()),
        event_id: Set(event_id.clone()),
        stream_sequence: Set(i64::try_from(*stream_sequence).unwrap_or(i64::MAX)),
        processed_at: Set(now),
    });
    let inserted = Entity::insert_many(rows)
        .on_conflict(OnConflict::columns([Column::Consumer, Column::EventId]).do_nothing().to_owned())
        .exec_with_returning_keys(database)
        .await;
    match inserted {
        Ok(keys) => Ok(keys.into_iter().map(|(_, event_id)| event_id).collect()),
        // Every event of the batch was applied before.
        Err(DbErr::RecordNotInserted) => Ok(std::collections::HashSet::new()),
        Err(error) => Err(error),
    }
}
