use async_nats::HeaderMap;
use bytes::Bytes;
use provenant_events::header;

use crate::{Bus, Envelope, Error, Event, HandleError, Outbox, PendingPublish, Upcasters};

/// One event as a consumer received it: the parsed envelope, the original payload bytes
/// (never re-encoded), and where it sits in its stream.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub envelope: Envelope,
    pub payload: Bytes,
    pub subject: String,
    pub stream_sequence: u64,
    /// 1 on first delivery, then one more per redelivery.
    pub delivered: i64,
    /// The confirmations the batch this delivery came in owes before it commits; empty and
    /// never awaited for an event read back from the log rather than consumed.
    pub(crate) outbox: Outbox,
}

impl Delivery {
    /// Decodes the payload as `E`, upcasting older versions.
    pub fn decode<E: Event>(&self, upcasters: &Upcasters) -> Result<E, provenant_events::Error> {
        upcasters.decode(&self.envelope, &self.payload)
    }

    /// Confirms `confirmation` (normally an append's acknowledgement, see [`Outbox`]) before
    /// the batch this event came in commits, instead of waiting for it now.
    pub fn confirm_before_commit(&self, confirmation: impl std::future::Future<Output = Result<(), HandleError>> + Send + 'static) {
        self.outbox.defer(confirmation);
    }

    /// Hands an append this handler sent (`bus.send`) to the batch, to be confirmed before it
    /// commits. A retry that finds its own earlier attempt's append at the subject's head is
    /// fine; another writer's event there rejects this event with `conflict_code` and
    /// `conflict` (it dead-letters, the rest of the batch commits).
    pub fn confirm_append_before_commit(&self, bus: &Bus, pending: PendingPublish, conflict_code: &'static str, conflict: String) {
        let bus = bus.clone();
        self.confirm_before_commit(async move {
            match pending.confirmed_once(&bus).await {
                Ok(_) => Ok(()),
                Err(Error::Conflict { .. }) => Err(HandleError::rejected(conflict_code, conflict)),
                Err(error) => Err(HandleError::Transient(error.into())),
            }
        });
    }

    /// Confirms every append the batch deferred so far: what a handler does before it reads
    /// back from the log something an earlier event of its batch may have appended.
    pub async fn confirm_deferred(&self) -> Result<(), HandleError> {
        self.outbox.confirm().await
    }

    pub(crate) fn parse(
        message: &async_nats::jetstream::Message,
        outbox: &Outbox,
    ) -> Result<Delivery, (u64, i64, provenant_events::Error)> {
        let (stream_sequence, delivered) = message.info().map(|info| (info.stream_sequence, info.delivered)).unwrap_or((0, 1));
        let headers = message.headers.as_ref();
        let envelope = Envelope::from_headers(|name| headers.and_then(|headers| headers.get(name)).map(|value| value.as_str()))
            .map_err(|error| (stream_sequence, delivered, error))?;
        Ok(Delivery {
            envelope,
            payload: message.payload.clone(),
            subject: message.subject.to_string(),
            stream_sequence,
            delivered,
            outbox: outbox.clone(),
        })
    }
}

/// Headers that a dead-letter record adds to the original message's headers.
pub mod dead_letter_header {
    pub const REASON_CODE: &str = "Pv-Dead-Reason-Code";
    pub const REASON: &str = "Pv-Dead-Reason";
    pub const CONSUMER: &str = "Pv-Dead-Consumer";
    pub const ORIGINAL_SUBJECT: &str = "Pv-Dead-Original-Subject";
    pub const ORIGINAL_SEQUENCE: &str = "Pv-Dead-Original-Sequence";
    pub const DELIVERIES: &str = "Pv-Dead-Deliveries";
}

/// A message a consumer gave up on, as read back from the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub consumer: String,
    pub reason_code: String,
    pub reason: String,
    pub original_subject: String,
    pub original_sequence: u64,
    pub deliveries: i64,
    /// The original payload, byte for byte, and its original headers.
    pub payload: Bytes,
    pub headers: HeaderMap,
}

impl DeadLetter {
    pub(crate) fn headers_for(
        original: &async_nats::jetstream::Message,
        consumer: &str,
        code: &str,
        reason: &str,
        sequence: u64,
        delivered: i64,
    ) -> HeaderMap {
        // The dead letter is a new message: it must not inherit the original's de-duplication id.
        let mut headers = HeaderMap::new();
        for (name, values) in original.headers.iter().flat_map(HeaderMap::iter) {
            if AsRef::<str>::as_ref(name).eq_ignore_ascii_case("Nats-Msg-Id") {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(dead_letter_header::REASON_CODE, code);
        // Header values cannot hold line breaks; reasons are for people, so flatten them.
        let reason: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(1_000).collect();
        headers.insert(dead_letter_header::REASON, reason.as_str());
        headers.insert(dead_letter_header::CONSUMER, consumer);
        headers.insert(dead_letter_header::ORIGINAL_SUBJECT, original.subject.as_str());
        headers.insert(dead_letter_header::ORIGINAL_SEQUENCE, sequence.to_string().as_str());
        headers.insert(dead_letter_header::DELIVERIES, delivered.to_string().as_str());
        headers
    }

    /// Reads a record of the dead-letter stream.
    pub fn from_message(headers: Option<&HeaderMap>, payload: Bytes) -> DeadLetter {
        let get = |name: &str| headers.and_then(|headers| headers.get(name)).map(|value| value.as_str().to_owned()).unwrap_or_default();
        DeadLetter {
            consumer: get(dead_letter_header::CONSUMER),
            reason_code: get(dead_letter_header::REASON_CODE),
            reason: get(dead_letter_header::REASON),
            original_subject: get(dead_letter_header::ORIGINAL_SUBJECT),
            original_sequence: get(dead_letter_header::ORIGINAL_SEQUENCE).parse().unwrap_or_default(),
            deliveries: get(dead_letter_header::DELIVERIES).parse().unwrap_or_default(),
            payload,
            headers: headers.cloned().unwrap_or_default(),
        }
    }

    /// The event id of the original, when it had a readable one.
    pub fn event_id(&self) -> Option<&str> {
        self.headers.get(header::EVENT_ID).map(|value| value.as_str())
    }
}
