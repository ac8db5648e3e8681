//! Who is calling: API keys mapped to principals with roles.
//!
//! Keys come from configuration (bootstrap and break-glass keys) or from an admin through the
//! ingest service's `/v1/admin/api-keys`, which appends `ApiKeyIssued` / `ApiKeyRevoked`
//! events that every authenticating service follows into its [`Directory`]. Only a key's
//! SHA-256 is stored or sent, so a leaked configuration or event log leaks no usable key. Keys
//! are long random strings (`pvk_` + 32 random bytes, hex), which is why a plain SHA-256
//! suffices. There is no public sign-up.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// Principal ids are subject-safe tokens: 1 to 128 of `[A-Za-z0-9_-]`.
pub fn parse_principal_id(value: &str) -> Result<String, String> {
    let valid = !value.is_empty() && value.len() <= 128 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid { Ok(value.to_owned()) } else { Err("principal ids use 1 to 128 of [A-Za-z0-9_-]".to_owned()) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Contributor,
    DatanetOwner,
    ModelBuilder,
    Finance,
    Admin,
}

/// One issued key, as configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub principal: String,
    pub roles: Vec<Role>,
    /// Lower-case hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub key_sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Refuses with 403 unless the caller has `role` (admins have every role).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "auth.forbidden", format!("this needs the {role:?} role")))
        }
    }
}

/// Key hashes → principals: the configured keys, checked at boot, and the issued ones, as the
/// identity events say.
#[derive(Debug, Default)]
pub struct Directory {
    by_key_hash: HashMap<[u8; 32], Principal>,
    issued: RwLock<Issued>,
}

#[derive(Debug, Default)]
struct Issued {
    by_key_hash: HashMap<[u8; 32], IssuedKey>,
    hash_by_key_id: HashMap<String, [u8; 32]>,
}

/// A key issued by an admin (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    pub key_id: String,
    pub principal: Principal,
    pub label: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("api key {index}: key_sha256 must be 64 hexadecimal characters")]
    BadHash { index: usize },
    #[error("api key {index}: {message}")]
    BadPrincipal { index: usize, message: String },
    #[error("api key {index}: at least one role is needed")]
    NoRoles { index: usize },
    #[error("api key {index}: the same key is configured twice")]
    Duplicate { index: usize },
}

/// A new key: `pvk_` and 32 random bytes in hex. Shown once; only its hash is kept.
pub fn generate_key() -> String {
    use rand::RngCore as _;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("pvk_{}", hex::encode(secret))
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Directory {
    pub fn from_config(config: &IdentityConfig) -> Result<Directory, DirectoryError> {
        let mut by_key_hash = HashMap::new();
        for (index, key) in config.api_keys.iter().enumerate() {
            let hash: [u8; 32] =
                hex::decode(&key.key_sha256).ok().and_then(|bytes| bytes.try_into().ok()).ok_or(DirectoryError::BadHash { index })?;
            let id = parse_principal_id(&key.principal).map_err(|message| DirectoryError::BadPrincipal { index, message })?;
            if key.roles.is_empty() {
                return Err(DirectoryError::NoRoles { index });
            }
            if by_key_hash.insert(hash, Principal { id, roles: key.roles.clone() }).is_some() {
                return Err(DirectoryError::Duplicate { index });
            }
        }
        Ok(Directory { by_key_hash, issued: RwLock::default() })
    }

    pub fn authenticate(&self, key: &str) -> Option<Principal> {
        let hash = hash_key(key);
        if let Some(principal) = self.by_key_hash.get(&hash) {
            return Some(principal.clone());
        }
        self.read_issued().by_key_hash.get(&hash).map(|issued| issued.principal.clone())
    }

    /// Applies `ApiKeyIssued`. A hash that is already configured or issued under another id is
    /// ignored (and reported): one key authenticates one principal.
    pub fn issue(&self, key_sha256: [u8; 32], key: IssuedKey) -> bool {
        if self.by_key_hash.contains_key(&key_sha256) {
            return false;
        }
        let mut issued = self.write_issued();
        if issued.by_key_hash.get(&key_sha256).is_some_and(|existing| existing.key_id != key.key_id) {
            return false;
        }
        issued.hash_by_key_id.insert(key.key_id.clone(), key_sha256);
        issued.by_key_hash.insert(key_sha256, key);
        true
    }

    /// Applies `ApiKeyRevoked`; says whether the key was live.
    pub fn revoke(&self, key_id: &str) -> bool {
        let mut issued = self.write_issued();
        match issued.hash_by_key_id.remove(key_id) {
            Some(hash) => issued.by_key_hash.remove(&hash).is_some(),
            None => false,
        }
    }

    /// The live issued keys, by key id.
    pub fn issued_keys(&self) -> Vec<IssuedKey> {
        let mut keys: Vec<IssuedKey> = self.read_issued().by_key_hash.values().cloned().collect();
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        keys
    }

    pub fn issued_key(&self, key_id: &str) -> Option<IssuedKey> {
        let issued = self.read_issued();
        issued.hash_by_key_id.get(key_id).and_then(|hash| issued.by_key_hash.get(hash)).cloned()
    }

    // A poisoned lock means a panic while a map was being updated, and each update is two
    // inserts that cannot panic midway; the data is whole, so it is used as is.
    fn read_issued(&self) -> std::sync::RwLockReadGuard<'_, Issued> {
        self.issued.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_issued(&self) -> std::sync::RwLockWriteGuard<'_, Issued> {
        self.issued.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `Authorization: Bearer <key>` extractor, for any router state that holds the
/// [`Directory`]: 401 with a stable code when the key is absent, malformed or unknown.
impl<S> FromRequestParts<S> for Principal
where
    Arc<Directory>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, &Arc::<Directory>::from_ref(state))
    }
}

fn authenticate(parts: &Parts, directory: &Arc<Directory>) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "auth.missing", "send Authorization: Bearer <api key>"))?;
    let key =
        header.to_str().ok().and_then(|value| value.strip_prefix("Bearer ")).map(str::trim).filter(|key| !key.is_empty()).ok_or_else(
            || ApiError::new(StatusCode::UNAUTHORIZED, "auth.malformed", "use the Bearer scheme: Authorization: Bearer <api key>"),
        )?;
    directory.authenticate(key).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "auth.invalid_key", "unknown API key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hash: &str, principal: &str, roles: Vec<Role>) -> IdentityConfig {
        IdentityConfig { api_keys: vec![ApiKeyConfig { principal: principal.into(), roles, key_sha256: hash.into() }] }
    }

    #[test]
    fn a_configured_key_authenticates_its_principal_and_nothing_else_does() {
        let hash = hex::encode(hash_key("pvk_secret"));
        let directory = Directory::from_config(&config(&hash, "alice", vec![Role::Contributor])).expect("valid");
        assert_eq!(directory.authenticate("pvk_secret").map(|principal| principal.id), Some("alice".to_owned()));
        assert!(directory.authenticate("pvk_other").is_none());
        assert!(directory.authenticate(&hash).is_none(), "the stored hash is not a key");
    }

    #[test]
    fn a_bad_key_configuration_fails_at_boot() {
        let hash = hex::encode(hash_key("k"));
        assert!(matches!(Directory::from_config(&config("abc", "alice", vec![Role::Admin])), Err(DirectoryError::BadHash { .. })));
        assert!(matches!(Directory::from_config(&config(&hash, "a b", vec![Role::Admin])), Err(DirectoryError::BadPrincipal { .. })));
        assert!(matches!(Directory::from_config(&config(&hash, "alice", vec![])), Err(DirectoryError::NoRoles { .. })));
    }

    #[test]
    fn issued_keys_authenticate_until_revoked_and_never_shadow_a_configured_key() {
        let configured = hex::encode(hash_key("pvk_configured"));
        let directory = Directory::from_config(&config(&configured, "root", vec![Role::Admin])).expect("valid");
        let bob = Principal { id: "bob".into(), roles: vec![Role::Contributor] };
        let key = |id: &str, principal: &Principal| IssuedKey { key_id: id.into(), principal: principal.clone(), label: String::new() };
        assert!(directory.issue(hash_key("pvk_bob"), key("k1", &bob)));
        assert_eq!(directory.authenticate("pvk_bob"), Some(bob.clone()));
        assert!(!directory.issue(hash_key("pvk_configured"), key("k2", &bob)), "a configured key keeps its principal");
        assert_eq!(directory.authenticate("pvk_configured").map(|principal| principal.id), Some("root".to_owned()));
        assert!(!directory.issue(hash_key("pvk_bob"), key("k3", &bob)), "one hash, one key id");
        assert_eq!(directory.issued_keys().len(), 1);
        assert!(directory.revoke("k1"));
        assert!(!directory.revoke("k1"), "revoking twice changes nothing");
        assert_eq!(directory.authenticate("pvk_bob"), None);
    }

    #[test]
    fn admins_have_every_role() {
        let admin = Principal { id: "root".into(), roles: vec![Role::Admin] };
        assert!(admin.has(Role::Finance));
        let contributor = Principal { id: "c".into(), roles: vec![Role::Contributor] };
        assert!(!contributor.has(Role::DatanetOwner));
    }
}
