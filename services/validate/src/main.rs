use anyhow::Context as _;

/// mimalloc instead of glibc's malloc, as in the settle service: the validator allocates for every message, shingle set and statement; with
/// ingest and validate on mimalloc, `datanet-bench` accepted about 1.15 times as many
/// contributions a second (README, "Benchmarks"). SQLite keeps glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|argument| argument == "--dump-openapi") {
        return provenant_runtime::print_openapi(&validate::api::openapi());
    }
    let config = validate::Config::load().context("failed to load configuration")?;
    if std::env::args().any(|argument| argument == "--dump-config") {
        return provenant_runtime::print_config(&config);
    }
    if std::env::args().any(|argument| argument == "--migrate-only") {
        return Ok(validate::open_database(&config.database).await?.close().await?);
    }
    let telemetry = provenant_telemetry::init("validate", &config.telemetry)?;
    let app = validate::Application::build(config).await?; // connect, declare streams, bind
    let outcome = app.run_until_stopped(provenant_runtime::shutdown_on(provenant_runtime::shutdown_signal())).await;
    telemetry.shutdown().await?; // flush spans before the pod goes away
    outcome
}
