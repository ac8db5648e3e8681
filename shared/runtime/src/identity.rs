//! Who is calling: API keys mapped to principals with roles.
//!
//! Keys are issued out of band (configuration now; an admin endpoint later) and only their
//! SHA-256 is stored, so a leaked configuration does not leak a usable key. Keys are long
//! random strings (`pvk_` + 32 random bytes, hex), which is why a plain SHA-256 suffices.
//! There is no public sign-up.

use std::collections::HashMap;
use std::sync::Arc;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// Key hashes → principals, checked at boot.
#[derive(Debug, Default)]
pub struct Directory {
    by_key_hash: HashMap<[u8; 32], Principal>,
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
        Ok(Directory { by_key_hash })
    }

    pub fn authenticate(&self, key: &str) -> Option<&Principal> {
        self.by_key_hash.get(&hash_key(key))
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
    directory.authenticate(key).cloned().ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "auth.invalid_key", "unknown API key"))
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
        assert_eq!(directory.authenticate("pvk_secret").map(|principal| principal.id.as_str()), Some("alice"));
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
    fn admins_have_every_role() {
        let admin = Principal { id: "root".into(), roles: vec![Role::Admin] };
        assert!(admin.has(Role::Finance));
        let contributor = Principal { id: "c".into(), roles: vec![Role::Contributor] };
        assert!(!contributor.has(Role::DatanetOwner));
    }
}
