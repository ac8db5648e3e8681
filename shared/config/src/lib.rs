//! Layered configuration for every Provenant process.
//!
//! Layers, later ones winning: the service's `base.yaml` (compiled into the binary, so a
//! binary runs anywhere), `<config dir>/base.yaml` and `<config dir>/<environment>.yaml` when
//! present (`PROVENANT_CONFIG_DIR`, default `configuration`; `PROVENANT_ENVIRONMENT`, default
//! `local`), then environment variables `PROVENANT_<SECTION>__<KEY>` (double underscore
//! between levels, e.g. `PROVENANT_BUS__URL`).
//!
//! Secrets are [`Secret`] values: they deserialize normally and print as `[redacted]`, so
//! `--dump-config` ([`dump`]) shows the effective configuration without leaking them.

use std::fmt;
use std::path::PathBuf;

use config::{Environment, File, FileFormat};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("failed to render configuration: {0}")]
    Render(#[from] serde_json::Error),
}

/// Where layered files are looked up and which environment's file applies.
#[derive(Debug, Clone)]
pub struct Layers {
    pub directory: PathBuf,
    pub environment: String,
}

impl Layers {
    /// Reads `PROVENANT_CONFIG_DIR` and `PROVENANT_ENVIRONMENT`.
    pub fn from_env() -> Layers {
        Layers {
            directory: std::env::var_os("PROVENANT_CONFIG_DIR").map_or_else(|| PathBuf::from("configuration"), PathBuf::from),
            environment: std::env::var("PROVENANT_ENVIRONMENT").unwrap_or_else(|_| "local".to_owned()),
        }
    }
}

/// Loads `T` from the embedded `base_yaml`, the layered files and `PROVENANT_` variables.
pub fn load<T: DeserializeOwned>(base_yaml: &str) -> Result<T, Error> {
    load_with(base_yaml, &Layers::from_env(), std::env::vars())
}

/// [`load`] with explicit layers and variables, for tests and for embedding one service's
/// configuration in another process.
pub fn load_with<T: DeserializeOwned>(
    base_yaml: &str,
    layers: &Layers,
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<T, Error> {
    // The two variables that choose the layers are not configuration keys themselves.
    let variables: config::Map<String, String> = variables
        .into_iter()
        .filter(|(name, _)| name.starts_with("PROVENANT_") && name != "PROVENANT_CONFIG_DIR" && name != "PROVENANT_ENVIRONMENT")
        .collect();
    let settings = config::Config::builder()
        .add_source(File::from_str(base_yaml, FileFormat::Yaml))
        .add_source(File::from(layers.directory.join("base.yaml")).required(false))
        .add_source(File::from(layers.directory.join(format!("{}.yaml", layers.environment))).required(false))
        .add_source(Environment::with_prefix("PROVENANT").prefix_separator("_").separator("__").try_parsing(true).source(Some(variables)))
        .build()?;
    Ok(settings.try_deserialize()?)
}

/// The effective configuration as pretty JSON, secrets redacted.
pub fn dump<T: Serialize>(config: &T) -> Result<String, Error> {
    Ok(serde_json::to_string_pretty(config)?)
}

/// A value that must not appear in logs or dumps (passwords, tokens, URLs with credentials).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Example {
        http: Http,
        database_url: Secret<String>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    struct Http {
        port: u16,
        host: String,
    }

    const BASE: &str = "http:\n  port: 8080\n  host: 127.0.0.1\ndatabase_url: sqlite://base.db\n";

    #[test]
    fn environment_file_then_variables_override_the_base() {
        let directory = tempfile::tempdir().expect("tempdir");
        std::fs::write(directory.path().join("production.yaml"), "http:\n  host: 0.0.0.0\n").expect("write");
        let layers = Layers { directory: directory.path().to_owned(), environment: "production".into() };
        let variables = [
            ("PROVENANT_HTTP__PORT".to_owned(), "9000".to_owned()),
            ("OTHER_HTTP__PORT".to_owned(), "1".to_owned()),
            ("PROVENANT_ENVIRONMENT".to_owned(), "ignored-here".to_owned()),
        ];
        let config: Example = load_with(BASE, &layers, variables).expect("loads");
        assert_eq!(config.http.port, 9000);
        assert_eq!(config.http.host, "0.0.0.0");
        assert_eq!(config.database_url.expose(), "sqlite://base.db");
    }

    #[test]
    fn dumps_and_debug_output_redact_secrets() {
        let layers = Layers { directory: PathBuf::from("/nonexistent"), environment: "local".into() };
        let variables = [("PROVENANT_DATABASE_URL".to_owned(), "postgres://user:hunter2@db/x".to_owned())];
        let config: Example = load_with(BASE, &layers, variables).expect("loads");
        let dumped = dump(&config).expect("dumps");
        assert!(!dumped.contains("hunter2"), "{dumped}");
        assert!(dumped.contains("[redacted]"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_malformed_value_is_a_clear_error() {
        let layers = Layers { directory: PathBuf::from("/nonexistent"), environment: "local".into() };
        let variables = [("PROVENANT_HTTP__PORT".to_owned(), "not-a-port".to_owned())];
        let error = load_with::<Example>(BASE, &layers, variables).expect_err("rejects");
        assert!(error.to_string().contains("port"), "{error}");
    }
}
