use rand::Rng as _;
use sea_orm::{ConnectionTrait as _, Database};

/// The two database engines every projection runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
}

/// A database of a test's own: a SQLite file in a temporary folder, or a fresh PostgreSQL
/// database on the server at `PV_TEST_POSTGRES_URL` (which `make test` provides).
/// PostgreSQL databases are dropped with [`TestDatabase::drop_database`] when the test ends
/// well, and left for inspection otherwise.
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    admin_url: Option<String>,
    name: String,
    _folder: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> anyhow::Result<TestDatabase> {
        let suffix: u64 = rand::rng().random();
        let name = format!("t{suffix:x}");
        match backend {
            Backend::Sqlite => {
                let folder = tempfile::tempdir()?;
                let url = format!("sqlite://{}?mode=rwc", folder.path().join(format!("{name}.db")).display());
                Ok(TestDatabase { backend, url, admin_url: None, name, _folder: Some(folder) })
            }
            Backend::Postgres => {
                let admin_url = std::env::var("PV_TEST_POSTGRES_URL")
                    .map_err(|_| anyhow::anyhow!("PV_TEST_POSTGRES_URL is not set: run the tests with `make test`"))?;
                let admin = Database::connect(&admin_url).await?;
                admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
                admin.close().await?;
                let (base, _database) =
                    admin_url.rsplit_once('/').ok_or_else(|| anyhow::anyhow!("PV_TEST_POSTGRES_URL has no database path"))?;
                let url = format!("{base}/{name}");
                Ok(TestDatabase { backend, url, admin_url: Some(admin_url), name, _folder: None })
            }
        }
    }

    /// A fresh, empty sibling database on the same backend (for replay comparisons).
    pub async fn sibling(&self) -> anyhow::Result<TestDatabase> {
        TestDatabase::create(self.backend).await
    }

    /// Drops a PostgreSQL test database (SQLite files go with their temporary folder).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        if let Some(admin_url) = &self.admin_url {
            let admin = Database::connect(admin_url).await?;
            admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).await?;
            admin.close().await?;
        }
        Ok(())
    }
}
