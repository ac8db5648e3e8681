use anyhow::Context as _;

/// mimalloc instead of glibc's malloc: the settler and the ledger projector allocate for every
/// message, envelope and statement from several threads at once, and glibc's malloc and free
/// took about a quarter of the CPU of `settle-bench`; with mimalloc the same run settles about
/// 1.2 times as many events a second (README, "Benchmarks"). SQLite keeps glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|argument| argument == "--dump-openapi") {
        return provenant_runtime::print_openapi(&settle::api::openapi());
    }
    let config = settle::Config::load().context("failed to load configuration")?;
    if std::env::args().any(|argument| argument == "--dump-config") {
        return provenant_runtime::print_config(&config);
    }
    if std::env::args().any(|argument| argument == "--migrate-only") {
        return Ok(settle::open_databases(&config).await?.close().await?);
    }
    let telemetry = provenant_telemetry::init("settle", &config.telemetry)?;
    let app = settle::Application::build(config).await?; // connect, declare streams, bind
    let outcome = app.run_until_stopped(provenant_runtime::shutdown_on(provenant_runtime::shutdown_signal())).await;
    telemetry.shutdown().await?; // flush spans before the pod goes away
    outcome
}
