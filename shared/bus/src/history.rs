//! Reading one aggregate's events straight from its stream, for producers that decide from
//! the aggregate's own history (a training worker resuming a job) rather than a projection.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt as _;

use crate::{Bus, Context, Delivery, Envelope, Error};

impl Bus {
    /// Every event of the aggregate, in stream order; empty when it has none.
    pub async fn aggregate_history(&self, context: Context, aggregate: &str, aggregate_id: &str) -> Result<Vec<Delivery>, Error> {
        let subject = self.namespace().subject(context, aggregate, aggregate_id)?;
        let stream = self.jetstream().get_stream_no_info(self.namespace().stream(context)).await.map_err(Error::nats)?;
        let config = pull::OrderedConfig { filter_subject: subject, deliver_policy: DeliverPolicy::All, ..Default::default() };
        let mut consumer = stream.create_consumer(config).await.map_err(Error::nats)?;
        let mut remaining = consumer.info().await.map_err(Error::nats)?.num_pending;
        let mut history = Vec::with_capacity(usize::try_from(remaining).unwrap_or(0));
        if remaining == 0 {
            return Ok(history);
        }
        let mut messages = consumer.messages().await.map_err(Error::nats)?;
        while remaining > 0 {
            let message = messages.next().await.ok_or_else(|| Error::Nats("history ended early".into()))?.map_err(Error::nats)?;
            remaining = message.info().map_err(Error::nats)?.pending;
            let delivery = Delivery::parse(&message, &crate::Outbox::default()).map_err(|(_, _, error)| Error::Event(error))?;
            history.push(delivery);
        }
        Ok(history)
    }

    /// How many messages one aggregate type holds in its stream (every instance, every event
    /// type): what a reconciliation compares its projection's row count with.
    pub async fn count_messages(&self, context: Context, aggregate: &str) -> Result<u64, Error> {
        let filter_subject = self.namespace().aggregate_filter(context, aggregate);
        let stream = self.jetstream().get_stream_no_info(self.namespace().stream(context)).await.map_err(Error::nats)?;
        let config = pull::OrderedConfig { filter_subject, deliver_policy: DeliverPolicy::All, ..Default::default() };
        let mut consumer = stream.create_consumer(config).await.map_err(Error::nats)?;
        Ok(consumer.info().await.map_err(Error::nats)?.num_pending)
    }

    /// The aggregate's last event, read directly (one round trip), or `None`.
    pub async fn last_delivery(&self, context: Context, aggregate: &str, aggregate_id: &str) -> Result<Option<Delivery>, Error> {
        let subject = self.namespace().subject(context, aggregate, aggregate_id)?;
        let stream = self.jetstream().get_stream_no_info(self.namespace().stream(context)).await.map_err(Error::nats)?;
        let message = match stream.direct_get_last_for_subject(subject).await {
            Ok(message) => message,
            Err(error) if matches!(error.kind(), async_nats::jetstream::stream::DirectGetErrorKind::NotFound) => return Ok(None),
            Err(error) => return Err(Error::nats(error)),
        };
        let envelope = Envelope::from_headers(|name| message.headers.get(name).map(|value| value.as_str()))?;
        Ok(Some(Delivery {
            envelope,
            payload: message.payload.clone(),
            subject: message.subject.to_string(),
            stream_sequence: message.sequence,
            delivered: 1,
            outbox: crate::Outbox::default(),
        }))
    }
}
