use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use provenant_bus::{Consumer, Context, ServiceFrame, Upcasters};
use provenant_runtime::Shutdown;
use provenant_runtime::identity::Directory;

use crate::api::{self, AppState};
use crate::attribution::{Attributor, IndexFollower, Indexes};
use crate::catalog::{Catalog, ModelFollower, PriceFollower};
use crate::configuration::Config;
use crate::late_receipts::LateReceipts;
use crate::models::ModelCache;

/// The object store bucket the train service writes weights and configs to.
pub const MODELS_BUCKET: &str = "models";

/// Prompts and answers, under the digests `InferenceServed` names.
pub const TRANSCRIPTS_BUCKET: &str = "transcripts";

/// The infer service, connected and bound, ready to run.
pub struct Application {
    config: Config,
    frame: ServiceFrame,
    directory: Arc<Directory>,
}

impl Application {
    /// Connects to NATS (streams declared) and binds the HTTP port.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let directory = Arc::new(Directory::from_config(&config.identity).context("invalid identity configuration")?);
        let frame = ServiceFrame::build(&config.bus, &config.http).await?;
        Ok(Application { config, frame, directory })
    }

    pub fn address(&self) -> SocketAddr {
        self.frame.address()
    }

    /// Loads the catalogue, prices and API keys from the log, then serves until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Application { config, frame, directory } = self;
        let bus = frame.bus.clone();
        let catalog = Catalog::default();
        let identity = provenant_bus::identity::follow_identity(&bus, directory.clone(), shutdown.clone())
            .await
            .context("failed to load the issued API keys")?;
        let models = ModelFollower { catalog: catalog.clone(), upcasters: Upcasters::contract() };
        let models = provenant_bus::follow::follow(&bus, Context::Training, "model", models, shutdown.clone())
            .await
            .context("failed to load the model registry")?;
        let prices = PriceFollower { catalog: catalog.clone(), upcasters: Upcasters::contract() };
        let prices = provenant_bus::follow::follow(&bus, Context::Inference, "pricing", prices, shutdown.clone())
            .await
            .context("failed to load the prices")?;
        let indexes = Indexes::default();
        let index_follower = IndexFollower { indexes: indexes.clone(), upcasters: Upcasters::contract() };
        let index_follower = provenant_bus::follow::follow(&bus, Context::Training, "index", index_follower, shutdown.clone())
            .await
            .context("failed to load the attribution indexes")?;
        let store = bus.blob_store(MODELS_BUCKET).await.context("failed to open the models bucket")?;
        let attributor = Arc::new(Attributor::new(store.clone(), indexes));
        let transcript_store = bus.blob_store(TRANSCRIPTS_BUCKET).await.context("failed to open the transcripts bucket")?;
        let transcripts = config.serving.keep_transcripts.then(|| transcript_store.clone());
        let serving = &config.serving;
        let cache = Arc::new(ModelCache::new(
            store,
            serving.adapter_cache_entries,
            serving.pinned_adapters.clone(),
            serving.max_batch_size,
            serving.decoding_threads(),
        ));
        let late_receipts = match config.late_receipts.enabled {
            true => {
                let handler = LateReceipts {
                    bus: bus.clone(),
                    index_wait: std::time::Duration::from_secs(config.late_receipts.index_wait_seconds),
                    catalog: catalog.clone(),
                    cache: Arc::clone(&cache),
                    attributor: Arc::clone(&attributor),
                    transcripts: transcript_store,
                    upcasters: Upcasters::contract(),
                };
                let database = provenant_bus::store::in_memory().await.context("failed to open the consumer's bookkeeping")?;
                Some(Consumer::new(bus.clone(), database, handler, config.late_receipts.consumer.clone()))
            }
            false => None,
        };
        let routes = api::router(AppState { bus, catalog, cache, attributor, transcripts, directory, serving: config.serving.clone() });
        let readiness = frame.readiness();
        let late_receipts = async {
            match late_receipts {
                Some(consumer) => provenant_bus::run_until_stopped(consumer, shutdown.clone()).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let (served, late_receipts) = tokio::join!(frame.serve(routes, readiness, shutdown.clone()), late_receipts);
        for follower in [identity, models, prices, index_follower] {
            follower.abort();
        }
        served?;
        late_receipts.context("attributing receipt-less inferences failed")
    }
}
