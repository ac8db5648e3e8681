use async_nats::jetstream::{self, stream};

use crate::{BusConfig, Context, Error, Namespace};

/// A connection to the event log: one NATS client, its JetStream context and the namespace
/// that names subjects and streams. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    namespace: Namespace,
    config: BusConfig,
}

impl Bus {
    /// Connects, failing at once when the server is unreachable (so a bad URL fails at boot),
    /// then reconnecting for ever once connected.
    pub async fn connect(config: &BusConfig) -> Result<Bus, Error> {
        let namespace = Namespace::new(&config.subject_root)?;
        // The producer name travels in a header on every event: keep it a plain token.
        let producer_valid = !config.producer.is_empty()
            && config.producer.len() <= 64
            && config.producer.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !producer_valid {
            return Err(Error::InvalidProducer(config.producer.clone()));
        }
        let client = async_nats::ConnectOptions::new()
            .name(format!("provenant-{}", config.producer))
            .max_reconnects(None)
            .connect(config.url.expose().as_str())
            .await
            .map_err(|source| Error::Connect { url: config.url_for_display(), source })?;
        let jetstream = jetstream::new(client.clone());
        Ok(Bus { client, jetstream, namespace, config: config.clone() })
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Stream replicas this deployment asks for (1 on one server, 3 on a production cluster).
    pub fn replicas(&self) -> usize {
        self.config.replicas
    }

    /// How long JetStream remembers message ids to drop duplicate publishes.
    pub fn duplicate_window(&self) -> std::time::Duration {
        self.config.duplicate_window()
    }

    /// The producer name this process writes into envelopes.
    pub fn producer(&self) -> &str {
        &self.config.producer
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// A readiness check: ready while connected to NATS.
    pub fn readiness_check(&self) -> impl Fn() -> std::future::Ready<Result<(), String>> + Send + Sync + 'static {
        let bus = self.clone();
        move || std::future::ready(if bus.is_connected() { Ok(()) } else { Err("not connected to nats".to_owned()) })
    }

    /// Creates or updates the stream of every context and the dead-letter stream.
    ///
    /// The event log is the provenance record: file storage, no age or size limit, and the
    /// server refuses deletes and purges. Idempotent; every service calls it at boot.
    pub async fn declare_streams(&self) -> Result<(), Error> {
        for context in Context::ALL {
            self.declare(self.namespace.stream(context), vec![self.namespace.context_filter(context)]).await?;
        }
        self.declare(self.namespace.dead_letter_stream(), vec![self.namespace.dead_letter_filter()]).await
    }

    async fn declare(&self, name: String, subjects: Vec<String>) -> Result<(), Error> {
        let config = stream::Config {
            name: name.clone(),
            subjects,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.config.replicas,
            duplicate_window: self.config.duplicate_window(),
            deny_delete: true,
            deny_purge: true,
            // Reading an aggregate's last event directly needs this (see shared/DESIGN.md).
            allow_direct: true,
            ..Default::default()
        };
        self.jetstream.create_or_update_stream(config).await.map_err(|error| Error::Stream { stream: name, reason: error.to_string() })?;
        Ok(())
    }
}
