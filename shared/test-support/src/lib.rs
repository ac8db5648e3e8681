//! Test plumbing (a dev-dependency only): real NATS servers and real databases for tests.
//!
//! - [`nats_url`]: the NATS 2.15 server `make test` started (`PV_TEST_NATS_URL`), or one
//!   started for this test process. Tests share it and isolate themselves with
//!   [`unique_root`], a fresh subject root (and so fresh streams) per test.
//! - [`NatsServer`]: a server of a test's own, on a free port with its own store, for tests
//!   that restart or stop NATS.
//! - [`TestDatabase`]: a fresh SQLite file or a fresh PostgreSQL database per test, both behind
//!   the same sea-orm code (connect with `provenant_bus::store::connect(&database.url)`), so one
//!   projection test runs on both ([`Backend::ALL`]).
//! - [`free_port`]: a port for a server a test starts, out of the way of outgoing connections.
//! - [`prometheus::assert_valid_exposition`]: a `/metrics` answer checked by promtool.

mod database;
mod nats;
mod ports;
pub mod prometheus;

pub use database::{Backend, TestDatabase};
pub use nats::{NatsServer, nats_url, unique_root};
pub use ports::free_port;

/// Installs a test log subscriber once (honours `RUST_LOG`); harmless when called repeatedly.
pub fn init_logs() {
    let _already_installed = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=warn")),
        )
        .with_test_writer()
        .try_init();
}
