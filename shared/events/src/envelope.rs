use chrono::{DateTime, SecondsFormat, SubsecRound as _, Utc};
use uuid::Uuid;

use crate::{Error, Event};

/// Header names of the envelope. They use their own `Pv-` prefix: `Nats-` belongs to the
/// server. The event id is also sent as `Nats-Msg-Id` (by the bus) for de-duplication, and
/// the W3C trace context travels in the standard `traceparent` and `tracestate` headers.
pub mod header {
    pub const EVENT_TYPE: &str = "Pv-Event-Type";
    pub const SCHEMA_VERSION: &str = "Pv-Schema-Version";
    pub const EVENT_ID: &str = "Pv-Event-Id";
    pub const AGGREGATE_ID: &str = "Pv-Aggregate-Id";
    pub const CAUSATION_ID: &str = "Pv-Causation-Id";
    pub const CORRELATION_ID: &str = "Pv-Correlation-Id";
    pub const PRODUCER: &str = "Pv-Producer";
    pub const OCCURRED_AT: &str = "Pv-Occurred-At";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// Metadata of one event, carried in message headers next to the protobuf payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Envelope {
    pub event_type: String,
    pub schema_version: u32,
    /// UUIDv7: unique, and sortable by creation time.
    pub event_id: Uuid,
    pub aggregate_id: String,
    /// The event (or command) that directly caused this one.
    pub causation_id: Option<Uuid>,
    /// Shared by every event of one business flow (a contribution, a training job, a payout).
    pub correlation_id: Uuid,
    /// Service that produced the event ("ingest", or an external producer's name).
    pub producer: String,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context as received; publishing injects the current span's instead.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Envelope {
    /// A new envelope for `event`, starting its own correlation.
    pub fn new<E: Event>(event: &E, producer: &str) -> Envelope {
        let event_id = Uuid::now_v7();
        Envelope {
            event_type: E::TYPE.to_owned(),
            schema_version: E::VERSION,
            event_id,
            aggregate_id: event.aggregate_id().to_owned(),
            causation_id: None,
            correlation_id: event_id,
            producer: producer.to_owned(),
            // Microseconds, what the header carries, so an envelope equals its wire form.
            occurred_at: Utc::now().trunc_subsecs(6),
            traceparent: None,
            tracestate: None,
        }
    }

    /// Marks this event as caused by `cause`, continuing its correlation.
    #[must_use]
    pub fn caused_by(mut self, cause: &Envelope) -> Envelope {
        self.causation_id = Some(cause.event_id);
        self.correlation_id = cause.correlation_id;
        self
    }

    /// The envelope's headers, trace context excluded (the bus injects the live one).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (header::EVENT_TYPE, self.event_type.clone()),
            (header::SCHEMA_VERSION, self.schema_version.to_string()),
            (header::EVENT_ID, self.event_id.to_string()),
            (header::AGGREGATE_ID, self.aggregate_id.clone()),
            (header::CORRELATION_ID, self.correlation_id.to_string()),
            (header::PRODUCER, self.producer.clone()),
            (header::OCCURRED_AT, self.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        ];
        if let Some(causation_id) = self.causation_id {
            headers.push((header::CAUSATION_ID, causation_id.to_string()));
        }
        headers
    }

    /// Parses an envelope from headers; every required header must be present and well formed,
    /// because a message from another producer is outside input.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Envelope, Error> {
        let required = |name: &'static str| get(name).filter(|value| !value.is_empty()).ok_or(Error::MissingHeader(name));
        let uuid = |name: &'static str, value: &str| {
            Uuid::parse_str(value).map_err(|error| Error::InvalidHeader { name, reason: error.to_string() })
        };
        let event_type = required(header::EVENT_TYPE)?;
        if event_type.len() > 128 || !event_type.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
            return Err(Error::InvalidHeader { name: header::EVENT_TYPE, reason: "not a type name".into() });
        }
        let schema_version = required(header::SCHEMA_VERSION)?
            .parse::<u32>()
            .ok()
            .filter(|version| *version > 0)
            .ok_or_else(|| Error::InvalidHeader { name: header::SCHEMA_VERSION, reason: "not a positive integer".into() })?;
        let event_id = uuid(header::EVENT_ID, required(header::EVENT_ID)?)?;
        let correlation_id = uuid(header::CORRELATION_ID, required(header::CORRELATION_ID)?)?;
        let causation_id =
            get(header::CAUSATION_ID).filter(|value| !value.is_empty()).map(|value| uuid(header::CAUSATION_ID, value)).transpose()?;
        let occurred_at = DateTime::parse_from_rfc3339(required(header::OCCURRED_AT)?)
            .map_err(|error| Error::InvalidHeader { name: header::OCCURRED_AT, reason: error.to_string() })?
            .with_timezone(&Utc);
        Ok(Envelope {
            event_type: event_type.to_owned(),
            schema_version,
            event_id,
            aggregate_id: required(header::AGGREGATE_ID)?.to_owned(),
            causation_id,
            correlation_id,
            producer: required(header::PRODUCER)?.to_owned(),
            occurred_at,
            traceparent: get(header::TRACEPARENT).map(str::to_owned),
            tracestate: get(header::TRACESTATE).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::proto::datanet::v1::DatanetCreated;

    fn created() -> DatanetCreated {
        DatanetCreated { datanet_id: "dn-1".into(), ..Default::default() }
    }

    #[test]
    fn an_envelope_survives_its_headers() {
        let cause = Envelope::new(&created(), "ingest");
        let envelope = Envelope::new(&created(), "validate").caused_by(&cause);
        let headers: HashMap<&str, String> = envelope.headers().into_iter().collect();
        let parsed = Envelope::from_headers(|name| headers.get(name).map(String::as_str)).expect("parses");
        assert_eq!(parsed, envelope);
        assert_eq!(parsed.correlation_id, cause.event_id);
        assert_eq!(parsed.event_id.get_version_num(), 7);
    }

    #[test]
    fn a_missing_or_malformed_header_is_named() {
        let envelope = Envelope::new(&created(), "ingest");
        let mut headers: HashMap<&str, String> = envelope.headers().into_iter().collect();
        headers.remove(header::PRODUCER);
        let error = Envelope::from_headers(|name| headers.get(name).map(String::as_str)).expect_err("rejects");
        assert!(matches!(error, Error::MissingHeader(header::PRODUCER)));

        headers.insert(header::PRODUCER, "ingest".into());
        headers.insert(header::EVENT_ID, "not-a-uuid".into());
        let error = Envelope::from_headers(|name| headers.get(name).map(String::as_str)).expect_err("rejects");
        assert_eq!(error.code(), "envelope.invalid_header");
    }
}
