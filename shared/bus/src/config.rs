use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the event log lives and how its streams are declared.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// NATS server URL(s), comma separated. May carry credentials (`nats://user:pass@host`), so
    /// it is a secret: `--dump-config` shows it redacted.
    pub url: provenant_config::Secret<String>,
    /// First subject token and stream-name prefix; `pv` in production, random in tests.
    #[serde(default = "default_root")]
    pub subject_root: String,
    /// Stream replicas: 1 on a single server, 3 on a production cluster.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long JetStream remembers message ids to drop duplicate publishes.
    #[serde(default = "default_duplicate_window_seconds")]
    pub duplicate_window_seconds: u64,
    /// Producer name written into every envelope this process publishes.
    #[serde(default)]
    pub producer: String,
}

fn default_root() -> String {
    "pv".to_owned()
}

fn default_replicas() -> usize {
    1
}

fn default_duplicate_window_seconds() -> u64 {
    120
}

impl BusConfig {
    pub fn new(url: &str, producer: &str) -> BusConfig {
        BusConfig {
            url: provenant_config::Secret::new(url.to_owned()),
            subject_root: default_root(),
            replicas: default_replicas(),
            duplicate_window_seconds: default_duplicate_window_seconds(),
            producer: producer.to_owned(),
        }
    }

    /// The URL(s) without credentials, for messages: `nats://***@host:4222`.
    pub fn url_for_display(&self) -> String {
        self.url
            .expose()
            .split(',')
            .map(|url| match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
                (None, Some(at)) => format!("***{}", &url[at..]),
                _ => url.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_seconds)
    }
}

/// How a durable consumer pulls, retries and gives up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Messages applied per database transaction.
    pub batch_size: usize,
    /// Seconds the server waits for an ack before redelivering (a crashed consumer's messages
    /// come back after this).
    pub ack_wait_seconds: u64,
    /// Deliveries before a message that keeps failing transiently goes to the dead letters.
    pub max_deliver: i64,
    /// First retry delay in milliseconds; doubles on each delivery up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig { batch_size: 256, ack_wait_seconds: 30, max_deliver: 8, initial_backoff_ms: 500, max_backoff_ms: 60_000 }
    }
}

impl ConsumerConfig {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_seconds)
    }

    /// The delay before redelivery number `delivered + 1`.
    pub fn backoff(&self, delivered: i64) -> Duration {
        let exponent = u32::try_from(delivered.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let delay = self.initial_backoff_ms.saturating_mul(1u64 << exponent);
        Duration::from_millis(delay.min(self.max_backoff_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_never_show() {
        let config = BusConfig::new("nats://svc:s3cret@nats-0:4222,tls://token@nats-1:4222,nats://plain:4222", "x");
        assert_eq!(config.url_for_display(), "nats://***@nats-0:4222,tls://***@nats-1:4222,nats://plain:4222");
        let dumped = serde_json::to_string(&config).expect("serialises");
        assert!(!dumped.contains("s3cret") && !dumped.contains("token"), "{dumped}");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = ConsumerConfig { initial_backoff_ms: 100, max_backoff_ms: 1_000, ..Default::default() };
        let delays: Vec<u128> = (1..=6).map(|delivered| config.backoff(delivered).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }
}
