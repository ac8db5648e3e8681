use crate::Expect;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to connect to nats at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("invalid producer name {0:?}: use 1 to 64 of [A-Za-z0-9_-]")]
    InvalidProducer(String),
    #[error("failed to declare stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("failed to set up consumer {consumer}: {reason}")]
    Consumer { consumer: String, reason: String },
    /// Another writer appended to the aggregate first: reload it and decide again.
    #[error("concurrent append to {subject}: expected {expected:?}")]
    Conflict { subject: String, expected: Expect },
    #[error("failed to publish to {subject}: {source}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error(transparent)]
    Event(#[from] provenant_events::Error),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("nats request failed: {0}")]
    Nats(String),
    /// Raised only by the fault-injection feature, to simulate a process dying mid-batch.
    #[error("consumer crashed on purpose at {0}")]
    InjectedCrash(&'static str),
}

impl Error {
    pub(crate) fn nats(error: impl std::fmt::Display) -> Error {
        Error::Nats(error.to_string())
    }
}
