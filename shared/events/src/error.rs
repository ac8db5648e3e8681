/// Why an event could not be named, read or decoded. Every variant is permanent: a message
/// that fails with one of these will fail the same way on every redelivery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("invalid header {name}: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    #[error("expected event type {expected}, got {actual}")]
    TypeMismatch { expected: &'static str, actual: String },
    #[error("event {event_type} version {version} is newer than this build understands (up to {supported})")]
    VersionFromTheFuture { event_type: String, version: u32, supported: u32 },
    #[error("no upcaster for {event_type} from version {version}")]
    NoUpcaster { event_type: String, version: u32 },
    #[error("upcasting {event_type} from version {version} failed: {reason}")]
    Upcast { event_type: String, version: u32, reason: String },
    #[error("undecodable {event_type} payload: {source}")]
    Decode {
        event_type: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName { what: &'static str, value: String, reason: &'static str },
}

impl Error {
    /// A stable, machine-readable code for dead-letter records and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingHeader(_) => "envelope.missing_header",
            Error::InvalidHeader { .. } => "envelope.invalid_header",
            Error::TypeMismatch { .. } => "event.type_mismatch",
            Error::VersionFromTheFuture { .. } => "event.version_unsupported",
            Error::NoUpcaster { .. } => "event.no_upcaster",
            Error::Upcast { .. } => "event.upcast_failed",
            Error::Decode { .. } => "event.undecodable",
            Error::InvalidName { .. } => "subject.invalid_name",
        }
    }
}
