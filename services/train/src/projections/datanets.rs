//! Each Datanet's record format, from `DatanetCreated` / `DatanetUpdated`.

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;

use crate::domain::examples::RecordFormat;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "training_datanets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub datanet_id: String,
    pub record_format: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub fn format_name(format: RecordFormat) -> &'static str {
    match format {
        RecordFormat::PlainText => "plain_text",
        RecordFormat::JsonLines => "json_lines",
    }
}

pub fn parse_format(name: &str) -> Option<RecordFormat> {
    match name {
        "plain_text" => Some(RecordFormat::PlainText),
        "json_lines" => Some(RecordFormat::JsonLines),
        _ => None,
    }
}

pub async fn upsert(database: &impl ConnectionTrait, datanet_id: &str, format: RecordFormat) -> Result<(), DbErr> {
    Entity::insert(ActiveModel { datanet_id: Set(datanet_id.to_owned()), record_format: Set(format_name(format).to_owned()) })
        .on_conflict(OnConflict::column(Column::DatanetId).update_column(Column::RecordFormat).to_owned())
        .exec_without_returning(database)
        .await?;
    Ok(())
}

pub async fn format_of(database: &impl ConnectionTrait, datanet_id: &str) -> Result<Option<RecordFormat>, DbErr> {
    Ok(Entity::find_by_id(datanet_id.to_owned()).one(database).await?.and_then(|row| parse_format(&row.record_format)))
}
