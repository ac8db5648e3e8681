//! Submissions waiting for their Datanet owner's approval, kept as the submitted event's
//! original bytes (never re-encoded) until `ContributionApproved` arrives.

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "held_contributions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub contribution_id: String,
    pub datanet_id: String,
    /// Schema version of the held `ContributionSubmitted`, for upcasting when it is read.
    pub schema_version: i32,
    pub submission: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub async fn hold(
    database: &impl ConnectionTrait,
    contribution_id: &str,
    datanet_id: &str,
    schema_version: u32,
    submission: &[u8],
) -> Result<(), DbErr> {
    let row = ActiveModel {
        contribution_id: Set(contribution_id.to_owned()),
        datanet_id: Set(datanet_id.to_owned()),
        schema_version: Set(i32::try_from(schema_version).unwrap_or(i32::MAX)),
        submission: Set(submission.to_vec()),
    };
    Entity::insert(row).exec_without_returning(database).await?;
    Ok(())
}

/// Removes and returns a held submission.
pub async fn release(database: &impl ConnectionTrait, contribution_id: &str) -> Result<Option<Model>, DbErr> {
    let Some(row) = Entity::find_by_id(contribution_id.to_owned()).one(database).await? else { return Ok(None) };
    Entity::delete_by_id(contribution_id.to_owned()).exec(database).await?;
    Ok(Some(row))
}
