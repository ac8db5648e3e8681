//! Following issued API keys: every service that authenticates callers keeps its
//! [`Directory`] current from `ApiKeyIssued` and `ApiKeyRevoked`.
//!
//! An ordered consumer (ephemeral, no acks, replay from the first event) rebuilds the issued
//! keys in memory at boot and then follows; the log is the only store. [`follow_identity`]
//! returns once the directory has caught up with the log as it was at the call, so a service
//! never answers with a key list older than its start.

use std::sync::Arc;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt as _;
use provenant_events::proto::identity::v1::{self as proto, ApiKeyIssued, ApiKeyRevoked};
use provenant_events::{Context, Event as _, Upcasters};
use provenant_runtime::Shutdown;
use provenant_runtime::identity::{Directory, IssuedKey, Principal, Role, parse_principal_id};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{Bus, Delivery, Error};

pub fn role_to_proto(role: Role) -> proto::Role {
    match role {
        Role::Contributor => proto::Role::Contributor,
        Role::DatanetOwner => proto::Role::DatanetOwner,
        Role::ModelBuilder => proto::Role::ModelBuilder,
        Role::Finance => proto::Role::Finance,
        Role::Admin => proto::Role::Admin,
    }
}

fn role_from_proto(role: proto::Role) -> Option<Role> {
    match role {
        proto::Role::Contributor => Some(Role::Contributor),
        proto::Role::DatanetOwner => Some(Role::DatanetOwner),
        proto::Role::ModelBuilder => Some(Role::ModelBuilder),
        proto::Role::Finance => Some(Role::Finance),
        proto::Role::Admin => Some(Role::Admin),
        proto::Role::Unspecified => None,
    }
}

/// Catches `directory` up with the identity log, then follows it in a task until `shutdown`.
pub async fn follow_identity(bus: &Bus, directory: Arc<Directory>, shutdown: Shutdown) -> Result<JoinHandle<()>, Error> {
    let stream_name = bus.namespace().stream(Context::Identity);
    let failed = |reason: String| Error::Consumer { consumer: format!("{stream_name} (identity follower)"), reason };
    let stream = bus.jetstream().get_stream(&stream_name).await.map_err(|error| failed(error.to_string()))?;
    let config = pull::OrderedConfig {
        filter_subject: bus.namespace().aggregate_filter(Context::Identity, "api_key"),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let mut consumer = stream.create_consumer(config).await.map_err(|error| failed(error.to_string()))?;
    let mut backlog = consumer.info().await.map_err(|error| failed(error.to_string()))?.num_pending;
    let mut messages = consumer.messages().await.map_err(|error| failed(error.to_string()))?;
    let upcasters = Upcasters::contract();
    while backlog > 0 {
        let message = messages
            .next()
            .await
            .ok_or_else(|| failed("the identity log ended during catch-up".to_owned()))?
            .map_err(|error| failed(error.to_string()))?;
        backlog = message.info().map(|info| info.pending).unwrap_or(0);
        apply(&directory, &upcasters, &message);
    }
    info!(keys = directory.issued_keys().len(), "issued API keys loaded");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = messages.next() => match next {
                    Some(Ok(message)) => apply(&directory, &upcasters, &message),
                    // The ordered consumer recreates itself across gaps and reconnects.
                    Some(Err(error)) => warn!(%error, "identity follower: message error"),
                    None => {
                        warn!("identity follower: the message stream ended; no key changes will be seen until restart");
                        return;
                    }
                },
            }
        }
    }))
}

/// Applies one identity event; malformed ones are logged and skipped (there is no dead-letter
/// stream for an ephemeral follower; the producer validated them).
fn apply(directory: &Directory, upcasters: &Upcasters, message: &async_nats::jetstream::Message) {
    let delivery = match Delivery::parse(message) {
        Ok(delivery) => delivery,
        Err((sequence, _, error)) => {
            warn!(sequence, %error, "identity follower: event without a valid envelope skipped");
            return;
        }
    };
    let outcome = match delivery.envelope.event_type.as_str() {
        ApiKeyIssued::TYPE => {
            delivery.decode::<ApiKeyIssued>(upcasters).map_err(|error| error.to_string()).and_then(|event| issue(directory, event))
        }
        ApiKeyRevoked::TYPE => delivery
            .decode::<ApiKeyRevoked>(upcasters)
            .map(|event| {
                directory.revoke(&event.key_id);
            })
            .map_err(|error| error.to_string()),
        _ => Ok(()),
    };
    if let Err(reason) = outcome {
        warn!(sequence = delivery.stream_sequence, %reason, "identity follower: event skipped");
    }
}

fn issue(directory: &Directory, event: ApiKeyIssued) -> Result<(), String> {
    let hash: [u8; 32] =
        hex::decode(&event.key_sha256).ok().and_then(|bytes| bytes.try_into().ok()).ok_or("key_sha256 is not a SHA-256")?;
    let id = parse_principal_id(&event.principal_id)?;
    let roles: Vec<Role> = event.roles().filter_map(role_from_proto).collect();
    if roles.is_empty() {
        return Err("a key without roles".to_owned());
    }
    let key = IssuedKey { key_id: event.key_id, principal: Principal { id, roles }, label: event.label };
    if directory.issue(hash, key) { Ok(()) } else { Err("the key's hash is already in use".to_owned()) }
}
