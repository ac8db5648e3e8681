//! Registered models and Datanet owners, as far as settlement needs them.

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;

pub mod models {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "settle_models")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub model_id: String,
        /// "base" or "adapter".
        pub kind: String,
        /// For adapters; empty for a base.
        pub base_model_id: String,
        pub weights_sha256: String,
        pub builder_id: String,
        /// JSON array of the Datanet ids of the model's pinned snapshots, one per snapshot.
        pub datanet_ids: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl Model {
        pub fn is_adapter(&self) -> bool {
            self.kind == "adapter"
        }

        pub fn datanet_ids(&self) -> Vec<String> {
            serde_json::from_str(&self.datanet_ids).unwrap_or_default()
        }
    }
}

pub mod datanets {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "settle_datanets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub datanet_id: String,
        pub owner_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod indexes {
    use sea_orm::entity::prelude::*;

    /// An attribution index the training service built, and the model it was built for.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "settle_indexes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub index_id: String,
        pub model_id: String,
        pub index_sha256: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Records a registered model; a registration seen again changes nothing.
pub async fn insert_model(database: &impl ConnectionTrait, row: models::Model) -> Result<(), DbErr> {
    let row = models::ActiveModel {
        model_id: Set(row.model_id),
        kind: Set(row.kind),
        base_model_id: Set(row.base_model_id),
        weights_sha256: Set(row.weights_sha256),
        builder_id: Set(row.builder_id),
        datanet_ids: Set(row.datanet_ids),
    };
    models::Entity::insert(row)
        .on_conflict(OnConflict::column(models::Column::ModelId).do_nothing().to_owned())
        .exec_without_returning(database)
        .await?;
    Ok(())
}

pub async fn find_model(database: &impl ConnectionTrait, model_id: &str) -> Result<Option<models::Model>, DbErr> {
    models::Entity::find_by_id(model_id.to_owned()).one(database).await
}

/// Records a Datanet's owner (fixed at creation).
pub async fn insert_datanet(database: &impl ConnectionTrait, datanet_id: &str, owner_id: &str) -> Result<(), DbErr> {
    let row = datanets::ActiveModel { datanet_id: Set(datanet_id.to_owned()), owner_id: Set(owner_id.to_owned()) };
    datanets::Entity::insert(row)
        .on_conflict(OnConflict::column(datanets::Column::DatanetId).do_nothing().to_owned())
        .exec_without_returning(database)
        .await?;
    Ok(())
}

/// Records an attribution index (written once; seen again, nothing changes).
pub async fn insert_index(database: &impl ConnectionTrait, row: indexes::Model) -> Result<(), DbErr> {
    let row = indexes::ActiveModel { index_id: Set(row.index_id), model_id: Set(row.model_id), index_sha256: Set(row.index_sha256) };
    indexes::Entity::insert(row)
        .on_conflict(OnConflict::column(indexes::Column::IndexId).do_nothing().to_owned())
        .exec_without_returning(database)
        .await?;
    Ok(())
}

/// The models an index digest was announced for (one, unless a producer lied).
pub async fn find_index_models(database: &impl ConnectionTrait, index_sha256: &str) -> Result<Vec<String>, DbErr> {
    let rows = indexes::Entity::find().filter(indexes::Column::IndexSha256.eq(index_sha256)).all(database).await?;
    Ok(rows.into_iter().map(|row| row.model_id).collect())
}

/// How many index announcements are projected (to compare with the log's count).
pub async fn count_indexes(database: &impl ConnectionTrait) -> Result<u64, DbErr> {
    indexes::Entity::find().count(database).await
}

pub async fn find_datanet_owner(database: &impl ConnectionTrait, datanet_id: &str) -> Result<Option<String>, DbErr> {
    Ok(datanets::Entity::find_by_id(datanet_id.to_owned()).one(database).await?.map(|row| row.owner_id))
}

/// What [`find_model`] and [`find_datanet_owner`] found, kept in memory for the settler, which
/// asks for the same few models and Datanets with every inference. Both rows are written once
/// and never change, so a kept row is always current; a miss is not kept (its projector may
/// write the row any moment).
#[derive(Debug, Default)]
pub struct Cache {
    models: std::sync::Mutex<std::collections::HashMap<String, models::Model>>,
    owners: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Index digest → the models it was announced for.
    indexes: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
}

impl Cache {
    pub async fn model(&self, database: &impl ConnectionTrait, model_id: &str) -> Result<Option<models::Model>, DbErr> {
        if let Some(model) = lock(&self.models).get(model_id) {
            return Ok(Some(model.clone()));
        }
        let found = find_model(database, model_id).await?;
        if let Some(model) = &found {
            lock(&self.models).insert(model_id.to_owned(), model.clone());
        }
        Ok(found)
    }

    pub async fn index_models(&self, database: &impl ConnectionTrait, index_sha256: &str) -> Result<Vec<String>, DbErr> {
        if let Some(models) = lock(&self.indexes).get(index_sha256) {
            return Ok(models.clone());
        }
        let found = find_index_models(database, index_sha256).await?;
        if !found.is_empty() {
            lock(&self.indexes).insert(index_sha256.to_owned(), found.clone());
        }
        Ok(found)
    }

    pub async fn datanet_owner(&self, database: &impl ConnectionTrait, datanet_id: &str) -> Result<Option<String>, DbErr> {
        if let Some(owner) = lock(&self.owners).get(datanet_id) {
            return Ok(Some(owner.clone()));
        }
        let found = find_datanet_owner(database, datanet_id).await?;
        if let Some(owner) = &found {
            lock(&self.owners).insert(datanet_id.to_owned(), owner.clone());
        }
        Ok(found)
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
