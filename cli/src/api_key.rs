//! `provenant api-key new`: a fresh key for the operator to hand over, and the configuration
//! entry that enables it. Only the SHA-256 goes into configuration; the key is shown once.

#![allow(clippy::print_stdout, reason = "the key and its entry are the command's output")]

use anyhow::Context as _;
use provenant_runtime::identity::{ApiKeyConfig, IdentityConfig, Role, hash_key};

pub fn print_new(principal: &str, roles: &[String]) -> anyhow::Result<()> {
    let roles = roles
        .iter()
        .map(|role| {
            serde_json::from_value::<Role>(serde_json::Value::String(role.clone())).with_context(|| format!("unknown role {role:?}"))
        })
        .collect::<anyhow::Result<Vec<Role>>>()?;
    let key = provenant_runtime::identity::generate_key();
    let entry = ApiKeyConfig { principal: principal.to_owned(), roles, key_sha256: hex::encode(hash_key(&key)) };
    // Checked as the service will check it, so a bad principal fails here rather than at boot.
    provenant_runtime::identity::Directory::from_config(&IdentityConfig { api_keys: vec![entry.clone()] })?;
    println!("key (give it to {principal}; it is not stored anywhere): {key}");
    println!("configuration entry (add under identity.api_keys):");
    println!("{}", serde_json::to_string_pretty(&entry)?);
    Ok(())
}
