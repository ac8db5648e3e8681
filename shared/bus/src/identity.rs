//! Following issued API keys: every service that authenticates callers keeps its
//! [`Directory`] current from `ApiKeyIssued` and `ApiKeyRevoked`.
//!
//! A [`follow`](crate::follow::follow)er rebuilds the issued keys in memory at boot and then
//! follows; [`follow_identity`] returns once the directory has caught up with the log as it
//! was at the call, so a service never answers with a key list older than its start.

use std::sync::Arc;

use provenant_events::proto::identity::v1::{self as proto, ApiKeyIssued, ApiKeyRevoked};
use provenant_events::{Context, Event as _, Upcasters};
use provenant_runtime::Shutdown;
use provenant_runtime::identity::{Directory, IssuedKey, Principal, Role, parse_principal_id};
use tokio::task::JoinHandle;
use tracing::warn;

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
    let upcasters = Upcasters::contract();
    let apply_event = move |delivery: &Delivery| apply(&directory, &upcasters, delivery);
    crate::follow::follow(bus, Context::Identity, "api_key", apply_event, shutdown).await
}

/// Applies one identity event; malformed ones are logged and skipped (there is no dead-letter
/// stream for an ephemeral follower; the producer validated them).
fn apply(directory: &Directory, upcasters: &Upcasters, delivery: &Delivery) {
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
