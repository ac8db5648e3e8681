use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use std::time::Duration;

use tracing::warn;
use uuid::Uuid;

use crate::{Bus, Envelope, Error, Event};

/// What the publisher expects the aggregate's history to be, checked by the server atomically
/// with the append (`Nats-Expected-Last-Subject-Sequence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No check: for events that do not extend an aggregate's history (inference facts).
    Any,
    /// The aggregate must have no event yet: creation.
    NoEvents,
    /// The aggregate's last event must be at this stream sequence.
    LastSequence(u64),
}

/// Where an event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub event_id: Uuid,
    pub stream: String,
    pub sequence: u64,
    /// True when the server had this event id already and stored nothing new.
    pub duplicate: bool,
}

/// An event sent to the server whose acknowledgement has not been read yet. Sending many and
/// confirming them together is how a producer reaches full throughput (about 25× more than
/// one publish at a time, see shared/DESIGN.md).
#[derive(Debug)]
pub struct PendingPublish {
    ack: PublishAckFuture,
    stream: String,
    subject: String,
    expect: Expect,
    event_id: Uuid,
}

impl PendingPublish {
    /// Waits until the event is durable in its stream.
    pub async fn confirmed(self) -> Result<Published, Error> {
        let PendingPublish { ack, subject, expect, event_id, .. } = self;
        let ack = ack.await.map_err(|source| classify(subject, expect, source))?;
        Ok(Published { event_id, stream: ack.stream, sequence: ack.sequence, duplicate: ack.duplicate })
    }

    /// Waits until the event is durable, for an append whose event id derives from what caused
    /// it: when the expectation fails because the subject's last event is this very event (an
    /// earlier attempt landed, after the window that de-duplicates ids), that is success, with
    /// `duplicate: true`. Any other writer's event there is still [`Error::Conflict`].
    pub async fn confirmed_once(self, bus: &Bus) -> Result<Published, Error> {
        let (stream, event_id) = (self.stream.clone(), self.event_id);
        match self.confirmed().await {
            Err(Error::Conflict { subject, expected }) => match bus.last_event_on(&stream, &subject).await? {
                Some((sequence, Some(last))) if last == event_id.to_string() => {
                    Ok(Published { event_id, stream, sequence, duplicate: true })
                }
                _ => Err(Error::Conflict { subject, expected }),
            },
            outcome => outcome,
        }
    }
}

/// Attempts of [`Bus::publish`]: with doubling delays from 100 ms this rides out about 10 s of
/// an unavailable server.
const PUBLISH_ATTEMPTS: u32 = 8;

fn is_retryable(error: &Error) -> bool {
    match error {
        Error::Publish { source, .. } => matches!(
            source.kind(),
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::StreamNotFound | PublishErrorKind::MaxAckPending
        ),
        _ => false,
    }
}

impl std::future::IntoFuture for PendingPublish {
    type Output = Result<Published, Error>;
    type IntoFuture = futures::future::BoxFuture<'static, Result<Published, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.confirmed())
    }
}

fn classify(subject: String, expect: Expect, source: async_nats::jetstream::context::PublishError) -> Error {
    match source.kind() {
        PublishErrorKind::WrongLastSequence => Error::Conflict { subject, expected: expect },
        _ => Error::Publish { subject, source },
    }
}

impl Bus {
    /// Appends `event` to its aggregate's subject and waits until it is durable.
    ///
    /// The event id is the `Nats-Msg-Id`, so publishing the same envelope again (a retry after
    /// a lost ack) stores nothing new and returns `duplicate: true`. A failed `expect` is
    /// [`Error::Conflict`].
    ///
    /// A lost or late acknowledgement (NATS restarting, a leader election) is retried a few
    /// times with backoff: the event id makes the retry safe, since a copy that did land is
    /// reported as a duplicate rather than stored twice.
    pub async fn publish<E: Event>(&self, envelope: &Envelope, event: &E, expect: Expect) -> Result<Published, Error> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = match self.send(envelope, event, expect).await {
                Ok(pending) => pending.confirmed().await,
                Err(error) => Err(error),
            };
            match result {
                Err(error) if attempt < PUBLISH_ATTEMPTS && is_retryable(&error) => {
                    warn!(%error, attempt, "failed to publish event, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Sends `event` without waiting for its acknowledgement; see [`PendingPublish`].
    pub async fn send<E: Event>(&self, envelope: &Envelope, event: &E, expect: Expect) -> Result<PendingPublish, Error> {
        debug_assert_eq!(envelope.event_type, E::TYPE, "envelope built for another event type");
        debug_assert_eq!(envelope.aggregate_id, event.aggregate_id(), "envelope names another aggregate");
        let subject = self.namespace().subject_of(event)?;
        // Built straight into the header map with static names and owned values: this path
        // runs once per event and allocation dominated its profile.
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in envelope.headers() {
            headers.insert(async_nats::header::HeaderName::from_static(name), value);
        }
        headers.insert(async_nats::header::NATS_MESSAGE_ID, envelope.event_id.to_string());
        provenant_telemetry::propagation::inject_current(|name, value| {
            if let Ok(name) = name.parse::<async_nats::header::HeaderName>() {
                headers.insert(name, value);
            }
        });
        let mut message = PublishMessage::build().payload(event.encode_to_vec().into()).headers(headers);
        message = match expect {
            Expect::Any => message,
            Expect::NoEvents => message.expected_last_subject_sequence(0),
            Expect::LastSequence(sequence) => message.expected_last_subject_sequence(sequence),
        };
        let ack =
            self.jetstream().send_publish(subject.clone(), message).await.map_err(|source| classify(subject.clone(), expect, source))?;
        metrics::counter!("bus_events_published_total", "type" => E::TYPE).increment(1);
        Ok(PendingPublish { ack, stream: self.namespace().stream(E::CONTEXT), subject, expect, event_id: envelope.event_id })
    }

    /// The stream sequence of an aggregate's last event, or `None` when it has none: the value
    /// to pass as [`Expect::LastSequence`] after reading the aggregate.
    pub async fn last_sequence(&self, context: crate::Context, aggregate: &str, aggregate_id: &str) -> Result<Option<u64>, Error> {
        Ok(self.last_event(context, aggregate, aggregate_id).await?.map(|(sequence, _)| sequence))
    }

    /// The stream sequence and event id of an aggregate's last event. A producer whose append
    /// met a conflict uses it to tell "I appended this before" from "someone else appended".
    pub async fn last_event(
        &self,
        context: crate::Context,
        aggregate: &str,
        aggregate_id: &str,
    ) -> Result<Option<(u64, Option<String>)>, Error> {
        let subject = self.namespace().subject(context, aggregate, aggregate_id)?;
        self.last_event_on(&self.namespace().stream(context), &subject).await
    }

    async fn last_event_on(&self, stream: &str, subject: &str) -> Result<Option<(u64, Option<String>)>, Error> {
        let stream = self.jetstream().get_stream_no_info(stream).await.map_err(Error::nats)?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(message) => {
                let event_id = message.headers.get(provenant_events::header::EVENT_ID).map(|value| value.as_str().to_owned());
                Ok(Some((message.sequence, event_id)))
            }
            Err(error) if matches!(error.kind(), async_nats::jetstream::stream::DirectGetErrorKind::NotFound) => Ok(None),
            Err(error) => Err(Error::nats(error)),
        }
    }
}
