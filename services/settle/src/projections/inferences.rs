//! Inference events the settler settled (with their body digest), and items for review.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::entity::prelude::*;

pub mod settled {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "settled_inferences")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub inference_event_id: String,
        pub request_id: String,
        /// SHA-256 of the event's payload as received: the same id with another body differs here.
        pub payload_sha256: String,
        pub settlement_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod reviews {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "settlement_reviews")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub code: String,
        pub inference_event_id: String,
        pub detail: String,
        pub stream_sequence: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Records settled inferences, a batch's in a statement per thousand.
pub async fn insert_settled(database: &impl ConnectionTrait, rows: Vec<settled::Model>) -> Result<(), DbErr> {
    for chunk in rows.chunks(1_000) {
        let rows = chunk.iter().cloned().map(settled::ActiveModel::from);
        settled::Entity::insert_many(rows).exec_without_returning(database).await?;
    }
    Ok(())
}

pub async fn find(database: &impl ConnectionTrait, inference_event_id: &str) -> Result<Option<settled::Model>, DbErr> {
    settled::Entity::find_by_id(inference_event_id.to_owned()).one(database).await
}

/// The event already settled for `request_id`, if any.
pub async fn find_by_request(database: &impl ConnectionTrait, request_id: &str) -> Result<Option<settled::Model>, DbErr> {
    settled::Entity::find().filter(settled::Column::RequestId.eq(request_id)).one(database).await
}

/// The events already settled for any of `request_ids`.
pub async fn find_by_requests(database: &impl ConnectionTrait, request_ids: &[String]) -> Result<Vec<settled::Model>, DbErr> {
    let mut found = Vec::new();
    // A few hundred ids per statement keeps well under either database's parameter bound.
    for chunk in request_ids.chunks(500) {
        found.extend(settled::Entity::find().filter(settled::Column::RequestId.is_in(chunk.iter().cloned())).all(database).await?);
    }
    Ok(found)
}

pub async fn count_settled(database: &impl ConnectionTrait) -> Result<u64, DbErr> {
    settled::Entity::find().count(database).await
}

pub async fn insert_review(
    database: &impl ConnectionTrait,
    code: &str,
    inference_event_id: &str,
    detail: &str,
    stream_sequence: u64,
) -> Result<(), DbErr> {
    let row = reviews::ActiveModel {
        id: NotSet,
        code: Set(code.to_owned()),
        inference_event_id: Set(inference_event_id.to_owned()),
        detail: Set(detail.to_owned()),
        stream_sequence: Set(i64::try_from(stream_sequence).unwrap_or(i64::MAX)),
    };
    reviews::Entity::insert(row).exec_without_returning(database).await?;
    Ok(())
}

/// Review items after `after` (their id), oldest first.
pub async fn reviews_after(database: &impl ConnectionTrait, after: i64, limit: u64) -> Result<Vec<reviews::Model>, DbErr> {
    use sea_orm::QueryOrder as _;
    use sea_orm::QuerySelect as _;
    reviews::Entity::find().filter(reviews::Column::Id.gt(after)).order_by_asc(reviews::Column::Id).limit(limit).all(database).await
}
