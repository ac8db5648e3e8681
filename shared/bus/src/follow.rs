//! Following one aggregate type's events into memory: the issued API keys every service
//! authenticates with, the model catalogue and prices the infer service serves from.
//!
//! An ordered consumer (ephemeral, no acks, replay from the first event) rebuilds the state at
//! boot and then follows; the log is the only store. [`follow`] returns once the state has
//! caught up with the log as it was at the call, so a service never answers from state older
//! than its start.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt as _;
use provenant_events::Context;
use provenant_runtime::Shutdown;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{Bus, Delivery, Error};

/// What a follower feeds its state with: every event of the followed aggregate type, in log
/// order. An event it cannot use is its to log and skip: an ephemeral follower has no
/// dead-letter stream, and the producer validated the event before appending it.
pub trait Apply: Send + 'static {
    fn apply(&mut self, delivery: &Delivery);
}

impl<F: FnMut(&Delivery) + Send + 'static> Apply for F {
    fn apply(&mut self, delivery: &Delivery) {
        self(delivery);
    }
}

/// Replays every `aggregate` event of `context` into `state`, then follows the log in a task
/// until `shutdown`. Returns after the catch-up.
pub async fn follow(
    bus: &Bus,
    context: Context,
    aggregate: &str,
    mut state: impl Apply,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, Error> {
    let stream_name = bus.namespace().stream(context);
    let label = format!("{stream_name} {aggregate} follower");
    let failed = |reason: String| Error::Consumer { consumer: label.clone(), reason };
    let stream = bus.jetstream().get_stream(&stream_name).await.map_err(|error| failed(error.to_string()))?;
    let config = pull::OrderedConfig {
        filter_subject: bus.namespace().aggregate_filter(context, aggregate),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let mut consumer = stream.create_consumer(config).await.map_err(|error| failed(error.to_string()))?;
    let mut backlog = consumer.info().await.map_err(|error| failed(error.to_string()))?.num_pending;
    let mut messages = consumer.messages().await.map_err(|error| failed(error.to_string()))?;
    let caught_up = backlog;
    while backlog > 0 {
        let message = messages
            .next()
            .await
            .ok_or_else(|| failed("the log ended during catch-up".to_owned()))?
            .map_err(|error| failed(error.to_string()))?;
        backlog = message.info().map(|info| info.pending).unwrap_or(0);
        deliver(&label, &mut state, &message);
    }
    info!(follower = %label, events = caught_up, "caught up with the log");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = messages.next() => match next {
                    Some(Ok(message)) => deliver(&label, &mut state, &message),
                    // The ordered consumer recreates itself across gaps and reconnects.
                    Some(Err(error)) => warn!(follower = %label, %error, "message error"),
                    None => {
                        warn!(follower = %label, "the message stream ended; no further changes will be seen until restart");
                        return;
                    }
                },
            }
        }
    }))
}

fn deliver(label: &str, state: &mut impl Apply, message: &async_nats::jetstream::Message) {
    // Followed, not consumed in batches: nothing a follower does is confirmed with a batch.
    match Delivery::parse(message, &crate::Outbox::default()) {
        Ok(delivery) => state.apply(&delivery),
        Err((sequence, _, error)) => warn!(follower = %label, sequence, %error, "event without a valid envelope skipped"),
    }
}
